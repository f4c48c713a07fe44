"""The HTTP servers panoptes runs on (issue 16): `panoptes` on uvicorn (the default) and on
Hypercorn (PANOPTES_SERVER=hypercorn), and `uvicorn --factory panoptes.app:create_app` as a
site runs it. Each keeps the same promises: uvloop, the listen backlog, websockets without
compression unless asked, big frames refused, feeds closed with 1001 at once on SIGTERM,
every acknowledged event kept, a failed startup reported, and an exit status of 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from .conftest import LiveServer, free_port
from .test_cli import (
    Served,
    _ingest_until_stopped,
    assert_feed_limits_and_close,
    console_script,
    hypercorn,
    served_by,
)
from .test_migrations import build_panoptes1_sqlite

SERVERS = ["uvicorn", "hypercorn"]


def on(server: str, tmp_path: Path, **env: str) -> LiveServer:
    return LiveServer(db=tmp_path / f"{server}.db", env={"PANOPTES_SERVER": server, **env})


@pytest.mark.parametrize("server", SERVERS)
def test_panoptes_serves_on_uvloop_with_a_deep_backlog(tmp_path: Path, server: str) -> None:
    live = on(server, tmp_path).start()
    try:
        info = httpx.get(f"{live.url}/api/service-info", timeout=10).json()
        assert info["event_loop"] == "uvloop"
        listening = subprocess.run(
            ["ss", "-ltnH", f"sport = :{live.port}"], capture_output=True, text=True
        ).stdout.split()
        assert int(listening[2]) == 2048, listening
    finally:
        assert live.stop() == 0, live.log()
    assert f":{live.port} ({server}), database" in live.log()


@pytest.mark.parametrize("server", SERVERS)
async def test_sigterm_keeps_every_acknowledged_event(tmp_path: Path, server: str) -> None:
    live = on(server, tmp_path).start()
    try:
        workflow_id, acknowledged, after_signal = await _ingest_until_stopped(live)
        assert after_signal > 0  # requests in flight when the signal came were finished
        assert live.process is not None
        assert live.process.wait(timeout=20) == 0, live.log()
    finally:
        live.stop()
    assert "Traceback" not in live.log()
    assert acknowledged <= await asyncio.to_thread(stored_jobids, live.db, workflow_id)


def stored_jobids(db: Path, workflow_id: int) -> set[int]:
    again = LiveServer(db=db).start()
    try:
        path = f"{again.url}/api/workflow/{workflow_id}/jobs"
        jobs = httpx.get(path, params={"limit": 1000}, timeout=10).json()["jobs"]
    finally:
        again.stop()
    return {job["jobid"] for job in jobs}


@pytest.mark.parametrize("server", SERVERS)
async def test_feeds_refuse_big_frames_and_close_with_1001_at_once(
    tmp_path: Path, server: str
) -> None:
    live = on(server, tmp_path).start()
    assert live.process is not None
    code = await assert_feed_limits_and_close(live.url, live.process)
    assert code == 0, live.log()


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize(("setting", "compressed"), [(None, False), ("1", True)])
async def test_feed_compression_only_when_asked(
    tmp_path: Path, server: str, setting: str | None, compressed: bool
) -> None:
    live = on(server, tmp_path, **({"PANOPTES_WS_COMPRESSION": setting} if setting else {}))
    live.start()
    try:
        feed_url = live.url.replace("http://", "ws://") + "/ws"
        # The client offers permessage-deflate, as every browser does.
        async with connect(feed_url, compression="deflate") as connection:
            assert json.loads(await connection.recv())["type"] == "hello"
            agreed = connection.response.headers.get("Sec-WebSocket-Extensions") or ""
    finally:
        live.stop()
    assert ("permessage-deflate" in agreed) is compressed


@pytest.mark.parametrize("server", SERVERS)
def test_a_failed_startup_is_reported_with_its_reason(tmp_path: Path, server: str) -> None:
    path = tmp_path / "old.db"
    build_panoptes1_sqlite(path, datetime.now())
    refused = subprocess.run(
        [sys.executable, "-m", "panoptes", "--port", str(free_port()), "--db", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PANOPTES_AUTO_MIGRATE": "0", "PANOPTES_SERVER": server},
    )
    assert refused.returncode == 1, refused.stderr
    assert "panoptes: could not start:" in refused.stderr
    assert "panoptes db upgrade" in refused.stderr


def test_an_unknown_server_is_a_configuration_error(tmp_path: Path) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "panoptes", "--db", str(tmp_path / "x.db")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PANOPTES_SERVER": "gunicorn"},
    )
    assert refused.returncode == 2
    assert "PANOPTES_SERVER must be one of uvicorn, hypercorn" in refused.stderr


def test_the_default_path_leaves_hypercorn_alone() -> None:
    """What only Hypercorn needs (its settings, the patch declining permessage-deflate) is
    loaded only when it serves."""
    script = (
        "import sys\n"
        "from panoptes import cli, serving\n"
        "from panoptes.app import create_app\n"
        "from hypercorn.protocol import ws_stream\n"
        "from wsproto.extensions import PerMessageDeflate\n"
        "create_app()\n"
        "assert ws_stream.PerMessageDeflate is PerMessageDeflate\n"
        "assert 'panoptes.serving.with_hypercorn' not in sys.modules\n"
        "serving.HypercornSettings\n"
        "assert 'panoptes.serving.with_hypercorn' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


async def test_hypercorn_command_declines_compression(tmp_path: Path) -> None:
    with hypercorn(tmp_path) as (url, _process, _log):
        feed_url = url.replace("http://", "ws://") + "/ws"
        async with connect(feed_url, compression="deflate") as connection:
            assert json.loads(await connection.recv())["type"] == "hello"
            agreed = connection.response.headers.get("Sec-WebSocket-Extensions") or ""
    assert "permessage-deflate" not in agreed


def uvicorn(tmp_path: Path) -> Served:
    """`uvicorn --factory ... panoptes.app:create_app` with README's flags (served_by)."""
    flags = ["--factory", "--ws", "websockets-sansio", "--ws-per-message-deflate", "false"]
    flags += ["--ws-max-size", "65536", "--backlog", "2048", "--port", "{port}"]
    return served_by(
        tmp_path, [*console_script("uvicorn"), *flags, "panoptes.app:create_app"], "uv.db"
    )


async def test_uvicorn_serves_the_app_factory_as_readme_runs_it(tmp_path: Path) -> None:
    with uvicorn(tmp_path) as (url, process, log_path):
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            created = (await http.get("/create_workflow")).json()
            assert (await http.get(f"/api/workflow/{created['id']}")).status_code == 200
        async with connect(url.replace("http://", "ws://") + "/ws") as feed:
            assert json.loads(await feed.recv())["type"] == "hello"
            process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(feed.recv(), 5)
            # The app's own signal handler said 1001 before uvicorn's shutdown (1012).
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        await asyncio.to_thread(process.wait, 15)
    assert (tmp_path / "uv.db").exists()
    assert "Traceback" not in log_path.read_text()
