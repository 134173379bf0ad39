"""What the gate decided and what this server holds: the record of recent decisions, metrics, and the view's state.

- :func:`decided` and :func:`refused` are what the gate calls once per decision (run, skip or refuse). Through
  :func:`record` each appends one JSON line to a small bounded record in the placement cache directory
  (``decisions.jsonl``, cut to its newest lines past :data:`MAX_RECORD_BYTES`) and counts the decision through
  Airflow's metrics (StatsD, Datadog or OpenTelemetry, whichever ``[metrics]`` configures).
- :func:`load_placement` is :func:`airflow_placement.fetch.load_placement` that also counts every failed read of
  the source.
- :func:`manual_run_notice` is the line a task's log gets when a run triggered by hand lands on a server that does
  not run it: who owns the run and where to trigger it.
- :func:`server_state` is what the placement view shows, read from the store with the lease's own rules, without
  asking the source.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, overload

import filelock

from airflow_placement.decision import Decision, decide
from airflow_placement.document import Handover, OwnerSchedule, PlacementView, normalize_host
from airflow_placement.fetch import FetchSettings, Loaded, PlacementCache
from airflow_placement.lease import age, distrust, stack_started_at
from airflow_placement.store import CacheEntry, SerialFloorError, Store

Outcome = Literal["run", "skip", "refuse"]
Status = Literal["ok", "degraded", "stale", "refusing"]  # what the view says of this server's copy

RECORD_FILE = "decisions.jsonl"
MAX_RECORD_BYTES = 256 * 1024  # past this the record is cut to its newest KEEP_RECORDS lines
KEEP_RECORDS = 200

METRIC_DECISION = "placement.decision"  # + ".run", ".skip" or ".refuse": a counter
METRIC_LEASE_AGE = "placement.lease_age"  # a gauge: seconds since the publisher last vouched for the copy used
METRIC_SOURCE_FAILURE = "placement.source_failure"  # a counter: failed reads of the source

log = logging.getLogger(__name__)


class TaskLog(Protocol):
    """A task's logger (Airflow's, or the standard library's): all :func:`decided` needs of it."""

    def warning(self, msg: str, /, *args: Any) -> Any: ...


@dataclass(frozen=True)
class Event:
    """One decision of the gate on this server, as recorded and counted.

    :param outcome: ``run``, ``skip``, or ``refuse`` (no trustworthy document: nothing runs).
    :param dag_id: the DAG.
    :param task_id: the task.
    :param run_id: the DAG run.
    :param host: this server's name (None when it is unknown).
    :param reason: why, as in the decision's log line.
    :param at: when it was decided (a Unix time).
    :param owner: who owns the run by the document (None: nobody, or no document).
    :param run_type: the run's type (``scheduled``, ``manual``, ...), when known.
    :param when: the date that decided the run's owner (ISO 8601).
    :param serial: the document's serial, when it has one.
    :param revision: the document's revision.
    :param lease_age: seconds since the publisher last vouched for the copy that decided.
    :param notice: for a run triggered by hand that does not run here: who owns it and where to trigger it.
    """

    outcome: Outcome
    dag_id: str
    task_id: str | None
    run_id: str | None
    host: str | None
    reason: str
    at: float
    owner: str | None = None
    run_type: str | None = None
    when: str | None = None
    serial: int | None = None
    revision: str | None = None
    lease_age: float | None = None
    notice: str | None = None

    @classmethod
    def of_decision(
        cls,
        decision: Decision,
        *,
        run_id: str | None,
        run_type: str | None,
        loaded: Loaded | None = None,
        at: float | None = None,
    ) -> Event:
        """The event of a run or skip :class:`Decision`, made with the copy ``loaded``."""
        meta = loaded.placement.meta if loaded else None
        return cls(
            outcome=decision.decision,
            dag_id=decision.dag_id,
            task_id=decision.task_id,
            run_id=run_id,
            host=decision.host,
            reason=decision.reason,
            at=time.time() if at is None else at,
            owner=decision.owner,
            run_type=run_type,
            when=decision.when.isoformat(),
            serial=meta.serial if meta else None,
            revision=decision.revision,
            lease_age=round(loaded.age, 3) if loaded else None,
            notice=manual_run_notice(decision, run_id) if run_type == "manual" else None,
        )

    @classmethod
    def refusal(
        cls,
        *,
        dag_id: str,
        task_id: str | None,
        run_id: str | None,
        run_type: str | None,
        host: str | None,
        reason: str,
        at: float | None = None,
    ) -> Event:
        """The event of a task refused because no trustworthy document is available."""
        return cls("refuse", dag_id, task_id, run_id, host, reason, time.time() if at is None else at, None, run_type)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = _iso(self.at)
        return data


