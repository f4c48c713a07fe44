"""The ingest endpoint sits outside the Host check and the /t/<token>/ prefix and does both
itself (routes/ingest.py): it must take exactly the requests, and read exactly the tokens,
that those two middlewares would hand it, and refuse exactly the Hosts they refuse."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from panoptes.config import Config
from panoptes.routes.auth import SCOPE_KEY, TokenPrefix
from panoptes.routes.hosts import Acceptance, is_accepted
from panoptes.routes.ingest import ingest_token
from panoptes.routes.wms import INGEST_PATH

PATHS = [
    INGEST_PATH,
    f"{INGEST_PATH}/",
    f"/t/secret{INGEST_PATH}",
    f"/t/{INGEST_PATH}",  # an empty token
    f"/t/a/b{INGEST_PATH}",
    f"/t/secret{INGEST_PATH}/more",
    f"/x{INGEST_PATH}",
    "/t/secret",
    "/t/",
    "/create_workflow",
    f"/T/secret{INGEST_PATH}",
]


def _as_token_prefix_hands_on(path: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.update(scope)

    scope = {"type": "http", "path": path, "raw_path": path.encode()}
    asyncio.run(TokenPrefix(inner)(scope, None, None))
    return seen


@pytest.mark.parametrize("path", PATHS)
def test_the_endpoint_takes_what_the_token_prefix_would_hand_it(path: str) -> None:
    handed = _as_token_prefix_hands_on(path)
    wanted = (handed["path"] == INGEST_PATH, handed.get(SCOPE_KEY))
    ours, token = ingest_token({"type": "http", "path": path})
    assert (ours, token if ours else None) == (wanted[0], wanted[1] if wanted[0] else None)


def test_a_websocket_is_never_the_endpoints() -> None:
    assert ingest_token({"type": "websocket", "path": INGEST_PATH}) == (False, None)


HOSTS = [
    b"127.0.0.1:5000",
    b"localhost",
    b"LOCALHOST.:5000",
    b"panoptes.localhost",
    b"[::1]:5000",
    b"evil.example",
    b"evil.example:5000",
    b"ci.lab.example",
    b"",
    b"10.1.2.3",
]


@pytest.mark.parametrize("allowed", [(), ("ci.lab.example",), ("*",)])
def test_the_remembered_host_check_answers_as_the_host_check(allowed: tuple[str, ...]) -> None:
    config = Config(allowed_hosts=allowed)
    accepts = Acceptance(config)
    for _ in range(2):  # worked out, then remembered
        for host in HOSTS:
            assert accepts(host) is is_accepted(host.decode("latin-1"), accepts.names), host
    assert accepts(b"evil.example") is (allowed == ("*",))


def test_past_what_it_remembers_it_still_answers() -> None:
    accepts = Acceptance(Config())
    for number in range(Acceptance.KEPT + 50):
        assert accepts(f"host{number}.example".encode()) is False
        assert accepts(f"10.0.{number // 256}.{number % 256}".encode()) is True
