"""The feed's live events written to the connection as ready-made frames, under uvicorn.

ASGI sends one message per `send`, and uvicorn encodes each one into a websocket frame (in
the `websockets` library) and writes it with a system call of its own. With a thousand
subscribers that is most of what an event costs the server (benchmarks/README.md,
"Fan-out"). A feed's frames are all alike: text, whole, unmasked (server to client), and,
without permessage-deflate, the event's JSON as it is. So the frame of an event is its JSON
behind a header of 2 to 10 bytes, and a subscriber with several events queued can have
them all written at once.

`direct_writer` finds, behind the ASGI send of a websocket, uvicorn's sans-I/O websockets
protocol, and gives a writer that puts frames on its transport when the connection is in
the state where uvicorn's own send would do the same: open, nothing closing, no
compression negotiated, and its transport taking data (uvicorn's flow control). When any of
that is not so, `write` says no and the caller sends through ASGI, which waits or fails as
uvicorn decides. Under any other server (Hypercorn, uvicorn's other websockets
implementations, a middleware wrapping the send) there is no writer and every event goes
through ASGI.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

try:  # uvicorn and websockets are dependencies, but the app runs under other servers too
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    from websockets.protocol import State
except ImportError:  # pragma: no cover
    WebSocketsSansIOProtocol = None  # type: ignore[assignment,misc]
    State = None  # type: ignore[assignment,misc]

_TEXT_WHOLE = 0x81  # FIN, opcode 1 (text)


def text_frame_header(size: int) -> bytes:
    """The header of an unmasked, whole text frame of `size` bytes (RFC 6455, 5.2)."""
    if size < 126:
        return struct.pack("!BB", _TEXT_WHOLE, size)
    if size < 1 << 16:
        return struct.pack("!BBH", _TEXT_WHOLE, 126, size)
    return struct.pack("!BBQ", _TEXT_WHOLE, 127, size)


class DirectWriter:
    """Frames straight to one uvicorn websocket connection's transport."""

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    def write(self, payloads: Sequence[bytes]) -> bool:
        """Write a text frame for each payload (UTF-8 JSON), all in one write. False, and
        nothing written, when uvicorn's own send would not write now."""
        protocol = self._protocol
        if (
            protocol.disconnected
            or protocol.close_sent
            or not protocol.writable.is_set()
            or protocol.conn.state is not State.OPEN
            or protocol.conn.extensions
            or protocol.transport.is_closing()
        ):
            return False
        chunks = []
        for payload in payloads:
            chunks.append(text_frame_header(len(payload)))
            chunks.append(payload)
        protocol.transport.write(b"".join(chunks))
        return True


def direct_writer(send: Any) -> DirectWriter | None:
    """A writer for the connection behind this ASGI send, if uvicorn's sans-I/O websockets
    protocol is that send's own; None otherwise."""
    protocol = getattr(send, "__self__", None)
    if WebSocketsSansIOProtocol is None or not isinstance(protocol, WebSocketsSansIOProtocol):
        return None
    if getattr(send, "__func__", None) is not WebSocketsSansIOProtocol.send:
        return None
    for name in ("disconnected", "close_sent", "writable", "conn", "transport"):
        if not hasattr(protocol, name):  # another uvicorn than the one this was written for
            return None
    return DirectWriter(protocol)
