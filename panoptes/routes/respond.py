"""How every route answers: the service it acts on, JSON bodies, and refusals as JSON."""

from __future__ import annotations

from typing import Any

import orjson
from quart import Response, current_app

from ..errors import PanoptesError, render
from ..service import Service


def service() -> Service:
    running: Service = current_app.extensions["panoptes"]
    return running


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status=status, content_type="application/json")


def error_response(exc: PanoptesError) -> Response:
    status, body, headers = render(exc)
    response = Response(body, status=status, content_type="application/json")
    response.headers.update(headers)
    return response
