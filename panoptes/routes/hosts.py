"""Which Host names the server answers for: a defence against DNS rebinding.

A page on another site can make the user's browser send requests to a server on the user's
own machine by pointing a name it controls at 127.0.0.1 (DNS rebinding). The browser then
calls that page's origin its own, so neither the same-origin rule nor the cross-site check
stops it; only the Host header gives it away: it names the attacker's domain. The server
therefore answers only requests whose Host is an IP address (a rebinding attack always
uses a name), a loopback name (localhost), the name it listens on or, when it listens on
every interface, this machine's own names, and the names in PANOPTES_ALLOWED_HOSTS ("*"
answers for any). Every other request, the feed's handshake included, gets 421.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from functools import lru_cache
from typing import Any

from ..config import Config
from ..errors import Misdirected, render
from .auth import raw_json_headers

log = logging.getLogger(__name__)

EVERY_INTERFACE = ("0.0.0.0", "::", "")


def accepted_names(config: Config) -> frozenset[str] | None:
    """The names besides IP addresses and loopback names; None: any name at all."""
    if "*" in config.allowed_hosts:
        return None
    names = set(config.allowed_hosts)
    bound = config.host.strip("[]").lower()
    if bound in EVERY_INTERFACE:
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    elif not _is_address(bound):
        names.add(bound)
    return frozenset(name for name in names if name)


def host_name(header: str) -> str:
    """The name (or address) of a Host header, without its port."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    name, _, _port = header.partition(":") if header.count(":") == 1 else (header, "", "")
    return name.rstrip(".")


@lru_cache(maxsize=256)
def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_accepted(header: str | None, names: frozenset[str] | None) -> bool:
    if names is None or not header:  # no Host at all: not a browser (HTTP/1.0, scripts)
        return True
    name = host_name(header)
    return _is_address(name) or name == "localhost" or name.endswith(".localhost") or name in names


class Acceptance:
    """is_accepted for one server's names, remembered by the raw Host header (a client sends
    the same one with every request): the answer in one dict look-up."""

    KEPT = 256  # headers remembered; others are worked out each time

    def __init__(self, config: Config) -> None:
        self.names = accepted_names(config)
        self._known: dict[bytes, bool] = {}

    def __call__(self, raw: bytes) -> bool:
        known = self._known.get(raw)
        if known is None:
            known = is_accepted(raw.decode("latin-1"), self.names)
            if len(self._known) < self.KEPT:
                self._known[raw] = known
        return known


def raw_host(scope: Any) -> bytes:
    """The request's (first) Host header, as sent."""
    for name, value in scope["headers"]:
        if name == b"host":
            return value  # type: ignore[no-any-return]
    return b""


class HostCheck:
    """ASGI middleware, outermost but for the ingest endpoint (which checks the same itself):
    refuses requests for a name this server does not answer for before anything else sees
    them."""

    def __init__(self, app: Any, config: Config) -> None:
        self.app = app
        self.accepts = Acceptance(config)
        self.headers = raw_json_headers(config)
        names = self.accepts.names
        shown = "any" if names is None else ", ".join(["IP addresses", "localhost", *sorted(names)])
        log.info("answering requests for the hosts: %s (PANOPTES_ALLOWED_HOSTS adds names)", shown)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        raw = raw_host(scope)
        if self.accepts(raw):
            await self.app(scope, receive, send)
            return
        host = raw.decode("latin-1")
        refused = Misdirected(
            f"this panoptes does not answer for the host {host_name(host)!r}; "
            "add it to PANOPTES_ALLOWED_HOSTS if it is this server's name"
        )
        status, body, _ = render(refused)  # no headers of its own
        headers = [*self.headers, (b"content-length", str(len(body)).encode())]
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await receive()  # websocket.connect
        if "websocket.http.response" in scope.get("extensions", {}):
            start = {"type": "websocket.http.response.start", "status": status}
            await send({**start, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})


def install(app: Any, config: Config) -> HostCheck:
    check = app.asgi_app = HostCheck(app.asgi_app, config)
    return check
