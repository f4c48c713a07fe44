"""create_app: wires the service, blueprints and one error handler together; nothing else."""

from __future__ import annotations

import logging

from quart import Quart, Response, has_request_context, request
from werkzeug.exceptions import HTTPException

from . import serving
from .config import Config
from .db import database_failed
from .errors import (
    DatabaseUnavailable,
    MethodNotAllowed,
    PanoptesError,
    TooLarge,
    Unavailable,
    crash_detail,
)
from .routes import api, auth, feed, hosts, ingest, metrics, notifications, pages, wms
from .routes.html import render_page
from .routes.respond import error_response
from .service import Service
from .serving import close_feeds_on_signals, redact_logs

log = logging.getLogger(__name__)


def create_app(config: Config | None = None, *, fast_ingest: bool = True) -> Quart:
    """The app. `fast_ingest=False` leaves POST /update_workflow_status to its Quart route
    instead of the fast endpoint in front of the app (the parity test compares the two)."""
    config = config or Config.from_env()
    app = Quart(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.config["BODY_TIMEOUT"] = wms.BODY_TIMEOUT_SECONDS
    if serving.hypercorn_serves():  # a setting Hypercorn has no option for
        serving.set_ws_compression(config.ws_compression)
    service = Service(config)
    app.extensions["panoptes"] = service

    app.register_blueprint(wms.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(feed.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(notifications.bp)
    _register_errors(app)
    feed.install(app)  # innermost: the server's send as Quart is given it
    auth.install(app, config)
    check = hosts.install(app, config)  # a request for a foreign name goes no further
    if fast_ingest:
        # Outermost: checks the Host (with the Host check's names) and the token prefix itself.
        ingest.install(app, config, check.accepts)

    @app.before_serving
    async def start() -> None:
        redact_logs(config.token)
        await service.start()
        close_feeds_on_signals(service.hub)

    @app.after_serving
    async def stop() -> None:
        await service.stop()

    return app


def _wants_html() -> bool:
    """Browsers asking for a page get an HTML error page; everything else gets JSON."""
    if not has_request_context():  # a refused websocket handshake
        return False
    if request.path.startswith(("/api/", "/ws")) or wms.called_by_clients(
        request.method, request.path
    ):
        return False
    return request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"


async def _error(exc: PanoptesError) -> Response:
    if _wants_html():
        html = await render_page(
            "error.html", status=exc.status, error=exc.error, detail=exc.detail, seq=0
        )
        response = Response(html, status=exc.status, content_type="text/html; charset=utf-8")
        response.headers.update(exc.headers)
        return response
    return error_response(exc)


def _from_werkzeug(exc: HTTPException, max_body: int) -> PanoptesError:
    """Quart's own refusals (no such route, wrong method, a body over the limit) as ours."""
    status = exc.code or 500
    if status == 413:
        return TooLarge(max_body)
    if status == 405 and exc.response is None:
        allowed = getattr(exc, "valid_methods", None)
        if allowed:
            return MethodNotAllowed(sorted(allowed))
    return PanoptesError(exc.description or "", status=status, error=(exc.name or "error").lower())


def _register_errors(app: Quart) -> None:
    @app.errorhandler(PanoptesError)
    async def refused(exc: PanoptesError) -> Response:
        return await _error(exc)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        return await _error(_from_werkzeug(exc, app.config["MAX_CONTENT_LENGTH"]))

    @app.errorhandler(Exception)
    async def crashed(exc: Exception) -> Response:
        if not has_request_context():
            log.exception("unhandled error in a websocket handler")
            return error_response(
                PanoptesError(type(exc).__name__, status=500, error="internal error")
            )
        if database_failed(exc):  # a known outage, not a bug: no traceback
            log.error("the database failed %s %s: %r", request.method, request.path, exc)
            return await _error(DatabaseUnavailable(f"failed ({type(exc).__name__})"))
        log.exception("unhandled error on %s %s", request.method, request.path)
        detail = crash_detail(exc)
        # Snakemake 7/8 abort the user's run on a 500 from the paths they call, and
        # carry on after a 503.
        if wms.called_by_clients(request.method, request.path):
            return error_response(Unavailable(detail, error="internal error"))
        return error_response(PanoptesError(detail, status=500, error="internal error"))
