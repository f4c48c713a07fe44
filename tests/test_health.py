"""/api/service-info reports the version, the database and the hub, and says when it is down."""

from __future__ import annotations

from quart import Quart
from quart.typing import TestClientProtocol as Client

from panoptes import __version__
from panoptes.db import make_engine, make_sessionmaker
from panoptes.service import Service

from .conftest import free_port


async def test_reports_version_database_and_hub(client: Client, app: Quart) -> None:
    response = await client.get("/api/service-info")
    assert response.status_code == 200
    info = await response.get_json()
    service: Service = app.extensions["panoptes"]
    assert info["status"] == "running"
    assert info["version"] == __version__
    assert info["database"]["ok"] is True
    assert info["database"]["backend"] == service.engine.dialect.name
    assert info["database"]["latency_ms"] >= 0
    # memory:// (the default): on an SQLite file, the file carries notices between processes.
    assert info["hub"]["backend"] == (
        "sqlite" if service.engine.dialect.name == "sqlite" else "memory"
    )
    assert info["hub"]["connected"] is True
    assert info["hub"]["subscribers"] == 0


async def test_says_unavailable_when_the_database_is_unreachable(
    client: Client, app: Quart
) -> None:
    service: Service = app.extensions["panoptes"]
    # Nothing listens on that port: every connection is refused, as when PostgreSQL is down.
    dead = make_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing")
    working = service.sessions
    service.sessions = make_sessionmaker(dead)
    try:
        response = await client.get("/api/service-info")
    finally:
        service.sessions = working
        await dead.dispose()
    assert response.status_code == 503
    info = await response.get_json()
    assert info["status"] == "unavailable"
    assert info["database"]["ok"] is False
    assert (await client.get("/api/service-info")).status_code == 200
