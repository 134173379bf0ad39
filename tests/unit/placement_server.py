"""A real HTTP server on 127.0.0.1 that serves a placement document, answering as each test tells it to; a clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GOOD = b"dag_1: server-1.tld\n'*': server-2.tld\n"
T0 = 1_796_104_800.0  # 2026-12-01T06:00:00Z


def iso(moment: float) -> str:
    """``moment`` (a Unix time) as a publisher writes it in ``@meta``."""
    return datetime.fromtimestamp(moment, UTC).isoformat()


def with_meta(serial: int, issued: float, renewed: float | None = None, body: bytes = GOOD) -> bytes:
    """``body`` with an ``@meta`` block in front, as a publisher writes it."""
    lines = ['"@meta":', f"  serial: {serial}", f'  issued: "{iso(issued)}"']
    if renewed is not None:
        lines.append(f'  renewed: "{iso(renewed)}"')
    return "\n".join(lines).encode() + b"\n" + body


@dataclass
class Reply:
    """What the server answers to one request."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering
    content_length: int | None = None  # announce this length instead of the body's (a truncated body)


class DocumentServer:
    """Serves ``document`` with its validators, answering 304 as a static file server does; ``respond`` may be replaced.

    ``etag`` and ``last_modified`` are sent when set. A request with ``If-None-Match`` gets 304 when it matches
    ``etag`` (compared as written, weak or strong); otherwise one with ``If-Modified-Since`` gets 304 when it matches
    ``last_modified``, whose one-second resolution cannot tell two documents written in the same second apart.
    """

    def __init__(self) -> None:
        self.document = GOOD
        self.etag: str | None = '"v1"'
        self.last_modified: str | None = "Tue, 01 Dec 2026 06:00:00 GMT"
        self.respond: Callable[[dict[str, str]], Reply] = self.serve_document
        self.requests: list[dict[str, str]] = []
        self.statuses: list[int] = []
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}/airflow-dag-on-server.yaml"

    def serve_document(self, headers: dict[str, str]) -> Reply:
        if "If-None-Match" in headers:
            if headers["If-None-Match"] == self.etag:
                return Reply(304)
        elif self.last_modified is not None and headers.get("If-Modified-Since") == self.last_modified:
            return Reply(304)
        validators = {"ETag": self.etag, "Last-Modified": self.last_modified}
        return Reply(200, self.document, {name: value for name, value in validators.items() if value is not None})

    def record(self, headers: dict[str, str]) -> Reply:
        with self._lock:
            self.requests.append(headers)
        reply = self.respond(headers)
        with self._lock:
            self.statuses.append(reply.status)
        return reply

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def start(self) -> None:
        threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()


def _handler(server: DocumentServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else headers and body, written apart, meet delayed ACKs: +40 ms

        def do_GET(self) -> None:
            reply = server.record(dict(self.headers.items()))
            time.sleep(reply.delay)
            try:
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                length = len(reply.body) if reply.content_length is None else reply.content_length
                self.send_header("Content-Length", str(length))
                if reply.content_length is not None:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(reply.body)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


class Clock:
    """A server's clock, moved by hand, and when the server's stack started on it (an hour before, at first)."""

    def __init__(self, now: float = T0) -> None:
        self.now = now
        self.started = now - 3600

    def __call__(self) -> float:
        return self.now

    def stack_started(self) -> float:
        return self.started

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def restart(self) -> None:
        """The server's stack restarts now."""
        self.started = self.now
