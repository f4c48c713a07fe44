"""The HTTP ceiling for benchmarks/ingest.py: what each HTTP server alone does here.

An ASGI app that reads each request's whole body and answers 200 with the small JSON body
panoptes answers ingest with, storing nothing. `ingest.py` serves it on each server it
measures (uvicorn, Hypercorn, granian) with the settings panoptes uses (uvloop, backlog
2048, the same worker counts) and sends it the same load, so "panoptes / bare" is the share
of that HTTP stack's own ceiling that ingest reaches, whatever the machine.
"""

from __future__ import annotations

from typing import Any

ANSWER = b'{"status":"ok"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"15")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})
