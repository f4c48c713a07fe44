"""How panoptes is served: the HTTP server's settings and the shutdown path.

Both entry points use this module:

- `panoptes` (cli.py) calls `serve`, which runs Hypercorn with `hypercorn_config` and stops
  on SIGINT/SIGTERM;
- `hypercorn 'panoptes.app:create_app()'` runs the app under a Hypercorn configured by its
  own flags; `--config python:panoptes.serving.HypercornSettings` gives it the same
  settings, and the app itself closes its feeds on the shutdown signal
  (`close_feeds_on_signals`, installed by create_app when serving starts) wherever the
  signal reaches it (not in the worker processes of `hypercorn --workers N`).

Shutdown: the server stops accepting, finishes the requests in flight and then runs the
app's after_serving, which commits whatever the writer still holds, so nothing
acknowledged is lost. Feed connections never end by themselves, so they are closed at once
(1001, going away) instead of holding shutdown up for the graceful timeout; their clients
reconnect with since=.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig
from hypercorn.protocol import ws_stream
from wsproto.extensions import PerMessageDeflate

from .config import Config

SIGNALS = (signal.SIGINT, signal.SIGTERM)


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


def hypercorn_config(config: Config) -> HypercornConfig:
    hyper = HypercornConfig.from_object(HypercornSettings)
    hyper.workers = 1  # serve() runs in this process; any other count only makes it warn
    host = f"[{config.host}]" if ":" in config.host else config.host
    hyper.bind = [f"{host}:{config.port}"]
    hyper.accesslog = None
    return hyper


async def serve(app: Any, config: Config) -> None:
    """Serve `app` until SIGINT or SIGTERM, then shut down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in SIGNALS:
        loop.add_signal_handler(sig, stop.set)

    async def shutdown_trigger() -> None:
        await stop.wait()
        app.extensions["panoptes"].hub.end_all()

    await hypercorn_serve(app, hypercorn_config(config), shutdown_trigger=shutdown_trigger)


def close_feeds_on_signals(hub: Any) -> None:
    """On SIGINT/SIGTERM close every feed connection at once, under whatever server runs the
    app, and then let the server's own handling of the signal go on.

    The server's handler stays in place: this one is put in front of it (signal.signal), and
    asyncio's handlers still run, since the signal also reaches the loop through its wakeup
    file descriptor. Only in the main thread, where signal handlers live."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for sig in SIGNALS:
        signal.signal(
            sig, _chained(signal.getsignal(sig), lambda: loop.call_soon_threadsafe(hub.end_all))
        )


Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


def _chained(
    previous: Handler, first: Callable[[], object]
) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        first()
        if callable(previous):
            previous(signum, frame)
        elif previous in (signal.SIG_DFL, None):
            # Nobody handled it before: do what the default would (end the process).
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    return handler


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
