"""How far off `eta_seconds` (panoptes/eta.py) is: recorded runs replayed in real time.

    .venv/bin/python benchmarks/eta.py                      # about 2 minutes
    .venv/bin/python benchmarks/eta.py --history            # each run after an earlier one
    .venv/bin/python benchmarks/eta.py --captures sm9-cohort300 sm8-keepgoing

For each capture (tests/captures/<name>.jsonl: real Snakemake traffic, each request with
the time `t` it arrived), a fresh `python -m panoptes` on a new SQLite file gets the
recorded requests in their order and at their recorded pace (the gaps between their `t`s
slept), so the server times jobs by its own clock as it would live. A message that carries
its own timestamp (Snakemake 7/8) has it moved onto the replay's clock by the same offset,
as if it were sent now. After each request that first says a job finished, the benchmark
asks GET /api/workflow/1 and compares `eta_seconds` with the time the run really still took
(the recording's last request, less where the replay is now, both on the replay's clock).

With --history, the same capture is first sent once as fast as it goes, its timestamps set
to its recorded times an hour ago (the server takes a message's own time when it has one),
so the measured run has an earlier run of the same rules to draw on.

Printed per capture: the number of estimates and of nulls among them, the median and 90th
percentile of the absolute error (seconds) and of the relative error (|eta - true| / true,
over the estimates where the run still took at least 0.5 s), and the estimate against the
truth at 25, 50 and 75% of the run's finished jobs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from server import Server

CAPTURES = Path(__file__).resolve().parents[1] / "tests" / "captures"
# The recorded runs with jobs that take some time, one run each.
DEFAULT = [
    "sm9-cohort300",
    "sm9p-cohort300",
    "sm9-keepgoing",
    "sm8-keepgoing",
    "sm8-success",
    "sm9-success",
    "sm7-success",
]
MIN_TRUE = 0.5  # seconds: below this, relative errors say little
Point = tuple[float, float | None, float]  # fraction of jobs finished, eta, true seconds left


def recorded(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (CAPTURES / f"{name}.jsonl").read_text().splitlines()]


def rewritten(
    request: dict[str, Any], workflow_id: int, shift: float, *, stamp_all: bool = False
) -> dict[str, Any]:
    """The request for workflow `workflow_id` (the recording's was 1), its message's own
    timestamp moved by `shift` seconds (with `stamp_all`, every message gets one: its `t`
    moved so)."""
    path = request["path"].replace("/api/workflow/1", f"/api/workflow/{workflow_id}")
    fields = request.get("form") or request.get("json")
    if not isinstance(fields, dict):
        return {**request, "path": path}
    fields = dict(fields)
    if "id" in fields:
        fields["id"] = str(workflow_id) if "form" in request else workflow_id
    if isinstance(fields.get("msg"), str):
        msg = json.loads(fields["msg"])
        if "timestamp" in msg or stamp_all:
            msg["timestamp"] = msg.get("timestamp", request["t"]) + shift
        fields["msg"] = json.dumps(msg)
    body = urlencode(fields) if "form" in request else json.dumps(fields)
    return {**request, "path": path, "body": body}


def send(client: httpx.Client, request: dict[str, Any], workflow_id: int) -> None:
    headers = {"Content-Type": request["content_type"]} if request["content_type"] else {}
    response = client.request(
        request["method"],
        request["path"],
        params=request["query"] or None,
        content=request["body"].encode(),
        headers=headers,
    )
    if response.status_code >= 300:
        raise RuntimeError(f"seq {request['seq']}: {response.status_code} {response.text}")
    if request["path"] == "/create_workflow" and response.json()["id"] != workflow_id:
        raise RuntimeError(f"the run was given id {response.json()['id']}, not {workflow_id}")


def first_finishes(requests: list[dict[str, Any]]) -> list[bool]:
    """For each request, whether it is the first to say its job finished (Snakemake 8
    says everything twice)."""
    seen: set[Any] = set()
    firsts = []
    for request in requests:
        msg = request.get("msg_json") or {}
        first = msg.get("level") == "job_finished" and msg.get("jobid") not in seen
        seen.add(msg.get("jobid") if first else None)
        firsts.append(first)
    return firsts


def replay(name: str, history: bool) -> list[Point]:
    """A point after each first job_finished of the run, while the server says Running."""
    requests = recorded(name)
    firsts = first_finishes(requests)
    total, last = sum(firsts), requests[-1]["t"]
    points: list[Point] = []
    with tempfile.TemporaryDirectory() as scratch:
        server = Server(db=Path(scratch) / "eta.db").start()
        try:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                workflow_id = 1
                if history:
                    # The recording an hour ago, sent as fast as it goes.
                    shift = time.time() - 3600 - requests[0]["t"]
                    for request in requests:
                        send(client, rewritten(request, 1, shift, stamp_all=True), 1)
                    workflow_id = 2
                offset = time.time() - requests[0]["t"]  # recording's clock -> replay's
                done = 0
                for request, first in zip(requests, firsts, strict=True):
                    pause = request["t"] + offset - time.time()
                    if pause > 0:
                        time.sleep(pause)
                    send(client, rewritten(request, workflow_id, offset), workflow_id)
                    if not first:
                        continue
                    done += 1
                    answer = client.get(f"/api/workflow/{workflow_id}").json()["workflow"]
                    now = time.time() - offset
                    if answer["status"] == "Running" and now < last:
                        points.append((done / total, answer["eta_seconds"], last - now))
        finally:
            server.stop()
    return points


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def at(points: list[Point], fraction: float) -> str:
    for progress, eta, true in points:
        if progress >= fraction:
            shown = "null" if eta is None else f"{eta:.1f}"
            error = "" if eta is None or true <= 0 else f" ({(eta - true) / true:+.0%})"
            return f"{shown} vs {true:.1f}{error}"
    return "-"


def report(name: str, points: list[Point]) -> None:
    known = [(eta, true) for _, eta, true in points if eta is not None]
    nulls = len(points) - len(known)
    if not known:
        print(f"{name:22} {len(points):4} estimates, all null")
        return
    absolute = [abs(eta - true) for eta, true in known]
    relative = [abs(eta - true) / true for eta, true in known if true >= MIN_TRUE]
    rel = (
        f"{statistics.median(relative):5.0%} {quantile(relative, 0.9):5.0%}"
        if relative
        else "    -     -"
    )
    print(
        f"{name:22} {len(points):4} {nulls:5} "
        f"{statistics.median(absolute):7.2f} {quantile(absolute, 0.9):7.2f}  {rel}   "
        f"{at(points, 0.25):>20} {at(points, 0.5):>20} {at(points, 0.75):>20}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--captures", nargs="+", default=DEFAULT)
    parser.add_argument("--history", action="store_true", help="an earlier run first")
    args = parser.parse_args()
    print(
        f"eta_seconds against the time the run still took{' (after an earlier run)' * args.history}"
    )
    print(
        f"{'capture':22} {'n':>4} {'nulls':>5} {'abs p50':>7} {'abs p90':>7}  "
        f"{'rel p50':>5} {'p90':>5}   {'at 25%':>20} {'at 50%':>20} {'at 75%':>20}"
    )
    for name in args.captures:
        report(name, replay(name, args.history))


if __name__ == "__main__":
    main()
