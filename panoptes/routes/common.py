"""Helpers every HTTP layer shares: the app's parts, request bodies, JSON errors."""

from __future__ import annotations

from itertools import product
from typing import Any

import orjson
from jinja2 import Environment
from markupsafe import Markup, escape
from quart import Response, current_app, request

from .. import __version__
from ..db import json_dumps
from ..models import MAX_BIGINT, MAX_INT
from ..service import Panoptes


class BadRequest(Exception):
    def __init__(self, detail: str, *, status: int = 400, error: str = "bad request") -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.error = error


def panoptes() -> Panoptes:
    service: Panoptes = current_app.extensions["panoptes"]
    return service


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status=status, content_type="application/json")


def error_body(error: str, detail: str) -> dict[str, str]:
    """Every JSON error panoptes answers has this shape."""
    return {"error": error, "detail": detail}


def error_response(status: int, error: str, detail: str) -> Response:
    return json_response(error_body(error, detail), status)


def too_large(limit: int) -> str:
    return f"the request body is larger than {limit} bytes"


def crash_detail(exc: BaseException) -> str:
    # The exception's text can hold SQL and stored values: it goes to the log only.
    return f"{type(exc).__name__}; the server log has the details"


def _form(raw: bytes) -> dict[str, str]:
    """A URL-encoded form as urllib's parse_qs reads it (blank values kept, the last of a
    repeated name wins), in about 40% of its time: every Snakemake message arrives this way,
    its JSON escaped nearly character by character."""
    fields: dict[str, str] = {}
    for pair in raw.split(b"&"):
        if pair:
            name, _, value = pair.partition(b"=")
            fields[_unquote(name).decode(errors="replace")] = _unquote(value).decode(
                errors="replace"
            )
    return fields


# Every way of writing each byte as %XY (upper and lower case hex digits).
_ESCAPED = {
    "".join(digits).encode(): bytes([byte])
    for byte in range(256)
    for digits in product(*((c.lower(), c.upper()) for c in f"{byte:02x}"))
}
# The escapes JSON is full of, replaced first with bytes.replace (a C loop). None of them
# decodes to "%" or a hex digit, so no replacement can form a new escape.
_COMMON_ESCAPES = list(
    {f"%{byte:02{case}}".encode(): bytes([byte]) for byte in b'":,{}[]/ ' for case in "Xx"}.items()
)


def _unquote(text: bytes) -> bytes:
    text = text.replace(b"+", b" ")
    if b"%" not in text:
        return text
    for escaped, byte in _COMMON_ESCAPES:
        text = text.replace(escaped, byte)
    if b"%" not in text:
        return text
    first, *rest = text.split(b"%")
    parts = [first]
    for part in rest:
        decoded = _ESCAPED.get(part[:2])
        parts.append(decoded + part[2:] if decoded is not None else b"%" + part)
    return b"".join(parts)


async def body_fields(*, required: bool) -> dict[str, Any]:
    """The request's body as a dict, whatever way the client encoded it (see decode_fields)."""
    data = await request.get_data(as_text=False)
    raw = data if isinstance(data, bytes) else data.encode()
    return decode_fields(raw, request.mimetype, required=required)


def decode_fields(raw: bytes, mimetype: str, *, required: bool) -> dict[str, Any]:
    """A request body as a dict. `mimetype` is the Content-Type without its parameters.

    Snakemake sends form bodies (7.0-7.31, 8.x, 9) and JSON without any Content-Type
    (7.32), so a body without a type is sniffed.
    """
    if not raw.strip():
        if required:
            raise BadRequest("the request has no body")
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8 text") from None
    is_json = mimetype == "application/json" or mimetype.endswith("+json")
    if is_json or (not mimetype and text.lstrip().startswith(("{", "["))):
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise BadRequest("the body must be a JSON object")
        return data
    if mimetype in ("", "application/x-www-form-urlencoded", "text/plain"):
        return _form(raw)
    raise BadRequest(
        f"unsupported Content-Type {mimetype!r}: send JSON or a form",
        status=415,
        error="unsupported media type",
    )


