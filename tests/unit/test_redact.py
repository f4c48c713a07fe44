"""serving.redact: the token out of log lines, and nothing else changed."""

from __future__ import annotations

import pytest

from panoptes.serving import redact


@pytest.mark.parametrize(
    ("line", "clean"),
    [
        (
            '"POST /t/s3cr3t-value/update_workflow_status 1.1" 200',
            '"POST /t/<token>/update_workflow_status 1.1" 200',
        ),
        ("GET /t/s3cr3t-value?x=1", "GET /t/<token>?x=1"),
        ("referer http://lab:5000/t/s3cr3t-value/ws", "referer http://lab:5000/t/<token>/ws"),
        ("Authorization: Bearer s3cr3t-value", "Authorization: Bearer <token>"),
        (
            "cookie panoptes_token=s3cr3t-value; theme=dark",
            "cookie panoptes_token=<token>; theme=dark",
        ),
        # A file path with a /t/ inside is not a token.
        ("could not read /data/t/sample.fq", "could not read /data/t/sample.fq"),
    ],
)
def test_tokens_are_taken_out_of_a_line(line: str, clean: str) -> None:
    assert redact(line) == clean


def test_the_configured_token_goes_wherever_it_is() -> None:
    assert redact("odd place: xx-s3cr3t-value-yy", "s3cr3t-value") == "odd place: xx-<token>-yy"
