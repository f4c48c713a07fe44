"""Every setting panoptes has, read from PANOPTES_* environment variables with defaults.

Command-line flags override the environment (see cli.py); nothing else reads os.environ.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .notify_settings import NotifyConfigError, NotifySettings, notify_settings

DEFAULT_DB_FILE = ".panoptes.db"
# Seconds a database operation may take (PANOPTES_DB_TIMEOUT).
DEFAULT_DB_TIMEOUT = 5.0
# The HTTP servers the `panoptes` command can run on (PANOPTES_SERVER), the default first.
SERVERS = ("uvicorn", "hypercorn")


class ConfigError(ValueError):
    """A setting has a value panoptes cannot use."""


def database_url(value: str) -> str:
    """Turn a file path or any SQLAlchemy URL into an async SQLAlchemy URL."""
    if "://" not in value:
        return f"sqlite+aiosqlite:///{Path(value).expanduser().resolve()}"
    scheme, rest = value.split("://", 1)
    drivers = {
        "sqlite": "sqlite+aiosqlite",
        "postgresql": "postgresql+asyncpg",
        "postgres": "postgresql+asyncpg",
        "postgresql+psycopg2": "postgresql+asyncpg",
    }
    return f"{drivers.get(scheme, scheme)}://{rest}"


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from exc


def _bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


# What PANOPTES_BROADCAST_URL may start with (broadcast.py has a backend for each).
BROADCAST_SCHEMES = ("memory", "redis", "rediss", "postgresql", "postgres", "postgresql+asyncpg")


def broadcast_scheme(url: str) -> str:
    """The scheme of a PANOPTES_BROADCAST_URL, if panoptes has a backend for it."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in BROADCAST_SCHEMES:
        raise ConfigError(
            "PANOPTES_BROADCAST_URL must be memory://, redis://host:port/n, rediss://... or "
            f"postgresql://...; got {scheme + '://' if scheme else 'no scheme'}"
        )
    return scheme


def _token(env: dict[str, str]) -> str | None:
    """PANOPTES_TOKEN, or the first line of the file PANOPTES_TOKEN_FILE names."""
    token = env.get("PANOPTES_TOKEN", "").strip()
    path = env.get("PANOPTES_TOKEN_FILE", "").strip()
    if path and not token:
        try:
            token = Path(path).expanduser().read_text().strip()
        except OSError as exc:
            raise ConfigError(f"PANOPTES_TOKEN_FILE: cannot read {path}: {exc}") from exc
        if not token:
            raise ConfigError(f"PANOPTES_TOKEN_FILE: {path} is empty")
    if token and (len(token) < 16 or not token.isprintable() or "/" in token):
        raise ConfigError("the token must be at least 16 printable characters, without '/'")
    return token or None


