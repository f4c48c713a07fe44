"""Long rule names, commands, paths and error texts are stored whole, on every backend
(the earlier server's VARCHAR columns cut them on PostgreSQL)."""

from __future__ import annotations

import secrets

from quart.typing import TestClientProtocol as Client

from .conftest import create_workflow, post_event


async def test_long_values_are_stored_whole(client: Client) -> None:
    rule = "r" * 5_000
    command = "echo " + "x" * 50_000
    path = "data/" + "p" * 10_000
    error = "E" * 20_000
    name = secrets.token_hex(100)  # 200 characters, the most a name may have
    workflow = await create_workflow(client, workflow_id=name)
    assert workflow["name"] == name
    job = {
        "level": "job_info",
        "jobid": 1,
        "name": rule,
        "input": [path],
        "output": [path + ".out"],
        "wildcards": {"sample": "s" * 3_000},
        "shellcmd": command,
    }
    for msg in (job, {"level": "error", "msg": error}, {"level": "job_error", "jobid": 1}):
        assert (await post_event(client, workflow["id"], msg)).status_code == 200

    stored = (await (await client.get(f"/api/workflow/{workflow['id']}/job/1")).get_json())["job"]
    assert stored["rule"] == rule
    assert stored["shell_command"] == command
    assert stored["input"] == [path]
    assert stored["output"] == [path + ".out"]
    assert stored["wildcards"] == {"sample": "s" * 3_000}
    assert error in stored["error"]
    wf = (await (await client.get(f"/api/workflow/{workflow['id']}")).get_json())["workflow"]
    assert error in wf["error"]
    rules = (await (await client.get(f"/api/workflow/{workflow['id']}/rules")).get_json())["rules"]
    assert [r["rule"] for r in rules] == [rule]


async def test_too_long_workflow_names_are_cut_at_registration_and_refused_by_the_api(
    client: Client,
) -> None:
    # Snakemake 7/8 cannot start without an id (KeyError: 'id'): registration never refuses.
    too_long = secrets.token_hex(100) + "x"
    response = await client.get("/create_workflow", query_string={"workflow_id": too_long})
    assert response.status_code == 200
    registered = await response.get_json()
    assert registered["name"] == too_long[:200]
    # Snakemake 8 then renames its run to the name it asked for: nothing to change.
    same = await client.put(f"/api/workflow/{registered['id']}", json={"name": too_long})
    assert same.status_code == 200
    assert (await same.get_json())["workflow"]["name"] == too_long[:200]
    # A user's rename to a name that long is refused, as before.
    workflow = await create_workflow(client)
    renamed = await client.put(f"/api/workflow/{workflow['id']}", json={"name": too_long})
    assert renamed.status_code == 400
    assert "at most 200" in (await renamed.get_json())["detail"]
    listed = (await (await client.get("/api/workflows")).get_json())["workflows"]
    assert sorted(wf["name"] for wf in listed) == sorted([workflow["name"], too_long[:200]])


async def test_snakemake_8s_rename_to_a_long_name_a_live_run_holds_gets_200(
    client: Client,
) -> None:
    too_long = secrets.token_hex(100) + "y"
    live = await create_workflow(client, workflow_id=too_long)  # cut, and still running
    second = await create_workflow(client, workflow_id=too_long)
    assert second["name"].startswith(too_long[:200] + "-") and second["id"] != live["id"]
    same = await client.put(f"/api/workflow/{second['id']}", json={"name": too_long})
    assert same.status_code == 200
    assert (await same.get_json())["workflow"]["name"] == second["name"]
