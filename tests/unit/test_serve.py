"""The confirming source (``airflow-placement serve``): real HTTP on 127.0.0.1, real files, a clock moved by hand.

Each server names itself with its own token; the record of confirmations is written before the answer, survives a
restart, and cannot be kept alive by another server's token; a fenced server gets nothing until a newer serial.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from confirming_source import TOKENS, Running, self_signed, write_tokens
from placement_server import T0, Clock, with_meta

from airflow_placement.fetch import FetchSettings, load_placement
from airflow_placement.serve import (
    RECORD_FILE,
    ConfirmingSource,
    ServeError,
    SourceClient,
    Tokens,
    make_server,
    token_hash,
)


@pytest.fixture
def running(tmp_path: Path, clock: Clock) -> Iterator[Running]:
    serve = Running(tmp_path / "state", write_tokens(tmp_path / "tokens.yaml"), clock)
    serve.client.upload(with_meta(1, T0).decode())
    try:
        yield serve
    finally:
        serve.stop()


def test_a_server_fetches_with_its_own_token_and_only_its_confirmation_is_recorded(running: Running) -> None:
    answer = running.get(TOKENS["server-1"])
    assert answer.status_code == 200
    assert answer.content == with_meta(1, T0)
    etag = answer.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    assert running.last("server-1") == T0
    assert running.last("server-2") is None

    running.clock.advance(10)
    again = running.get(TOKENS["server-1"], etag)
    assert again.status_code == 304
    assert running.last("server-1") == T0 + 10  # a 304 to the strong ETag confirms too


@pytest.mark.parametrize("token", [None, "guessed", TOKENS["publisher"]])
def test_a_request_without_a_servers_token_gets_nothing_and_confirms_nothing(running: Running, token: str) -> None:
    assert running.get(token).status_code == 401
    assert running.client.confirmations()["servers"] == {}


def test_a_server_cannot_keep_another_servers_lease_alive(running: Running) -> None:
    running.get(TOKENS["server-1"])
    for _ in range(3):
        running.clock.advance(30)
        assert running.get(TOKENS["server-2"]).status_code == 200
    assert running.last("server-1") == T0
    assert running.last("server-2") == T0 + 90

    assert running.client.fence("server-2", 60) == (False, T0 + 90)  # it confirmed just now
    assert running.client.fence("server-1", 60) == (True, T0)  # silent for 90 s: only server-2 confirmed


def test_a_fenced_server_gets_nothing_until_a_newer_serial_is_served(running: Running) -> None:
    running.get(TOKENS["server-1"])
    running.clock.advance(100)
    assert running.client.fence("server-1", 60) == (True, T0)
    refused = running.get(TOKENS["server-1"])
    assert refused.status_code == 403
    assert "fenced" in refused.text
    assert running.last("server-1") == T0  # a refused request confirms nothing

    running.client.upload(with_meta(2, T0 + 100).decode())
    assert running.get(TOKENS["server-1"]).status_code == 200
    assert running.last("server-1") == T0 + 100


def test_only_the_publisher_uploads_and_serials_never_go_back(running: Running) -> None:
    as_server = SourceClient(running.url, TOKENS["server-1"])
    with pytest.raises(ServeError, match="401"):
        as_server.upload(with_meta(5, T0).decode())
    assert running.client.upload(with_meta(3, T0).decode()) == 3
    with pytest.raises(ServeError, match="409: serial 2 is older than the served serial 3"):
        running.client.upload(with_meta(2, T0).decode())
    with pytest.raises(ServeError, match="served already, with other content"):
        running.client.upload(with_meta(3, T0, body=b"dag_1: server-2.tld\n").decode())
    with pytest.raises(ServeError, match="no @meta"):
        running.client.upload("dag_1: server-1.tld\n")
    assert running.client.upload(with_meta(3, T0, renewed=T0 + 5).decode()) == 3  # a renewal: same content
    assert running.get(TOKENS["server-2"]).content == with_meta(3, T0, renewed=T0 + 5)


def test_the_record_survives_a_restart(tmp_path: Path, clock: Clock) -> None:
    tokens = write_tokens(tmp_path / "tokens.yaml")
    first = Running(tmp_path / "state", tokens, clock)
    first.client.upload(with_meta(1, T0).decode())
    first.get(TOKENS["server-1"])
    clock.advance(50)
    first.get(TOKENS["server-2"])
    clock.advance(50)
    assert first.client.fence("server-1", 60) == (True, T0)
    first.stop()

    clock.advance(1000)
    second = Running(tmp_path / "state", tokens, clock)
    try:
        assert second.last("server-1") == T0
        assert second.last("server-2") == T0 + 50
        assert second.get(TOKENS["server-1"]).status_code == 403  # the fence survives too
        assert second.get(TOKENS["server-2"]).content == with_meta(1, T0)  # and the document
    finally:
        second.stop()


def test_no_answer_without_a_durable_record(running: Running, tmp_path: Path) -> None:
    record = tmp_path / "state" / RECORD_FILE
    saved = record.read_bytes()
    record.unlink()
    (record / "blocker").mkdir(parents=True)  # the record can no longer be replaced
    answer = running.get(TOKENS["server-1"])
    assert answer.status_code == 503
    assert "cannot record the confirmation" in answer.text
    shutil.rmtree(record)
    record.write_bytes(saved)
    assert running.get(TOKENS["server-1"]).status_code == 200
    assert json.loads(record.read_bytes())["servers"]["server-1"]["last"] == T0


def test_a_never_seen_server_counts_as_confirmed_when_the_record_was_created(running: Running) -> None:
    running.clock.advance(30)
    assert running.client.fence("server-2", 60) == (False, T0)
    running.clock.advance(31)
    assert running.client.fence("server-2", 60) == (True, T0)


def test_one_serve_per_state_directory(running: Running, tmp_path: Path, clock: Clock) -> None:
    with pytest.raises(ServeError, match="another airflow-placement serve uses this state directory"):
        ConfirmingSource(tmp_path / "state", Tokens.load(tmp_path / "tokens.yaml"), clock=clock)


def test_the_servers_fetch_path_sends_its_own_token(
    running: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate's own loading code (source, store, lease) names the server with the token from ``token_env``."""
    monkeypatch.setenv("PLACEMENT_TOKEN", TOKENS["server-2"])
    settings = FetchSettings(
        source=running.url, ttl=5, max_staleness=60, token_env="PLACEMENT_TOKEN", cache_dir=tmp_path / "cache"
    )
    loaded = load_placement(settings, clock=running.clock, started=lambda: T0 - 3600)
    assert loaded.origin == "source"
    assert running.last("server-2") == T0
    assert running.last("server-1") is None


