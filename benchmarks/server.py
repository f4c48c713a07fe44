"""What the benchmarks share: a real panoptes process on a free port, read from outside.

Like tests/conftest.py's LiveServer, plus what the benchmarks measure: memory and CPU from
/proc, the subscriber gauge from /metrics and the stored events from the SQLite file.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
HERE = Path(__file__).resolve().parent
PANOPTES_APP = "panoptes.app:create_app()"
BARE_APP = "bare_asgi:app"  # benchmarks/bare_asgi.py
# The servers `python -m panoptes` runs on (PANOPTES_SERVER). Written here, not imported:
# the benchmarks also run against older commits (PYTHONPATH), which may not have it.
PANOPTES_SERVERS = ("uvicorn", "hypercorn")


def form_body(workflow_id: int, msg: dict[str, Any], stamp: str | None = None) -> str:
    """One /update_workflow_status body, as the Snakemake 9 plugin posts it."""
    fields = {"msg": json.dumps(msg), "timestamp": stamp or time.asctime(), "id": str(workflow_id)}
    return urlencode(fields)


def server_command(http: str, app: str, port: int, workers: int) -> list[str]:
    """`http` serving `app` on its own command line, with the settings panoptes uses:
    uvloop, a backlog of 2048, no websocket compression or protocol pings, `workers`
    processes."""
    factory = app == PANOPTES_APP
    target = "panoptes.app:create_app" if factory else app
    if http == "hypercorn":
        command = [sys.executable, "-m", "hypercorn", "--workers", str(workers)]
        command += ["--worker-class", "uvloop", "--backlog", "2048"]
        return [*command, "--bind", f"127.0.0.1:{port}", app]
    if http == "uvicorn":
        command = [sys.executable, "-m", "uvicorn", "--workers", str(workers), "--loop", "uvloop"]
        command += ["--http", "httptools", "--ws", "websockets-sansio", "--backlog", "2048"]
        command += ["--ws-per-message-deflate", "false", "--ws-ping-interval", "86400"]
        command += ["--no-access-log", "--no-proxy-headers", "--host", "127.0.0.1"]
        command += ["--port", str(port), *(["--factory"] if factory else []), target]
        return command
    if http == "granian":
        command = [sys.executable, "-m", "granian", "--interface", "asgi", "--loop", "uvloop"]
        command += ["--workers", str(workers), "--backlog", "2048", "--no-access-log"]
        command += ["--host", "127.0.0.1", "--port", str(port)]
        return [*command, *(["--factory"] if factory else []), target]
    raise ValueError(f"unknown HTTP server {http!r}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A real panoptes process, like tests/conftest.py's LiveServer."""

    db: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    # More than one: Hypercorn's own worker processes (`hypercorn --workers N`), which share
    # live events through PANOPTES_BROADCAST_URL, as README's "Several processes" shows.
    workers: int = 1
    # Another database than the SQLite file `db` (whose name then only places the log).
    db_url: str | None = None
    # What the server serves: panoptes, or BARE_APP (the HTTP server alone, storing nothing).
    app: str = PANOPTES_APP
    # The HTTP server: uvicorn or hypercorn (`panoptes` runs on either: PANOPTES_SERVER),
    # or granian (run as its own command).
    http: str = "uvicorn"
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 60.0) -> Server:
        log = self.db.with_suffix(".log").open("ab")
        database = self.db_url or str(self.db.resolve())  # the server runs in HERE
        env = {**os.environ, **self.env}
        if self.workers > 1 or self.app != PANOPTES_APP or self.http not in PANOPTES_SERVERS:
            command = server_command(self.http, self.app, self.port, self.workers)
            env["PANOPTES_DB_URL"] = database
        else:
            command = [sys.executable, "-m", "panoptes", "--port", str(self.port)]
            command += ["--db", database]
            env["PANOPTES_SERVER"] = self.http
        self.process = subprocess.Popen(
            command,
            env=env,
            cwd=HERE,  # where hypercorn finds bare_asgi
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.app} exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/api/service-info", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.app} did not start:\n{self.log()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.db.with_suffix(".log").read_text(errors="replace")

    def subscribers(self) -> str:
        """What the server's /metrics says about its open feed connections."""
        try:
            text = httpx.get(f"{self.url}/metrics", timeout=10).text
        except httpx.HTTPError as exc:
            return f"n/a ({exc})"
        for line in text.splitlines():
            if line.startswith("panoptes_websocket_subscribers "):
                return line.split()[1]
        return "n/a"

    def rss_kib(self) -> int:
        """Resident memory of the server and of its worker processes."""
        return sum(_rss_kib(pid) for pid in _process_tree(self.pid))

    def rss_mib(self) -> float:
        return self.rss_kib() / 1024

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server and of its worker processes."""
        return sum(_cpu_seconds(pid) for pid in _process_tree(self.pid))

    def events(self, after: int, upto: int) -> list[tuple[int, int | None, str, str]]:
        """(seq, workflow_id, type, created_at) of the stored events in (after, upto]."""
        with sqlite3.connect(self.db) as db:
            rows = db.execute(
                "SELECT seq, workflow_id, type, created_at FROM events"
                " WHERE seq > ? AND seq <= ? ORDER BY seq",
                (after, upto),
            )
            return [(seq, wf, kind, at) for seq, wf, kind, at in rows]


def _process_tree(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        for child in children:
            pids += _process_tree(int(child))
    return pids


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0  # it ended between listing and reading
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def raise_fd_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft
