"""Random and malformed client messages, through the HTTP app: never a 5xx, never a refused
message that changed anything, and the state machine's promises kept by what it accepts."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

from hypothesis import HealthCheck, event, example, given, note, settings
from hypothesis import strategies as st
from quart import Quart
from quart.typing import TestClientProtocol as Client
from sqlalchemy import func, inspect, select

from panoptes.models import Event, Job, Workflow
from panoptes.routes.bodies import _form
from panoptes.service import Service
from panoptes.status import FINISHED, JobStatus, WorkflowStatus

from .conftest import create_workflow, post_event

FUZZ = settings(
    deadline=None,
    # The app (and its database) is made once per test and shared by the examples, on
    # purpose: every property below is about one message against whatever is stored.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

KNOWN_LEVELS = [
    "job_info",
    "job_started",
    "job_finished",
    "job_error",
    "error",
    "progress",
    "shellcmd",
    "info",
    "workflow_success",
]
# Levels Snakemake sends that panoptes ignores, and made-up ones.
OTHER_LEVELS = ["debug", "dag_debug", "run_info", "resources_info", "host", "warning", ""]
INFO_TEXTS = [
    "Nothing to be done (all requested files are present and up to date).",
    "This was a dry-run (flag -n). The order of jobs does not reflect the order of execution.",
    "Complete log: .snakemake/log/x.log",
    "Workflow started",
]
REFUSALS = {400, 413, 415, 422}

# --------------------------------------------------------------------------- strategies


def mostly(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`usual` four times in five, else `odd`: most messages get far into ingest. (Hypothesis
    starts from, and shrinks towards, 0: the usual.)"""
    return st.integers(0, 4).flatmap(lambda i: odd if i == 4 else usual)


odd_text = st.sampled_from(
    ["", " ", "\x00", "a\x00b", "\ud800", "\u2028", "😀", "null", "{}", "[1]", "1e999", "-0"]
)
text = mostly(st.text(max_size=30), odd_text)
huge_text = st.sampled_from([10_000, 300_000]).map(lambda n: "é" * n)
numbers = (
    st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([0, 1, -1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1])
    # NaN and Infinity make the JSON invalid (json.dumps writes them as words).
    | mostly(st.floats(allow_nan=False, allow_infinity=False), st.floats())
)
scalars = st.none() | st.booleans() | numbers | text


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


deep = st.sampled_from([30, 100, 250, 254, 256, 300, 600, 1100]).map(nested)
junk = (
    st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
        max_leaves=10,
    )
    | deep
)
small_ids = st.integers(min_value=-3, max_value=40)
int_like = mostly(small_ids | small_ids.map(str), numbers | numbers.map(str) | junk)
paths = st.lists(text, max_size=4)

FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "jobid": int_like,
    "jobs": mostly(st.lists(small_ids, max_size=5), st.lists(int_like, max_size=5) | int_like),
    "done": int_like,
    "total": int_like,
    "name": mostly(text, junk),
    "msg": mostly(st.sampled_from(INFO_TEXTS) | text, huge_text | junk),
    "input": mostly(paths, st.lists(junk, max_size=3) | text | junk),
    "output": mostly(paths, junk),
    "log": mostly(paths, junk),
    "wildcards": mostly(st.dictionaries(text, text, max_size=4), junk),
    "shellcmd": mostly(text, huge_text | junk),
    "threads": int_like,
    "priority": int_like,
    "resources": mostly(st.dictionaries(text, text | small_ids, max_size=3), junk),
    "reason": mostly(text, junk),
    "is_checkpoint": mostly(st.booleans(), junk),
    "rule": mostly(text, junk),
    "location": junk,
    "traceback": mostly(text, junk),
    "exception": junk,
    "timestamp": mostly(st.floats(1.7e9, 2.0e9), numbers | text),
}
# The fields each level is about (see ingest.VALIDATORS and HANDLERS).
LEVEL_FIELDS = {
    "job_info": ["jobid", "name", "input", "output", "wildcards", "shellcmd", "threads"],
    "job_started": ["jobs"],
    "job_finished": ["jobid"],
    "job_error": ["jobid", "name", "shellcmd"],
    "progress": ["done", "total"],
    "shellcmd": ["jobid", "msg"],
    "info": ["msg"],
    "error": ["msg", "rule", "traceback"],
}
levels = mostly(st.sampled_from(KNOWN_LEVELS), st.sampled_from(OTHER_LEVELS) | junk)


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    """A message of a random level, mostly with that level's fields, and a few others."""
    level = draw(levels)
    names = LEVEL_FIELDS.get(level, []) if isinstance(level, str) else []
    names = [name for name in names if draw(st.integers(0, 9)) < 9]
    names += draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=3))
    message = {name: draw(FIELDS[name]) for name in names}
    if draw(st.integers(0, 19)) < 19:
        message["level"] = level
    return message


