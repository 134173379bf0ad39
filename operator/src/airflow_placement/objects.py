"""Connections, variables and pools declared once and made the same in every server's Airflow.

A declaration (YAML or JSON) lists the objects by kind::

    connections:
      - {conn_id: warehouse, conn_type: postgres, host: db.example.org, port: 5432, login: etl, password: "..."}
    variables:
      - {key: report_recipients, value: ["ops@example.org"], description: "who gets the daily report"}
    pools:
      - {name: warehouse, slots: 4, include_deferred: false}

Each declared object is complete: a field left out is empty in Airflow (a pool's ``include_deferred`` false). Objects
Airflow holds that are not declared are left alone, and deleted only for the kinds named to prune (``default_pool``
never: Airflow needs it). ``plan`` compares a declaration with what Airflow holds as plain data (no Airflow needed);
``apply`` reads Airflow's metadata database through its models, and writes the plan in one transaction.

What is printed never holds a secret: a connection's password and extra, and every variable's value, are shown only
as changed or not, never as text.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

Kind = Literal["connections", "variables", "pools"]
KINDS: tuple[Kind, ...] = ("connections", "variables", "pools")
SINGULAR: dict[Kind, str] = {"connections": "connection", "variables": "variable", "pools": "pool"}
ID_FIELD: dict[Kind, str] = {"connections": "conn_id", "variables": "key", "pools": "name"}
FIELDS: dict[Kind, tuple[str, ...]] = {
    "connections": ("conn_type", "description", "host", "schema", "login", "password", "port", "extra"),
    "variables": ("value", "description"),
    "pools": ("slots", "description", "include_deferred"),
}
HIDDEN: dict[Kind, frozenset[str]] = {
    "connections": frozenset({"password", "extra"}),
    "variables": frozenset({"value"}),
    "pools": frozenset(),
}
REQUIRED: dict[Kind, tuple[str, ...]] = {"connections": ("conn_type",), "variables": ("value",), "pools": ("slots",)}
KEEP: dict[Kind, frozenset[str]] = {
    "connections": frozenset(),
    "variables": frozenset(),
    "pools": frozenset({"default_pool"}),
}
MASK = "********"

State = dict[str, Any]  # an object's fields, normalized (FIELDS of its kind, without its id)


class ObjectsError(ValueError):
    """A declaration that cannot be applied, or Airflow refusing it; ``str()`` is one line naming the object and where
    it was declared, never a secret."""


@dataclass(frozen=True)
class Declaration:
    """Every declared object, by kind and id, normalized."""

    origin: str
    objects: dict[Kind, dict[str, State]]


@dataclass(frozen=True)
class Change:
    kind: Kind
    id: str
    action: Literal["create", "update", "delete"]
    fields: tuple[str, ...] = ()  # the fields that differ (update), or that are set (create)
    before: State = field(default_factory=dict)
    after: State = field(default_factory=dict)

    def line(self) -> str:
        """One line of the diff, with secrets masked."""
        name = f"{SINGULAR[self.kind]} {self.id}"
        if self.action == "delete":
            return f"- {name}"
        if self.action == "create":
            return f"+ {name}: " + ", ".join(f"{f}={_shown(self.kind, f, self.after[f])}" for f in self.fields)
        parts = [
            f"{f} changed"
            if f in HIDDEN[self.kind]
            else f"{f} {_shown(self.kind, f, self.before[f])} -> {_shown(self.kind, f, self.after[f])}"
            for f in self.fields
        ]
        return f"~ {name}: " + ", ".join(parts)


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    unchanged: dict[Kind, list[str]]
    undeclared: dict[Kind, list[str]]  # held by Airflow, not declared, left alone

    def summary(self, *, check: bool) -> dict[str, Any]:
        """What the plan does, as JSON-ready data with no secret in it."""
        out: dict[str, Any] = {"changed": bool(self.changes), "check": check}
        for kind in KINDS:
            mine = [c for c in self.changes if c.kind == kind]
            out[kind] = {
                "created": [c.id for c in mine if c.action == "create"],
                "updated": {c.id: list(c.fields) for c in mine if c.action == "update"},
                "deleted": [c.id for c in mine if c.action == "delete"],
                "unchanged": len(self.unchanged[kind]),
                "undeclared": self.undeclared[kind],
            }
        out["diff"] = [change.line() for change in self.changes]
        return out


def _shown(kind: Kind, name: str, value: Any) -> str:
    if name in HIDDEN[kind]:
        return MASK
    return json.dumps(value)


# --- reading a declaration ---------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """YAML (and so JSON) with no duplicate keys."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def read_declaration(text: str, origin: str) -> Declaration:
    """Parse and check a declaration; ``ObjectsError`` names the first problem's object (or place) and ``origin``."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ObjectsError(f"{origin}:{where}: not valid YAML or JSON: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ObjectsError(f"{origin}: expected a mapping of {', '.join(KINDS)}, found {_kind(data)}")
    unknown = sorted(str(k) for k in data if k not in KINDS)
    if unknown:
        raise ObjectsError(f"{origin}: unknown kind {unknown[0]!r} (known: {', '.join(KINDS)})")
    objects: dict[Kind, dict[str, State]] = {}
    for kind in KINDS:
        items = data.get(kind) or []
        if not isinstance(items, list):
            raise ObjectsError(f"{origin}: {kind} must be a list, found {_kind(items)}")
        objects[kind] = {}
        for index, item in enumerate(items):
            ident, state = _declared(kind, index, item, origin)
            if ident in objects[kind]:
                raise ObjectsError(f"{origin}: {SINGULAR[kind]} {ident!r} is declared twice")
            objects[kind][ident] = state
    return Declaration(origin, objects)


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )


def _declared(kind: Kind, index: int, item: Any, origin: str) -> tuple[str, State]:
    id_field = ID_FIELD[kind]
    if not isinstance(item, dict):
        raise ObjectsError(f"{origin}: {kind}[{index}] must be a mapping, found {_kind(item)}")
    ident = item.get(id_field)
    if not isinstance(ident, str) or not ident.strip():
        raise ObjectsError(f"{origin}: {kind}[{index}]: {id_field} is missing or not a string")
    name = f"{origin}: {SINGULAR[kind]} {ident!r}"
    unknown = sorted(str(k) for k in item if k != id_field and k not in FIELDS[kind])
    if unknown:
        raise ObjectsError(f"{name}: unknown field {unknown[0]!r} (known: {', '.join((id_field, *FIELDS[kind]))})")
    for required in REQUIRED[kind]:
        if item.get(required) is None or item.get(required) == "":
            raise ObjectsError(f"{name}: {required} is missing")
    state = {f: item.get(f) for f in FIELDS[kind]}
    try:
        return ident, _normalized(kind, state, declared=True)
    except ValueError as exc:
        raise ObjectsError(f"{name}: {exc}") from None


def _text(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, found {_kind(value)}")
    return value


def _normalized(kind: Kind, state: State, *, declared: bool) -> State:
    """``state`` in the form both sides compare in: empty strings as None, numbers as numbers, an extra as JSON data,
    a variable's value as the text Airflow stores (a declared non-string value as JSON data)."""
    out: State = {"description": _text(state.get("description"), "description")}
    if kind == "connections":
        for name in ("conn_type", "host", "schema", "login", "password"):
            out[name] = _text(state.get(name), name)
        port = state.get("port")
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
            raise ValueError(f"port must be a whole number from 1 to 65535, found {_kind(port)}")
        out["port"] = port
        out["extra"] = _extra(state.get("extra"), declared=declared)
    elif kind == "variables":
        value = state.get("value")
        if declared and not isinstance(value, str):
            value = _JsonValue(value)
        out["value"] = value
    else:
        slots = state.get("slots")
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < -1:
            raise ValueError(f"slots must be a whole number, -1 (unlimited) or more, found {_kind(slots)}")
        include_deferred = state.get("include_deferred") or False
        if not isinstance(include_deferred, bool):
            raise ValueError(f"include_deferred must be true or false, found {_kind(include_deferred)}")
        out["slots"] = slots
        out["include_deferred"] = include_deferred
    return {name: out[name] for name in FIELDS[kind]}


