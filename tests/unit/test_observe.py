"""What the gate records and counts, and what the placement view shows: the bounded record of recent decisions, the
metrics through Airflow's StatsD client to a real UDP listener on 127.0.0.1, the notice for a run triggered by hand
on a non-owner, the view's state from a real cache, and the plugin's JSON API and page."""

from __future__ import annotations

import json
import logging
import multiprocessing
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.configuration import conf
from airflow.sdk.observability import stats
from airflow.sdk.observability.metrics import stats_utils
from fastapi.testclient import TestClient
from placement_server import T0, Clock, DocumentServer, Reply, iso, with_meta

from airflow_placement import observe, plugin
from airflow_placement.decision import Decision, decide
from airflow_placement.document import parse_document
from airflow_placement.fetch import FetchSettings, Loaded, PlacementCache, PlacementUnavailable
from airflow_placement.observe import Event, ManualRun, manual_run_notice, server_state

HANDOVER = T0 + 7200
DOCUMENT = (
    b"reports:\n"
    b"  owner: server-1\n"
    b"  handover:\n"
    b'    - {at: "' + iso(HANDOVER).encode() + b'", owner: server-2}\n'
    b"  tasks:\n"
    b"    publish: server-2\n"
    b"'etl_*': server-2\n"
    b"housekeeping: server-1\n"
)
NOW = datetime.fromtimestamp(T0, UTC)


def decision(host: str, dag_id: str = "etl_daily", when: datetime = NOW) -> Decision:
    placement = parse_document(with_meta(7, T0, body=DOCUMENT))
    return decide(placement, dag_id=dag_id, task_id="work", host=host, when=when, now=NOW, horizon=timedelta(300))


def event(number: int, outcome: observe.Outcome = "skip") -> Event:
    return Event(outcome, f"dag_{number}", "work", f"manual__{number}", "server-1", "owned by server-2", T0 + number)


# The record of recent decisions


def test_record_lists_the_newest_first(tmp_path: Path) -> None:
    for number in range(5):
        observe.record(tmp_path, event(number))
    listed = observe.recent_decisions(tmp_path, limit=3)
    assert [d["dag_id"] for d in listed] == ["dag_4", "dag_3", "dag_2"]
    assert listed[0] == event(4).as_json()
    assert listed[0]["at"] == iso(T0 + 4)


def test_record_is_cut_to_its_newest_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(observe, "MAX_RECORD_BYTES", 4096)
    monkeypatch.setattr(observe, "KEEP_RECORDS", 10)
    for number in range(200):
        observe.record(tmp_path, event(number))
        assert (tmp_path / observe.RECORD_FILE).stat().st_size <= 4096 + 400
    listed = observe.recent_decisions(tmp_path, limit=1000)
    assert len(listed) <= 40
    assert listed[0]["dag_id"] == "dag_199"
    assert [int(d["dag_id"][4:]) for d in listed] == sorted((int(d["dag_id"][4:]) for d in listed), reverse=True)


def _write_many(cache_dir: Path, worker: int) -> None:
    for number in range(100):
        observe.record(cache_dir, event(worker * 1000 + number))


