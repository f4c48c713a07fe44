"""The time-left arithmetic (panoptes/eta.py: estimate), on facts made by hand: no database.
The same estimate through the API, on recorded runs: tests/test_eta.py."""

from __future__ import annotations

from collections import Counter

import pytest

from panoptes.eta import Mean, RunFacts, Running, estimate

DONE, RUNNING, ERROR, WAITING = "Done", "Running", "Error", "Waiting"


def facts(**overrides: object) -> RunFacts:
    """Rule `a`: 4 planned, 2 done of 10 s each, run one after the other (1 core busy).
    The total is the plan's unless given."""
    plan = overrides.get("plan", {"a": 4})
    values: dict[str, object] = {
        "jobs_total": sum(plan.values()) if isinstance(plan, dict) else 4,
        "plan": plan,
        "counts": {"a": Counter({DONE: 2})},
        "threads": {"a": 1.0},
        "timed": {"a": Mean(2, 20.0)},
        "busy": 20.0,
        "wall": 20.0,
    }
    return RunFacts(**{**values, **overrides})  # type: ignore[arg-type]


def test_jobs_left_take_their_rules_mean_one_after_the_other() -> None:
    assert estimate(facts()) == 20.0


def test_they_share_the_parallelism_seen_so_far() -> None:
    # The two done jobs ran side by side: 20 s of work in 10 s of wall time.
    assert estimate(facts(wall=10.0)) == 10.0
    # Parallelism is never below one job at a time, and never above the jobs left.
    assert estimate(facts(wall=40.0)) == 20.0
    assert estimate(facts(busy=200.0, wall=10.0)) == 10.0  # 2 jobs left: 2 at a time at most


def test_threads_count_as_cores() -> None:
    # Rule b (2 threads, 10 s) is planned next; the run kept 2 cores busy with rule a.
    run = facts(
        plan={"a": 2, "b": 2},
        threads={"a": 1.0, "b": 2.0},
        counts={"a": Counter({DONE: 2}), "b": Counter({WAITING: 2})},
        timed={"a": Mean(2, 20.0)},
        history={"b": Mean(4, 40.0, 8.0)},
        wall=10.0,
    )
    # 2 jobs x 10 s x 2 threads = 40 core-seconds over 2 cores.
    assert estimate(run) == 20.0


def test_a_running_job_counts_for_the_rest_of_its_mean() -> None:
    run = facts(
        counts={"a": Counter({DONE: 2, RUNNING: 1})},
        running=[Running("a", 4.0)],
        busy=24.0,
        wall=24.0,
    )
    assert estimate(run) == 16.0  # 6 s left of the running one, then 10 s for the last


def test_running_jobs_longer_than_the_mean_raise_it() -> None:
    # The finished jobs were the quick ones: the running one is past their mean already.
    run = facts(
        plan={"a": 3},
        counts={"a": Counter({DONE: 2, RUNNING: 1})},
        running=[Running("a", 40.0)],
        busy=60.0,
        wall=60.0,
    )
    # Rule a's mean is now at least (10 + 10 + 40) / 3 = 20 s: the running one's rest is 0,
    # and there is nothing else left, so the estimate is that rest: 0.
    assert estimate(run) == 0.0
    run.plan, run.jobs_total = {"a": 4}, 4
    assert estimate(run) == 20.0  # one more job of 20 s


def test_failed_and_retried_jobs() -> None:
    # A job that failed for good is not run again; one on its retry is running.
    run = facts(
        plan={"a": 5},
        counts={"a": Counter({DONE: 2, ERROR: 1, RUNNING: 1})},
        running=[Running("a", 0.0)],
        busy=25.0,
        wall=25.0,
    )
    # 1 left to start (10 s) and the retry's 10 s, one at a time.
    assert estimate(run) == 20.0


def test_without_a_plan_the_rest_is_like_the_jobs_done_lately() -> None:
    # 10 jobs in all, 4 seen: 2 quick `make` (1 s) done early, 2 `align` (10 s) done lately.
    run = facts(
        jobs_total=10,
        plan=None,
        counts={"make": Counter({DONE: 2}), "align": Counter({DONE: 2})},
        threads={"make": 1.0, "align": 1.0},
        timed={"make": Mean(2, 2.0), "align": Mean(2, 20.0)},
        recent={"align": 2},
        busy=22.0,
        wall=22.0,
    )
    assert estimate(run) == 60.0  # 6 jobs like align, one after the other
    run.recent = {}
    assert estimate(run) == 33.0  # no recent mix: the run's mean (5.5 s) for each


def test_a_rule_not_timed_here_takes_earlier_runs_mean() -> None:
    run = facts(
        plan={"a": 2, "b": 1},
        counts={"a": Counter({DONE: 2})},
        history={"b": Mean(3, 90.0)},
    )
    assert estimate(run) == 30.0
    del run.history["b"]
    assert estimate(run) == 10.0  # else this run's mean over all rules


def test_earlier_runs_alone_are_enough() -> None:
    run = RunFacts(
        jobs_total=2,
        plan={"a": 2},
        counts={"a": Counter({RUNNING: 1, WAITING: 1})},
        history={"a": Mean(2, 10.0)},
        running=[Running("a", 1.0)],
        busy=1.0,
        wall=1.0,
    )
    assert estimate(run) == 9.0  # the running one's 4 s and the next one's 5 s


@pytest.mark.parametrize(
    "run",
    [
        # No duration known anywhere.
        RunFacts(jobs_total=5, counts={"a": Counter({RUNNING: 2})}, running=[Running("a", 3)]),
        RunFacts(),
        # Nothing known to be left: every job done, the run has not said it ended.
        facts(plan={"a": 2}),
        facts(plan=None, jobs_total=2),
    ],
)
def test_unknown(run: RunFacts) -> None:
    assert estimate(run) is None
