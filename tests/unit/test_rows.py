"""store/rows.py: the values the writer hands the driver are the ones SQLAlchemy would have
written, and come back as they went in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from panoptes.store import rows


def test_sqlite_times_are_sqlalchemys_format_and_come_back_the_same() -> None:
    for value in (
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),  # no microseconds: still written
        datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=timezone(timedelta(hours=2))),
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ):
        text = rows._sqlite_time(value)
        assert text == value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        assert rows._time_out(text) == value
    assert rows._sqlite_time(None) is None


def test_postgresql_times_are_naive_utc() -> None:
    value = datetime(2026, 6, 1, 12, 0, 0, 5, tzinfo=timezone(timedelta(hours=-5)))
    naive = rows._pg_time(value)
    assert naive == datetime(2026, 6, 1, 17, 0, 0, 5)
    assert rows._time_out(naive) == value


def test_json_columns_keep_null_only_where_the_column_does() -> None:
    assert rows._json([]) == "[]"
    assert rows._json(None) == "null"  # JSON(none_as_null=False): JSON's null
    assert rows._json_or_null(None) is None  # JSON(none_as_null=True): SQL NULL
    assert rows._json_out('{"a": [1, 2]}') == {"a": [1, 2]}
    assert rows._json_out({"already": "decoded"}) == {"already": "decoded"}  # asyncpg's codec
    assert rows._json(2**70) == str(2**70)  # what orjson refuses, json writes
    for shape, nullable in (
        (rows.JOB_SHAPE, {"resources", "logs", "benchmark"}),
        (rows.WORKFLOW_SHAPE, {"plan", "rules_seen", "rulegraph"}),
    ):
        assert {shape.columns[at] for at, null in shape.jsons if null} == nullable


def test_placeholders_are_numbered_for_asyncpg() -> None:
    # The statements of rows.py hold no "?" but their placeholders (no literals with one).
    assert rows._numbered("SELECT ? + ?") == "SELECT $1 + $2"
    assert rows._numbered("UPDATE t SET a = ? WHERE id = ?") == "UPDATE t SET a = $1 WHERE id = $2"
    assert rows._numbered("BEGIN") == "BEGIN"


def _stored_job(codecs: rows._Codecs) -> tuple[tuple[object, ...], object]:
    """A job row as the database gives it back (SQLite's encoding), and the row read from it."""
    job = rows.JobRow({"workflow_id": 1, "jobid": 3, "status": "Running"}, new=True)
    job.id = 9
    job.output = ["out/a.bam"]
    job.wildcards = {"sample": "a"}
    job.attempts = []
    job.started_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    found = rows._Codecs(rows.JOB_SHAPE, rows._sqlite_time, reads_encoded=False).values(job)
    return found, codecs.row(found)


def test_a_value_still_the_one_read_is_written_as_it_was_read() -> None:
    columns = rows.JOB_SHAPE.columns
    codecs = rows._Codecs(rows.JOB_SHAPE, rows._sqlite_time, reads_encoded=True)
    found, job = _stored_job(codecs)
    job.status = "Done"
    job.finished_at = datetime(2026, 1, 2, 3, 5, 0, tzinfo=UTC)
    job.attempts = [{"attempt": 1, "status": "Done"}]  # replaced, as the machine does
    written = codecs.values(job)
    for name in ("output", "wildcards", "started_at"):  # the very text that was read
        assert written[columns.index(name)] is found[columns.index(name)]
    assert written[columns.index("attempts")] == '[{"attempt":1,"status":"Done"}]'
    assert written[columns.index("finished_at")] == "2026-01-02 03:05:00.000000"
    assert written[columns.index("status")] == "Done"
    # What was just written is what is remembered: the next write reuses it, and a value
    # replaced after that is encoded again.
    job.output = ["out/b.bam"]
    again = codecs.values(job)
    assert again[columns.index("attempts")] is written[columns.index("attempts")]
    assert again[columns.index("output")] == '["out/b.bam"]'
    # Decoding what was written gives the row's values back.
    assert codecs.row(again).output == ["out/b.bam"]


def test_where_reads_come_back_decoded_everything_read_is_encoded_again() -> None:
    codecs = rows._Codecs(rows.JOB_SHAPE, rows._pg_time, reads_encoded=False)
    found = list(_stored_job(codecs)[0])
    columns = rows.JOB_SHAPE.columns
    found[columns.index("output")] = ["out/a.bam"]  # asyncpg's codec decodes JSON
    job = codecs.row(found)
    assert job.encoded is None
    written = codecs.values(job)
    assert written[columns.index("output")] == '["out/a.bam"]'
    assert written[columns.index("started_at")] == datetime(2026, 1, 2, 3, 4, 5)
