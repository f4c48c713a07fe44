"""uvicorn's HTTP protocol (httptools), with each response's head and body sent together.

uvicorn writes a response's head to the socket when the app starts the response, and its
body when the app sends it: two writes, two segments on the wire, for every ingest answer.
On loopback each write also wakes the client, so an answer in two halves costs both sides
more than one in a piece (uvicorn patched this way in an earlier session: 4 to 5% less of
the server's CPU per message, 30% less of the load generator's; benchmarks/README.md has
this round's figures with it). Here a write is held until the next one
or the end of the event loop's turn, whichever comes first: a head and the body the app
sends right after it leave in one write, and nothing waits longer than the current turn
of the loop. Order is kept, and whatever is held goes out before the connection closes.
A connection upgraded to a websocket gets the socket's own transport, as before.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeldWrites:
    """A transport whose writes are held until the next write or the loop's next turn."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is None:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._held = None
            self.transport.write(held + data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self.transport.is_closing():
                self.transport.write(held)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self._held = None
        self.transport.abort()

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() + len(self._held or b"")

    def __getattr__(self, name: str) -> Any:  # everything else is the transport's own
        return getattr(self.transport, name)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a HeldWrites transport."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses, only alike.)
        held = HeldWrites(cast(asyncio.Transport, transport), self.loop)
        super().connection_made(held)  # type: ignore[arg-type]

    def handle_websocket_upgrade(self) -> None:
        held = self.transport
        if isinstance(held, HeldWrites):
            held.flush()
            self.transport = held.transport
        super().handle_websocket_upgrade()
