"""Who may do what: an optional shared token, cross-site request refusal, security headers.

With PANOPTES_TOKEN set, everything that changes state (ingest, rename, cancel, delete) needs
the token; reading (pages, API reads, the feed) needs it too unless PANOPTES_PUBLIC_READ is on,
and the feed needs it even then with PANOPTES_PRIVATE_FEED.
The token is accepted from, in order:

- `Authorization: Bearer <token>`: Snakemake 7/8 send it from WMS_MONITOR_TOKEN, scripts too;
- a path prefix `/t/<token>/...`: the Snakemake 9 plugin cannot send headers, so it is
  pointed at `http://host:5000/t/<token>` and calls `/t/<token>/create_workflow`;
- the `panoptes_token` cookie, which a browser gets by opening `/t/<token>/` once.

Whatever the token, a browser on another site may not change anything here (cross-site
request forgery): requests that change state and carry an Origin (or Sec-Fetch-Site) from
elsewhere are refused, and cookie-authenticated changes must carry the `X-Requested-With`
header that the pages' script sends (another site cannot send it without a CORS preflight,
which panoptes never grants).
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import urlsplit

from quart import Quart, Response, has_request_context, redirect, request, websocket

from ..config import Config
from ..errors import Forbidden, PanoptesError, Unauthorized
from .respond import error_response

COOKIE = "panoptes_token"
SCOPE_KEY = "panoptes.path_token"
# Always open: the liveness check (container health checks, Snakemake 8's start-up probe)
# and the static files every page needs, even the login-less error page.
OPEN_PATHS = ("/api/service-info",)
OPEN_PREFIXES = ("/static/",)
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# GET requests that nevertheless change state: registering a run.
STATE_CHANGING_GETS = {"/create_workflow"}
# What only those with the token may read, even when reading is public: the delivery log
# of notifications, an admin's view.
ADMIN_PATHS = ("/notifications", "/api/notifications")


class TokenPrefix:
    """ASGI middleware: `/t/<token>/rest` is served as `/rest`, remembering the token."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and scope["path"].startswith("/t/"):
            token, _, rest = scope["path"][3:].partition("/")
            raw = scope.get("raw_path") or scope["path"].encode()
            raw_rest = raw.split(b"/", 3)[3] if raw.count(b"/") >= 3 else b""
            scope = {
                **scope,
                "path": "/" + rest,
                "raw_path": b"/" + raw_rest,
                SCOPE_KEY: token,
            }
        await self.app(scope, receive, send)


def path_token(scope: Any) -> str | None:
    token = scope.get(SCOPE_KEY)
    return token if isinstance(token, str) else None


