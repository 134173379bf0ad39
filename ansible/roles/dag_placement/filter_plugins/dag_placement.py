"""Filters of the dag_placement role: build the placement document from inventory and apply recorded failovers.

The document format is the one ``airflow_placement.document`` parses. These filters only assemble it; the role
validates the result with ``airflow-placement check`` before anything is published. They are plain Python (standard
library and PyYAML, both present wherever Ansible runs) so the controller needs nothing else to render.
"""

from __future__ import annotations

import copy
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from ansible.errors import AnsibleFilterError

_HEADER = (
    "# Placement document rendered by Ansible (role dag_placement): change the inventory, or run failover.yml.\n"
    "# A handover {at: T, owner: B} gives B the runs whose logical date is T or later.\n"
)


def _host(name: Any) -> str:
    return str(name).strip().rstrip(".").lower()


def _timestamp(value: Any) -> datetime:
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("z", "Z"))
        except ValueError as exc:
            raise AnsibleFilterError(f"dag_placement: {value!r} is not an ISO 8601 date and time") from exc
    if moment.tzinfo is None:
        raise AnsibleFilterError(f"dag_placement: {value!r} has no UTC offset")
    return moment.astimezone(UTC)


def _format(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _schedule(spec: Any, where: str) -> dict[str, Any]:
    """A schedule as {owner, handover: [{at: datetime, owner}]}, from the string or the mapping form."""
    if isinstance(spec, str):
        return {"owner": spec, "handover": []}
    if not isinstance(spec, dict) or "owner" not in spec:
        raise AnsibleFilterError(f"dag_placement: {where} must be a host name or a mapping with 'owner', not {spec!r}")
    handovers = [{"at": _timestamp(h["at"]), "owner": h["owner"]} for h in spec.get("handover") or []]
    return {"owner": spec["owner"], "handover": sorted(handovers, key=lambda h: h["at"])}


def _entry(spec: Any, where: str) -> dict[str, Any]:
    entry = _schedule(spec, where)
    tasks = spec.get("tasks") if isinstance(spec, dict) else None
    entry["tasks"] = {task: _schedule(task_spec, f"{where}.tasks.{task}") for task, task_spec in (tasks or {}).items()}
    return entry


def _schedules(entry: dict[str, Any]) -> list[tuple[str | None, dict[str, Any]]]:
    return [(None, entry), *entry["tasks"].items()]


def _owner_before(schedule: dict[str, Any], moment: datetime) -> str:
    owner = schedule["owner"]
    for handover in schedule["handover"]:
        if handover["at"] < moment:
            owner = handover["owner"]
    return str(owner)


def _drop_redundant(schedule: dict[str, Any]) -> None:
    kept, current = [], _host(schedule["owner"])
    for handover in schedule["handover"]:
        if _host(handover["owner"]) != current:
            kept.append(handover)
            current = _host(handover["owner"])
    schedule["handover"] = kept


def _owner_at(schedule: dict[str, Any], moment: datetime) -> str:
    owner = schedule["owner"]
    for handover in schedule["handover"]:
        if handover["at"] <= moment:
            owner = handover["owner"]
    return str(owner)


def _insert(schedule: dict[str, Any], at: datetime, owner: str) -> None:
    if not any(h["at"] == at for h in schedule["handover"]):
        schedule["handover"] = sorted([*schedule["handover"], {"at": at, "owner": owner}], key=lambda h: h["at"])


def _move(schedule: dict[str, Any], failed: str, successor: str, at: datetime | None) -> None:
    """Give ``failed``'s runs to ``successor``: all of them (forced, ``at`` None) or those from ``at`` on."""
    if at is None:
        if _host(schedule["owner"]) == failed:
            schedule["owner"] = successor
        for handover in schedule["handover"]:
            if _host(handover["owner"]) == failed:
                handover["owner"] = successor
        return
    for handover in schedule["handover"]:
        if handover["at"] >= at and _host(handover["owner"]) == failed:
            handover["owner"] = successor
    if _host(_owner_before(schedule, at)) == failed:
        _insert(schedule, at, successor)


def _restore(schedule: dict[str, Any], seed: dict[str, Any], restored: str, at: datetime) -> None:
    """Give ``restored`` back the runs from ``at`` on that the assignment (``seed``) gives it."""
    seed_owner = {h["at"]: h["owner"] for h in seed["handover"]}
    for handover in schedule["handover"]:
        if handover["at"] > at and _host(seed_owner.get(handover["at"], "")) == restored:
            handover["owner"] = seed_owner[handover["at"]]
    if _host(_owner_at(seed, at)) == restored and _host(_owner_at(schedule, at)) != restored:
        _insert(schedule, at, _owner_at(seed, at))


def _apply(
    entries: dict[str, dict[str, Any]], move: dict[str, Any], seed: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Apply one recorded move (or restore) to every schedule in place; return what changed, one item per schedule."""
    restored = move.get("restored")
    forced = bool(move.get("forced"))
    # A forced move takes effect at once: for every logical date, or, dated back (rerun_since), from ``at`` on.
    at = None if forced and not move.get("at") else _timestamp(move["at"])
    changes = []
    for key, entry in entries.items():
        for task, schedule in _schedules(entry):
            before = copy.deepcopy(schedule)
            if restored:
                seed_entry = seed.get(key)
                seed_schedule = (seed_entry["tasks"].get(task) if task else seed_entry) if seed_entry else None
                if seed_schedule is not None and at is not None:
                    _restore(schedule, seed_schedule, _host(restored), at)
            else:
                _move(schedule, _host(move["failed"]), move["to"], at)
            _drop_redundant(schedule)
            if schedule != before:
                changes.append(
                    {
                        "dag": key,
                        "task": task,
                        "from": _owner_at(before, at) if restored and at else move.get("failed"),
                        "to": restored or move["to"],
                        "effective": _format(at) + (" (forced, dated back)" if forced else "")
                        if at
                        else "now (forced)",
                    }
                )
    return changes


def _entries(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(key): _entry(spec, str(key)) for key, spec in (document or {}).items()}


def assemble(
    document: dict[str, Any] | None, groups: list[dict[str, Any]] | None, primaries: dict[str, list[str]] | None
) -> dict[str, Any]:
    """Merge the three ways of assigning DAGs into one document: per DAG wins over a group, a group over inventory.

    :param document: DAG id or pattern -> owner, in the document format (``dag_placement_document``).
    :param groups: items ``{dags: [ids or patterns], owner: host}`` (``dag_placement_groups``).
    :param primaries: host -> DAG ids or patterns it is the primary server for (``dag_placement_dags`` per host).
    """
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}

    def put(key: str, spec: Any, source: str, level: str) -> None:
        if key in merged and origin[key].startswith(level):
            raise AnsibleFilterError(f"dag_placement: {key!r} is assigned twice, by {origin[key]} and by {source}")
        merged[key] = spec
        origin[key] = source

    for host, dags in sorted((primaries or {}).items()):
        for dag in dags or []:
            put(str(dag), host, f"dag_placement_dags of {host}", "dag_placement_dags")
    for index, group in enumerate(groups or []):
        for dag in group["dags"]:
            put(str(dag), group["owner"], f"dag_placement_groups[{index}]", "dag_placement_groups")
    for key, spec in (document or {}).items():
        put(str(key), spec, "dag_placement_document", "dag_placement_document")
    return merged


def apply_moves(document: dict[str, Any], moves: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The document with every recorded move applied, in the order they were recorded."""
    seed = _entries(document)
    entries = copy.deepcopy(seed)
    for move in moves or []:
        _apply(entries, move, seed)
    return _plain(entries)


def move_changes(document: dict[str, Any], moves: list[dict[str, Any]] | None, move: dict[str, Any]) -> list[Any]:
    """What recording ``move`` after ``moves`` changes in the assignment ``document``."""
    seed = _entries(document)
    entries = copy.deepcopy(seed)
    for earlier in moves or []:
        _apply(entries, earlier, seed)
    return _apply(entries, move, seed)


def failed_servers(moves: list[dict[str, Any]] | None) -> list[str]:
    """Servers failed over by ``moves`` and not restored since, in the order they failed."""
    failed: list[str] = []
    for move in moves or []:
        if move.get("restored"):
            failed = [name for name in failed if _host(name) != _host(move["restored"])]
        elif _host(move["failed"]) not in map(_host, failed):
            failed.append(move["failed"])
    return failed


def _plain_schedule(schedule: dict[str, Any], tasks: dict[str, Any] | None = None) -> Any:
    if not schedule["handover"] and not tasks:
        return schedule["owner"]
    out: dict[str, Any] = {"owner": schedule["owner"]}
    if schedule["handover"]:
        out["handover"] = [{"at": _format(h["at"]), "owner": h["owner"]} for h in schedule["handover"]]
    if tasks:
        out["tasks"] = tasks
    return out


def _plain(entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        key: _plain_schedule(entry, {task: _plain_schedule(s) for task, s in entry["tasks"].items()})
        for key, entry in entries.items()
    }


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _quoted(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "'" if value[:4].isdigit() and "T" in value else None  # keep timestamps strings, visibly
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style=style)


_Dumper.add_multi_representer(str, _quoted)


def to_document(document: dict[str, Any]) -> str:
    """The document as YAML text: a header comment, keys in the order given, no anchors or aliases."""
    body = yaml.dump(
        _plain(_entries(document)), Dumper=_Dumper, default_flow_style=False, sort_keys=False, width=120, indent=2
    )
    return _HEADER + body


def after(seconds: Any, now: Any = None) -> str:
    """``seconds`` from ``now`` (default: the controller's clock), rounded up to a whole second, in ISO 8601 UTC."""
    moment = (datetime.now(UTC) if now is None else _timestamp(now)) + timedelta(seconds=float(seconds))
    return _format(moment.replace(microsecond=0) + timedelta(seconds=math.ceil(moment.microsecond / 1e6)))


def describe_change(change: dict[str, Any]) -> str:
    """One line for a change reported by ``dag_placement_move_changes``."""
    what = change["dag"] + (f" (task {change['task']})" if change["task"] else "")
    return f"{what}: {change['from']} -> {change['to']}, effective {change['effective']}"


def time_problem(value: Any, now: Any = None) -> str:
    """Why ``value`` is not a usable past time in ISO 8601 with a UTC offset, or "" when it is."""
    try:
        moment = _timestamp(value)
    except AnsibleFilterError as exc:
        return str(exc).removeprefix("dag_placement: ")
    current = datetime.now(UTC) if now is None else _timestamp(now)
    if moment > current:
        return f"{value!r} is in the future (now {_format(current)})"
    return ""


def rerun_selection(
    task_instances: list[dict[str, Any]],
    document: dict[str, Any],
    moves: list[dict[str, Any]],
    since: Any,
    until: Any,
) -> list[dict[str, Any]]:
    """The skipped task instances to re-run on the successor after the last of ``moves``, grouped by DAG run.

    A task instance qualifies when its logical date (``run_after`` for runs without one) is in [since, until), the
    document before the move gave it to the failed server and the document after the move gives it to the
    successor: the successor skipped it only because the failed server owned it. The decision is the operator's
    own (``airflow_placement.decision.decide``), which the controller has since it validates every document.

    :param task_instances: items of Airflow's ``GET .../taskInstances`` answer (state skipped, on the successor).
    :param document: the assignment (``dag_placement_assemble``).
    :param moves: the recorded moves, the forced move with ``at: rerun_since`` last.
    :param since: start of the window (``rerun_since``).
    :param until: end of the window, exclusive.
    :returns: items ``{dag_id, dag_run_id, task_ids: [task_id or [task_id, map_index]], logical_date}``.
    """
    from airflow_placement.decision import decide  # noqa: PLC0415 (only this filter needs the package)
    from airflow_placement.document import parse_document  # noqa: PLC0415

    move = moves[-1]
    failed, successor = _host(move["failed"]), _host(move["to"])
    before = parse_document(to_document(apply_moves(document, moves[:-1])), "the document before the move")
    after = parse_document(to_document(apply_moves(document, moves)), "the document after the move")
    start, end = _timestamp(since), _timestamp(until)
    runs: dict[tuple[str, str], dict[str, Any]] = {}
    for ti in task_instances:
        when = _timestamp(ti.get("logical_date") or ti["run_after"])
        if not start <= when < end or ti.get("state") != "skipped":
            continue
        dag_id, task_id = ti["dag_id"], ti["task_id"]
        was = decide(before, dag_id=dag_id, task_id=task_id, host=successor, when=when).owner
        now = decide(after, dag_id=dag_id, task_id=task_id, host=successor, when=when).owner
        if was is None or now is None or _host(was) != failed or _host(now) != successor:
            continue
        run = runs.setdefault(
            (dag_id, ti["dag_run_id"]),
            {"dag_id": dag_id, "dag_run_id": ti["dag_run_id"], "logical_date": _format(when), "task_ids": []},
        )
        map_index = ti.get("map_index", -1)
        run["task_ids"].append(task_id if map_index is None or map_index < 0 else [task_id, map_index])
    return sorted(runs.values(), key=lambda run: (run["logical_date"], run["dag_id"]))


def describe_task_instance(ti: dict[str, Any]) -> str:
    """One line for a task instance of Airflow's API: DAG, run, task (and map index), logical date."""
    index = ti.get("map_index", -1)
    task = ti["task_id"] + (f"[{index}]" if index is not None and index >= 0 else "")
    when = ti.get("logical_date") or ti.get("run_after") or "?"
    return f"{ti['dag_id']} {ti['dag_run_id']} {task} (logical date {when}, was {ti.get('state')})"


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "dag_placement_assemble": assemble,
            "dag_placement_apply_moves": apply_moves,
            "dag_placement_move_changes": move_changes,
            "dag_placement_to_document": to_document,
            "dag_placement_after": after,
            "dag_placement_describe_change": describe_change,
            "dag_placement_failed_servers": failed_servers,
            "dag_placement_time_problem": time_problem,
            "dag_placement_rerun_selection": rerun_selection,
            "dag_placement_describe_task_instance": describe_task_instance,
        }
