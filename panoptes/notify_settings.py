"""The notification settings (issue 14): targets, rules, SMTP and delivery, read from
PANOPTES_WEBHOOK_URL and friends and from the TOML file PANOPTES_NOTIFY_CONFIG names.

A foundation module beside config.py, which calls `notify_settings`; nothing here does I/O
besides reading that file. A target's URL and the SMTP password are secrets: they are kept
out of every repr, and `masked` is the only way they are shown.
"""

from __future__ import annotations

import fnmatch
import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# Every event a target may ask for, and what one asks for when it does not say.
EVENTS = (
    "workflow.done",
    "workflow.error",
    "workflow.cancelled",
    "workflow.stale",
    "workflow.stuck",
    "job.failed",
)
DEFAULT_EVENTS = frozenset(EVENTS)
FORMATS = ("json", "slack", "mattermost", "teams", "ntfy", "discord", "email")
SMTP_TLS = ("starttls", "ssl", "none")
# Where a notification is: waiting for (another) attempt, delivered, or given up.
DELIVERY_STATUSES = ("pending", "delivered", "failed")


class NotifyConfigError(ValueError):
    """A notification setting panoptes cannot use (config.ConfigError's twin)."""


def format_for(url: str) -> str:
    """The message format a URL's service accepts, by its host and path."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host == "hooks.slack.com":
        return "slack"
    if host in {"discord.com", "discordapp.com"} and parts.path.startswith("/api/webhooks"):
        return "discord"
    if host.endswith((".webhook.office.com", ".logic.azure.com", ".powerplatform.com")):
        return "teams"
    if host == "ntfy.sh":
        return "ntfy"
    return "json"


def mask_url(url: str) -> str:
    """A URL as panoptes shows and logs it: scheme and host, then only its last 4
    characters (the path and query of a webhook URL are its secret)."""
    parts = urlsplit(url)
    rest = url.split(parts.netloc, 1)[-1] if parts.netloc else url
    tail = rest[-4:] if len(rest) > 8 else ""
    return f"{parts.scheme}://{parts.hostname or ''}/…{tail}"


@dataclass(frozen=True)
class Target:
    """Where notifications go: a URL in some format, or email addresses."""

    format: str
    url: str = field(default="", repr=False)
    emails: tuple[str, ...] = ()
    events: frozenset[str] = DEFAULT_EVENTS
    workflows: str = "*"  # fnmatch pattern on the workflow's name

    @property
    def key(self) -> str:
        """A short stable id, the same in every process, that reveals nothing of the URL."""
        what = f"{self.format}\n{self.url}\n{','.join(self.emails)}"
        return hashlib.sha256(what.encode()).hexdigest()[:12]

    @property
    def masked(self) -> str:
        return ", ".join(self.emails) if self.format == "email" else mask_url(self.url)

    def wants(self, event: str, name: str) -> bool:
        return event in self.events and fnmatch.fnmatchcase(name, self.workflows)

    def shown(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "format": self.format,
            "target": self.masked,
            "events": sorted(self.events),
            "workflows": self.workflows,
        }


@dataclass(frozen=True)
class Smtp:
    host: str = ""
    port: int = 587
    tls: str = "starttls"
    user: str = ""
    password: str = field(default="", repr=False)
    sender: str = "panoptes@localhost"


@dataclass(frozen=True)
class NotifySettings:
    targets: tuple[Target, ...] = ()
    # A Running workflow with no event for this many minutes is stuck; 0: no stuck check.
    stuck_minutes: float = 0.0
    stuck_check_seconds: float = 30.0
    # One delivery attempt may take this long; a notification gets this many attempts,
    # the n-th retry after retry_seconds * 2**(n-1) (with jitter).
    timeout: float = 10.0
    max_attempts: int = 6
    retry_seconds: float = 5.0
    concurrency: int = 4
    # The HMAC key of the generic JSON posts (X-Panoptes-Signature).
    secret: str = field(default="", repr=False)
    smtp: Smtp = field(default_factory=Smtp)
    # The base of the links in messages; None: http://<host>:<port> of this server.
    public_url: str | None = None

    def target(self, key: str) -> Target | None:
        return next((t for t in self.targets if t.key == key), None)


def _number(env: dict[str, str], name: str, default: float, minimum: float = 0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise NotifyConfigError(f"{name} must be a number, got {raw!r}") from exc
    if value < minimum:
        raise NotifyConfigError(f"{name} must be at least {minimum:g}, got {raw!r}")
    return value


def _url(value: str, where: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NotifyConfigError(f"{where}: not an http(s) URL: {mask_url(value)}")
    return value.strip()


def _events(value: Any, where: str) -> frozenset[str]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise NotifyConfigError(f"{where}: events must be a list of event names")
    events = frozenset(str(item).strip() for item in items if str(item).strip())
    unknown = sorted(events - DEFAULT_EVENTS)
    if unknown:
        raise NotifyConfigError(
            f"{where}: unknown event {', '.join(unknown)}; use some of {', '.join(EVENTS)}"
        )
    return events


def _file_target(entry: Any, number: int, env: dict[str, str]) -> Target:
    where = f"PANOPTES_NOTIFY_CONFIG [[target]] {number}"
    if not isinstance(entry, dict):
        raise NotifyConfigError(f"{where}: must be a table")
    unknown = sorted(set(entry) - {"url", "url_env", "email", "format", "events", "workflows"})
    if unknown:
        raise NotifyConfigError(f"{where}: unknown key {', '.join(unknown)}")
    events = _events(entry.get("events", sorted(DEFAULT_EVENTS)), where)
    workflows = str(entry.get("workflows", "*"))
    if "email" in entry:
        emails = tuple(a.strip() for a in str(entry["email"]).split(",") if a.strip())
        if not emails or any("@" not in a for a in emails):
            raise NotifyConfigError(f"{where}: email must be addresses separated by commas")
        return Target("email", emails=emails, events=events, workflows=workflows)
    if "url_env" in entry:
        name = str(entry["url_env"])
        if not env.get(name, "").strip():
            raise NotifyConfigError(f"{where}: the environment variable {name} is not set")
        url = _url(env[name], f"{where} ({name})")
    elif "url" in entry:
        url = _url(str(entry["url"]), where)
    else:
        raise NotifyConfigError(f"{where}: needs url, url_env or email")
    kind = str(entry.get("format") or format_for(url))
    if kind not in FORMATS or kind == "email":
        raise NotifyConfigError(f"{where}: format must be one of {', '.join(FORMATS[:-1])}")
    return Target(kind, url=url, events=events, workflows=workflows)


def _file_targets(path: str, env: dict[str, str]) -> tuple[Target, ...]:
    try:
        data = tomllib.loads(Path(path).expanduser().read_text())
    except OSError as exc:
        raise NotifyConfigError(f"PANOPTES_NOTIFY_CONFIG: cannot read {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise NotifyConfigError(f"PANOPTES_NOTIFY_CONFIG: {path} is not TOML: {exc}") from exc
    entries = data.get("target", [])
    if not isinstance(entries, list):
        raise NotifyConfigError("PANOPTES_NOTIFY_CONFIG: targets are [[target]] tables")
    return tuple(_file_target(entry, n, env) for n, entry in enumerate(entries, 1))


def _smtp(env: dict[str, str]) -> Smtp:
    tls = env.get("PANOPTES_SMTP_TLS", "").strip().lower() or "starttls"
    if tls not in SMTP_TLS:
        raise NotifyConfigError(f"PANOPTES_SMTP_TLS must be one of {', '.join(SMTP_TLS)}")
    default_port = {"ssl": 465, "starttls": 587, "none": 25}[tls]
    return Smtp(
        host=env.get("PANOPTES_SMTP_HOST", "").strip(),
        port=int(_number(env, "PANOPTES_SMTP_PORT", default_port, 1)),
        tls=tls,
        user=env.get("PANOPTES_SMTP_USER", "").strip(),
        password=env.get("PANOPTES_SMTP_PASSWORD", ""),
        sender=env.get("PANOPTES_SMTP_FROM", "").strip() or Smtp.sender,
    )


def notify_settings(env: dict[str, str]) -> NotifySettings:
    events = _events(env.get("PANOPTES_NOTIFY_EVENTS", "") or sorted(DEFAULT_EVENTS), "env")
    targets = [
        Target(format_for(url), url=url, events=events)
        for url in (
            _url(raw, "PANOPTES_WEBHOOK_URL")
            for raw in env.get("PANOPTES_WEBHOOK_URL", "").split(",")
            if raw.strip()
        )
    ]
    path = env.get("PANOPTES_NOTIFY_CONFIG", "").strip()
    if path:
        targets += _file_targets(path, env)
    smtp = _smtp(env)
    if any(t.format == "email" for t in targets) and not smtp.host:
        raise NotifyConfigError("an email target needs PANOPTES_SMTP_HOST")
    public = env.get("PANOPTES_PUBLIC_URL", "").strip().rstrip("/")
    return NotifySettings(
        targets=tuple(targets),
        stuck_minutes=_number(env, "PANOPTES_STUCK_MINUTES", 0.0),
        stuck_check_seconds=_number(env, "PANOPTES_STUCK_CHECK_SECONDS", 30.0, 0.05),
        timeout=_number(env, "PANOPTES_NOTIFY_TIMEOUT", 10.0, 0.05),
        max_attempts=int(_number(env, "PANOPTES_NOTIFY_MAX_ATTEMPTS", 6, 1)),
        retry_seconds=_number(env, "PANOPTES_NOTIFY_RETRY_SECONDS", 5.0, 0.01),
        secret=env.get("PANOPTES_WEBHOOK_SECRET", ""),
        smtp=smtp,
        public_url=_url(public, "PANOPTES_PUBLIC_URL") if public else None,
    )
