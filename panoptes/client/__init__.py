"""The terminal client, for SSH sessions and scripts: `panoptes list`, `panoptes show <id>`
and `panoptes watch <id>` talk to a server's REST API and live feed (--url, PANOPTES_URL;
the token from PANOPTES_TOKEN). `--json` prints what the server answered, for scripts."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any, TextIO

from ..config import ClientConfig, ConfigError
from ..status import WorkflowStatus
from .api import ClientError, ConnectionClosed, Server
from .render import Style, workflow_block, workflow_table

ENDED = {WorkflowStatus.DONE, WorkflowStatus.ERROR, WorkflowStatus.CANCELLED}
FAILED_SHOWN = 20
RETRY_DELAYS = (0.5, 1, 2, 5)
ETA_EVERY_SECONDS = 5.0


def style_for(out: TextIO) -> Style:
    return Style(colour=out.isatty() and not os.environ.get("NO_COLOR"))


def list_workflows(
    config: ClientConfig, status: str | None, limit: int, as_json: bool, out: TextIO
) -> int:
    answer = Server(config).get("/api/workflows", status=status, limit=limit)
    if as_json:
        print(json.dumps(answer["workflows"], indent=2), file=out)
    else:
        for line in workflow_table(answer["workflows"], style_for(out)):
            print(line, file=out)
    return 0


class Run:
    """What the client knows of one workflow: itself, its rules, its failed jobs."""

    def __init__(self, server: Server, workflow_id: int) -> None:
        self.server = server
        self.workflow_id = workflow_id
        self.workflow: dict[str, Any] = {}
        self.rules: dict[str, dict[str, Any]] = {}
        self.failed: dict[int, dict[str, Any]] = {}
        self._eta_asked = 0.0

    def fetch(self) -> None:
        base = f"/api/workflow/{self.workflow_id}"
        self.workflow = self.server.get(base)["workflow"]
        self._eta_asked = time.monotonic()
        self.rules = {rule["rule"]: rule for rule in self.server.get(f"{base}/rules")["rules"]}
        jobs = self.server.get(f"{base}/jobs", status="Error", limit=FAILED_SHOWN)["jobs"]
        self.failed = {job["jobid"]: job for job in jobs}

    def apply(self, message: dict[str, Any]) -> None:
        """A feed event: each carries the whole current object (docs/feed.md)."""
        if "workflow" in message:
            # The feed's workflow has no estimate: the last one asked for stays (refresh_eta).
            eta = self.workflow.get("eta_seconds")
            self.workflow = {**message["workflow"], "eta_seconds": eta}
        elif message["type"] == "rule.updated":
            self.rules[message["rule"]["rule"]] = message["rule"]
        elif message["type"] == "job.updated":
            job = message["job"]
            if job["status"] == "Error":
                self.failed[job["jobid"]] = job
            else:
                self.failed.pop(job["jobid"], None)

    def refresh_eta(self, every: float = ETA_EVERY_SECONDS) -> None:
        """Ask the API for the time left again, at most once every `every` seconds."""
        if time.monotonic() - self._eta_asked < every or self.ended:
            return
        self._eta_asked = time.monotonic()
        try:
            fresh = self.server.get(f"/api/workflow/{self.workflow_id}")["workflow"]
        except ClientError:
            return  # the feed tells whether the server went away; the estimate can wait
        self.workflow["eta_seconds"] = fresh.get("eta_seconds")

    @property
    def ended(self) -> bool:
        return self.workflow.get("status") in ENDED

    def lines(self, style: Style) -> list[tuple[str, str]]:
        failed = sorted(self.failed.values(), key=lambda job: job["jobid"])[:FAILED_SHOWN]
        return workflow_block(self.workflow, list(self.rules.values()), failed, style)

    def summary(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "rules": list(self.rules.values()),
            "failed_jobs": sorted(self.failed.values(), key=lambda job: job["jobid"]),
        }


def show(config: ClientConfig, workflow_id: int, as_json: bool, out: TextIO) -> int:
    run = Run(Server(config), workflow_id)
    run.fetch()
    if as_json:
        print(json.dumps(run.summary(), indent=2), file=out)
    else:
        for _, line in run.lines(style_for(out)):
            print(line, file=out)
    return 0


def exit_code(run: Run) -> int:
    """0 for a run that ended Done, 1 for one that failed, was cancelled or deleted."""
    return 0 if run.workflow.get("status") == WorkflowStatus.DONE else 1


class Screen:
    """On a terminal, the workflow's block redrawn in place; otherwise a line per change."""

    def __init__(self, out: TextIO, as_json: bool) -> None:
        self.out = out
        self.as_json = as_json
        self.tty = out.isatty() and not as_json
        self.style = style_for(out)
        self.drawn = 0
        self.said: dict[str, str] = {}

    def draw(self, run: Run, last: bool = False) -> None:
        if self.as_json:
            return
        lines = run.lines(self.style)
        if self.tty:
            if self.drawn:
                self.out.write(f"\x1b[{self.drawn}F\x1b[J")
            self.out.write("\n".join(text for _, text in lines) + "\n")
            self.drawn = len(lines)
        elif last:
            self.out.write("\n".join(text for _, text in lines) + "\n")
        else:
            # A log for pipes: a line, time-stamped, for each thing that changed. The facts
            # line says how long ago things were: it changes by itself, and is left out.
            stamp = time.strftime("%H:%M:%S")
            for key, text in lines:
                if key != "facts" and self.said.get(key) != text:
                    self.said[key] = text
                    self.out.write(f"{stamp} {text.strip()}\n")
        self.out.flush()

    def event(self, message: dict[str, Any]) -> None:
        if self.as_json:
            self.out.write(json.dumps(message) + "\n")
            self.out.flush()


