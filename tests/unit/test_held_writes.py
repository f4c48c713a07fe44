"""serving/writes.py: a response's head and body leave in one write, in order, and nothing
is held past the loop's turn or lost when the connection closes."""

from __future__ import annotations

import asyncio
from typing import Any

from panoptes.serving.writes import HeldWrites


class Recording(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, Any]] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.calls.append(("write", bytes(data)))

    def close(self) -> None:
        self.closing = True
        self.calls.append(("close", None))

    def abort(self) -> None:
        self.closing = True
        self.calls.append(("abort", None))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 7

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5000) if name == "sockname" else default


async def turn() -> None:
    await asyncio.sleep(0)


async def test_a_head_and_its_body_go_out_in_one_write() -> None:
    raw = Recording()
    held = HeldWrites(raw, asyncio.get_running_loop())
    held.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert raw.calls == []
    assert held.get_write_buffer_size() == 7 + 38
    held.write(memoryview(b"{}"))
    assert raw.calls == [("write", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")]
    await turn()
    assert len(raw.calls) == 1  # the turn's flush found nothing held


async def test_a_lone_write_waits_only_for_the_end_of_the_turn() -> None:
    raw = Recording()
    held = HeldWrites(raw, asyncio.get_running_loop())
    held.write(b"first")
    held.write(b"second")
    held.write(b"third")
    assert raw.calls == [("write", b"firstsecond")]
    await turn()
    assert raw.calls == [("write", b"firstsecond"), ("write", b"third")]


async def test_what_is_held_goes_out_before_the_connection_closes() -> None:
    raw = Recording()
    held = HeldWrites(raw, asyncio.get_running_loop())
    held.write(b"last answer")
    held.close()
    assert raw.calls == [("write", b"last answer"), ("close", None)]
    await turn()
    assert len(raw.calls) == 2
    # An abort drops what is held, as the transport's own abort drops its buffer.
    other = Recording()
    held = HeldWrites(other, asyncio.get_running_loop())
    held.write(b"never sent")
    held.abort()
    await turn()
    assert other.calls == [("abort", None)]
    # Everything else is the transport's.
    assert held.get_extra_info("sockname") == ("127.0.0.1", 5000)
    assert held.is_closing()