def _extra(value: Any, *, declared: bool) -> Any:
    if value is None or value in ("", {}):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            if declared:
                raise ValueError("extra must be a mapping or a JSON object") from None
            return value  # Airflow holds text that is not JSON: it differs from any declared extra
    if declared and not isinstance(value, dict):
        raise ValueError(f"extra must be a mapping or a JSON object, found {_kind(value)}")
    return value or None


@dataclass(frozen=True)
class _JsonValue:
    """A declared variable value that is not a string: Airflow stores it as JSON, and it equals any stored JSON text
    that parses to the same data (formatting aside)."""

    data: Any

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _JsonValue):
            return bool(self.data == other.data)
        if isinstance(other, str):
            try:
                return bool(json.loads(other) == self.data)
            except ValueError:
                return False
        return NotImplemented

    def __hash__(self) -> int:
        return hash(json.dumps(self.data, sort_keys=True))

    def text(self) -> str:
        return json.dumps(self.data, indent=2)


# --- comparing -----------------------------------------------------------------------------------------------------


def plan(declaration: Declaration, current: Mapping[Kind, Mapping[str, State]], prune: Iterable[Kind] = ()) -> Plan:
    """What makes Airflow hold ``declaration``: creations, updates, and deletions of undeclared objects of the kinds
    in ``prune``. ``current`` is what Airflow holds, by kind and id, in the form ``normalized_current`` gives."""
    pruned = set(prune)
    changes: list[Change] = []
    unchanged: dict[Kind, list[str]] = {}
    undeclared: dict[Kind, list[str]] = {}
    for kind in KINDS:
        wanted, held = declaration.objects[kind], current.get(kind, {})
        unchanged[kind], undeclared[kind] = [], []
        for ident in sorted(wanted):
            after = wanted[ident]
            if ident not in held:
                changes.append(
                    Change(kind, ident, "create", tuple(f for f in FIELDS[kind] if after[f] is not None), after=after)
                )
                continue
            before = held[ident]
            differ = tuple(f for f in FIELDS[kind] if not _same(after[f], before.get(f)))
            if differ:
                changes.append(Change(kind, ident, "update", differ, before=before, after=after))
            else:
                unchanged[kind].append(ident)
        for ident in sorted(set(held) - set(wanted)):
            if kind in pruned and ident not in KEEP[kind]:
                changes.append(Change(kind, ident, "delete", before=held[ident]))
            else:
                undeclared[kind].append(ident)
    return Plan(tuple(changes), unchanged, undeclared)


