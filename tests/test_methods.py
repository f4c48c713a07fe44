"""A 405 says which methods the path takes (the Allow header), from the app's routes and
the fast ingest endpoint alike, through a real server process (issue 15.9)."""

from __future__ import annotations

import httpx
import pytest

from .conftest import LiveServer


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/api/workflows", {"GET", "HEAD"}),
        ("DELETE", "/api/workflows", {"GET", "HEAD"}),
        ("GET", "/api/workflow/1/cancel", {"POST"}),
        ("POST", "/api/workflow/1", {"GET", "HEAD", "PUT", "DELETE"}),
        ("GET", "/api/workflows/all", {"DELETE"}),
        ("POST", "/api/service-info", {"GET", "HEAD"}),
        ("GET", "/update_workflow_status", {"POST"}),
        ("POST", "/create_workflow", {"GET", "HEAD"}),
    ],
)
def test_a_405_names_the_methods_the_path_takes(
    live_server: LiveServer, method: str, path: str, allowed: set[str]
) -> None:
    answer = httpx.request(method, live_server.url + path)
    assert answer.status_code == 405
    assert answer.json()["error"] == "method not allowed"
    named = {m.strip() for m in answer.headers["Allow"].split(",")} - {"OPTIONS"}
    assert named == allowed
