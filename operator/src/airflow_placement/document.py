"""The placement document: parsing, validation and the ownership model.

A document is a YAML mapping from DAG id (or a glob pattern of DAG ids) to the server that owns it::

    dag_1: server-1.tld                  # the seed form
    "etl_*": server-2.tld                # a pattern for DAGs nobody listed
    "*": server-1.tld                    # the catch-all
    reports:
      owner: server-1.tld                # owner of runs before the first handover
      handover:                          # from `at` (a run's logical date) on, `owner` owns it
        - {at: "2026-12-01T06:00:00Z", owner: server-2.tld}
      tasks:                             # per-task overrides, same forms as above
        publish: server-2.tld

Which entry applies to a DAG: its exact key; otherwise the matching pattern with the most literal (non-wildcard)
characters, ties going to the pattern written first. A DAG that nothing matches is owned by nobody: every server
skips it.

Parsing is strict because a wrong document must never make a server run: no aliases, anchors or tags, no duplicate
keys, one YAML document, a bounded size, and the JSON Schema in ``schema/placement.schema.json``. Every rejection
names the line.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from bisect import bisect_right
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from importlib.resources import files
from typing import Any, Protocol

import fastjsonschema
import yaml
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

DEFAULT_MAX_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 8
_MAX_REPORTED_PROBLEMS = 20
_GLOB_CHARS = re.compile(r"[*?\[\]!]")
_WILDCARDS = re.compile(r"\[[^\]]*\]|[*?]")

Path = tuple[str | int, ...]


def normalize_host(name: str) -> str:
    """Return ``name`` as compared with other host names: DNS case-insensitive, a trailing dot ignored."""
    return name.strip().rstrip(".").lower()


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason a document was rejected, with the 1-based line it was found on (when known)."""

    line: int | None
    message: str

    def render(self, origin: str) -> str:
        return f"{origin}:{self.line}: {self.message}" if self.line else f"{origin}: {self.message}"


class DocumentError(ValueError):
    """A placement document was rejected. ``str()`` is one line; ``problems`` lists every reason found."""

    def __init__(self, origin: str, problems: list[Problem]) -> None:
        self.origin = origin
        self.problems = problems
        first = problems[0].render(origin)
        more = len(problems) - 1
        super().__init__(f"{first} (and {more} more problem{'s' * (more > 1)})" if more else first)

    def lines(self) -> list[str]:
        return [p.render(self.origin) for p in self.problems]


@dataclass(frozen=True, slots=True)
class Handover:
    at: datetime
    owner: str


@dataclass(frozen=True, slots=True)
class OwnerSchedule:
    """Who owns runs, by logical date: ``owner`` until the first handover, then each handover's ``owner``."""

    owner: str
    handovers: tuple[Handover, ...] = ()

    def owner_at(self, when: datetime) -> str:
        if not self.handovers:
            return self.owner
        index = bisect_right([h.at for h in self.handovers], when)
        return self.handovers[index - 1].owner if index else self.owner

    def owners(self) -> set[str]:
        return {self.owner, *(h.owner for h in self.handovers)}


@dataclass(frozen=True, slots=True)
class Entry:
    """One top-level entry: a DAG id or a pattern, its schedule, and per-task overrides."""

    key: str
    line: int
    schedule: OwnerSchedule
    tasks: Mapping[str, OwnerSchedule] = field(default_factory=dict)

    @property
    def is_pattern(self) -> bool:
        return bool(_GLOB_CHARS.search(self.key))

    def schedule_for(self, task_id: str | None) -> tuple[OwnerSchedule, bool]:
        """The schedule that applies to ``task_id`` and whether it came from a per-task override."""
        if task_id is not None and task_id in self.tasks:
            return self.tasks[task_id], True
        return self.schedule, False


META_KEY = "@meta"


