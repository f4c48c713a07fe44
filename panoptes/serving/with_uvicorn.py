"""uvicorn: what the `panoptes` command serves on by default (benchmarks/README.md has the
figures it was chosen by: about six times Hypercorn's requests/s on the same two cores).

The settings, each a promise the tests hold:
- websockets through the `websockets` library's sans-I/O protocol, without
  permessage-deflate unless PANOPTES_WS_COMPRESSION is on, frames from clients over 64 KiB
  refused (1009), and no protocol pings (the feed sends its own JSON ping);
- each response's head and body in one write (writes.py);
- a listen backlog of 2048: a burst of hundreds of jobs' clients is not dropped;
- the event loop is the one the command made (uvloop where installed);
- no X-Forwarded-For rewriting of the client address (Hypercorn does none either: per-client
  limits count real peers unless a site puts a proxy that it trusts in front);
- shutdown on SIGINT/SIGTERM: the feeds are closed at once with 1001 (going away), requests
  in flight finish, then the app's after_serving commits whatever the writer still holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

import uvicorn

from ..config import Config
from . import StartupFailed
from .logs import redact_handlers
from .signals import SIGNALS
from .writes import OneWriteHttpToolsProtocol

log = logging.getLogger(__name__)

WS_MAX_SIZE = 64 * 1024
BACKLOG = 2048
GRACEFUL_SECONDS = 10.0
# How long shutdown waits for the feeds to have said 1001 before uvicorn's own shutdown
# (which would say 1012) goes on.
FEEDS_CLOSE_SECONDS = 2.0


def uvicorn_config(app: Any, config: Config) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=config.host.strip("[]"),
        port=config.port,
        loop="none",  # serve() runs on the loop the command made
        http=OneWriteHttpToolsProtocol,  # httptools' (a dependency), head and body together
        ws="websockets-sansio",
        ws_max_size=WS_MAX_SIZE,
        ws_per_message_deflate=config.ws_compression,
        ws_ping_interval=None,
        ws_ping_timeout=None,
        lifespan="on",
        backlog=BACKLOG,
        timeout_graceful_shutdown=int(GRACEFUL_SECONDS),
        proxy_headers=False,
        server_header=False,
        log_config=None,  # panoptes' own logging (cli.py), redacted
        access_log=config.access_log is not None,
    )


class _Server(uvicorn.Server):
    """uvicorn's server, with panoptes' shutdown: its signals are the loop's (see serve),
    and the feeds are closed with 1001 before uvicorn closes what is left."""

    def __init__(self, settings: uvicorn.Config, hub: Any) -> None:
        super().__init__(settings)
        self.hub = hub

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn's own would re-raise the signal once shut down, ending the process with
        # it instead of exit status 0.
        yield

    def stop(self) -> None:
        if self.should_exit:
            self.force_exit = True  # a second signal: stop waiting for requests
        self.should_exit = True
        self.hub.end_all()

    async def shutdown(self, sockets: Any = None) -> None:
        self.hub.end_all()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FEEDS_CLOSE_SECONDS):
                await self.hub.all_gone()
        await super().shutdown(sockets)


class _WatchStartup:
    """ASGI middleware that keeps the reason the app's startup failed, if it did."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.failure: str | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def watched(message: Any) -> None:
            if message["type"] == "lifespan.startup.failed":
                self.failure = message.get("message") or "the app's startup failed"
            await send(message)

        await self.app(scope, receive, watched)


def _access_log(where: str | None) -> None:
    """uvicorn's access lines to standard output ("-") or a file, redacted."""
    if where is None:
        return
    access = logging.getLogger("uvicorn.access")
    handler: logging.Handler = (
        logging.StreamHandler(sys.stdout) if where == "-" else logging.FileHandler(where)
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    access.handlers = [handler]
    access.propagate = False
    access.setLevel(logging.INFO)
    redact_handlers(access)


async def serve(app: Any, config: Config) -> None:
    """Serve `app` on uvicorn until SIGINT or SIGTERM, then shut down gracefully."""
    watched = _WatchStartup(app)
    settings = uvicorn_config(watched, config)
    _access_log(config.access_log)
    server = _Server(settings, app.extensions["panoptes"].hub)
    loop = asyncio.get_running_loop()
    for sig in SIGNALS:
        loop.add_signal_handler(sig, server.stop)
    try:
        await server.serve()
    except SystemExit:  # uvicorn's way to end when the app's startup failed
        if watched.failure is None:
            raise
    finally:
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)
    if watched.failure is not None:
        raise StartupFailed(watched.failure)