def _matches(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def _bearer(headers: Any) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, credentials = value.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def _same_origin(origin: str, host: str) -> bool:
    return urlsplit(origin).netloc == host


def _token_sent(config: Config, headers: Any, path_token: str | None) -> bool:
    if config.token is None:
        return False
    return _matches(_bearer(headers), config.token) or _matches(path_token, config.token)


def _changes_state(method: str, path: str) -> bool:
    return method not in SAFE_METHODS or path in STATE_CHANGING_GETS


def _cross_site(headers: Any, host: str) -> bool:
    """A browser on another site sent this (a simple form post or image needs no preflight)."""
    origin = headers.get("origin")
    if origin is not None and origin != "null":
        return not _same_origin(origin, host)
    if origin == "null":
        return True
    return headers.get("sec-fetch-site", "") in ("cross-site", "same-site")


def cross_site() -> PanoptesError:
    return Forbidden("requests from another site may not change anything here")


def no_token() -> PanoptesError:
    return Unauthorized(
        "this panoptes needs its token: send 'Authorization: Bearer <token>' or use the "
        "address http://host:port/t/<token>"
    )


# The request came through /t/<token>/ with the right token: allowed, and a browser opening
# a page that way is given the cookie.
BY_PATH_TOKEN = "path token"


def check(
    config: Config,
    method: str,
    path: str,
    headers: Any,
    host: str,
    path_token: str | None,
    cookie: str | None,
) -> str | None:
    """Whether an HTTP request may go on: None (yes), BY_PATH_TOKEN (yes); a refusal is
    raised (Forbidden, Unauthorized).

    `headers` is anything with a case-insensitive `get` of lower-case names (werkzeug's
    Headers, or the dict of the ingest endpoint, which sees the raw ASGI request)."""
    changes = _changes_state(method, path)
    if changes and _cross_site(headers, host) and not _token_sent(config, headers, path_token):
        # PANOPTES_ALLOWED_ORIGINS opens reading to embedding sites, never changes: a page
        # of another site may change something only with the token in a header or the
        # path (a cookie would be the user's browser's own, sent for any page).
        raise cross_site()
    if config.token is None or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
        return None
    if not changes and config.public_read and path not in ADMIN_PATHS:
        return BY_PATH_TOKEN if path_token is not None else None
    if _matches(_bearer(headers), config.token):
        return None
    if _matches(path_token, config.token):
        return BY_PATH_TOKEN
    if _matches(cookie, config.token) and (not changes or headers.get("x-requested-with")):
        return None
    raise no_token()


def feed_needs_token(config: Config) -> bool:
    """Whether the feed takes only those who give the token: with one set, when reading is
    not public, or the feed is private (PANOPTES_PRIVATE_FEED)."""
    return config.token is not None and (not config.public_read or config.private_feed)


def install(app: Quart, config: Config) -> None:
    """Wire the checks and headers into app (a no-op for auth when no token is set)."""
    app.asgi_app = TokenPrefix(app.asgi_app)  # type: ignore[method-assign]

    @app.before_request
    async def check_request() -> Response | None:
        try:
            decision = check(
                config,
                request.method,
                request.path,
                request.headers,
                request.host,
                path_token(request.scope),
                request.cookies.get(COOKIE),
            )
        except PanoptesError as refused:
            return error_response(refused)  # JSON, also for a browser: it is not a page
        return _login_redirect(config) if decision == BY_PATH_TOKEN else None

    @app.before_websocket
    async def check_websocket() -> Response | None:
        if not feed_needs_token(config):
            return None
        given = (
            _bearer(websocket.headers)
            or path_token(websocket.scope)
            or websocket.cookies.get(COOKIE)
        )
        if _matches(given, config.token or ""):
            return None
        return error_response(Unauthorized("the feed needs this panoptes' token"))

    @app.context_processor
    async def feed_state() -> dict[str, Any]:
        # A page whose feed would be refused (this browser has no token cookie, the one
        # way a page's script gives it) says so instead of retrying for ever.
        closed = (
            has_request_context()
            and feed_needs_token(config)
            and not _matches(request.cookies.get(COOKIE), config.token or "")
        )
        return {"feed_closed": closed}

    always = security_headers(config)

    @app.after_request
    async def add_security_headers(response: Response) -> Response:
        headers = response.headers
        _allow_reading_from_embedding_sites(config, headers)
        for name, value in always.items():
            headers.setdefault(name, value)
        return response


def security_headers(config: Config) -> dict[str, str]:
    """What every HTTP response carries."""
    return {
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Content-Security-Policy": content_security_policy(config),
    }


def raw_json_headers(config: Config) -> list[tuple[bytes, bytes]]:
    """The headers of a JSON answer sent without Quart (the fast ingest endpoint, the host
    check), as ASGI wants them: the same as the app's own answers carry."""
    return [
        (b"content-type", b"application/json"),
        *((k.lower().encode(), v.encode()) for k, v in security_headers(config).items()),
    ]


def _allow_reading_from_embedding_sites(config: Config, headers: Any) -> None:
    """Pages on PANOPTES_ALLOWED_ORIGINS may read the API and load the static files (CORS).
    Only reads: nothing here answers a preflight, so no other site can change anything."""
    origin = request.headers.get("Origin")
    if origin is None or request.method not in ("GET", "HEAD"):
        return
    if not request.path.startswith(("/api/", "/static/")):
        return
    allowed = config.allowed_origins
    if "*" in allowed or origin.rstrip("/") in allowed:
        headers["Access-Control-Allow-Origin"] = "*" if "*" in allowed else origin
        headers.add("Vary", "Origin")


def _login_redirect(config: Config) -> Response | None:
    """A browser that opened a page through /t/<token>/ gets the cookie and the plain URL."""
    token = path_token(request.scope)
    if token is None or request.method != "GET" or not _matches(token, config.token or ""):
        return None
    if request.path.startswith(("/api/", "/create_workflow")):
        return None  # a script or the Snakemake 9 plugin: just serve it
    target = request.full_path.rstrip("?") or "/"
    response = redirect(target, 303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
    return response  # type: ignore[return-value]


def content_security_policy(config: Config) -> str:
    """Pages load only their own scripts and styles; no inline script runs anywhere."""
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            f"frame-ancestors {config.frame_ancestors}",
        ]
    )