def int_arg(name: str, default: int, *, minimum: int = 0, maximum: int = MAX_BIGINT) -> int:
    """An integer query parameter; never larger than the database can compare with."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name!r} must be an integer, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise BadRequest(f"query parameter {name!r} must be between {minimum} and {maximum}")
    return value


def ids_in_range(endpoint: str | None, values: dict[str, Any] | None) -> None:
    """A blueprint's url_value_preprocessor: ids larger than their columns hold are 404.

    Not the converters' max=: werkzeug answers those 405 when the path has other methods.
    """
    values = values or {}
    if values.get("workflow_id", 0) > MAX_BIGINT:
        raise BadRequest(
            f"no workflow with id {values['workflow_id']}", status=404, error="not found"
        )
    if values.get("jobid", 0) > MAX_INT:
        raise BadRequest(f"there is no job {values['jobid']}", status=404, error="not found")


def no_nul(value: str, what: str) -> str:
    """Text the database can compare with: PostgreSQL refuses NUL characters."""
    if "\x00" in value:
        raise BadRequest(f"{what} must not contain NUL characters")
    return value


def list_arg(name: str, allowed: set[str] | None = None) -> list[str] | None:
    """A repeatable or comma-separated query parameter."""
    values = [
        no_nul(part.strip(), f"query parameter {name!r}")
        for raw in request.args.getlist(name)
        for part in raw.split(",")
        if part.strip()
    ]
    if not values:
        return None
    if allowed is not None:
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise BadRequest(
                f"unknown {name} {', '.join(unknown)}; use one of {', '.join(sorted(allowed))}"
            )
    return values


def badge(status: str | None) -> Markup:
    """A status as the pages show it: <span class="badge status-done">Done</span>."""
    css = escape((status or "").lower())
    return Markup(f'<span class="badge status-{css}" data-status>{escape(status)}</span>')


def time_tag(value: str | None) -> Markup:
    """An ISO time as a <time> element: to the second, or a dash when there is none."""
    shown = escape(value[:19].replace("T", " ")) if value else "\u2013"
    return Markup(f'<time datetime="{escape(value or "")}">{shown}</time>')


def bar(done: int, total: int, running: int = 0, error: int = 0) -> Markup:
    """A progress bar: done, running and failed shares of the total (pages.js setBar moves
    it live)."""
    whole = total if total and total > 0 else 1
    done_, running_, error_ = (f"{100 * n / whole:.2f}" for n in (done, running, error))
    ahead = f"{100 * (done + running) / whole:.2f}"
    return Markup(
        '<svg class="bar" viewBox="0 0 100 10" preserveAspectRatio="none" role="img"'
        ' aria-label="progress">\n'
        '  <rect class="bar-bg" x="0" y="0" width="100" height="10"></rect>\n'
        f'  <rect class="bar-done" data-bar="done" x="0" y="0" height="10" width="{done_}">'
        "</rect>\n"
        f'  <rect class="bar-running" data-bar="running" y="0" height="10" x="{done_}"'
        f' width="{running_}"></rect>\n'
        f'  <rect class="bar-error" data-bar="error" y="0" height="10" x="{ahead}"'
        f' width="{error_}"></rect>\n'
        "</svg>"
    )


# Small pieces of HTML every row repeats, as Python functions: a Jinja macro call costs
# several times as much, and a workflow page makes hundreds.
PAGE_HELPERS = {"badge": badge, "bar": bar, "time": time_tag}


class Row(dict[str, Any]):
    """A dict whose keys are also its attributes, for the rows a page repeats: Jinja reads
    `job.status` as an attribute first, and on a plain dict that lookup fails and costs an
    exception before the key is tried (about a tenth of a workflow page). Serialized as
    the dict it is."""

    def __init__(self, values: dict[str, Any]) -> None:
        super().__init__(values)
        self.__dict__ = self


async def render_page(template: str, **context: Any) -> str:
    """A page, rendered synchronously with the app's templates, context and globals.

    Quart renders templates in Jinja's async mode, where every macro call and expression
    is awaited: on a workflow page (a macro per job row, and a few within each) that was
    most of the request. The pages call nothing asynchronous, so they render in a sync
    overlay of the app's environment (same loader, filters and globals such as url_for),
    whose tojson writes with orjson."""
    app = current_app
    pages: Environment | None = app.extensions.get("panoptes.pages")
    if pages is None:
        pages = app.jinja_env.overlay(enable_async=False)
        pages.policies["json.dumps_function"] = lambda value, **_: json_dumps(value)
        pages.globals.update(PAGE_HELPERS)
        app.extensions["panoptes.pages"] = pages
    context.setdefault("version", __version__)
    await app.update_template_context(context)
    return pages.get_template(template).render(context)
