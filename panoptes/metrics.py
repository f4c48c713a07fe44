"""Prometheus metrics: one registry per app, so several apps in one process never mix.

With several worker processes behind one port (`hypercorn --workers N`) a scrape reaches
one of them at random, so each process's own counts would be a random share. Point
PROMETHEUS_MULTIPROC_DIR at an empty directory that all workers share (emptied at every
start, as prometheus-client asks): each process then keeps its values in files there, and
/metrics in any worker adds up all of them.
"""

from __future__ import annotations

import os
import platform
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from . import __version__
from .status import WorkflowStatus

__all__ = ["CONTENT_TYPE", "Metrics"]

# Ingest is expected in milliseconds; the upper buckets catch a database that stalls.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OUTCOMES = ("stored", "duplicate", "refused", "unavailable")
EVENTS = (
    "panoptes_events_ingested",
    "Client messages received on /update_workflow_status, by outcome",
)
SECONDS = (
    "panoptes_ingest_seconds",
    "Time from receiving a client message to acknowledging it (stored and committed)",
)


def shared_directory() -> str | None:
    """Where the worker processes keep their values, if they share them (prometheus-client
    reads the same variable when it is imported)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class _Workflows(Collector):
    """Stored workflows by status: the same in every process, so never summed across them."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "panoptes_workflows", "Stored workflows by status", labels=["status"]
        )
        for status in WorkflowStatus:
            family.add_metric([status.value], self.counts.get(status.value, 0))
        yield family


class _BuildInfo(Collector):
    """What is running, as the usual `*_build_info` gauge of 1: the same in every process,
    so never summed across them."""

    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "panoptes_build_info",
            "The panoptes version, its Python, its database and its broadcast backend; always 1",
            labels=list(self.labels),
        )
        family.add_metric(list(self.labels.values()), 1)
        yield family


def _created_series() -> bool:
    """Whether `*_created` samples are shown, as prometheus-client decides it."""
    flag = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False")
    return flag.lower() not in ("true", "1", "t")


class _IngestTally(Collector):
    """panoptes_events_ingested and panoptes_ingest_seconds in a process that keeps its own
    values (no PROMETHEUS_MULTIPROC_DIR): plain numbers, moved on the event loop with every
    message and made into samples when /metrics is read. prometheus-client's Counter.inc and
    Histogram.observe take a lock each and cost about 2% of an ingest message
    (benchmarks/instructions.py); the text is the same as theirs (tests/unit/test_tally.py)."""

    def __init__(self) -> None:
        self.created = time.time()
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # not cumulative; the last: +Inf
        self.sum = 0.0

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] += 1

    def took(self, seconds: float) -> None:
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1  # the first bound >= it
        self.sum += seconds

    def collect(self) -> Iterator[Metric]:
        created = self.created if _created_series() else None
        events = CounterMetricFamily(*EVENTS, labels=["outcome"])
        for outcome, count in self.outcomes.items():
            events.add_metric([outcome], count, created=created)
        yield events
        seconds = HistogramMetricFamily(*SECONDS)
        bounds = [*map(floatToGoString, LATENCY_BUCKETS), "+Inf"]
        cumulative, buckets = 0, []
        for bound, count in zip(bounds, self.buckets, strict=True):
            cumulative += count
            buckets.append((bound, float(cumulative)))
        seconds.add_metric([], buckets, self.sum)
        if created is not None:
            seconds.samples.append(Sample(f"{SECONDS[0]}_created", {}, created))
        yield seconds


class Metrics:
    def __init__(self, database: str = "sqlite", broadcast: str = "memory") -> None:
        """`database` and `broadcast` name the backends, as GET /api/service-info does."""
        self.registry = CollectorRegistry()
        self.shared = shared_directory()
        # Every ingest message: its outcome (one of OUTCOMES), and the seconds it took.
        self.ingested: Callable[[str], None]
        self.ingest_took: Callable[[float], None]
        if self.shared is None:
            tally = _IngestTally()
            self.registry.register(tally)
            self.ingested, self.ingest_took = tally.count, tally.took
        else:  # kept in the shared files, which prometheus-client's own metrics write
            events = Counter(*EVENTS, ["outcome"], registry=self.registry)
            # One child per outcome, made now: listed at 0 before the first message, and
            # not looked up again for every message.
            outcomes = {outcome: events.labels(outcome=outcome) for outcome in OUTCOMES}
            seconds = Histogram(*SECONDS, buckets=LATENCY_BUCKETS, registry=self.registry)
            self.ingested = lambda outcome: outcomes[outcome].inc()
            self.ingest_took = seconds.observe
        self.workflows_registered = Counter(
            "panoptes_workflows_registered",
            "Workflows registered through /create_workflow",
            registry=self.registry,
        )
        # Set by the hub whenever a subscriber comes or goes; summed over live processes.
        self.subscribers = Gauge(
            "panoptes_websocket_subscribers",
            "Open websocket feed connections",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.subscribers.set(0)
        # Moves the state machine refused (status.py's tables), e.g. a late progress 8/8 for a
        # cancelled run: by machine ("workflow" or "job"), state and trigger.
        self.refused_moves = Counter(
            "panoptes_refused_moves",
            "Workflow and job moves the state machine refused, by machine, state and trigger",
            ["machine", "state", "trigger"],
            registry=self.registry,
        )
        self._workflows = _Workflows()
        self.registry.register(self._workflows)
        self._build = _BuildInfo(
            {
                "version": __version__,
                "python": platform.python_version(),
                "database": database,
                "broadcast": broadcast,
            }
        )
        self.registry.register(self._build)

    def count_refused(self, refused: list[tuple[str, str, str]]) -> None:
        for machine, state, trigger in refused:
            self.refused_moves.labels(machine=machine, state=state, trigger=trigger).inc()

    def render(self, workflow_counts: dict[str, int]) -> bytes:
        self._workflows.counts = workflow_counts
        if self.shared is None:
            return generate_latest(self.registry)
        every_process = CollectorRegistry()
        MultiProcessCollector(every_process, path=self.shared)  # type: ignore[no-untyped-call]
        every_process.register(self._workflows)
        every_process.register(self._build)
        return generate_latest(every_process)

    def close(self) -> None:
        """This process stops: its subscribers no longer count (its counters still do)."""
        if self.shared is not None:
            mark_process_dead(os.getpid(), self.shared)  # type: ignore[no-untyped-call]
