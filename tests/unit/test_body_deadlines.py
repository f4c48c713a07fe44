"""The fast endpoint's one watcher for every body being read (routes/ingest.py BodyDeadlines)."""

from __future__ import annotations

import asyncio

from panoptes.routes.ingest import BodyDeadlines


async def read(deadlines: BodyDeadlines, arrives: asyncio.Future[bytes], seconds: float) -> str:
    """What reading a body the way IngestEndpoint._body does comes to."""
    task = asyncio.current_task()
    assert task is not None
    deadlines.start(task, seconds)
    try:
        return (await arrives).decode()
    except asyncio.CancelledError:
        if not deadlines.expired(task):
            raise
        task.uncancel()
        return "timed out"
    finally:
        deadlines.end(task)


async def test_only_the_reads_past_their_limit_are_cut_short() -> None:
    loop = asyncio.get_running_loop()
    deadlines = BodyDeadlines()
    slow = [loop.create_future() for _ in range(3)]
    quick: asyncio.Future[bytes] = loop.create_future()
    reads = [asyncio.create_task(read(deadlines, f, 0.1)) for f in slow]
    patient = asyncio.create_task(read(deadlines, loop.create_future(), 30))
    quick_read = asyncio.create_task(read(deadlines, quick, 0.1))
    await asyncio.sleep(0.02)
    quick.set_result(b"whole")
    assert await quick_read == "whole"
    assert await asyncio.gather(*reads) == ["timed out"] * 3
    assert not patient.done()  # a longer limit is not cut short by the shorter ones
    patient.cancel()


async def test_a_read_that_ended_in_time_is_never_cancelled_later() -> None:
    loop = asyncio.get_running_loop()
    deadlines = BodyDeadlines()

    async def request() -> str:
        arrives: asyncio.Future[bytes] = loop.create_future()
        loop.call_later(0.01, arrives.set_result, b"body")
        body = await read(deadlines, arrives, 0.05)
        await asyncio.sleep(0.2)  # storing it: well past the read's limit
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        return body

    assert await asyncio.gather(request(), request()) == ["body", "body"]


async def test_a_timed_out_read_leaves_its_task_uncancelled_and_the_watcher_ends() -> None:
    loop = asyncio.get_running_loop()
    deadlines = BodyDeadlines()

    async def request() -> tuple[str, int]:
        body = await read(deadlines, loop.create_future(), 0.05)
        await asyncio.sleep(0.01)  # what comes after the 408 still runs
        task = asyncio.current_task()
        assert task is not None
        return body, task.cancelling()

    assert await request() == ("timed out", 0)
    watcher = deadlines._watcher
    assert watcher is not None
    await asyncio.wait_for(watcher, 1)  # nothing left to watch
    # Another read starts a new watcher, which cuts it short as well.
    assert await request() == ("timed out", 0)
    assert deadlines._watcher is not watcher


async def test_a_cancellation_from_elsewhere_goes_through() -> None:
    loop = asyncio.get_running_loop()
    deadlines = BodyDeadlines()
    reading = asyncio.create_task(read(deadlines, loop.create_future(), 30))
    await asyncio.sleep(0.01)
    reading.cancel()
    try:
        await reading
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("the server's cancellation was swallowed")
    assert reading.cancelled()