# Workflows 1 and 2 exist (see `_two_workflows`); others are unknown, out of range or not ids.
workflow_ids = mostly(st.sampled_from([1, 2, "1", "2"]), st.integers(-1, 4) | int_like)


@dataclass(frozen=True)
class Request:
    body: bytes
    content_type: str | None

    @property
    def headers(self) -> dict[str, str]:
        return {} if self.content_type is None else {"Content-Type": self.content_type}


def _json(value: Any) -> str:
    # NaN and Infinity come out as non-JSON words, which the server must refuse.
    return json.dumps(value, allow_nan=True)


@st.composite
def envelopes(draw: st.DrawFn) -> Request:
    """An /update_workflow_status request, well-formed or not, in every encoding."""
    message = draw(messages())
    # The msg field: the message as JSON text (as Snakemake sends it), or something else.
    msg = draw(st.sampled_from(["json"] * 6 + ["object"] * 2 + ["junk", "missing"]))
    envelope: dict[str, Any] = {}
    if msg == "json":
        envelope["msg"] = _json(message)
    elif msg == "object":
        envelope["msg"] = message
    elif msg == "junk":
        envelope["msg"] = draw(junk | text)
    if draw(st.integers(0, 9)) < 9:
        envelope["id"] = draw(workflow_ids)
    if draw(st.booleans()):
        envelope["timestamp"] = draw(mostly(st.just(time.asctime()), text | numbers))
    encoding = draw(st.sampled_from(["form"] * 3 + ["json", "json-untyped", "bytes"]))
    if encoding == "form":
        fields = {k: v if isinstance(v, str) else _json(v) for k, v in envelope.items()}
        # A lone surrogate goes out as the bytes it would be: invalid UTF-8.
        body = urlencode(fields, errors="surrogatepass")
        return Request(body.encode(), "application/x-www-form-urlencoded")
    if encoding in ("json", "json-untyped"):
        body = _json(draw(mostly(st.just(envelope), junk))).encode()
        return Request(body, "application/json" if encoding == "json" else None)
    content_type = draw(
        st.none()
        | st.sampled_from(
            [
                "text/plain",
                "application/json",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "application/xml",
                "application/octet-stream",
                "application/vnd.api+json",
            ]
        )
    )
    return Request(draw(st.binary(max_size=200)), content_type)


# --------------------------------------------------------------------------- the stored state


def service(app: Quart) -> Service:
    panoptes: Service = app.extensions["panoptes"]
    return panoptes


def _row(obj: Workflow | Job) -> dict[str, Any]:
    return {attr.key: getattr(obj, attr.key) for attr in inspect(type(obj)).column_attrs}


@dataclass
class Stored:
    workflows: list[dict[str, Any]]
    jobs: list[dict[str, Any]]
    events: int