def _same(wanted: Any, held: Any) -> bool:
    return bool(wanted == held)


# --- Airflow -------------------------------------------------------------------------------------------------------


def apply(declaration: Declaration, prune: Iterable[Kind] = (), *, check: bool = False) -> Plan:
    """Compare ``declaration`` with Airflow's metadata database and, unless ``check``, make Airflow hold it, in one
    transaction. Airflow's models encrypt passwords, extras and values with the Fernet key as they are written."""
    from airflow.models.connection import Connection  # noqa: PLC0415 - Airflow only where it is needed
    from airflow.models.pool import Pool  # noqa: PLC0415
    from airflow.models.variable import Variable  # noqa: PLC0415
    from airflow.utils.session import create_session  # noqa: PLC0415
    from sqlalchemy import select  # noqa: PLC0415
    from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415

    try:
        with create_session() as session:
            rows: dict[Kind, dict[str, Any]] = {
                "connections": {c.conn_id: c for c in session.scalars(select(Connection))},
                "variables": {v.key: v for v in session.scalars(select(Variable))},
                "pools": {str(p.pool): p for p in session.scalars(select(Pool))},
            }
            current = {kind: {ident: _row_state(kind, row) for ident, row in rows[kind].items()} for kind in KINDS}
            result = plan(declaration, current, prune)
            if check:
                session.rollback()
                return result
            for change in result.changes:
                row = rows[change.kind].get(change.id)
                if change.action == "delete":
                    session.delete(row)
                    continue
                if row is None:
                    if change.kind == "connections":
                        row = Connection(conn_id=change.id)
                    elif change.kind == "variables":
                        row = Variable(key=change.id)  # type: ignore[no-untyped-call]
                    else:
                        row = Pool(pool=change.id)
                    session.add(row)
                for name in FIELDS[change.kind]:
                    _set(change.kind, row, name, change.after[name])
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or type(exc).__name__).splitlines()[0]
        raise ObjectsError(f"{declaration.origin}: Airflow's database refused the change: {detail}") from None
    return result


def _row_state(kind: Kind, row: Any) -> State:
    if kind == "connections":
        state = {name: getattr(row, name) for name in FIELDS[kind]}
    elif kind == "variables":
        state = {"value": row.val, "description": row.description}
    else:
        state = {"slots": row.slots, "description": row.description, "include_deferred": row.include_deferred}
    return _normalized(kind, state, declared=False)


def _set(kind: Kind, row: Any, name: str, value: Any) -> None:
    if kind == "connections" and name == "extra":
        row.extra = json.dumps(value) if value is not None else None
    elif kind == "variables" and name == "value":
        row.val = value.text() if isinstance(value, _JsonValue) else value
    else:
        setattr(row, name, value)


# --- the command line ----------------------------------------------------------------------------------------------


def add_commands(commands: Any) -> None:
    """``objects apply``, for ``airflow-placement``'s parser."""
    objects = commands.add_parser(
        "objects",
        help="make Airflow's connections, variables and pools what a file declares",
        description="Airflow's connections, variables and pools, declared in a file and made the same on every server.",
    )
    actions = objects.add_subparsers(dest="objects_command", required=True, metavar="ACTION")
    apply_cmd = actions.add_parser(
        "apply",
        help="create and update the declared objects (in this server's Airflow)",
        description="Compare FILE (YAML or JSON: connections, variables, pools) with this Airflow's metadata database "
        "and create or update what differs, in one transaction; objects not declared are left alone unless their kind "
        "is pruned. Run where Airflow runs (the scheduler's container), with its configuration. Prints one JSON object "
        "on the last line: changed, per kind what was created, updated (with the fields), deleted, left unchanged "
        "and not declared, and the diff. Passwords, extras and variable values are never printed. Exit 0, or 1 with "
        "one line on stderr naming the object and FILE.",
    )
    apply_cmd.add_argument("file", metavar="FILE", help="the declaration; - reads standard input")
    apply_cmd.add_argument("--check", action="store_true", help="change nothing: only report what would change")
    apply_cmd.add_argument(
        "--prune",
        action="append",
        choices=KINDS,
        default=[],
        metavar="KIND",
        help="also delete objects of this kind that FILE does not declare (connections, variables or pools; "
        "repeatable). default_pool is never deleted",
    )
    apply_cmd.add_argument("--name", help="what to call FILE in messages (default: FILE, or <stdin>)")


def objects_command(args: Any) -> int:
    origin = args.name or ("<stdin>" if args.file == "-" else args.file)
    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    declaration = read_declaration(text, origin)
    result = apply(declaration, args.prune, check=args.check)
    print(json.dumps(result.summary(check=args.check), sort_keys=True))
    return 0
