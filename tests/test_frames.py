"""The feed's frames written straight to uvicorn's transport (panoptes/routes/frames.py):
the header matches the websockets library's own frames, uvicorn serving the app in this
process takes the direct path, and a connection with permessage-deflate falls back to
ASGI; either way a real websockets client reads every event."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import websockets
from websockets.frames import Frame, Opcode

from panoptes.app import create_app
from panoptes.config import Config, database_url
from panoptes.routes import frames
from panoptes.serving.with_uvicorn import uvicorn_config

from .conftest import free_port


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_the_header_is_the_websockets_librarys_for_every_length_class(size: int) -> None:
    payload = b"x" * size
    theirs = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
    assert frames.text_frame_header(size) + payload == theirs


def test_no_writer_for_a_send_that_is_not_uvicorns_sansio_protocol() -> None:
    async def send(message: Any) -> None:
        pass

    class Other:
        async def send(self, message: Any) -> None:
            pass

    assert frames.direct_writer(send) is None
    assert frames.direct_writer(Other().send) is None


async def _events_through_uvicorn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compression: bool
) -> tuple[list[bool], list[dict[str, Any]]]:
    """Serve the app under uvicorn in this process; a client follows /ws while 3 workflows
    are created. What each DirectWriter.write answered, and what the client got."""
    answers: list[bool] = []
    original = frames.DirectWriter.write

    def spy(self: frames.DirectWriter, payloads: Any) -> bool:
        answers.append(original(self, payloads))
        return answers[-1]

    monkeypatch.setattr(frames.DirectWriter, "write", spy)
    port = free_port()
    config = Config(
        db_url=database_url(str(tmp_path / "frames.db")), port=port, ws_compression=compression
    )
    settings = uvicorn_config(create_app(config), config)
    settings.host = "127.0.0.1"
    server = uvicorn.Server(settings)
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(500):  # uvicorn says so with a flag, not an event
            if server.started:
                break
            await asyncio.sleep(0.02)
        assert server.started
        url = f"ws://127.0.0.1:{port}/ws"
        async with (
            websockets.connect(url, compression="deflate" if compression else None) as feed,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
        ):
            assert json.loads(await feed.recv())["type"] == "hello"
            ids = [(await http.get("/create_workflow")).json()["id"] for _ in range(3)]
            got = [json.loads(await asyncio.wait_for(feed.recv(), 10)) for _ in ids]
            assert bool(feed.protocol.extensions) is compression
    finally:
        server.should_exit = True
        await serving
    assert [(event["type"], event["workflow_id"]) for event in got] == [
        ("workflow.created", wid) for wid in ids
    ]
    assert [event["seq"] for event in got] == sorted({event["seq"] for event in got})
    return answers, got


async def test_uvicorn_takes_the_direct_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers, _ = await _events_through_uvicorn(tmp_path, monkeypatch, compression=False)
    assert answers and all(answers)


async def test_a_compressed_feed_goes_through_asgi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers, _ = await _events_through_uvicorn(tmp_path, monkeypatch, compression=True)
    assert answers and not any(answers)
