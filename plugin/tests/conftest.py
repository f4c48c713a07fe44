"""Fixtures: a loopback receiver, and the handler driven the way Snakemake 9 drives it.

Snakemake attaches a QueueHandler to its logger and runs plugin handlers in a QueueListener
thread (logging.py LoggerManager); at the end LoggerManager.stop() stops the listener, then
flushes and closes each handler. :class:`Run` does the same.
"""

import itertools
import logging
import logging.handlers
import queue
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from receiver import Receiver
from snakemake_interface_logger_plugins.settings import OutputSettingsLoggerInterface

from snakemake_logger_plugin_panoptes import LogHandler, LogHandlerSettings

_names = itertools.count()


class OutputSettings(OutputSettingsLoggerInterface):
    """The common settings Snakemake passes every logger plugin (its OutputSettings)."""

    def __init__(self, dryrun: bool = False, printshellcmds: bool = False) -> None:
        self.printshellcmds = printshellcmds
        self.nocolor = True
        self.quiet = None
        self.debug_dag = False
        self.verbose = False
        self.show_failed_logs = False
        self.stdout = False
        self.dryrun = dryrun


class Run:
    """A handler set up as Snakemake sets up plugin handlers; ``log`` is Snakemake's logger."""

    def __init__(self, handler: LogHandler) -> None:
        self.handler = handler
        self._queue: queue.Queue[logging.LogRecord] = queue.Queue(-1)
        self.log = logging.getLogger(f"snakemake.logging.test{next(_names)}")
        self.log.propagate = False
        self.log.setLevel(logging.INFO)
        self._queue_handler = logging.handlers.QueueHandler(self._queue)
        self.log.addHandler(self._queue_handler)
        self._listener = logging.handlers.QueueListener(
            self._queue, handler, respect_handler_level=True
        )
        self._listener.start()
        self.stopped = False

    def drain(self) -> None:
        """Let the listener hand every record logged so far to the handler."""
        self._listener.stop()
        self._listener.start()

    def stop(self) -> None:
        """LoggerManager.stop(): stop the listener, then flush and close the handler."""
        if self.stopped:
            return
        self.stopped = True
        self._listener.stop()
        self.handler.flush()
        self.handler.close()
        self.log.removeHandler(self._queue_handler)


MakeRun = Callable[..., Run]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def make_run(receiver: Receiver) -> Iterator[MakeRun]:
    """``make_run(address=..., dryrun=..., **settings)`` gives a started :class:`Run`."""
    runs: list[Run] = []

    def make(
        address: str | None = None,
        dryrun: bool = False,
        printshellcmds: bool = False,
        **settings: Any,
    ) -> Run:
        settings.setdefault("flush_timeout", 5.0)
        handler = LogHandler(
            common_settings=OutputSettings(dryrun=dryrun, printshellcmds=printshellcmds),
            settings=LogHandlerSettings(address=address or receiver.url, **settings),
        )
        run = Run(handler)
        runs.append(run)
        return run

    yield make
    receiver.release.set()
    for run in runs:
        run.stop()
        thread = run.handler._sender.thread
        if thread is not None:
            thread.join(15)
            assert not thread.is_alive(), "the sender thread did not end"


@pytest.fixture
def warnings_seen(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """The plugin's warnings so far."""
    caplog.set_level(logging.WARNING, logger="snakemake_logger_plugin_panoptes")

    def seen() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name.startswith("snakemake_logger_plugin_panoptes")
            and r.levelno >= logging.WARNING
        ]

    return seen
