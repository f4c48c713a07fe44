"""Record real Snakemake client traffic against panoptes, in the format of tests/captures.

The script starts panoptes (a fresh SQLite file, so the first workflow gets id 1) under
Hypercorn in this process, behind an ASGI middleware that writes down every HTTP request
and the status it was answered with. It then runs one or more Snakemake commands against
it, each in a fresh scratch working directory, and writes `<name>.jsonl` (one request per
line, in arrival order) and `<name>.meta.json` to the output directory.

Run it with the project's venv and the server code to record against on PYTHONPATH:

    PYTHONPATH=/work/rec /work/main/.venv/bin/python tests/captures/record.py \\
        --name sm9-keepgoing --client sm9 --scenario keepgoing \\
        --bin /work/main/.cache/e2e/sm9/bin --copy tests/captures/Snakefile.keepgoing \\
        --run 'snakemake -s Snakefile.keepgoing --cores 2 --keep-going --retries 1
               --logger panoptes --logger-panoptes-address {url}'

`{url}` in a command becomes the server's URL (http://127.0.0.1:<free port>). `--bin` puts
that directory first on the commands' PATH, so `snakemake` is the client to record. Every
file given with `--copy` is copied into each run's working directory.

`--run` may be given several times. A plain string is a command that starts once the run
before it has exited. A JSON object gives a run more options:

    {"cmd": "snakemake ... {url}",      the command (required)
     "start": "after_exit",             or "with_previous": start while the previous run is
                                        still going, after "delay" seconds and/or once
                                        "after_requests" requests arrived since it started
     "delay": 0, "after_requests": 0,
     "sigint_after_finished": 3,        SIGINT the run (its whole process group, as Ctrl-C
                                        in a terminal would) once job_finished messages for
                                        this many distinct job ids arrived since it started,
     "sigint_delay": 0,                 and this many seconds after that
     "bin": "/path/to/venv/bin",        overrides --bin for this run
     "timeout": 600}                    seconds before the run is killed (SIGKILL)

In the meta file `cmd` and `rc` are lists when there are several runs, and `stderr_tail`
holds the last `--tail` characters of each run's stderr (under a `--- run N ---` header
when there are several).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl

from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig

from panoptes.app import create_app
from panoptes.config import Config, database_url

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]

FORM_TYPE = "application/x-www-form-urlencoded"


def decode_json(text: str) -> Any:
    """The JSON value in `text`, or None when it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return None


