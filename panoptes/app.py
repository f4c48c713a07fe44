"""create_app: wires the database, writer, hub and blueprints together; nothing else."""

from __future__ import annotations

import logging

from quart import Quart, Response, has_request_context, request
from werkzeug.exceptions import HTTPException

from . import auth
from .config import Config
from .routes import api, feed, metrics, pages, wms
from .routes.common import BadRequest, crash_detail, error_response, render_page, too_large
from .service import Panoptes
from .writer import DomainError
from .wscompression import set_compression

log = logging.getLogger(__name__)


def create_app(config: Config | None = None) -> Quart:
    config = config or Config.from_env()
    app = Quart(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.config["BODY_TIMEOUT"] = wms.BODY_TIMEOUT_SECONDS
    # A process-wide Hypercorn setting (it has no option for it); see wscompression.py.
    set_compression(config.ws_compression)
    service = Panoptes(config)
    app.extensions["panoptes"] = service

    app.register_blueprint(wms.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(feed.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(metrics.bp)
    _register_errors(app)
    wms.install(app, config)  # inside auth's /t/<token>/ prefix handling
    auth.install(app, config)

    @app.before_serving
    async def start() -> None:
        await service.start()

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


async def _error(status: int, error: str, detail: str) -> Response:
    if _wants_html():
        html = await render_page("error.html", status=status, error=error, detail=detail, seq=0)
        return Response(html, status=status, content_type="text/html; charset=utf-8")
    return error_response(status, error, detail)


def _register_errors(app: Quart) -> None:
    @app.errorhandler(BadRequest)
    async def bad_request(exc: BadRequest) -> Response:
        return await _error(exc.status, exc.error, exc.detail)

    @app.errorhandler(DomainError)
    async def refused(exc: DomainError) -> Response:
        return await _error(exc.status, exc.error, exc.detail)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        detail = exc.description or ""
        if status == 413:
            detail = too_large(app.config["MAX_CONTENT_LENGTH"])
        return await _error(status, (exc.name or "error").lower(), detail)

    @app.errorhandler(Exception)
    async def crashed(exc: Exception) -> Response:
        if not has_request_context():
            log.exception("unhandled error in a websocket handler")
            return error_response(500, "internal error", type(exc).__name__)
        log.exception("unhandled error on %s %s", request.method, request.path)
        # Snakemake 7/8 abort the user's run on a 500 from the paths they call, and
        # carry on after a 503.
        status = 503 if wms.called_by_clients(request.method, request.path) else 500
        return error_response(status, "internal error", crash_detail(exc))
