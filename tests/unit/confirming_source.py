"""A confirming source (``airflow-placement serve``'s code) behind a real HTTP server on 127.0.0.1, on a clock moved
by hand; the tokens of a publisher and three servers."""

from __future__ import annotations

import ipaddress
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
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

    def __init__(
        self, state: Path, tokens: Path, clock: Clock, tls: tuple[Path, Path] | None = None, min_lead: float = 0.0
    ) -> None:
        self.clock = clock
        self.source = ConfirmingSource(state, Tokens.load(tokens), clock=clock, min_lead=min_lead)
        self.lines: list[str] = []
        self.http = make_server(self.source, "127.0.0.1", 0, PATH, log=self.lines.append, tls=tls)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.http.server_address[1]}/{PATH}"
        self.client = SourceClient(self.url, TOKENS["publisher"], ca=str(tls[0]) if tls else None)
        threading.Thread(target=self.http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def get(self, token: str | None, etag: str | None = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if etag:
            headers["If-None-Match"] = etag
        return requests.get(self.url, headers=headers, timeout=5, verify=self.client.ca or True)

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


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost (its own CA) and its key, as PEM files in ``directory``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    names = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(names, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    plain = serialization.NoEncryption()
    (directory / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, plain)
    )
    return directory / "cert.pem", directory / "key.pem"
