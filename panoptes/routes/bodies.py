"""What requests carry: bodies in whatever encoding clients use, query parameters, ids.

Shared by the Quart routes and the fast ingest endpoint, so both read a body the same way.
"""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie
from itertools import product
from typing import Any

from quart import request

from ..errors import BadRequest, NotFound, Unsupported
from ..ingest.wire import loads
from ..models import MAX_BIGINT, MAX_INT


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


def _unquote(text: bytes) -> bytes:
    """%XY escapes and + decoded. Python's unicode_escape codec does it in C: every %XY
    written as \\xXY (after each backslash of the text is written as \\x5c, so the codec
    finds no other escape) decodes to the code point XY, which latin-1 turns back into the
    byte. Half the time of the dictionary below on a Snakemake message; a % that begins no
    escape makes the codec fail, and the dictionary, which keeps it, takes over."""
    text = text.replace(b"+", b" ")
    if text.find(b"%") < 0:  # `in` first tries b"%" as an int: a TypeError raised and cleared
        return text
    try:
        escaped = text.replace(b"\\", b"\\x5c").replace(b"%", b"\\x")
        return escaped.decode("unicode_escape").encode("latin-1")
    except UnicodeDecodeError:
        pass
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
            data = loads(text)
        except (ValueError, RecursionError) as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise BadRequest("the body must be a JSON object")
        return data
    if mimetype in ("", "application/x-www-form-urlencoded", "text/plain"):
        return _form(raw)
    raise Unsupported(f"unsupported Content-Type {mimetype!r}: send JSON or a form")


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
        raise NotFound(f"no workflow with id {values['workflow_id']}")
    if values.get("jobid", 0) > MAX_INT:
        raise NotFound(f"there is no job {values['jobid']}")


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


def cookie(header: str | None, name: str) -> str | None:
    """One cookie's value from a raw Cookie header (the fast endpoint has no request)."""
    if not header:
        return None
    cookies: SimpleCookie = SimpleCookie()
    try:
        cookies.load(header)
    except CookieError:
        return None
    morsel = cookies.get(name)
    return morsel.value if morsel is not None else None
