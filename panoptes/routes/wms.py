"""The two endpoints Snakemake clients call: register a run, then post its messages.

Snakemake 7/8 abort the user's whole workflow on a 401/403/404/500 from these, so a
message panoptes cannot use is answered 400 (or 413/415/422): they print it and go on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from http.cookies import CookieError, SimpleCookie
from typing import Any

import orjson
from quart import Blueprint, Quart, Response, request
from werkzeug.exceptions import MethodNotAllowed, RequestEntityTooLarge, RequestTimeout

from .. import auth, ingest
from ..config import Config
from ..service import Panoptes
from ..writer import DomainError
from .common import (
    BadRequest,
    body_fields,
    crash_detail,
    decode_fields,
    error_body,
    json_response,
    panoptes,
    too_large,
)

log = logging.getLogger(__name__)

bp = Blueprint("wms", __name__)
# As long as Quart waits for a request body (app.config["BODY_TIMEOUT"]).
BODY_TIMEOUT_SECONDS = 30


def called_by_clients(method: str, path: str) -> bool:
    """Whether Snakemake itself calls this (and so must never see a 500 from it)."""
    if path in ("/create_workflow", "/update_workflow_status", "/api/service-info"):
        return True
    return method == "PUT" and path.startswith("/api/workflow/")


def _text(fields: dict[str, object], name: str) -> str | None:
    value = fields.get(name)
    return ingest.clean(value) if isinstance(value, str) and value else None


@bp.get("/create_workflow")
async def create_workflow() -> Response:
    # The stable id: ?workflow_id= (plugin >= 0.2.2) or ?name= (older plugin, and
    # --wms-monitor-arg name=...). An empty workflow_id falls back to name.
    given = request.args.get("workflow_id") or request.args.get("name") or ""
    name = ingest.clean(given.strip()) or None
    try:
        fields = await body_fields(required=False)
    except BadRequest:
        fields = {}  # the body only describes the run; never refuse a run over it
    registration = ingest.Registration(
        name=name,
        command=_text(fields, "command"),
        workdir=_text(fields, "workdir"),
        snakefile=_text(fields, "snakefile"),
    )
    app = panoptes()
    workflow = await app.register(registration)
    app.metrics.workflows_registered.inc()
    log.info("registered workflow %s (%s)", workflow["id"], workflow["name"])
    return json_response(workflow)


class IngestEndpoint:
    """ASGI middleware serving POST /update_workflow_status itself, beside the Quart app.

    Every Snakemake message comes here, so this path is kept short: it reads the raw ASGI
    request and answers it without Quart's request and response machinery, which cost about
    as much CPU as storing the message. It gives the same answers as the rest of the app:
    the same checks (auth.check), body decoding (decode_fields), JSON errors and headers.
    Every other request goes on to the app.
    """

    PATH = "/update_workflow_status"

    def __init__(self, app: Any, quart: Quart, config: Config) -> None:
        self.app = app
        self.quart = quart
        self.config = config
        self.max_body = config.max_body_bytes
        self.headers = [
            (b"content-type", b"application/json"),
            *((k.lower().encode(), v.encode()) for k, v in auth.security_headers(config).items()),
        ]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.PATH:
            await self.app(scope, receive, send)
            return
        service: Panoptes = self.quart.extensions["panoptes"]
        started = time.perf_counter()
        try:
            if scope["method"] == "POST":
                status, answer, extra = await self._handle(scope, receive, service)
            else:
                refused = MethodNotAllowed(valid_methods=["POST"])
                answer = error_body(refused.name.lower(), refused.description or "")
                status, extra = 405, {"Allow": "POST"}
        except Exception as exc:
            log.exception("unhandled error on POST %s", self.PATH)
            # Snakemake 7/8 abort the user's run on a 500, and carry on after a 503.
            status, answer, extra = 503, error_body("internal error", crash_detail(exc)), {}
        if status == 200:
            service.metrics.ingest_seconds.observe(time.perf_counter() - started)
        body = orjson.dumps(answer)
        headers = [
            *self.headers,
            (b"content-length", str(len(body)).encode()),
            *((k.lower().encode(), v.encode()) for k, v in extra.items()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _handle(
        self, scope: Any, receive: Any, service: Panoptes
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope["headers"]
        }
        decision = auth.check(
            self.config,
            "POST",
            self.PATH,
            headers,
            headers.get("host", ""),
            auth.path_token(scope),
            _cookie(headers.get("cookie"), auth.COOKIE),
        )
        if isinstance(decision, auth.Refusal):
            return decision.status, error_body(decision.error, decision.detail), decision.headers()
        client = (scope.get("client") or ("unknown",))[0]
        try:
            raw = await self._body(receive, headers)
            mimetype = headers.get("content-type", "").partition(";")[0].strip().lower()
            fields = decode_fields(raw, mimetype, required=True)
            message = ingest.parse_message(fields)
            stored = await service.ingest(message)
        except (BadRequest, DomainError) as exc:  # DomainError: unknown workflow, bad fields
            log.warning("refused a message from %s: %s", client, exc)
            service.metrics.outcomes["refused"].inc()
            return exc.status, error_body(exc.error, exc.detail), {}
        service.metrics.outcomes["stored" if stored else "duplicate"].inc()
        return 200, {"status": "ok" if stored else "duplicate"}, {}

    async def _body(self, receive: Any, headers: dict[str, str]) -> bytes:
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            raise self._oversize()
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(BODY_TIMEOUT_SECONDS):
                while True:
                    event = await receive()
                    if event["type"] == "http.disconnect":
                        raise BadRequest("the client went away", status=400)
                    chunk = event.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        raise self._oversize()
                    chunks.append(chunk)
                    if not event.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            raise BadRequest(
                f"the body did not arrive within {BODY_TIMEOUT_SECONDS} s",
                status=408,
                error=RequestTimeout().name.lower(),
            ) from None

    def _oversize(self) -> BadRequest:
        name = RequestEntityTooLarge().name.lower()
        return BadRequest(too_large(self.max_body), status=413, error=name)


def _cookie(header: str | None, name: str) -> str | None:
    if not header:
        return None
    cookies = SimpleCookie()
    try:
        cookies.load(header)
    except CookieError:
        return None
    morsel = cookies.get(name)
    return morsel.value if morsel is not None else None


def install(app: Quart, config: Config) -> None:
    app.asgi_app = IngestEndpoint(app.asgi_app, app, config)  # type: ignore[method-assign,assignment]
