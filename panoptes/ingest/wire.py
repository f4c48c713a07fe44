"""What Snakemake clients send, as typed messages: every check before anything is stored.

Three client families talk to panoptes: Snakemake 9 with the panoptes logger plugin, and
Snakemake 7/8 with --wms-monitor (see README). `parse_message` turns an
/update_workflow_status envelope into a `Message` and `Registration` describes a
/create_workflow call; both refuse what the state machine could not use, with an
InvalidMessage (400) or UnknownWorkflow (422), so a malformed message changes nothing. No
I/O happens here.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson

from ..errors import InvalidMessage, TooMany, UnknownWorkflow
from ..models import MAX_BIGINT, MAX_INT, utcnow
from . import facts

# Workflow names are unique, and a unique index cannot hold arbitrarily long keys
# (PostgreSQL's B-tree stops near 2,700 bytes): longer names are refused, never cut.
MAX_NAME_CHARS = 200
# Snakemake's messages are a few levels deep; far deeper ones could not even be written back
# out as JSON (orjson stops at 255 levels, and stored values travel inside envelopes).
MAX_DEPTH = 64
# The most jobs one job_started may list (the plugin lists those started in one scheduling
# round, at most --jobs); every job costs a row and an event, so this bounds the work, the
# memory and the time one message can take. Only the Snakemake 9 plugin sends job_started,
# and it drops a refused message with a warning: the run goes on.
MAX_JOBS_PER_MESSAGE = 10_000
# A message's jobs are stored this many at a time, each share in its own write turn, so
# other clients' messages are stored in between (and answered within a second).
JOBS_PER_TURN = 500
# The most rules a plan ("Job stats") is recorded for: each is a rule count to send. A
# larger table (no real workflow has one) is kept as the run's total only.
MAX_PLANNED_RULES = 2_000


class Level(StrEnum):
    """The message levels the state machine acts on; every other level only shows that the
    run is alive."""

    JOB_INFO = "job_info"
    JOB_STARTED = "job_started"
    JOB_FINISHED = "job_finished"
    JOB_ERROR = "job_error"
    ERROR = "error"
    PROGRESS = "progress"
    SHELLCMD = "shellcmd"
    INFO = "info"
    RUN_INFO = "run_info"
    WORKFLOW_SUCCESS = "workflow_success"
    # Plugin 1.0.0 (docs/wire.md): the rule graph, and the end of a failed run.
    RULEGRAPH = "rulegraph"
    WORKFLOW_ERROR = "workflow_error"


@dataclass(frozen=True)
class Message:
    workflow_id: int
    level: str
    body: dict[str, Any]
    # Set for legacy messages, which carry their own event time; used to drop the
    # duplicate copy Snakemake 8 sends of every message.
    digest: str | None
    at: datetime

    @property
    def stamped(self) -> bool:
        """Whether the client stamps its messages (Snakemake 7/8; the 9 plugin does not)."""
        return self.digest is not None

    def shares(self) -> list[Message]:
        """The message as stored, in turns: a job_started listing many jobs becomes
        several, of at most JOBS_PER_TURN jobs each; any other message stays one."""
        if self.level != Level.JOB_STARTED:
            return [self]
        jobs = started_jobs(self.body)
        if len(jobs) <= JOBS_PER_TURN:
            return [self]
        return [
            replace(self, body={**self.body, "jobs": jobs[start : start + JOBS_PER_TURN]})
            for start in range(0, len(jobs), JOBS_PER_TURN)
        ]

    def jobids(self) -> list[int]:
        """The jobs the message is about (for the writer to load them at once)."""
        if self.level == Level.JOB_STARTED:
            return started_jobs(self.body)
        if self.level in _ABOUT_ONE_JOB and self.body.get("jobid") is not None:
            return [int(self.body["jobid"])]
        return []


_ABOUT_ONE_JOB = frozenset({Level.JOB_INFO, Level.JOB_FINISHED, Level.JOB_ERROR, Level.SHELLCMD})


_STATS_ROW = re.compile(r"^\s*(\S+)\s+(\d+)\s*$")


def parse_job_stats(text: Any) -> tuple[dict[str, int], int] | None:
    """Snakemake 7/8's "Job stats" table (run_info): jobs planned per rule, and in all.

    Job stats:
    job        count
    -------  -------
    align          6
    total          7

    The rules are {} when there are more than MAX_PLANNED_RULES."""
    if not isinstance(text, str) or "Job stats" not in text:
        return None
    rules: dict[str, int] = {}
    total = None
    for line in text.splitlines():
        row = _STATS_ROW.match(line)
        if row is None:
            continue
        name, count = row.group(1), int(row.group(2))
        if name == "total":
            total = count
        elif _fits(count):
            rules[name] = count
    if not rules:
        return None
    if len(rules) > MAX_PLANNED_RULES:
        total = total if total is not None else sum(rules.values())
        rules = {}
    return rules, total if total is not None and _fits(total) else sum(rules.values())


# What a job's failure is reported as, in the `error` just before its job_error.
_JOB_ERRORS = re.compile(
    r"(RuleException|MissingOutputException|ProtectedOutputException|ImproperOutputException"
    r"|IncompleteFilesException|ChildIOException|CheckSumMismatchException)\b"
)
# How Snakemake says the run itself failed (9: WorkflowError; 7/8 "Exiting because ...").
_RUN_ERRORS = ("WorkflowError", "Exiting because a job execution failed")


def names_a_job_failure(text: str) -> bool:
    return _JOB_ERRORS.match(text) is not None


def says_the_run_failed(text: str) -> bool:
    return text.startswith(_RUN_ERRORS)


def started_jobs(body: dict[str, Any]) -> list[int]:
    """The job ids of a job_started: a list, or (older clients) one id."""
    jobs = body["jobs"]
    return jobs if isinstance(jobs, list) else [jobs]


def _fits(number: int) -> bool:
    """Whether an INTEGER column (job ids, counts, threads, priorities) can hold it."""
    return -MAX_INT - 1 <= number <= MAX_INT


def _int_field(body: dict[str, Any], name: str, *, optional: bool = False) -> int | None:
    value = body.get(name)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidMessage(f"{name!r} must be an integer, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise InvalidMessage(f"{name!r} must be an integer, got {value!r}") from None
    if not _fits(number):
        raise InvalidMessage(f"{name!r} is out of range, got {value!r}")
    return number


def clean(value: Any, depth: int = 0) -> Any:
    """A JSON value the database can store and JSON can write back, made from what Python's
    json module may hand over: every NUL character and lone surrogate ("\\udce9", how Python
    spells a file name that is not UTF-8) made U+FFFD, NaN and the infinities made null. A
    client's message is kept rather than refused over one of them."""
    if depth > MAX_DEPTH:
        raise InvalidMessage(f"'msg' is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [clean(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {clean(key): clean(item, depth + 1) for key, item in value.items()}
    return value


def _text(value: str) -> str:
    value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return "".join("\ufffd" if "\ud800" <= char <= "\udfff" else char for char in value)
    return value


def loads(text: str) -> Any:
    """JSON as any client writes it: orjson for speed; Python's json module for what only it
    writes (NaN, Infinity, lone surrogates), cleaned (see clean)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return clean(json.loads(text))  # ValueError (or RecursionError) if it is not JSON


def _canonical(body: dict[str, Any]) -> str:
    """The message as one text whatever the order of its keys (what its digest is of): by
    orjson, or by json for what orjson refuses (an integer over 64 bits, which the JSON
    columns store the same way: db.json_dumps)."""
    try:
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return json.dumps(body, sort_keys=True)


def _event_time(body: dict[str, Any], received: datetime) -> datetime:
    """The legacy clients' own event time when it is believable, else the receive time."""
    stamp = body.get("timestamp")
    if isinstance(stamp, int | float) and not isinstance(stamp, bool) and math.isfinite(stamp):
        try:
            at = datetime.fromtimestamp(stamp, UTC)
        except (OverflowError, OSError, ValueError):
            return received
        if abs(at - received) < timedelta(days=1):
            return min(at, received)
    return received


def parse_workflow_id(value: Any) -> int:
    if value is None or value == "":
        raise InvalidMessage("'id' is missing: call /create_workflow first and send its id")
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidMessage(f"'id' must be the integer /create_workflow returned, got {value!r}")
    try:
        workflow_id = int(value)
    except ValueError:
        raise InvalidMessage(
            f"'id' must be the integer /create_workflow returned, got {value!r}"
        ) from None
    if not 0 <= workflow_id <= MAX_BIGINT:  # no workflow can have it
        raise UnknownWorkflow(workflow_id)
    return workflow_id


def parse_message(envelope: dict[str, Any], received: datetime | None = None) -> Message:
    """Validate an /update_workflow_status envelope ({msg, timestamp, id})."""
    received = received or utcnow()
    raw = envelope.get("msg")
    if raw is None:
        raise InvalidMessage("'msg' is missing")
    raw_text: str | None = None
    if isinstance(raw, dict):
        body = raw
    elif isinstance(raw, str):
        try:
            body = loads(raw)
        except (ValueError, RecursionError) as exc:
            raise InvalidMessage(f"'msg' is not valid JSON: {exc}") from None
        raw_text = raw
    else:
        raise InvalidMessage("'msg' must be a JSON-encoded object")
    if not isinstance(body, dict):
        raise InvalidMessage("'msg' must encode a JSON object")
    if raw_text is None:
        body = clean(body)  # first: orjson cannot write what is nested too deeply
        raw_text = _canonical(body)
    elif "\\u0000" in raw_text or raw_text.count("[") + raw_text.count("{") > MAX_DEPTH:
        # The cheap tests above spare nearly every message the walk through it.
        body = clean(body)
    level = body.get("level", "")
    if not isinstance(level, str):
        raise InvalidMessage(f"'level' must be a string, got {level!r}")
    workflow_id = parse_workflow_id(envelope.get("id"))
    validator = VALIDATORS.get(level)
    if validator is not None:
        validator(body)
    digest = hashlib.sha256(raw_text.encode()).hexdigest() if "timestamp" in body else None
    return Message(workflow_id, level, body, digest, _event_time(body, received))


def _check_job(body: dict[str, Any]) -> None:
    _int_field(body, "jobid")


def _check_strings(body: dict[str, Any], *names: str) -> None:
    for name in names:
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidMessage(f"{name!r} must be a string, got {type(value).__name__}")


def _check_job_error(body: dict[str, Any]) -> None:
    _check_job(body)
    _check_strings(body, "name", "shellcmd")
    facts.check_failure(body)


def _check_job_finished(body: dict[str, Any]) -> None:
    _check_job(body)
    facts.check_benchmark(body)


def _check_optional_job(body: dict[str, Any]) -> None:
    _int_field(body, "jobid", optional=True)


def _check_job_info(body: dict[str, Any]) -> None:
    _check_job(body)
    for name in ("input", "output", "log"):
        value = body.get(name)
        if value is not None and not isinstance(value, list | str):
            raise InvalidMessage(f"{name!r} must be a list of paths, got {type(value).__name__}")
    _check_strings(body, "name", "msg", "shellcmd", "reason")
    wildcards = body.get("wildcards")
    if wildcards is not None and not isinstance(wildcards, dict | list):
        raise InvalidMessage("'wildcards' must be an object")
    _int_field(body, "threads", optional=True)
    _int_field(body, "priority", optional=True)


def _check_job_started(body: dict[str, Any]) -> None:
    jobs = body.get("jobs")
    items = jobs if isinstance(jobs, list) else [jobs]
    if len(items) > MAX_JOBS_PER_MESSAGE:
        raise TooMany(
            f"'jobs' lists {len(items):,} job ids; one message may list at most "
            f"{MAX_JOBS_PER_MESSAGE:,}"
        )
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or not _fits(item):
            raise InvalidMessage(f"'jobs' must be a list of integer job ids, got {jobs!r}")


def _check_progress(body: dict[str, Any]) -> None:
    for name in ("done", "total"):
        value = _int_field(body, name)
        if value is not None and value < 0:
            raise InvalidMessage(f"{name!r} must not be negative")


VALIDATORS: dict[str, Callable[[dict[str, Any]], None]] = {
    Level.JOB_INFO: _check_job_info,
    Level.JOB_STARTED: _check_job_started,
    Level.JOB_FINISHED: _check_job_finished,
    Level.JOB_ERROR: _check_job_error,
    Level.SHELLCMD: _check_optional_job,
    Level.PROGRESS: _check_progress,
    Level.RUN_INFO: facts.check_stats,
    Level.RULEGRAPH: facts.check_rulegraph,
}


@dataclass(frozen=True)
class Registration:
    """What /create_workflow was asked for."""

    name: str | None = None
    command: str | None = None
    workdir: str | None = None
    snakefile: str | None = None
    host: str | None = None
    user: str | None = None
    snakemake_version: str | None = None
    client: str | None = None
    # --wms-monitor-arg id=N (Snakemake 7/8): report into this existing workflow.
    workflow_id: int | None = None

    def __post_init__(self) -> None:
        if self.name is not None and len(self.name) > MAX_NAME_CHARS:
            raise InvalidMessage(
                f"the workflow id is {len(self.name)} characters long; "
                f"at most {MAX_NAME_CHARS} are allowed"
            )

    @property
    def dry_run(self) -> bool:
        if not self.command:
            return False
        try:
            words = shlex.split(self.command)
        except ValueError:
            words = self.command.split()
        return any(w in ("-n", "--dry-run", "--dryrun", "--dry_run") for w in words)
