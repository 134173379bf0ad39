"""A stand-in for a Git forge's raw-file host, for the example inventory's test bed (no forge runs here).

inventory/example publishes the placement document by pushing it to a Git repository, and its servers read it from
the forge's raw-file URL with a bearer token (``placement_source``, ``placement_source_token``). Here the repository
is a bare one on this machine, and this server plays the forge: over HTTPS, at
``/<owner>/<name>/raw/branch/<branch>/<path>`` (Gitea's and Forgejo's form), it answers with the file at the head of
that branch, as ``git show`` gives it, when the request carries the token (``Authorization: Bearer ...``); 401
without a token, 403 with another one, 404 for anything else. It sends an ETag (the blob's id) and answers 304 to a
matching ``If-None-Match``, as forges do, and serves no stale cache (a real forge's cache is what
``dag_placement_source_cache_seconds`` covers; nothing here depends on it). Every request is recorded (client
address, path, status) for the test to check who read what.
"""

from __future__ import annotations

import hmac
import ssl
import subprocess
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass(frozen=True)
class Request:
    client: str
    path: str
    status: int
    blob: str  # the served blob's id ("" when nothing was served)


class Forge:
    """Serves ``repos`` (``"owner/name"`` -> bare repository) on ``address``:``port`` with ``cert``/``key``."""

    def __init__(self, repos: dict[str, Path], token: str, *, address: str, port: int, cert: Path, key: Path) -> None:
        self.repos = repos
        self.token = token
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        forge = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, blob, body = forge.answer(
                    self.path, self.headers.get("Authorization"), self.headers.get("If-None-Match")
                )
                with forge._lock:
                    forge.requests.append(Request(self.client_address[0], self.path, status, blob))
                self.send_response(status)
                if blob:
                    self.send_header("ETag", f'"{blob}"')
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((address, port), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, path: str, authorization: str | None, if_none_match: str | None) -> tuple[int, str, bytes]:
        """Status, blob id and body for a GET of ``path``."""
        if not authorization:
            return 401, "", b"a token is required\n"
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), self.token.encode()):
            return 403, "", b"forbidden\n"
        parts = path.split("?", 1)[0].strip("/").split("/")
        if len(parts) < 6 or parts[2:4] != ["raw", "branch"] or f"{parts[0]}/{parts[1]}" not in self.repos:
            return 404, "", b"not found\n"
        repo, branch, file = self.repos[f"{parts[0]}/{parts[1]}"], parts[4], "/".join(parts[5:])
        found = subprocess.run(
            ["git", "--git-dir", str(repo), "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}:{file}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if found.returncode != 0:
            return 404, "", b"not found\n"
        blob = found.stdout.strip()
        if if_none_match == f'"{blob}"':
            return 304, blob, b""
        body = subprocess.run(
            ["git", "--git-dir", str(repo), "cat-file", "blob", blob], capture_output=True, check=True
        )
        return 200, blob, body.stdout

    def start(self) -> Forge:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def served(self) -> list[Request]:
        with self._lock:
            return list(self.requests)
