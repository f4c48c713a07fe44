"""Command line: parse flags, build the config, run Hypercorn until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig

from . import __version__
from .app import create_app
from .config import Config, ConfigError

EPILOG = """\
Snakemake clients:
  Snakemake 9:    snakemake --logger panoptes --logger-panoptes-address http://HOST:PORT
  Snakemake 7/8:  snakemake --wms-monitor http://HOST:PORT
  They call GET /create_workflow and POST /update_workflow_status.

REST API:
  GET    /api/service-info
  GET    /api/workflows                 ?status=&q=&limit=&offset=&cursor=
  GET    /api/workflow/<id>
  GET    /api/workflow/<id>/jobs        ?status=&rule=&limit=&offset=
  GET    /api/workflow/<id>/job/<jobid>
  GET    /api/workflow/<id>/rules
  PUT    /api/workflow/<id>             {"name": "..."}
  POST   /api/workflow/<id>/cancel
  DELETE /api/workflow/<id>
  DELETE /api/workflows/all

Environment (flags win):
  PANOPTES_HOST, PANOPTES_PORT, PANOPTES_DB_URL
  PANOPTES_STALE_HOURS   hours of silence before a Running workflow turns Stale
                         (default 48, 0 disables)
"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="panoptes",
        description="panoptes: live monitoring of Snakemake workflows",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--ip", dest="host", help=argparse.SUPPRESS)  # the old flag's name
    parser.add_argument("--port", type=int, help="port to listen on (default 5000)")
    parser.add_argument("--db", help="SQLAlchemy URL or SQLite file path (default ./.panoptes.db)")
    parser.add_argument("--log-level", default="info", help="debug, info, warning, error")
    parser.add_argument("--version", action="version", version=f"panoptes {__version__}")
    return parser.parse_args(argv)


async def run(config: Config) -> None:
    app = create_app(config)
    hyper = HypercornConfig()
    hyper.bind = [
        f"[{config.host}]:{config.port}" if ":" in config.host else f"{config.host}:{config.port}"
    ]
    hyper.accesslog = None
    hyper.graceful_timeout = 10.0
    hyper.websocket_ping_interval = config.ws_ping_seconds
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Hypercorn stops accepting, finishes requests in flight, then runs after_serving,
    # which commits whatever the writer still holds: nothing acknowledged is lost.
    await serve(app, hyper, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = Config.from_env(host=args.host, port=args.port, db_url=args.db)
    except ConfigError as exc:
        print(f"panoptes: {exc}", file=sys.stderr)
        return 2
    logging.getLogger("panoptes").info(
        "panoptes %s on http://%s:%s, database %s",
        __version__,
        config.host,
        config.port,
        config.db_url,
    )
    asyncio.run(run(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