async def stored(app: Quart) -> Stored:
    """Every workflow and job row, column by column, and how many events there are."""
    async with service(app).sessions() as session:
        workflows = await session.scalars(select(Workflow).order_by(Workflow.id))
        jobs = await session.scalars(select(Job).order_by(Job.id))
        events = await session.scalar(select(func.count()).select_from(Event))
        return Stored([_row(w) for w in workflows], [_row(j) for j in jobs], events or 0)


def check_invariants(state: Stored) -> None:
    """What the state machine promises of everything it stores, whatever it was sent."""
    for wf in state.workflows:
        status = WorkflowStatus(wf["status"])
        assert wf["jobs_done"] >= 0 and wf["jobs_total"] >= 0, wf
        # Only a finished run has an end; a run that failed says why.
        assert (wf["finished_at"] is not None) == (status in FINISHED), wf
        if status == WorkflowStatus.ERROR:
            assert wf["error"], wf
    for job in state.jobs:
        status = JobStatus(job["status"])
        assert job["attempt"] >= 1, job
        assert (job["finished_at"] is not None) == (status in (JobStatus.DONE, JobStatus.ERROR))
        # A job's status and attempt number are its last attempt's; one that never ran
        # (a dry run's) has no attempt yet.
        if job["attempts"]:
            last = job["attempts"][-1]
            assert (last["status"], last["attempt"]) == (status.value, job["attempt"]), job
        else:
            assert status == JobStatus.WAITING, job


async def check_response(response: Any) -> str:
    """The answer is JSON of the right shape, and never a 5xx. Returns what it says:
    "ok", "duplicate", or the error."""
    status: int = response.status_code
    text = await response.get_data(as_text=True)
    assert status < 500, text
    assert response.content_type == "application/json", (status, text)
    body = json.loads(text)
    if status == 200:
        assert body in ({"status": "ok"}, {"status": "duplicate"}), body
        outcome: str = body["status"]
        return outcome
    assert status in REFUSALS, (status, text)
    assert set(body) == {"error", "detail"}, body
    assert isinstance(body["error"], str) and body["error"], body
    assert isinstance(body["detail"], str) and body["detail"], body
    return f"{status} {body['error']}"


# --------------------------------------------------------------------------- malformed input


async def _two_workflows(client: Client) -> None:
    ids = [(await create_workflow(client, workflow_id=name))["id"] for name in ("one", "two")]
    assert ids == [1, 2]  # what `workflow_ids` generates


def form(msg: dict[str, Any], workflow_id: object = 1) -> Request:
    body = urlencode({"msg": json.dumps(msg), "id": str(workflow_id)})
    return Request(body.encode(), "application/x-www-form-urlencoded")


@settings(FUZZ, max_examples=300)
@given(request=envelopes())
@example(request=Request(b"x" * (4 * 1024 * 1024 + 1), "text/plain"))
@example(request=Request(b"", None))
# What this test found, each a 5xx before its fix:
@example(request=form({"level": "job_finished", "jobid": 2**31}))  # PostgreSQL INTEGER
@example(request=form({"level": "job_finished", "jobid": 2**63}))  # SQLite INTEGER
@example(request=form({"level": "job_started", "jobs": [2**63]}))
@example(request=form({"level": "progress", "done": 1, "total": 2**31}))
@example(request=form({"level": "info"}, workflow_id=2**63))
@example(request=form({"level": "error", "msg": "a\x00b"}))  # PostgreSQL text
@example(request=form({"level": "job_error", "jobid": 1, "name": {"a": 1}}))
@example(request=form({"level": "job_error", "jobid": 1, "shellcmd": 5}))
@example(request=form({"level": "job_info", "jobid": 1, "wildcards": nested(300)}))
@example(
    request=Request(_json({"msg": {"level": "info", "x": nested(300)}, "id": 1}).encode(), None)
)
# A lone surrogate sends the body to Python's json, which reads any integer.
@example(
    request=Request(b'{"msg": {"\\ud800": -9223372036854775809}, "id": 1}', "application/json")
)
async def test_any_message_is_stored_whole_or_refused_without_a_trace(
    client: Client, app: Quart, request: Request
) -> None:
    if not (await stored(app)).workflows:
        await _two_workflows(client)
    note(f"request: {request.content_type} {request.body[:2000]!r}")
    before = await stored(app)
    response = await client.post(
        "/update_workflow_status", data=request.body, headers=request.headers
    )
    outcome = await check_response(response)
    event(outcome)  # see them with --hypothesis-show-statistics
    after = await stored(app)
    if outcome == "ok":
        assert after.events >= before.events
        check_invariants(after)
    else:  # refused, or dropped as a duplicate: nothing changed, not even a timestamp
        assert after == before


