"""The watchdog and ``rerun`` reach the servers' Airflow API over HTTPS, trusting the certificate they are given (the
airflow_compose role's own, generated once per server): a real HTTPS server on 127.0.0.1 answering the health path."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from confirming_source import self_signed

from airflow_placement.rerun import Airflow
from airflow_placement.watch import HEALTH_PATH, WatchConfig, check_health

HEALTHY = {part: {"status": "healthy"} for part in ("metadatabase", "scheduler", "dag_processor", "triggerer")}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(HEALTHY if self.path == HEALTH_PATH else {"path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    cert, key = self_signed(tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert
    finally:
        server.shutdown()
        server.server_close()


def test_the_health_check_trusts_the_servers_certificate_it_is_given(api: tuple[str, Path]) -> None:
    url, cert = api
    assert check_health(url, 5, str(cert)).healthy


def test_without_it_a_self_signed_api_is_unreachable_never_trusted(api: tuple[str, Path]) -> None:
    url, _ = api
    seen = check_health(url, 5)
    assert (seen.reachable, seen.healthy, seen.reason) == (False, False, "unreachable (SSLError)")


def test_the_rerun_client_verifies_with_the_ca_it_is_given(api: tuple[str, Path]) -> None:
    url, cert = api
    assert Airflow(url, "admin", "secret", ca=str(cert))._call("GET", "/api/v2/version") == {"path": "/api/v2/version"}


def test_the_watchdog_reads_api_ca_from_its_configuration() -> None:
    config = WatchConfig.from_dict(
        {
            "servers": [{"name": "server-1", "api": "https://server-1:8080"}],
            "source": "https://controller:8765/airflow-dag-on-server.yaml",
            "publisher_dir": "/tmp/p",
            "state_dir": "/tmp/s",
            "max_staleness": 60,
            "clock_skew": 5,
            "api_ca": "/etc/airflow-placement/api-ca.pem",
        }
    )
    assert config.api_ca == "/etc/airflow-placement/api-ca.pem"