def test_https_the_servers_fetch_path_sends_its_token_and_the_publisher_uploads(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over HTTPS (a certificate made here, trusted through REQUESTS_CA_BUNDLE as a server would)."""
    tls = self_signed(tmp_path / "tls")
    serve = Running(tmp_path / "state", write_tokens(tmp_path / "tokens.yaml"), clock, tls=tls)
    try:
        assert serve.url.startswith("https://")
        assert serve.client.upload(with_meta(4, T0).decode()) == 4
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls[0]))
        monkeypatch.setenv("PLACEMENT_TOKEN", TOKENS["server-1"])
        settings = FetchSettings(
            source=serve.url, ttl=5, max_staleness=60, token_env="PLACEMENT_TOKEN", cache_dir=tmp_path / "cache"
        )
        assert load_placement(settings, clock=clock, started=lambda: T0 - 3600).origin == "source"
        assert serve.last("server-1") == T0
    finally:
        serve.stop()


def test_a_bad_tokens_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "tokens.yaml"
    bad.write_text("publisher: sha256:00\nservers: {server-1: x}\n")
    result = subprocess.run(
        [sys.executable, "-m", "airflow_placement.cli", "serve", "--state-dir", str(tmp_path), "--tokens", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"airflow-placement serve: error: {bad}: publisher: not a token hash (sha256: and 64 hex digits)"
    ]


def test_the_serve_command_serves_and_records(tmp_path: Path) -> None:
    token = subprocess.run(
        [sys.executable, "-m", "airflow_placement.cli", "serve-token"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert len(token) == 2 and token_hash(token[0]) == token[1]
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(json.dumps({"publisher": token[1], "servers": {"server-1": token_hash("s1")}}))
    command = ["serve", "--state-dir", str(tmp_path / "state"), "--tokens", str(tokens), "--port", "0"]
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow_placement.cli", *command],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split()[1]
        assert SourceClient(url, token[0]).upload(with_meta(7, T0).decode()) == 7
        answer = requests.get(url, headers={"Authorization": "Bearer s1"}, timeout=5)
        assert answer.status_code == 200
        assert "server-1" in SourceClient(url, token[0]).confirmations()["servers"]
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize("length", ["nonsense", "-5", str(64 * 1024 * 1024)])
def test_an_upload_with_a_bad_length_is_refused_in_one_line(running: Running, length: str) -> None:
    """A raw request: requests would send the right length."""
    host, port = running.url.split("/")[2].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    connection.putrequest("PUT", "/" + running.url.rsplit("/", 1)[1])
    connection.putheader("Authorization", f"Bearer {TOKENS['publisher']}")
    connection.putheader("Content-Length", length)
    connection.endheaders()
    answer = connection.getresponse()
    assert answer.status in (400, 413)
    assert len(answer.read().decode().strip().splitlines()) == 1
    connection.close()
    assert running.client.confirmations()["serial"] == 1


def test_a_fence_is_lifted_when_its_publish_issued_nothing(running: Running) -> None:
    running.get(TOKENS["server-1"])
    running.clock.advance(100)
    assert running.client.fence("server-1", 60) == (True, T0)
    assert running.get(TOKENS["server-1"]).status_code == 403
    running.client.unfence("server-1")
    assert running.get(TOKENS["server-1"]).status_code == 200
    with pytest.raises(ServeError, match="401"):  # a server's token cannot lift a fence
        SourceClient(running.url, TOKENS["server-2"]).unfence("server-1")


def test_a_document_in_a_folder_has_the_publishers_endpoints_beside_it(tmp_path: Path, clock: Clock) -> None:
    source = ConfirmingSource(tmp_path / "state", Tokens.load(write_tokens(tmp_path / "tokens.yaml")), clock=clock)
    http = make_server(source, "127.0.0.1", 0, "placement/current/doc.yaml", log=lambda line: None)
    threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{http.server_address[1]}/placement/current/doc.yaml"
        client = SourceClient(url, TOKENS["publisher"])
        assert client.upload(with_meta(1, T0).decode()) == 1
        requests.get(url, headers={"Authorization": f"Bearer {TOKENS['server-1']}"}, timeout=5)
        assert client.confirmations()["servers"]["server-1"]["last"] == T0
        assert client.fence("server-2", 0) == (True, T0)
        client.unfence("server-2")
    finally:
        http.shutdown()
        http.server_close()
        source.close()
