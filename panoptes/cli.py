"""Command line: parse flags, build the config, run Hypercorn until SIGINT/SIGTERM.

`panoptes` alone runs the server; `panoptes db upgrade|current|prune` look after the database.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import math
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from . import __version__, client, serving
from .app import create_app
from .config import DEFAULT_SERVER_URL, Config, ConfigError
from .db import make_engine, sqlite_file
from .migrations import SchemaError, schema_state, upgrade_schema
from .service import Service

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

A running server, from a terminal (--url or PANOPTES_URL; the token from PANOPTES_TOKEN):
  panoptes list [--status S]      workflows, newest first
  panoptes show ID                a workflow's rules and failed jobs
  panoptes watch ID               follow it live until it ends (exit 0 if Done)

Database (see panoptes db --help):
  panoptes db upgrade             migrate to the newest schema (converts panoptes 1.x too)
  panoptes db current             print the schema revision
  panoptes db prune [--days N]    remove finished workflows older than N days

Environment (flags win):
  PANOPTES_HOST, PANOPTES_PORT, PANOPTES_DB_URL
  PANOPTES_STALE_HOURS     hours of silence before a Running workflow turns Stale
                           (default 48, 0 disables)
  PANOPTES_AUTO_MIGRATE    upgrade the database schema at start (default 1; with 0 the
                           server refuses to start on an old schema)
  PANOPTES_RETENTION_DAYS  remove finished workflows older than this, hourly
                           (default 0: keep everything)
  PANOPTES_SERVER          the HTTP server: uvicorn (default) or hypercorn
"""

CLIENT_COMMANDS = ("list", "show", "watch")

USAGE = """\
panoptes [--host HOST] [--port PORT] [--db DB] [--log-level LEVEL] [--access-log FILE]
       panoptes db {upgrade,current,prune} [--db DB] [--days N]
       panoptes {list,show,watch} [ID] [--url URL] [--json]
       panoptes --version | --help | db --help"""

DB_EPILOG = """\
  upgrade   apply the migrations up to the newest schema. A panoptes 1.x database is
            converted in place. The server does this by itself at start unless
            PANOPTES_AUTO_MIGRATE=0.
  current   print the database's schema revision
  prune     remove Done, Error and Cancelled workflows that finished, and Stale ones that
            went silent, more than --days days ago (default PANOPTES_RETENTION_DAYS);
            Running workflows are never removed
"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="panoptes",
        usage=USAGE,
        description="panoptes: live monitoring of Snakemake workflows",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--ip", dest="host", help=argparse.SUPPRESS)  # the old flag's name
    parser.add_argument("--port", type=int, help="port to listen on (default 5000)")
    parser.add_argument("--db", help="SQLAlchemy URL or SQLite file path (default ./.panoptes.db)")
    parser.add_argument(
        "--log-level", help="debug, info, warning, error (default info; warning for db commands)"
    )
    parser.add_argument(
        "--access-log",
        metavar="FILE",
        help="write an access log to FILE ('-': standard output); tokens are redacted",
    )
    parser.add_argument("--version", action="version", version=f"panoptes {__version__}")
    commands = parser.add_subparsers(
        dest="command", title="commands", metavar="{db,list,show,watch}", prog="panoptes"
    )
    _add_db_commands(commands)
    _add_client_commands(commands)
    return parser.parse_args(argv)


def _add_client_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The terminal client's commands: they talk to a running server (client/)."""
    server = argparse.ArgumentParser(add_help=False)
    server.add_argument(
        "--url", help=f"the server (default PANOPTES_URL, else {DEFAULT_SERVER_URL})"
    )
    server.add_argument("--json", action="store_true", help="print JSON, for scripts")
    listing = commands.add_parser(
        "list", parents=[server], help="list workflows, newest first (a running server's)"
    )
    listing.add_argument("--status", help="only these statuses, e.g. Running,Error")
    listing.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    shown = commands.add_parser(
        "show", parents=[server], help="a workflow: its rules' progress and failed jobs"
    )
    shown.add_argument("workflow_id", type=int, metavar="ID")
    watched = commands.add_parser(
        "watch",
        parents=[server],
        help="follow a workflow live until it ends (exit 0 if Done, 1 if not)",
        description="Follow a workflow live from the server's feed until it ends, resuming "
        "after a lost connection. Exits 0 when it ends Done, 1 when it fails, is cancelled "
        "or deleted, 2 when the server cannot be asked. --json prints each feed event as a "
        "line of JSON.",
    )
    watched.add_argument("workflow_id", type=int, metavar="ID")


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        days = math.nan
    if not (math.isfinite(days) and days > 0):
        raise argparse.ArgumentTypeError(f"must be a number of days above 0, got {text!r}")
    return days


