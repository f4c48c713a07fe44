"""One delivery attempt: an HTTP POST (httpx) or an email (smtplib, in a thread), bounded
by the per-attempt timeout. What it reports never holds a URL's secret part or the SMTP
password."""

from __future__ import annotations

import asyncio
import logging
import re
import smtplib
import ssl
import time
from email.message import EmailMessage

import httpx

from ..notify_settings import NotifySettings, Smtp, Target, mask_url
from .formats import email, http_post
from .queue import Outcome

_URL = re.compile(r"https?://[^\s\"'<>]+")


class MaskUrls(logging.Filter):
    """httpx logs every request's full URL at INFO: a webhook's secret. Masked here."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        record.msg, record.args = _URL.sub(lambda m: mask_url(m.group()), text), None
        return True


def mask_httpx_logs() -> None:
    httpx_log = logging.getLogger("httpx")
    if not any(isinstance(f, MaskUrls) for f in httpx_log.filters):
        httpx_log.addFilter(MaskUrls())


# Answers that no retry changes: the receiver refuses this request as it is.
RETRIED_4XX = {408, 409, 425, 429}


def _ms(started: float) -> int:
    return round(1000 * (time.perf_counter() - started))


def _clean(text: str, *secrets: str) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, mask_url(secret) if "://" in secret else "…")
    return text[:300]


async def post(
    client: httpx.AsyncClient, target: Target, payload: dict[str, object], settings: NotifySettings
) -> Outcome:
    request = http_post(target, payload, settings.secret, time.time())
    started = time.perf_counter()
    try:
        async with asyncio.timeout(settings.timeout):
            response = await client.post(
                target.url, content=request.body, headers=request.headers, timeout=settings.timeout
            )
    except (httpx.HTTPError, TimeoutError, OSError) as exc:
        detail = _clean(f"{type(exc).__name__}: {exc}".rstrip(": "), target.url)
        return Outcome(False, type(exc).__name__, _ms(started), detail)
    status = response.status_code
    if 200 <= status < 300:
        return Outcome(True, status, _ms(started))
    final = 400 <= status < 500 and status not in RETRIED_4XX
    detail = _clean(f"HTTP {status}: {response.text[:200]}", target.url)
    return Outcome(False, status, _ms(started), detail, final)


def _send_mail(smtp: Smtp, message: EmailMessage, timeout: float) -> None:
    context = ssl.create_default_context()
    server: smtplib.SMTP
    if smtp.tls == "ssl":
        server = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=timeout, context=context)
    else:
        server = smtplib.SMTP(smtp.host, smtp.port, timeout=timeout)
    with server:
        if smtp.tls == "starttls":
            server.starttls(context=context)
        if smtp.user:
            server.login(smtp.user, smtp.password)
        server.send_message(message)


async def mail(target: Target, payload: dict[str, object], settings: NotifySettings) -> Outcome:
    smtp = settings.smtp
    message = email(target, payload, smtp.sender)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(settings.timeout * 3):  # connect, hello and data
            await asyncio.to_thread(_send_mail, smtp, message, settings.timeout)
    except (smtplib.SMTPException, TimeoutError, OSError, ssl.SSLError) as exc:
        detail = _clean(f"{type(exc).__name__}: {exc}", smtp.password)
        final = isinstance(exc, smtplib.SMTPRecipientsRefused | smtplib.SMTPAuthenticationError)
        return Outcome(False, type(exc).__name__, _ms(started), detail, final)
    return Outcome(True, "sent", _ms(started))
