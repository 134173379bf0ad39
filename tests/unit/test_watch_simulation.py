"""The watchdog keeps the guarantee under faults hypothesis picks: three servers, each crashing (and coming back),
cut off from the source and the watchdog while it keeps running, or with a dead scheduler, at times and for spans
hypothesis chooses. Every server decides through the package's real gate (fetch, store, lease, decision) against
the confirming source (``serve``'s code on 127.0.0.1); the watchdog acts with the real publisher; the servers' Airflow
APIs are this test's fakes (see ``test_watch.py``); time is a clock moved by hand, one tick every 10 s. Invariant:
no run of any DAG is decided ``run`` by two servers, re-runs included.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confirming_source import TOKENS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from placement_server import T0, Clock
from test_watch import CLOCK_SKEW, MAX_STALENESS, World, _config_dict, _ti

from airflow_placement.decision import decide
from airflow_placement.fetch import FetchSettings, PlacementUnavailable, load_placement
from airflow_placement.watch import WatchConfig

SERVERS = ("server-1", "server-2", "server-3")
DAGS = ("dag_a", "dag_b", "dag_c")
TICKS = 30


@dataclass(frozen=True)
class Fault:
    kind: str  # crash (it stops; it comes back restarted), cut (it runs on, unreachable), sick (its scheduler stops)
    start: int  # tick
    end: int | None  # tick it is repaired, or never


faults = st.one_of(
    st.none(),
    st.builds(
        Fault,
        kind=st.sampled_from(["crash", "cut", "sick"]),
        start=st.integers(2, 20),
        end=st.one_of(st.none(), st.integers(22, TICKS - 4)),
    ),
)


class Server:
    """One server: its gate (with its own token and cache) and whether it is running, reachable, restarted."""

    def __init__(self, world: World, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.world, self.name, self.monkeypatch = world, name, monkeypatch
        self.env = f"PLACEMENT_TOKEN_{name[-1]}"
        monkeypatch.setenv(self.env, TOKENS[name])
        self.started = T0 - 3600
        self.rerun: list[tuple[str, float]] = []  # cleared task instances it has yet to decide again
        self.settings = FetchSettings(
            source=world.source.url,
            ttl=5,
            max_staleness=MAX_STALENESS,
            clock_skew=CLOCK_SKEW,
            retries=0,
            token_env=self.env,
            cache_dir=world.tmp / f"cache-{name}",
        )

    def route(self, up: bool) -> None:
        self.monkeypatch.setenv(self.env, TOKENS[self.name] if up else "no-route")

    def runs(self, dag: str, when: float) -> bool:
        try:
            loaded = load_placement(self.settings, clock=self.world.clock, started=lambda: self.started)
        except PlacementUnavailable:
            return False
        now = datetime.fromtimestamp(self.world.clock(), UTC)
        moment = datetime.fromtimestamp(when, UTC)
        horizon = timedelta(seconds=MAX_STALENESS)
        return decide(
            loaded.placement, dag_id=dag, task_id="work", host=self.name, when=moment, now=now, horizon=horizon
        ).run


Ran = dict[tuple[str, float], list[str]]


def simulate(plan: dict[str, Fault | None], root: Path, monkeypatch: pytest.MonkeyPatch) -> Ran:
    """Who decided ``run`` for each (DAG, logical date) over the ticks, under ``plan``'s faults."""
    monkeypatch.setenv("AIRFLOW_PLACEMENT_PUBLISHER_TOKEN", TOKENS["publisher"])
    monkeypatch.setenv("API_PASSWORD", "secret")
    world = World(root, Clock(), servers=3, restore=True, restore_after=60)
    try:
        world.config = WatchConfig.from_dict(
            {**_config_dict(world), "api_user": "admin", "api_password_env": "API_PASSWORD", "restore": True}
        )
        servers = {name: Server(world, name, monkeypatch) for name in SERVERS}
        watchdog = world.watchdog()
        ran: Ran = {}
        for tick in range(TICKS):
            now = T0 + 10 * tick
            world.clock.now = now
            running = set(SERVERS)
            for name, fault in plan.items():
                broken = fault is not None and fault.start <= tick and (fault.end is None or tick < fault.end)
                server, fake = servers[name], world.airflow[name]
                if fault is not None and tick == fault.end and fault.kind == "crash":
                    server.started = now  # it comes back: a restarted stack
                if not broken:
                    fake.state = "up"
                    server.route(True)
                    continue
                assert fault is not None
                fake.state = {"crash": "down", "cut": "down", "sick": "sick"}[fault.kind]
                server.route(fault.kind != "cut")
                if fault.kind != "cut":
                    running.discard(name)  # a crashed server or a stopped scheduler runs nothing
            for name in sorted(running):
                server = servers[name]
                for dag, when in server.rerun:
                    if server.runs(dag, when):
                        ran.setdefault((dag, when), []).append(f"{name} (re-run)")
                server.rerun.clear()
                for dag in DAGS:
                    if server.runs(dag, now):
                        ran.setdefault((dag, now), []).append(name)
                    else:
                        world.airflow[name].skipped.append(_ti(dag, now))
            watchdog.cycle()
            for name, fake in world.airflow.items():
                for body in fake.cleared:
                    when = datetime.fromisoformat(body["dag_run_id"].split("__", 1)[1]).timestamp()
                    servers[name].rerun.append((str(body["dag_id"]), when))
                fake.cleared.clear()
        return ran
    finally:
        world.stop()


@settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=st.fixed_dictionaries({name: faults for name in SERVERS}))
def test_no_run_twice_whatever_fails(plan: dict[str, Fault | None], monkeypatch: pytest.MonkeyPatch) -> None:
    with tempfile.TemporaryDirectory() as root:
        ran = simulate(plan, Path(root), monkeypatch)
    twice = {key: servers for key, servers in ran.items() if len(servers) > 1}
    assert not twice, (plan, twice)
