"""Snakemake logger plugin that reports workflow runs to a panoptes server.

Enable it with ``snakemake --logger panoptes --logger-panoptes-address http://host:5000``.
"""

# No ``from __future__ import annotations`` here: Snakemake builds the --logger-panoptes-*
# options from the settings' field types, and needs them as types, not strings.
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Optional

from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.settings import LogHandlerSettingsBase

from . import sender as _sender
from .files import log_tails, read_benchmark
from .messages import Message, Translator
from .registration import VERSION, RunDescription
from .sender import DeliveryStats, Sender, SenderConfig

__version__ = VERSION
__all__ = ["LogHandler", "LogHandlerSettings", "__version__"]

DEFAULT_TIMEOUT = 10.0
DEFAULT_FLUSH_TIMEOUT = 5.0


@dataclass
class LogHandlerSettings(LogHandlerSettingsBase):
    """Settings of ``--logger panoptes``, given as ``--logger-panoptes-<name>``."""

    address: Optional[str] = field(  # noqa: UP045 (Snakemake reads Optional[...] only)
        default=None,
        metadata={
            "help": "Address of the panoptes server, e.g. http://127.0.0.1:5000. Required.",
            "env_var": True,
            "required": True,
        },
    )
    timeout: Optional[float] = field(  # noqa: UP045
        default=DEFAULT_TIMEOUT,
        metadata={
            "help": "Seconds to wait for the server's answer to one request "
            "(connecting waits 3 s at most).",
            "env_var": False,
            "required": False,
        },
    )
    workflow_id: Optional[str] = field(  # noqa: UP045
        default=None,
        metadata={
            "help": "Stable name of the run in panoptes; re-running with the same id "
            "reuses the finished run of that name.",
            "env_var": True,
            "required": False,
        },
    )
    token: Optional[str] = field(  # noqa: UP045
        default=None,
        metadata={
            "help": "Token of a panoptes server started with PANOPTES_TOKEN, sent as "
            "'Authorization: Bearer'. Defaults to the PANOPTES_TOKEN environment variable; "
            "prefer an environment variable to this option, which shows in ps.",
            "env_var": True,
            "required": False,
        },
    )
    no_logs: bool = field(
        default=False,
        metadata={
            # Snakemake makes this a flag, also set by the env var =1/true/yes/on.
            "help": "Do not send the end of a failed job's log files (they are sent by "
            "default, so log contents leave this machine).",
            "env_var": True,
            "required": False,
        },
    )
    flush_timeout: Optional[float] = field(  # noqa: UP045
        default=DEFAULT_FLUSH_TIMEOUT,
        metadata={
            "help": "Seconds Snakemake waits at exit for unsent messages to reach the server.",
            "env_var": False,
            "required": False,
        },
    )


class _AcceptEverything(logging.Filter):
    """Snakemake's default filter follows --quiet; monitoring must not depend on it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return True


class LogHandler(LogHandlerBase):
    """Translates each record into panoptes messages and hands them to a sender thread."""

    def __post_init__(self) -> None:
        settings = self.settings
        if not isinstance(settings, LogHandlerSettings) or not settings.address:
            raise ValueError(
                "snakemake-logger-plugin-panoptes needs --logger-panoptes-address "
                "(or SNAKEMAKE_LOGGER_PANOPTES_ADDRESS)."
            )
        self.addFilter(_AcceptEverything())
        self._dryrun = bool(getattr(self.common_settings, "dryrun", False))
        self._flush_timeout = _seconds(settings.flush_timeout, DEFAULT_FLUSH_TIMEOUT)
        self._closed = False
        token = settings.token or os.environ.get("PANOPTES_TOKEN") or None
        self._translator = Translator(
            read_logs=None if settings.no_logs else log_tails,
            read_benchmark=read_benchmark,
            print_shellcmds=bool(getattr(self.common_settings, "printshellcmds", False)),
        )
        self._run = RunDescription.capture(token)
        self._sender = Sender(
            SenderConfig(
                address=settings.address.rstrip("/"),
                timeout=_seconds(settings.timeout, DEFAULT_TIMEOUT) or DEFAULT_TIMEOUT,
                workflow_id=settings.workflow_id or None,
                token=token,
                queue_size=_sender.QUEUE_SIZE,
                retry_delays=_sender.RETRY_DELAYS,
            ),
            describe=self._registration_form,
        )

    @property
    def delivery_stats(self) -> DeliveryStats:
        return self._sender.stats

    def emit(self, record: logging.LogRecord) -> None:
        # A dry run executes nothing, so there is no run to monitor.
        if self._dryrun or self._closed:
            return
        try:
            messages = self._translator.translate(record)
            timestamp = time.asctime(time.localtime(record.created))
            for message in messages:
                self._sender.send(message, timestamp)
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        """Send the run's end and wait ``flush_timeout`` s at most for delivery. Idempotent."""
        try:
            if not self._closed:
                self._closed = True
                self._finish()
        except Exception:  # Snakemake is shutting down: never fail it
            logging.getLogger(__name__).debug("panoptes: close failed", exc_info=True)
        finally:
            super().close()

    def _finish(self) -> None:
        if self._dryrun:
            return
        final: Message | None = self._translator.final_message()
        if final is not None:
            self._sender.send_last(final)
        self._sender.close(self._flush_timeout)

    def _registration_form(self) -> dict[str, str]:
        return self._run.form(self._translator.snakefile_main)

    @property
    def writes_to_stream(self) -> bool:
        return False

    @property
    def writes_to_file(self) -> bool:
        return False

    @property
    def has_filter(self) -> bool:
        return True

    @property
    def has_formatter(self) -> bool:
        return False

    @property
    def needs_rulegraph(self) -> bool:
        return True


def _seconds(value: float | None, default: float) -> float:
    if value is None:
        return default
    return max(float(value), 0.0)
