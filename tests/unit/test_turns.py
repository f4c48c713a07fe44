"""Feed subscribers send in turns: a few per pass of the event loop, none while a write
batch runs (panoptes/hub/turns.py)."""

from __future__ import annotations

import asyncio

from panoptes.hub.turns import Turns


class PassCounter:
    """Counts passes of the event loop: a callback that schedules itself for the next."""

    def __init__(self) -> None:
        self.passes = 0
        self._handle = asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        self.passes += 1
        self._handle = asyncio.get_running_loop().call_soon(self._tick)

    def stop(self) -> None:
        self._handle.cancel()


async def test_each_pass_grants_at_most_per_pass_turns_in_the_order_asked() -> None:
    turns = Turns(per_pass=3)
    counter = PassCounter()
    granted: list[tuple[int, int]] = []  # (taker, pass)

    async def taker(number: int) -> None:
        await turns.take()
        granted.append((number, counter.passes))

    await asyncio.gather(*(taker(n) for n in range(10)))
    counter.stop()
    assert [number for number, _ in granted] == list(range(10))
    per_pass: dict[int, int] = {}
    for _, at in granted:
        per_pass[at] = per_pass.get(at, 0) + 1
    assert max(per_pass.values()) == 3
    assert len(per_pass) == 4  # 3 + 3 + 3 + 1


async def test_no_turn_is_granted_while_the_writer_writes() -> None:
    turns = Turns(per_pass=3)
    turns.writing(True)
    taken = asyncio.ensure_future(turns.take())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not taken.done() and turns.waiting == 1
    turns.writing(False)
    await asyncio.wait_for(taken, 1)


async def test_a_cancelled_waiter_costs_nobody_a_turn() -> None:
    turns = Turns(per_pass=1)
    turns.writing(True)
    first = asyncio.ensure_future(turns.take())
    second = asyncio.ensure_future(turns.take())
    await asyncio.sleep(0)
    assert turns.waiting == 2
    first.cancel()
    turns.writing(False)
    await asyncio.sleep(0)  # the refill: the one turn goes to the second
    await asyncio.sleep(0)  # which then runs
    assert first.cancelled() and second.done()
