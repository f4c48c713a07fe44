"""The fast ingest endpoint answers exactly as the app's own route would.

POST /update_workflow_status is served by routes/ingest.py in front of Quart, for speed;
create_app(fast_ingest=False) leaves it to the Quart route in routes/wms.py. Every input
below goes to both, and both must give the same status, JSON and headers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from quart import Quart

from panoptes.app import create_app
from panoptes.config import Config, database_url

TOKEN = "parity-token-0123456789"
# Headers whose values must agree (Date and the like may not).
COMPARED = (
    "content-type",
    "allow",
    "www-authenticate",
    "x-content-type-options",
    "referrer-policy",
    "content-security-policy",
    "access-control-allow-origin",
)


def _message(workflow_id: int | str, msg: Any) -> str:
    return f"id={workflow_id}&msg={json.dumps(msg)}"


PROGRESS = {"level": "progress", "done": 1, "total": 2}
STAMPED = {"level": "progress", "done": 1, "total": 2, "timestamp": 1.5e9}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

# (name, method, path, headers, body) in the order they are sent to each app.
OPEN_CASES: list[tuple[str, str, str, dict[str, str], bytes]] = [
    ("stored", "POST", "/update_workflow_status", FORM, _message(1, PROGRESS).encode()),
    ("stamped", "POST", "/update_workflow_status", FORM, _message(1, STAMPED).encode()),
    ("duplicate", "POST", "/update_workflow_status", FORM, _message(1, STAMPED).encode()),
    (
        "json body",
        "POST",
        "/update_workflow_status",
        {"Content-Type": "application/json"},
        json.dumps({"id": 1, "msg": json.dumps(PROGRESS)}).encode(),
    ),
    ("untyped json", "POST", "/update_workflow_status", {}, b'{"id": 1, "msg": "{}"}'),
    ("unknown workflow", "POST", "/update_workflow_status", FORM, _message(999, PROGRESS).encode()),
    ("id out of range", "POST", "/update_workflow_status", FORM, _message(2**70, {}).encode()),
    ("no id", "POST", "/update_workflow_status", FORM, b'msg={"level":"info"}'),
    ("msg not json", "POST", "/update_workflow_status", FORM, b"id=1&msg={nope"),
    (
        "bad field",
        "POST",
        "/update_workflow_status",
        FORM,
        _message(1, {"level": "job_info"}).encode(),
    ),
    ("not utf-8", "POST", "/update_workflow_status", FORM, b"id=1&msg=\xff\xfe"),
    ("empty body", "POST", "/update_workflow_status", FORM, b""),
    (
        "json not an object",
        "POST",
        "/update_workflow_status",
        {"Content-Type": "application/json"},
        b"[1]",
    ),
    ("unsupported type", "POST", "/update_workflow_status", {"Content-Type": "image/png"}, b"id=1"),
    ("too large", "POST", "/update_workflow_status", FORM, b"id=1&msg=" + b"x" * 5000),
    ("wrong method", "GET", "/update_workflow_status", {}, b""),
    ("put", "PUT", "/update_workflow_status", FORM, _message(1, PROGRESS).encode()),
    (
        "cross-site",
        "POST",
        "/update_workflow_status",
        {**FORM, "Origin": "http://evil.example"},
        _message(1, PROGRESS).encode(),
    ),
    (
        "same origin",
        "POST",
        "/update_workflow_status",
        {**FORM, "Origin": "http://localhost"},
        _message(1, PROGRESS).encode(),
    ),
]

TOKEN_CASES: list[tuple[str, str, str, dict[str, str], bytes]] = [
    ("no token", "POST", "/update_workflow_status", FORM, _message(1, PROGRESS).encode()),
    (
        "wrong token",
        "POST",
        "/update_workflow_status",
        {**FORM, "Authorization": "Bearer nope"},
        _message(1, PROGRESS).encode(),
    ),
    (
        "bearer",
        "POST",
        "/update_workflow_status",
        {**FORM, "Authorization": f"Bearer {TOKEN}"},
        _message(1, PROGRESS).encode(),
    ),
    (
        "path token",
        "POST",
        f"/t/{TOKEN}/update_workflow_status",
        FORM,
        _message(1, PROGRESS).encode(),
    ),
    (
        "wrong path token",
        "POST",
        "/t/nope/update_workflow_status",
        FORM,
        _message(1, PROGRESS).encode(),
    ),
    (
        "cookie without the pages' header",
        "POST",
        "/update_workflow_status",
        {**FORM, "Cookie": f"panoptes_token={TOKEN}"},
        _message(1, PROGRESS).encode(),
    ),
    (
        "cookie from a page",
        "POST",
        "/update_workflow_status",
        {**FORM, "Cookie": f"panoptes_token={TOKEN}", "X-Requested-With": "panoptes"},
        _message(1, PROGRESS).encode(),
    ),
]


@pytest.fixture
async def apps(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[list[Quart]]:
    token = getattr(request, "param", None)
    made = []
    for fast in (True, False):
        db = database_url(str(tmp_path / f"{'fast' if fast else 'app'}.db"))
        config = Config(db_url=db, max_body_bytes=4096, stale_check_seconds=0, token=token)
        made.append(create_app(config, fast_ingest=fast))
    for app in made:
        await app.startup()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = await app.test_client().get(
            "/create_workflow?workflow_id=parity", headers=headers
        )
        assert (await response.get_json())["id"] == 1
    try:
        yield made
    finally:
        for app in made:
            await app.shutdown()


async def _answer(
    app: Quart, method: str, path: str, headers: dict[str, str], body: bytes
) -> tuple[int, Any, dict[str, str]]:
    response = await app.test_client().open(path, method=method, headers=headers, data=body)
    text = await response.get_data(as_text=True)
    shown = {name: response.headers.get(name) for name in COMPARED if name in response.headers}
    return response.status_code, json.loads(text) if text else None, shown


async def _compare(
    apps: list[Quart], cases: list[tuple[str, str, str, dict[str, str], bytes]]
) -> set[int]:
    fast, slow = apps
    statuses = set()
    for name, method, path, headers, body in cases:
        got_fast = await _answer(fast, method, path, headers, body)
        got_slow = await _answer(slow, method, path, headers, body)
        assert got_fast == got_slow, name
        statuses.add(got_fast[0])
    return statuses


async def test_the_fast_endpoint_answers_as_the_app_does(apps: list[Quart]) -> None:
    statuses = await _compare(apps, OPEN_CASES)
    # The cases reach every kind of answer, so the comparison means something.
    assert statuses == {200, 400, 403, 405, 413, 415, 422}


@pytest.mark.parametrize("apps", [TOKEN], indirect=True)
async def test_the_fast_endpoint_checks_tokens_as_the_app_does(apps: list[Quart]) -> None:
    assert await _compare(apps, TOKEN_CASES) == {200, 401}
