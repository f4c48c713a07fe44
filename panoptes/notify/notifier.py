"""The notifier's tasks: examine the event log, check for stuck runs, deliver.

Nothing here is on the ingest path. The notifier reads the committed events (the `events`
table) after its cursor, woken by this process's commits (`wake`) or polling every second
for other processes' commits, and takes its own short write turns (through `write`, the
service's writer queue, as every write does) to enqueue, claim and record. Sending happens
outside any transaction, a few at a time, each attempt bounded by its timeout: a receiver
that hangs holds one delivery slot, never a client's message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import suppress
from datetime import datetime
from functools import partial
from typing import Any, Protocol, TypeVar

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from ..models import utcnow
from ..notify_settings import NotifySettings
from . import log as reads
from . import queue
from .queue import Claimed, Outcome
from .send import mail, mask_httpx_logs, post

log = logging.getLogger(__name__)
T = TypeVar("T")

POLL_SECONDS = 1.0
# Passes over the event log are at least this far apart, however often commits wake it:
# under load one pass takes many batches' events, instead of one pass per commit.
PASS_GAP_SECONDS = 0.2
# A lease outlives the longest attempt by this much before another process may take over.
LEASE_MARGIN_SECONDS = 5.0


class Write(Protocol):
    """Run a function in a write transaction (the writer's turn); its result once committed."""

    def __call__(self, operation: Callable[[Session], T]) -> Awaitable[T]: ...


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    event.clear()


class Notifier:
    def __init__(
        self,
        settings: NotifySettings,
        sessions: async_sessionmaker[AsyncSession],
        write: Write,
        base_url: str,
    ) -> None:
        self.settings = settings
        self.base_url = base_url
        self._sessions = sessions
        self._write = write
        # Who holds a lease: unique per process, readable in the table.
        self.me = f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(3)}"
        self._examine_wanted = asyncio.Event()
        self._deliver_wanted = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._seen = -1  # the cursor as this process last saw it
        self._client: httpx.AsyncClient | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.settings.targets)

    async def start(self) -> None:
        if not self.enabled:
            return
        mask_httpx_logs()
        # The cursor is made now, at the newest event, if this is the first start with
        # notifications: what is committed from here on is told. Made at the first look at
        # the log instead, it skipped whatever was committed before that look's write.
        try:
            self._seen = await self._write(queue.start_cursor)
        except Exception:  # the first look makes it then
            log.exception("notifications: making the event log cursor failed")
        self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        loops: list[Callable[[], Coroutine[Any, Any, None]]] = [
            self._examine_forever,
            self._deliver_forever,
        ]
        if self.settings.stuck_minutes > 0:
            loops.append(self._stuck_forever)
        self._tasks = [asyncio.create_task(run(), name=f"panoptes-{run.__name__}") for run in loops]
        targets = ", ".join(f"{t.format} {t.masked}" for t in self.settings.targets)
        log.info("notifications go to %s", targets)

    async def stop(self) -> None:
        """Stop at once: a send cut short stays leased and pending, sent again later."""
        tasks = [*self._tasks, *self._sending]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task
        self._tasks, self._sending = [], set()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def wake(self) -> None:
        """Something was committed here: look at the event log now."""
        self._examine_wanted.set()

    # ---- examining the event log

    async def _examine_forever(self) -> None:
        while True:
            more = False
            try:
                more = await self.examine()
            except Exception:
                log.exception("notifications: examining the event log failed")
                await asyncio.sleep(POLL_SECONDS)
            await asyncio.sleep(PASS_GAP_SECONDS)
            if not more:
                await _wait(self._examine_wanted, POLL_SECONDS)

    async def examine(self) -> bool:
        """Enqueue what the new events make due; whether more events wait."""
        async with self._sessions() as session:
            head = await reads.head(session)
            if head <= self._seen:
                return False
            at = await reads.cursor(session)
            if at is None:
                at = await self._write(queue.start_cursor)
            if head <= at:
                self._seen = at
                return False
            batch = await reads.events_after(session, at, head)
        op = partial(
            queue.enqueue, events=batch, settings=self.settings, base=self.base_url, now=utcnow()
        )
        made = await self._write(op)
        self._seen = batch.last
        if made:
            self._deliver_wanted.set()
        return batch.more

    async def _stuck_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.stuck_check_seconds)
            try:
                await self.check_stuck()
            except Exception:
                log.exception("notifications: the stuck check failed")

    async def check_stuck(self) -> int:
        op = partial(queue.mark_stuck, settings=self.settings, base=self.base_url, now=utcnow())
        made: int = await self._write(op)
        if made:
            self._deliver_wanted.set()
        return made

    # ---- delivering

    async def _deliver_forever(self) -> None:
        while True:
            try:
                await self.deliver()
            except Exception:
                log.exception("notifications: claiming deliveries failed")
            await _wait(self._deliver_wanted, POLL_SECONDS)

    async def deliver(self) -> int:
        """Claim what is due, as many as there are free slots, and start sending it."""
        free = self.settings.concurrency - len(self._sending)
        if free <= 0:
            return 0
        now = utcnow()
        async with self._sessions() as session:
            if not await reads.due_now(session, now):
                return 0
        lease = self.settings.timeout * 3 + LEASE_MARGIN_SECONDS
        claimed = await self._write(
            partial(queue.claim, me=self.me, now=now, lease=lease, limit=free)
        )
        for item in claimed:
            task = asyncio.create_task(self._deliver_one(item), name=f"panoptes-send-{item.id}")
            self._sending.add(task)
            task.add_done_callback(self._sent)
        return len(claimed)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._deliver_wanted.set()  # a slot is free

    async def _attempt(self, item: Claimed) -> Outcome:
        target = self.settings.target(item.target)
        if target is None:
            return Outcome(False, "no target", 0, "the target is no longer configured", True)
        if target.format == "email":
            return await mail(target, item.payload, self.settings)
        assert self._client is not None
        return await post(self._client, target, item.payload, self.settings)

    async def _deliver_one(self, item: Claimed) -> None:
        try:
            result = await self._attempt(item)
        except Exception as exc:  # a bug must cost attempts, not loop on one message
            log.exception("notifications: delivery %d could not be attempted", item.id)
            result = Outcome(False, type(exc).__name__, 0, f"{type(exc).__name__} (see the log)")
        op = partial(
            queue.record,
            note_id=item.id,
            me=self.me,
            result=result,
            settings=self.settings,
            now=utcnow(),
        )
        try:
            status = await self._write(op)
        except Exception:
            log.exception("notifications: recording delivery %d failed (it is sent again)", item.id)
            return
        target = self.settings.target(item.target)
        shown = target.masked if target else item.target
        event = item.payload.get("event")
        if result.ok:
            log.info("notification %d (%s) delivered to %s", item.id, event, shown)
        else:
            log.warning(
                "notification %d (%s) to %s: attempt %d failed (%s), now %s",
                *(item.id, event, shown, item.attempts + 1, result.error, status),
            )

    # ---- the log

    async def forget_before(self, cutoff: datetime) -> int:
        """Retention: the log of what was delivered or given up before `cutoff` goes."""
        forgotten: int = await self._write(partial(queue.forget_before, cutoff=cutoff))
        return forgotten

    async def deliveries(
        self, limit: int, offset: int, statuses: list[str] | None
    ) -> dict[str, Any]:
        async with self._sessions() as session:
            return await reads.deliveries(session, self.settings, limit, offset, statuses)
