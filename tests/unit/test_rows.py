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
