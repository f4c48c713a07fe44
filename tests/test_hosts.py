"""DNS rebinding: a real server answers only for the Host names it should (routes/hosts.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from panoptes.config import Config
from panoptes.routes.hosts import accepted_names, host_name, is_accepted

from .conftest import LiveServer

EVIL = "rebind.evil.example"


def raw_handshake(server: LiveServer, path: str, host: str) -> str:
    """The status line a websocket handshake for `host` gets (a client cannot lie about
    Host through a websocket library)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        return sock.recv(4096).decode("latin-1").split("\r\n")[0]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    live = LiveServer(db=tmp_path / "hosts.db").start()
    yield live
    live.stop()


def test_a_rebound_name_gets_421_on_every_route_and_nothing_changes(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        check_rebinding(server, http)


def check_rebinding(server: LiveServer, http: httpx.Client) -> None:
    workflow_id = http.get("/create_workflow").json()["id"]
    evil = {"Host": f"{EVIL}:{server.port}", "Origin": f"http://{EVIL}:{server.port}"}
    wiped = http.delete("/api/workflows/all", headers=evil)
    assert wiped.status_code == 421
    body = wiped.json()
    assert body["error"] == "misdirected request" and EVIL in body["detail"]
    assert wiped.headers["X-Content-Type-Options"] == "nosniff"
    for method, path in [
        ("GET", "/api/workflows"),
        ("GET", "/"),
        ("GET", "/create_workflow"),
        ("POST", "/update_workflow_status"),
        ("POST", f"/api/workflow/{workflow_id}/cancel"),
    ]:
        assert http.request(method, path, headers=evil).status_code == 421, path
    assert raw_handshake(server, "/ws", EVIL).startswith("HTTP/1.1 421")
    # Nothing happened: the workflow is there and still running.
    listed = http.get("/api/workflows").json()["workflows"]
    assert [(wf["id"], wf["status"]) for wf in listed] == [(workflow_id, "Running")]
    # The names the user's own requests use are answered.
    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", f"[::1]:{server.port}"):
        assert http.get("/api/workflows", headers={"Host": host}).status_code == 200, host
    assert raw_handshake(server, "/ws", f"localhost:{server.port}").startswith("HTTP/1.1 101")
    assert "answering requests for the hosts: IP addresses, localhost" in server.log()


def test_allowed_hosts_add_names_and_a_star_allows_any(tmp_path: Path) -> None:
    named = LiveServer(db=tmp_path / "n.db", env={"PANOPTES_ALLOWED_HOSTS": "Monitor.Lab.org"})
    named.start()
    anything = LiveServer(db=tmp_path / "a.db", env={"PANOPTES_ALLOWED_HOSTS": "*"}).start()
    try:
        lab = {"Host": f"monitor.lab.org:{named.port}"}
        assert httpx.get(f"{named.url}/api/workflows", headers=lab).status_code == 200
        assert httpx.get(f"{named.url}/api/workflows", headers={"Host": EVIL}).status_code == 421
        assert httpx.get(f"{anything.url}/api/workflows", headers={"Host": EVIL}).status_code == 200
        assert "monitor.lab.org" in named.log()
    finally:
        named.stop()
        anything.stop()


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("Example.ORG:5000", "example.org"),
        ("example.org.", "example.org"),
        ("[::1]:5000", "::1"),
        ("::1", "::1"),
        ("10.1.2.3", "10.1.2.3"),
    ],
)
def test_host_names_are_read_without_their_port(header: str, name: str) -> None:
    assert host_name(header) == name


def test_which_names_are_answered() -> None:
    names = accepted_names(Config(host="127.0.0.1"))
    assert names == frozenset()
    for ok in ("127.0.0.1:5000", "localhost", "app.localhost:80", "[fe80::1]", "192.0.2.7", ""):
        assert is_accepted(ok, names), ok
    for refused in (EVIL, "127.0.0.1.nip.io", "localhost.evil.example"):
        assert not is_accepted(refused, names), refused
    served = accepted_names(Config(host="monitor.lab.org"))
    assert served is not None and "monitor.lab.org" in served
    everywhere = accepted_names(Config(host="0.0.0.0"))
    assert everywhere is not None and socket.gethostname().lower() in everywhere
    assert accepted_names(Config(allowed_hosts=("*",))) is None
