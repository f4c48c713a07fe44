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
import logging
import os
import re
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig
from hypercorn.logging import Logger as HypercornLogger
from hypercorn.protocol import ws_stream
from wsproto.extensions import PerMessageDeflate

from .config import Config

SIGNALS = (signal.SIGINT, signal.SIGTERM)


# ----------------------------------------------------------------- tokens out of the logs

# The Snakemake 9 plugin puts the token in the path (/t/<token>/...): every access-log line
# of its requests would hold it. Scripts send it as a header, browsers as a cookie.
_SECRETS = (
    # a path that begins /t/ (as a request line or query shows it), or a URL's
    (re.compile(r"(^|[\s\"'(=]|://[^/\s\"']+)/t/[^/?#\s\"']+"), r"\1/t/<token>"),
    (re.compile(r"(?i)\b(bearer)\s+[^\s\"',]+"), r"\1 <token>"),
    (re.compile(r"\b(panoptes_token=)[^;\s\"',]+"), r"\1<token>"),
)
# The loggers whose handlers write lines about requests: ours (through the root logger's
# handlers), Hypercorn's and uvicorn's (theirs do not pass on to the root).
LOGGERS = ("", "hypercorn.access", "hypercorn.error", "uvicorn.access", "uvicorn.error")


def redact(text: str, token: str | None = None) -> str:
    """`text` without a panoptes token in it: in a path, a header, a cookie, or as itself."""
    if token:
        text = text.replace(token, "<token>")
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RedactTokens(logging.Filter):
    """A handler filter: each line it lets through is redacted, traceback included, of the
    patterns above and of the token the app serves with (one per process, as logging is)."""

    token: str | None = None  # set by redact_logs

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, RedactTokens.token)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, RedactTokens.token)
        return True


def redact_logs(token: str | None) -> None:
    """Redact `token` (and the patterns) from every line of the handlers of LOGGERS. Called
    when serving starts, whichever server and flags run the app; Hypercorn's loggers may
    come later, and RedactingLogger sees to them."""
    RedactTokens.token = token
    for name in LOGGERS:
        _redact_handlers(logging.getLogger(name))


def _redact_handlers(logger: logging.Logger | None) -> None:
    for handler in logger.handlers if logger is not None else ():
        if not any(isinstance(f, RedactTokens) for f in handler.filters):
            handler.addFilter(RedactTokens())


class RedactingLogger(HypercornLogger):
    """Hypercorn's logger (access and error lines), with RedactTokens on its handlers."""

    def __init__(self, config: HypercornConfig) -> None:
        super().__init__(config)
        _redact_handlers(self.access_logger)
        _redact_handlers(self.error_logger)


# ----------------------------------------------------------------- settings


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
