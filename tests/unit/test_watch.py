"""The watchdog (``airflow-placement watch``) against real HTTP servers on 127.0.0.1.

The confirming source is ``serve``'s own code; the publisher is the package's own, on real files. Each Airflow server
is a fake: a small HTTP server of this test that answers ``/api/v2/monitor/health`` with the report Airflow 3.3's API
server gives (and, for the re-runs, the few REST API v2 calls ``rerun`` makes), because a real Airflow per server
would take minutes to start. "Down" means it drops every connection without an answer. Time is a clock moved by hand,
shared by the source, the publisher and the watchdog.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from confirming_source import TOKENS, Running, write_tokens
from placement_server import T0, Clock, with_meta

from airflow_placement.decision import decide
from airflow_placement.document import Placement, parse_document
from airflow_placement.fetch import FetchSettings, PlacementUnavailable, load_placement
from airflow_placement.publish import Publisher, PublishError
from airflow_placement.signing import load_public_key, verify, write_key_pair
from airflow_placement.watch import HEALTH_PATH, WatchConfig, Watchdog, WatchError

MAX_STALENESS, CLOCK_SKEW, GRACE = 60.0, 5.0, 30.0
PROOF = MAX_STALENESS + CLOCK_SKEW
DESIRED = "dag_a: server-1\ndag_b: server-2\n'*': server-1\n"


def healthy() -> dict[str, Any]:
    beat = "2026-12-01T06:00:00+00:00"
    return {
        "metadatabase": {"status": "healthy"},
        "scheduler": {"status": "healthy", "latest_scheduler_heartbeat": beat},
        "triggerer": {"status": "healthy", "latest_triggerer_heartbeat": beat},
        "dag_processor": {"status": "healthy", "latest_dag_processor_heartbeat": beat},
    }


class FakeAirflow:
    """An Airflow API server's health endpoint (and re-run calls), on 127.0.0.1; ``state``: up, sick or down."""

    def __init__(self) -> None:
        self.state = "up"
        self.delay: Callable[[], None] = lambda: None  # runs before each answer (a slow server: a clock moved on)
        self.skipped: list[dict[str, Any]] = []  # task instances the REST API lists as skipped
        self.cleared: list[dict[str, Any]] = []  # bodies of clearTaskInstances calls that were not dry runs
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, status: int, data: Any) -> None:
                body = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                fake.delay()
                if fake.state == "down":
                    self.close_connection = True
                    return
                if self.path == HEALTH_PATH:
                    report = healthy()
                    if fake.state == "sick":
                        report["scheduler"]["status"] = "unhealthy"
                    self._answer(200, report)
                elif self.path.startswith("/api/v2/dags/~/dagRuns/~/taskInstances"):
                    self._answer(200, {"task_instances": fake.skipped, "total_entries": len(fake.skipped)})
                else:
                    self._answer(404, {"detail": "not found"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/auth/token":
                    self._answer(201, {"access_token": "t"})
                    return
                ids = set(body["task_ids"])
                matches = [ti for ti in fake.skipped if ti["dag_run_id"] == body["dag_run_id"] and ti["task_id"] in ids]
                if not body["dry_run"]:
                    fake.cleared.append({**body, "dag_id": self.path.split("/")[4]})
                    for ti in matches:
                        ti["state"] = None
                self._answer(200, {"task_instances": matches, "total_entries": len(matches)})

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()


class World:
    """A publisher, the confirming source and N fake Airflow servers; one watchdog over them."""

    def __init__(self, tmp_path: Path, clock: Clock, servers: int, **settings: Any) -> None:
        self.tmp, self.clock = tmp_path, clock
        self.source = Running(tmp_path / "serve", write_tokens(tmp_path / "tokens.yaml"), clock)
        self.airflow = {f"server-{i}": FakeAirflow() for i in range(1, servers + 1)}
        self.publisher = Publisher(tmp_path / "publisher")
        text, _ = self.publisher.begin(parse_document(DESIRED), lead=PROOF, now=self.now())
        self.source.client.upload(text)
        self.publisher.commit()
        self.lines: list[str] = []
        self.config = WatchConfig.from_dict(
            {
                "servers": [{"name": name, "api": fake.url} for name, fake in self.airflow.items()],
                "source": self.source.url,
                "publisher_dir": str(tmp_path / "publisher"),
                "state_dir": str(tmp_path / "watch"),
                "max_staleness": MAX_STALENESS,
                "clock_skew": CLOCK_SKEW,
                "grace": GRACE,
                "moves_file": str(tmp_path / "inventory" / "dag_placement_moves.yml"),
                **settings,
            }
        )

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def watchdog(self, dry_run: bool = False) -> Watchdog:
        return Watchdog(self.config, dry_run=dry_run, clock=self.clock, log=self.lines.append)

    def confirm_all_up(self) -> None:
        for name, fake in self.airflow.items():
            if fake.state == "up":
                assert self.source.confirm(name) == 200

    def published(self) -> Placement:
        placement = self.publisher.published()
        assert placement is not None
        return placement

    @property
    def serial(self) -> int:
        meta = self.published().meta
        assert meta is not None
        return meta.serial

    def owner_change(self, dag: str) -> float:
        """When the published document's first handover of ``dag`` takes effect (a Unix time)."""
        entry = self.published().entry_for(dag)
        assert entry is not None and entry.schedule.handovers
        return entry.schedule.handovers[0].at.timestamp()

    def owner(self, dag: str, when: float) -> str | None:
        moment = datetime.fromtimestamp(when, UTC)
        return decide(self.published(), dag_id=dag, task_id=None, host="x", when=moment).owner

    def stop(self) -> None:
        self.source.stop()
        for fake in self.airflow.values():
            fake.stop()


@pytest.fixture
def world(tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("AIRFLOW_PLACEMENT_PUBLISHER_TOKEN", TOKENS["publisher"])
    made = World(tmp_path, clock, servers=2)
    try:
        yield made
    finally:
        made.stop()


def three(tmp_path: Path, clock: Clock, **settings: Any) -> World:
    return World(tmp_path, clock, servers=3, **settings)


def run_for(world: World, watchdog: Watchdog, seconds: float, step: float = 10.0, confirm: bool = True) -> None:
    """Cycles every ``step`` seconds for ``seconds``; the servers that are up confirm their copy meanwhile."""
    for _ in range(int(seconds // step)):
        world.clock.advance(step)
        if confirm:
            world.confirm_all_up()
        watchdog.cycle()


def test_a_scheduled_handover_after_the_grace_and_a_forced_one_only_after_the_proof(world: World) -> None:
    world.confirm_all_up()
    world.airflow["server-1"].state = "sick"  # its scheduler stopped; the API server still answers
    watchdog = world.watchdog()
    watchdog.cycle()
    run_for(world, watchdog, 20)
    assert world.serial == 1  # within the grace: nothing

    run_for(world, watchdog, 10)  # 30 s unhealthy
    assert world.serial == 2
    handover = T0 + 30 + PROOF
    assert world.owner("dag_a", handover - 1) == "server-1"  # a scheduled handover: the lease ahead
    assert world.owner("dag_a", handover) == "server-2"
    assert world.owner("dag_b", T0) == "server-2"
    assert any("scheduled handover to server-2" in line for line in world.lines)

    run_for(world, watchdog, 30)  # 60 s: server-2 confirmed all along, server-1 last at T0: no proof yet
    assert world.serial == 2
    assert world.source.client.confirmations()["servers"]["server-1"].get("fenced_through") is None

    run_for(world, watchdog, 10)  # 70 s > 65 s: it has stopped
    assert world.serial == 3
    stop = T0 + PROOF + CLOCK_SKEW  # its proven stop, and the runs it may have run triggered up to the skew ahead
    assert world.owner("dag_a", stop - 1) == "server-1"  # it may have run those
    assert world.owner("dag_a", stop) == "server-2"  # forced: from then on
    assert world.source.client.confirmations()["servers"]["server-1"]["fenced_through"] == 2
    assert any("it has stopped; forced move to server-2" in line for line in world.lines)
    moves = yaml.safe_load((world.tmp / "inventory" / "dag_placement_moves.yml").read_text())["dag_placement_moves"]
    assert [(m["failed"], m["to"], m["forced"], m["serial"]) for m in moves] == [
        ("server-1", "server-2", False, 2),
        ("server-1", "server-2", True, 3),
    ]

    run_for(world, watchdog, 60)
    assert world.serial == 3  # nothing left to move


def test_a_forced_move_waits_for_its_date_without_a_refusal(world: World) -> None:
    """Proven stopped at 65 s, but its runs move only from 70 s (the proven stop + clock_skew): checks in between
    publish nothing and say nothing (the publisher refuses a forced move dated ahead; the demo's watchdog drill logged
    that refusal once)."""
    world.confirm_all_up()
    world.airflow["server-1"].state = "sick"
    watchdog = world.watchdog()
    watchdog.cycle()
    run_for(world, watchdog, 65, step=5)  # proven at 65 s
    assert world.serial == 2  # the scheduled handover only
    run_for(world, watchdog, 4, step=2)  # 67 s, 69 s: since (70 s) still ahead
    assert world.serial == 2
    assert not any("refused" in line for line in world.lines), world.lines
    run_for(world, watchdog, 2, step=2)  # 71 s
    assert world.serial == 3
    assert world.owner("dag_a", T0 + PROOF + CLOCK_SKEW) == "server-2"


def test_slow_health_checks_neither_shorten_a_handovers_lead_nor_date_a_forced_move_early(world: World) -> None:
    """Each check of server-2 takes 4 s (a server that does not answer takes the health timeout). The scheduled
    handover is still the whole lease ahead of its upload, and the forced move still starts at the proven stop +
    clock_skew: both count from the time the watchdog acts, not from the start of its cycle."""
    world.confirm_all_up()  # server-1 last confirms at T0
    world.airflow["server-1"].state = "sick"
    world.airflow["server-2"].delay = lambda: world.clock.advance(4)
    watchdog = world.watchdog()
    watchdog.cycle()
    while world.serial == 1:
        run_for(world, watchdog, 6, step=6)
    assert world.owner_change("dag_a") - world.clock() >= PROOF  # uploaded just now: the lease ahead
    while world.serial == 2:
        run_for(world, watchdog, 6, step=6)
    assert any("forced move" in line for line in world.lines), world.lines
    assert world.owner("dag_a", T0 + PROOF + CLOCK_SKEW - 1) == "server-1"  # it may have run those
    assert world.owner("dag_a", T0 + PROOF + CLOCK_SKEW + 10) == "server-2"


def test_with_a_signing_key_what_the_watchdog_publishes_is_signed(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Servers holding the publisher's public key refuse an unsigned document: the watchdog signs with the key."""
    monkeypatch.setenv("AIRFLOW_PLACEMENT_PUBLISHER_TOKEN", TOKENS["publisher"])
    public = load_public_key(write_key_pair(tmp_path / "signing_key"))
    made = World(tmp_path, clock, servers=2, signing_key=str(tmp_path / "signing_key"))
    try:
        made.confirm_all_up()
        made.airflow["server-1"].state = "sick"
        watchdog = made.watchdog()
        watchdog.cycle()
        run_for(made, watchdog, 30)
        assert made.serial == 2
        verify(made.published().meta, public)
    finally:
        made.stop()


def test_an_unreadable_signing_key_is_one_line(world: World, tmp_path: Path) -> None:
    key = tmp_path / "signing_key"
    write_key_pair(key)
    key.chmod(0o644)
    config = replace(world.config, signing_key=key)
    with pytest.raises(WatchError, match=r"^the signing key .* has mode 0644: others may read it; chmod 600 it$"):
        Watchdog(config, clock=world.clock, log=world.lines.append)


def test_a_server_confirming_does_not_prove_another_alive_and_a_confirming_one_is_never_forced(world: World) -> None:
    world.confirm_all_up()
    world.airflow["server-1"].state = "sick"
    watchdog = world.watchdog()
    watchdog.cycle()
    for _ in range(12):  # server-1 keeps confirming (its tasks still run): scheduled handover only
        world.clock.advance(10)
        assert world.source.confirm("server-1") == 200
        world.confirm_all_up()
        watchdog.cycle()
    assert world.serial == 2
    assert world.owner("dag_a", T0 + 30 + PROOF - 1) == "server-1"


def test_the_watchdog_cut_off_from_every_server_does_nothing(world: World) -> None:
    world.confirm_all_up()
    watchdog = world.watchdog()
    watchdog.cycle()
    for fake in world.airflow.values():
        fake.state = "down"  # as the watchdog sees it: every server unreachable
    run_for(world, watchdog, 300, confirm=False)
    assert world.serial == 1
    assert world.source.client.confirmations()["servers"]["server-1"].get("fenced_through") is None
    assert [line for line in world.lines if "no majority" in line] == [
        "watch: sees 1 of 3 voters (the servers and the source): no majority, so it is the one cut off; doing nothing"
    ]


def test_no_majority_no_action(tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_PLACEMENT_PUBLISHER_TOKEN", TOKENS["publisher"])
    world = three(tmp_path, clock)
    try:
        world.confirm_all_up()
        world.airflow["server-1"].state = "down"
        world.airflow["server-3"].state = "down"
        watchdog = world.watchdog()
        watchdog.cycle()
        run_for(world, watchdog, 200)  # sees the healthy server-2 and the source: 2 of 4, it may be the one cut off
        assert world.serial == 1

        # 3 of 4: a majority again. What it saw without one does not count: the grace starts now (the demo's drill
        # saw a watchdog back from isolation try a move at once, against a server only it had not reached).
        world.airflow["server-3"].state = "sick"
        run_for(world, watchdog, GRACE)  # checks every 10 s: the first with a majority started the grace
        assert world.serial == 1
        run_for(world, watchdog, 10)  # the grace is over: it acts, moving server-1's and server-3's DAGs
        assert world.serial > 1
        assert world.owner("dag_a", clock() + 3600) == "server-2"
    finally:
        world.stop()


def test_never_to_an_unhealthy_server(tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_PLACEMENT_PUBLISHER_TOKEN", TOKENS["publisher"])
    world = three(tmp_path, clock)
    try:
        world.confirm_all_up()
        world.airflow["server-1"].state = "sick"
        world.airflow["server-2"].state = "sick"
        world.airflow["server-3"].state = "sick"
        watchdog = world.watchdog()
        watchdog.cycle()
        run_for(world, watchdog, 100)
        assert world.serial == 1  # no healthy successor anywhere
        assert any("no server of its failover order is healthy: nothing moves" in line for line in world.lines)

        world.airflow["server-3"].state = "up"
        run_for(world, watchdog, 10)
        later = clock() + 3600
        assert world.owner("dag_a", later) == "server-3"  # server-1's next in order is server-2: sick, skipped
        assert world.owner("dag_b", later) == "server-3"  # server-2's own DAGs too
        assert "server-2" not in {world.owner(dag, later) for dag in ("dag_a", "dag_b", "other")}
    finally:
        world.stop()


def test_a_dry_run_changes_nothing(world: World) -> None:
    published = (world.tmp / "publisher" / "published.yaml").read_bytes()
    world.confirm_all_up()
    world.airflow["server-1"].state = "down"
    watchdog = world.watchdog(dry_run=True)
    watchdog.cycle()
    run_for(world, watchdog, 120)
    assert (world.tmp / "publisher" / "published.yaml").read_bytes() == published
    assert not (world.tmp / "publisher" / "pending.yaml").exists()
    record = world.source.client.confirmations()
    assert record["serial"] == 1
    assert "fenced_through" not in record["servers"]["server-1"]
    assert not (world.tmp / "inventory").exists()
    assert any(line.startswith("watch (dry run): would publish:") and "scheduled" in line for line in world.lines)
    assert any(line.startswith("watch (dry run): would publish:") and "forced" in line for line in world.lines)


@pytest.mark.parametrize("restore", [False, True])
def test_restore_only_if_configured_and_only_after_a_healthy_while(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch, restore: bool
) -> None:
    monkeypatch.setenv("AIRFLOW_PLACEMENT_PUBLISHER_TOKEN", TOKENS["publisher"])
    world = World(tmp_path, clock, servers=2, restore=restore, restore_after=120)
    try:
        world.confirm_all_up()
        world.airflow["server-1"].state = "down"
        watchdog = world.watchdog()
        watchdog.cycle()
        run_for(world, watchdog, 80)
        moved = world.serial
        assert world.owner("dag_a", clock() + 3600) == "server-2"

        world.airflow["server-1"].state = "up"
        run_for(world, watchdog, 110)  # healthy, not yet for 120 s
        assert world.serial == moved
        run_for(world, watchdog, 20)
        if restore:
            assert world.serial == moved + 1
            back = clock() + PROOF
            assert world.owner("dag_a", clock()) == "server-2"  # a scheduled handover back
            assert world.owner("dag_a", back + 1) == "server-1"
        else:
            assert world.serial == moved
    finally:
        world.stop()


def _ti(dag: str, run: float, state: str = "skipped") -> dict[str, Any]:
    date = datetime.fromtimestamp(run, UTC).isoformat()
    return {
        "dag_id": dag,
        "dag_run_id": f"scheduled__{date}",
        "task_id": "work",
        "map_index": -1,
        "logical_date": date,
        "state": state,
    }


def test_missed_runs_after_the_proven_stop_rerun_once_earlier_ones_listed(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_PASSWORD", "secret")
    world.config = WatchConfig.from_dict(
        {**_config_dict(world), "api_user": "admin", "api_password_env": "API_PASSWORD"}
    )
    successor = world.airflow["server-2"]
    successor.skipped = [_ti("dag_a", T0 + 50), _ti("dag_a", T0 + 70), _ti("dag_b", T0 + 80)]
    world.confirm_all_up()
    world.airflow["server-1"].state = "down"
    watchdog = world.watchdog()
    watchdog.cycle()
    run_for(world, watchdog, 70, confirm=False)  # server-2 does not fetch: the re-run waits for it
    assert world.serial == 3
    assert successor.cleared == []

    run_for(world, watchdog, 10)  # server-2 now holds serial 3: dag_a dated from T0 + 65 re-runs there
    assert [(c["dag_run_id"], c["task_ids"]) for c in successor.cleared] == [
        (f"scheduled__{datetime.fromtimestamp(T0 + 70, UTC).isoformat()}", ["work"])
    ]
    assert any("re-ran once on server-2" in line for line in world.lines)
    listed = [line for line in world.lines if "may or may not have run" in line]
    assert len(listed) == 1 and "dag_a" in listed[0] and "airflow tasks clear" in listed[0]

    run_for(world, watchdog, 60)
    assert len(successor.cleared) == 1  # once


def _config_dict(world: World) -> dict[str, Any]:
    config = world.config
    return {
        "servers": [{"name": s.name, "api": s.api} for s in config.servers],
        "source": config.source,
        "publisher_dir": str(config.publisher_dir),
        "state_dir": str(config.state_dir),
        "max_staleness": config.max_staleness,
        "clock_skew": config.clock_skew,
        "grace": config.grace,
    }


def test_the_watch_command(world: World, tmp_path: Path) -> None:
    config = tmp_path / "watch.yaml"
    config.write_text(yaml.safe_dump(_config_dict(world)))
    result = subprocess.run(
        [sys.executable, "-m", "airflow_placement.cli", "watch", "--config", str(config), "--once", "--dry-run"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "watch (dry run): sees 3 of 3 voters (the servers and the source): a majority, watching"
    ]

    checked = subprocess.run(
        [sys.executable, "-m", "airflow_placement.cli", "watch", "--config", str(config), "--check-config"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert checked.stdout == f"{config}: valid, 2 servers\n"

    config.write_text(yaml.safe_dump({**_config_dict(world), "grace": "soon"}))
    result = subprocess.run(
        [sys.executable, "-m", "airflow_placement.cli", "watch", "--config", str(config), "--once"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"airflow-placement watch: error: {config}: grace must be a number of seconds, not 'soon'"
    ]


def test_a_published_document_the_source_lacks_is_uploaded(world: World) -> None:
    """A publish given up after it was issued may stay published (a forced failover is never taken back)."""
    text, _ = world.publisher.begin(parse_document(DESIRED.replace("dag_b: server-2", "dag_b: server-1")), lead=PROOF)
    world.publisher.commit()  # published, never uploaded
    world.confirm_all_up()
    world.watchdog().cycle()
    assert world.source.client.confirmations()["serial"] == 2
    assert world.source.get(TOKENS["server-1"]).text == text
    assert any("uploaded serial 2, published but not yet served" in line for line in world.lines)


def test_every_action_is_posted_to_the_webhook(world: World) -> None:
    posted: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            posted.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        world.config = WatchConfig.from_dict(
            {**_config_dict(world), "webhook": f"http://127.0.0.1:{hook.server_address[1]}/hook"}
        )
        world.confirm_all_up()
        world.airflow["server-1"].state = "down"
        watchdog = world.watchdog()
        watchdog.cycle()
        run_for(world, watchdog, 70)
    finally:
        hook.shutdown()
        hook.server_close()
    assert [item["text"] for item in posted] == world.lines
    assert any("scheduled handover" in line for line in world.lines)
    assert any("forced move" in line for line in world.lines)


class Gate:
    """One server's gate: the package's own fetch, lease and decision code, with its own token and cache."""

    def __init__(self, world: World, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.world, self.name, self.monkeypatch = world, name, monkeypatch
        self.env = f"PLACEMENT_TOKEN_{name[-1]}"
        monkeypatch.setenv(self.env, TOKENS[name])
        self.settings = FetchSettings(
            source=world.source.url,
            ttl=5,
            max_staleness=MAX_STALENESS,
            clock_skew=CLOCK_SKEW,
            retries=0,
            token_env=self.env,
            cache_dir=world.tmp / f"cache-{name}",
        )

    def cut_off(self) -> None:
        """Its route to the source is gone: every request fails (as a wrong token does: 401, nothing confirmed)."""
        self.monkeypatch.setenv(self.env, "no-route")

    def runs(self, dag: str, when: float) -> bool:
        try:
            loaded = load_placement(self.settings, clock=self.world.clock, started=lambda: T0 - 3600)
        except PlacementUnavailable:
            return False
        moment = datetime.fromtimestamp(when, UTC)
        horizon = timedelta(seconds=MAX_STALENESS)
        return decide(
            loaded.placement, dag_id=dag, task_id="work", host=self.name, when=moment, now=moment, horizon=horizon
        ).run


@pytest.mark.parametrize("fault", ["crash", "partition"])
def test_end_to_end_no_run_twice_and_none_after_the_proven_stop_lost(
    world: World, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """A run every 10 s of dag_a (server-1's), decided by both servers' real gates; server-1 crashes, or is cut off
    from the source and the watchdog while it keeps running, at T0 + 100. The watchdog moves dag_a without a person."""
    monkeypatch.setenv("API_PASSWORD", "secret")
    world.config = WatchConfig.from_dict(
        {**_config_dict(world), "api_user": "admin", "api_password_env": "API_PASSWORD"}
    )
    gates = {name: Gate(world, name, monkeypatch) for name in ("server-1", "server-2")}
    successor = world.airflow["server-2"]
    watchdog = world.watchdog()
    ran: dict[float, list[str]] = {}
    alive = {"server-1", "server-2"}
    for tick in range(41):
        now = T0 + 10 * tick
        world.clock.now = now
        if now == T0 + 100:
            world.airflow["server-1"].state = "down"
            if fault == "crash":
                alive.discard("server-1")
            else:
                gates["server-1"].cut_off()
        for name in sorted(alive):
            if gates[name].runs("dag_a", now):
                ran.setdefault(now, []).append(name)
            elif name == "server-2":
                successor.skipped.append(_ti("dag_a", now))
        watchdog.cycle()
    for body in successor.cleared:
        when = datetime.fromisoformat(body["dag_run_id"].split("__", 1)[1]).timestamp()
        ran.setdefault(when, []).append("server-2 (re-run)")

    assert all(len(servers) == 1 for servers in ran.values()), ran  # no run twice
    assert any("forced move" in line for line in world.lines)
    last_run_by_1 = max(when for when, servers in ran.items() if servers == ["server-1"])
    proven = world.owner_change("dag_a")
    assert last_run_by_1 < proven  # server-1 ran nothing from its proven stop on
    after = [T0 + 10 * tick for tick in range(41) if T0 + 10 * tick >= proven]
    assert all(when in ran for when in after), sorted(set(after) - set(ran))  # none lost after the proven stop
    missed = [T0 + 10 * tick for tick in range(41) if T0 + 10 * tick not in ran]
    assert (fault == "crash") == bool(missed)  # cut off, server-1 ran what it owned until its copy expired
    listed = " ".join(line for line in world.lines if "may or may not have run" in line)
    if missed:  # the rest (and the last one server-1 decided to run), listed with the command that re-runs them
        command = listed.split("airflow tasks clear dag_a -t '^(work)$' -s ", 1)[1].split()
        start, end = (datetime.fromisoformat(command[i]).timestamp() for i in (0, 2))
        assert start == T0 + 90 and end == max(missed)  # from its last confirmation before the crash
        assert start <= min(missed) and command[3:] == ["--only-failed", "-y"]


def test_a_source_ahead_of_the_publisher_stops_it_and_is_said_once(world: World) -> None:
    """Someone uploaded to the source behind the publisher's back: the watchdog does nothing, and says so once."""
    world.source.client.upload(with_meta(5, T0).decode())
    world.confirm_all_up()
    world.airflow["server-1"].state = "down"
    watchdog = world.watchdog()
    watchdog.cycle()
    run_for(world, watchdog, 120)
    assert world.serial == 1
    said = [line for line in world.lines if "the source serves serial 5, the publisher's last is 1" in line]
    assert len(said) == 1


def test_a_fence_whose_publish_issued_nothing_is_lifted(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The publisher refuses the forced plan after the fence (simulated: its begin raises, as for a refused plan)."""
    real_begin = Publisher.begin

    def refusing(self: Publisher, desired: Placement, **options: Any) -> Any:
        if options.get("failed") and not options.get("check"):
            raise PublishError("refused for this test")
        return real_begin(self, desired, **options)

    monkeypatch.setattr(Publisher, "begin", refusing)
    world.confirm_all_up()
    world.airflow["server-1"].state = "down"
    watchdog = world.watchdog()
    watchdog.cycle()
    run_for(world, watchdog, 70)
    assert any("publish failed, nothing moved: refused for this test" in line for line in world.lines)
    assert "fenced_through" not in world.source.client.confirmations()["servers"]["server-1"]
    assert world.source.confirm("server-1") == 200  # back, it reads the document that still holds
    assert world.publisher.holder() is None
