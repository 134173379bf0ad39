"""The decision: does this host run this task of this DAG run? A pure function of plain data."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from airflow_placement.document import PlacementView, normalize_host

Outcome = Literal["run", "skip"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What a host does with one task of one DAG run, and why."""

    decision: Outcome
    owner: str | None
    reason: str
    dag_id: str
    task_id: str | None
    host: str
    when: datetime
    revision: str
    entry: str | None

    @property
    def run(self) -> bool:
        return self.decision == "run"

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["when"] = self.when.isoformat()
        return data


def decide(
    placement: PlacementView,
    *,
    dag_id: str,
    task_id: str | None,
    host: str,
    when: datetime,
    now: datetime | None = None,
    horizon: timedelta | None = None,
) -> Decision:
    """Decide whether ``host`` runs ``task_id`` of the run of ``dag_id`` whose logical date is ``when``.

    Every host holding the same document reaches the same owner for the same run, because the owner depends only on
    the document, the ids and the run's logical date; so at most one host decides ``run``.

    :param placement: a validated placement document.
    :param dag_id: the DAG's id.
    :param task_id: the task's id, or None to decide for the DAG as a whole.
    :param host: this server's name.
    :param when: the run's logical date (or its run_after, for runs without one); must carry a UTC offset.
    :param now: the time of the decision. A run dated after a handover that has not yet taken effect by ``now`` is
        run by nobody holding this document: a server still holding the document before that handover was
        published may run it, and two servers must never both do so.
    :param horizon: with ``now``: a run dated ``horizon`` or more after ``now`` is run by nobody. Give it the
        clock-skew margin (``FetchSettings.horizon``): a handover published later is scheduled at least the lease
        ahead of every server's clock, and a forced failover moves a failed server's runs dated from twice the skew
        ahead of the publisher's, so neither can give a run dated within the horizon to another server.
    """
    if when.tzinfo is None:
        raise ValueError(f"the run's date {when.isoformat()} has no UTC offset")
    me = normalize_host(host)
    entry = placement.entry_for(dag_id)

    def result(decision: Outcome, owner: str | None, reason: str) -> Decision:
        return Decision(
            decision, owner, reason, dag_id, task_id, me, when, placement.revision, entry.key if entry else None
        )

    if entry is None:
        return result("skip", None, f"no entry or pattern in the document matches DAG {dag_id!r}")
    schedule, overridden = entry.schedule_for(task_id)
    owner = schedule.owner_at(when)
    if now is not None and when > now:
        pending = next((h for h in schedule.handovers if now < h.at <= when), None)
        if pending is not None:
            return result(
                "skip",
                owner,
                f"the run is dated {when.isoformat()}, after the handover to {pending.owner} at "
                f"{pending.at.isoformat()} that has not taken effect yet: trigger it with a logical date before the "
                "handover, or after it",
            )
        if horizon is not None and when >= now + horizon:
            return result(
                "skip",
                owner,
                f"the run is dated {when.isoformat()}, {horizon.total_seconds():.0f} s or more ahead (the clock-skew "
                "margin): a handover or a failover published meanwhile could give it to another server; trigger it "
                "once its date has come",
            )
    source = f"task override in entry {entry.key!r}" if overridden else f"entry {entry.key!r}"
    if len(schedule.handovers) and when >= schedule.handovers[0].at:
        source += " after a scheduled handover"
    if owner == me:
        return result("run", owner, f"this host owns the run by {source}")
    return result("skip", owner, f"owned by {owner} by {source}")
