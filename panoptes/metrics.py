"""Prometheus metrics: one registry per app, so several apps in one process never mix."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .status import WorkflowStatus

__all__ = ["CONTENT_TYPE", "Metrics"]

# Ingest is expected in milliseconds; the upper buckets catch a database that stalls.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self, subscriber_count: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "panoptes_events_ingested",
            "Client messages received on /update_workflow_status, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("stored", "duplicate", "refused"):
            self.events.labels(outcome=outcome)  # listed at 0 before the first message
        self.ingest_seconds = Histogram(
            "panoptes_ingest_seconds",
            "Time from receiving a client message to acknowledging it (stored and committed)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.workflows_registered = Counter(
            "panoptes_workflows_registered",
            "Workflows registered through /create_workflow",
            registry=self.registry,
        )
        subscribers = Gauge(
            "panoptes_websocket_subscribers",
            "Open websocket feed connections in this process",
            registry=self.registry,
        )
        subscribers.set_function(lambda: float(subscriber_count()))
        self.workflows = Gauge(
            "panoptes_workflows",
            "Stored workflows by status",
            ["status"],
            registry=self.registry,
        )

    def render(self, workflow_counts: dict[str, int]) -> bytes:
        for status in WorkflowStatus:
            self.workflows.labels(status=status.value).set(workflow_counts.get(status.value, 0))
        return generate_latest(self.registry)