def _add_db_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    database = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: `panoptes --db X db upgrade` keeps X instead of resetting it to None.
    database.add_argument(
        "--db",
        default=argparse.SUPPRESS,
        help="SQLAlchemy URL or SQLite file path (default ./.panoptes.db)",
    )
    db = commands.add_parser(
        "db",
        parents=[database],
        help="look after the database: upgrade, current, prune",
        description="panoptes db: look after the database",
        epilog=DB_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    actions.add_parser("upgrade", parents=[database], help="migrate to the newest schema")
    actions.add_parser("current", parents=[database], help="print the schema revision")
    prune = actions.add_parser(
        "prune", parents=[database], help="remove finished workflows older than --days"
    )
    prune.add_argument("--days", type=_days, help="age in days (default PANOPTES_RETENTION_DAYS)")


async def run(config: Config) -> None:
    """Serve the app until SIGINT/SIGTERM (serving/ has the settings and shutdown)."""
    await serving.serve(create_app(config), config)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command in CLIENT_COMMANDS:
        return client.run_command(args)
    level = args.log_level or ("warning" if args.command == "db" else "info")
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = Config.from_env(
            host=args.host, port=args.port, db_url=args.db, access_log=args.access_log
        )
    except ConfigError as exc:
        print(f"panoptes: {exc}", file=sys.stderr)
        return 2
    if args.command == "db":
        return asyncio.run(DB_COMMANDS[args.db_command](config, args))
    logger = logging.getLogger("panoptes")
    logger.info(
        "panoptes %s on http://%s:%s (%s), database %s",
        __version__,
        config.host,
        config.port,
        config.server,
        _shown(config.db_url),
    )
    if config.token is None and not _loopback(config.host):
        logger.warning(
            "panoptes listens on %s without a token: anyone who can reach this port can post "
            "events, rename, cancel and delete workflows. Set PANOPTES_TOKEN (see README).",
            config.host,
        )
    try:
        with asyncio.Runner(loop_factory=event_loop_factory(config)) as runner:
            runner.run(run(config))
    except serving.StartupFailed as exc:
        # Startup failed (a database at an old schema with PANOPTES_AUTO_MIGRATE=0, ...).
        print(f"panoptes: could not start: {exc}", file=sys.stderr)
        return 1
    return 0


def event_loop_factory(config: Config) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where it is installed (a dependency on Linux and macOS): it takes less
    CPU per request than asyncio's own. PANOPTES_UVLOOP=0 keeps asyncio's."""
    if not config.uvloop:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may well resolve to a public address


# ---- panoptes db ...


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _missing_file(url: str) -> Path | None:
    """The SQLite file the URL names, when it does not exist (opening it would create it)."""
    path = sqlite_file(make_url(url))
    return None if path is None or path.exists() else path


async def db_upgrade(config: Config, _args: argparse.Namespace) -> int:
    engine = make_engine(config.db_url)
    try:
        before, after = await upgrade_schema(engine)
    except SchemaError as exc:
        print(f"panoptes db upgrade: {exc}", file=sys.stderr)
        return 1
    finally:
        await engine.dispose()
    if before.at_head:
        print(f"{_shown(config.db_url)}: already at revision {after.revision} (head)")
    else:
        print(
            f"{_shown(config.db_url)}: upgraded to revision {after.revision} (head); "
            f"it was {before.describe()}"
        )
    return 0


async def db_current(config: Config, _args: argparse.Namespace) -> int:
    missing = _missing_file(config.db_url)
    if missing is not None:
        print(f"none: there is no database file {missing}")
        return 0
    engine = make_engine(config.db_url)
    try:
        state = await schema_state(engine)
    finally:
        await engine.dispose()
    if state.kind != "versioned":
        print(f"none: the database is {state.describe()}")
    elif state.at_head:
        print(f"{state.revision} (head)")
    else:
        print(f"{state.revision} (head is {state.head}: run panoptes db upgrade)")
    return 0


async def db_prune(config: Config, args: argparse.Namespace) -> int:
    days = args.days if args.days is not None else config.retention_days
    if days <= 0:
        print(
            "panoptes db prune: say how old with --days N, or set PANOPTES_RETENTION_DAYS",
            file=sys.stderr,
        )
        return 2
    missing = _missing_file(config.db_url)
    if missing is not None:
        print(f"panoptes db prune: there is no database file {missing}", file=sys.stderr)
        return 1
    # Through the service, so the deletions are events like any other; never migrates.
    service = Service(replace(config, auto_migrate=False))
    try:
        await service.open()
        removed = await service.prune(days)
    except SchemaError as exc:
        print(f"panoptes db prune: {exc}", file=sys.stderr)
        return 1
    finally:
        await service.stop()
    workflows = "workflow" if removed == 1 else "workflows"
    print(f"removed {removed} {workflows} that ended more than {days:g} day(s) ago")
    return 0


DB_COMMANDS: dict[str, Callable[[Config, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "upgrade": db_upgrade,
    "current": db_current,
    "prune": db_prune,
}


if __name__ == "__main__":
    sys.exit(main())
