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

``WatchedMachine`` adds the watchdog: serve's own code as the HTTP origin, and the package's watchdog acting beside
the person (see its docstring).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal
from unittest import mock

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from airflow_placement import fetch, watch
from airflow_placement.decision import decide
from airflow_placement.document import Entry, Meta, Placement, PlacementView, parse_document
from airflow_placement.fetch import FetchSettings, PlacementCache, PlacementUnavailable
from airflow_placement.publish import Publisher, PublishError
from airflow_placement.rerun import ApiError
from airflow_placement.serve import ConfirmingSource, ServeError, Tokens, token_hash
from airflow_placement.source import Fetched, FileSource
from airflow_placement.store import CacheEntry
from airflow_placement.watch import Health, ServerConfig, Slot, WatchConfig, Watchdog

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
    sick: bool = False  # its scheduler has stopped: it runs nothing, and fetches nothing (WatchedMachine)
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
    # serve's own code behind the origin (WatchedMachine): it records each server's confirmations and fences
    confirming: ConfirmingSource | None = None

    def fetch(self, server: Server, etag: str | None) -> Fetched:
        if server.cut_off or self.failure == "down" or self.body is None:
            raise OSError("connection refused")
        if self.failure == "garbage":
            return Fetched(200, self.garbage, None, vouches=True)
        body = self.lies.get(server.name, self.body)
        if body is self.body and self.confirming is not None:
            status, answer, reason = self.confirming.fetch(server.name, etag)
            if answer is None:
                raise OSError(f"HTTP {status}: {reason}")
            self.served[server.name][answer.serial] = answer.body
            return Fetched(status, answer.body if status == 200 else b"", answer.etag, vouches=True)
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
    uploaded: bool = False  # http, watched: out at the source, not yet committed (the lock still held)


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
    WATCHDOG: ClassVar[bool] = False  # a watchdog runs (WatchedMachine)

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
        self.reruns: list[tuple[str, Key]] = []  # task instances cleared on a server, run when its scheduler can
        self.watch_paused = False
        self.patches = [mock.patch.object(fetch, "open_source", self.open_source)]
        for patch in self.patches:
            patch.start()

    def teardown(self) -> None:
        for patch in reversed(self.patches):
            patch.stop()
        if self.origin.confirming is not None:
            self.origin.confirming.close()
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

    def scheduling(self, server: Server) -> bool:
        """Whether ``server``'s Airflow runs tasks now: up, and its scheduler alive."""
        return server.down_since is None and not server.sick

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
        events.extend((moment, "@watch", "", 0.0) for moment in self.watch_cycles(end))
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
            elif name == "@watch":
                self.watch_cycle()
            elif not dag:
                self.start_stack(self.servers[name])
            elif self.scheduling(self.servers[name]) and name not in self.history.get((dag, TASK, date), {}):
                self.decide_on(self.servers[name], (dag, TASK, date))
            self.run_cleared()
        self.time = end

    def watch_cycles(self, end: float) -> list[float]:
        """The true times of the watchdog's cycles until ``end`` (none here: see WatchedMachine)."""
        return []

    def watch_cycle(self) -> None:
        """One cycle of the watchdog (none here: see WatchedMachine)."""

    def run_cleared(self) -> None:
        """Each server whose scheduler runs decides the task instances cleared on it (re-runs), once."""
        for name, key in list(self.reruns):
            if self.scheduling(self.servers[name]):
                self.reruns.remove((name, key))
                self.decide_on(self.servers[name], key, rerun=True)

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
            if not self.WATCHDOG:
                how = "commit"
            else:  # out at the source, the lock still held (a publish that hangs before its commit)
                if not self.pending.uploaded:
                    self._put(self.pending.text)
                    self.pending.uploaded = True
                return
        if how == "abort" and self.pending.uploaded:
            how = "commit"  # it is out: the way on is publish-commit
        if self.SOURCE == "file":
            for name in sorted(self.servers if how == "commit" else sent):
                self._send(self.servers[name], self.pending.text)
        if how == "abort" and self.pending.forced:
            kept = self.publisher.abort()  # a forced failover cannot be given up: it stays published
            assert kept is not None
            if self.SOURCE == "http":
                self._put(self.pending.text)
            self.pending = None
        elif how == "commit":
            self.publisher.commit()
            if self.SOURCE == "http":
                self._put(self.pending.text)
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
            self._put(text)  # the same serial, unless a publish was given up since
        else:
            for server in self.servers.values():
                self._send(server, text)

    def _put(self, text: str) -> None:
        """http: the origin serves ``text`` from now on (through serve's own upload when it is behind the origin)."""
        meta = parse_document(text).meta
        self.origin.body, self.origin.serial = text.encode(), meta.serial if meta else 0
        if self.origin.confirming is not None:
            self.origin.confirming.upload(self.origin.body)

    # --- Airflow on the servers ------------------------------------------------------------------------------------

    def decide_on(self, server: Server, key: Key, *, rerun: bool = False) -> Outcome:
        """``server`` decides the run ``key`` at its own now, as its task would: load the document, then decide.

        :param rerun: a task instance the watchdog cleared: if it runs, it must have run nowhere before.
        """
        dag, task, date = key
        ran_before = {n for n, tries in self.history.get(key, {}).items() if any(o == "run" for _, o, _ in tries)}
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
            assert not (rerun and ran_before), (
                f"a re-run on {server.name} duplicated {dag} {task} {at(date).isoformat()}, which ran on "
                f"{', '.join(sorted(ran_before))}: {self.history[key]}"
            )
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
        self._trigger(dag, date, who, again)

    def _trigger(self, dag: str, date: float, who: frozenset[str], again: int | None) -> None:
        key = (dag, TASK, self.time + date)
        if again is not None and self.history:
            key = list(self.history)[-1 - again % len(self.history)]
        elif key in self.history and self.REDECIDE != "any":
            return  # that run exists already: a server that missed it does not catch up
        for name in sorted(who):
            server = self.servers[name]
            tries = self.history.get(key, {}).get(name, [])
            retry = self.REDECIDE == "any" or any(outcome == "run" for _, outcome, _ in tries)
            if self.scheduling(server) and (retry if again is not None else not tries):
                self.decide_on(server, key)

    def troubled(self) -> bool:
        origin = self.origin.failure is not None or bool(self.origin.lies)
        servers = any(s.cut_off or s.corrupted for s in self.servers.values())
        return self.pending is not None or origin or servers or self.watch_troubled()

    def watch_troubled(self) -> bool:
        """Whether something only a subclass breaks is broken (WatchedMachine)."""
        return False

    def heal(self) -> None:
        """Repair what only a subclass breaks (WatchedMachine)."""

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
        self.heal()
        self.watch_paused = True  # a watchdog acting now would publish what the servers have not fetched yet
        try:
            self._advance(CLOCK_SKEW, scheduled=False)
            self._begin(failed=None, since=None)
            self._finish("commit", set())
            ready = {s.name for s in self.up() if self.clock(s) - s.started >= 2 * CLOCK_SKEW + 1}
            self._advance(TTL + 0.25, scheduled=False)
        finally:
            self.watch_paused = False
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


