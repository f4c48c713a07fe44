"""Turning Snakemake's log records into panoptes messages (docs/wire.md of panoptes).

Nothing here touches the network. The only input besides the records is the two readers a
:class:`Translator` is given for log tails and benchmark files, so the translation can be run
and tested on its own.
"""

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from snakemake_interface_logger_plugins.common import LogEvent

Message = dict[str, Any]
LogReader = Callable[[Sequence[str]], list[dict[str, Any]]]
BenchmarkReader = Callable[[str], dict[str, float | int] | None]

#: Error texts are cut to this many characters (the server keeps 64 KiB of them).
MAX_ERROR_CHARS = 64 * 1024
#: Job ids in one ``job_started`` message (the server refuses more).
MAX_STARTED_JOBS = 10_000
#: Messages held back before the run starts (see Translator._hold).
MAX_HELD = 100
_EXIT_STATUS = re.compile(r"exit status (-?\d+)")
_HIDDEN_RESOURCES = frozenset({"_cores", "_nodes"})


def jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` as plain JSON types; Snakemake's lists and files become lists and strings."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if depth > 8:
        return str(value)
    if isinstance(value, Mapping):
        return {str(key): jsonable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(item, depth + 1) for item in value]
    return str(value)


def resources_dict(resources: Any) -> dict[str, Any]:
    """A job's resources by name, without Snakemake's internal ``_cores`` and ``_nodes``."""
    if resources is None:
        return {}
    if isinstance(resources, Mapping):
        pairs: Iterable[tuple[Any, Any]] = resources.items()
    elif hasattr(resources, "_names"):
        # Snakemake's Namedlist (Resources): items() maps each name to its value.
        try:
            pairs = list(resources.items())
        except Exception:
            pairs = zip(resources._names, resources, strict=False)
    else:
        return {}
    return {
        str(name): jsonable(value) for name, value in pairs if str(name) not in _HIDDEN_RESOURCES
    }


def as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def str_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    try:
        return [str(item) for item in value]
    except TypeError:
        return [str(value)]


def record_text(record: logging.LogRecord) -> str | None:
    """The record's message text, None for Snakemake's message-less records."""
    if record.msg is None or record.msg == "None":
        return None
    try:
        return record.getMessage()
    except Exception:
        return str(record.msg)


def exit_code(text: str | None) -> int | None:
    """The exit status Snakemake reports in an error text, e.g. "non-zero exit status 3"."""
    found = _EXIT_STATUS.findall(text or "")
    return int(found[-1]) if found else None


def rulegraph_message(graph: Any) -> Message | None:
    """Snakemake's ``{"nodes", "links"}`` rule graph as ``{"rules", "edges"}``.

    In Snakemake a link's ``source`` is the rule whose output the ``target`` rule reads
    (Workflow.log_rulegraph), so an edge goes from ``source`` to ``target``: the producer first.
    """
    if not isinstance(graph, Mapping):
        return None
    nodes = [n.get("rule") for n in graph.get("nodes") or [] if isinstance(n, Mapping)]
    names = [str(n) for n in nodes]
    edges: list[list[str]] = []
    for link in graph.get("links") or []:
        edge = _edge(link, names)
        if edge is not None and edge not in edges:
            edges.append(edge)
    return {"level": "rulegraph", "rules": list(dict.fromkeys(names)), "edges": edges}


def _edge(link: Any, names: Sequence[str]) -> list[str] | None:
    if not isinstance(link, Mapping):
        return None
    ends = []
    for side in ("source", "target"):
        name = link.get(f"{side}rule")
        index = as_int(link.get(side))
        if name is None and index is not None and 0 <= index < len(names):
            name = names[index]
        if name is None:
            return None
        ends.append(str(name))
    return ends


class Outcome:
    """Whether the run failed, from the errors and job results seen so far.

    An ERROR record right before a JOB_ERROR is that job's error ("consumed"); any other ERROR
    fails the run. A job fails the run if its latest attempt failed: a JOB_FINISHED after a
    retry clears it.
    """

    def __init__(self) -> None:
        self._pending: list[str] = []  # ERROR texts since the last JOB_ERROR
        self._unconsumed: list[str] = []
        self._failed: dict[int, str] = {}  # job id -> rule, latest attempt failed

    def error(self, text: str) -> None:
        self._pending.append(text)

    def job_failed(self, jobid: int, rule: str) -> str | None:
        """Record a failed attempt; returns the error text it consumed, if any."""
        self._failed[jobid] = rule
        consumed = self._pending.pop() if self._pending else None
        self._unconsumed.extend(self._pending)
        self._pending.clear()
        return consumed

    def job_finished(self, jobid: int) -> None:
        self._failed.pop(jobid, None)

    def final_message(self) -> Message:
        unconsumed = self._unconsumed + self._pending
        if unconsumed:
            return {"level": "workflow_error", "msg": unconsumed[-1]}
        if self._failed:
            return {"level": "workflow_error", "msg": self._failed_summary()}
        return {"level": "workflow_success"}

    def _failed_summary(self) -> str:
        by_rule: dict[str, list[int]] = {}
        for jobid, rule in sorted(self._failed.items()):
            by_rule.setdefault(rule or "?", []).append(jobid)
        count = len(self._failed)
        parts = [
            f"{rule} ({'jobs' if len(ids) > 1 else 'job'} {', '.join(map(str, ids))})"
            for rule, ids in by_rule.items()
        ]
        return f"{count} {'jobs' if count > 1 else 'job'} failed: {', '.join(parts)}"


class Translator:
    """Translates records in the order Snakemake logs them, remembering what later ones need.

    ``read_logs`` is None when log contents must not be sent.
    """

    def __init__(
        self,
        read_logs: LogReader | None,
        read_benchmark: BenchmarkReader,
        print_shellcmds: bool = False,
    ) -> None:
        self._read_logs = read_logs
        self._read_benchmark = read_benchmark
        self._print_shellcmds = print_shellcmds
        self._rules: dict[int, str] = {}
        self._logs: dict[int, list[str]] = {}
        self._benchmarks: dict[int, str] = {}
        self._last_job_info: tuple[int, str | None] | None = None
        self._held: list[Message] = []
        self.started = False
        self.snakefile_main: str | None = None
        self.outcome = Outcome()
        self._handlers: dict[LogEvent, Callable[[logging.LogRecord], list[Message]]] = {
            LogEvent.WORKFLOW_STARTED: self._workflow_started,
            LogEvent.RULEGRAPH: self._rulegraph,
            LogEvent.RUN_INFO: self._run_info,
            LogEvent.JOB_INFO: self._job_info,
            LogEvent.JOB_STARTED: self._job_started,
            LogEvent.JOB_FINISHED: self._job_finished,
            LogEvent.JOB_ERROR: self._job_error,
            LogEvent.SHELLCMD: self._shellcmd,
            LogEvent.PROGRESS: self._progress,
            LogEvent.ERROR: self._error,
        }

    def translate(self, record: logging.LogRecord) -> list[Message]:
        """The messages to send for one record, in order (often none)."""
        handler = self._handlers.get(getattr(record, "event", None))  # type: ignore[arg-type]
        if handler is None:
            return []
        messages = handler(record)
        if self.started:
            return messages
        return self._hold(messages)

    def final_message(self) -> Message | None:
        """``workflow_success`` or ``workflow_error``; None if no run ever started."""
        return self.outcome.final_message() if self.started else None

    def _hold(self, messages: list[Message]) -> list[Message]:
        # Commands that never run the workflow (--dag, --summary, --lint, ...) also build the
        # DAG and log its rule graph; sending it would register a run that never happens. So
        # messages wait for WORKFLOW_STARTED, or an error, which marks the start of a run.
        self._held.extend(messages[: MAX_HELD - len(self._held)])
        return []

    def _release(self) -> list[Message]:
        self.started = True
        held, self._held = self._held, []
        return held

    def _workflow_started(self, record: logging.LogRecord) -> list[Message]:
        main = getattr(record, "snakefile_main", None) or getattr(record, "snakefile", None)
        self.snakefile_main = str(main) if main else None
        text = f"Workflow started: {main}" if main else "Workflow started"
        return [*self._release(), {"level": "info", "msg": text}]

    def _rulegraph(self, record: logging.LogRecord) -> list[Message]:
        message = rulegraph_message(getattr(record, "rulegraph", None))
        return [message] if message else []

    def _run_info(self, record: logging.LogRecord) -> list[Message]:
        stats = getattr(record, "stats", None)
        if not isinstance(stats, Mapping) or as_int(stats.get("total")) is None:
            return []
        counts = {str(k): n for k, v in stats.items() if (n := as_int(v)) is not None}
        return [
            # What 0.3.0 sent and older servers read the planned total from.
            {"level": "progress", "done": 0, "total": counts["total"]},
            {"level": "run_info", "msg": record_text(record), "stats": counts},
        ]

    def _job_info(self, record: logging.LogRecord) -> list[Message]:
        jobid = as_int(getattr(record, "jobid", None)) or 0
        rule = str(getattr(record, "rule_name", "") or "")
        logs = str_list(getattr(record, "log", None))
        benchmark = getattr(record, "benchmark", None)
        shellcmd = getattr(record, "shellcmd", None)
        self._rules[jobid] = rule
        self._logs[jobid] = logs
        if benchmark:
            self._benchmarks[jobid] = str(benchmark)
        else:
            self._benchmarks.pop(jobid, None)
        self._last_job_info = (jobid, shellcmd)
        return [
            {
                "level": "job_info",
                "jobid": jobid,
                "name": rule,
                "msg": jsonable(getattr(record, "rule_msg", None)),
                "input": str_list(getattr(record, "input", None)),
                "output": str_list(getattr(record, "output", None)),
                "log": logs,
                "wildcards": jsonable(getattr(record, "wildcards", None) or {}),
                "is_checkpoint": bool(getattr(record, "is_checkpoint", False)),
                "shellcmd": jsonable(shellcmd),
                "threads": jsonable(getattr(record, "threads", None)),
                "priority": jsonable(getattr(record, "priority", None)),
                "reason": jsonable(getattr(record, "reason", None)),
                "resources": resources_dict(getattr(record, "resources", None)),
            }
        ]

    def _job_started(self, record: logging.LogRecord) -> list[Message]:
        jobs = getattr(record, "jobs", None)
        ids = [as_int(jobs)] if isinstance(jobs, int) else [as_int(j) for j in jobs or []]
        valid = [j for j in ids if j is not None]
        return [
            {"level": "job_started", "jobs": valid[i : i + MAX_STARTED_JOBS]}
            for i in range(0, len(valid), MAX_STARTED_JOBS)
        ]

    def _job_finished(self, record: logging.LogRecord) -> list[Message]:
        jobid = as_int(getattr(record, "job_id", getattr(record, "jobid", None)))
        if jobid is None:
            return []
        self.outcome.job_finished(jobid)
        message: Message = {"level": "job_finished", "jobid": jobid}
        path = self._benchmarks.get(jobid)
        benchmark = self._read_benchmark(path) if path else None
        if benchmark:
            message["benchmark"] = benchmark
        return [message]

    def _job_error(self, record: logging.LogRecord) -> list[Message]:
        jobid = as_int(getattr(record, "jobid", None)) or 0
        rule = str(getattr(record, "rule_name", None) or self._rules.get(jobid, ""))
        consumed = self.outcome.job_failed(jobid, rule)
        # An executor may pass its own message for the failure (JOB_ERROR's rule_msg).
        texts = [t for t in (consumed, getattr(record, "rule_msg", None)) if t]
        error = "\n".join(str(t) for t in texts)[:MAX_ERROR_CHARS] or None
        message: Message = {
            "level": "job_error",
            "jobid": jobid,
            "name": rule,
            "error": error,
            "exit_code": exit_code(error),
        }
        if self._read_logs is not None:
            paths = str_list(getattr(record, "log", None)) or self._logs.get(jobid, [])
            message["logs"] = self._read_logs(paths)
        return [message]

    def _shellcmd(self, record: logging.LogRecord) -> list[Message]:
        # 0.3.0 let Snakemake's default filter drop these unless --printshellcmds; keep that.
        shellcmd = getattr(record, "shellcmd", None)
        if not self._print_shellcmds or not shellcmd:
            return []
        jobid = as_int(getattr(record, "jobid", None))
        if jobid is None and self._last_job_info and self._last_job_info[1] == shellcmd:
            # Snakemake logs a job's SHELLCMD right after its JOB_INFO, without the job id.
            jobid = self._last_job_info[0]
        return [{"level": "shellcmd", "jobid": jobid, "msg": str(shellcmd)}]

    def _progress(self, record: logging.LogRecord) -> list[Message]:
        done = as_int(getattr(record, "done", 0)) or 0
        total = as_int(getattr(record, "total", 0)) or 0
        return [{"level": "progress", "done": done, "total": total}]

    def _error(self, record: logging.LogRecord) -> list[Message]:
        exception = getattr(record, "exception", None)
        text = (record_text(record) or str(exception or "error"))[:MAX_ERROR_CHARS]
        self.outcome.error(text)
        message = {
            "level": "error",
            "msg": text,
            "exception": jsonable(exception),
            "rule": jsonable(getattr(record, "rule", None)),
            "location": jsonable(getattr(record, "location", None)),
            "traceback": jsonable(getattr(record, "traceback", None)),
        }
        return [*self._release(), message]