async def watch(config: ClientConfig, workflow_id: int, as_json: bool, out: TextIO) -> int:
    """Follow a workflow on the feed until it ends; after a disconnect, resume from the last
    event seen (`?since=`), so nothing is missed."""
    server = Server(config)
    run = Run(server, workflow_id)
    screen = Screen(out, as_json)
    since: int | None = None
    failures = 0
    while True:
        reason = "the server closed it"  # a clean close (1001: the server stops) ends the loop
        try:
            async for message in server.feed(workflow_id, since):
                failures = 0
                kind = message["type"]
                if kind == "hello":
                    # The first connection, or a server whose log is behind ours (its
                    # database was replaced): take the state afresh, then follow from here.
                    if since is None or message["head"] < since:
                        run.fetch()
                        since = message["head"]
                        screen.draw(run, last=run.ended)
                        if run.ended:
                            return exit_code(run)
                    continue
                if "seq" not in message:
                    continue  # ping, resync
                since = max(since or 0, message["seq"])
                screen.event(message)
                if kind == "workflow.deleted":
                    print(f"panoptes: workflow {workflow_id} was deleted", file=sys.stderr)
                    return 1
                run.apply(message)
                if run.ended:
                    run.fetch()  # the final counts and failed jobs, as the API has them
                    screen.draw(run, last=True)
                    return exit_code(run)
                run.refresh_eta()
                screen.draw(run)
        except (ConnectionClosed, OSError) as exc:
            reason = str(exc) or type(exc).__name__
        delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
        failures += 1
        print(f"panoptes: feed lost ({reason}); reconnecting in {delay}s", file=sys.stderr)
        await asyncio.sleep(delay)


def run_command(args: Any) -> int:
    """`panoptes list|show|watch` (cli.py parses the flags)."""
    out = sys.stdout
    try:
        config = ClientConfig.from_env(url=args.url)
        if args.command == "list":
            return list_workflows(config, args.status, args.limit, args.json, out)
        if args.command == "show":
            return show(config, args.workflow_id, args.json, out)
        # Before following, the workflow must exist and the server answer.
        Server(config).get(f"/api/workflow/{args.workflow_id}")
        return asyncio.run(watch(config, args.workflow_id, args.json, out))
    except (ClientError, ConfigError) as exc:
        print(f"panoptes: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


__all__ = ["ClientError", "run_command", "watch"]
