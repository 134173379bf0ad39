"""A simulation of one publisher and three servers, running the real lease, store, publish and decision code.

Only time, the network and the servers' lives are simulated:

- True time advances by rules. Every clock is true time plus a fixed offset of at most ``CLOCK_SKEW / 2``, so any
  two clocks differ by at most the clock-skew margin the lease is configured with.
- Each server has its own store directory (kept across restarts, as on a persistent volume), a ``started`` time on
  its own clock (set again by a restart), and decides nothing while it is down.
- The document reaches the servers in one of two ways. ``file``: the publisher writes each server's own file (a
  server that is down or cut off misses the copy). ``http``: every server pulls from one origin, standing in for a
  web server or CDN, that serves the last committed document and can be down, serve garbage, be out of a server's
  reach, or lie: serve a server an older document than one it served that server before. (An older document
  served to a server that never saw a newer one is, to that server, the truth: the lease takes an HTTP answer to
  be current, so that lie is outside what any rule can catch and is not simulated.)
- The publisher's timer renews the published document every ``RENEW_EVERY`` seconds; the operator publishes new
  owners, and forces a failover off a server that is down.
- Each server runs Airflow: every scheduled run is decided by each live server when its own clock reaches the
  run's time (a server that is down then misses it); runs triggered by hand, dated in the past, about now or a bit
  in the future, are decided by the live servers they are triggered on; a task that ran may be retried later.

The guarantee, checked on every decision: no two servers ever decide ``run`` for the same (DAG, task, logical
date). Checked after every step and every decision, a stronger form: at no moment would two live servers both run
the same run if asked, by the copies they hold.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar, Literal
from unittest import mock

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from airflow_placement import fetch
from airflow_placement.decision import decide
from airflow_placement.document import Entry, Meta, PlacementView, parse_document
from airflow_placement.fetch import FetchSettings, PlacementCache, PlacementUnavailable
from airflow_placement.publish import Publisher, PublishError
from airflow_placement.source import Fetched, FileSource

TTL = 5.0
MAX_STALENESS = 30.0
CLOCK_SKEW = 4.0
LEAD = MAX_STALENESS + CLOCK_SKEW
RENEW_EVERY = 10.0
HORIZON = timedelta(seconds=CLOCK_SKEW)  # FetchSettings.horizon
T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC).timestamp()
SERVERS = ("server-1", "server-2", "server-3")
# DAG id -> (seconds between its scheduled runs, seconds after its logical date a run is due)
SCHEDULES = {"dag_a": (4.0, 0.0), "dag_b": (10.0, 10.0)}
DAGS = tuple(SCHEDULES)
TASK = "work"
ORIGIN_URL = "https://placement.test/airflow-dag-on-server.yaml"
GARBAGE = (
    b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>",
    b"dag_a: [server-1\n",
    b"dag_a: 42\n",
)
# The document in the original form, as it was before the publisher: older than any document with @meta.
ORIGINAL = b"dag_a: server-1\ndag_b: server-1\n"
# tmpfs where there is one: the stores and the publisher sync every write, which is slow on a disk
SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None

Outcome = Literal["run", "skip", "unavailable"]
Finish = Literal["commit", "abort", "hold"]
Key = tuple[str, str, float]  # DAG id, task id, logical date (a Unix time)


def quarters(low: int, high: int) -> st.SearchStrategy[float]:
    """Seconds on a quarter-second grid, from ``low / 4`` to ``high / 4``: boundaries are hit exactly."""
    return st.integers(low, high).map(lambda n: n / 4)


WAITS = st.one_of(quarters(1, 12), quarters(12, 60), quarters(60, 180))
FINISHES = st.sampled_from(("commit", "commit", "abort", "hold"))


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def etag_of(body: bytes) -> str:
    return f'"{hashlib.sha256(body).hexdigest()[:16]}"'


@dataclass
class Server:
    name: str
    offset: float
    started: float
    directory: Path
    down_since: float | None = None  # true time of the crash; None while up
    back_at: float | None = None  # true time its stack starts again by itself
    cut_off: bool = False  # the publisher cannot write its file (file) / it cannot reach the origin (http)
    corrupted: bool = False  # its file holds garbage (file)
    cache: PlacementCache = field(init=False)

    @property
    def file(self) -> Path:
        return self.directory / "placement.yaml"


@dataclass
class Origin:
    """The HTTP source as the servers see it: one document, and what the network does to each request."""

    body: bytes | None = None
    serial: int = 0
    failure: Literal["down", "garbage"] | None = None
    garbage: bytes = GARBAGE[0]
    lies: dict[str, bytes] = field(default_factory=dict)  # server -> the older document served to it
    served: dict[str, dict[int, bytes]] = field(default_factory=lambda: defaultdict(dict))  # server -> serial -> body

    def fetch(self, server: Server, etag: str | None) -> Fetched:
        if server.cut_off or self.failure == "down" or self.body is None:
            raise OSError("connection refused")
        if self.failure == "garbage":
            return Fetched(200, self.garbage, None, vouches=True)
        body = self.lies.get(server.name, self.body)
        if body is self.body:
            self.served[server.name][self.serial] = body
        if etag == etag_of(body):
            return Fetched(304, b"", etag, vouches=True)
        return Fetched(200, body, etag_of(body), vouches=True)


@dataclass
class Pending:
    text: str
    forced: bool
    sent_to: set[str] = field(default_factory=set)


@dataclass
class Looked:
    """A held copy with its entries looked up once: looking at every server after every step must stay cheap."""

    view: PlacementView
    entries: dict[str, Entry | None] = field(default_factory=dict)

    @property
    def revision(self) -> str:
        return self.view.revision

    @property
    def meta(self) -> Meta | None:
        return self.view.meta

    def entry_for(self, dag_id: str) -> Entry | None:
        if dag_id not in self.entries:
            self.entries[dag_id] = self.view.entry_for(dag_id)
        return self.entries[dag_id]


class PlacementMachine(RuleBasedStateMachine):
    """One publisher and three servers. Subclasses choose the source, switch a rule off, or let in what the
    package does not yet get right (each switch names the test that shows it)."""

    SOURCE: ClassVar[Literal["file", "http"]] = "file"
    LEAD: ClassVar[float] = LEAD
    DECIDE_WITH_NOW: ClassVar[bool] = True
    # Which runs are decided again: "retry" (a task that ran, on its server: Airflow's retries) or "any" (any
    # run, on any server, later: clears, catch-up, retries of tasks that found no document).
    REDECIDE: ClassVar[Literal["retry", "any"]] = "retry"
    # A known problem, off here; shown by a test in test_guarantee_simulation.py.
    SLOW_UPLOAD: ClassVar[bool] = False  # http: the origin serves a new document a while after publish

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="placement-sim-", dir=SCRATCH))
        self.time = T0
        self.next_renewal = T0 + RENEW_EVERY
        self.publisher = Publisher(self.root / "publisher")
        self.publisher_offset = 0.0
        self.origin = Origin()
        self.servers: dict[str, Server] = {}
        self.desired = dict.fromkeys(DAGS, SERVERS[0])
        self.pending: Pending | None = None
        self.history: dict[Key, dict[str, list[tuple[float, Outcome, str]]]] = {}
        self.latest_run: dict[str, float] = {}  # server -> the latest logical date it ran
        self.patch = mock.patch.object(fetch, "open_source", self.open_source)
        self.patch.start()

    def teardown(self) -> None:
        self.patch.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # --- The world -------------------------------------------------------------------------------------------------

    def open_source(self, source: str, **_: object) -> object:
        if self.SOURCE == "file":
            return FileSource(Path(source), 1 << 20)
        server = self.servers[source.rsplit("#", 1)[1]]
        origin = self.origin

        class Answer:
            def fetch(self, etag: str | None) -> Fetched:
                return origin.fetch(server, etag)

        return Answer()

    def clock(self, server: Server) -> float:
        return self.time + server.offset

    def publisher_clock(self) -> float:
        return self.time + self.publisher_offset

    def up(self) -> list[Server]:
        return [s for s in self.servers.values() if s.down_since is None]

    def down(self) -> list[Server]:
        return [s for s in self.servers.values() if s.down_since is not None]

    def draw(self, data: st.DataObject, servers: list[Server], label: str) -> Server:
        return self.servers[data.draw(st.sampled_from([s.name for s in servers]), label=label)]

    @initialize(offsets=st.lists(quarters(-8, 8), min_size=4, max_size=4))
    def start(self, offsets: list[float]) -> None:
        """Three servers up since long ago, with clocks at most ``CLOCK_SKEW`` apart; the first document out."""
        self.publisher_offset = offsets[0] * CLOCK_SKEW / 4
        for name, offset in zip(SERVERS, offsets[1:], strict=True):
            server = Server(name, offset * CLOCK_SKEW / 4, self.time - 100, self.root / name)
            server.directory.mkdir()
            source = f"{ORIGIN_URL}#{name}" if self.SOURCE == "http" else str(server.file)
            settings = FetchSettings(
                source, ttl=TTL, max_staleness=MAX_STALENESS, clock_skew=CLOCK_SKEW, cache_dir=server.directory
            )
            server.cache = PlacementCache(settings, lambda s=server: self.clock(s), lambda s=server: s.started)
            self.servers[name] = server
        self._begin(failed=None, since=None)
        self._finish("commit", set())

    @rule(seconds=WAITS)
    def wait(self, seconds: float) -> None:
        """Time passes: the publisher's timer renews, servers come back, and each live server decides every
        scheduled run when its own clock reaches the run's time."""
        self._advance(seconds, scheduled=True)

    def _advance(self, seconds: float, *, scheduled: bool) -> None:
        end = self.time + seconds
        events: list[tuple[float, str, str, float]] = []  # (true time, server, DAG, logical date)
        while self.next_renewal <= end:
            events.append((self.next_renewal, "", "", 0.0))
            self.next_renewal += RENEW_EVERY
        for server in self.servers.values():
            if server.back_at is not None and server.back_at <= end:
                events.append((server.back_at, server.name, "", 0.0))
            for dag, (every, lag) in SCHEDULES.items() if scheduled else ():
                first = math.floor((self.time + server.offset - lag) / every) + 1
                for n in range(first, math.floor((end + server.offset - lag) / every) + 1):
                    events.append((n * every + lag - server.offset, server.name, dag, n * every))
        for moment, name, dag, date in sorted(events):
            self.time = moment
            if not name:
                self.renew()
            elif not dag:
                self.start_stack(self.servers[name])
            elif self.servers[name].down_since is None and name not in self.history.get((dag, TASK, date), {}):
                self.decide_on(self.servers[name], (dag, TASK, date))
        self.time = end

    def start_stack(self, server: Server) -> None:
        server.down_since = server.back_at = None
        server.started = self.clock(server)

    @precondition(lambda self: self.up())
    @rule(data=st.data(), back_after=st.one_of(quarters(1, 40), quarters(40, 400)))
    def crash(self, data: st.DataObject, back_after: float) -> None:
        """A server goes down; its stack starts again ``back_after`` seconds on, with its store (0.25 s: a restart)."""
        server = self.draw(data, self.up(), "server")
        server.down_since = self.time
        server.back_at = self.time + back_after

    @rule(data=st.data())
    def trouble(self, data: st.DataObject) -> None:
        """A server is cut off from the document or reconnected. file: a server's copy is overwritten with garbage.
        http: the origin goes down, serves garbage, recovers, or lies to a server."""
        kinds = ["cut off", "reconnect"] + (["garbage"] if self.SOURCE == "file" else ["lie", "down", "garbage", "up"])
        what = data.draw(st.sampled_from(kinds), label="trouble")
        if what in ("down", "garbage", "up") and self.SOURCE == "http":
            self.origin.failure = None if what == "up" else what
            self.origin.garbage = data.draw(st.sampled_from(GARBAGE), label="garbage")
            return
        server = self.draw(data, list(self.servers.values()), "server")
        if what == "lie":
            self._lie(data, server.name)
        elif what == "garbage":
            server.file.write_bytes(data.draw(st.sampled_from(GARBAGE), label="garbage"))
            server.corrupted = True
        else:
            server.cut_off = what == "cut off"

    def _lie(self, data: st.DataObject, name: str) -> None:
        """Serve a server an older document than one served to it before: the one before (a CDN node that missed
        the update), or the document in its original form (a mirror of the days before the publisher)."""
        served = self.origin.served[name]
        if served:
            original = data.draw(st.booleans(), label="original form")
            older = sorted(served)[:-1]
            self.origin.lies[name] = ORIGINAL if original or not older else served[older[-1]]

    # --- The publisher ---------------------------------------------------------------------------------------------

    def _begin(self, failed: str | None, since: float | None) -> None:
        desired = parse_document("".join(f"{dag}: {owner}\n" for dag, owner in self.desired.items()))
        text, _ = self.publisher.begin(
            desired,
            lead=self.LEAD,
            failed=failed,
            since=at(since) if since is not None else None,
            clock_skew=CLOCK_SKEW,
            now=at(self.publisher_clock()),
        )
        self.pending = Pending(text, forced=failed is not None)

    def _send(self, server: Server, text: str) -> None:
        if server.down_since is None and not server.cut_off:
            server.file.write_text(text, encoding="utf-8")
            server.corrupted = False
            if self.pending is not None and text == self.pending.text:
                self.pending.sent_to.add(server.name)

    def _finish(self, how: Finish, sent: set[str]) -> None:
        """Distribute the pending document (file: to ``sent`` before giving it up), then commit, abort or hold it."""
        assert self.pending is not None
        if how == "hold" and self.SOURCE == "http" and not self.SLOW_UPLOAD:
            how = "commit"
        if self.SOURCE == "file":
            for name in sorted(self.servers if how == "commit" else sent):
                self._send(self.servers[name], self.pending.text)
        if how == "abort" and self.pending.forced:
            kept = self.publisher.abort()  # a forced failover cannot be given up: it stays published
            assert kept is not None
            if self.SOURCE == "http":
                self.origin.body, self.origin.serial = self.pending.text.encode(), kept
            self.pending = None
        elif how == "commit":
            if self.SOURCE == "http":
                self.origin.body, self.origin.serial = self.pending.text.encode(), self.publisher.commit()
            else:
                self.publisher.commit()
            self.pending = None
        elif how == "abort":
            self.publisher.abort()
            self.pending = None

    @precondition(lambda self: self.pending is None)
    @rule(
        changes=st.dictionaries(st.sampled_from(DAGS), st.sampled_from(SERVERS), min_size=1),
        how=FINISHES,
        sent=st.sets(st.sampled_from(SERVERS)),
    )
    def publish(self, changes: dict[str, str], how: Finish, sent: set[str]) -> None:
        """The operator changes who should own what and publishes it: the publisher schedules the handovers."""
        self.desired.update(changes)
        self._begin(failed=None, since=None)
        self._finish(how, sent)

    @precondition(lambda self: self.pending is None and self.down() and self.up())
    @rule(
        data=st.data(),
        since=st.one_of(st.none(), st.integers(0, 10)),
        how=FINISHES,
        sent=st.sets(st.sampled_from(SERVERS)),
    )
    def force_failover(self, data: st.DataObject, since: int | None, how: Finish, sent: set[str]) -> None:
        """The operator, knowing a server is down, moves what it owns to a live one at once.

        :param since: None: the move covers runs dated from the publisher's now plus the clock skew (the publisher's
            own rule: the failed server may have run any run dated before). Else it covers runs dated from ``since``
            whole seconds after both the crash and the last run the failed server ran (the operator's assertion
            that it ran nothing dated from then on, kept true here); the operator waits until then if need be.
        """
        failed = self.draw(data, self.down(), "failed")
        to = self.draw(data, self.up(), "to")
        assert failed.down_since is not None
        moved_from = None
        if since is not None:
            last = max(failed.down_since + failed.offset, self.latest_run.get(failed.name, -math.inf))
            moved_from = math.floor(last) + 1 + since
            self._advance(max(0.0, moved_from - self.publisher_clock()), scheduled=True)
            if failed.down_since is None or to.down_since is not None or self.pending is not None:
                return
        self.desired = {dag: to.name if owner == failed.name else owner for dag, owner in self.desired.items()}
        self._begin(failed=failed.name, since=moved_from)
        self._finish(how, sent)

    @precondition(lambda self: self.pending is not None)
    @rule(how=FINISHES, sent=st.sets(st.sampled_from(SERVERS)))
    def finish(self, how: Finish, sent: set[str]) -> None:
        """A publish left under way ends: distributed and committed, or given up."""
        self._finish(how, sent)

    def renew(self) -> None:
        try:
            text = self.publisher.renew(at(self.publisher_clock()))
        except PublishError:  # a publish is under way: nothing is renewed until it ends
            return
        if self.SOURCE == "http":
            self.origin.body = text.encode()  # the same serial
        else:
            for server in self.servers.values():
                self._send(server, text)

    # --- Airflow on the servers ------------------------------------------------------------------------------------

    def decide_on(self, server: Server, key: Key) -> Outcome:
        """``server`` decides the run ``key`` at its own now, as its task would: load the document, then decide."""
        dag, task, date = key
        now = self.clock(server)
        try:
            loaded = server.cache.load()
        except PlacementUnavailable:
            loaded = None
        outcome: Outcome = "unavailable"
        if loaded is not None:
            when_now = at(now) if self.DECIDE_WITH_NOW else None
            outcome = decide(
                loaded.placement,
                dag_id=dag,
                task_id=task,
                host=server.name,
                when=at(date),
                now=when_now,
                horizon=HORIZON,
            ).decision
        meta = loaded.placement.meta if loaded else None
        held = f"serial {meta.serial if meta else None} from {loaded.origin}" if loaded else "-"
        self.history.setdefault(key, {}).setdefault(server.name, []).append((self.time, outcome, held))
        if outcome == "run":
            self.latest_run[server.name] = max(self.latest_run.get(server.name, date), date)
            runners = {name for name, tries in self.history[key].items() if any(o == "run" for _, o, _ in tries)}
            assert len(runners) <= 1, f"two servers ran {dag} {task} {at(date).isoformat()}: {self.history[key]}"
        if loaded is not None:
            self.check_would_run((dag,), {server.name: loaded.placement})
        return outcome

    def held(self, server: Server) -> PlacementView | None:
        """The copy ``server`` would decide with now without asking the source; None when it would ask first (or
        holds nothing it may use). Looking reads no source, so each server's TTL stays its own."""
        try:
            loaded = server.cache._without_request(server.cache.read())
        except PlacementUnavailable:
            return None
        return loaded.placement if loaded is not None else None

    def check_would_run(self, dags: tuple[str, ...], deciding: dict[str, PlacementView]) -> None:
        """No two live servers would run the same run now, by the copies they would decide with (``deciding``: just
        loaded). The runs looked at: about now, and each handover's date and the quarter second before it."""
        views = {}
        for server in self.up():
            view = deciding.get(server.name) or self.held(server)
            if view is not None:
                views[server.name] = Looked(view)
        for dag in dags:
            dates = {self.time + d for d in (-CLOCK_SKEW, 0.0, CLOCK_SKEW)}
            for looked in views.values():
                entry = looked.entry_for(dag)
                for handover in entry.schedule.handovers if entry else ():
                    dates |= {handover.at.timestamp() - 0.25, handover.at.timestamp()}
            for date in sorted(dates):
                runners = []
                for name, looked in views.items():
                    now = self.clock(self.servers[name])
                    when_now = at(now) if self.DECIDE_WITH_NOW else None
                    if decide(
                        looked, dag_id=dag, task_id=TASK, host=name, when=at(date), now=when_now, horizon=HORIZON
                    ).run:
                        runners.append(name)
                assert len(runners) <= 1, (
                    f"{' and '.join(runners)} would both run {dag} {at(date).isoformat()} now; "
                    + ", ".join(f"{n} holds serial {v.meta.serial if v.meta else None}" for n, v in views.items())
                )

    @invariant()
    def no_two_servers_would_run_the_same_run(self) -> None:
        self.check_would_run(DAGS, {})

    @rule(
        dag=st.sampled_from(DAGS),
        date=st.one_of(quarters(-480, -4), quarters(-12, 12), quarters(4, 200)),
        who=st.one_of(st.just(frozenset(SERVERS)), st.frozensets(st.sampled_from(SERVERS), min_size=1)),
        again=st.one_of(st.none(), st.integers(0, 1000)),
    )
    def trigger(self, dag: str, date: float, who: frozenset[str], again: int | None) -> None:
        """A run triggered by hand, dated in the past, about now or a bit in the future, on the servers ``who``.
        Or ``again``: a run decided before is decided again by them, as a retry of a task that ran (with
        ``REDECIDE = "any"``: any run, on any server: a clear, a catch-up, a retry of a task that found no
        document)."""
        key = (dag, TASK, self.time + date)
        if again is not None and self.history:
            key = list(self.history)[-1 - again % len(self.history)]
        elif key in self.history and self.REDECIDE != "any":
            return  # that run exists already: a server that missed it does not catch up
        for name in sorted(who):
            server = self.servers[name]
            tries = self.history.get(key, {}).get(name, [])
            retry = self.REDECIDE == "any" or any(outcome == "run" for _, outcome, _ in tries)
            if server.down_since is None and (retry if again is not None else not tries):
                self.decide_on(server, key)

    def troubled(self) -> bool:
        origin = self.origin.failure is not None or bool(self.origin.lies)
        return self.pending is not None or origin or any(s.cut_off or s.corrupted for s in self.servers.values())

    @precondition(troubled)
    @rule()
    def recover(self) -> None:
        """Liveness: heal the network and the source and publish afresh. Then every server that was up and past
        restart fencing when the document went out decides a run of each DAG once the TTL is past: its owner runs
        it, the others skip it."""
        if self.pending is not None:
            self._finish("abort", set())
        for server in self.servers.values():
            server.cut_off = False
        self.origin.failure = None
        self.origin.lies.clear()
        self._advance(CLOCK_SKEW, scheduled=False)
        self._begin(failed=None, since=None)
        self._finish("commit", set())
        ready = {s.name for s in self.up() if self.clock(s) - s.started >= 2 * CLOCK_SKEW + 1}
        self._advance(TTL + 0.25, scheduled=False)
        published = self.publisher.published()
        assert published is not None
        date = self.time - CLOCK_SKEW - 0.125
        for dag in DAGS:
            entry = published.entry_for(dag)
            assert entry is not None
            owner = entry.schedule.owner_at(at(date))
            for server in self.up():
                if server.name in ready:
                    outcome = self.decide_on(server, (dag, TASK, date))
                    assert outcome == ("run" if server.name == owner else "skip"), (
                        f"{server.name} decided {outcome} for {dag} {at(date).isoformat()}, owned by {owner}: "
                        f"{self.history[(dag, TASK, date)]}"
                    )


class Draws:
    """Hypothesis's ``data`` for a scenario that calls the rules itself: hands out the given draws in order."""

    def __init__(self, *values: object) -> None:
        self.values = list(values)

    def draw(self, strategy: object, label: str | None = None) -> object:
        return self.values.pop(0)