def _notify(env: dict[str, str]) -> NotifySettings:
    try:
        return notify_settings(env)
    except NotifyConfigError as exc:
        raise ConfigError(str(exc)) from exc


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 5000
    db_url: str = field(default_factory=lambda: database_url(DEFAULT_DB_FILE))
    # A Running workflow silent for this long becomes Stale; 0 disables the check.
    stale_hours: float = 48.0
    # The sweeper records (and announces) runs gone Stale every 6 x this many seconds (at
    # least 6 s); reads show a silent run as Stale at once, recorded yet or not.
    stale_check_seconds: float = 10.0
    # Largest request body accepted anywhere, in bytes.
    max_body_bytes: int = 4 * 1024 * 1024
    # How many client messages one database transaction may commit together.
    write_batch_size: int = 256
    # Seconds any database operation may take (connecting, a statement, a write waiting
    # for its commit) before the request gets 503 and service-info says "unavailable".
    db_timeout: float = DEFAULT_DB_TIMEOUT
    # Origins (scheme://host:port) whose pages may open the websocket feed, besides the
    # server's own; "*" allows any. Clients that send no Origin (scripts) are always let in.
    allowed_origins: tuple[str, ...] = ()
    # Host names (the Host header) this server answers for, besides loopback names, IP
    # addresses and the name it listens on; "*" answers for any (PANOPTES_ALLOWED_HOSTS).
    allowed_hosts: tuple[str, ...] = ()
    # Seconds between the feed's keep-alive pings.
    ws_ping_seconds: float = 20.0
    # Events a subscriber may fall behind before it is told to resync.
    subscriber_queue: int = 1000
    # Compress feed frames (permessage-deflate): ~200 KiB per connection; see serving/.
    ws_compression: bool = False
    # Feed connections one client address may hold open at once; 0: no limit.
    max_feed_per_client: int = 100
    # Feed connections this process holds open at once, from all addresses; 0: no limit.
    # Each costs about 50 KiB and a share of every event's fan-out.
    max_feed: int = 2000
    # Where live events cross processes: memory:// (one process), redis://host:port/n,
    # or postgresql://... (LISTEN/NOTIFY).
    broadcast_url: str = "memory://"
    # Finished workflows older than this many days are removed; 0 keeps everything.
    retention_days: float = 0.0
    # Apply database migrations when the server starts.
    auto_migrate: bool = True
    # Shared secret for ingest and changes (and reads unless public_read); None: no auth.
    token: str | None = field(default=None, repr=False)
    # With a token set, whether pages, API reads and the feed stay open to everyone.
    public_read: bool = True
    # With a token set, the feed needs it even when reading is public (PANOPTES_PUBLIC_READ):
    # pages and the API stay open, live updates go only to those who have the token.
    private_feed: bool = False
    # Who may show the pages in a frame (CSP frame-ancestors), e.g. "'self' https://lab.org".
    frame_ancestors: str = "'self'"
    # Serve on uvloop's event loop when it is installed (the `panoptes` command only).
    uvloop: bool = True
    # The HTTP server the `panoptes` command runs: uvicorn or hypercorn (serving/).
    server: str = "uvicorn"
    # Where the `panoptes` command writes its access log: None (none), "-" (standard
    # output) or a file. Tokens are taken out of every line (serving.redact).
    access_log: str | None = None
    # Webhooks and email on finished, failed and stuck runs (notify_settings.py).
    notify: NotifySettings = field(default_factory=NotifySettings)

    def __post_init__(self) -> None:
        broadcast_scheme(self.broadcast_url)  # an unknown backend stops the server at startup
        if self.private_feed and self.token is None:
            raise ConfigError("PANOPTES_PRIVATE_FEED needs PANOPTES_TOKEN (or _FILE) set")
        if self.server not in SERVERS:
            choices = ", ".join(SERVERS)
            raise ConfigError(f"PANOPTES_SERVER must be one of {choices}, got {self.server!r}")
        if not self.db_timeout > 0:
            raise ConfigError(f"PANOPTES_DB_TIMEOUT must be above 0 s, got {self.db_timeout}")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Config:
        env = dict(os.environ if env is None else env)
        config = cls(
            host=env.get("PANOPTES_HOST", "").strip() or cls.host,
            port=_int(env, "PANOPTES_PORT", cls.port),
            db_url=database_url(env.get("PANOPTES_DB_URL", "").strip() or DEFAULT_DB_FILE),
            stale_hours=_float(env, "PANOPTES_STALE_HOURS", cls.stale_hours),
            max_body_bytes=_int(env, "PANOPTES_MAX_BODY_BYTES", cls.max_body_bytes),
            allowed_origins=tuple(
                origin.strip().rstrip("/")
                for origin in env.get("PANOPTES_ALLOWED_ORIGINS", "").split(",")
                if origin.strip()
            ),
            allowed_hosts=tuple(
                name.strip().lower().rstrip(".")
                for name in env.get("PANOPTES_ALLOWED_HOSTS", "").split(",")
                if name.strip()
            ),
            ws_ping_seconds=_float(env, "PANOPTES_WS_PING_SECONDS", cls.ws_ping_seconds),
            subscriber_queue=_int(env, "PANOPTES_SUBSCRIBER_QUEUE", cls.subscriber_queue),
            max_feed_per_client=_int(env, "PANOPTES_MAX_FEED_PER_CLIENT", cls.max_feed_per_client),
            max_feed=_int(env, "PANOPTES_MAX_FEED", cls.max_feed),
            ws_compression=_bool(env, "PANOPTES_WS_COMPRESSION", cls.ws_compression),
            write_batch_size=max(1, _int(env, "PANOPTES_WRITE_BATCH_SIZE", cls.write_batch_size)),
            db_timeout=_float(env, "PANOPTES_DB_TIMEOUT", cls.db_timeout),
            broadcast_url=env.get("PANOPTES_BROADCAST_URL", "").strip() or cls.broadcast_url,
            retention_days=_float(env, "PANOPTES_RETENTION_DAYS", cls.retention_days),
            auto_migrate=_bool(env, "PANOPTES_AUTO_MIGRATE", cls.auto_migrate),
            token=_token(env),
            public_read=_bool(env, "PANOPTES_PUBLIC_READ", cls.public_read),
            private_feed=_bool(env, "PANOPTES_PRIVATE_FEED", cls.private_feed),
            frame_ancestors=env.get("PANOPTES_FRAME_ANCESTORS", "").strip() or cls.frame_ancestors,
            uvloop=_bool(env, "PANOPTES_UVLOOP", cls.uvloop),
            server=env.get("PANOPTES_SERVER", "").strip().lower() or cls.server,
            access_log=env.get("PANOPTES_ACCESS_LOG", "").strip() or None,
            notify=_notify(env),
        )
        given = {key: value for key, value in overrides.items() if value is not None}
        if "db_url" in given:
            given["db_url"] = database_url(given["db_url"])
        return replace(config, **given)


DEFAULT_SERVER_URL = "http://127.0.0.1:5000"


@dataclass(frozen=True)
class ClientConfig:
    """Where the terminal client (`panoptes list|show|watch`) finds a server: --url, else
    PANOPTES_URL, else this machine's default port; the token as the server reads it."""

    url: str = DEFAULT_SERVER_URL
    token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, url: str | None = None, env: dict[str, str] | None = None) -> ClientConfig:
        env = dict(os.environ if env is None else env)
        chosen = (url or env.get("PANOPTES_URL", "").strip() or DEFAULT_SERVER_URL).rstrip("/")
        if not chosen.startswith(("http://", "https://")):
            raise ConfigError(f"the server URL must start with http:// or https://, got {chosen!r}")
        return cls(url=chosen, token=_token(env))
