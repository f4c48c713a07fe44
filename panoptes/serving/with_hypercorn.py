"""Hypercorn: `panoptes` with PANOPTES_SERVER=hypercorn, and the settings for
`hypercorn --config python:panoptes.serving.HypercornSettings 'panoptes.app:create_app()'`.

Nothing here is imported unless Hypercorn serves the app.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig
from hypercorn.logging import Logger as HypercornLogger
from hypercorn.protocol import ws_stream
from hypercorn.utils import LifespanFailureError
from wsproto.extensions import PerMessageDeflate

from ..config import Config
from . import StartupFailed
from .logs import redact_handlers
from .signals import SIGNALS


class RedactingLogger(HypercornLogger):
    """Hypercorn's logger (access and error lines), with RedactTokens on its handlers."""

    def __init__(self, config: HypercornConfig) -> None:
        super().__init__(config)
        redact_handlers(self.access_logger)
        redact_handlers(self.error_logger)


class HypercornSettings:
    """The server settings panoptes relies on, as Hypercorn's --config python: reads them."""

    # One process that handles SIGINT/SIGTERM itself, as `panoptes` does, so the app hears
    # the signal and closes its feeds at once. With --workers N Hypercorn's workers are told
    # to stop through an event the app cannot see: open feeds then hold shutdown up until
    # graceful_timeout ends and are dropped, and their clients reconnect with since=.
    workers = 0

    # Hypercorn's default of 100 pending connections drops the SYNs of a larger burst
    # (hundreds of jobs' clients at once), and each dropped one waits 1 s to retry.
    backlog = 2048
    graceful_timeout = 10.0
    # No protocol-level pings: the feed sends its own JSON ping every ws_ping_seconds, which
    # keeps proxies open and finds dead peers, and Hypercorn's ping task outlives a closed
    # connection by up to one interval, holding up shutdown that long.
    websocket_ping_interval = None
    # Feed clients only ever send pings and close frames; anything bigger is refused (1009).
    websocket_max_message_size = 64 * 1024
    # Access and error lines without the token (the plugin's /t/<token>/ paths, headers).
    logger_class = RedactingLogger


def hypercorn_config(config: Config) -> HypercornConfig:
    hyper = HypercornConfig.from_object(HypercornSettings)
    hyper.workers = 1  # serve() runs in this process; any other count only makes it warn
    host = f"[{config.host}]" if ":" in config.host else config.host
    hyper.bind = [f"{host}:{config.port}"]
    hyper.accesslog = config.access_log  # None: none; "-": standard output; else a file
    return hyper


async def serve(app: Any, config: Config) -> None:
    """Serve `app` on Hypercorn until SIGINT or SIGTERM, then shut down gracefully."""
    set_ws_compression(config.ws_compression)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in SIGNALS:
        loop.add_signal_handler(sig, stop.set)

    async def shutdown_trigger() -> None:
        await stop.wait()
        app.extensions["panoptes"].hub.end_all()

    try:
        await hypercorn_serve(app, hypercorn_config(config), shutdown_trigger=shutdown_trigger)
    except LifespanFailureError as exc:
        raise StartupFailed(str(exc)) from None


def set_ws_compression(enabled: bool) -> None:
    """Whether Hypercorn in this process agrees to permessage-deflate on the feed.

    Hypercorn 0.18 always agrees when a browser offers it (browsers always do) and has no
    setting for it. Measured with 1,000 feed subscribers (benchmarks/fanout.py): the
    compressor Hypercorn keeps per connection costs about 200 KiB each, and compressing
    every message once per subscriber is the largest single cost of fan-out. Feed messages
    are small JSON objects, so compression saves little bandwidth: panoptes declines it
    unless PANOPTES_WS_COMPRESSION is on. Hypercorn builds the extension from the name
    `PerMessageDeflate` in its ws_stream module at each handshake; declining means putting
    there one that accepts no offer (an extension that never accepted stays disabled)."""
    ws_stream.PerMessageDeflate = (  # type: ignore[attr-defined]
        PerMessageDeflate if enabled else _DeclinedPerMessageDeflate
    )


class _DeclinedPerMessageDeflate(PerMessageDeflate):
    """permessage-deflate that answers every client offer with 'no'."""

    def accept(self, offer: str) -> bool | str | None:
        return None