def manual_run_notice(decision: Decision, run_id: str | None) -> str | None:
    """The log line for a run triggered by hand on a server that does not run it; None when it runs here.

    It names the server that owns the run and says where to trigger it instead.
    """
    if decision.run:
        return None
    run = f"run {run_id} of DAG {decision.dag_id}" if run_id else f"this run of DAG {decision.dag_id}"
    start = f"{run} was triggered by hand on {decision.host}"
    if decision.owner is None:
        return (
            f"{start}, but no server runs it: {decision.reason}. Add the DAG to the placement document, then "
            "trigger it on its owner"
        )
    if decision.reason.startswith("owned by "):  # the plain case; otherwise the run's date keeps it off every server
        return (
            f"{start}, which does not own it: {decision.owner} owns runs of this DAG dated {decision.when.isoformat()}"
            f". Nothing runs here; trigger it in {decision.owner}'s Airflow instead"
        )
    return f"{start} and runs on no server now: {decision.reason}"


def run_of(context: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    """A task context's run id and run type (``manual``, ``scheduled``, ...); None for what it does not carry."""
    if not context:
        return None, None
    run_type = getattr(context.get("dag_run"), "run_type", None)
    run_id = context.get("run_id")
    return (str(run_id) if run_id else None), (str(getattr(run_type, "value", run_type)) if run_type else None)


def decided(
    cache_dir: Path,
    decision: Decision,
    *,
    context: Mapping[str, Any] | None,
    loaded: Loaded,
    log: TaskLog,
) -> Event:
    """What the gate calls once it has decided: record and count the decision, and for a run triggered by hand that
    does not run here, log who owns it and where to trigger it.

    :param cache_dir: the placement cache directory (``[placement] cache_dir``).
    :param decision: the decision, run or skip.
    :param context: the task's context (None or ``{}`` without a run).
    :param loaded: the copy that decided.
    :param log: the task's log.
    """
    run_id, run_type = run_of(context)
    event = Event.of_decision(decision, run_id=run_id, run_type=run_type, loaded=loaded)
    if event.notice:
        log.warning("placement: %s", event.notice)
    record(cache_dir, event)
    return event


def refused(
    cache_dir: Path,
    *,
    context: Mapping[str, Any] | None,
    dag_id: str,
    task_id: str | None,
    host: str | None,
    reason: str,
) -> Event:
    """What the gate calls when no trustworthy document lets it decide: record and count the refusal."""
    run_id, run_type = run_of(context)
    event = Event.refusal(dag_id=dag_id, task_id=task_id, run_id=run_id, run_type=run_type, host=host, reason=reason)
    record(cache_dir, event)
    return event


def record(cache_dir: Path, event: Event) -> None:
    """Append ``event`` to this server's record of recent decisions and count it in Airflow's metrics.

    Neither may stop the task: a record that cannot be written is logged and left out.
    """
    emit_metrics(event)
    line = json.dumps(event.as_json(), separators=(",", ":")) + "\n"
    path = cache_dir / RECORD_FILE
    try:
        Store(cache_dir, source="").prepare()  # the directory's checks only: this user's, mode 0700, no link
        with filelock.FileLock(cache_dir / f"{RECORD_FILE}.lock", timeout=5):
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as handle:
                handle.write(line)
                size = handle.tell()
            if size > MAX_RECORD_BYTES:
                _trim(path)
    except (OSError, filelock.Timeout) as exc:
        log.warning("placement: cannot write the record of recent decisions %s: %s", path, exc)


def _trim(path: Path) -> None:
    """Keep the newest :data:`KEEP_RECORDS` lines (called with the record's lock held)."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-KEEP_RECORDS:]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def recent_decisions(cache_dir: Path, limit: int = 50) -> list[dict[str, Any]]:
    """The newest ``limit`` recorded decisions, newest first (lines that cannot be read are left out)."""
    try:
        lines = (cache_dir / RECORD_FILE).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    names = {f.name for f in fields(Event)}
    events: list[dict[str, Any]] = []
    for line in reversed(lines):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and {"outcome", "dag_id", "at"} <= data.keys() <= names:
            events.append(data)
            if len(events) == limit:
                break
    return events


def emit_metrics(event: Event) -> None:
    """Count ``event`` (``placement.decision.<outcome>``) and gauge its lease age (``placement.lease_age``)."""
    stats = _stats()
    tags = {"dag_id": event.dag_id}
    stats.incr(f"{METRIC_DECISION}.{event.outcome}", tags=tags)
    if event.lease_age is not None:
        stats.gauge(METRIC_LEASE_AGE, event.lease_age)


def _stats() -> Any:
    """Airflow's metrics in a task process: the backend ``[metrics]`` configures, or nothing when none is."""
    from airflow.sdk.observability import stats  # noqa: PLC0415 - only the gate and the view, inside Airflow, need it

    return stats


class _CountingCache(PlacementCache):
    """A :class:`PlacementCache` that counts each failed read of the source (made by this process, once)."""

    def _failed(self, entry: CacheEntry, now: float, reason: str, requests_made: int) -> Loaded:
        _stats().incr(METRIC_SOURCE_FAILURE)
        return super()._failed(entry, now, reason, requests_made)


def load_placement(settings: FetchSettings) -> Loaded:
    """:func:`airflow_placement.fetch.load_placement`, counting failed reads in ``placement.source_failure``.

    :raises PlacementUnavailable: when the lease allows no copy to be used.
    """
    return _CountingCache(settings).load()


@dataclass(frozen=True)
class ManualRun:
    """A DAG run triggered by hand on this server, as the view lists it.

    :param date: the date that decides its owner: its logical date, else its run_after.
    """

    dag_id: str
    run_id: str
    date: datetime
    triggered_by: str | None = None


def server_state(
    fetch: FetchSettings,
    host: str | None,
    dag_ids: Iterable[str],
    manual_runs: Iterable[ManualRun] = (),
    *,
    clock: Callable[[], float] = time.time,
    started: Callable[[], float] = stack_started_at,
    decisions: int = 50,
) -> dict[str, Any]:
    """What this server holds and decides, for the placement view and its JSON API; no request is made.

    :param fetch: the source and the lease's settings.
    :param host: this server's name (None: unknown, so nothing runs here).
    :param dag_ids: the DAGs to list, with their owner now and their pending handovers.
    :param manual_runs: runs triggered by hand on this server: which of them run elsewhere, and where.
    :param clock: this server's clock.
    :param started: when this server's stack started (the lease's restart rule).
    :param decisions: how many recorded decisions to include.
    """
    now = clock()
    now_dt = datetime.fromtimestamp(now, UTC)
    cache = PlacementCache(fetch, clock=clock, started=started)
    entry = cache.read()
    lease = fetch.lease
    problems: list[str] = []  # why nothing runs here, the source aside
    if not host:
        problems.append("this server's name is unknown: set HOST_HOSTNAME or [placement] host")
    view = cache._view(entry) if entry is not None and entry.revision is not None else None
    if entry is not None and entry.revision is not None and view is None:
        problems.append("the held copy's snapshot and body are missing or damaged")
    lapsed = distrust(entry, now, started(), lease) if entry is not None else "no copy of the document is held yet"
    me = normalize_host(host) if host else None
    failed = entry is not None and entry.failure is not None
    asked = entry is not None and started() <= entry.attempted_at <= now < entry.attempted_at + lease.ttl
    status = _status(problems, lapsed, failed, asked)
    if lapsed is not None:
        problems.append(lapsed)
    return {
        "host": host,
        "source": masked(fetch.source),
        "now": _iso(now),
        "status": status,
        "trusted": status in ("ok", "degraded"),
        "warning": masked(_warning(status, problems, entry, now, asked)),
        "document": _document(cache, entry, view, now, fetch),
        "dags": [_dag(view, dag_id, me, now_dt) for dag_id in dag_ids],
        "manual_runs": [_manual(view, run, me, now_dt, fetch) for run in manual_runs],
        "decisions": [
            {key: masked(value) if isinstance(value, str) else value for key, value in decision.items()}
            for decision in recent_decisions(fetch.cache_dir, decisions)
        ],
    }


def unusable_state(reason: str, dag_ids: Iterable[str], *, clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """The view's state when the settings cannot even be read: ``reason`` says why nothing runs here."""
    return {
        "host": None,
        "source": None,
        "now": _iso(clock()),
        "status": "refusing",
        "trusted": False,
        "warning": masked(f"This server cannot decide: {reason}. Every gated task here is refused."),
        "document": None,
        "dags": [_dag(None, dag_id, None, datetime.now(UTC)) for dag_id in dag_ids],
        "manual_runs": [],
        "decisions": [],
    }


def _status(problems: list[str], lapsed: str | None, failed: bool, asked: bool) -> Status:
    """``ok``; ``degraded``: the source fails, but the copy is within its lease; ``stale``: no copy within its lease,
    and no task has asked the source since the TTL ran out (the next one will); ``refusing``: no copy within its
    lease although the source was just asked (it failed, or gave nothing newer), or this server cannot decide at all.

    :param failed: the last read of the source failed.
    :param asked: the source was asked within the TTL, since the stack started.
    """
    if problems or (lapsed is not None and (failed or asked)):
        return "refusing"
    if lapsed is not None:
        return "stale"
    return "degraded" if failed else "ok"


def _warning(status: Status, problems: list[str], entry: CacheEntry | None, now: float, asked: bool) -> str | None:
    if status == "ok":
        return None
    if status == "degraded":
        assert entry is not None
        return (
            f"The source is failing (last attempt {now - entry.attempted_at:.0f} s ago: {entry.failure}). This server "
            "decides from the copy it holds until its lease runs out, then refuses every gated task."
        )
    text = "This server has no trustworthy placement document and runs nothing: " + "; ".join(problems) + ". "
    text += "Every gated task here is refused (skipped) until the publisher's word on a copy reaches it."
    if entry is not None and entry.failure is not None:
        text += f" The last read of the source, {now - entry.attempted_at:.0f} s ago, failed: {entry.failure}."
    elif entry is not None and asked:
        text += f" The source was read {now - entry.attempted_at:.0f} s ago and gave no copy within its lease."
    elif status == "stale":
        text += " No task has asked the source since the copy was last checked: the next gated task will."
    return text


def _document(
    cache: PlacementCache, entry: CacheEntry | None, view: PlacementView | None, now: float, fetch: FetchSettings
) -> dict[str, Any] | None:
    if entry is None:
        return None
    meta = view.meta if view is not None else None
    try:
        floor: int | None = cache.store.floor()
    except SerialFloorError:
        floor = None
    held = entry.revision is not None
    lease_age = age(entry, now) if held else None
    return {
        "serial": entry.serial,
        "revision": entry.revision,
        "issued": meta.issued.isoformat() if meta else None,
        "renewed": meta.renewed.isoformat() if meta and meta.renewed else None,
        "confirmed_at": _iso(entry.checked_at) if held else None,
        "confirmed_ago": round(now - entry.checked_at, 1) if held else None,
        "vouched_at": _iso(entry.vouched_at) if held else None,
        "vouched_by": ("the source" if entry.vouched_clock == "server" else "the publisher (@meta)") if held else None,
        "lease_age": round(lease_age, 1) if lease_age is not None else None,
        "lease_left": round(max(0.0, fetch.max_staleness - lease_age), 1) if lease_age is not None else None,
        "max_staleness": fetch.max_staleness,
        "ttl": fetch.ttl,
        "serial_floor": floor,
        "last_attempt": _iso(entry.attempted_at) if entry.attempted_at else None,
        "last_failure": masked(entry.failure),
    }


def _owners(schedule: OwnerSchedule, me: str | None, now: datetime) -> dict[str, Any]:
    owner = schedule.owner_at(now)
    pending: list[Handover] = [h for h in schedule.handovers if h.at > now]
    return {
        "owner": owner,
        "here": me is not None and normalize_host(owner) == me,
        "pending": [
            {"at": h.at.isoformat(), "owner": h.owner, "in_seconds": round((h.at - now).total_seconds())}
            for h in pending
        ],
    }


def _dag(view: PlacementView | None, dag_id: str, me: str | None, now: datetime) -> dict[str, Any]:
    entry = view.entry_for(dag_id) if view is not None else None
    if entry is None:
        return {"dag_id": dag_id, "entry": None, "owner": None, "here": False, "pending": [], "tasks": []}
    tasks = [{"task_id": task_id, **_owners(schedule, me, now)} for task_id, schedule in sorted(entry.tasks.items())]
    return {"dag_id": dag_id, "entry": entry.key, **_owners(entry.schedule, me, now), "tasks": tasks}


def _manual(
    view: PlacementView | None, run: ManualRun, me: str | None, now: datetime, fetch: FetchSettings
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "dag_id": run.dag_id,
        "run_id": run.run_id,
        "date": run.date.isoformat(),
        "triggered_by": run.triggered_by,
        "owner": None,
        "here": False,
        "notice": None,
    }
    if view is None or me is None:
        data["notice"] = "unknown: this server holds no copy of the placement document"
        return data
    decision = decide(
        view,
        dag_id=run.dag_id,
        task_id=None,
        host=me,
        when=run.date,
        now=now,
        horizon=fetch.horizon,
    )
    data.update(owner=decision.owner, here=decision.run, notice=manual_run_notice(decision, run.run_id))
    return data


_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


@overload
def masked(text: str) -> str: ...
@overload
def masked(text: None) -> None: ...
def masked(text: str | None) -> str | None:
    """``text`` with the user and password of every URL in it replaced by ``***``: the view shows it to every user."""
    return None if text is None else _USERINFO.sub("***@", text)


def _iso(timestamp: float) -> str | None:
    if not math.isfinite(timestamp) or timestamp <= 0:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