class Recorder:
    """ASGI middleware: note each HTTP request and its response status, pass it on as is."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.entries: list[dict[str, Any]] = []
        self.arrived = 0
        # (workflow id, job id) of every job_finished message, in arrival order.
        self.finished: list[tuple[str, int]] = []
        self.changed = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.arrived += 1
        seq = self.arrived
        arrived_at = time.time()
        # Hypercorn is told to keep the header names as the client spelled them (recorded
        # so); the app gets them lowercased, as it would without this recorder.
        raw_headers: list[tuple[bytes, bytes]] = list(scope["headers"])
        scope = dict(scope)
        scope["headers"] = [(name.lower(), value) for name, value in raw_headers]

        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        pending = list(messages)

        async def replay() -> Message:
            if pending:
                return pending.pop(0)
            return await receive()

        status: list[int] = []

        async def note_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, replay, note_status)
        finally:
            self.note(seq, arrived_at, scope, raw_headers, body, status[0] if status else None)

    def note(
        self,
        seq: int,
        arrived_at: float,
        scope: Scope,
        raw_headers: list[tuple[bytes, bytes]],
        body: bytes,
        status: int | None,
    ) -> None:
        headers = {name.decode("latin1"): value.decode("latin1") for name, value in raw_headers}
        content_type = next(
            (value for name, value in headers.items() if name.lower() == "content-type"), None
        )
        client = scope.get("client")
        text = body.decode("utf-8", errors="replace")
        entry: dict[str, Any] = {
            "seq": seq,
            "t": arrived_at,
            "method": scope["method"],
            "path": scope["path"],
            "raw_path": bytes(scope.get("raw_path") or scope["path"].encode()).decode("latin1"),
            "query": dict(parse_qsl(scope["query_string"].decode("latin1"), True)),
            "http_version": f"HTTP/{scope['http_version']}",
            "content_type": content_type,
            "headers": headers,
            "body": text,
            "status": status,
            "peer": f"{client[0]}:{client[1]}" if client else None,
        }
        fields: Any = None
        if content_type is not None and content_type.split(";")[0].strip() == FORM_TYPE:
            fields = dict(parse_qsl(text, keep_blank_values=True))
            entry["form"] = fields
        elif text.strip():
            fields = decode_json(text)
            if fields is not None:
                entry["json"] = fields
        if isinstance(fields, dict) and isinstance(fields.get("msg"), str):
            msg = decode_json(fields["msg"])
            if msg is not None:
                entry["msg_json"] = msg
                if isinstance(msg, dict) and msg.get("level") == "job_finished":
                    jobid = msg.get("jobid")
                    if isinstance(jobid, int):
                        self.finished.append((str(fields.get("id")), jobid))
        self.entries.append(entry)
        self.changed.set()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            self.changed.clear()
            await self.changed.wait()


@dataclass
class Run:
    cmd: str
    start: str = "after_exit"
    delay: float = 0.0
    after_requests: int = 0
    sigint_after_finished: int = 0
    sigint_delay: float = 0.0
    bin: str | None = None
    timeout: float = 600.0
    # Filled in while it runs.
    argv: list[str] = field(default_factory=list)
    workdir: Path | None = None
    rc: int | None = None
    started: float = 0.0
    ended: float = 0.0
    interrupted: bool = False
    requests_before: int = 0


def parse_run(text: str) -> Run:
    if not text.lstrip().startswith("{"):
        return Run(cmd=text)
    spec = json.loads(text)
    if spec.get("start", "after_exit") not in ("after_exit", "with_previous"):
        raise SystemExit(f"unknown start {spec['start']!r} in {text}")
    return Run(**spec)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def prepare(run: Run, index: int, url: str, args: Any) -> dict[str, str]:
    """Make the run's fresh working directory; the environment to run it in."""
    scratch = Path(args.scratch)
    run.workdir = scratch / f"run{index}"
    run.workdir.mkdir(parents=True)
    for name in args.copy:
        shutil.copy(name, run.workdir)
    run.argv = shlex.split(run.cmd.replace("{url}", url))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    bin_dir = run.bin or args.bin
    if bin_dir:
        env["PATH"] = f"{Path(bin_dir).resolve()}{os.pathsep}{env.get('PATH', '')}"
    return env


async def execute(
    run: Run, index: int, recorder: Recorder, url: str, args: Any, started: asyncio.Event
) -> None:
    """Run one command to its end in a fresh working directory; set `started` once it is."""
    env = prepare(run, index, url, args)
    stderr_path = Path(args.scratch) / f"run{index}.stderr"
    stdout_path = Path(args.scratch) / f"run{index}.stdout"
    run.requests_before = recorder.arrived
    finished_before = len(recorder.finished)
    with open(stderr_path, "wb") as err, open(stdout_path, "wb") as out:  # noqa: ASYNC230
        run.started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            *run.argv,
            cwd=run.workdir,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,  # its own process group, for a Ctrl-C like SIGINT
        )
        print(f"run {index}: started {shlex.join(run.argv)}", file=sys.stderr)
        started.set()

        def enough() -> bool:
            jobs = set(recorder.finished[finished_before:])
            return len(jobs) >= run.sigint_after_finished

        async def interrupt() -> None:
            await recorder.wait_until(enough)
            await asyncio.sleep(run.sigint_delay)
            if process.returncode is None:
                print(f"run {index}: SIGINT", file=sys.stderr)
                run.interrupted = True
                os.killpg(process.pid, signal.SIGINT)

        watcher = asyncio.create_task(interrupt()) if run.sigint_after_finished > 0 else None
        try:
            run.rc = await asyncio.wait_for(process.wait(), run.timeout)
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            run.rc = await process.wait()
            print(f"run {index}: killed after {run.timeout} s", file=sys.stderr)
        finally:
            if watcher is not None:
                watcher.cancel()
        run.ended = time.monotonic()
    print(f"run {index}: rc {run.rc}, {run.ended - run.started:.2f} s", file=sys.stderr)


def arrived_since(recorder: Recorder, before: int, wanted: int) -> Callable[[], bool]:
    return lambda: recorder.arrived - before >= wanted


async def orchestrate(runs: list[Run], recorder: Recorder, url: str, args: Any) -> None:
    tasks: list[asyncio.Task[None]] = []
    for index, run in enumerate(runs, start=1):
        if index > 1 and run.start == "after_exit":
            await asyncio.gather(*tasks)
        elif index > 1:  # with_previous
            before = runs[index - 2].requests_before
            await recorder.wait_until(arrived_since(recorder, before, run.after_requests))
        if run.delay:
            await asyncio.sleep(run.delay)
        started = asyncio.Event()
        tasks.append(asyncio.create_task(execute(run, index, recorder, url, args, started)))
        await started.wait()
    await asyncio.gather(*tasks)