# --- The watchdog ----------------------------------------------------------------------------------------------------

WATCH_INTERVAL = 5.0
WATCH_GRACE = 10.0
RESTORE_AFTER = 30.0
VOTERS = (*SERVERS, "serve")
WATCH_ENV = {"SIM_PUBLISHER_TOKEN": "publisher-token", "SIM_API_PASSWORD": "secret"}


class WatchedMachine(PlacementMachine):
    """The same world with ``serve`` as the HTTP origin and the watchdog (``airflow-placement watch``) acting on it.

    The origin is serve's own code (:class:`ConfirmingSource`, in this process, on its own skewed clock): it records
    each server's confirmations and fences. The watchdog is the package's :class:`Watchdog`, on its own skewed clock,
    publishing through the same publisher's state as the person; it is cut off from some or all servers and from
    serve at times hypothesis picks, and restarts (keeping its state file). Mocked, because they are HTTP clients of
    what is simulated here: its health checks (a server down or out of its reach is unreachable, one whose scheduler
    stopped is unhealthy), its calls to serve (the same object the servers reach) and Airflow's REST API on the
    servers (the task instances a server skipped; a cleared one is decided again once that server's scheduler runs).

    Checked besides the guarantee: a re-run never runs a run that ran (on any server); every move the watchdog
    publishes goes to a server that is up with its scheduler running, and it publishes only while it reaches a
    strict majority of the voters (the servers and serve).
    """

    SOURCE: ClassVar[Literal["file", "http"]] = "http"
    WATCHDOG: ClassVar[bool] = True
    BROKEN_MOVES_FILE: ClassVar[bool] = False  # the inventory's record of moves cannot be written

    def __init__(self) -> None:
        super().__init__()
        self.watch_offset = self.serve_offset = 0.0
        self.origin.confirming = ConfirmingSource(
            self.root / "serve", Tokens(token_hash("unused"), {}), clock=lambda: self.time + self.serve_offset
        )
        self.watch_cut: set[str] = set()  # voters the watchdog cannot reach
        self.restore = False
        self.next_watch = T0
        self.race: list[frozenset[str]] = []
        self.when_forced: set[str] = set()  # servers that reconnect and fetch as the watchdog fences
        self.watch_log: list[str] = []
        self.watch_moves: list[tuple[float, dict[str, object]]] = []
        self.watchdog: SimWatchdog | None = None
        patches = [
            mock.patch.dict(os.environ, WATCH_ENV),
            mock.patch.object(watch, "check_health", self.health),
            mock.patch.object(watch, "Airflow", lambda url, user, password, ca=None: SimAirflow(self, url)),
        ]
        for patch in patches:
            patch.start()
        self.patches += patches

    @initialize(offsets=st.lists(quarters(-8, 8), min_size=6, max_size=6), restore=st.booleans())
    def start(self, offsets: list[float], restore: bool = False) -> None:  # type: ignore[override]
        """As the base machine, and the watchdog (its clock and serve's: the last two offsets), restoring or not."""
        super().start(offsets[:4])
        if len(offsets) == 6:
            self.watch_offset, self.serve_offset = (o * CLOCK_SKEW / 4 for o in offsets[4:])
        self.restore = restore
        self.next_watch = self.time + WATCH_INTERVAL
        self.watchdog = self.make_watchdog()

    def make_watchdog(self) -> SimWatchdog:
        config = WatchConfig(
            servers=tuple(ServerConfig(name, f"sim://{name}") for name in SERVERS),
            source=ORIGIN_URL,
            publisher_dir=self.root / "publisher",
            state_dir=self.root / "watch",
            max_staleness=MAX_STALENESS,
            clock_skew=CLOCK_SKEW,
            publisher_token_env="SIM_PUBLISHER_TOKEN",
            interval=WATCH_INTERVAL,
            grace=WATCH_GRACE,
            restore=self.restore,
            restore_after=RESTORE_AFTER,
            api_user="admin",
            api_password_env="SIM_API_PASSWORD",
            moves_file=self.root / "moves" / "dag_placement_moves.yml",
        )
        (self.root / "moves").mkdir(exist_ok=True)
        if self.BROKEN_MOVES_FILE:
            config.moves_file.mkdir(exist_ok=True)  # type: ignore[union-attr]
        watchdog = SimWatchdog(config, clock=lambda: self.time + self.watch_offset, log=self.watch_log.append)
        watchdog.machine = self
        watchdog.source = SimServeClient(self)  # type: ignore[assignment]
        return watchdog

    # --- The watchdog's world ---

    def watch_cycles(self, end: float) -> list[float]:
        moments = []
        while self.next_watch <= end:
            moments.append(self.next_watch)
            self.next_watch += WATCH_INTERVAL
        return moments

    def watch_cycle(self) -> None:
        if self.watchdog is not None and not self.watch_paused:
            self.watchdog.cycle()

    def reaches(self, voter: str) -> bool:
        if voter in self.watch_cut:
            return False
        if voter == "serve":
            return self.origin.failure != "down"
        return self.servers[voter].down_since is None

    def health(self, api: str, timeout: float, ca: str | None = None) -> Health:
        server = self.servers[api.removeprefix("sim://")]
        if not self.reaches(server.name):
            return Health(False, False, "unreachable (ConnectionError)")
        if server.sick:
            return Health(True, False, "scheduler unhealthy")
        return Health(True, True, "healthy")

    def interleave(self) -> None:
        """During a race: the servers drawn for this call to serve fetch just before it, reconnecting if cut off
        (a fetch now, as when a task asks at the end of its server's wait after a failed fetch)."""
        if not self.race:
            return
        for name in sorted(self.race.pop(0)):
            server = self.servers[name]
            if self.scheduling(server):
                server.cut_off = False
                with contextlib.suppress(PlacementUnavailable):
                    server.cache._refresh(server.cache.read() or CacheEntry(server.cache.settings.source))

    def published_by_watchdog(self, move: dict[str, object], slots: set[tuple[str, str | None]]) -> None:
        """The watchdog published ``move``: check its rules, and keep the operator's desired owners in step (as
        the inventory's record of moves does)."""
        target = str(move.get("to") or move.get("restored"))
        server = self.servers[target]
        reached = [voter for voter in VOTERS if self.reaches(voter)]
        self.watch_moves.append((self.time, move))
        assert self.scheduling(server), (
            f"the watchdog moved runs to {target}, which is {'down' if server.down_since is not None else 'sick'}: "
            f"{move}; {self.watch_log[-3:]}"
        )
        assert 2 * len(reached) > len(VOTERS), (
            f"the watchdog published {move} reaching only {', '.join(reached) or 'nobody'}: {self.watch_log[-3:]}"
        )
        for key, task in slots:
            if task is None and key in self.desired:
                self.desired[key] = target

    def watch_troubled(self) -> bool:
        return bool(self.watch_cut) or any(s.sick for s in self.servers.values())

    def heal(self) -> None:
        self.watch_cut.clear()
        for server in self.servers.values():
            server.sick = False

    # --- Rules ---

    @precondition(lambda self: self.up())
    @rule(data=st.data())
    def scheduler(self, data: st.DataObject) -> None:
        """A server's scheduler stops (its API server still answers, unhealthy), or starts again."""
        server = self.draw(data, self.up(), "server")
        server.sick = not server.sick
        self.run_cleared()

    @rule(
        dag=st.sampled_from(DAGS),
        ahead=quarters(0, 24),
        who=st.one_of(st.just(frozenset(SERVERS)), st.frozensets(st.sampled_from(SERVERS), min_size=1)),
    )
    def trigger_ahead(self, dag: str, ahead: float, who: frozenset[str]) -> None:
        """A run triggered by hand dated up to 6 s ahead (``airflow dags trigger --logical-date``): the gate's
        horizon lets a server run one dated up to ``clock_skew`` ahead of its own clock."""
        self._trigger(dag, ahead, who, None)

    @rule(
        what=st.sampled_from(("cut", "cut", "heal", "restart")),
        cut=st.one_of(st.sampled_from(VOTERS).map(lambda v: frozenset({v})), st.frozensets(st.sampled_from(VOTERS))),
    )
    def watchdog_trouble(self, what: str, cut: frozenset[str]) -> None:
        """The watchdog is cut off from some voters (from all of them at worst), reconnected, or restarted (it
        keeps its state file)."""
        if what == "cut":
            self.watch_cut = set(cut)
        elif what == "heal":
            self.watch_cut.clear()
        else:
            self.watchdog = self.make_watchdog()

    def revive(self, server: Server) -> None:
        """``server`` comes back: its stack starts again if it was down, its scheduler runs, its route is back."""
        if server.down_since is not None:
            self.start_stack(server)
        server.sick = server.cut_off = False

    @rule(data=st.data())
    def reconnect_when_forced(self, data: st.DataObject) -> None:
        """A server comes back at the worst moment (its stack, its scheduler, its route to serve): when the watchdog,
        having read serve's record, is about to fence a server for a forced move; it fetches right then."""
        self.when_forced.add(self.draw(data, list(self.servers.values()), "server").name)

    @rule(race=st.lists(st.frozensets(st.sampled_from(SERVERS), min_size=1), min_size=1, max_size=4))
    def watch_race(self, race: list[frozenset[str]]) -> None:
        """A watchdog cycle now, while servers fetch between its calls to serve (a cut-off one reconnecting)."""
        self.race = list(race)
        try:
            self.watch_cycle()
        finally:
            self.race = []
        self.run_cleared()


