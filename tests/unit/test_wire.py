"""The wire parser bounds what one message may ask for (issue 15.3)."""

from __future__ import annotations

import json

import pytest

from panoptes.errors import TooMany
from panoptes.ingest.wire import (
    JOBS_PER_TURN,
    MAX_JOBS_PER_MESSAGE,
    MAX_PLANNED_RULES,
    parse_job_stats,
    parse_message,
)


def job_started(jobs: list[int]) -> dict[str, object]:
    return {"msg": json.dumps({"level": "job_started", "jobs": jobs}), "id": "7"}


def test_a_long_job_started_is_stored_in_shares_of_at_most_a_turn() -> None:
    jobs = list(range(2 * JOBS_PER_TURN + 3))
    message = parse_message(job_started(jobs))
    shares = message.shares()
    assert [len(share.jobids()) for share in shares] == [JOBS_PER_TURN, JOBS_PER_TURN, 3]
    assert [j for share in shares for j in share.jobids()] == jobs
    assert {(s.workflow_id, s.level, s.at) for s in shares} == {(7, "job_started", message.at)}


def test_other_messages_are_one_share() -> None:
    message = parse_message(job_started([1, 2]))
    assert message.shares() == [message]


def test_a_job_started_may_list_only_so_many_jobs() -> None:
    parse_message(job_started(list(range(MAX_JOBS_PER_MESSAGE))))
    with pytest.raises(TooMany) as refused:
        parse_message(job_started(list(range(MAX_JOBS_PER_MESSAGE + 1))))
    assert refused.value.status == 413


def test_a_job_stats_table_too_long_to_plan_by_gives_the_total_only() -> None:
    def table(rules: int) -> str:
        rows = "".join(f"r{n} 3\n" for n in range(rules))
        return f"Job stats:\njob count\n--- -----\n{rows}total {3 * rules}\n"

    planned = parse_job_stats(table(MAX_PLANNED_RULES))
    assert planned is not None and len(planned[0]) == MAX_PLANNED_RULES
    assert parse_job_stats(table(MAX_PLANNED_RULES + 1)) == ({}, 3 * (MAX_PLANNED_RULES + 1))


def test_a_message_object_with_an_integer_over_64_bits_is_kept_not_a_500() -> None:
    # A JSON body's msg may be an object, decoded by Python's json where orjson refused it:
    # its integers may be of any size. Its digest (of its text) was made by orjson, which
    # raised TypeError, a 500 (found by tests/test_fuzz_ingest.py).
    huge = -(2**63) - 1
    one = parse_message({"msg": {"level": "x", "n": huge, "timestamp": 1.0}, "id": 1})
    other = parse_message({"msg": {"timestamp": 1.0, "n": huge, "level": "x"}, "id": 1})
    assert one.body["n"] == huge
    assert one.digest is not None and one.digest == other.digest
