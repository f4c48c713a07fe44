"""Whether the feed compresses its frames (permessage-deflate).

Hypercorn 0.18 always agrees to permessage-deflate when a browser offers it (browsers always
do) and has no setting for it. Measured with 1,000 feed subscribers (benchmarks/fanout.py):
the compressor Hypercorn keeps per connection costs about 200 KiB of memory each, and
compressing every message once per subscriber is the largest single cost of fan-out. Feed
messages are small JSON objects, so compression saves little bandwidth. panoptes therefore
declines the extension unless PANOPTES_WS_COMPRESSION is on.

Hypercorn builds the extension from the name `PerMessageDeflate` in its ws_stream module at
each handshake; declining means putting there an extension that accepts no offer. An
extension that never accepted stays disabled, so frames go out uncompressed.
"""

from __future__ import annotations

from hypercorn.protocol import ws_stream
from wsproto.extensions import PerMessageDeflate


class DeclinedPerMessageDeflate(PerMessageDeflate):
    """permessage-deflate that answers every client offer with 'no'."""

    def accept(self, offer: str) -> bool | str | None:
        return None


def set_compression(enabled: bool) -> None:
    """Make this process's Hypercorn accept or decline permessage-deflate from now on."""
    ws_stream.PerMessageDeflate = (  # type: ignore[misc]
        PerMessageDeflate if enabled else DeclinedPerMessageDeflate
    )
