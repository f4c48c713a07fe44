"""POST /update_workflow_status, served beside the Quart app for speed.

Every Snakemake message comes here, so this path is kept short: it reads the raw ASGI
request and answers it without Quart's request and response machinery, which cost about
as much CPU as storing the message. It gives the same answers as the app's own route
(wms.py), which tests/test_parity.py holds it to: the same checks (auth.check), body
decoding (bodies.decode_fields), message handling (wms.ingest_fields), JSON errors
(errors.render) and headers (auth.security_headers). It is the outermost layer, and does
what the two middlewares around the app would do for it itself: the Host check
(hosts.Acceptance; a request it refuses goes on to HostCheck, which answers it) and the
`/t/<token>/` prefix (auth.TokenPrefix). Passing through them was 2% of a message's
instructions (benchmarks/instructions.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from quart import Quart

from ..config import Config
from ..errors import (
    BadRequest,
    MethodNotAllowed,
    PanoptesError,
    RequestTimeout,
    TooLarge,
    Unavailable,
    crash_detail,
    render,
)
from ..service import Service
from . import auth, wms
from .bodies import cookie, decode_fields
from .hosts import Acceptance, raw_host
from .wms import INGEST_PATH, ingest_fields, refused

log = logging.getLogger(__name__)

Answer = tuple[int, bytes, dict[str, str]]


class BodyDeadlines:
    """The time limit on reading a body, for every request at once: one watcher that wakes a
    few times a second and cancels the reads that ran out of time (their requests get 408),
    instead of an asyncio.timeout per request, whose timer cost about 7 µs of each message's
    CPU (benchmarks/README.md). A read ends at most a tick after its limit. The watcher
    runs while bodies are being read and ends when none are."""

    def __init__(self) -> None:
        # The tasks reading a body, with when (loop time) their limit is up.
        self._reading: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._watcher: asyncio.Task[None] | None = None

    def start(self, task: asyncio.Task[Any], seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self._reading[task] = loop.time() + seconds
        watcher = self._watcher
        if watcher is None or watcher.done() or watcher.get_loop() is not loop:
            self._watcher = loop.create_task(self._watch(seconds), name="panoptes-body-deadlines")

    def expired(self, task: asyncio.Task[Any]) -> bool:
        """Whether the watcher cancelled `task`'s read (its limit was up)."""
        return task in self._expired

    def end(self, task: asyncio.Task[Any]) -> None:
        """Stop watching `task`."""
        self._reading.pop(task, None)
        self._expired.discard(task)

    async def _watch(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        tick = min(0.25, seconds / 8)
        while self._reading:
            await asyncio.sleep(tick)
            now = loop.time()
            # A task here is waiting in its read (it leaves before it awaits anything else),
            # so the cancellation lands there.
            for task in [task for task, deadline in self._reading.items() if deadline <= now]:
                del self._reading[task]
                self._expired.add(task)
                task.cancel()


def ingest_token(scope: Any) -> tuple[bool, str | None]:
    """Whether the request is for the ingest endpoint, and the token of its `/t/<token>/`
    prefix if it has one (as auth.TokenPrefix reads it)."""
    if scope["type"] != "http":
        return False, None
    path: str = scope["path"]
    if path == INGEST_PATH:
        return True, None
    if path.startswith("/t/"):
        token, _, rest = path[3:].partition("/")
        if rest == INGEST_PATH[1:]:
            return True, token
    return False, None


class IngestEndpoint:
    """ASGI middleware, outermost: answers POST /update_workflow_status (under a `/t/<token>/`
    prefix too) for a Host this server answers for; passes on everything else."""

    def __init__(self, app: Any, quart: Quart, config: Config, accepts: Acceptance) -> None:
        self.app = app
        self.quart = quart
        self.config = config
        self.max_body = config.max_body_bytes
        self.headers = auth.raw_json_headers(config)
        self.deadlines = BodyDeadlines()
        self.accepts = accepts  # the Host check's own, with what it remembers

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        ours, token = ingest_token(scope)
        if not ours or not self.accepts(raw_host(scope)):
            await self.app(scope, receive, send)
            return
        running: Service = self.quart.extensions["panoptes"]
        started = time.perf_counter()
        try:
            if scope["method"] == "POST":
                status, body, extra = await self._handle(scope, receive, running, token)
            else:
                status, body, extra = render(MethodNotAllowed(["POST"]))
        except Exception as exc:
            log.exception("unhandled error on POST %s", INGEST_PATH)
            # Snakemake 7/8 abort the user's run on a 500, and carry on after a 503.
            crashed = Unavailable(crash_detail(exc), error="internal error")
            status, body, extra = render(crashed)
        if status == 200:
            running.metrics.ingest_took(time.perf_counter() - started)
        headers = [
            *self.headers,
            (b"content-length", str(len(body)).encode()),
            *((k.lower().encode(), v.encode()) for k, v in extra.items()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _handle(
        self, scope: Any, receive: Any, running: Service, token: str | None
    ) -> Answer:
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope["headers"]
        }
        client = (scope.get("client") or ("unknown",))[0]
        try:
            auth.check(
                self.config,
                "POST",
                INGEST_PATH,
                headers,
                headers.get("host", ""),
                token,
                cookie(headers.get("cookie"), auth.COOKIE),
            )
        except PanoptesError as exc:
            return render(exc)
        try:
            raw = await self._body(receive, headers)
            mimetype = headers.get("content-type", "").partition(";")[0].strip().lower()
            fields = decode_fields(raw, mimetype, required=True)
        except PanoptesError as exc:
            refused(running, client, exc)
            return render(exc)
        try:
            answer = await ingest_fields(running, fields, client)  # counts its refusals
        except PanoptesError as exc:
            return render(exc)
        return 200, orjson.dumps(answer), {}

    async def _body(self, receive: Any, headers: dict[str, str]) -> bytes:
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            raise TooLarge(self.max_body)
        chunks: list[bytes] = []
        size = 0
        task = asyncio.current_task()
        assert task is not None
        limit = wms.BODY_TIMEOUT_SECONDS  # read here: tests shorten it
        self.deadlines.start(task, limit)
        try:
            while True:
                event = await receive()
                if event["type"] == "http.disconnect":
                    raise BadRequest("the client went away")
                chunk = event.get("body", b"")
                size += len(chunk)
                if size > self.max_body:
                    raise TooLarge(self.max_body)
                chunks.append(chunk)
                if not event.get("more_body", False):
                    return b"".join(chunks)
        except asyncio.CancelledError:
            if not self.deadlines.expired(task):
                raise
            task.uncancel()
            raise RequestTimeout(f"the body did not arrive within {limit} s") from None
        finally:
            self.deadlines.end(task)


def install(app: Quart, config: Config, accepts: Acceptance) -> None:
    endpoint = IngestEndpoint(app.asgi_app, app, config, accepts)
    app.asgi_app = endpoint  # type: ignore[method-assign]
