"""The ingest tally (metrics._IngestTally) says what prometheus-client's own Counter and
Histogram would say for the same messages, in a process without shared files."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from panoptes.metrics import EVENTS, LATENCY_BUCKETS, OUTCOMES, SECONDS, Metrics

# Each bound itself (it falls in its own bucket), just above it, zero, and past the last.
TIMES = [0.0, *LATENCY_BUCKETS, *(bound * 1.01 for bound in LATENCY_BUCKETS), 42.0, 0.0042]
OUTCOMES_SENT = ["stored"] * 5 + ["duplicate"] * 2 + ["refused"]  # none unavailable


def _without_created_values(text: str) -> str:
    """The text with the `*_created` samples' values (a clock reading) taken out."""
    return re.sub(r"^(\w+_created(?:\{[^}]*\})?) \S+$", r"\1 T", text, flags=re.MULTILINE)


def _reference() -> str:
    registry = CollectorRegistry()
    events = Counter(*EVENTS, ["outcome"], registry=registry)
    for outcome in OUTCOMES:
        events.labels(outcome=outcome)
    seconds = Histogram(*SECONDS, buckets=LATENCY_BUCKETS, registry=registry)
    for outcome in OUTCOMES_SENT:
        events.labels(outcome=outcome).inc()
    for took in TIMES:
        seconds.observe(took)
    return generate_latest(registry).decode()


def _ours(metrics: Metrics) -> str:
    for outcome in OUTCOMES_SENT:
        metrics.ingested(outcome)
    for took in TIMES:
        metrics.ingest_took(took)
    text = metrics.render({}).decode()
    wanted = ("panoptes_events_ingested", "panoptes_ingest_seconds")
    blocks = re.split(r"(?m)^(?=# HELP )", text)
    return "".join(
        block for block in blocks if block.startswith(tuple(f"# HELP {w}" for w in wanted))
    )


def test_the_tally_reads_as_prometheus_clients_own_metrics() -> None:
    metrics = Metrics()
    assert metrics.shared is None
    ours = _ours(metrics)
    assert "panoptes_ingest_seconds_bucket" in ours and 'outcome="stored"} 5.0' in ours
    assert _without_created_values(ours) == _without_created_values(_reference())


def test_without_created_series_neither_shows_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_DISABLE_CREATED_SERIES", "true")
    ours = _ours(Metrics())
    assert "_created" not in ours
    assert f"panoptes_ingest_seconds_count {float(len(TIMES))}" in ours
