"""``serve --min-lead``: the confirming source refuses an upload that moves runs dated sooner than the servers' lease
away from a server that may still hold the served document (it confirmed its copy within the lease).

That closes the slow-upload path for this source: the publisher schedules a handover the lead ahead of the moment it
issues the document, and an upload that reaches the source too late would leave the old owner less than its lease to
see it, so both owners could run the same runs. Real HTTP on 127.0.0.1, the clock moved by hand.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confirming_source import TOKENS, Running, write_tokens
from placement_server import T0, Clock

from airflow_placement.document import parse_document
from airflow_placement.serve import ServeError, early_moves

LEASE = 65.0  # max_staleness 60 + clock_skew 5, as the role passes it


def at(seconds: float) -> str:
    return (datetime.fromtimestamp(T0, UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def document(serial: int, body: str) -> str:
    return f'"@meta":\n  serial: {serial}\n  issued: "{at(0)}"\n' + body


def handover(seconds: float, owner: str = "server-2") -> str:
    """etl owned by server-1, handed to ``owner`` ``seconds`` after T0."""
    return f'etl:\n  owner: server-1\n  handover:\n    - {{at: "{at(seconds)}", owner: {owner}}}\n'


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Running]:
    running = Running(tmp_path / "state", write_tokens(tmp_path / "tokens.yaml"), Clock(), min_lead=LEASE)
    running.client.upload(document(1, "etl: server-1\nreport: server-2\n"))
    for server in ("server-1", "server-2"):
        assert running.confirm(server) == 200
    try:
        yield running
    finally:
        running.stop()


def test_a_handover_the_lease_ahead_is_accepted(serve: Running) -> None:
    assert serve.client.upload(document(2, handover(LEASE + 1) + "report: server-2\n")) == 2


def test_a_handover_that_arrives_too_late_is_refused_and_the_served_document_stays(serve: Running) -> None:
    """Issued with the lead, uploaded 10 s later: the old owner could run from its copy past the handover."""
    serve.clock.advance(10)
    with pytest.raises(ServeError) as refused:
        serve.client.upload(document(2, handover(LEASE) + "report: server-2\n"))
    message = str(refused.value)
    assert "etl would move from server-1 to server-2" in message
    assert "55 s from now, less than the lease of 65 s" in message
    assert "server-1 confirmed its copy 10 s ago" in message
    assert "silent for 65 s (55 s more)" in message
    assert "\n" not in message.strip()
    assert serve.client.confirmations()["serial"] == 1
    assert serve.get(TOKENS["server-1"]).text.count("serial: 1") == 1


def test_a_forced_move_of_a_server_that_still_confirms_is_refused(serve: Running) -> None:
    with pytest.raises(ServeError, match="etl would move from server-1 to server-2"):
        serve.client.upload(document(2, "etl: server-2\nreport: server-2\n"))


def test_a_forced_move_of_a_provably_stopped_server_is_accepted(serve: Running) -> None:
    """server-1 silent for the lease: it holds no copy it may run from (the watchdog's proof)."""
    serve.clock.advance(LEASE)
    assert serve.confirm("server-2") == 200
    assert serve.client.upload(document(2, "etl: server-2\nreport: server-2\n")) == 2


def test_a_renewal_of_a_served_handover_is_accepted_when_it_is_near(serve: Running) -> None:
    text = document(2, handover(LEASE + 1) + "report: server-2\n")
    assert serve.client.upload(text) == 2
    serve.clock.advance(LEASE)  # the handover is 1 s ahead now; the servers have had it for the whole lease
    assert serve.client.upload(text.replace(f'issued: "{at(0)}"', f'issued: "{at(0)}"\n  renewed: "{at(LEASE)}"'))


def test_cancelling_a_handover_within_the_lease_is_refused(serve: Running) -> None:
    """The servers hold 'server-2 from T': taking it back now would let server-2 run from its copy, and server-1."""
    assert serve.client.upload(document(2, handover(LEASE + 1) + "report: server-2\n")) == 2
    serve.clock.advance(30)
    for server in ("server-1", "server-2"):
        assert serve.confirm(server) == 200
    with pytest.raises(ServeError, match="etl would move from server-2 to server-1"):
        serve.client.upload(document(3, "etl: server-1\nreport: server-2\n"))


def test_a_task_override_that_moves_at_once_is_refused(serve: Running) -> None:
    body = "etl:\n  owner: server-1\n  tasks:\n    load: server-2\nreport: server-2\n"
    with pytest.raises(ServeError, match=r"etl\.load would move from server-1 to server-2"):
        serve.client.upload(document(2, body))


def test_a_dag_taken_out_of_a_pattern_at_once_is_refused(serve: Running) -> None:
    serve.client.upload(document(2, '"etl_*": server-1\nreport: server-2\n'))
    with pytest.raises(ServeError, match="etl_sales would move from server-1 to server-2"):
        serve.client.upload(document(3, '"etl_*": server-1\netl_sales: server-2\nreport: server-2\n'))


def test_a_new_dag_and_a_dag_without_an_owner_move_nothing() -> None:
    served = parse_document(document(1, "etl: server-1\n"))
    new = parse_document(document(2, "etl: server-1\nreport: server-2\n"))
    assert early_moves(served, new, datetime.fromtimestamp(T0, UTC), LEASE) == []
    assert early_moves(new, served, datetime.fromtimestamp(T0, UTC), LEASE) == []


def test_without_min_lead_the_source_checks_only_serials(tmp_path: Path) -> None:
    running = Running(tmp_path / "state", write_tokens(tmp_path / "tokens.yaml"), Clock())
    try:
        running.client.upload(document(1, "etl: server-1\n"))
        assert running.confirm("server-1") == 200
        assert running.client.upload(document(2, "etl: server-2\n")) == 2
    finally:
        running.stop()


def test_an_upload_whose_answer_is_lost_counts_as_done_when_the_source_serves_it(
    serve: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source stores the document, then the connection drops before the answer: giving the publish up would leave
    the servers on a document the publisher forgot, and its next renewal would take the handover back."""

    def drop(line: str) -> None:
        raise ConnectionAbortedError(line)  # after the upload is stored, before the answer

    monkeypatch.setattr(serve.http.RequestHandlerClass, "log", staticmethod(drop))
    assert serve.client.upload(document(2, handover(LEASE + 1) + "report: server-2\n")) == 2
    assert serve.client.confirmations()["serial"] == 2


def test_an_upload_lost_before_the_source_stored_it_fails(serve: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    def drop(self: object, body: bytes) -> int:
        raise ConnectionAbortedError("before storing")

    monkeypatch.setattr(type(serve.source), "upload", drop)
    with pytest.raises(ServeError, match=r"^PUT http://127\.0\.0\.1:\d+/airflow-dag-on-server\.yaml: \w+$"):
        serve.client.upload(document(2, handover(LEASE + 1) + "report: server-2\n"))
    assert serve.client.confirmations()["serial"] == 1


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "soon"])
def test_a_min_lead_that_is_not_a_number_of_seconds_is_refused_in_one_line(tmp_path: Path, value: str) -> None:
    tokens = write_tokens(tmp_path / "tokens.yaml")
    command = [sys.executable, "-m", "airflow_placement.cli", "serve", "--state-dir", str(tmp_path / "state")]
    arguments = [*command, "--tokens", str(tokens), "--min-lead", value]
    run = subprocess.run(arguments, capture_output=True, text=True, check=False, timeout=60)
    assert run.returncode == 2
    assert run.stderr.splitlines()[-1] == (
        f"airflow-placement serve: error: argument --min-lead: not a finite number of seconds >= 0: '{value}'"
    )
    assert not (tmp_path / "state").exists()
