"""A real HTTP server on 127.0.0.1 that serves a placement document, answering as each test tells it to; a clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GOOD = b"dag_1: server-1.tld\n'*': server-2.tld\n"


@dataclass
class Reply:
    """What the server answers to one request."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering
    content_length: int | None = None  # announce this length instead of the body's (a truncated body)


class DocumentServer:
    """Serves ``document`` with ``etag``, answering 304 to a matching If-None-Match; ``respond`` may be replaced."""

    def __init__(self) -> None:
        self.document = GOOD
        self.etag = '"v1"'
        self.last_modified = "Tue, 01 Dec 2026 06:00:00 GMT"
        self.respond: Callable[[dict[str, str]], Reply] = self.serve_document
        self.requests: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}/airflow-dag-on-server.yaml"

    def serve_document(self, headers: dict[str, str]) -> Reply:
        if headers.get("If-None-Match") == self.etag:
            return Reply(304)
        return Reply(200, self.document, {"ETag": self.etag, "Last-Modified": self.last_modified})

    def record(self, headers: dict[str, str]) -> Reply:
        with self._lock:
            self.requests.append(headers)
        return self.respond(headers)

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
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