async def record(runs: list[Run], args: Any) -> tuple[list[dict[str, Any]], float]:
    """Serve a fresh panoptes, run the commands against it: the requests, the wall time."""
    db_file = Path(args.scratch) / "panoptes.db"
    app = create_app(Config(db_url=database_url(str(db_file)), stale_hours=0))
    recorder = Recorder(app)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    hyper = HypercornConfig()
    hyper.bind = [f"127.0.0.1:{port}"]
    hyper.accesslog = None
    hyper.h11_pass_raw_headers = True  # record header names as the client spelled them
    stop = asyncio.Event()
    server = asyncio.create_task(serve(cast(Any, recorder), hyper, shutdown_trigger=stop.wait))
    for _ in range(200):  # wait until the port answers before any client starts
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        break
    print(f"panoptes at {url}, scratch {args.scratch}", file=sys.stderr)
    began = time.monotonic()
    try:
        await orchestrate(runs, recorder, url, args)
    finally:
        await asyncio.sleep(args.settle)  # a last request still in flight, if any
        stop.set()
        await server
    wall = time.monotonic() - began
    return sorted(recorder.entries, key=lambda entry: entry["seq"]), wall


def write_capture(runs: list[Run], entries: list[dict[str, Any]], wall: float, args: Any) -> int:
    """Write <name>.jsonl and <name>.meta.json; print a summary. 1 if a status was not 2xx."""
    out = Path(args.out)
    with (out / f"{args.name}.jsonl").open("w") as handle:
        for entry in entries:
            handle.write(json.dumps(entry) + "\n")
    commands = [shlex.join(run.argv) for run in runs]
    rcs = [run.rc for run in runs]
    tails = [
        (Path(args.scratch) / f"run{i}.stderr").read_text(errors="replace")[-args.tail :]
        for i in range(1, len(runs) + 1)
    ]
    if len(runs) == 1:
        tail = tails[0]
    else:
        tail = "".join(f"--- run {i} ---\n{text}" for i, text in enumerate(tails, 1))
    meta = {
        "client": args.client,
        "scenario": args.scenario,
        "server_mode": "normal",
        "server_down": False,
        "cmd": commands[0] if len(runs) == 1 else commands,
        "rc": rcs[0] if len(runs) == 1 else rcs,
        "wall_s": round(wall, 3),
        "requests": len(entries),
        "stderr_tail": tail,
    }
    (out / f"{args.name}.meta.json").write_text(json.dumps(meta, indent=1) + "\n")

    levels: dict[str, int] = {}
    for entry in entries:
        msg = entry.get("msg_json")
        level = msg.get("level") if isinstance(msg, dict) else f"{entry['method']} {entry['path']}"
        levels[str(level)] = levels.get(str(level), 0) + 1
    bad = [(e["seq"], e["status"]) for e in entries if not 200 <= (e["status"] or 0) < 300]
    print(f"{len(entries)} requests, rc {rcs}, {wall:.2f} s; {levels}", file=sys.stderr)
    if bad:
        print(f"NOT 2xx (seq, status): {bad}", file=sys.stderr)
    return 1 if bad else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--name", required=True, help="capture name: <name>.jsonl")
    parser.add_argument("--client", required=True, help='meta "client", e.g. sm9')
    parser.add_argument("--scenario", required=True, help='meta "scenario"')
    parser.add_argument("--run", action="append", required=True, help="a command, or JSON")
    parser.add_argument("--bin", help="put this directory first on the commands' PATH")
    parser.add_argument("--copy", action="append", default=[], help="copy into each workdir")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent))
    parser.add_argument("--scratch", help="a new directory for the database and workdirs")
    parser.add_argument("--tail", type=int, default=4000, help="stderr characters to keep")
    parser.add_argument("--settle", type=float, default=0.3, help="seconds before stopping")
    args = parser.parse_args()
    runs = [parse_run(text) for text in args.run]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.scratch is None:
        args.scratch = tempfile.mkdtemp(prefix=f"capture-{args.name}-")
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    if any(scratch.iterdir()):
        raise SystemExit(f"{scratch} is not empty: every capture needs a fresh server")
    entries, wall = asyncio.run(record(runs, args))
    sys.exit(write_capture(runs, entries, wall, args))


if __name__ == "__main__":
    main()
