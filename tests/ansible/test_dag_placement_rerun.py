"""``failover.yml -e failed=S -e force=true -e rerun_since=T`` against a throwaway inventory (placement_site.py): the
document part for real (the published documents, read back with the project's parser and decision), and the Airflow
part against a stand-in for Airflow's REST API v2 on 127.0.0.1 that answers as Airflow 3.3 does and records what it
is asked. The drill (tests/drill) re-runs for real on the demo."""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from placement_site import EARLY, Site, make_site

PASSWORD = "s3cret-for-the-test"
TOKEN = "token-for-the-test"


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeAirflow:
    """Airflow's /auth/token, GET .../taskInstances and POST /dags/{dag}/clearTaskInstances, as far as used."""

    def __init__(self, task_instances: list[dict[str, Any]], since: datetime) -> None:
        self.task_instances = task_instances
        self.since = since  # the rerun_since the tests pass
        self.requests: list[tuple[str, str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(("POST", self.path, body))
                if self.path == "/auth/token":
                    if body != {"username": "admin", "password": PASSWORD}:
                        return self._answer(401, {"detail": "Invalid credentials"})
                    return self._answer(201, {"access_token": TOKEN})
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._answer(401, {"detail": "Not authenticated"})
                dag_id = self.path.split("/")[4]
                chosen = [
                    ti
                    for ti in fake.task_instances
                    if ti["dag_id"] == dag_id
                    and ti["dag_run_id"] == body["dag_run_id"]
                    and ti["task_id"] in body["task_ids"]
                ]
                return self._answer(200, {"task_instances": chosen, "total_entries": len(chosen)})

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                fake.requests.append(("GET", url.path, query))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._answer(401, {"detail": "Not authenticated"})
                since = datetime.fromisoformat(query["run_after_gte"][0])
                found = [
                    ti
                    for ti in fake.task_instances
                    if ti["state"] in query["state"] and datetime.fromisoformat(ti["run_after"]) >= since
                ]
                offset, limit = int(query["offset"][0]), int(query["limit"][0])
                return self._answer(
                    200, {"task_instances": found[offset : offset + limit], "total_entries": len(found)}
                )

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def clears(self, dry_run: bool) -> list[tuple[str, str, list[Any]]]:
        return [
            (path.split("/")[4], body["dag_run_id"], body["task_ids"])
            for method, path, body in self.requests
            if method == "POST" and path.endswith("/clearTaskInstances") and body["dry_run"] is dry_run
        ]


def _ti(dag_id: str, when: datetime, task_id: str, state: str = "skipped") -> dict[str, Any]:
    return {
        "dag_id": dag_id,
        "dag_run_id": f"scheduled__{when.isoformat()}",
        "task_id": task_id,
        "map_index": -1,
        "logical_date": when.isoformat(),
        "run_after": when.isoformat(),
        "state": state,
    }


@pytest.fixture
def airflow() -> Iterator[FakeAirflow]:
    since = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    tis = [
        _ti("etl_orders", since + timedelta(minutes=2), "extract"),  # server-1's: re-run on server-2
        _ti("etl_orders", since + timedelta(minutes=2), "load"),
        _ti("etl_orders", since + timedelta(minutes=3), "extract", state="success"),  # not skipped: left alone
        _ti("etl_orders", since - timedelta(minutes=1), "extract"),  # before rerun_since: stays server-1's
        _ti("etl_web", since + timedelta(minutes=2), "extract"),  # server-2's own: skipped for another reason
        _ti("billing", since + timedelta(minutes=4), "archive"),  # server-1's task override: moves
        _ti("billing", since + timedelta(minutes=4), "send_invoices"),  # server-2's task override: stays
        _ti("dashboard", since + timedelta(minutes=5), "render"),  # server-3's
    ]
    # More task instances than one page of the API (one run of a big DAG): the role must page through them.
    tis += [_ti("anything_else", since + timedelta(minutes=6), f"t{n:03}") for n in range(110)]
    fake = FakeAirflow(tis, since)
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()


@pytest.fixture
def airflow_https(airflow: FakeAirflow, tmp_path: Path) -> Path:
    """The stand-in over HTTPS, with a self-signed certificate for 127.0.0.1 (as airflow_compose generates one per
    server); the certificate's path, the CA the re-run must be given."""
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    airflow.server.socket = context.wrap_socket(airflow.server.socket, server_side=True)
    airflow.url = airflow.url.replace("http://", "https://")
    return cert


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Site:
    site = make_site(tmp_path_factory.mktemp("rerun-site"), group_vars={"placement_ttl_seconds": 1})
    run = site.play("placement.yml")
    assert run.returncode == 0, run.output
    return site


def _site(tmp_path: Path, airflow: FakeAirflow, published: Site) -> Site:
    """The published site, pointed at the stand-in; the role waits the successor's TTL (1 s) before clearing."""
    site = published.copy_to(tmp_path)
    site.group_vars.update({"dag_placement_api_url": airflow.url, "dag_placement_api_password": PASSWORD})
    site.write()
    return site


def _expected(since: datetime) -> set[tuple[str, str, tuple[str, ...]]]:
    """The skipped runs server-1 owned before the move: what must re-run on server-2."""
    return {
        ("etl_orders", f"scheduled__{(since + timedelta(minutes=2)).isoformat()}", ("extract", "load")),
        ("billing", f"scheduled__{(since + timedelta(minutes=4)).isoformat()}", ("archive",)),
        (
            "anything_else",
            f"scheduled__{(since + timedelta(minutes=6)).isoformat()}",
            tuple(f"t{n:03}" for n in range(110)),
        ),
    }


def _clears(airflow: FakeAirflow, dry_run: bool) -> set[tuple[str, str, tuple[str, ...]]]:
    return {(dag, run_id, tuple(tasks)) for dag, run_id, tasks in airflow.clears(dry_run=dry_run)}


def test_rerun_since_dates_the_forced_move_back_and_clears_only_what_the_dead_server_missed(
    tmp_path: Path, airflow: FakeAirflow, published: Site
) -> None:
    site = _site(tmp_path, airflow, published)
    since = airflow.since
    run = site.play("failover.yml", "-e", "failed=server-1", "-e", "force=true", "-e", f"rerun_since={_iso(since)}")
    assert run.returncode == 0, run.output

    # The document: server-1 keeps the runs before rerun_since (they may have run there), server-2 owns the rest.
    for server in site.servers:
        assert site.owner(server, "etl_orders", since - timedelta(seconds=1)) == "server-1"
        assert site.owner(server, "etl_orders", since) == "server-2"
        assert site.owner(server, "etl_orders", EARLY) == "server-1"
        assert site.owner(server, "billing", since, task="archive") == "server-2"
        assert site.owner(server, "billing", since, task="send_invoices") == "server-2"
        assert site.owner(server, "dashboard", since) == "server-3"
    assert f"etl_orders: server-1 -> server-2 for runs dated from {_iso(since)} (forced)" in run.output
    [move] = site.moves()
    assert (move["failed"], move["to"], move["forced"], move["at"]) == ("server-1", "server-2", True, _iso(since))

    # Airflow: the dry run first, then exactly the same clear, for the skipped runs server-1 owned before the move.
    assert _clears(airflow, dry_run=True) == _expected(since)
    assert _clears(airflow, dry_run=False) == _expected(since)
    first_clear = next(i for i, r in enumerate(airflow.requests) if r[2] and r[2].get("dry_run") is False)
    assert all(r[2]["dry_run"] for r in airflow.requests[:first_clear] if r[1].endswith("/clearTaskInstances"))
    assert all(
        body["only_failed"] is False and body["include_downstream"] is False
        for method, path, body in airflow.requests
        if path.endswith("/clearTaskInstances")
    )
    pages = [query["offset"] for method, path, query in airflow.requests if method == "GET"]
    assert pages == [["0"], ["100"]]
    assert "cleared on server-2 (113 task instances)" in run.output
    assert "etl_orders scheduled__" in run.output


def test_rerun_in_check_mode_asks_airflow_but_clears_nothing(
    tmp_path: Path, airflow: FakeAirflow, published: Site
) -> None:
    site = _site(tmp_path, airflow, published)
    since = airflow.since
    before = site.files()
    run = site.play(
        "failover.yml", "--check", "-e", "failed=server-1", "-e", "force=true", "-e", f"rerun_since={_iso(since)}"
    )
    assert run.returncode == 0, run.output
    # What would re-run comes from the document airflow-placement would issue: the same runs as for real.
    assert _clears(airflow, dry_run=True) == _expected(since)
    assert not airflow.clears(dry_run=False)
    assert site.files() == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-e", "force=true", "-e", "rerun_since=yesterday"], "'yesterday' is not an ISO 8601 date and time"),
        (["-e", "force=true", "-e", "rerun_since=2026-01-01T10:00:00"], "has no UTC offset"),
        (["-e", "force=true", "-e", "rerun_since=2999-01-01T00:00:00Z"], "is in the future"),
        (["-e", "rerun_since=2026-01-01T10:00:00Z"], "only with -e failed=SERVER -e force=true"),
    ],
)
def test_a_bad_rerun_since_fails_fast_naming_the_variable_and_changes_nothing(
    tmp_path: Path, airflow: FakeAirflow, published: Site, extra: list[str], message: str
) -> None:
    site = _site(tmp_path, airflow, published)
    before = site.files()
    run = site.play("failover.yml", "-e", "failed=server-1", *extra)
    assert run.returncode != 0
    assert "dag_placement_rerun_since (rerun_since=" in run.output, run.output
    assert message in run.output, run.output
    assert site.files() == before
    assert not airflow.requests


