"""Well-meant client messages that used to be refused: Python's JSON, an existing id, a name
collision Snakemake 8 makes itself. Each is answered 200 and stored safely."""

from __future__ import annotations

import json
from typing import Any

from quart.typing import TestClientProtocol as Client

from .conftest import create_workflow, post_event


async def get(client: Client, path: str) -> Any:
    response = await client.get(path)
    assert response.status_code == 200, await response.get_data(as_text=True)
    return await response.get_json()


async def test_what_pythons_json_writes_is_stored_safely(client: Client) -> None:
    workflow = await create_workflow(client)
    # json.dumps writes NaN and Infinity, and a file name that is not UTF-8 as a lone
    # surrogate; orjson (and strict JSON) refuse all three.
    message = {
        "level": "job_info",
        "jobid": 1,
        "name": "align",
        "input": ["reads/S\udce9.fq"],
        "wildcards": {"sample": "S\udce9"},
        "resources": {"mem_gb": float("nan"), "runtime": float("inf"), "disk": -float("inf")},
    }
    text = json.dumps(message)
    assert "NaN" in text and "Infinity" in text and "\\udce9" in text
    response = await client.post(
        "/update_workflow_status",
        form={"msg": text, "timestamp": "now", "id": str(workflow["id"])},
    )
    assert response.status_code == 200, await response.get_data(as_text=True)
    job = (await get(client, f"/api/workflow/{workflow['id']}/job/1"))["job"]
    assert job["input"] == ["reads/S\ufffd.fq"] and job["wildcards"] == {"sample": "S\ufffd"}
    assert job["resources"] == {"mem_gb": None, "runtime": None, "disk": None}
    # The same in a JSON body (Snakemake 7.32 sends JSON without a content type).
    body = json.dumps({"msg": json.dumps({**message, "jobid": 2}), "id": workflow["id"]})
    response = await client.post("/update_workflow_status", data=body.encode())
    assert response.status_code == 200, await response.get_data(as_text=True)
    second = (await get(client, f"/api/workflow/{workflow['id']}/job/2"))["job"]
    assert second["input"] == ["reads/S\ufffd.fq"]


async def test_wms_monitor_arg_id_reports_into_an_existing_finished_workflow(
    client: Client,
) -> None:
    first = await create_workflow(client, name="cohort")
    await post_event(client, first["id"], {"level": "job_started", "jobs": [1]})
    await post_event(client, first["id"], {"level": "workflow_success"})
    # snakemake --wms-monitor URL --wms-monitor-arg id=<N>: GET /create_workflow?id=N
    again = await create_workflow(client, id=str(first["id"]))
    assert again["id"] == first["id"] and again["name"] == "cohort"
    assert again["status"] == "Running"
    jobs = await get(client, f"/api/workflow/{first['id']}/jobs")
    assert jobs["jobs"] == []  # a fresh run in the same workflow
    # A live run is never wiped: the next one gets a workflow of its own.
    live = await create_workflow(client, id=str(first["id"]))
    assert live["id"] != first["id"] and live["name"].startswith("cohort-")
    # An id nobody has (or not an id at all) registers a new workflow, as without it.
    for unknown in ("999", "abc", str(2**70)):
        fresh = await create_workflow(client, id=unknown)
        assert fresh["id"] not in (first["id"], live["id"])


async def test_snakemake_8_renaming_its_run_to_a_live_runs_name_gets_200(client: Client) -> None:
    live = await create_workflow(client, name="nightly")
    # Snakemake 8 with --wms-monitor-arg name=nightly: register, then PUT the name.
    second = await create_workflow(client, name="nightly")
    assert second["name"].startswith("nightly-")
    response = await client.put(f"/api/workflow/{second['id']}", json={"name": "nightly"})
    assert response.status_code == 200
    assert (await response.get_json())["workflow"]["name"] == second["name"]
    shown = await get(client, f"/api/workflow/{live['id']}")
    assert shown["workflow"]["name"] == "nightly" and shown["workflow"]["status"] == "Running"
    # Anyone else taking a name that is in use still gets 409.
    third = await create_workflow(client, name="other")
    taken = await client.put(f"/api/workflow/{third['id']}", json={"name": "nightly"})
    assert taken.status_code == 409
