"""Reading what a job left on disk: the end of its log files and its benchmark file.

Both run on Snakemake's logging thread while it handles a record, so they must be cheap and
bounded: log files are read from their end by seeking, never whole, and nothing here raises.
"""

import json
import math
import os
import re
import stat
from collections.abc import Iterable, Sequence
from typing import Any

#: Bytes of log tail sent for one job, shared among its log files.
TAIL_BUDGET = 64 * 1024
#: Log files sent for one job (the server keeps no more).
MAX_LOG_FILES = 16
#: A benchmark file is a few short lines; anything bigger is not one.
MAX_BENCHMARK_BYTES = 1024 * 1024
#: The numeric columns of Snakemake's benchmark file, in its order ("h:m:s" repeats "s").
BENCHMARK_FIELDS = (
    "s",
    "max_rss",
    "max_vms",
    "max_uss",
    "max_pss",
    "io_in",
    "io_out",
    "mean_load",
    "cpu_time",
)
_MISSING_VALUES = frozenset({"", "NA", "-"})
# Snakemake annotates some paths it logs, e.g. "x.log (pipe)" or "s3://b/x (send to storage)".
_ANNOTATION = re.compile(r" \([^()]*\)$")
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def local_path(path: str) -> str:
    """The file behind a path as Snakemake logs it, without its annotation if it has one."""
    if os.path.lexists(path):
        return path
    stripped = _ANNOTATION.sub("", path)
    return stripped if stripped else path


def log_tails(paths: Iterable[str], budget: int = TAIL_BUDGET) -> list[dict[str, Any]]:
    """The end of each log file, ``{"path", "tail", "truncated"}`` or ``{"path", "error"}``.

    At most ``budget`` bytes are read in all; files smaller than their share leave the rest to
    the others.
    """
    unique = list(dict.fromkeys(str(p) for p in paths))[:MAX_LOG_FILES]
    sizes: dict[str, int] = {}
    errors: dict[str, str] = {}
    for path in unique:
        try:
            sizes[path] = _regular_file_size(local_path(path))
        except OSError as exc:
            errors[path] = _describe(exc)
    shares = share_budget(sizes, budget)
    return [_tail_entry(path, shares.get(path, 0), errors.get(path)) for path in unique]


def share_budget(sizes: dict[str, int], budget: int) -> dict[str, int]:
    """Split ``budget`` among files: each gets at most its size, the small ones first."""
    shares: dict[str, int] = {}
    remaining = max(budget, 0)
    ordered = sorted(sizes.items(), key=lambda item: item[1])
    for index, (path, size) in enumerate(ordered):
        fair = remaining // (len(ordered) - index)
        shares[path] = min(size, fair)
        remaining -= shares[path]
    return shares


def read_tail(path: str, limit: int) -> tuple[str, bool]:
    """The last ``limit`` bytes of a file at most, from a line start; and whether more precede.

    The text is decoded as UTF-8 with undecodable bytes replaced. When the tail would start in
    the middle of a line, that partial line is left out.
    """
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        start = max(size - max(limit, 0), 0)
        if start == 0:
            handle.seek(0)
            return handle.read(limit).decode("utf-8", errors="replace"), False
        # One byte more tells whether the tail starts right after a line break.
        handle.seek(start - 1)
        data = handle.read(limit + 1)
    return _from_line_start(data).decode("utf-8", errors="replace"), True


def _from_line_start(data: bytes) -> bytes:
    """``data[1:]`` if ``data[0]`` ends a line, else what follows the first line break."""
    if data[:1] == b"\n" or (data[:1] == b"\r" and data[1:2] != b"\n"):
        return data[1:]
    found = _LINE_BREAK.search(data, 1)
    return data[found.end() :] if found else b""


def _tail_entry(path: str, limit: int, error: str | None) -> dict[str, Any]:
    if error is not None:
        return {"path": path, "error": error}
    try:
        tail, truncated = read_tail(local_path(path), limit)
    except OSError as exc:
        return {"path": path, "error": _describe(exc)}
    return {"path": path, "tail": tail, "truncated": truncated}


def _regular_file_size(path: str) -> int:
    info = os.stat(path)
    # A log can be a named pipe; opening one for reading would block Snakemake's logging.
    if not stat.S_ISREG(info.st_mode):
        raise OSError(f"not a regular file: {path}")
    return info.st_size


def _describe(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    return exc.strerror or str(exc)


def read_benchmark(path: str) -> dict[str, float | int] | None:
    """A Snakemake benchmark file as numbers: the mean of its rows, and ``repeats`` if several.

    Tab-separated files (the default) and ``.jsonl`` files are understood. A missing,
    unreadable or empty file gives None.
    """
    try:
        with open(local_path(path), "rb") as handle:
            text = handle.read(MAX_BENCHMARK_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return None
    rows = parse_benchmark_jsonl(text) if path.endswith(".jsonl") else parse_benchmark_tsv(text)
    return summarise_benchmark(rows)


def parse_benchmark_tsv(text: str) -> list[dict[str, float]]:
    """The numeric fields of each row of a benchmark TSV (header line, then one row a run)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    header = [name.strip() for name in lines[0].split("\t")]
    return [_numeric_row(zip(header, line.split("\t"), strict=False)) for line in lines[1:]]


def parse_benchmark_jsonl(text: str) -> list[dict[str, float]]:
    """The numeric fields of each line of a ``.jsonl`` benchmark file."""
    rows = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            rows.append(_numeric_row(record.items()))
    return rows


def summarise_benchmark(rows: Sequence[dict[str, float]]) -> dict[str, float | int] | None:
    summary: dict[str, float | int] = {}
    for name in BENCHMARK_FIELDS:
        values = [row[name] for row in rows if name in row]
        if values:
            summary[name] = round(math.fsum(values) / len(values), 4)
    if not summary:
        return None
    if len(rows) > 1:
        summary["repeats"] = len(rows)
    return summary


def _numeric_row(cells: Iterable[tuple[str, Any]]) -> dict[str, float]:
    row = {}
    for name, cell in cells:
        value = _number(cell) if name in BENCHMARK_FIELDS else None
        if value is not None:
            row[name] = value
    return row


def _number(cell: Any) -> float | None:
    """A finite float, or None for Snakemake's "NA" / "-" and anything else not a number."""
    if isinstance(cell, bool):
        return None
    if isinstance(cell, str):
        if cell.strip() in _MISSING_VALUES:
            return None
        try:
            value = float(cell)
        except ValueError:
            return None
    elif isinstance(cell, int | float):
        value = float(cell)
    else:
        return None
    return value if math.isfinite(value) else None
