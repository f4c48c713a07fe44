"""The terminal client's line to a server: REST reads over HTTP and the live feed over a
websocket (docs/feed.md), with the token as a bearer header."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ..config import ClientConfig

TIMEOUT = 10.0


class ClientError(Exception):
    """The server could not be reached, or it refused: said in one line for the user."""


class Server:
    def __init__(self, config: ClientConfig) -> None:
        self.config = config

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "panoptes-client"}
        if self.config.token:
            headers["Authorization"] = f"Bearer {self.config.token}"
        return headers

    def get(self, path: str, **params: Any) -> Any:
        """GET a JSON answer; a 4xx/5xx or an unreachable server raises ClientError."""
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        url = f"{self.config.url}{path}" + (f"?{query}" if query else "")
        request = urllib.request.Request(url, headers=self._headers())
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise ClientError(f"{url}: {exc.code} {_detail(exc)}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClientError(f"cannot reach {self.config.url}: {reason}") from exc

    def feed_url(self, workflow_id: int, since: int | None) -> str:
        base = "ws" + self.config.url.removeprefix("http")
        return f"{base}/ws/workflow/{workflow_id}" + ("" if since is None else f"?since={since}")

    async def feed(self, workflow_id: int, since: int | None) -> AsyncIterator[dict[str, Any]]:
        """One connection's messages, until it closes (ConnectionClosed) or is refused
        (ClientError)."""
        try:
            async with connect(
                self.feed_url(workflow_id, since),
                additional_headers=self._headers(),
                open_timeout=TIMEOUT,
                compression=None,
                max_size=2**24,
            ) as socket:
                async for frame in socket:
                    yield json.loads(frame)
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise ClientError(f"the feed refused the connection: {status}") from exc


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read())
        return str(body.get("detail") or body.get("error") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


__all__ = ["ClientError", "ConnectionClosed", "Server"]