@dataclass(frozen=True, slots=True)
class Meta:
    """What the publisher wrote under ``@meta``: the serial and the times it issued and last renewed this copy.

    ``@meta`` cannot collide with a DAG id: Airflow does not allow ``@`` in one, and neither does the schema.
    """

    serial: int
    issued: datetime
    renewed: datetime | None = None
    signature: str | None = None  # the publisher's Ed25519 signature of ``signed`` (base64), if it signs
    signed: bytes = field(default=b"", repr=False, compare=False)  # what a signature covers: see signed_content()

    @property
    def vouched(self) -> datetime:
        """The publisher's last word on this copy: its renewal, else its issue."""
        return self.renewed or self.issued


def pattern_rank(entries: tuple[Entry, ...]) -> list[Entry]:
    """The pattern entries in the order they are tried: most literal characters first, then as written."""
    order = {e.key: i for i, e in enumerate(entries)}
    return sorted((e for e in entries if e.is_pattern), key=lambda e: (-len(_WILDCARDS.sub("", e.key)), order[e.key]))


class PlacementView(Protocol):
    """What deciding needs of a document: a parsed :class:`Placement`, or a snapshot of one."""

    @property
    def revision(self) -> str: ...

    @property
    def meta(self) -> Meta | None: ...

    def entry_for(self, dag_id: str) -> Entry | None: ...


