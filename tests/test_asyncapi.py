"""docs/asyncapi.yaml, the feed as an AsyncAPI 3.0 document: valid by AsyncAPI's own JSON
Schema (npm's @asyncapi/specs, fetched once into .cache/), its channels the app's websocket
routes, its messages the kinds status.py defines, and every message a live server sends over
a workflow's whole life valid by the schema of its message."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import tarfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from quart import Quart
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7
from websockets.asyncio.client import ClientConnection, connect

from panoptes import __version__
from panoptes.hub import RESYNC
from panoptes.status import EventKind, JobStatus, WorkflowStatus, is_workflow_level

from .conftest import ROOT, LiveServer
from .test_feed import create, send, ws_url

DOCUMENT = ROOT / "docs" / "asyncapi.yaml"
SPECS_VERSION = "6.11.1"  # @asyncapi/specs, the JSON Schemas of every AsyncAPI version
SPECS = Path(os.environ.get("PANOPTES_E2E_CACHE", ROOT / ".cache" / "e2e")).parent / "asyncapi"
SCHEMA_FILE = "package/schemas/3.0.0-without-$id.json"
# The messages that are not stored events (routes/feed.py, hub RESYNC).
CONTROL = {"hello", "ping", RESYNC.type}


def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DOCUMENT.read_text())
    return loaded


def resolve(pointer: str, root: dict[str, Any]) -> Any:
    assert pointer.startswith("#/"), pointer
    node: Any = root
    for part in pointer[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def message_names(channel: dict[str, Any], root: dict[str, Any]) -> set[str]:
    return {resolve(m["$ref"], root)["name"] for m in channel["messages"].values()}


@pytest.fixture(scope="module")
def asyncapi_schema() -> dict[str, Any]:
    """AsyncAPI 3.0.0's JSON Schema from npm's @asyncapi/specs, kept under .cache/asyncapi."""
    target = SPECS / SPECS_VERSION / "3.0.0.json"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        packed = subprocess.run(
            ["npm", "pack", f"@asyncapi/specs@{SPECS_VERSION}", "--pack-destination", "."],
            cwd=target.parent,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if packed.returncode != 0:
            pytest.fail(f"npm pack @asyncapi/specs failed:\n{packed.stdout}\n{packed.stderr}")
        archive = target.parent / packed.stdout.strip().splitlines()[-1]
        with tarfile.open(archive) as tar:
            member = tar.extractfile(SCHEMA_FILE)
            assert member is not None
            text = io.TextIOWrapper(member, encoding="utf-8").read()
        archive.unlink()
        partial = target.with_suffix(".part")
        partial.write_text(text)
        partial.replace(target)
    schema: dict[str, Any] = json.loads(target.read_text())
    return schema


def test_is_a_valid_asyncapi_3_document(asyncapi_schema: dict[str, Any]) -> None:
    doc = document()
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["version"] == __version__
    validator = jsonschema.Draft7Validator(asyncapi_schema)
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(doc)]
    assert errors == []
    # The schema knows what it refuses: an operation that neither sends nor receives.
    wrong = {**doc, "operations": {"x": {**doc["operations"]["receiveWorkflow"], "action": "x"}}}
    assert not validator.is_valid(wrong)


def test_every_reference_resolves_and_operations_take_their_channels_messages() -> None:
    doc = document()
    refs = re.findall(r"\$ref: \"(#/[^\"]+)\"", DOCUMENT.read_text())
    assert refs
    for ref in refs:
        resolve(ref, doc)
    for name, operation in doc["operations"].items():
        assert operation["action"] == "receive", name  # the client only listens
        channel = operation["channel"]["$ref"]
        listed = {m["$ref"] for m in operation["messages"]}
        own = {f"{channel}/messages/{key}" for key in resolve(channel, doc)["messages"]}
        assert listed == own, name


def test_channels_are_the_apps_websocket_routes(app: Quart) -> None:
    routes = {
        re.sub(r"<(?:\w+:)?(\w+)>", lambda m: "{" + m.group(1) + "}", rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.websocket
    }
    addresses = {
        re.sub(r"\{workflowId\}", "{workflow_id}", channel["address"])
        for channel in document()["channels"].values()
    }
    assert addresses == routes


def test_messages_are_the_kinds_the_feed_has() -> None:
    doc = document()
    kinds = {kind.value for kind in EventKind}
    channels = doc["channels"]
    assert message_names(channels["workflow"], doc) == CONTROL | kinds
    assert message_names(channels["workflows"], doc) == CONTROL | {
        kind for kind in kinds if is_workflow_level(kind)
    }
    names = [message["name"] for message in doc["components"]["messages"].values()]
    assert sorted(names) == sorted(CONTROL | kinds)
    schemas = doc["components"]["schemas"]
    assert schemas["Workflow"]["properties"]["status"]["enum"] == list(WorkflowStatus)
    assert schemas["Job"]["properties"]["status"]["enum"] == list(JobStatus)


# ---- what a live server sends, held to the document


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    live = LiveServer(db=tmp_path / "feed.db", env={"PANOPTES_WS_PING_SECONDS": "0.5"}).start()
    yield live
    live.stop()


@pytest.fixture
async def http(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        yield client


class Payloads:
    """Each message's payload schema, with the document's references resolved."""

    def __init__(self) -> None:
        self.doc = document()
        resource = Resource.from_contents(self.doc, default_specification=DRAFT7)
        self.registry: Registry[Any] = Registry().with_resource("urn:panoptes:asyncapi", resource)
        self.by_name = {
            message["name"]: key for key, message in self.doc["components"]["messages"].items()
        }

    def check(self, message: dict[str, Any]) -> None:
        key = self.by_name[message["type"]]
        schema = {"$ref": f"urn:panoptes:asyncapi#/components/messages/{key}/payload"}
        validator = jsonschema.Draft7Validator(
            schema, registry=self.registry, format_checker=jsonschema.FormatChecker()
        )
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(message)]
        assert errors == [], message


async def until_deleted_and_a_ping(ws: ClientConnection) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    async with asyncio.timeout(15):
        while (
            not received
            or received[-1]["type"] != "ping"
            or not any(m["type"] == "workflow.deleted" for m in received)
        ):
            received.append(json.loads(await ws.recv()))
    return received


async def test_every_message_of_a_workflows_life_fits_the_document(
    server: LiveServer, http: httpx.AsyncClient
) -> None:
    async with connect(ws_url(server, "/ws")) as everything:
        first = await create(http, "demo")
        async with connect(ws_url(server, f"/ws/workflow/{first}?since=0")) as one:
            await send(http, first, {"level": "progress", "done": 0, "total": 1})
            await send(http, first, {"level": "job_started", "jobs": [1]})
            await send(http, first, {"level": "job_info", "jobid": 1, "name": "map"})
            await send(http, first, {"level": "job_finished", "jobid": 1})
            await send(http, first, {"level": "progress", "done": 1, "total": 1})
            assert await create(http, "demo") == first  # a finished run's name: reset
            renamed = await http.put(f"/api/workflow/{first}", json={"name": "demo-2"})
            assert renamed.status_code == 200, renamed.text
            assert (await http.post(f"/api/workflow/{first}/cancel")).status_code == 200
            assert (await http.delete(f"/api/workflow/{first}")).status_code == 204
            per_workflow = await until_deleted_and_a_ping(one)
        overall = await until_deleted_and_a_ping(everything)

    payloads = Payloads()
    for message in [*per_workflow, *overall]:
        payloads.check(message)
    doc = payloads.doc
    kinds = {kind.value for kind in EventKind}
    # All but resync (a lagging reader) and legacy.message (a converted 1.x database).
    assert {m["type"] for m in per_workflow} == (CONTROL | kinds) - {"resync", "legacy.message"}
    assert {m["type"] for m in overall} == message_names(doc["channels"]["workflows"], doc) - {
        "resync"
    }
    assert per_workflow[0] == {
        "type": "hello",
        "head": 1,
        "workflow_id": first,
        "version": __version__,
    }
