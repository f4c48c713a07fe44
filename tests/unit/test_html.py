"""The line a failed job is listed with."""

from __future__ import annotations

import pytest

from panoptes.models import JobRow
from panoptes.shapes import error_line, first_error_line

CALLED = "CalledProcessError in file /w/Snakefile, line 23:"
MISSING = "MissingOutputException in rule align:"


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (f"RuleException:\n{CALLED}\nCommand 'x' returned non-zero exit status 1.", CALLED),
        ("RuleException", "RuleException"),  # Snakemake 9 sends no more than the name
        (
            "  \nMissingOutputException in rule align:\n  out.txt",
            "MissingOutputException in rule align:",
        ),
        ("job failed", "job failed"),
        (None, ""),
        ("", ""),
    ],
)
def test_the_first_line_that_says_why(error: str | None, shown: str) -> None:
    assert first_error_line(error) == shown


def _failed(error: str, logs: list[dict[str, object]] | None) -> JobRow:
    return JobRow({"jobid": 1, "error": error, "logs": logs}, new=True)


def test_a_failed_job_is_listed_with_the_last_line_its_log_ends_with() -> None:
    error = f"RuleException:\n{CALLED}\nCommand 'x' returned non-zero exit status 3."
    tail = "reading s07.fq\nERROR: truncated FASTQ record at line 4021\n\n"
    logs = [{"path": "logs/none.log", "error": "missing"}, {"path": "l", "tail": tail}]
    assert error_line(_failed(error, logs)) == "ERROR: truncated FASTQ record at line 4021"
    # Without logs (Snakemake 7/8, plugin 0.3.0, logs turned off): the error says why.
    assert error_line(_failed(error, None)) == CALLED
    assert error_line(_failed(error, [{"path": "l", "tail": "  \n"}])) == CALLED
    assert error_line(JobRow({"jobid": 1, "error": None}, new=True)) is None
