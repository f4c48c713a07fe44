"""Fan-out benchmark: one steady stream of Snakemake events, many websocket subscribers.

It starts a real `python -m panoptes` on a free port with a fresh SQLite file, then runs the
same event stream twice:

1. baseline: one subscriber (on /ws/workflow/<id>);
2. fan-out: N subscribers (default 1000), a share on /ws and the rest spread over the
   workflows' /ws/workflow/<id> feeds.

The stream is what the Snakemake 9 plugin sends (form-encoded POST /update_workflow_status):
for every job, job_started, job_info, job_finished and progress, round-robin over a few
workflows. Each poster sends one message at a time (like the plugin) on a steady clock; the
posters run in their own process, so the subscribers' work in this one cannot delay them.

Delivery latency is the time from sending the POST that caused an event to a subscriber
receiving it. Events do not say which POST made them, but a workflow's posts are sequential
and every event carries its server time ("at"), so the POST is the last one sent for that
workflow before that time (client and server share the machine's clock). Every subscriber's
messages are checked against the events table: all delivered, none twice, in seq order; the
exit status is 1 if any is not.

    .venv/bin/python benchmarks/fanout.py                      # 1000 subscribers, ~1.5 min
    .venv/bin/python benchmarks/fanout.py --subscribers 200 --jobs 50
    .venv/bin/python benchmarks/fanout.py --posters 4 --rate 0  # as fast as the server takes
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from server import FORM, Server, form_body, raise_fd_limit
from websockets.asyncio.client import ClientConnection, connect

# --------------------------------------------------------------------------- the server


def client_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- subscribers


@dataclass
class Subscriber:
    path: str
    workflow_id: int | None
    hello_seq: int = 0
    seqs: list[int] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)
    resyncs: int = 0
    pings: int = 0
    error: str | None = None


Stamp = tuple[int | None, str]  # an event's workflow_id and server time ("at")


async def listen(ws: ClientConnection, sub: Subscriber, at_of: dict[int, Stamp]) -> None:
    try:
        async for raw in ws:
            now = time.time()
            message = orjson.loads(raw)
            kind = message["type"]
            if kind == "ping":
                sub.pings += 1
            elif kind == "resync":
                sub.resyncs += 1
            else:
                seq = message["seq"]
                sub.seqs.append(seq)
                sub.received_at.append(now)
                if seq not in at_of:
                    at_of[seq] = (message["workflow_id"], message["at"])
    except Exception as exc:  # a dropped connection is a result, not a crash
        sub.error = f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- the stream

Stream = list[tuple[int, dict[str, Any]]]  # (workflow id, message), in posting order


def job_messages(jobs: int, workflows: Sequence[int]) -> Stream:
    """What the Snakemake 9 plugin sends for `jobs` jobs, round-robin over the workflows."""
    per_workflow = dict.fromkeys(workflows, 0)
    for jobid in range(jobs):
        per_workflow[workflows[jobid % len(workflows)]] += 1
    done = dict.fromkeys(workflows, 0)
    messages: Stream = [
        (wf, {"level": "progress", "done": 0, "total": per_workflow[wf]}) for wf in workflows
    ]
    for jobid in range(jobs):
        wf = workflows[jobid % len(workflows)]
        rule = f"rule_{jobid % 5}"
        info = {
            "level": "job_info",
            "jobid": jobid,
            "name": rule,
            "msg": None,
            "input": [f"data/{jobid}.in"],
            "output": [f"out/{jobid}.out"],
            "log": [f"logs/{jobid}.log"],
            "wildcards": {"sample": str(jobid)},
            "is_checkpoint": False,
            "shellcmd": f"process data/{jobid}.in > out/{jobid}.out",
            "threads": 1,
            "priority": 0,
            "reason": f"Missing output files: out/{jobid}.out",
            "resources": {"tmpdir": "/tmp", "mem_mb": 100},
        }
        done[wf] += 1
        messages += [
            (wf, {"level": "job_started", "jobs": [jobid]}),
            (wf, info),
            (wf, {"level": "job_finished", "jobid": jobid}),
            (wf, {"level": "progress", "done": done[wf], "total": per_workflow[wf]}),
        ]
    return messages


@dataclass
class Posted:
    sent: dict[int, list[float]] = field(default_factory=dict)  # per workflow, in order
    round_trips: list[float] = field(default_factory=list)
    first_seq: int = 0
    last_seq: int = 0


def split(messages: Stream, posters: int) -> list[Stream]:
    """One stream per poster; a workflow's messages all go to the same poster, in order."""
    order = list(dict.fromkeys(workflow_id for workflow_id, _ in messages))
    owner = {workflow_id: i % posters for i, workflow_id in enumerate(order)}
    streams: list[Stream] = [[] for _ in range(min(posters, len(order)))]
    for workflow_id, msg in messages:
        streams[owner[workflow_id]].append((workflow_id, msg))
    return streams


