"""Delivering messages to panoptes from a thread of its own.

Snakemake calls the plugin on its logging thread, and everything that thread waits for delays
the workflow's exit. So the handler only puts messages in a bounded :class:`Outbox`; a daemon
thread registers the run on the first message and posts the messages one by one, in order.
"""

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from .registration import redact

LOG = logging.getLogger("snakemake_logger_plugin_panoptes")

#: Messages waiting to be sent; more are dropped (and counted).
QUEUE_SIZE = 10_000
#: Waits before the retries of a message that met a network error or a 5xx answer.
RETRY_DELAYS = (0.5, 1.0, 2.0)
#: Connecting to a server should be quick; the ``timeout`` setting is for its answer.
CONNECT_TIMEOUT = 3.0
_RETRIED_STATUSES = frozenset({408, 429})
_MAX_REJECTION_WARNINGS = 20
Describe = Callable[[], dict[str, str]]


@dataclass(frozen=True)
class SenderConfig:
    address: str
    timeout: float = 10.0
    workflow_id: str | None = None
    token: str | None = None
    queue_size: int = QUEUE_SIZE
    retry_delays: tuple[float, ...] = RETRY_DELAYS


@dataclass
class DeliveryStats:
    sent: int = 0
    rejected: int = 0  # refused by the server (4xx)
    failed: int = 0  # dropped after network errors, timeouts or 5xx answers
    overflowed: int = 0  # dropped because too many were waiting
    unsent: int = 0  # still waiting when close() stopped waiting

    @property
    def undelivered(self) -> int:
        return self.rejected + self.failed + self.overflowed + self.unsent


@dataclass(frozen=True)
class Item:
    message: dict[str, Any]
    timestamp: str


class Outbox:
    """A bounded FIFO that also tells when everything put into it has been handled."""

    def __init__(self, maxsize: int) -> None:
        self._items: deque[Item] = deque()
        self._maxsize = maxsize
        self._cond = threading.Condition()
        self._unfinished = 0
        self._stopped = False

    def put(self, item: Item, force: bool = False) -> bool:
        with self._cond:
            if self._stopped or (len(self._items) >= self._maxsize and not force):
                return False
            self._items.append(item)
            self._unfinished += 1
            self._cond.notify_all()
            return True

    def get(self) -> Item | None:
        """The next item; None once stopped."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or self._stopped)
            return None if self._stopped else self._items.popleft()

    def done(self) -> None:
        with self._cond:
            self._unfinished -= 1
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._unfinished <= 0, max(timeout, 0.0))

    def stop(self) -> int:
        """Stop handing out items; returns how many were not handled."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            return self._unfinished


@dataclass(frozen=True)
class Attempt:
    """One request's result: a response if it succeeded, else why not and if worth retrying."""

    response: requests.Response | None
    problem: str = ""
    retry: bool = False


