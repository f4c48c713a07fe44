"""How the terminal client shows workflows: a table for `list`, a block for `show`, and the
same block redrawn in place for `watch`. Plain text when the output is not a terminal or
NO_COLOR is set."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..shapes import first_error_line
from ..status import JobStatus, WorkflowStatus

COLOURS = {"done": "32", "running": "34", "failed": "31", "muted": "2"}
STATUS_COLOURS = {
    WorkflowStatus.DONE: "32",
    WorkflowStatus.RUNNING: "34",
    WorkflowStatus.ERROR: "31",
    WorkflowStatus.CANCELLED: "33",
    WorkflowStatus.STALE: "2",
}
BAR_WIDTH = 28


class Style:
    def __init__(self, colour: bool) -> None:
        self.colour = colour

    def paint(self, text: str, code: str | None) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.colour and code and text else text

    def status(self, status: str) -> str:
        return self.paint(status, STATUS_COLOURS.get(WorkflowStatus(status)))

    def bar(self, done: int, running: int, failed: int, total: int) -> str:
        """[#####>>x-----]: done, running, failed shares of the total."""
        whole = max(total, done + running + failed, 1)
        cells = []
        used = 0
        for count, char, colour in (
            (done, "#", "done"),
            (running, ">", "running"),
            (failed, "x", "failed"),
        ):
            width = min(BAR_WIDTH - used, round(BAR_WIDTH * count / whole))
            if count and not width and used < BAR_WIDTH:
                width = 1  # a failure is never rounded away
            cells.append(self.paint(char * width, COLOURS[colour]))
            used += width
        return "[" + "".join(cells) + "-" * (BAR_WIDTH - used) + "]"


def ago(iso: str | None, now: datetime | None = None) -> str:
    if not iso:
        return "-"
    seconds = ((now or datetime.now(UTC)) - datetime.fromisoformat(iso)).total_seconds()
    if seconds < 10:
        return "just now"
    return f"{duration(seconds)} ago"


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {seconds}s"
    return f"{seconds}s"


def workflow_table(workflows: list[dict[str, Any]], style: Style) -> list[str]:
    if not workflows:
        return ["no workflows"]
    rows = [("ID", "STATUS", "JOBS", "FAILED", "STARTED", "LAST EVENT", "NAME")]
    for wf in workflows:
        rows.append(
            (
                str(wf["id"]),
                wf["status"],
                f"{wf['jobs_done']}/{wf['jobs_total']}",
                str(wf.get("jobs_failed") or 0),
                ago(wf["started_at"]),
                ago(wf["updated_at"]),
                wf["name"],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for number, row in enumerate(rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        if number:
            cells[1] = style.status(row[1]) + " " * (widths[1] - len(row[1]))
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return lines


def workflow_block(
    wf: dict[str, Any],
    rules: list[dict[str, Any]],
    failed: list[dict[str, Any]],
    style: Style,
) -> list[tuple[str, str]]:
    """A workflow, its rules with bars, and its failed jobs with their error line: each line
    with a key naming what it shows ("head", "facts", "rule:<name>", "job:<id>", "error"),
    so that `watch` can tell which changed."""
    progress = f"{wf['jobs_done']}/{wf['jobs_total']} jobs"
    if wf.get("jobs_failed"):
        progress += ", " + style.paint(f"{wf['jobs_failed']} failed", COLOURS["failed"])
    left = wf.get("eta_seconds")
    head = f"{wf['name']} #{wf['id']}  {style.status(wf['status'])}  {progress}"
    if wf["status"] == WorkflowStatus.RUNNING and isinstance(left, int | float):
        head += f"  about {duration(left)} left"
    facts = [f"started {ago(wf['started_at'])}"]
    if wf.get("finished_at"):
        took = datetime.fromisoformat(wf["finished_at"]) - datetime.fromisoformat(wf["started_at"])
        facts.append(f"took {duration(took.total_seconds())}")
    else:
        facts.append(f"last event {ago(wf['updated_at'])}")
    if wf.get("workdir"):
        facts.append(wf["workdir"])
    lines = [("head", head), ("facts", style.paint(" · ".join(facts), COLOURS["muted"]))]
    shown = [rule for rule in rules if rule["total"] or rule.get("planned")]
    if shown:
        width = max(len(rule["rule"] or "(unnamed)") for rule in shown)
        for rule in shown:
            whole = rule["planned"] if rule.get("planned") is not None else rule["total"]
            bar = style.bar(rule["done"], rule["running"], rule["error"], whole)
            line = f"  {(rule['rule'] or '(unnamed)').ljust(width)}  {bar}  {rule['done']}/{whole}"
            if rule["running"]:
                line += f"  {rule['running']} running"
            if rule["error"]:
                line += "  " + style.paint(f"{rule['error']} failed", COLOURS["failed"])
            lines.append((f"rule:{rule['rule']}", line))
    for job in failed:
        if job["status"] != JobStatus.ERROR:
            continue
        wildcards = ",".join(f"{k}={v}" for k, v in (job.get("wildcards") or {}).items())
        reason = job.get("error_line") or ""
        where = " ".join(
            part for part in (str(job["jobid"]), job.get("rule") or "", wildcards) if part
        )
        text = style.paint(f"  failed {where}: {reason}".rstrip(": "), COLOURS["failed"])
        lines.append((f"job:{job['jobid']}", text))
    if wf.get("error") and wf["status"] == WorkflowStatus.ERROR:
        first = first_error_line(wf["error"])
        lines.append(("error", style.paint(f"  error: {first}", COLOURS["failed"])))
    return lines
