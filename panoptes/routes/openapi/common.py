"""The pieces every path of the OpenAPI document is made of: media types, the error answers,
parameters, and the shapes of reading and changing operations."""

from __future__ import annotations

import sys
from functools import cache

from ...models import MAX_BIGINT
from .schemas import Schema, ref

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
TSV = "text/tab-separated-values"


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _error(description: str) -> Schema:
    return _json(ref("Error"), description)


BAD_QUERY = _error("a query parameter is malformed or out of range")
NOT_FOUND = _error("no such workflow (or job), or an id out of range")
UNAUTHORIZED = _error("PANOPTES_TOKEN is set and the request does not carry it")
CROSS_SITE = _error("a request from another site's page may not change anything")
CONFLICT = _error("the workflow's state does not allow it")
TOO_LARGE = _error("the body is larger than PANOPTES_MAX_BODY_BYTES")
MEDIA_TYPE = _error("the body is neither JSON nor a form")
# What the server refuses in text it compares or stores as a key (PostgreSQL cannot hold a
# NUL): the document says so, so that what it allows is what the server takes.
NO_NUL = r"^[^\u0000]*$"


@cache
def a_name() -> str:
    """The pattern of a name: no NUL, and something besides white space as the server
    strips it."""
    return rf"^[^\u0000]*[^{_spaces()}\u0000][^\u0000]*$"


def _spaces() -> str:
    """What str.strip() takes off, as a regex character class's content. Spelled out: the
    document's \\s is ECMA-262's, which leaves out characters Python strips (U+0085, U+001C
    to U+001F) and has one Python keeps (U+FEFF)."""
    spaces = [code for code in range(sys.maxunicode + 1) if chr(code).isspace()]
    ranges: list[list[int]] = []
    for code in spaces:
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return "".join(
        f"\\u{first:04x}" + (f"-\\u{last:04x}" if last > first else "") for first, last in ranges
    )


DIGITS = r"^[0-9]+$"


def _workflow_id() -> Schema:
    return {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_BIGINT},
        "example": 1,
    }


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _paging(what: str) -> list[Schema]:
    return [
        _query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
            f"how many {what} to return",
        ),
        _query(
            "offset",
            {"type": "integer", "minimum": 0, "maximum": MAX_BIGINT, "default": 0},
            f"{what} to skip",
        ),
        _query(
            "cursor",
            {"type": "integer", "minimum": 0, "maximum": MAX_BIGINT},
            "the previous page's next_cursor (an empty value is the first page)",
        ),
    ]


def _statuses(statuses: list[str]) -> Schema:
    return _query(
        "status",
        {"type": "array", "items": {"type": "string", "enum": statuses}},
        "only these statuses; repeat it or separate with commas (case does not matter)",
    )


def _reads(summary: str, ok: Schema, *, found: bool = True, query: bool = False) -> Schema:
    responses: dict[str, Schema] = {"200": ok, "401": UNAUTHORIZED}
    if query:
        responses["400"] = BAD_QUERY
    if found:
        responses["404"] = NOT_FOUND
    return {"summary": summary, "responses": responses}


def _changes(summary: str, ok: dict[str, Schema], *, found: bool = True) -> Schema:
    responses: dict[str, Schema] = {**ok, "401": UNAUTHORIZED, "403": CROSS_SITE}
    if found:
        responses["404"] = NOT_FOUND
    return {"summary": summary, "responses": responses}