@dataclass(frozen=True)
class Placement:
    """A validated placement document.

    ``revision`` identifies the content: a digest of the document without its renewal time, so a renewed copy of a
    serial has the revision of the copy first issued.
    """

    entries: tuple[Entry, ...]
    revision: str
    meta: Meta | None = None
    _exact: dict[str, Entry] = field(init=False, repr=False)
    _patterns: tuple[tuple[re.Pattern[str], Entry], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        exact = {e.key: e for e in self.entries if not e.is_pattern}
        patterns = pattern_rank(self.entries)
        object.__setattr__(self, "_exact", exact)
        object.__setattr__(self, "_patterns", tuple((re.compile(fnmatch.translate(e.key)), e) for e in patterns))

    def entry_for(self, dag_id: str) -> Entry | None:
        """The entry that decides ``dag_id``: its exact key, else the most specific matching pattern."""
        entry = self._exact.get(dag_id)
        if entry is not None:
            return entry
        for regex, candidate in self._patterns:
            if regex.match(dag_id):
                return candidate
        return None

    def hosts(self) -> set[str]:
        """Every owner named anywhere in the document, normalized."""
        names: set[str] = set()
        for entry in self.entries:
            names |= entry.schedule.owners()
            for schedule in entry.tasks.values():
                names |= schedule.owners()
        return names


# --- YAML, strictly -----------------------------------------------------------------------------------------------

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_RESOLVER = yaml.resolver.Resolver()
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_STR_TAG = "tag:yaml.org,2002:str"
_CONSTRUCTOR = yaml.constructor.SafeConstructor()


class _Reject(Exception):
    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.problem = Problem(line, message)


def _line(event: yaml.Event) -> int:
    return int(event.start_mark.line) + 1 if event.start_mark is not None else 0


class _Builder:
    """Builds plain data from YAML parser events, recording each value's line; refuses what a document never needs."""

    def __init__(self, events: Iterator[yaml.Event]) -> None:
        self._events = events
        self.lines: dict[Path, int] = {}

    def build(self) -> Any:
        self._expect(yaml.StreamStartEvent)
        event = next(self._events)
        if isinstance(event, yaml.StreamEndEvent):
            raise _Reject(None, "the document is empty")
        value = self._node(next(self._events), (), 0)
        self._expect(yaml.DocumentEndEvent)
        event = next(self._events)
        if not isinstance(event, yaml.StreamEndEvent):
            raise _Reject(_line(event), "more than one YAML document ('---'); a placement document is exactly one")
        return value

    def _expect(self, kind: type) -> None:
        event = next(self._events)
        if not isinstance(event, kind):  # pragma: no cover - the YAML parser guarantees the event order
            raise _Reject(_line(event), f"unexpected YAML structure ({type(event).__name__})")

    def _node(self, event: yaml.Event, path: Path, depth: int) -> Any:
        line = _line(event)
        if isinstance(event, yaml.AliasEvent):
            raise _Reject(line, f"YAML aliases (*{getattr(event, 'anchor', '')}) are not allowed")
        if anchor := getattr(event, "anchor", None):
            raise _Reject(line, f"YAML anchors (&{anchor}) are not allowed")
        if (tag := getattr(event, "tag", None)) is not None:
            raise _Reject(line, f"YAML tags ({tag}) are not allowed")
        if depth > MAX_DEPTH:
            raise _Reject(line, f"nested more than {MAX_DEPTH} levels deep")
        self.lines[path] = line
        if isinstance(event, yaml.ScalarEvent):
            return _scalar(event)
        if isinstance(event, yaml.SequenceStartEvent):
            items: list[Any] = []
            while not isinstance(event := next(self._events), yaml.SequenceEndEvent):
                items.append(self._node(event, (*path, len(items)), depth + 1))
            return items
        mapping: dict[str, Any] = {}
        while not isinstance(event := next(self._events), yaml.MappingEndEvent):
            key_line = _line(event)
            if not isinstance(event, yaml.ScalarEvent) or event.tag is not None or event.anchor:
                raise _Reject(key_line, "mapping keys must be plain strings")
            key = event.value
            if key in mapping:
                first = self.lines[(*path, key)]
                raise _Reject(key_line, f"duplicate key {key!r} (first defined on line {first})")
            mapping[key] = None
            mapping[key] = self._node(next(self._events), (*path, key), depth + 1)
            self.lines[(*path, key)] = key_line
        return mapping


# A plain scalar that starts with a letter and is none of YAML 1.1's boolean or null words is a string: host names
# and ids, nearly every scalar of a document, skip the resolver's regular expressions.
_PLAIN_STRING = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_NOT_STRINGS = frozenset(["y", "yes", "n", "no", "true", "false", "on", "off", "null"])


def _scalar(event: yaml.ScalarEvent) -> Any:
    value = event.value
    if not event.implicit[0]:  # quoted: always a string
        return value
    if _PLAIN_STRING.fullmatch(value) and value.lower() not in _NOT_STRINGS:
        return value
    tag = _RESOLVER.resolve(yaml.ScalarNode, event.value, (True, False))  # type: ignore[no-untyped-call]
    if tag in (_STR_TAG, _TIMESTAMP_TAG):  # timestamps are parsed by the schema, with their offsets kept
        return event.value
    return _CONSTRUCTOR.yaml_constructors[tag](_CONSTRUCTOR, yaml.ScalarNode(tag, event.value))


def _load_yaml(text: str) -> tuple[Any, dict[Path, int]]:
    builder = _Builder(iter(yaml.parse(text, Loader=_Loader)))
    try:
        return builder.build(), builder.lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = int(mark.line) + 1 if mark is not None else None
        raise _Reject(line, f"not valid YAML: {exc.problem or exc.context}") from exc
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, other control characters)
        line = text.count("\n", 0, exc.position) + 1 if isinstance(exc.position, int) else None
        character = f"#x{exc.character:04x}" if isinstance(exc.character, int) else "character"
        raise _Reject(line, f"not valid YAML: unacceptable {character} ({exc.reason})") from exc
    except yaml.YAMLError as exc:
        raise _Reject(None, f"not valid YAML: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc


# --- The schema -----------------------------------------------------------------------------------------------------

_KIND = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}


def schema() -> dict[str, Any]:
    """The JSON Schema of a placement document, as shipped in the package."""
    text = files("airflow_placement").joinpath("schema/placement.schema.json").read_text(encoding="utf-8")
    result: dict[str, Any] = json.loads(text)
    return result


_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")


