"""``airflow-placement watch``: the watchdog that moves a failed server's DAGs to their successors, without a person.

Every ``interval`` seconds it asks each server's Airflow API server for its health (``/api/v2/monitor/health``: the
metadata database, and the scheduler's, DAG processor's and triggerer's heartbeats) and reads the confirming
source's record (:mod:`airflow_placement.serve`). Then, for a server unhealthy (or unreachable) for ``grace``
seconds, it publishes through the package's publisher (:class:`airflow_placement.publish.Publisher`: the same lock,
serials and splicing as ``failover.yml``) and uploads to the source:

1. **A scheduled handover**: the server's runs dated from the lease ahead on go to its successor (the first healthy
   server of its failover order). Safe whatever the failed server does: by then its copy has expired.
2. **A forced one**, as soon as the failed server's last confirmation at the source is older than ``max_staleness``
   plus ``clock_skew``: it holds no copy it may run from, and could get one only from the source, which would have
   recorded it. The watchdog first fences it at the source (refused every document up to the served serial, if it
   is still silent), then moves its runs dated from ``clock_skew`` after that proven stop on. Once the successor has
   confirmed the new document, the runs it skipped since then are re-run there once (:mod:`airflow_placement.rerun`);
   earlier ones, which the failed server may or may not have run, are listed with the command that re-runs them.

It never moves runs to an unhealthy server, and acts only while it sees a strict majority of the voters: the servers
and the source (it is otherwise the one cut off); what it saw without one counts towards no grace, which starts again
once it sees a majority. A failed server gets its DAGs back only if ``restore`` is on, once
it has been healthy for ``restore_after`` seconds, as a scheduled handover. Each action is one log line on standard
output, and is posted to ``webhook`` (``{"text": LINE}``) if set. ``dry_run`` only says what it would do.

Why ``clock_skew`` after the proven stop: until then the failed server may have run a run triggered ahead of its own
clock by up to the gate's horizon (``clock_skew``); the ``clock_skew`` in the proof covers its clock being ahead of
the source's.

The proof needs the servers to read the document only from this source. The watchdog checks what it can: the source
serves the publisher's last document, and a server it forces has confirmed at this source before (one never seen
there may read a mirror). A server configured to read elsewhere besides is outside the proof: do not.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
import yaml

from airflow_placement.decision import decide
from airflow_placement.document import Entry, Handover, OwnerSchedule, Placement, normalize_host, parse_document
from airflow_placement.files import replace_file
from airflow_placement.publish import Plan, Publisher, PublishError, ceil_second, simplify
from airflow_placement.rerun import Airflow, ApiError, describe, select
from airflow_placement.serve import ServeError, SourceClient
from airflow_placement.signing import load_signing_key

HEALTH_PATH = "/api/v2/monitor/health"
STATE_FILE = "watch.json"


class WatchError(RuntimeError):
    """The watchdog's configuration is wrong or its state unreadable; ``str()`` is one line."""


# --- configuration ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerConfig:
    """:param name: the server's name, as in the placement document.
    :param api: its Airflow API server's base URL (health, and the re-runs).
    :param failover_order: the servers that take over its DAGs, in order (default: the others, inventory order).
    """

    name: str
    api: str
    failover_order: tuple[str, ...] = ()


