"""``airflow-placement upload``: the publisher's PUT to the confirming source, as the dag_placement role runs it.

A real ``serve`` over HTTPS on 127.0.0.1 (a certificate made here), the command run as a process: the publisher's
token read from a file, the CA given; a lower serial refused in one line; the token never sent over plain HTTP off
this host, nor printed.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from confirming_source import TOKENS, Running, self_signed, write_tokens
from placement_server import T0, Clock, with_meta


@pytest.fixture
def https(tmp_path: Path, clock: Clock) -> Iterator[tuple[Running, Path]]:
    tls = self_signed(tmp_path / "tls")
    serve = Running(tmp_path / "state", write_tokens(tmp_path / "tokens.yaml"), clock, tls=tls)
    try:
        yield serve, tls[0]
    finally:
        serve.stop()


def upload(tmp_path: Path, url: str, serial: int, token: str, *extra: str) -> subprocess.CompletedProcess[str]:
    document = tmp_path / f"serial-{serial}.yaml"
    document.write_bytes(with_meta(serial, T0))
    token_file = tmp_path / "publisher.token"
    token_file.write_text(token + "\n")
    command = ["upload", str(document), "--url", url, "--token-file", str(token_file), *extra]
    return subprocess.run(
        [sys.executable, "-m", "airflow_placement.cli", *command],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_publisher_uploads_over_https_and_a_lower_serial_is_refused_in_one_line(
    https: tuple[Running, Path], tmp_path: Path
) -> None:
    serve, ca = https
    done = upload(tmp_path, serve.url, 5, TOKENS["publisher"], "--ca", str(ca))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"uploaded: {serve.url} serves serial 5\n"
    assert serve.get(TOKENS["server-1"]).content == with_meta(5, T0)

    lower = upload(tmp_path, serve.url, 4, TOKENS["publisher"], "--ca", str(ca))
    assert lower.returncode == 1
    assert lower.stderr.splitlines() == [
        f"airflow-placement upload: error: PUT {serve.url} answered 409: serial 4 is older than the served serial 5"
    ]
    assert TOKENS["publisher"] not in lower.stdout + lower.stderr


def test_a_servers_token_cannot_upload(https: tuple[Running, Path], tmp_path: Path) -> None:
    serve, ca = https
    refused = upload(tmp_path, serve.url, 9, TOKENS["server-1"], "--ca", str(ca))
    assert refused.returncode == 1
    assert "answered 401: the publisher's token is needed" in refused.stderr
    assert serve.get(TOKENS["server-1"]).status_code == 503  # nothing was ever served


def test_an_untrusted_certificate_is_refused(https: tuple[Running, Path], tmp_path: Path) -> None:
    serve, _ = https
    refused = upload(tmp_path, serve.url, 5, TOKENS["publisher"])  # no --ca: the system's CAs do not trust it
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [f"airflow-placement upload: error: PUT {serve.url}: SSLError"]


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (TOKENS["publisher"], "refusing to send the token of $AIRFLOW_PLACEMENT_PUBLISHER_TOKEN over plain HTTP"),
        ("", "holds no token"),
        ("bad\x07token", "holds a control character"),
    ],
)
def test_a_token_is_never_sent_over_plain_http_or_when_malformed(tmp_path: Path, token: str, message: str) -> None:
    refused = upload(tmp_path, "http://192.0.2.1:8765/airflow-dag-on-server.yaml", 5, token)
    assert refused.returncode == 1
    assert len(refused.stderr.splitlines()) == 1
    assert message in refused.stderr
    assert not token or token not in refused.stderr