def test_record_from_many_task_processes_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Four processes write at once while the record is being cut: every line stays whole, the newest are kept."""
    monkeypatch.setattr(observe, "MAX_RECORD_BYTES", 16384)
    monkeypatch.setattr(observe, "KEEP_RECORDS", 30)
    context = multiprocessing.get_context("fork")  # the patched bounds reach the children
    workers = [context.Process(target=_write_many, args=(tmp_path, worker)) for worker in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join()
        assert process.exitcode == 0
    lines = (tmp_path / observe.RECORD_FILE).read_text().splitlines()
    assert all(json.loads(line)["outcome"] == "skip" for line in lines)
    assert 30 <= len(lines) <= 16384 // 150 + 1
    assert {json.loads(lines[-1])["dag_id"]} <= {f"dag_{w * 1000 + 99}" for w in range(4)}


def test_unreadable_lines_are_left_out(tmp_path: Path) -> None:
    observe.record(tmp_path, event(1))
    with open(tmp_path / observe.RECORD_FILE, "a") as handle:
        handle.write('{"half": \n[1, 2]\n{"outcome": "run", "dag_id": "x", "at": "t", "surprise": 1}\n')
    observe.record(tmp_path, event(2))
    assert [d["dag_id"] for d in observe.recent_decisions(tmp_path)] == ["dag_2", "dag_1"]


@pytest.mark.parametrize("trouble", ["not-a-directory", "others-may-write", "planted-link"])
def test_a_record_that_cannot_be_written_safely_never_stops_the_task(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, trouble: str
) -> None:
    cache_dir = tmp_path / "cache"
    target = tmp_path / "elsewhere"
    target.write_text("")
    if trouble == "not-a-directory":
        cache_dir.write_text("")
    else:
        cache_dir.mkdir(mode=0o700)
        if trouble == "others-may-write":
            cache_dir.chmod(0o777)
        else:
            (cache_dir / observe.RECORD_FILE).symlink_to(target)
    with caplog.at_level(logging.WARNING, logger="airflow_placement.observe"):
        observe.record(cache_dir, event(1))
    assert "cannot write the record of recent decisions" in caplog.text
    assert target.read_text() == ""
    assert observe.recent_decisions(cache_dir) == []


# A run triggered by hand on a server that does not own it


@pytest.mark.parametrize(
    ("host", "dag_id", "when", "expected"),
    [
        (
            "server-1",
            "etl_daily",
            NOW,
            "run manual__1 of DAG etl_daily was triggered by hand on server-1, which does not own it: server-2 owns "
            f"runs of this DAG dated {NOW.isoformat()}. Nothing runs here; trigger it in server-2's Airflow instead",
        ),
        (
            "server-1",
            "unplaced",
            NOW,
            "run manual__1 of DAG unplaced was triggered by hand on server-1, but no server runs it: no entry or "
            "pattern in the document matches DAG 'unplaced'. Add the DAG to the placement document, then trigger it "
            "on its owner",
        ),
        (
            "server-1",
            "reports",
            datetime.fromtimestamp(HANDOVER + 60, UTC),
            "run manual__1 of DAG reports was triggered by hand on server-1 and runs on no server now: the run is "
            f"dated {datetime.fromtimestamp(HANDOVER + 60, UTC).isoformat()}, after the handover to server-2",
        ),
        ("server-2", "etl_daily", NOW, None),
    ],
    ids=["owned-elsewhere", "owned-by-nobody", "after-a-pending-handover", "runs-here"],
)
def test_manual_run_notice(host: str, dag_id: str, when: datetime, expected: str | None) -> None:
    notice = manual_run_notice(decision(host, dag_id, when), "manual__1")
    if expected is None:
        assert notice is None
    else:
        assert notice is not None
        assert notice.startswith(expected)


class FakeRun:
    """The ``dag_run`` of a task context: only its type is read."""

    def __init__(self, run_type: str) -> None:
        self.run_type = run_type


@pytest.mark.parametrize(("run_type", "logged"), [("manual", True), ("scheduled", False)])
def test_decided_logs_where_a_manual_run_belongs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, run_type: str, logged: bool
) -> None:
    loaded = Loaded(parse_document(with_meta(7, T0, body=DOCUMENT)), 12.5, "cache")
    context = {"run_id": f"{run_type}__1", "dag_run": FakeRun(run_type)}
    log = logging.getLogger("task")
    with caplog.at_level(logging.INFO, logger="task"):
        recorded = observe.decided(tmp_path, decision("server-1"), context=context, loaded=loaded, log=log)
    assert ("trigger it in server-2's Airflow instead" in caplog.text) is logged
    assert (recorded.notice is not None) is logged
    [listed] = observe.recent_decisions(tmp_path)
    assert listed["run_type"] == run_type
    assert listed["serial"] == 7
    assert listed["lease_age"] == 12.5
    assert listed["owner"] == "server-2"


def test_a_context_without_a_run_is_recorded_too(tmp_path: Path) -> None:
    observe.refused(tmp_path, context=None, dag_id="d", task_id="t", host=None, reason="no name")
    [listed] = observe.recent_decisions(tmp_path)
    assert (listed["outcome"], listed["run_id"], listed["run_type"], listed["reason"]) == (
        "refuse",
        None,
        None,
        "no name",
    )


# Metrics, through the StatsD client Airflow's task runner configures, to a real UDP listener


@pytest.fixture
def statsd(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A StatsD server on 127.0.0.1, and Airflow's metrics set up for it as the task runner sets them up."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(5)
    for key, value in {"STATSD_ON": "True", "STATSD_HOST": "127.0.0.1", "STATSD_PREFIX": "airflow"}.items():
        monkeypatch.setenv(f"AIRFLOW__METRICS__{key}", value)
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PORT", str(listener.getsockname()[1]))
    stats.initialize(
        factory=stats_utils.get_stats_factory(), export_legacy_names=conf.getboolean("metrics", "legacy_names_on")
    )
    try:
        yield listener
    finally:
        stats.initialize(factory=stats_utils.NoStatsLogger, export_legacy_names=False)
        listener.close()


def placement_metrics(listener: socket.socket, count: int) -> list[str]:
    """The next ``count`` placement metrics the listener receives (Airflow's own are passed over)."""
    received: list[str] = []
    while len(received) < count:
        packet = listener.recv(4096).decode()
        received += [line for line in packet.splitlines() if line.startswith("airflow.placement.")]
    return received


def test_decisions_are_counted_by_outcome_with_the_lease_age(tmp_path: Path, statsd: socket.socket) -> None:
    loaded = Loaded(parse_document(with_meta(7, T0, body=DOCUMENT)), 42.25, "cache")
    observe.decided(tmp_path, decision("server-2"), context={"run_id": "r"}, loaded=loaded, log=logging.getLogger())
    observe.decided(tmp_path, decision("server-1"), context={"run_id": "r"}, loaded=loaded, log=logging.getLogger())
    observe.refused(tmp_path, context={"run_id": "r"}, dag_id="d", task_id="t", host="server-1", reason="expired")
    assert placement_metrics(statsd, 5) == [
        "airflow.placement.decision.run:1|c",
        "airflow.placement.lease_age:42.25|g",
        "airflow.placement.decision.skip:1|c",
        "airflow.placement.lease_age:42.25|g",
        "airflow.placement.decision.refuse:1|c",
    ]


def test_each_failed_read_of_the_source_is_counted_once(
    tmp_path: Path, statsd: socket.socket, server: DocumentServer, clock: Clock
) -> None:
    server.respond = lambda headers: Reply(503)
    settings = FetchSettings(source=server.url, retries=0, cache_dir=tmp_path)
    for _ in range(3):  # one request, then the failure is remembered for the TTL
        with pytest.raises(PlacementUnavailable):
            observe.load_placement(settings)
    assert server.count == 1
    observe.refused(tmp_path, context=None, dag_id="d", task_id="t", host="h", reason="expired")
    assert placement_metrics(statsd, 2) == [
        "airflow.placement.source_failure:1|c",
        "airflow.placement.decision.refuse:1|c",
    ]


# What the view shows: the state of a real cache, read without a request


@pytest.fixture
def source(server: DocumentServer) -> DocumentServer:
    server.document = with_meta(7, T0, body=DOCUMENT)
    return server


def settings_for(server: DocumentServer, cache_dir: Path) -> FetchSettings:
    return FetchSettings(source=server.url, retries=0, cache_dir=cache_dir)


def load(settings: FetchSettings, clock: Clock) -> None:
    PlacementCache(settings, clock=clock, started=clock.stack_started).load()


def state(settings: FetchSettings, clock: Clock, host: str | None = "server-1", **kwargs: Any) -> dict[str, Any]:
    return server_state(
        settings,
        host,
        ["etl_daily", "housekeeping", "reports", "unplaced"],
        clock=clock,
        started=clock.stack_started,
        **kwargs,
    )


def test_a_trusted_copy_with_every_dag_its_owner_now_and_pending_handovers(
    tmp_path: Path, source: DocumentServer, clock: Clock
) -> None:
    settings = settings_for(source, tmp_path)
    load(settings, clock)
    clock.advance(20)
    requests = source.count
    shown = state(settings, clock)
    assert source.count == requests  # the view never asks the source
    assert (shown["status"], shown["trusted"], shown["warning"], shown["host"]) == ("ok", True, None, "server-1")
    document = shown["document"]
    assert (document["serial"], document["serial_floor"], document["lease_age"], document["lease_left"]) == (
        7,
        7,
        20.0,
        280.0,
    )
    assert (document["confirmed_at"], document["vouched_by"], document["last_failure"]) == (
        iso(T0),
        "the source",
        None,
    )
    dags = {dag["dag_id"]: dag for dag in shown["dags"]}
    assert dags["reports"] == {
        "dag_id": "reports",
        "entry": "reports",
        "owner": "server-1",
        "here": True,
        "pending": [{"at": iso(HANDOVER), "owner": "server-2", "in_seconds": 7180}],
        "tasks": [{"task_id": "publish", "owner": "server-2", "here": False, "pending": []}],
    }
    assert (dags["etl_daily"]["entry"], dags["etl_daily"]["owner"], dags["etl_daily"]["here"]) == (
        "etl_*",
        "server-2",
        False,
    )
    assert (dags["unplaced"]["entry"], dags["unplaced"]["owner"]) == (None, None)


def test_runs_triggered_by_hand_say_where_they_belong(tmp_path: Path, source: DocumentServer, clock: Clock) -> None:
    settings = settings_for(source, tmp_path)
    load(settings, clock)
    runs = [ManualRun("etl_daily", "manual__a", NOW, "ada"), ManualRun("reports", "manual__b", NOW)]
    shown = state(settings, clock, manual_runs=runs)
    elsewhere, here = shown["manual_runs"]
    assert (elsewhere["owner"], elsewhere["here"], elsewhere["triggered_by"]) == ("server-2", False, "ada")
    assert "trigger it in server-2's Airflow instead" in elsewhere["notice"]
    assert (here["owner"], here["here"], here["notice"]) == ("server-1", True, None)


def test_a_failing_source_within_the_lease_is_degraded(tmp_path: Path, source: DocumentServer, clock: Clock) -> None:
    settings = settings_for(source, tmp_path)
    load(settings, clock)
    source.respond = lambda headers: Reply(503)
    clock.advance(40)
    load(settings, clock)  # falls back to the copy held
    shown = state(settings, clock)
    assert (shown["status"], shown["trusted"]) == ("degraded", True)
    assert "The source is failing" in shown["warning"]
    assert "503" in shown["document"]["last_failure"]


def test_a_failing_source_past_the_lease_is_refusing(tmp_path: Path, source: DocumentServer, clock: Clock) -> None:
    settings = settings_for(source, tmp_path)
    load(settings, clock)
    source.respond = lambda headers: Reply(503)
    clock.advance(301)
    with pytest.raises(PlacementUnavailable):
        load(settings, clock)
    shown = state(settings, clock)
    assert (shown["status"], shown["trusted"]) == ("refusing", False)
    assert shown["warning"].startswith(
        "This server has no trustworthy placement document and runs nothing: the copy is 301 s old"
    )
    assert "The last read of the source, 0 s ago, failed" in shown["warning"]
    assert [dag["owner"] for dag in shown["dags"]] == ["server-2", "server-1", "server-1", None]  # the copy held


def test_a_copy_the_publisher_stopped_renewing_is_refusing(tmp_path: Path, clock: Clock) -> None:
    """File publishing: the source was just read, but the publisher's last renewal is past the lease."""
    document = tmp_path / "placement.yaml"
    document.write_bytes(with_meta(7, T0 - 900, T0 - 600, body=DOCUMENT))
    settings = FetchSettings(source=str(document), cache_dir=tmp_path / "cache")
    with pytest.raises(PlacementUnavailable):
        load(settings, clock)
    clock.advance(3)
    shown = state(settings, clock)
    assert (shown["status"], shown["trusted"]) == ("refusing", False)
    assert "the copy is 603 s old" in shown["warning"]
    assert "The source was read 3 s ago and gave no copy within its lease." in shown["warning"]
    assert shown["document"]["vouched_by"] == "the publisher (@meta)"


def test_credentials_in_the_source_url_are_never_shown(tmp_path: Path, source: DocumentServer, clock: Clock) -> None:
    settings = FetchSettings(source=source.url.replace("//", "//reader:s3cret@"), retries=0, cache_dir=tmp_path)
    load(settings, clock)
    source.respond = lambda headers: Reply(503)
    clock.advance(301)
    with pytest.raises(PlacementUnavailable) as refusal:
        load(settings, clock)
    observe.refused(tmp_path, context=None, dag_id="d", task_id="t", host="server-1", reason=str(refusal.value))
    shown = json.dumps(state(settings, clock))
    assert "s3cret" not in shown
    assert "reader" not in shown
    assert "//***@127.0.0.1" in shown


@pytest.mark.parametrize(
    ("happening", "expected"),
    [
        ("expired", ("stale", "the copy is 400 s old, over the maximum staleness of 300 s")),
        ("restarted", ("stale", "before this server's stack started")),
        ("never-loaded", ("stale", "no copy of the document is held yet")),
        ("nameless", ("refusing", "this server's name is unknown")),
        ("damaged", ("refusing", "the held copy's snapshot and body are missing or damaged")),
    ],
)
def test_no_trustworthy_document(
    tmp_path: Path, source: DocumentServer, clock: Clock, happening: str, expected: tuple[str, str]
) -> None:
    status, warning = expected
    settings = settings_for(source, tmp_path)
    if happening != "never-loaded":
        load(settings, clock)
    host = None if happening == "nameless" else "server-1"
    if happening == "expired":
        clock.advance(400)
    elif happening == "restarted":
        clock.advance(5)
        clock.restart()
    elif happening == "damaged":
        for path in tmp_path.glob("*.db"):
            path.unlink()
        for path in tmp_path.glob("*.yaml"):
            path.unlink()
    shown = state(settings, clock, host=host)
    assert (shown["status"], shown["trusted"]) == (status, False)
    assert warning in shown["warning"]
    assert "Every gated task here is refused" in shown["warning"]
    if status == "stale":
        assert "the next gated task will" in shown["warning"]


# The plugin's JSON API and page, served by its FastAPI app


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The plugin's app with the user's DAGs and manual runs given: the two come from Airflow's database and auth
    manager, which run only in a real API server (tests/integration/test_placement_view.py covers them)."""
    monkeypatch.setenv("HOST_HOSTNAME", "server-1")
    monkeypatch.setenv("AIRFLOW__PLACEMENT__CACHE_DIR", str(tmp_path / "cache"))
    plugin.app.dependency_overrides = {
        plugin.permitted_dags: lambda: ["etl_daily", "housekeeping", "reports", "unplaced"],
        plugin.manual_runs: lambda: [ManualRun("etl_daily", "manual__a", datetime.now(UTC), "ada")],
    }
    try:
        yield TestClient(plugin.app)
    finally:
        plugin.app.dependency_overrides = {}


def publish(path: Path) -> None:
    """A document as the publisher writes it for file publishing, renewed now."""
    now = datetime.now(UTC).timestamp()
    path.write_bytes(with_meta(3, now - 60, now, body=DOCUMENT))


def test_the_api_serves_the_views_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: Any) -> None:
    document = tmp_path / "placement.yaml"
    publish(document)
    monkeypatch.setenv("AIRFLOW__PLACEMENT__SOURCE", str(document))
    observe.load_placement(FetchSettings(source=str(document), cache_dir=tmp_path / "cache"))
    observe.record(tmp_path / "cache", event(1))
    answer = client.get("/api/state")
    assert answer.status_code == 200
    data = answer.json()
    assert (data["host"], data["status"], data["document"]["serial"]) == ("server-1", "ok", 3)
    assert data["document"]["vouched_by"] == "the publisher (@meta)"
    assert [dag["owner"] for dag in data["dags"]] == ["server-2", "server-1", "server-1", None]
    assert "trigger it in server-2's Airflow instead" in data["manual_runs"][0]["notice"]
    assert data["decisions"][0]["dag_id"] == "dag_1"
    page = client.get("/")
    assert page.status_code == 200
    assert "This server holds a trustworthy placement document." in page.text
    assert 'data-dag="reports"' in page.text
    assert "to server-2 for runs from" in page.text


def test_the_page_warns_and_escapes_what_it_shows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: Any) -> None:
    missing = tmp_path / "<b>gone</b>.yaml"
    monkeypatch.setenv("AIRFLOW__PLACEMENT__SOURCE", str(missing))
    with pytest.raises(PlacementUnavailable):
        observe.load_placement(FetchSettings(source=str(missing), cache_dir=tmp_path / "cache"))
    data = client.get("/api/state").json()
    assert (data["status"], data["trusted"]) == ("refusing", False)
    assert "The last read of the source" in data["warning"]
    page = client.get("/").text
    assert "This server has no trustworthy placement document and runs nothing: " in page
    assert 'data-status="refusing"' in page
    assert "&lt;b&gt;gone&lt;/b&gt;.yaml" in page
    assert "<b>gone</b>" not in page


def test_settings_airflow_cannot_use_are_shown_as_such(monkeypatch: pytest.MonkeyPatch, client: Any) -> None:
    monkeypatch.setenv("AIRFLOW__PLACEMENT__SOURCE", "/nowhere.yaml")
    monkeypatch.setenv("AIRFLOW__PLACEMENT__TTL", "soon")
    data = client.get("/api/state").json()
    assert (data["status"], data["document"]) == ("refusing", None)
    assert "invalid [placement] settings: [placement] ttl must be a number of seconds, not 'soon'" in data["warning"]
    assert [dag["dag_id"] for dag in data["dags"]] == ["etl_daily", "housekeeping", "reports", "unplaced"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (45.4, "45 s"), (725, "12 min 5 s"), (7200, "2 h"), (12000, "3 h 20 min"), (187200, "2 d 4 h")],
)
def test_durations_read_as_a_person_reads_them(seconds: float, text: str) -> None:
    assert plugin.duration(seconds) == text
