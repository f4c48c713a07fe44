"""What clients tell about jobs and runs, beyond their status: a job_info's description,
and what plugin 1.0.0 adds (docs/wire.md), checked, bounded and made into the values the
columns keep.

The checks refuse what no column could hold (InvalidMessage, 400; TooMany, 413), so a
malformed message changes nothing; the rest bounds what is kept. wire.py calls the checks,
machine.py the rest. No I/O and no state here.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ..errors import InvalidMessage, TooMany
from ..models import MAX_INT, JobRow

# A failed job's log files: this many, each tail cut to its last this many characters.
MAX_LOGS_PER_JOB = 16
MAX_TAIL_CHARS = 64 * 1024
MAX_PATH_CHARS = 4096
# The rule graph: real workflows have tens of rules; the bounds are for what is not one.
MAX_GRAPH_RULES = 2_000
MAX_GRAPH_EDGES = 20_000
# What Snakemake's benchmark file measures (seconds, MB, percent), and how many runs.
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
    "repeats",
)

_EXIT_STATUS = re.compile(r"exit status (-?\d+)")


# --------------------------------------------------------------------------- checks


def _kind(value: Any) -> str:
    return type(value).__name__


def check_failure(body: dict[str, Any]) -> None:
    """job_error: `error`, `exit_code`, `logs`."""
    error = body.get("error")
    if error is not None and not isinstance(error, str):
        raise InvalidMessage(f"'error' must be a string, got {_kind(error)}")
    code = body.get("exit_code")
    if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
        raise InvalidMessage(f"'exit_code' must be an integer or null, got {code!r}")
    logs = body.get("logs")
    if logs is None:
        return
    if not isinstance(logs, list):
        raise InvalidMessage(f"'logs' must be a list of objects, got {_kind(logs)}")
    for entry in logs:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise InvalidMessage("each of 'logs' must be an object with a string 'path'")
        for name in ("tail", "error"):
            if entry.get(name) is not None and not isinstance(entry[name], str):
                raise InvalidMessage(f"a log's {name!r} must be a string")


def check_benchmark(body: dict[str, Any]) -> None:
    """job_finished: `benchmark`."""
    value = body.get("benchmark")
    if value is not None and not isinstance(value, dict):
        raise InvalidMessage(f"'benchmark' must be an object, got {_kind(value)}")


def check_rulegraph(body: dict[str, Any]) -> None:
    rules, edges = body.get("rules", []), body.get("edges", [])
    if not isinstance(rules, list) or not all(isinstance(rule, str) for rule in rules):
        raise InvalidMessage("'rules' must be a list of rule names")
    if not isinstance(edges, list) or not all(_is_edge(edge) for edge in edges):
        raise InvalidMessage("'edges' must be a list of [from_rule, to_rule] pairs")
    if len(rules) > MAX_GRAPH_RULES or len(edges) > MAX_GRAPH_EDGES:
        raise TooMany(
            f"the rule graph has {len(rules):,} rules and {len(edges):,} edges; at most "
            f"{MAX_GRAPH_RULES:,} rules and {MAX_GRAPH_EDGES:,} edges are kept"
        )


def _is_edge(edge: Any) -> bool:
    return (
        isinstance(edge, list)
        and len(edge) == 2
        and all(isinstance(rule, str) and rule for rule in edge)
    )


def check_stats(body: dict[str, Any]) -> None:
    """run_info: `stats`, jobs per rule and `total`."""
    stats = body.get("stats")
    if stats is None:
        return
    if not isinstance(stats, dict):
        raise InvalidMessage(f"'stats' must be an object of job counts, got {_kind(stats)}")
    for rule, count in stats.items():
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_INT:
            raise InvalidMessage(f"'stats' must count jobs per rule, got {rule!r}: {count!r}")


# --------------------------------------------------------------------------- values


def log_tails(value: Any) -> list[dict[str, Any]] | None:
    """The `logs` of a job_error as kept: at most MAX_LOGS_PER_JOB, each tail its last
    MAX_TAIL_CHARS characters (then `truncated`)."""
    if not value:
        return None
    kept = []
    for entry in value[:MAX_LOGS_PER_JOB]:
        log: dict[str, Any] = {"path": entry["path"][:MAX_PATH_CHARS]}
        tail = entry.get("tail")
        if isinstance(tail, str):
            log["tail"] = tail[-MAX_TAIL_CHARS:]
            log["truncated"] = bool(entry.get("truncated")) or len(tail) > MAX_TAIL_CHARS
        else:
            log["error"] = str(entry.get("error") or "not sent")[:MAX_PATH_CHARS]
        kept.append(log)
    return kept


def exit_code(body: dict[str, Any], error: str | None) -> int | None:
    """The command's exit status: as the client sent it, else as Snakemake wrote it in the
    error ("... returned non-zero exit status 3."), which Snakemake 7/8 send too."""
    code = body.get("exit_code")
    if isinstance(code, int) and -MAX_INT <= code <= MAX_INT:
        return code
    found = _EXIT_STATUS.findall(error or "")
    if found and -MAX_INT <= int(found[-1]) <= MAX_INT:
        return int(found[-1])
    return None


def benchmark(value: Any) -> dict[str, float] | None:
    """The benchmark fields that are finite numbers; None if none is."""
    if not isinstance(value, dict):
        return None
    kept = {
        name: float(value[name])
        for name in BENCHMARK_FIELDS
        if isinstance(value.get(name), int | float)
        and not isinstance(value[name], bool)
        and math.isfinite(value[name])
    }
    return kept or None


def rulegraph(body: dict[str, Any]) -> dict[str, list[Any]]:
    """The graph as kept: every rule once (those only an edge names too), every edge once."""
    rules = dict.fromkeys(rule for rule in body.get("rules", []) if rule)
    edges: dict[tuple[str, str], None] = {}
    for source, target in body.get("edges", []):
        rules.setdefault(source)
        rules.setdefault(target)
        edges.setdefault((source, target))
    return {"rules": list(rules), "edges": [list(edge) for edge in edges]}


def planned(stats: Any) -> tuple[dict[str, int], int] | None:
    """run_info's `stats` as a plan: jobs per rule, and the total (theirs if given)."""
    if not isinstance(stats, dict):
        return None
    rules = {rule: count for rule, count in stats.items() if rule != "total"}
    if not rules:
        return None
    total = stats.get("total")
    return rules, total if isinstance(total, int) else sum(rules.values())


# --------------------------------------------------------------------------- job_info


def _paths(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value]


def describe_job(job: JobRow, body: dict[str, Any]) -> None:
    """What a job_info says of its job (every client sends it; checked by wire.py)."""
    job.rule = body.get("name") or job.rule
    job.message = body.get("msg")
    job.input = _paths(body.get("input"))
    job.output = _paths(body.get("output"))
    job.log = _paths(body.get("log"))
    wildcards = body.get("wildcards")
    job.wildcards = wildcards if isinstance(wildcards, dict) else {}
    job.is_checkpoint = bool(body.get("is_checkpoint", False))
    if body.get("shellcmd"):
        job.shellcmd = body["shellcmd"]
    for name in ("threads", "priority"):
        if body.get(name) is not None:
            setattr(job, name, int(body[name]))
    if body.get("resources") is not None:
        resources = body["resources"]
        # Snakemake 7/8 send an unnamed positional list; keep it, under a name.
        job.resources = resources if isinstance(resources, dict) else {"values": resources}
    job.reason = body.get("reason") or job.reason
