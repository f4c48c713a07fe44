"""Optional token, the /t/<token>/ prefix, browser login, cross-site refusal, security headers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from quart import Quart
from quart.testing import WebsocketResponseError
from quart.typing import TestClientProtocol as Client

from panoptes.app import create_app
from panoptes.config import Config, ConfigError

from .conftest import form_body

TOKEN = "s3cret-token-for-tests-0123456789"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
BEARER = {"Authorization": f"Bearer {TOKEN}"}
EVIL = "http://evil.example"


async def started(config: Config) -> AsyncIterator[Client]:
    app: Quart = create_app(config)
    async with app.test_app():
        yield app.test_client()


@pytest.fixture
async def locked(config: Config) -> AsyncIterator[Client]:
    """Token set, reads open (the default)."""
    async for client in started(replace(config, token=TOKEN)):
        yield client


@pytest.fixture
async def private(config: Config) -> AsyncIterator[Client]:
    """Token set and reads closed too."""
    async for client in started(replace(config, token=TOKEN, public_read=False)):
        yield client


async def post(client: Client, path: str, workflow_id: int, headers: dict[str, str]) -> int:
    body = form_body(workflow_id, {"level": "progress", "done": 1, "total": 2})
    response = await client.post(path, data=body, headers={**FORM, **headers})
    return response.status_code


async def workflows(client: Client, headers: dict[str, str] | None = None) -> list[dict]:
    response = await client.get("/api/workflows", headers=headers or {})
    assert response.status_code == 200
    found: list[dict] = (await response.get_json())["workflows"]
    return found


async def test_ingest_needs_the_token_as_bearer_or_path_prefix(locked: Client) -> None:
    refused = await locked.get("/create_workflow")
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await refused.get_json())["error"] == "unauthorized"
    assert (
        await locked.get("/create_workflow", headers={"Authorization": "Bearer wrong"})
    ).status_code == 401
    assert (await locked.get("/t/not-the-token/create_workflow")).status_code == 401
    assert await workflows(locked) == []

    by_header = await locked.get("/create_workflow", headers=BEARER)
    assert by_header.status_code == 200
    by_prefix = await locked.get(f"/t/{TOKEN}/create_workflow", query_string={"workflow_id": "p"})
    assert by_prefix.status_code == 200
    wf_id = (await by_prefix.get_json())["id"]
    assert (await by_prefix.get_json())["name"] == "p"

    assert await post(locked, "/update_workflow_status", wf_id, {}) == 401
    assert await post(locked, f"/t/{TOKEN[:-1]}x/update_workflow_status", wf_id, {}) == 401
    assert (await workflows(locked))[0]["jobs_done"] == 0  # nothing refused was stored
    assert await post(locked, f"/t/{TOKEN}/update_workflow_status", wf_id, {}) == 200
    assert await post(locked, "/update_workflow_status", wf_id, BEARER) == 200
    stored = {wf["name"]: wf for wf in await workflows(locked)}
    assert stored["p"]["jobs_done"] == 1 and stored["p"]["jobs_total"] == 2


async def test_changes_need_the_token_but_reads_stay_open(locked: Client) -> None:
    wf_id = (await (await locked.get("/create_workflow", headers=BEARER)).get_json())["id"]
    assert (await locked.get("/api/workflows")).status_code == 200
    assert (await locked.get(f"/api/workflow/{wf_id}")).status_code == 200
    assert (await locked.get("/")).status_code == 200
    assert (await locked.put(f"/api/workflow/{wf_id}", json={"name": "x"})).status_code == 401
    assert (await locked.post(f"/api/workflow/{wf_id}/cancel")).status_code == 401
    assert (await locked.delete("/api/workflows/all")).status_code == 401
    assert (await workflows(locked))[0]["status"] == "Running"
    cancel = await locked.post(f"/api/workflow/{wf_id}/cancel", headers=BEARER)
    assert cancel.status_code == 200
    assert (await workflows(locked))[0]["status"] == "Cancelled"


async def test_private_reads_need_the_token_except_health_and_static(private: Client) -> None:
    for path in ("/api/workflows", "/", "/metrics", "/api/workflow/1"):
        assert (await private.get(path)).status_code == 401, path
    assert (await private.get("/api/service-info")).status_code == 200
    assert (await private.get("/static/panoptes.css")).status_code == 200
    assert (await private.get("/api/workflows", headers=BEARER)).status_code == 200
    assert (await private.get(f"/t/{TOKEN}/api/workflows")).status_code == 200


async def test_browser_logs_in_through_the_prefix_and_gets_a_strict_cookie(
    private: Client,
) -> None:
    wf_id = (await (await private.get("/create_workflow", headers=BEARER)).get_json())["id"]
    login = await private.get(f"/t/{TOKEN}/workflow/{wf_id}")
    assert login.status_code == 303
    assert login.headers["Location"] == f"/workflow/{wf_id}"
    cookie = login.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    # The test client keeps the cookie, as a browser would.
    assert (await private.get(f"/workflow/{wf_id}")).status_code == 200
    assert (await private.get("/api/workflows")).status_code == 200
    # A change carried only by the cookie must come from the pages' script (CSRF).
    assert (await private.post(f"/api/workflow/{wf_id}/cancel")).status_code == 401
    by_page = await private.post(
        f"/api/workflow/{wf_id}/cancel", headers={"X-Requested-With": "panoptes"}
    )
    assert by_page.status_code == 200


async def test_feed_needs_the_token_when_reads_are_private(private: Client) -> None:
    with pytest.raises(WebsocketResponseError) as refused:
        async with private.websocket("/ws") as ws:
            await ws.receive()
    assert refused.value.response.status_code == 401
    async with private.websocket("/ws", headers=BEARER) as ws:
        hello = json.loads(await ws.receive())
    assert hello["type"] == "hello"
    async with private.websocket(f"/t/{TOKEN}/ws") as ws:
        assert json.loads(await ws.receive())["type"] == "hello"


async def test_other_sites_cannot_change_anything_even_without_a_token(client: Client) -> None:
    wf_id = (await (await client.get("/create_workflow")).get_json())["id"]
    cross = {"Origin": EVIL}
    cancel = await client.post(f"/api/workflow/{wf_id}/cancel", headers=cross)
    assert cancel.status_code == 403
    assert (await cancel.get_json())["error"] == "forbidden"
    assert await post(client, "/update_workflow_status", wf_id, cross) == 403
    image = await client.get("/create_workflow", headers={"Sec-Fetch-Site": "cross-site"})
    assert image.status_code == 403
    [wf] = await workflows(client)
    assert wf["status"] == "Running" and wf["jobs_done"] == 0
    # Reading is fine from anywhere, and so is the page's own origin.
    assert (await client.get("/api/workflows", headers=cross)).status_code == 200
    same = {"Origin": "http://localhost"}
    assert (await client.post(f"/api/workflow/{wf_id}/cancel", headers=same)).status_code == 200


@pytest.mark.parametrize("allowed", [(EVIL,), ("*",)])
async def test_allowed_origins_may_read_but_change_things_only_with_the_token(
    config: Config, allowed: tuple[str, ...]
) -> None:
    # PANOPTES_ALLOWED_ORIGINS is for embedding the feed and the API: reading.
    async for client in started(replace(config, allowed_origins=allowed)):
        wf_id = (await (await client.get("/create_workflow")).get_json())["id"]
        response = await client.post(f"/api/workflow/{wf_id}/cancel", headers={"Origin": EVIL})
        assert response.status_code == 403
        assert await post(client, "/update_workflow_status", wf_id, {"Origin": EVIL}) == 403
        assert (await client.get("/api/workflows", headers={"Origin": EVIL})).status_code == 200
    token = "a-token-for-embedders-0123"
    async for client in started(replace(config, allowed_origins=allowed, token=token)):
        bearer = {"Authorization": f"Bearer {token}"}
        wf_id = (await (await client.get("/create_workflow", headers=bearer)).get_json())["id"]
        cookie_only = {"Origin": EVIL, "Cookie": f"panoptes_token={token}", "X-Requested-With": "x"}
        refused = await client.post(f"/api/workflow/{wf_id}/cancel", headers=cookie_only)
        assert refused.status_code == 403  # the browser's own cookie is not enough
        allowed_call = await client.post(
            f"/api/workflow/{wf_id}/cancel", headers={"Origin": EVIL, **bearer}
        )
        assert allowed_call.status_code == 200


async def test_security_headers_forbid_inline_scripts(config: Config) -> None:
    async for client in started(replace(config, frame_ancestors="'self' https://lab.example")):
        page = await client.get("/")
        policy = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert "frame-ancestors 'self' https://lab.example" in policy
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        api = await client.get("/api/workflows")
        assert api.headers["X-Content-Type-Options"] == "nosniff"


def test_token_comes_from_env_or_a_file(tmp_path: Path) -> None:
    assert Config.from_env({}).token is None
    assert Config.from_env({"PANOPTES_TOKEN": TOKEN}).token == TOKEN
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    assert Config.from_env({"PANOPTES_TOKEN_FILE": str(secret)}).token == TOKEN
    assert Config.from_env({"PANOPTES_PUBLIC_READ": "no"}).public_read is False
    with pytest.raises(ConfigError, match="16"):
        Config.from_env({"PANOPTES_TOKEN": "short"})
    with pytest.raises(ConfigError, match="cannot read"):
        Config.from_env({"PANOPTES_TOKEN_FILE": str(tmp_path / "missing")})
    assert TOKEN not in repr(Config.from_env({"PANOPTES_TOKEN": TOKEN}))


async def test_embedding_sites_may_read_the_api_and_static_files(config: Config) -> None:
    async for client in started(replace(config, allowed_origins=("https://lab.example",))):
        lab = {"Origin": "https://lab.example"}
        for path in ("/api/workflows", "/static/panoptes-feed.js"):
            response = await client.get(path, headers=lab)
            assert response.headers["Access-Control-Allow-Origin"] == "https://lab.example"
        other = await client.get("/api/workflows", headers={"Origin": EVIL})
        assert "Access-Control-Allow-Origin" not in other.headers
        page = await client.get("/", headers=lab)
        assert "Access-Control-Allow-Origin" not in page.headers
        # Reading is all: a change from that site still needs a preflight nobody answers.
        wf_id = (await (await client.get("/create_workflow")).get_json())["id"]
        cancel = await client.post(f"/api/workflow/{wf_id}/cancel", headers=lab)
        assert "Access-Control-Allow-Origin" not in cancel.headers
