"""docs/grafana-dashboard.json: a Grafana dashboard over /metrics whose every expression is
PromQL by Prometheus' own grammar (npm's @prometheus-io/lezer-promql, the parser of
Prometheus' web UI, fetched once into .cache/) and names metrics and labels that a real
panoptes process exports, and that shows every metric panoptes has."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import ROOT, LiveServer, form_body

DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
# Prometheus' PromQL grammar for Lezer, with what it needs, at fixed versions.
PROMQL_PACKAGES = [
    "@prometheus-io/lezer-promql@0.315.0",
    "@lezer/lr@1.4.12",
    "@lezer/highlight@1.2.5",
    "@lezer/common@1.5.5",
]
PROMQL_CACHE = Path(os.environ.get("PANOPTES_E2E_CACHE", ROOT / ".cache" / "e2e")).parent / "promql"
# Reads a JSON list of expressions; writes, for each, where its first syntax error is (or null).
PROMQL_CHECK = """
const { parser } = require("@prometheus-io/lezer-promql");
const exprs = JSON.parse(require("fs").readFileSync(0, "utf8"));
console.log(JSON.stringify(exprs.map((expr) => {
  let at = null;
  parser.parse(expr).iterate({
    enter(node) { if (node.type.isError && at === null) at = node.from; },
  });
  return at;
})));
"""
# What Grafana puts in place of its variables before a query leaves it.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$instance": ".*"}
# Labels Prometheus itself puts on every series it scrapes.
TARGET_LABELS = {"instance", "job"}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def expressions() -> list[str]:
    board = dashboard()
    found = [target["expr"] for panel in board["panels"] for target in panel["targets"]]
    found += [
        variable["definition"]
        for variable in board["templating"]["list"]
        if variable["type"] == "query"
    ]
    return found


def scrape(server: LiveServer) -> dict[str, set[str]]:
    """Every sample name of a real /metrics answer, with the label names it carries."""
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    with httpx.Client(base_url=server.url, timeout=10) as http:
        workflow_id = http.get("/create_workflow").json()["id"]
        # A message stored, then the run cancelled and its last progress refused as late:
        # every metric then has its labelled series.
        for done in (1, 2):
            message = {"level": "progress", "done": done, "total": 2}
            posted = http.post(
                "/update_workflow_status", content=form_body(workflow_id, message), headers=form
            )
            assert posted.status_code == 200, posted.text
            if done == 1:
                assert http.post(f"/api/workflow/{workflow_id}/cancel").status_code == 200
        text = http.get("/metrics").text
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return samples


def test_every_expression_uses_exported_metrics_and_labels(live_server: LiveServer) -> None:
    exported = scrape(live_server)
    used: set[str] = set()
    for expr in expressions():
        names = set(re.findall(r"\b(panoptes_[a-z_]+)\b", expr))
        assert names, expr
        for name in names:
            assert name in exported, f"{name} (in {expr}) is not in /metrics"
        labels = set(re.findall(r"(\w+)\s*(?:=~|!=|=)\s*\"", expr))
        labels |= {
            label.strip()
            for group in re.findall(r"\bby\s*\(([^)]*)\)", expr)
            for label in group.split(",")
        }
        labels |= set(re.findall(r"label_values\(\w+,\s*(\w+)\)", expr))
        known = set().union(*(exported[name] for name in names)) | TARGET_LABELS
        assert labels <= known, f"{expr}: labels {labels - known} are not on {names}"
        used |= names
    # And every metric panoptes has is on the dashboard (a histogram by its buckets).
    families = {re.sub(r"_(bucket|sum|count|total|created)$", "", name) for name in exported}
    shown = {re.sub(r"_(bucket|sum|count|total|created)$", "", name) for name in used}
    assert families == shown


def test_is_a_grafana_dashboard_with_a_prometheus_datasource_variable() -> None:
    board = dashboard()
    assert board["title"] and board["uid"] and board["schemaVersion"] >= 36
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
        assert panel["targets"], panel["title"]
        # Every expression is filtered by the instance variable.
        for target in panel["targets"]:
            assert 'instance=~"$instance"' in target["expr"], target["expr"]


@pytest.fixture(scope="module")
def promql_parser() -> Path:
    """A directory whose node_modules holds Prometheus' PromQL grammar (.cache/promql)."""
    stamp = PROMQL_CACHE / ".packages"
    if not stamp.exists() or stamp.read_text() != " ".join(PROMQL_PACKAGES):
        PROMQL_CACHE.mkdir(parents=True, exist_ok=True)
        installed = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--no-save", *PROMQL_PACKAGES],
            cwd=PROMQL_CACHE,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if installed.returncode != 0:
            pytest.fail(f"npm install {PROMQL_PACKAGES} failed:\n{installed.stderr}")
        stamp.write_text(" ".join(PROMQL_PACKAGES))
    return PROMQL_CACHE


def syntax_errors(parser: Path, exprs: list[str]) -> list[int | None]:
    done = subprocess.run(
        ["node", "-e", PROMQL_CHECK],
        cwd=parser,
        input=json.dumps(exprs),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found: list[int | None] = json.loads(done.stdout)
    return found


def test_every_panel_expression_is_promql(promql_parser: Path) -> None:
    board = dashboard()
    exprs = [target["expr"] for panel in board["panels"] for target in panel["targets"]]
    for variable, value in GRAFANA_VARIABLES.items():
        exprs = [expr.replace(variable, value) for expr in exprs]
    assert not any("$" in expr for expr in exprs), exprs
    errors = syntax_errors(promql_parser, exprs)
    assert [(e, at) for e, at in zip(exprs, errors, strict=True) if at is not None] == []
    # The grammar does refuse what is not PromQL.
    assert syntax_errors(promql_parser, ["sum by (le (rate(x[5m])"]) != [None]