class Sender:
    def __init__(self, config: SenderConfig, describe: Describe) -> None:
        self._config = config
        self._describe = describe
        self._base = config.address.rstrip("/")
        self._shown_address = redact(self._base, config.token)
        self._timeout = (min(config.timeout, CONNECT_TIMEOUT), config.timeout)
        self._outbox = Outbox(config.queue_size)
        self._stop = threading.Event()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._workflow_id: Any = None
        self.stats = DeliveryStats()
        # The circuit breaker: once a message was dropped for want of a server, the next ones
        # get a single try each until one gets through, instead of the whole retry budget.
        self._down = False
        self._dropped_while_down = 0
        self._last_problem = ""
        self._rejections_warned: set[str] = set()
        self._overflow_warned = False
        self._quiet = False
        self._closed = False

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def send(self, message: dict[str, Any], timestamp: str | None = None) -> None:
        """Queue a message; drop it (counted, warned once) when too many are waiting."""
        self._queue(message, timestamp, force=False)

    def close(self, flush_timeout: float) -> DeliveryStats:
        """Wait up to ``flush_timeout`` s for the queue to drain, then give up on the rest."""
        if self._closed:
            return self.stats
        self._closed = True
        if self._thread is not None:
            self._outbox.wait_idle(flush_timeout)
        self._quiet = True  # from now on the thread may outlive us: it must not speak
        self.stats.unsent = self._outbox.stop() if self._thread is not None else 0
        self._stop.set()
        self._report(self.stats)
        return self.stats

    def send_last(self, message: dict[str, Any]) -> None:
        """Queue the run's final message even when the queue is full."""
        self._queue(message, None, force=True)

    def _queue(self, message: dict[str, Any], timestamp: str | None, force: bool) -> None:
        if self._closed:
            return
        item = Item(message, timestamp or time.asctime())
        if not self._outbox.put(item, force=force):
            self.stats.overflowed += 1
            if not self._overflow_warned:
                self._overflow_warned = True
                self._warn(
                    "panoptes: %d messages are waiting for %s; new ones are dropped until "
                    "it catches up",
                    self._config.queue_size,
                    self._shown_address,
                )
        self._start()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="panoptes-sender", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        session = self._new_session()
        try:
            while (item := self._outbox.get()) is not None:
                try:
                    self._deliver(session, item)
                except Exception as exc:  # a bug here must not stop the messages after it
                    self.stats.failed += 1
                    LOG.debug("panoptes: could not send a message: %r", exc)
                finally:
                    self._outbox.done()
        finally:
            session.close()

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        # Like 0.3.0: a server behind a private CA is verified with the usual bundles.
        ca_bundle = (
            os.environ.get("REQUESTS_CA_BUNDLE")
            or os.environ.get("SSL_CERT_FILE")
            or os.environ.get("CURL_CA_BUNDLE")
        )
        if ca_bundle:
            session.verify = ca_bundle
        if self._config.token:
            session.headers["Authorization"] = f"Bearer {self._config.token}"
        return session

    def _deliver(self, session: requests.Session, item: Item) -> None:
        if self._workflow_id is None and not self._register(session):
            return
        form = {
            "msg": json.dumps(item.message, default=str),
            "timestamp": item.timestamp,
            "id": self._workflow_id,
        }
        if self._call(session, "POST", "/update_workflow_status", data=form) is not None:
            self.stats.sent += 1

    def _register(self, session: requests.Session) -> bool:
        params = {"workflow_id": self._config.workflow_id} if self._config.workflow_id else None
        response = self._call(
            session, "GET", "/create_workflow", params=params, data=self._registration_form()
        )
        if response is None:
            return False
        workflow_id = _workflow_id(response)
        if workflow_id is None:
            self.stats.rejected += 1
            self._warn_rejected("/create_workflow", "its answer has no workflow id")
            return False
        self._workflow_id = workflow_id
        return True

    def _registration_form(self) -> dict[str, str]:
        try:
            return self._describe()
        except Exception as exc:  # describing the run is a nicety; registering is not
            LOG.debug("panoptes: could not describe the run: %r", exc)
            return {}

    def _call(
        self, session: requests.Session, method: str, path: str, **kwargs: Any
    ) -> requests.Response | None:
        """Send one request, retried while it fails for want of a server; None if it failed."""
        url = self._base + path
        attempt = self._attempt(session, method, url, **kwargs)
        for delay in () if self._down else self._config.retry_delays:
            if not attempt.retry or self._stop.wait(delay):
                break
            attempt = self._attempt(session, method, url, **kwargs)
        if attempt.response is not None:
            self._reachable()
            return attempt.response
        if attempt.retry:
            self.stats.failed += 1
            self._unreachable(attempt.problem)
        else:
            self.stats.rejected += 1
            self._reachable()
            self._warn_rejected(path, attempt.problem)
        return None

    def _attempt(self, session: requests.Session, method: str, url: str, **kwargs: Any) -> Attempt:
        try:
            response = session.request(method, url, timeout=self._timeout, **kwargs)
        except requests.ConnectTimeout:
            return Attempt(None, f"ConnectTimeout: no connection in {self._timeout[0]:g} s", True)
        except requests.ReadTimeout:
            return Attempt(None, f"ReadTimeout: no answer in {self._timeout[1]:g} s", True)
        except requests.RequestException as exc:
            return Attempt(None, _describe_failure(exc), retry=True)
        status = response.status_code
        if 200 <= status < 300:
            return Attempt(response)
        retry = status >= 500 or status in _RETRIED_STATUSES
        return Attempt(None, f"HTTP {status}: {_error_text(response)}", retry=retry)

    def _unreachable(self, problem: str) -> None:
        self._dropped_while_down += 1
        self._last_problem = problem
        if not self._down:
            self._down = True
            self._warn(
                "panoptes: cannot reach %s (%s); messages are dropped until it answers again",
                self._shown_address,
                problem,
            )

    def _reachable(self) -> None:
        if self._down:
            self._down = False
            self._warn(
                "panoptes: %s answers again; %d messages were dropped meanwhile",
                self._shown_address,
                self._dropped_while_down,
            )
            self._dropped_while_down = 0

    def _warn_rejected(self, path: str, problem: str) -> None:
        # One warning per kind of refusal, so that a server refusing everything is not a flood.
        key = f"{path} {problem}"
        if key in self._rejections_warned or len(self._rejections_warned) > _MAX_REJECTION_WARNINGS:
            return
        self._rejections_warned.add(key)
        self._warn(
            "panoptes: %s%s refused a message (%s); it is dropped",
            self._shown_address,
            path,
            problem,
        )

    def _report(self, stats: DeliveryStats) -> None:
        if not stats.undelivered:
            return
        details = [
            f"{count} {what}"
            for count, what in (
                (stats.failed, "while it was unreachable"),
                (stats.rejected, "refused by it"),
                (stats.overflowed, "because too many were waiting"),
                (stats.unsent, "still waiting at exit"),
            )
            if count
        ]
        last = f"; last problem: {self._last_problem}" if self._last_problem else ""
        LOG.warning(
            "panoptes: %d of %d messages were not delivered to %s (%s)%s",
            stats.undelivered,
            stats.undelivered + stats.sent,
            self._shown_address,
            ", ".join(details),
            redact(last, self._config.token),
        )

    def _warn(self, text: str, *args: Any) -> None:
        if not self._quiet:
            LOG.warning(redact(text % args, self._config.token))


def _describe_failure(exc: BaseException) -> str:
    """``ConnectionError: Connection refused`` rather than requests' nested wrapper texts."""
    pending, seen = [exc], set()
    root: OSError | None = None
    while pending:  # requests wraps urllib3's errors, which wrap the socket's
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and isinstance(current.strerror, str):
            root = current
        links = [*current.args, getattr(current, "reason", None)]
        links += [current.__cause__, current.__context__]
        pending.extend(link for link in links if isinstance(link, BaseException))
    detail = root.strerror if root is not None else str(exc)
    return f"{type(exc).__name__}: {detail}"[:300]


def _workflow_id(response: requests.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("id") if isinstance(body, dict) else None


def _error_text(response: requests.Response) -> str:
    """The server's JSON error (panoptes answers ``{"error", "detail"}``), else its text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ("error" in body or "detail" in body):
        return json.dumps({k: body[k] for k in ("error", "detail") if k in body})[:500]
    return (response.text or response.reason or "").strip()[:200]
