"""The websocket feed: /ws (every workflow) and /ws/workflow/<id> (one workflow's jobs).

Protocol (docs/feed.md): the server sends JSON text messages, each with a "type"; event
messages, and only they, carry a "seq". It starts with {"type": "hello", "head": N}, N the
newest stored seq. A client that reconnects with ?since=<seq>
first gets every event after that seq from the database, then live events, with no gap
and no duplicate: the subscription is opened before the replay, and live events already
replayed are skipped by seq. A subscriber that falls behind gets {"type": "resync"} and the
server replays what it missed from the database. {"type": "ping"} comes every
PANOPTES_WS_PING_SECONDS so proxies keep the connection open.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import urlsplit

import orjson
from quart import Blueprint, Quart, websocket

from .. import __version__, queries
from ..errors import BadRequest, Forbidden, NotFound, TooManyConnections, Unavailable
from ..hub import RESYNC, SHUTDOWN, FeedItem, Subscription
from ..models import MAX_BIGINT
from .frames import DirectWriter, direct_writer
from .respond import service

bp = Blueprint("feed", __name__)


def _origin_allowed() -> bool:
    origin = websocket.headers.get("Origin")
    if origin is None:
        return True  # not a browser: scripts and other servers
    allowed = service().config.allowed_origins
    if "*" in allowed or origin.rstrip("/") in allowed:
        return True
    return urlsplit(origin).netloc == websocket.headers.get("Host", "")


def _since() -> int | None:
    raw = websocket.args.get("since")
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise BadRequest("since must be a sequence number (a whole number >= 0)")
    return int(raw)


async def _send(message: dict[str, object]) -> None:
    await websocket.send(orjson.dumps(message).decode())


# A live feed's events go straight to the server's ASGI send (kept in the scope by
# KeepServerSend), past Quart's websocket layer: its send yields a whole pass of the loop and
# fires a signal for every message, which at a thousand subscribers is most of what an event
# costs (benchmarks/README.md, "Fan-out"). Everything else (accept, hello, replay, close)
# still goes through Quart.
SERVER_SEND = "panoptes.send"
# Events a subscriber sends in a row, on one turn, when they have piled up in its queue.
SENDS_IN_A_ROW = 8


class KeepServerSend:
    """ASGI middleware: keeps each websocket's server send in its scope (SERVER_SEND)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            scope[SERVER_SEND] = send
        await self.app(scope, receive, send)


def install(app: Quart) -> None:
    app.asgi_app = KeepServerSend(app.asgi_app)  # type: ignore[method-assign]


ServerSend = Callable[[dict[str, str]], Awaitable[None]]


class _Stream:
    """One connection's position in the event sequence (its subscription's `last`)."""

    def __init__(self, subscription: Subscription, last: int) -> None:
        self.subscription = subscription
        subscription.last = last

    async def replay(self) -> None:
        running = service()
        subscription = self.subscription
        while True:
            async with running.sessions() as session:
                missed = await queries.events_since(
                    session, subscription.last, subscription.workflow_id
                )
            for message in missed:
                await subscription.take_turn()  # a replay waits its turns too
                await websocket.send(orjson.dumps(message).decode())
                subscription.last = message["seq"]
            if len(missed) < 1000:
                return

    async def follow(self, ping_seconds: float) -> None:
        subscription = self.subscription
        send: ServerSend = websocket.scope[SERVER_SEND]  # type: ignore[literal-required]
        writer = direct_writer(send)
        if writer is not None:
            subscription.write_directly(writer)  # the hub writes while this waits
        while True:
            items = await subscription.next_few(ping_seconds, SENDS_IN_A_ROW)
            if not items:
                await _send({"type": "ping"})
                continue
            events: list[FeedItem] = []
            for item in items:
                if item is SHUTDOWN or item is RESYNC:
                    await self._send_events(events, send, writer)
                    events = []
                    if item is SHUTDOWN:
                        await websocket.close(1001, "panoptes is shutting down")
                        return
                    await _send({"type": "resync"})
                    await self.replay()
                elif item.seq > subscription.last and (not events or item.seq > events[-1].seq):
                    events.append(item)
            await self._send_events(events, send, writer)

    async def _send_events(
        self, events: list[FeedItem], send: ServerSend, writer: DirectWriter | None
    ) -> None:
        """Live events in a row: as frames in one write when the connection takes them so
        (frames.py), else one ASGI send each."""
        if not events:
            return
        subscription = self.subscription
        if writer is not None and writer.write([item.data for item in events]):
            subscription.last = events[-1].seq
            return
        for item in events:
            await send({"type": "websocket.send", "text": item.text})
            subscription.last = item.seq


async def _serve(workflow_id: int | None) -> None:
    if not _origin_allowed():
        raise Forbidden("this Origin may not open the feed; see PANOPTES_ALLOWED_ORIGINS")
    since = _since()
    running = service()
    if workflow_id is not None:
        if workflow_id > MAX_BIGINT:  # no such row can exist; the database would refuse it
            raise NotFound(f"no workflow with id {workflow_id}")
        async with running.sessions() as session:
            if not await queries.workflow_exists(session, workflow_id):
                raise NotFound(f"no workflow with id {workflow_id}")
    limit = running.config.max_feed
    if limit and running.hub.subscriber_count >= limit:
        raise Unavailable(
            f"this server already holds {limit} feed connections (PANOPTES_MAX_FEED); "
            "try again later",
            error="too many feed connections",
            headers={"Retry-After": "30"},
        )
    with (
        _counted_client(running.feed_clients, running.config.max_feed_per_client),
        running.hub.subscribe(workflow_id) as subscription,
    ):
        await websocket.accept()
        async with running.sessions() as session:
            head = await queries.last_seq(session)
        # A since above the newest stored seq comes from another database (this one was
        # replaced or reset): nothing numbered at or below it here is what the client saw.
        # Continue from the present, so it gets what comes next; the hello, whose head is
        # below its since, tells it to drop what it holds (docs/feed.md).
        stream = _Stream(subscription, head if since is None or since > head else since)
        await _send(
            {"type": "hello", "head": head, "workflow_id": workflow_id, "version": __version__}
        )
        if since is not None:
            await stream.replay()
        reader = asyncio.create_task(_drain_incoming())
        try:
            await stream.follow(running.config.ws_ping_seconds)
        finally:
            reader.cancel()
            with suppress(asyncio.CancelledError):
                await reader


@contextmanager
def _counted_client(open_by_client: Counter[str], limit: int) -> Iterator[None]:
    """Hold one of the feed connections a client address may have (429 when none is left)."""
    client = websocket.remote_addr or "unknown"
    if limit and open_by_client[client] >= limit:
        raise TooManyConnections(
            f"{client} already has {limit} feed connections open (PANOPTES_MAX_FEED_PER_CLIENT)"
        )
    open_by_client[client] += 1
    try:
        yield
    finally:
        open_by_client[client] -= 1
        if not open_by_client[client]:
            del open_by_client[client]


async def _drain_incoming() -> None:
    """Read (and ignore) what the client sends, so its pings and close are processed."""
    while True:
        await websocket.receive()


@bp.websocket("/ws")
async def feed_all() -> None:
    await _serve(None)


@bp.websocket("/ws/workflow/<int:workflow_id>")
async def feed_workflow(workflow_id: int) -> None:
    await _serve(workflow_id)