async def post_stream(
    http: httpx.AsyncClient, messages: Stream, rate: float, posted: Posted
) -> None:
    """Post one at a time (as the plugin does), each on its tick of a steady clock."""
    start = time.monotonic()
    for i, (workflow_id, msg) in enumerate(messages):
        delay = start + i / rate - time.monotonic() if rate > 0 else 0
        if delay > 0:
            await asyncio.sleep(delay)
        body = form_body(workflow_id, msg)
        sent = time.time()
        posted.sent.setdefault(workflow_id, []).append(sent)
        response = await http.post("/update_workflow_status", content=body, headers=FORM)
        posted.round_trips.append(time.time() - sent)
        if response.status_code != 200:
            raise RuntimeError(f"POST answered {response.status_code}: {response.text}")


async def post_streams(url: str, streams: list[Stream], rate: float) -> Posted:
    posted = Posted()
    limits = httpx.Limits(max_connections=len(streams))
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        share = rate / len(streams)
        await asyncio.gather(*(post_stream(http, stream, share, posted) for stream in streams))
    return posted


def post_in_process(url: str, streams: list[Stream], rate: float) -> Posted:
    """The posters run in their own process so the subscribers' work cannot delay them."""
    return asyncio.run(post_streams(url, streams, rate))


# --------------------------------------------------------------------------- figures


