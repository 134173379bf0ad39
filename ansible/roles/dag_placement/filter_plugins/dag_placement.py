"""Filters of the dag_placement role: assemble the desired placement document from the inventory.

The desired document says who should own what now (final owners, no computed handover times). The package's
publisher (``airflow-placement publish``) turns it into the published document, scheduling every change of owner as
a handover the lease ahead. These filters only assemble and read documents; the format, host names, validation
and planning are the package's own (``airflow_placement``, installed next to Ansible on the controller).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import yaml
from ansible.errors import AnsibleFilterError

from airflow_placement.document import DocumentError, Meta, Placement, normalize_host, parse_document
from airflow_placement.publish import plan, render

_HEADER = (
    "# The desired placement, rendered by Ansible (role dag_placement) from the inventory and the recorded\n"
    "# failovers: who should own what now. airflow-placement publish turns it into the published document.\n"
)


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


def _parse(text: str, origin: str) -> Placement:
    try:
        return parse_document(text, origin=origin)
    except DocumentError as exc:
        raise AnsibleFilterError(f"dag_placement: {exc}") from exc


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


def active_moves(moves: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The recorded failovers still in force (their server not restored since), in the order they were recorded."""
    active: list[dict[str, Any]] = []
    for move in moves or []:
        if move.get("restored"):
            active = [m for m in active if normalize_host(m["failed"]) != normalize_host(move["restored"])]
        elif normalize_host(move["failed"]) not in {normalize_host(m["failed"]) for m in active}:
            active.append(move)
    return active


def failed_servers(moves: list[dict[str, Any]] | None) -> list[str]:
    """Servers failed over by ``moves`` and not restored since, in the order they failed."""
    return [str(move["failed"]) for move in active_moves(moves)]


def desired(document: dict[str, Any], moves: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The assignment with every failed server's runs given to its successor: final owners, handovers as written.

    Each move still in force rewrites its failed server to its successor, in the order recorded, so a successor
    that failed later passes the runs on to its own successor.
    """
    rewrites = [(normalize_host(move["failed"]), str(move["to"])) for move in active_moves(moves)]

    def owner(name: Any) -> str:
        result = str(name)
        for failed, successor in rewrites:
            if normalize_host(result) == failed:
                result = successor
        return result

    def schedule(spec: Any) -> Any:
        if not isinstance(spec, dict):
            return owner(spec)
        out = dict(spec)
        if "owner" in spec:
            out["owner"] = owner(spec["owner"])
        if spec.get("handover"):
            out["handover"] = [
                {**handover, "at": _plain_time(handover.get("at")), "owner": owner(handover.get("owner"))}
                for handover in spec["handover"]
            ]
        if spec.get("tasks"):
            out["tasks"] = {str(task): schedule(task_spec) for task, task_spec in spec["tasks"].items()}
        return out

    return {str(key): schedule(spec) for key, spec in (document or {}).items()}


def _plain_time(value: Any) -> Any:
    return _format(_timestamp(value)) if isinstance(value, datetime) else value


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _quoted(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "'" if value[:4].isdigit() and "T" in value else None  # keep timestamps strings, visibly
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style=style)


_Dumper.add_multi_representer(str, _quoted)


def _plain(value: Any) -> Any:
    """``value`` in plain Python types (Ansible hands filters its own subclasses, which YAML cannot represent)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, bool | int | float) or value is None:
        return value
    return str(value)


def to_document(document: dict[str, Any]) -> str:
    """The document as YAML text: a header comment, keys in the order given, no anchors or aliases."""
    body = yaml.dump(_plain(document), Dumper=_Dumper, default_flow_style=False, sort_keys=False, width=120, indent=2)
    return _HEADER + (body if document else "{}\n")


def preview(  # noqa: PLR0917
    desired_text: str, published_text: str | None, lead: Any, failed: str = "", since: Any = "", clock_skew: Any = 0
) -> str:
    """The document ``airflow-placement publish`` would issue now (serial and times aside), for ``--check`` runs.

    The plan is the package's own (``airflow_placement.publish.plan``); nothing is locked, issued or written.
    """
    now = datetime.now(UTC).replace(microsecond=0)
    published = _parse(published_text, "the published document") if published_text else None
    the_plan = plan(
        published,
        _parse(desired_text, "the desired document"),
        now=now,
        lead=float(lead),
        failed=failed or None,
        since=_timestamp(since) if since else None,
        clock_skew=float(clock_skew),
    )
    return render(the_plan.data, Meta(1, now, now))


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


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "dag_placement_assemble": assemble,
            "dag_placement_desired": desired,
            "dag_placement_to_document": to_document,
            "dag_placement_failed_servers": failed_servers,
            "dag_placement_preview": preview,
            "dag_placement_time_problem": time_problem,
        }
