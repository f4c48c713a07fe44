"""/api/openapi.json: a valid OpenAPI 3.1 document, exactly the app's routes, and a running
server that schemathesis cannot make answer 5xx or anything the document does not promise."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from quart.typing import TestClientProtocol as Client
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from panoptes.app import create_app
from panoptes.config import Config, database_url
from panoptes.routes.openapi import openapi_document

from .conftest import BACKENDS, LiveServer, create_workflow, empty_pg_database, form_body

# The endpoints Snakemake itself calls, outside /api.
CLIENT_PATHS = {"/create_workflow", "/update_workflow_status"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_the_document_is_valid_openapi_3_1() -> None:
    document = openapi_document()
    assert document["openapi"].startswith("3.1")
    validate(document)


def _openapi_path(rule: str) -> str:
    """/api/workflow/<int:workflow_id> -> /api/workflow/{id}, as the document names it."""
    path = re.sub(r"<(?:[^:<>]+:)?(\w+)>", r"{\1}", rule)
    return path.replace("{workflow_id}", "{id}")


def test_the_document_has_exactly_the_apps_routes(tmp_path: Path) -> None:
    app = create_app(Config(db_url=database_url(str(tmp_path / "routes.db"))))
    served = {
        (method.lower(), _openapi_path(rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/") or rule.rule in CLIENT_PATHS
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    documented = {
        (method, path)
        for path, operations in openapi_document()["paths"].items()
        for method in operations
    }
    assert documented == served


# What schemathesis found (each a 5xx before its fix), kept as plain regression tests.
FOUND = [
    ("GET", "/api/workflows?offset=104713150330177335171481600", 400),  # SQLite overflow
    ("GET", "/api/workflows?cursor=9223372036854775808", 400),
    ("GET", "/api/workflows?q=e%00x", 400),  # PostgreSQL text has no NUL
    ("GET", "/api/workflow/1/jobs?rule=a%00", 400),
    ("GET", "/api/workflow/9223372036854775808", 404),
    ("PUT", "/api/workflow/9223372036854775808", 404),
    ("DELETE", "/api/workflow/9223372036854775808", 404),
    ("POST", "/api/workflow/9223372036854775808/cancel", 404),
    ("GET", "/api/workflow/1/job/2147483648", 404),  # PostgreSQL INTEGER
    ("GET", "/?q=%00", 400),
    ("GET", "/workflow/9223372036854775808", 404),
]


@pytest.mark.parametrize(("method", "path", "status"), FOUND)
async def test_what_schemathesis_found_stays_fixed(
    client: Client, method: str, path: str, status: int
) -> None:
    await create_workflow(client)
    response = await client.open(path, method=method, headers={"Accept": "application/json"})
    assert response.status_code == status, await response.get_data(as_text=True)
    assert set(await response.get_json()) == {"error", "detail"}


async def test_nul_characters_in_a_registration_are_kept_as_replacement_characters(
    client: Client,
) -> None:
    created = await client.get(
        "/create_workflow",
        query_string={"workflow_id": "a\x00b"},
        data=json.dumps({"workdir": "/w\x00", "command": "snakemake"}),
    )
    assert created.status_code == 200, await created.get_data(as_text=True)
    workflow = await created.get_json()
    assert (workflow["name"], workflow["workdir"]) == ("a\ufffdb", "/w\ufffd")
    renamed = await client.put(f"/api/workflow/{workflow['id']}", json={"name": "c\x00"})
    assert renamed.status_code == 400


# --------------------------------------------------------------------------- schemathesis


def _seed(url: str) -> None:
    """A few workflows in every state, with jobs, so that the examples find something."""
    with httpx.Client(base_url=url, timeout=10) as http:

        def send(workflow_id: int, msg: dict[str, object]) -> None:
            response = http.post(
                "/update_workflow_status",
                content=form_body(workflow_id, msg),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert response.status_code == 200, response.text

        for ending in ("running", "done", "error"):
            workflow_id = http.get("/create_workflow").json()["id"]
            send(workflow_id, {"level": "progress", "done": 0, "total": 2})
            send(workflow_id, {"level": "job_started", "jobs": [1, 2]})
            send(
                workflow_id,
                {
                    "level": "job_info",
                    "jobid": 1,
                    "name": "make",
                    "input": ["a"],
                    "output": ["b"],
                    "wildcards": {"sample": "a"},
                    "threads": 2,
                    "resources": {"mem_mb": 100},
                    "shellcmd": "touch b",
                },
            )
            send(workflow_id, {"level": "job_finished", "jobid": 1})
            if ending == "done":
                send(workflow_id, {"level": "workflow_success"})
            elif ending == "error":
                send(workflow_id, {"level": "error", "msg": "RuleException"})
                send(workflow_id, {"level": "job_error", "jobid": 2, "name": "make"})


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("openapi")
    live = LiveServer(db=home / "live.db")
    if request.param == "postgresql":
        url: str = request.getfixturevalue("pg_url")
        asyncio.run(empty_pg_database(url))
        live = LiveServer(db=home / "pg", db_url=url)
    live.start()
    yield live
    live.stop()


def test_the_server_serves_the_document(server: LiveServer) -> None:
    response = httpx.get(f"{server.url}/api/openapi.json", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    # What the schemathesis test below checks is the document the server serves.
    assert response.json() == json.loads(json.dumps(openapi_document()))


def _parameter(path: str, name: str) -> dict[str, Any]:
    for parameter in openapi_document()["paths"][path]["get"]["parameters"]:
        if parameter["name"] == name:
            schema: dict[str, Any] = parameter["schema"]
            return schema
    raise KeyError(name)


def _body(path: str, method: str, name: str, media: str) -> dict[str, Any]:
    operation = openapi_document()["paths"][path][method]
    schema: dict[str, Any] = operation["requestBody"]["content"][media]["schema"]
    return {"type": "object", "properties": {name: schema["properties"][name]}}


def _allows(schema: dict[str, Any], value: Any) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(value)


def test_what_the_document_forbids_the_server_refuses_and_the_rest_it_takes(
    server: LiveServer,
) -> None:
    """NUL in q, rule and name, an empty or blank name, an empty msg, an id that is not a
    number: each is outside what the document allows, and the server answers it 400."""
    form = "application/x-www-form-urlencoded"
    with httpx.Client(base_url=server.url, timeout=30) as http:
        workflow_id = http.get("/create_workflow").json()["id"]
        q = _parameter("/api/workflows", "q")
        rule = _parameter("/api/workflow/{id}/jobs", "rule")
        for value, allowed in (("a\x00b", False), ("ab", True)):
            assert _allows(q, value) is allowed
            answer = http.get("/api/workflows", params={"q": value})
            assert answer.status_code == (200 if allowed else 400), answer.text
            assert _allows(rule, [value]) is allowed
            answer = http.get(f"/api/workflow/{workflow_id}/jobs", params={"rule": value})
            assert answer.status_code == (200 if allowed else 400), answer.text
        name = _body("/api/workflow/{id}", "put", "name", form)
        for value, allowed in (("a\x00b", False), ("   ", False), (" fine ", True)):
            assert _allows(name, {"name": value}) is allowed
            answer = http.put(f"/api/workflow/{workflow_id}", json={"name": value})
            assert answer.status_code == (200 if allowed else 400), answer.text
        envelope = _body("/update_workflow_status", "post", "msg", form)
        progress = json.dumps({"level": "progress", "done": 0, "total": 1})
        for fields, allowed in (
            ({"msg": "", "id": str(workflow_id)}, False),
            ({"msg": progress, "id": ""}, False),
            ({"msg": progress, "id": "seven"}, False),
            ({"msg": progress, "id": str(workflow_id)}, True),
        ):
            schema = {
                "type": "object",
                "properties": {
                    **envelope["properties"],
                    **_body("/update_workflow_status", "post", "id", form)["properties"],
                },
            }
            assert _allows(schema, fields) is allowed, fields
            answer = http.post("/update_workflow_status", data=fields)
            assert answer.status_code == (200 if allowed else 400), answer.text


@pytest.fixture
def seeded(server: LiveServer) -> LiveServer:
    # Each operation starts with data to find (DELETE /api/workflows/all may have run).
    _seed(server.url)
    return server


# Loaded from the module, not from the server: schemathesis' lazy loader
# (schemathesis.pytest.from_fixture) does not work with pytest 9.
schema = schemathesis.openapi.from_dict(openapi_document())


@schema.parametrize()
@settings(
    max_examples=50,
    deadline=None,
    # `seeded` runs once per operation, on purpose: the examples share its data.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_the_server_keeps_the_documents_promises(
    case: schemathesis.Case, seeded: LiveServer
) -> None:
    checks = list(CHECKS)
    if case.path not in CLIENT_PATHS:
        # What the document allows, the server takes (no 400 or 422 for it). Not for the
        # client paths: a schema cannot say "a JSON-encoded Snakemake message".
        checks.append(positive_data_acceptance)
    case.call_and_validate(base_url=seeded.url, checks=checks, timeout=10)
