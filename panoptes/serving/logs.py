"""Tokens out of the logs, whichever HTTP server writes them.

The Snakemake 9 plugin 0.x puts the token in the path (/t/<token>/...): every access-log
line of its requests would hold it. Scripts send it as a header, browsers as a cookie.
"""

from __future__ import annotations

import logging
import re

_SECRETS = (
    # a path that begins /t/ (as a request line or query shows it), or a URL's
    (re.compile(r"(^|[\s\"'(=]|://[^/\s\"']+)/t/[^/?#\s\"']+"), r"\1/t/<token>"),
    (re.compile(r"(?i)\b(bearer)\s+[^\s\"',]+"), r"\1 <token>"),
    (re.compile(r"\b(panoptes_token=)[^;\s\"',]+"), r"\1<token>"),
)
# The loggers whose handlers write lines about requests: ours (through the root logger's
# handlers), Hypercorn's and uvicorn's (theirs need not pass on to the root).
LOGGERS = ("", "hypercorn.access", "hypercorn.error", "uvicorn.access", "uvicorn.error")


def redact(text: str, token: str | None = None) -> str:
    """`text` without a panoptes token in it: in a path, a header, a cookie, or as itself."""
    if token:
        text = text.replace(token, "<token>")
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RedactTokens(logging.Filter):
    """A handler filter: each line it lets through is redacted, traceback included, of the
    patterns above and of the token the app serves with (one per process, as logging is)."""

    token: str | None = None  # set by redact_logs

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, RedactTokens.token)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, RedactTokens.token)
        return True


def redact_logs(token: str | None) -> None:
    """Redact `token` (and the patterns) from every line of the handlers of LOGGERS. Called
    when serving starts, whichever server and flags run the app; Hypercorn's loggers may
    come later, and its RedactingLogger sees to them."""
    RedactTokens.token = token
    for name in LOGGERS:
        redact_handlers(logging.getLogger(name))


def redact_handlers(logger: logging.Logger | None) -> None:
    for handler in logger.handlers if logger is not None else ():
        if not any(isinstance(f, RedactTokens) for f in handler.filters):
            handler.addFilter(RedactTokens())