# --------------------------------------------------------------------------- valid sequences


jobids = st.integers(min_value=0, max_value=6)
valid_messages = st.one_of(
    st.builds(lambda ids: {"level": "job_started", "jobs": ids}, st.lists(jobids, max_size=3)),
    st.builds(
        lambda jobid, rule: {"level": "job_info", "jobid": jobid, "name": rule},
        jobids,
        st.sampled_from(["a", "b"]),
    ),
    st.builds(lambda jobid: {"level": "job_finished", "jobid": jobid}, jobids),
    st.builds(lambda jobid: {"level": "job_error", "jobid": jobid, "name": "a"}, jobids),
    st.builds(
        lambda done, total: {"level": "progress", "done": done, "total": total},
        st.integers(0, 8),
        st.integers(0, 8),
    ),
)


@dataclass
class Model:
    """What ingest promises for a run of these levels (README, ingest.py), written plainly."""

    status: WorkflowStatus = WorkflowStatus.RUNNING
    jobs: dict[int, JobStatus] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)
    counts: tuple[int, int] = (0, 0)

    def start(self, jobid: int) -> None:
        previous = self.jobs.get(jobid)
        if previous == JobStatus.RUNNING:
            return
        # A new or waiting job gets its first attempt; a finished one (a retry) another.
        retried = previous in (JobStatus.DONE, JobStatus.ERROR)
        self.attempts[jobid] = self.attempts.get(jobid, 0) + 1 if retried else 1
        self.jobs[jobid] = JobStatus.RUNNING

    def end(self, jobid: int, status: JobStatus) -> None:
        self.attempts[jobid] = max(self.attempts.get(jobid, 0), 1)
        self.jobs[jobid] = status

    def apply(self, msg: dict[str, Any]) -> None:
        level = msg["level"]
        if level == "job_started":
            for jobid in msg["jobs"]:
                self.start(jobid)
        elif level == "job_info":
            # The Snakemake 9 plugin's job_info alone describes a job; it runs once started.
            if msg["jobid"] not in self.jobs:
                self.jobs[msg["jobid"]] = JobStatus.WAITING
                self.attempts[msg["jobid"]] = 0
        elif level in ("job_finished", "job_error"):
            # A job's failure leaves the run going (--keep-going): only its end decides.
            self.end(msg["jobid"], JobStatus.DONE if level == "job_finished" else JobStatus.ERROR)
        elif level == "progress" and self.status != WorkflowStatus.DONE:
            self.counts = (msg["done"], msg["total"])
            if self.status == WorkflowStatus.RUNNING and 0 < msg["total"] <= msg["done"]:
                self.status = WorkflowStatus.DONE
        elif level == "workflow_success" and self.status == WorkflowStatus.RUNNING:
            for jobid, status in list(self.jobs.items()):
                if status in (JobStatus.RUNNING, JobStatus.WAITING):
                    self.end(jobid, JobStatus.DONE)
            done = sum(status == JobStatus.DONE for status in self.jobs.values())
            self.counts = (done, len(self.jobs))
            self.status = WorkflowStatus.DONE

    @property
    def failed(self) -> int:
        return sum(status == JobStatus.ERROR for status in self.jobs.values())


