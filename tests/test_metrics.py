"""/metrics: Prometheus text with ingest counts, latency, subscribers and workflows by status."""

from __future__ import annotations

import json
import platform

from prometheus_client.parser import text_string_to_metric_families
from quart.typing import TestClientProtocol as Client

import panoptes

from .conftest import create_workflow, post_event


async def scrape(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    text = await response.get_data(as_text=True)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_counts_ingested_refused_and_duplicate_messages(client: Client) -> None:
    before = await scrape(client)
    assert before[("panoptes_events_ingested_total", (("outcome", "stored"),))] == 0
    workflow = await create_workflow(client)
    for done in (1, 2, 3):
        response = await post_event(
            client, workflow["id"], {"level": "progress", "done": done, "total": 3}
        )
        assert response.status_code == 200
    refused = await client.post(
        "/update_workflow_status",
        form={"msg": "not json", "timestamp": "x", "id": str(workflow["id"])},
    )
    assert refused.status_code == 400
    legacy = {"msg": json.dumps({"level": "info", "msg": "hello", "timestamp": 1.0}), "id": "1"}
    for _ in range(2):  # Snakemake 8 sends every message twice
        assert (await client.post("/update_workflow_status", form=legacy)).status_code == 200

    after = await scrape(client)
    assert after[("panoptes_events_ingested_total", (("outcome", "stored"),))] == 4
    assert after[("panoptes_events_ingested_total", (("outcome", "duplicate"),))] == 1
    assert after[("panoptes_events_ingested_total", (("outcome", "refused"),))] == 1
    assert after[("panoptes_workflows_registered_total", ())] == 1
    assert after[("panoptes_ingest_seconds_count", ())] == 5
    assert after[("panoptes_ingest_seconds_sum", ())] > 0
    # The last progress message finished the run.
    assert after[("panoptes_workflows", (("status", "Done"),))] == 1
    assert after[("panoptes_workflows", (("status", "Running"),))] == 0


async def test_counts_workflows_by_status_and_open_subscribers(client: Client) -> None:
    first = await create_workflow(client)
    await create_workflow(client)
    assert (await client.post(f"/api/workflow/{first['id']}/cancel")).status_code == 200
    async with client.websocket("/ws") as ws:
        await ws.send("hello")  # the handshake is done once the server reads
        metrics = await scrape(client)
        assert metrics[("panoptes_websocket_subscribers", ())] == 1
    metrics = await scrape(client)
    assert metrics[("panoptes_workflows", (("status", "Running"),))] == 1
    assert metrics[("panoptes_workflows", (("status", "Cancelled"),))] == 1
    assert metrics[("panoptes_workflows", (("status", "Error"),))] == 0


async def test_counts_the_moves_the_state_machine_refuses(client: Client) -> None:
    workflow = await create_workflow(client)
    assert (await client.post(f"/api/workflow/{workflow['id']}/cancel")).status_code == 200
    # The client does not know it was cancelled: its last progress and its error come late.
    late = [{"level": "progress", "done": 3, "total": 3}, {"level": "error", "msg": "boom"}]
    for message in late:
        assert (await post_event(client, workflow["id"], message)).status_code == 200
    metrics = await scrape(client)
    refused = {
        labels: value
        for (name, labels), value in metrics.items()
        if name == "panoptes_refused_moves_total"
    }
    assert refused == {
        (("machine", "workflow"), ("state", "Cancelled"), ("trigger", "all done")): 1,
        (("machine", "workflow"), ("state", "Cancelled"), ("trigger", "failed")): 1,
    }
    shown = await (await client.get(f"/api/workflow/{workflow['id']}")).get_json()
    assert shown["workflow"]["status"] == "Cancelled"


async def test_build_info_names_the_version_python_and_backends_service_info_shows(
    client: Client,
) -> None:
    info = await (await client.get("/api/service-info")).get_json()
    metrics = await scrape(client)
    build = {
        labels: value for (name, labels), value in metrics.items() if name == "panoptes_build_info"
    }
    expected = {
        "version": panoptes.__version__,
        "python": platform.python_version(),
        "database": info["database"]["backend"],
        "broadcast": info["hub"]["backend"],
    }
    assert build == {tuple(sorted(expected.items())): 1}