def percentile(ordered: Sequence[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@dataclass
class Summary:
    label: str
    subscribers: int
    expected: int = 0
    delivered: int = 0
    missing: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    unexpected: int = 0
    resyncs: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    post_ms: list[float] = field(default_factory=list)
    stream_seconds: float = 0.0
    drain_seconds: float = 0.0
    posts: int = 0
    server_cpu: float = 0.0
    client_cpu: float = 0.0

    def pct(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    @property
    def ok(self) -> bool:
        wrong = self.missing + self.duplicated + self.out_of_order + self.unexpected
        return wrong == 0 and self.errors == 0


def check(got: list[int], sub: Subscriber, expected: list[int], summary: Summary) -> None:
    summary.expected += len(expected)
    summary.delivered += len(got)
    summary.resyncs += sub.resyncs
    summary.errors += sub.error is not None
    wanted = set(expected)
    seen = set(got)
    summary.missing += len(wanted - seen)
    summary.duplicated += len(got) - len(seen)
    summary.unexpected += len(seen - wanted)
    summary.out_of_order += sum(1 for a, b in itertools.pairwise(got) if b <= a)


def latencies(subs: list[Subscriber], posted: Posted, at_of: dict[int, Stamp]) -> list[float]:
    """Each delivery's time since its POST was sent, in milliseconds, sorted.

    A workflow's posts are sequential, so the POST behind an event is the last one sent
    for its workflow before the event's server time.
    """
    post_of: dict[int, float] = {}
    for seq, (workflow_id, at) in at_of.items():
        sent = posted.sent.get(workflow_id or -1)
        if posted.first_seq < seq <= posted.last_seq and sent:
            stamp = datetime.fromisoformat(at).timestamp()
            post_of[seq] = sent[max(0, bisect.bisect_right(sent, stamp) - 1)]
    found = [
        (received - post_of[seq]) * 1000
        for sub in subs
        for seq, received in zip(sub.seqs, sub.received_at, strict=True)
        if seq in post_of
    ]
    found.sort()
    return found


def expected_for(
    sub: Subscriber, events: list[tuple[int, int | None, str, str]], first: int
) -> list[int]:
    after = max(first, sub.hello_seq)
    if sub.workflow_id is None:
        return [seq for seq, _, kind, _ in events if seq > after and kind.startswith("workflow.")]
    return [seq for seq, wf, _, _ in events if seq > after and wf == sub.workflow_id]


@contextmanager
def measured(summary: Summary, server: Server) -> Iterator[None]:
    cpu_server, cpu_client = server.cpu_seconds(), client_cpu_seconds()
    yield
    summary.server_cpu = server.cpu_seconds() - cpu_server
    summary.client_cpu = client_cpu_seconds() - cpu_client


async def head_seq(server: Server) -> int:
    async with connect(server.url.replace("http://", "ws://") + "/ws") as ws:
        return int(orjson.loads(await ws.recv())["head"])


@dataclass
class Bench:
    server: Server
    poster: ProcessPoolExecutor
    args: argparse.Namespace

    @property
    def ws_base(self) -> str:
        return self.server.url.replace("http://", "ws://")

    async def post(self, messages: Stream) -> Posted:
        streams = split(messages, self.args.posters)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.poster, post_in_process, self.server.url, streams, self.args.rate
        )

    async def create_workflows(self, tag: str) -> list[int]:
        ids = []
        async with httpx.AsyncClient(base_url=self.server.url, timeout=60) as http:
            for i in range(self.args.workflows):
                response = await http.get("/create_workflow", params={"workflow_id": f"{tag}-{i}"})
                response.raise_for_status()
                ids.append(int(response.json()["id"]))
        return ids

    async def connect_all(self, subs: list[Subscriber]) -> list[ClientConnection]:
        gate = asyncio.Semaphore(self.args.connect_concurrency)
        compression = None if self.args.no_deflate else "deflate"

        async def one(sub: Subscriber) -> ClientConnection:
            async with gate:
                ws = await connect(
                    self.ws_base + sub.path, open_timeout=60, max_size=None, compression=compression
                )
                hello = orjson.loads(await ws.recv())
                assert hello["type"] == "hello", hello
                sub.hello_seq = hello["head"]
                return ws

        return list(await asyncio.gather(*(one(sub) for sub in subs)))

    async def phase(
        self,
        label: str,
        subs: list[Subscriber],
        sockets: list[ClientConnection],
        workflows: list[int],
    ) -> Summary:
        """Stream the events to subscribers already connected; check and time what they get."""
        summary = Summary(label, len(subs))
        at_of: dict[int, Stamp] = {}
        pairs = zip(sockets, subs, strict=True)
        listeners = [asyncio.create_task(listen(ws, sub, at_of)) for ws, sub in pairs]
        first = await head_seq(self.server)
        with measured(summary, self.server):
            started = time.monotonic()
            posted = await self.post(job_messages(self.args.jobs, workflows))
            summary.stream_seconds = time.monotonic() - started
            posted.first_seq = first
            posted.last_seq = await head_seq(self.server)
            events = self.server.events(first, posted.last_seq)
            expected = [expected_for(sub, events, first) for sub in subs]
            drained = time.monotonic()
            with suppress(TimeoutError):
                async with asyncio.timeout(self.args.drain_timeout):
                    await wait_for_all(subs, expected)
            summary.drain_seconds = time.monotonic() - drained
        for sub, want in zip(subs, expected, strict=True):
            mine = [seq for seq in sub.seqs if first < seq <= posted.last_seq]
            check(mine, sub, want, summary)
        summary.latencies_ms = latencies(subs, posted, at_of)
        summary.post_ms = sorted(seconds * 1000 for seconds in posted.round_trips)
        summary.posts = len(posted.round_trips)
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
        return summary


async def wait_for_all(subs: list[Subscriber], expected: list[list[int]]) -> None:
    """Until every subscriber has its last expected event (or lost its connection)."""
    pending = list(zip(subs, expected, strict=True))
    while True:
        pending = [
            (sub, want)
            for sub, want in pending
            if not (sub.error or not want or (sub.seqs and sub.seqs[-1] >= want[-1]))
        ]
        if not pending:
            return
        await asyncio.sleep(0.01)


def plan(count: int, workflows: list[int], all_share: float) -> list[Subscriber]:
    everything = round(count * all_share)
    subs = [Subscriber("/ws", None) for _ in range(everything)]
    for i in range(count - everything):
        wf = workflows[i % len(workflows)]
        subs.append(Subscriber(f"/ws/workflow/{wf}", wf))
    return subs


async def close_all(sockets: list[ClientConnection]) -> None:
    async def one(ws: ClientConnection) -> None:
        with suppress(Exception):
            await ws.close()

    await asyncio.gather(*(one(ws) for ws in sockets))


def report_phase(summary: Summary) -> None:
    ok = summary.ok
    rate = summary.posts / summary.stream_seconds if summary.stream_seconds else 0
    print(f"\n== {summary.label}: {summary.subscribers} subscriber(s)")
    print(f"  posts           {summary.posts} in {summary.stream_seconds:.1f} s ({rate:.1f}/s)")
    print(
        f"  POST round trip p50 {percentile(summary.post_ms, 50):.1f} ms, "
        f"p99 {percentile(summary.post_ms, 99):.1f} ms, max {summary.post_ms[-1]:.1f} ms"
    )
    print(
        f"  delivered       {summary.delivered} of {summary.expected} expected "
        f"({'OK' if ok else 'PROBLEM'}: missing {summary.missing}, duplicated "
        f"{summary.duplicated}, out of order {summary.out_of_order}, unexpected "
        f"{summary.unexpected}, resyncs {summary.resyncs}, dropped connections {summary.errors})"
    )
    print(
        f"  latency (POST sent -> received) p50 {summary.pct(50):.1f} ms, "
        f"p95 {summary.pct(95):.1f} ms, p99 {summary.pct(99):.1f} ms, "
        f"max {summary.pct(100):.1f} ms"
    )
    print(f"  drain after last POST {summary.drain_seconds:.2f} s")
    busy = summary.stream_seconds + summary.drain_seconds
    print(
        f"  CPU: server {summary.server_cpu:.1f} s ({summary.server_cpu / busy:.0%} of one core), "
        f"subscriber client {summary.client_cpu:.1f} s ({summary.client_cpu / busy:.0%})"
    )


async def benchmark(bench: Bench) -> bool:
    """Run both phases and print their figures; whether every delivery was right."""
    server = bench.server
    # Warm up (first queries, caches, the poster process) so the baseline pays no cold start.
    await bench.post(job_messages(10, await bench.create_workflows("warmup")))

    base_workflows = await bench.create_workflows("baseline")
    one = [Subscriber(f"/ws/workflow/{base_workflows[0]}", base_workflows[0])]
    one_socket = await bench.connect_all(one)
    baseline = await bench.phase("baseline", one, one_socket, base_workflows)
    await close_all(one_socket)
    report_phase(baseline)

    workflows = await bench.create_workflows("fanout")
    subs = plan(bench.args.subscribers, workflows, bench.args.all_share)
    await asyncio.sleep(1.0)  # let the server settle before reading its memory
    rss_before = server.rss_kib()
    started = time.monotonic()
    sockets = await bench.connect_all(subs)
    connect_seconds = time.monotonic() - started
    await asyncio.sleep(1.0)
    rss_connected = server.rss_kib()
    open_connected = server.subscribers()
    fanout = await bench.phase("fan-out", subs, sockets, workflows)
    rss_after_stream = server.rss_kib()
    await close_all(sockets)
    await asyncio.sleep(2.0)
    rss_closed = server.rss_kib()
    open_closed = server.subscribers()
    report_phase(fanout)

    everything = sum(1 for sub in subs if sub.workflow_id is None)
    print(f"\n== subscribers: {everything} on /ws, {len(subs) - everything} on /ws/workflow/<id>")
    print(f"  connected {len(subs)} in {connect_seconds:.1f} s")
    print(f"  server's panoptes_websocket_subscribers: {open_connected}, {open_closed} after close")
    print(f"  server RSS before subscribers    {rss_before / 1024:.1f} MiB")
    print(f"  server RSS with subscribers      {rss_connected / 1024:.1f} MiB")
    print(f"  server RSS after the stream      {rss_after_stream / 1024:.1f} MiB")
    print(f"  server RSS 2 s after they closed {rss_closed / 1024:.1f} MiB")
    for label, rss in (("connected", rss_connected), ("after the stream", rss_after_stream)):
        per = (rss - rss_before) / max(1, len(subs))
        print(f"  RSS per subscriber ({label} - before) / N = {per:.1f} KiB")
    print("\n== fan-out vs baseline (same stream)")
    for q in (50, 99):
        ratio = fanout.pct(q) / baseline.pct(q) if baseline.pct(q) else float("nan")
        print(
            f"  p{q}: {fanout.pct(q):.1f} ms with {len(subs)} vs "
            f"{baseline.pct(q):.1f} ms with 1 = x{ratio:.1f}"
        )
    return baseline.ok and fanout.ok


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000, help="default 1000")
    parser.add_argument(
        "--all-share", type=float, default=0.5, help="share of subscribers on /ws (default 0.5)"
    )
    parser.add_argument("--workflows", type=int, default=4, help="workflows in the stream")
    parser.add_argument("--jobs", type=int, default=150, help="jobs per phase (4 posts each)")
    parser.add_argument(
        "--rate", type=float, default=40.0, help="posts per second in all (0: as fast as possible)"
    )
    parser.add_argument(
        "--posters",
        type=int,
        default=1,
        help="concurrent posting clients, each sequential like one Snakemake run (default 1)",
    )
    parser.add_argument("--connect-concurrency", type=int, default=100)
    parser.add_argument("--drain-timeout", type=float, default=30.0)
    parser.add_argument("--queue", type=int, default=1000, help="PANOPTES_SUBSCRIBER_QUEUE")
    parser.add_argument(
        "--server",
        choices=("uvicorn", "hypercorn", "granian"),
        default="uvicorn",
        help="the HTTP server panoptes runs on (PANOPTES_SERVER; granian as its own command)",
    )
    parser.add_argument(
        "--no-deflate",
        action="store_true",
        help="subscribers refuse permessage-deflate (browsers always ask for it)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    limit = raise_fd_limit(args.subscribers * 2 + 256)
    print(
        f"panoptes fan-out: {args.subscribers} subscribers, {args.jobs} jobs x 4 posts over "
        f"{args.workflows} workflows at {args.rate:g} posts/s by {args.posters} poster(s), "
        f"permessage-deflate "
        f"{'off' if args.no_deflate else 'on'}; {args.server}; fd limit {limit}; "
        f"{os.cpu_count()} CPUs"
    )
    spawn = multiprocessing.get_context("spawn")
    with (
        tempfile.TemporaryDirectory(prefix="panoptes-fanout-") as tmp,
        ProcessPoolExecutor(max_workers=1, mp_context=spawn) as poster,
    ):
        env = {
            "PANOPTES_SUBSCRIBER_QUEUE": str(args.queue),
            # Every subscriber here comes from 127.0.0.1: lift the per-address cap.
            "PANOPTES_MAX_FEED_PER_CLIENT": "0",
        }
        server = Server(Path(tmp) / "fanout.db", env, http=args.server).start()
        try:
            ok = asyncio.run(benchmark(Bench(server, poster, args)))
        finally:
            server.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