def _pattern_to_end(validator: Any, pattern: str, instance: Any, subschema: Any) -> Iterator[ValidationError]:
    """``pattern`` with ``$`` meaning the end of the string, as in ECMA-262 and fastjsonschema.

    Python's ``$`` also matches before a final newline, so jsonschema alone would accept ``"server-1\\n"``.
    """
    if validator.is_type(instance, "string") and not re.search(_UNESCAPED_DOLLAR.sub(r"\\Z", pattern), instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


@cache
def _validator() -> Draft202012Validator:
    """The reference validator: slower, but reports every problem with its path."""
    strict = validators.extend(Draft202012Validator, {"pattern": _pattern_to_end})
    validator: Draft202012Validator = strict(schema())
    return validator


@cache
def _fast_validator() -> Any:
    """The same schema compiled to Python: what accepts a valid document quickly."""
    return fastjsonschema.compile(schema())


def _kind(value: Any) -> str:
    return "nothing (null)" if value is None else _KIND.get(type(value), type(value).__name__)


def _where(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "document"


def _explain(error: ValidationError, lines: dict[Path, int]) -> Problem:
    path: Path = tuple(error.absolute_path)
    value = error.instance
    line = next((lines[path[:n]] for n in range(len(path), -1, -1) if path[:n] in lines), None)
    where = _where(path)
    schema_path = list(error.absolute_schema_path)
    validator = error.validator
    if validator == "additionalProperties":
        unknown = sorted(set(value) - set(error.schema.get("properties", {})))
        allowed = ", ".join(error.schema.get("properties", {}))
        line = lines.get((*path, unknown[0]), line)
        return Problem(line, f"{where}: unknown key {unknown[0]!r} (allowed: {allowed})")
    if "propertyNames" in schema_path:
        kind = "task id" if path and path[-1] == "tasks" else "DAG id or pattern"
        return Problem(lines.get((*path, value), line), f"{where}: {value!r} is not a valid {kind}")
    if validator == "required":
        return Problem(line, f"{where}: missing required key {error.message.split()[0]}")
    if validator == "minProperties":
        return Problem(line, f"{where}: must not be empty")
    if validator == "minItems":
        return Problem(line, f"{where}: must list at least one handover")
    if validator == "type":
        expected = error.schema.get("type")
        if path and path[-1] in ("tasks", "handover"):
            expected_text = "a mapping of task id to owner" if path[-1] == "tasks" else "a list of handovers"
        elif path and "else" in schema_path:
            expected_text = "a host name or a mapping with 'owner'"
        else:
            expected_text = {"object": "a mapping", "array": "a list", "string": "a string"}.get(
                str(expected), str(expected)
            )
        if not path:
            hint = " (this looks like an HTML page, not YAML)" if _looks_like_html(value) else ""
            return Problem(line, f"the document must be a mapping of DAG id to owner, not {_kind(value)}{hint}")
        return Problem(line, f"{where}: expected {expected_text}, got {_kind(value)}")
    if error.schema == _validator().schema["$defs"]["timestamp"]:
        return Problem(line, f"{where}: {value!r} is not a date and time with a UTC offset, e.g. 2026-12-01T06:00:00Z")
    if path == (META_KEY, "signature"):
        return Problem(line, f"{where}: not an Ed25519 signature (base64 of 64 bytes)")
    if validator in ("minLength", "pattern", "maxLength") and isinstance(value, str):
        if not value.strip():
            return Problem(line, f"{where}: the owner is empty")
        return Problem(line, f"{where}: {value!r} is not a valid host name")
    return Problem(line, f"{where}: {error.message}")


def _looks_like_html(value: Any) -> bool:
    return isinstance(value, str) and value.lstrip()[:15].lower().startswith(("<!doctype", "<html", "<head", "<body"))


def _schema_problems(data: Any, lines: dict[Path, int]) -> list[Problem]:
    errors = sorted(_validator().iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    unique = {p.message: p for p in (_explain(e, lines) for e in errors)}
    return sorted(unique.values(), key=lambda p: (p.line or 0, p.message))[:_MAX_REPORTED_PROBLEMS]


# --- From data to the model ------------------------------------------------------------------------------------------


def _schedule(spec: Any, path: Path, lines: dict[Path, int], problems: list[Problem]) -> OwnerSchedule:
    if isinstance(spec, str):
        return OwnerSchedule(normalize_host(spec))
    handovers: list[Handover] = []
    for index, item in enumerate(spec.get("handover", ())):
        at = _date(item["at"], (*path, "handover", index, "at"), lines, problems)
        if at is None:
            continue
        if handovers and at <= handovers[-1].at:
            problems.append(
                Problem(
                    lines.get((*path, "handover", index)),
                    f"{_where((*path, 'handover', index))}: handovers must be in increasing order of 'at'",
                )
            )
        handovers.append(Handover(at, normalize_host(item["owner"])))
    return OwnerSchedule(normalize_host(spec["owner"]), tuple(handovers))


def parse_document(body: bytes | str, origin: str = "<document>", max_bytes: int = DEFAULT_MAX_BYTES) -> Placement:
    """Parse and validate a placement document.

    :param body: the document as fetched.
    :param origin: where it came from, used in error messages.
    :param max_bytes: larger bodies are rejected before they are parsed.
    :raises DocumentError: when the document is not valid, naming the line of each problem found.
    """
    raw = body.encode("utf-8") if isinstance(body, str) else body
    if len(raw) > max_bytes:
        raise DocumentError(origin, [Problem(None, f"the document is {len(raw)} bytes, over the limit of {max_bytes}")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(origin, [Problem(None, f"the document is not UTF-8 text ({exc.reason})")]) from None
    if _looks_like_html(text):
        raise DocumentError(origin, [Problem(1, "this is an HTML page, not a placement document")])
    try:
        data, lines = _load_yaml(text)
    except _Reject as rejected:
        raise DocumentError(origin, [rejected.problem]) from None

    try:
        _fast_validator()(data)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise DocumentError(origin, _schema_problems(data, lines) or [Problem(None, exc.message)]) from None

    problems: list[Problem] = []
    entries = []
    signed = signed_content(data) if META_KEY in data else b""
    meta_spec = data.pop(META_KEY, None)
    meta = _meta(meta_spec, lines, problems, signed)
    for key, spec in data.items():
        tasks: dict[str, OwnerSchedule] = {}
        if isinstance(spec, dict):
            for task_id, task_spec in spec.get("tasks", {}).items():
                tasks[task_id] = _schedule(task_spec, (key, "tasks", task_id), lines, problems)
        entries.append(Entry(key, lines[(key,)], _schedule(spec, (key,), lines, problems), tasks))
    if problems:
        raise DocumentError(origin, problems[:_MAX_REPORTED_PROBLEMS])
    return Placement(tuple(entries), _revision(data, meta_spec), meta)


def _date(value: str, path: Path, lines: dict[Path, int], problems: list[Problem]) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError as exc:  # the schema checks the shape, not that the date exists
        problems.append(Problem(lines.get(path), f"{_where(path)}: {value!r} is not a valid date ({exc})"))
        return None


def _meta(spec: Any, lines: dict[Path, int], problems: list[Problem], signed: bytes) -> Meta | None:
    if spec is None:
        return None
    issued = _date(spec["issued"], (META_KEY, "issued"), lines, problems)
    renewed = _date(spec["renewed"], (META_KEY, "renewed"), lines, problems) if "renewed" in spec else None
    if issued is None:
        return None
    if renewed is not None and renewed < issued:
        problems.append(Problem(lines.get((META_KEY, "renewed")), f"{META_KEY}.renewed: earlier than issued"))
    return Meta(int(spec["serial"]), issued, renewed, spec.get("signature"), signed)


def signed_content(data: dict[str, Any]) -> bytes:
    """What a publisher's signature covers: the document as parsed, ``@meta.signature`` left out, as compact JSON in
    the document's order (the order of patterns decides ties, so it is signed too). The renewal time is covered: a
    renewed copy is signed again."""
    unsigned = {
        key: {k: v for k, v in value.items() if k != "signature"} if key == META_KEY else value
        for key, value in data.items()
    }
    return json.dumps(unsigned, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _revision(data: dict[str, Any], meta: dict[str, Any] | None) -> str:
    """A digest of the document's content, ``@meta`` included but its renewal time and signature not: however it is
    written (YAML layout, comments), a renewed copy has the revision of the copy first issued, and other content
    another one."""
    issued = {k: v for k, v in meta.items() if k not in ("renewed", "signature")} if meta is not None else None
    canonical = json.dumps([issued, data], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]