class SimWatchdog(Watchdog):
    """The package's watchdog, telling the machine about each move it publishes."""

    machine: WatchedMachine

    def publish(
        self,
        desired: Placement,
        now: float,
        *,
        describe: str,
        basis: Placement,
        move: dict[str, Any],
        slots: set[Slot],
        failed: str | None = None,
        since: datetime | None = None,
    ) -> int | None:
        serial = super().publish(
            desired, now, describe=describe, basis=basis, move=move, slots=slots, failed=failed, since=since
        )
        if serial is not None and not self.dry_run:
            self.machine.published_by_watchdog(move, slots)
        return serial


class SimServeClient:
    """The watchdog's client of serve: the same :class:`ConfirmingSource` the servers reach, unless it is cut off."""

    def __init__(self, machine: WatchedMachine) -> None:
        self.machine = machine

    def _reach(self) -> ConfirmingSource:
        self.machine.interleave()
        if not self.machine.reaches("serve"):
            raise ServeError(f"GET {ORIGIN_URL}: ConnectionError")
        assert self.machine.origin.confirming is not None
        return self.machine.origin.confirming

    def upload(self, text: str) -> int:
        source = self._reach()
        try:
            source.upload(text.encode())
        except ValueError as exc:
            raise ServeError(f"PUT {ORIGIN_URL} answered 409: {exc}") from None
        self.machine._put(text)
        return self.machine.origin.serial

    def confirmations(self) -> dict[str, Any]:
        return self._reach().confirmations()

    def fence(self, server: str, stopped_for: float) -> tuple[bool, float]:
        if self.machine.when_forced:
            for name in self.machine.when_forced:
                self.machine.revive(self.machine.servers[name])
            self.machine.race[:0] = [frozenset(self.machine.when_forced)]
            self.machine.when_forced.clear()
        return self._reach().fence(server, stopped_for)

    def unfence(self, server: str) -> None:
        self._reach().unfence(server)


