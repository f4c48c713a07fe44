"""One exception family for every refusal, and the one JSON shape they are answered with.

Any layer may raise these: the wire parser (a message it cannot use), the state machine and
the store (an unknown id, a conflict), the routes (a bad query parameter), auth (no token).
Each carries its HTTP status, a short error name and a detail for the user; `error_body`
and `render` turn one into the answer every route, the fast ingest endpoint and auth give:
`{"error": ..., "detail": ...}` with that status.

An operation in the writer that raises one promises it changed nothing first (check, then
write), so the writer drops only that operation's changes, not its batch's.
"""

from __future__ import annotations

from typing import ClassVar

import orjson


class PanoptesError(Exception):
    """A request or operation refused with a 4xx (or 503); nothing was changed."""

    status: ClassVar[int] = 400
    error: ClassVar[str] = "bad request"

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        error: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        # Instance values shadow the class defaults only when given.
        if status is not None:
            self.status = status  # type: ignore[misc]
        if error is not None:
            self.error = error  # type: ignore[misc]
        self.headers: dict[str, str] = dict(headers or {})


class BadRequest(PanoptesError):
    status = 400
    error = "bad request"


class InvalidMessage(BadRequest):
    """A client message panoptes cannot use."""

    error = "invalid message"


class UnknownWorkflow(InvalidMessage):
    """A message for a workflow that was never registered (or was deleted)."""

    status = 422
    error = "unknown workflow"

    def __init__(self, workflow_id: int) -> None:
        super().__init__(f"no workflow with id {workflow_id}; register with /create_workflow")


class TooMany(InvalidMessage):
    """A message listing more items than one message may (bounded work per message)."""

    status = 413
    error = "message too large"


class Unauthorized(PanoptesError):
    status = 401
    error = "unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="panoptes"'})


class Forbidden(PanoptesError):
    status = 403
    error = "forbidden"


class NotFound(PanoptesError):
    status = 404
    error = "not found"


class MethodNotAllowed(PanoptesError):
    status = 405
    error = "method not allowed"

    def __init__(self, allowed: list[str]) -> None:
        super().__init__(
            "The method is not allowed for the requested URL.",
            headers={"Allow": ", ".join(allowed)},
        )


class RequestTimeout(PanoptesError):
    status = 408
    error = "request timeout"


class Misdirected(PanoptesError):
    """A request for a host name this server does not answer for (DNS rebinding)."""

    status = 421
    error = "misdirected request"


class Conflict(PanoptesError):
    status = 409
    error = "conflict"


class TooLarge(PanoptesError):
    status = 413
    error = "request entity too large"

    def __init__(self, limit: int) -> None:
        super().__init__(too_large(limit))


class Unsupported(PanoptesError):
    status = 415
    error = "unsupported media type"


class TooManyConnections(PanoptesError):
    status = 429
    error = "too many requests"


class Unavailable(PanoptesError):
    """The server cannot serve this now (the database does not answer, a crash)."""

    status = 503
    error = "service unavailable"


class DatabaseUnavailable(Unavailable):
    """The database failed, or did not answer within PANOPTES_DB_TIMEOUT."""

    error = "database unavailable"

    def __init__(self, what: str, advice: str = "try again later") -> None:
        super().__init__(f"the database {what}; {advice}")


def too_large(limit: int) -> str:
    return f"the request body is larger than {limit} bytes"


def crash_detail(exc: BaseException) -> str:
    # The exception's text can hold SQL and stored values: it goes to the log only.
    return f"{type(exc).__name__}; the server log has the details"


def error_body(error: str, detail: str) -> dict[str, str]:
    """Every JSON error panoptes answers has this shape."""
    return {"error": error, "detail": detail}


def render(exc: PanoptesError) -> tuple[int, bytes, dict[str, str]]:
    """The answer to a refusal: status, JSON body, extra headers."""
    return exc.status, orjson.dumps(error_body(exc.error, exc.detail)), exc.headers
