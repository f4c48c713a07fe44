"""A loopback HTTP server that answers like panoptes and records every request.

Used by the tests, and as a script to capture what a real Snakemake run sends:

    python plugin/tests/receiver.py CAPTURE.jsonl   # prints its address, runs until killed
"""

import json
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Captured:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    form: dict[str, list[str]]
    status: int = 0
    t: float = field(default_factory=time.monotonic)

    @property
    def msg(self) -> dict[str, Any] | None:
        """The decoded message of a POST /update_workflow_status."""
        values = self.form.get("msg")
        return json.loads(values[0]) if values else None

    def as_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "form": self.form,
            "status": self.status,
            "msg": self.msg,
        }


class Receiver:
    """Answers 200 like panoptes; can be told to answer 500, to hang, or be down."""

    def __init__(self, tls: tuple[str, str] | None = None) -> None:
        self.requests: list[Captured] = []
        # "ok"; "500" (every request); "hang" (never answer); for updates only, "reject"
        # (422 with panoptes' JSON error) or "legacy" (200 "ok" as text, like panoptes-ui 1.6.2)
        self.mode = "ok"
        self.fail_updates = 0  # answer the next N updates with 500
        self.workflow_id: Any = 7
        self.release = threading.Event()  # ends the hangs
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.scheme = "http"
        if tls is not None:  # (certificate file, key file)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self.scheme}://{host!s}:{port}"

    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.msg for r in self.requests if r.path == "/update_workflow_status" and r.msg]

    def levels(self) -> list[str]:
        return [m["level"] for m in self.messages()]

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until ``count`` requests have arrived."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self.requests) >= count, timeout)

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _record(self, captured: Captured) -> None:
        with self._changed:
            self.requests.append(captured)
            self._changed.notify_all()

    def _answer(self, captured: Captured) -> tuple[int, dict[str, Any] | str | None]:
        if self.mode == "hang":
            return 0, None
        if self.mode == "500":
            return 500, "internal error"
        if captured.path == "/create_workflow":
            return 200, {"id": self.workflow_id, "name": "run", "status": "Running"}
        if captured.path == "/update_workflow_status":
            if self.mode == "reject":
                return 422, {"error": "unknown workflow", "detail": "no workflow with id 7"}
            if self.mode == "legacy":
                return 200, "ok"
            with self._lock:
                failing = self.fail_updates > 0
                self.fail_updates -= int(failing)
            return (500, "internal error") if failing else (200, {"status": "ok"})
        return 404, {"error": "not found", "detail": captured.path}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else each answer waits ~40 ms on loopback

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8") if length else ""
                parts = urlsplit(self.path)
                captured = Captured(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers=dict(self.headers.items()),
                    form=parse_qs(body),
                )
                status, answer = receiver._answer(captured)
                captured.status = status
                receiver._record(captured)
                if status == 0:
                    receiver.release.wait(30)
                    self.close_connection = True
                    return
                self._reply(status, answer)

            def _reply(self, status: int, answer: dict[str, Any] | str | None) -> None:
                is_json = isinstance(answer, dict)
                data = (json.dumps(answer) if is_json else str(answer or "")).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if is_json else "text/html")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


def closed_port_url() -> str:
    """An address where nothing listens: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def main(argv: list[str]) -> None:
    out_path = argv[1] if len(argv) > 1 else "capture.jsonl"
    receiver = Receiver()
    print(receiver.url, flush=True)
    written = 0
    try:
        with open(out_path, "w") as out:
            while True:
                time.sleep(0.1)
                for captured in receiver.requests[written:]:
                    out.write(json.dumps(captured.as_json()) + "\n")
                    written += 1
                out.flush()
    except KeyboardInterrupt:
        pass
    finally:
        receiver.close()


if __name__ == "__main__":
    main(sys.argv)