@dataclass(frozen=True)
class WatchConfig:
    """The watchdog's settings (a YAML file with these keys; ``servers`` in inventory order)."""

    servers: tuple[ServerConfig, ...]
    source: str  # the confirming source's document URL, as the servers fetch it
    publisher_dir: Path  # the publisher's state directory
    state_dir: Path  # the watchdog's own observations
    max_staleness: float
    clock_skew: float
    publisher_token_env: str = "AIRFLOW_PLACEMENT_PUBLISHER_TOKEN"
    source_ca: str | None = None  # a CA bundle that trusts the source's certificate
    api_ca: str | None = None  # a CA bundle that trusts the servers' API certificates (default: the system's)
    interval: float = 10.0
    grace: float = 60.0
    source_cache: float = 0.0
    restore: bool = False
    restore_after: float = 600.0
    webhook: str | None = None
    moves_file: Path | None = None  # the inventory's record of failovers, kept for placement.yml
    health_timeout: float = 5.0
    api_user: str | None = None  # the Airflow API user for re-runs (none: re-runs are only listed)
    api_password_env: str | None = None
    signing_key: Path | None = None  # the publisher's Ed25519 key: with one, the watchdog signs what it publishes

    @property
    def lead(self) -> float:
        return self.max_staleness + self.clock_skew + self.source_cache

    @property
    def proof_age(self) -> float:
        """Seconds without a confirmation after which a server has certainly stopped."""
        return self.max_staleness + self.clock_skew

    def order(self, failed: str) -> list[str]:
        names = [s.name for s in self.servers]
        server = self.server(failed)
        if server.failover_order:
            return [normalize_host(n) for n in server.failover_order if normalize_host(n) != server.name]
        index = names.index(server.name)
        return names[index + 1 :] + names[:index]

    def server(self, name: str) -> ServerConfig:
        return next(s for s in self.servers if s.name == normalize_host(name))

    @classmethod
    def load(cls, path: Path) -> WatchConfig:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise WatchError(f"{path}: cannot read the watchdog's configuration: {exc}") from None
        if not isinstance(data, dict):
            raise WatchError(f"{path}: the configuration must be a mapping")
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "the configuration") -> WatchConfig:
        known = set(cls.__dataclass_fields__)
        if unknown := sorted(set(data) - known):
            raise WatchError(f"{origin}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        for key in ("servers", "source", "publisher_dir", "state_dir", "max_staleness", "clock_skew"):
            if data.get(key) in (None, "", []):
                raise WatchError(f"{origin}: {key} is required")
        servers = []
        for index, item in enumerate(data["servers"]):
            if not isinstance(item, dict) or not item.get("name") or not item.get("api"):
                raise WatchError(f"{origin}: servers[{index}] needs a name and an api URL")
            order = tuple(str(n) for n in item.get("failover_order") or ())
            servers.append(ServerConfig(normalize_host(str(item["name"])), str(item["api"]).rstrip("/"), order))
        names = [s.name for s in servers]
        for server in servers:
            if strangers := [n for n in server.failover_order if normalize_host(n) not in names]:
                raise WatchError(f"{origin}: {server.name}: failover_order names {strangers[0]!r}, not a server")
        values: dict[str, Any] = {**data, "servers": tuple(servers)}
        for key in ("interval", "grace", "max_staleness", "clock_skew", "source_cache", "restore_after"):
            if key in data:
                try:
                    values[key] = float(data[key])
                except (TypeError, ValueError):
                    raise WatchError(f"{origin}: {key} must be a number of seconds, not {data[key]!r}") from None
                if not math.isfinite(values[key]) or values[key] < 0:
                    raise WatchError(f"{origin}: {key} must be a finite number of seconds >= 0")
        for key in ("publisher_dir", "state_dir", "moves_file", "signing_key"):
            if data.get(key):
                values[key] = Path(str(data[key]))
        if not isinstance(values.get("restore", False), bool):
            raise WatchError(f"{origin}: restore must be true or false")
        values["webhook"] = data.get("webhook") or None
        return cls(**values)


# --- observations ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    reachable: bool
    healthy: bool
    reason: str


def check_health(api: str, timeout: float, ca: str | None = None) -> Health:
    """One server's health from its Airflow API server: every component it reports must be healthy."""
    url = api + HEALTH_PATH
    try:
        response = requests.get(url, timeout=timeout, verify=ca or True)
    except requests.RequestException as exc:
        return Health(False, False, f"unreachable ({type(exc).__name__})")
    if response.status_code != 200:
        return Health(True, False, f"{HEALTH_PATH} answered {response.status_code}")
    try:
        report = response.json()
        problems = [
            f"{name} {part.get('status')}"
            for name in ("metadatabase", "scheduler", "dag_processor", "triggerer")
            if isinstance(part := report.get(name), dict) and part.get("status") not in ("healthy", None)
        ]
        if not isinstance(report.get("scheduler"), dict):
            problems.append("no scheduler reported")
    except (ValueError, AttributeError):
        return Health(True, False, f"{HEALTH_PATH} answered something other than a health report")
    return Health(True, not problems, ", ".join(problems) or "healthy")


@dataclass
class Observed:
    """What the watchdog remembers of one server (kept in its state file across restarts)."""

    unhealthy_since: float | None = None
    healthy_since: float | None = None
    reason: str = ""


@dataclass
class State:
    """The watchdog's memory: observations, the moves it made (for restores) and the re-runs still to do."""

    servers: dict[str, Observed] = field(default_factory=dict)
    moved: dict[str, dict[str, Any]] = field(default_factory=dict)
    reruns: list[dict[str, Any]] = field(default_factory=list)
    quorum: bool | None = None

    @classmethod
    def load(cls, path: Path) -> State:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            raise WatchError(f"{path}: the watchdog's state is unreadable ({exc}); remove it to start afresh") from None
        return cls(
            servers={name: Observed(**item) for name, item in data.get("servers", {}).items()},
            moved=data.get("moved", {}),
            reruns=data.get("reruns", []),
            quorum=data.get("quorum"),
        )

    def save(self, path: Path) -> None:
        data = {
            "servers": {name: vars(item) for name, item in self.servers.items()},
            "moved": self.moved,
            "reruns": self.reruns,
            "quorum": self.quorum,
        }
        replace_file(path, json.dumps(data, indent=1, sort_keys=True))


# --- the desired document -------------------------------------------------------------------------------------------

Slot = tuple[str, str | None]  # an entry's key, and a task override's id (None: the entry's own schedule)


def owns_from(schedule: OwnerSchedule, host: str, when: datetime) -> bool:
    """Whether ``host`` owns any run of ``schedule`` dated ``when`` or later."""
    return schedule.owner_at(when) == host or any(h.at > when and h.owner == host for h in schedule.handovers)


def _slots(placement: Placement) -> list[tuple[Slot, OwnerSchedule]]:
    return [((e.key, None), e.schedule) for e in placement.entries] + [
        ((e.key, task), schedule) for e in placement.entries for task, schedule in e.tasks.items()
    ]


def slots_owned(placement: Placement, host: str, when: datetime) -> list[Slot]:
    return [slot for slot, schedule in _slots(placement) if owns_from(schedule, host, when)]


def retarget(placement: Placement, slots: set[Slot], old: str, new: str, base: datetime) -> Placement:
    """The desired document: in ``slots``, runs dated ``base`` or later that ``old`` owns go to ``new``.

    Other schedules are desired as they are, so the publisher changes nothing else.
    """

    def moved(slot: Slot, schedule: OwnerSchedule) -> OwnerSchedule:
        if slot not in slots:
            return schedule

        def owner(name: str) -> str:
            return new if name == old else name

        later = tuple(Handover(h.at, owner(h.owner)) for h in schedule.handovers if h.at > base)
        return simplify(OwnerSchedule(owner(schedule.owner_at(base)), later))

    entries = tuple(
        Entry(
            e.key,
            e.line,
            moved((e.key, None), e.schedule),
            {task: moved((e.key, task), schedule) for task, schedule in e.tasks.items()},
        )
        for e in placement.entries
    )
    return Placement(entries, revision="desired")


# --- the watchdog ---------------------------------------------------------------------------------------------------


def has_majority(seen: int, voters: int) -> bool:
    """Whether ``seen`` of ``voters`` is a strict majority: without one the watchdog is the one cut off."""
    return seen * 2 > voters


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Watchdog:
    """One watchdog over ``config``; :meth:`cycle` observes once and acts at most once per server.

    :param clock: the watchdog's clock (tests pass one moved by hand); the publisher issues on it too.
    :param log: where the one-line reports go.
    """

    def __init__(
        self,
        config: WatchConfig,
        *,
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config = config
        self.dry_run = dry_run
        self.clock = clock
        self._log = log
        try:
            key = load_signing_key(config.signing_key) if config.signing_key else None
        except ValueError as exc:
            raise WatchError(str(exc)) from None
        self.publisher = Publisher(config.publisher_dir, key)
        token = os.environ.get(config.publisher_token_env)
        if not token:
            raise WatchError(f"the environment variable {config.publisher_token_env} (the publisher's token) is empty")
        self.source = SourceClient(config.source, token, ca=config.source_ca)
        self.state_path = config.state_dir / STATE_FILE
        self.state = State.load(self.state_path)
        self.said: set[str] = set()

    def report(self, line: str, once: str | None = None) -> None:
        """One action (or refusal to act), one line; posted to the webhook unless this is a dry run.

        :param once: a key: a line with the same key is said once (a server's keys, ``NAME:...``, are forgotten
            when :meth:`observe` sees that server healthy again).
        """
        if once is not None:
            if once in self.said:
                return
            self.said.add(once)
        line = ("watch (dry run): " if self.dry_run else "watch: ") + line
        self._log(line)
        if self.config.webhook and not self.dry_run:
            try:
                requests.post(self.config.webhook, json={"text": line}, timeout=5)
            except requests.RequestException as exc:
                self._log(f"watch: the webhook failed ({type(exc).__name__}); the line above was not posted")

    def run(self, once: bool = False) -> None:
        while True:
            started = time.monotonic()
            self.cycle()
            if once:
                return
            time.sleep(max(0.0, self.config.interval - (time.monotonic() - started)))

    # --- one cycle ---

    def observe(self, now: float) -> dict[str, Health]:
        timeout, ca = self.config.health_timeout, self.config.api_ca
        health = {s.name: check_health(s.api, timeout, ca) for s in self.config.servers}
        for name, seen in health.items():
            observed = self.state.servers.setdefault(name, Observed())
            if seen.healthy:
                self.said = {key for key in self.said if not key.startswith(f"{name}:")}
                observed.unhealthy_since = None
                observed.healthy_since = observed.healthy_since or now
            else:
                observed.healthy_since = None
                observed.unhealthy_since = observed.unhealthy_since or now
            observed.reason = seen.reason
        return health

    def cycle(self) -> None:
        now = self.clock()
        health = self.observe(now)
        try:
            record: dict[str, Any] | None = self.source.confirmations()
        except (ServeError, ValueError) as exc:
            record, source_problem = None, str(exc)
        seen = sum(h.reachable for h in health.values()) + (record is not None)
        voters = len(health) + 1
        quorum = has_majority(seen, voters)
        if not quorum:
            # Cut off, it cannot tell a server's failure from its own: nothing seen now counts towards the grace (or
            # restore_after), which starts again once it sees a majority.
            for observed in self.state.servers.values():
                observed.unhealthy_since = observed.healthy_since = None
        if quorum != self.state.quorum:
            self.report(
                f"sees {seen} of {voters} voters (the servers and the source): "
                + ("a majority, watching" if quorum else "no majority, so it is the one cut off; doing nothing")
                + ("" if record is not None else f" (source: {source_problem})")
            )
            self.state.quorum = quorum
        if quorum and record is not None:
            try:
                # The time now, after the health checks (a server that does not answer takes its timeout) and the
                # reading of the record: the record's clock is set against it to date a forced move, and a
                # handover's lead counts from it. The cycle's start would date both that much too early.
                self.act(self.clock(), health, record)
            except (PublishError, ServeError, OSError, ValueError) as exc:
                self.report(f"cannot act: {exc}")
        self.state.save(self.state_path)

    def act(self, now: float, health: dict[str, Health], record: dict[str, Any]) -> None:
        published = self.publisher.published()
        if published is None or published.meta is None:
            return
        if (record.get("serial") or 0) < published.meta.serial and self.publisher.holder() is None and not self.dry_run:
            # Published but not out (a publish given up after it was issued, which the publisher keeps when it is a
            # forced failover): the source must serve it, or the servers' copies and the publisher's would part.
            record["serial"] = self.source.upload(self.publisher.published_path.read_text(encoding="utf-8"))
            self.report(f"uploaded serial {record['serial']}, published but not yet served")
        if record.get("serial") != published.meta.serial:
            self.report(
                f"the source serves serial {record.get('serial')}, the publisher's last is {published.meta.serial}: "
                "a publish is under way or the document reaches the source some other way; doing nothing",
                once=f"source:{record.get('serial')}:{published.meta.serial}",
            )
            return
        self.rerun_pending(record)
        for server in self.config.servers:
            observed = self.state.servers[server.name]
            published = self.publisher.published() or published  # one server's move changes it for the next
            if observed.unhealthy_since is not None and now - observed.unhealthy_since >= self.config.grace:
                self.fail_over(server.name, now, health, record, published)
            elif (
                self.config.restore
                and server.name in self.state.moved
                and observed.healthy_since is not None
                and now - observed.healthy_since >= self.config.restore_after
            ):
                self.give_back(server.name, now, published)

    def successor(self, failed: str, health: dict[str, Health]) -> str | None:
        down = {name for name, observed in self.state.servers.items() if observed.unhealthy_since is not None}
        return next((n for n in self.config.order(failed) if health[n].healthy and n not in down), None)

    def fail_over(
        self, failed: str, now: float, health: dict[str, Health], record: dict[str, Any], published: Placement
    ) -> None:
        moment = datetime.fromtimestamp(now, UTC)
        slots = set(slots_owned(published, failed, moment))
        if not slots:
            return  # it owns nothing any more
        successor = self.successor(failed, health)
        reason = f"{failed} unhealthy for {now - (self.state.servers[failed].unhealthy_since or now):.0f} s"
        reason += f" ({self.state.servers[failed].reason})"
        if successor is None:
            self.report(f"{reason}, but no server of its failover order is healthy: nothing moves", f"{failed}:alone")
            return
        entry = record["servers"].get(failed)
        last = float(entry["last"]) if entry and "last" in entry else None
        silent = record["now"] - (last if last is not None else float(record["created"]))
        if last is not None and silent >= self.config.proof_age:
            stop = last + self.config.proof_age - (record["now"] - now)  # on this watchdog's clock
            self.force(
                failed,
                successor=successor,
                now=now,
                stop=min(stop, now),
                suspect_from=min(last, self.state.servers[failed].unhealthy_since or now),
                slots=slots,
                published=published,
                reason=reason,
                silent=silent,
            )
            return
        cut = ceil_second(moment + timedelta(seconds=self.config.lead))
        desired = retarget(published, slots, failed, successor, cut)
        why_not = (
            f"its last confirmation was {silent:.0f} s ago"
            if last is not None
            else "it never confirmed at this source (it may read a mirror), so no proof"
        )
        self.publish(
            desired,
            now,
            describe=f"{reason}: scheduled handover to {successor} ({why_not})",
            basis=published,
            move={"failed": failed, "to": successor, "forced": False},
            slots=slots,
        )

    def force(
        self,
        failed: str,
        *,
        successor: str,
        now: float,
        stop: float,
        suspect_from: float,
        slots: set[Slot],
        published: Placement,
        reason: str,
        silent: float,
    ) -> None:
        # Until its proven stop it may have run runs dated up to the gate's horizon (clock_skew) ahead of its clock,
        # and runs dated in the second before.
        since = ceil_second(datetime.fromtimestamp(stop + self.config.clock_skew, UTC))
        if since.timestamp() > now:
            return  # proven stopped, but its runs may move only from stop + clock_skew, still ahead: a later check
        desired = retarget(published, slots, failed, successor, since)
        before = self.publisher.published_path.read_text(encoding="utf-8")
        describe = (
            f"{reason}, silent at the source for {silent:.0f} s (over max_staleness + clock_skew = "
            f"{self.config.proof_age:g} s): it has stopped; forced move to {successor} of its runs dated from "
            f"{_iso(since.timestamp())}"
        )
        serial = self.publish(
            desired,
            now,
            describe=describe,
            basis=published,
            move={"failed": failed, "to": successor, "forced": True},
            slots=slots,
            failed=failed,
            since=since,
        )
        if serial is None:
            return
        kept = {}
        for what, text in (("before", before), ("after", self.publisher.published_path.read_text(encoding="utf-8"))):
            kept[what] = self.config.state_dir / f"serial-{serial}-{what}.yaml"
            replace_file(kept[what], text)
        self.state.reruns.append(
            {
                "failed": failed,
                "successor": successor,
                "since": since.timestamp(),
                "suspect_from": suspect_from,
                "serial": serial,
                "before": str(kept["before"]),
                "after": str(kept["after"]),
            }
        )

    def give_back(self, server: str, now: float, published: Placement) -> None:
        move = self.state.moved[server]
        successor = move["to"]
        moment = datetime.fromtimestamp(now, UTC)
        cut = ceil_second(moment + timedelta(seconds=self.config.lead))
        slots = {(key, task) for key, task in move["slots"]}
        desired = retarget(published, slots, successor, server, cut)
        self.publish(
            desired,
            now,
            describe=f"{server} healthy for {now - (self.state.servers[server].healthy_since or now):.0f} s: "
            f"scheduled handover back from {successor}",
            basis=published,
            move={"restored": server},
            slots=slots,
        )

    # --- publishing ---

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
        """Publish ``desired`` and upload it to the source; returns its serial (None: nothing issued)."""
        moment = datetime.fromtimestamp(now, UTC)
        options: dict[str, Any] = {"lead": self.config.lead, "failed": failed, "since": since, "now": moment}
        try:
            _, preview = self.publisher.begin(desired, check=True, **options)
        except PublishError as exc:
            self.report(f"{describe}: refused by the publisher: {exc}")
            return None
        if not preview.changes:
            return None
        changes = "; ".join(change.describe(moment) for change in preview.changes)
        if self.dry_run:
            self.report(f"would publish: {describe}: {changes}", f"{failed or move.get('failed')}:would:{failed}")
            return None
        try:
            token = self.publisher.acquire(wait=0)
        except PublishError as exc:
            self.report(f"{describe}: not now: {exc}")
            return None
        fenced = issued = False
        try:
            current = self.publisher.published()
            if current is None or current.revision != basis.revision:
                self.publisher.abort()  # another publisher was quicker: plan again from its document next cycle
                return None
            if failed is not None:
                fenced, last = self.source.fence(failed, self.config.proof_age)
                if not fenced:
                    self.publisher.abort()
                    self.report(f"{describe}: not forced: {failed} confirmed at {_iso(last)} after all")
                    return None
            text, plan = self.publisher.begin(desired, token=token, **options)
            issued = True
            serial = self.source.upload(text)
            try:
                self._record_move(move, serial, plan, now)
            except (OSError, ValueError, yaml.YAMLError) as exc:  # it is out: it stays published all the same
                describe += f" (its record in {self.config.moves_file} was not written: {exc}; add it by hand)"
            self.publisher.commit()
        except (PublishError, ServeError, OSError, ValueError) as exc:
            self.publisher.abort()
            if fenced and not issued and failed is not None:
                with contextlib.suppress(ServeError):
                    self.source.unfence(failed)  # nothing was issued: the served document holds, for it too
            self.report(f"{describe}: publish failed, nothing moved: {exc}")
            return None
        if "restored" in move:
            self.state.moved.pop(move["restored"], None)
        else:
            self.state.moved[move["failed"]] = {"to": move["to"], "slots": sorted(slots, key=str)}
        self.report(f"published serial {serial}: {describe}: {changes}")
        return serial

    def _record_move(self, move: dict[str, Any], serial: int, plan: Plan, now: float) -> None:
        """Append the move to the inventory's record (as failover.yml does), so that placement.yml keeps it."""
        path = self.config.moves_file
        if path is None:
            return
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            data = {}
        moves = list(data.get("dag_placement_moves") or [])
        record = {**move, "serial": serial, "recorded": _iso(now)}
        target = move.get("to", move.get("restored"))
        at = next((c.at for c in plan.changes if c.new == target and c.at is not None), None)
        if at is not None:
            record["at"] = _iso(at.timestamp())
        moves.append(record)
        header = "# Failovers and restores recorded by failover.yml and airflow-placement watch, oldest first.\n"
        replace_file(path, "---\n" + header + yaml.safe_dump({"dag_placement_moves": moves}, sort_keys=False))

    # --- re-runs ---

    def rerun_pending(self, record: dict[str, Any]) -> None:
        """Re-run what a forced move's successor skipped since the move's date, once it holds the new document."""
        for item in list(self.state.reruns):
            confirmed = record["servers"].get(item["successor"], {}).get("serial", 0)
            if confirmed < item["serial"]:
                continue  # it would skip them again
            self.state.reruns.remove(item)
            self.rerun(item)

    def rerun(self, item: dict[str, Any]) -> None:
        config = self.config
        successor, failed = item["successor"], item["failed"]
        since = datetime.fromtimestamp(item["since"], UTC)
        until = datetime.fromtimestamp(self.clock(), UTC)  # it skipped nothing of theirs since it holds the move
        password = os.environ.get(config.api_password_env or "", "")
        if not config.api_user or not password:
            self.report(f"re-runs on {successor} not done: no api_user / api_password_env configured")
            return
        try:
            api = Airflow(config.server(successor).api, config.api_user, password, ca=config.api_ca)
            api.sign_in()
            before = parse_document(Path(item["before"]).read_bytes(), origin=item["before"])
            after = parse_document(Path(item["after"]).read_bytes(), origin=item["after"])
            suspect_from = datetime.fromtimestamp(min(item.get("suspect_from", item["since"]), item["since"]), UTC)
            skipped = list(api.skipped_since(suspect_from))
            runs = select(
                skipped, before=before, after=after, failed=failed, successor=successor, since=since, until=until
            )
            note = f"re-run by airflow-placement watch: {failed} stopped by {_iso(item['since'])}"
            cleared = [describe(ti) for run in runs for ti in api.clear(run, dry_run=False, note=note)]
        except (ApiError, OSError, ValueError) as exc:
            self.report(f"re-runs on {successor} failed: {exc}")
            return
        self.report(
            f"re-ran once on {successor} what {failed} missed from {_iso(item['since'])} "
            "(its proven stop + clock_skew): " + (", ".join(cleared) or "nothing was skipped")
        )
        earlier: dict[str, list[dict[str, Any]]] = {}
        for ti in skipped:
            dated = suspect_from <= _when(ti) < since and ti.get("state") == "skipped"
            if dated and _owner(before, ti, successor) == failed:
                earlier.setdefault(ti["dag_id"], []).append(ti)
        if earlier:
            commands = []
            for dag, instances in sorted(earlier.items()):
                tasks = "|".join(sorted({re.escape(ti["task_id"]) for ti in instances}))
                first, last = min(map(_when, instances)), max(map(_when, instances))
                dates = f"{first.isoformat()} .. {last.isoformat()}" if first != last else first.isoformat()
                commands.append(
                    f"{dag} ({len(instances)} task instances dated {dates}): airflow tasks clear {dag} -t "
                    f"'^({tasks})$' -s {first.isoformat()} -e {last.isoformat()} --only-failed -y"
                )
            self.report(
                f"runs dated between {failed}'s failure and its proven stop + clock_skew "
                f"({_iso(suspect_from.timestamp())} .. {_iso(item['since'])}) may or may not have run there; it still "
                "owns them. Once it is back, check which did not run and re-run them on it: " + "; ".join(commands)
            )


def _when(ti: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(ti.get("logical_date") or ti["run_after"]).replace("Z", "+00:00"))


def _owner(placement: Placement, ti: dict[str, Any], host: str) -> str | None:
    return decide(placement, dag_id=ti["dag_id"], task_id=ti["task_id"], host=host, when=_when(ti)).owner


# --- the command line ---------------------------------------------------------------------------------------------


def add_commands(commands: Any) -> None:
    """``watch``, for ``airflow-placement``'s parser."""
    watch = commands.add_parser(
        "watch",
        help="move a failed server's DAGs to their successors, without a person",
        description="Check each server's health every interval; after a grace period of unhealthy, publish a "
        "scheduled handover of its DAGs to their successors, and a forced one (fenced at the confirming source, "
        "runs dated from clock_skew after its proven stop) once its last confirmation at the source is older than "
        "max_staleness + clock_skew; re-run what it missed once. Acts only while it sees a majority of the servers "
        "and the source. Every action is one line on standard output.",
    )
    watch.add_argument("--config", required=True, help="the watchdog's YAML configuration")
    watch.add_argument("--once", action="store_true", help="one check (and at most one action per server), then exit")
    watch.add_argument("--dry-run", action="store_true", help="only say what it would do")
    watch.add_argument("--check-config", action="store_true", help="only check the configuration file, then exit")


def watch_command(args: Any) -> int:
    config = WatchConfig.load(Path(args.config))
    if args.check_config:
        print(f"{args.config}: valid, {len(config.servers)} servers")
        return 0
    watchdog = Watchdog(config, dry_run=args.dry_run)
    with contextlib.suppress(KeyboardInterrupt):
        watchdog.run(once=args.once)
    sys.stdout.flush()
    return 0