@settings(FUZZ, max_examples=80)
@given(
    sequence=st.lists(valid_messages, max_size=14),
    success=st.booleans(),
)
async def test_valid_runs_keep_jobs_and_counts_consistent(
    client: Client, app: Quart, sequence: list[dict[str, Any]], success: bool
) -> None:
    workflow_id = (await create_workflow(client))["id"]
    model = Model()
    for msg in [*sequence, *([{"level": "workflow_success"}] if success else [])]:
        response = await post_event(client, workflow_id, msg)
        assert response.status_code == 200, await response.get_data(as_text=True)
        model.apply(msg)
    wf = (await (await client.get(f"/api/workflow/{workflow_id}")).get_json())["workflow"]
    listed = await client.get(f"/api/workflow/{workflow_id}/jobs", query_string={"limit": 1000})
    jobs = {job["jobid"]: job for job in (await listed.get_json())["jobs"]}
    assert {j: job["status"] for j, job in jobs.items()} == model.jobs
    # A job that only waits has no attempt yet, and is on its first.
    assert {j: job["attempt"] for j, job in jobs.items()} == {
        j: max(n, 1) for j, n in model.attempts.items()
    }
    assert {j: len(job["attempts"]) for j, job in jobs.items()} == model.attempts
    assert wf["status"] == model.status
    assert wf["jobs_failed"] == model.failed
    assert (wf["jobs_done"], wf["jobs_total"]) == model.counts
    check_invariants(await stored(app))
    # Per-rule progress agrees with the jobs, and the feed's last word on each rule with both.
    rules = (await (await client.get(f"/api/workflow/{workflow_id}/rules")).get_json())["rules"]
    assert rules == rule_progress(list(jobs.values()))
    told = await last_rule_events(app, workflow_id)
    assert {name: told[name] for name in told if told[name]["total"]} == {
        rule["rule"]: rule for rule in rules
    }


def rule_progress(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """/api/workflow/<id>/rules, worked out from the jobs (listed in the order they came)."""
    rules: dict[str, dict[str, Any]] = {}
    for job in jobs:
        name = job["rule"] or ""
        entry = rules.setdefault(
            name,
            {
                "rule": name,
                "planned": None,
                **{"total": 0, "done": 0, "running": 0, "error": 0, "waiting": 0},
            },
        )
        entry[job["status"].lower()] += 1
        entry["total"] += 1
    return list(rules.values())  # in pipeline order: jobs come in the order they came


async def last_rule_events(app: Quart, workflow_id: int) -> dict[str, dict[str, Any]]:
    """The counts the last rule.updated event of each rule told the feed."""
    async with service(app).sessions() as session:
        events = await session.scalars(
            select(Event)
            .where(Event.workflow_id == workflow_id, Event.type == "rule.updated")
            .order_by(Event.seq)
        )
        return {event.payload["rule"]["rule"]: event.payload["rule"] for event in events}


# The characters a form decoder can trip on: escapes (in both cases, cut short, or of bytes
# that are not UTF-8), separators, text beyond ASCII, and the backslashes and x of the
# escapes bodies._unquote has its codec decode.
FORM_TEXT = st.text(
    alphabet=st.sampled_from('%%%+&&==2255aAfFgGcCxXuUN{}":, \\\x00é☃'), max_size=40
)


@settings(max_examples=2000, deadline=None)
@given(text=FORM_TEXT | st.text(max_size=40))
@example(text="%2522")  # an escaped "%" followed by what would be an escape
@example(text="%%22&%2B+%2b")
@example(text="a=%7B%22x%22%3a1%7d&a=2&b&=c")
@example(text="a=\\%41\\x41\\u0041\\N%7BSNOWMAN%7D%5c%5C")
def test_form_bodies_decode_as_urllib_decodes_them(text: str) -> None:
    expected = {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}
    assert _form(text.encode()) == expected
