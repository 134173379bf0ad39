"""A confirming source (``airflow-placement serve``'s code) behind a real HTTP server on 127.0.0.1, on a clock moved
by hand; the tokens of a publisher and three servers."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import requests
from placement_server import Clock

from airflow_placement.serve import ConfirmingSource, SourceClient, Tokens, make_server, token_hash

TOKENS = {"publisher": "pub-token", "server-1": "token-one", "server-2": "token-two", "server-3": "token-three"}
PATH = "airflow-dag-on-server.yaml"


def write_tokens(path: Path) -> Path:
    servers = {name: token_hash(token) for name, token in TOKENS.items() if name != "publisher"}
    path.write_text(json.dumps({"publisher": token_hash(TOKENS["publisher"]), "servers": servers}))
    return path


class Running:
    """A ConfirmingSource served on 127.0.0.1 (a thread), with the publisher's client."""

    def __init__(self, state: Path, tokens: Path, clock: Clock) -> None:
        self.clock = clock
        self.source = ConfirmingSource(state, Tokens.load(tokens), clock=clock)
        self.lines: list[str] = []
        self.http = make_server(self.source, "127.0.0.1", 0, PATH, log=self.lines.append)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/{PATH}"
        self.client = SourceClient(self.url, TOKENS["publisher"])
        threading.Thread(target=self.http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def get(self, token: str | None, etag: str | None = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if etag:
            headers["If-None-Match"] = etag
        return requests.get(self.url, headers=headers, timeout=5)

    def confirm(self, server: str) -> int:
        """``server`` fetches the document with its own token; returns the HTTP status."""
        return self.get(TOKENS[server]).status_code

    def last(self, server: str) -> float | None:
        entry = self.client.confirmations()["servers"].get(server)
        return None if entry is None or "last" not in entry else float(entry["last"])

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.source.close()
