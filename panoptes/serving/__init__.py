"""How panoptes is served: the HTTP server, its settings and the shutdown path.

- `panoptes` (cli.py) calls `serve`, which runs uvicorn (with_uvicorn.py), or Hypercorn
  with PANOPTES_SERVER=hypercorn (with_hypercorn.py), and stops on SIGINT/SIGTERM;
- any ASGI server can run `panoptes.app:create_app` itself: `hypercorn
  'panoptes.app:create_app()'` with `--config python:panoptes.serving.HypercornSettings`
  gets the same settings, `uvicorn --factory panoptes.app:create_app` takes them as flags
  (README), and the app itself closes its feeds on the shutdown signal
  (`close_feeds_on_signals`, installed by create_app when serving starts) wherever the
  signal reaches it.

Shutdown: the server stops accepting, finishes the requests in flight and then runs the
app's after_serving, which commits whatever the writer still holds, so nothing
acknowledged is lost. Feed connections never end by themselves, so they are closed at once
(1001, going away) instead of holding shutdown up for the graceful timeout; their clients
reconnect with since=.

What only Hypercorn needs (its settings, its logger, the patch that declines
permessage-deflate) is in with_hypercorn.py, loaded only when Hypercorn serves or
HypercornSettings is asked for. (Quart itself imports part of Hypercorn, unused.)
"""

from __future__ import annotations

import sys
from typing import Any

from ..config import SERVERS, Config
from .logs import LOGGERS, RedactTokens, redact, redact_logs
from .signals import SIGNALS, close_feeds_on_signals

__all__ = [
    "LOGGERS",
    "SERVERS",
    "SIGNALS",
    "RedactTokens",
    "StartupFailed",
    "close_feeds_on_signals",
    "redact",
    "redact_logs",
    "serve",
]


class StartupFailed(Exception):
    """The app's startup failed (a database at an old schema with PANOPTES_AUTO_MIGRATE=0,
    ...): the message is the app's reason."""


async def serve(app: Any, config: Config) -> None:
    """Serve `app` on the configured server until SIGINT or SIGTERM, then shut down."""
    if config.server == "hypercorn":
        from . import with_hypercorn

        await with_hypercorn.serve(app, config)
    else:
        from . import with_uvicorn

        await with_uvicorn.serve(app, config)


def hypercorn_serves() -> bool:
    """Whether the `hypercorn` command runs this process (a worker of it included). Quart
    imports part of Hypercorn wherever it runs; `hypercorn.run` only the command loads."""
    return "hypercorn.run" in sys.modules


def __getattr__(name: str) -> Any:
    if name in ("HypercornSettings", "RedactingLogger", "set_ws_compression"):
        from . import with_hypercorn

        return getattr(with_hypercorn, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