def test_a_rerun_airflow_refuses_stops_with_one_line_and_never_shows_the_password(
    tmp_path: Path, airflow: FakeAirflow, published: Site
) -> None:
    site = _site(tmp_path, airflow, published)
    site.group_vars["dag_placement_api_password"] = "not-the-password"
    site.write()
    since = airflow.since
    run = site.play("failover.yml", "-e", "failed=server-1", "-e", "force=true", "-e", f"rerun_since={_iso(since)}")
    assert run.returncode != 0
    assert run.failure() == (
        "dag_placement: the move is published and recorded, but the re-run on server-2 failed: airflow-placement "
        f"rerun: error: POST {airflow.url}/auth/token answered 401: Invalid credentials"
    )
    assert "not-the-password" not in run.output
    assert [m["failed"] for m in site.moves()] == ["server-1"]  # the move stands; only the re-run is to do again
    assert not airflow.clears(dry_run=True)


def test_a_rerun_over_https_trusts_dag_placement_api_ca(
    tmp_path: Path, airflow: FakeAirflow, airflow_https: Path, published: Site
) -> None:
    """The servers' API speaks HTTPS with a certificate the controller's CAs do not know: dag_placement_api_ca (by
    default the controller's copy of the certificate airflow_compose generated) is what the re-run trusts."""
    since = airflow.since
    args = ("failover.yml", "-e", "failed=server-1", "-e", "force=true", "-e", f"rerun_since={_iso(since)}")
    untrusted = _site(tmp_path / "untrusted", airflow, published)
    untrusted.group_vars["dag_placement_api_ca"] = ""
    untrusted.write()
    run = untrusted.play(*args)
    assert run.returncode != 0
    assert run.failure() == (
        "dag_placement: the move is published and recorded, but the re-run on server-2 failed: airflow-placement "
        f"rerun: error: POST {airflow.url}/auth/token: the TLS handshake failed (is the API server's certificate "
        "trusted? --ca names a CA bundle that trusts it)"
    )
    assert not airflow.requests  # no TLS session, no request

    trusted = _site(tmp_path / "trusted", airflow, published)
    trusted.group_vars["dag_placement_api_ca"] = str(airflow_https)
    trusted.write()
    run = trusted.play(*args)
    assert run.returncode == 0, run.output
    assert _clears(airflow, dry_run=False) == _expected(since)