class SimAirflow:
    """Airflow's REST API on a server, as the watchdog's re-runs use it: the task instances it skipped, and clears."""

    def __init__(self, machine: WatchedMachine, url: str) -> None:
        self.machine, self.name = machine, url.removeprefix("sim://")

    def sign_in(self) -> None:
        if not self.machine.reaches(self.name):
            raise ApiError(f"POST sim://{self.name}/auth/token: ConnectionError")

    def skipped_since(self, since: datetime) -> Iterator[dict[str, Any]]:
        for (dag, task, date), tries in list(self.machine.history.items()):
            mine = tries.get(self.name)
            if mine and mine[-1][1] == "skip" and date >= since.timestamp():
                yield self._instance(dag, task, date)

    @staticmethod
    def _instance(dag: str, task: str, date: float) -> dict[str, Any]:
        moment = at(date).isoformat()
        run = f"scheduled__{moment}"
        return {"dag_id": dag, "task_id": task, "dag_run_id": run, "logical_date": moment, "state": "skipped"}

    def clear(self, run: dict[str, Any], *, dry_run: bool, note: str) -> list[dict[str, Any]]:
        date = datetime.fromisoformat(run["logical_date"]).timestamp()
        cleared = []
        for task in run["task_ids"]:
            key = (run["dag_id"], task, date)
            if not dry_run and (self.name, key) not in self.machine.reruns:
                self.machine.reruns.append((self.name, key))
            cleared.append(self._instance(run["dag_id"], task, date))
        return cleared
