"""The pages' small text helpers."""

from __future__ import annotations

import pytest

from panoptes.routes.html import first_error_line

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
