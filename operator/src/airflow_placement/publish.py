"""The publisher's side of the lease: serials, handovers scheduled the lease ahead, and one publisher at a time.

The publisher keeps its state in one directory (on the Ansible controller, next to the inventory):

- ``published.yaml``: the last document whose distribution finished: what every server holds or will fetch.
- ``serial``: the highest serial ever issued, written before a document leaves, so serials never go back even when
  a distribution fails half way.
- ``publishing.json``: present while a publish is under way (from :meth:`Publisher.begin` to :meth:`commit` or
  :meth:`abort`); a second publisher waits for it or stops.
- ``pending.yaml``: the document being distributed.

A new document is *spliced* onto the published one: for every schedule (an entry, or a task override) runs dated
before the cut keep the owner the published document gives them, and runs from the cut on get the desired owner.
The cut is ``now + lead`` (the longest maximum staleness plus the clock-skew margin, so every server's copy of the
old document has expired or been replaced by then), rounded up to a whole second. Only a forced failover of a named
failed server cuts earlier, and only for the runs that server owns: those dated from ``since`` (the operator's word
that it ran none of them), or else from now plus twice the clock skew (its clock may be the skew ahead, and it runs
runs dated up to the skew ahead of its clock);
a handover to another server still to come stays where it is.

While a publish is under way the published document is not renewed, and a document given up with ``abort`` is
followed by a renewal under a new serial. A forced failover cannot be given up: a server may already run by it.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import filelock
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from airflow_placement.document import (
    _GLOB_CHARS,
    _WILDCARDS,
    META_KEY,
    DocumentError,
    Entry,
    Handover,
    Meta,
    OwnerSchedule,
    Placement,
    normalize_host,
    parse_document,
)
from airflow_placement.files import replace_file
from airflow_placement.signing import SignatureError, sign, verify

HEADER = (
    "# Placement document published by airflow-placement (the dag_placement role): change the inventory and run\n"
    "# placement.yml, or run failover.yml. A handover {at: T, owner: B} gives B the runs whose logical date is T or\n"
    "# later. @meta is the publisher's: a serial that only grows, and when it issued and last renewed this copy.\n"
)
_RENEWED_LINE = re.compile(r'^  renewed: "[^"\n]*"$', re.MULTILINE)
_SIGNATURE_LINE = re.compile(r'^  signature: "[^"\n]*"\n', re.MULTILINE)
_SERIAL_LINE = re.compile(r"^  serial: [0-9]+$", re.MULTILINE)


class PublishError(RuntimeError):
    """A publish was refused or could not proceed; ``str()`` is one line."""


@dataclass(frozen=True)
class Change:
    """One schedule whose owner changes: from ``at`` on (None: for runs of every date) ``old`` becomes ``new``."""

    key: str
    task: str | None
    old: str | None
    new: str
    at: datetime | None
    forced: bool

    def describe(self, now: datetime) -> str:
        what = self.key + (f" task {self.task}" if self.task else "")
        if self.old is None:
            return f"{what}: newly placed on {self.new}, at once (nothing owned it before)"
        if self.at is None:
            return f"{what}: {self.old} -> {self.new} for runs of every logical date, at once"
        when = f"runs dated from {_format(self.at)}"
        if self.forced:
            return f"{what}: {self.old} -> {self.new} for {when} (forced)"
        return f"{what}: {self.old} -> {self.new} for {when} (in {(self.at - now).total_seconds():.0f} s)"


@dataclass
class Plan:
    """What a publish would put in the document, and why."""

    data: dict[str, Any]
    changes: list[Change] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def pending(self, now: datetime) -> list[str]:
        """Every handover of the new document still to take effect, one line each."""
        lines = []
        for key, spec in self.data.items():
            tasks = (spec.get("tasks") or {}) if isinstance(spec, dict) else {}
            schedules = [(None, spec), *tasks.items()]
            for task, sched in schedules:
                for handover in sched.get("handover", []) if isinstance(sched, dict) else []:
                    if _parse_time(handover["at"]) > now:
                        what = key + (f" task {task}" if task else "")
                        lines.append(f"{what}: to {handover['owner']} for runs dated from {handover['at']}")
        return lines


# --- Splicing -------------------------------------------------------------------------------------------------------


def _format(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("z", "Z"))


def ceil_second(moment: datetime) -> datetime:
    """``moment`` rounded up to a whole second: a handover written without fractions never comes early."""
    whole = moment.replace(microsecond=0)
    return whole if whole == moment else whole + timedelta(seconds=1)


def simplify(schedule: OwnerSchedule) -> OwnerSchedule:
    """The same schedule without handovers to the owner that already owns the runs."""
    kept: list[Handover] = []
    current = schedule.owner
    for handover in schedule.handovers:
        if handover.owner != current:
            kept.append(handover)
            current = handover.owner
    return OwnerSchedule(schedule.owner, tuple(kept))


def splice(old: OwnerSchedule | None, desired: OwnerSchedule, cut: datetime | None) -> OwnerSchedule:
    """Runs dated before ``cut`` keep ``old``'s owner, runs from ``cut`` on get ``desired``'s.

    ``cut`` None (or no ``old``) means ``desired`` for runs of every date.
    """
    if old is None or cut is None:
        return simplify(desired)
    handovers = [h for h in old.handovers if h.at < cut]
    handovers.append(Handover(cut, desired.owner_at(cut)))
    handovers += [h for h in desired.handovers if h.at > cut]
    return simplify(OwnerSchedule(old.owner, tuple(handovers)))


def forced_splice(
    old: OwnerSchedule, desired: OwnerSchedule, failed: str, start: datetime | None, cut: datetime
) -> OwnerSchedule:
    """A forced failover: the runs ``failed`` owns, dated from ``start`` on (None: of every date), get ``desired``'s
    owner at once; every other server's runs keep their owner until ``cut`` (so a handover still to come to another
    server stays), and from ``cut`` on every run gets ``desired``'s owner, as in :func:`splice`."""

    def owner(when: datetime) -> str:
        if when >= cut:
            return desired.owner_at(when)
        if (start is not None and when < start) or old.owner_at(when) != failed:
            return old.owner_at(when)
        return desired.owner_at(when)

    moments = sorted({cut, *(h.at for h in old.handovers), *(h.at for h in desired.handovers)})
    if start is not None:
        moments = sorted({start, *moments})
    handovers = tuple(Handover(moment, owner(moment)) for moment in moments)
    return simplify(OwnerSchedule(owner(moments[0] - timedelta(seconds=1)), handovers))


def _segment_start(schedule: OwnerSchedule, host: str, now: datetime) -> tuple[bool, datetime | None]:
    """Whether ``host`` owns runs dated ``now`` or later, and from when (None: from the beginning)."""
    if schedule.owner_at(now) == host:
        started = [h.at for h in schedule.handovers if h.at <= now]
        return True, (started[-1] if started else None)
    later = [h.at for h in schedule.handovers if h.at > now and h.owner == host]
    return (True, later[0]) if later else (False, None)


@dataclass(frozen=True)
class _Rules:
    now: datetime
    cut: datetime  # the earliest handover: now + lead
    failed: str | None
    forced_from: datetime  # a forced failover moves the failed server's runs dated from then on


def _cut(old: OwnerSchedule | None, rules: _Rules) -> tuple[datetime | None, bool]:
    """Where to splice a desired schedule onto ``old``, and whether that is a forced cut."""
    if old is None:
        return None, False
    if rules.failed is not None:
        owns, start = _segment_start(old, rules.failed, rules.now)
        if owns:
            return rules.forced_from if start is None else max(start, rules.forced_from), True
    return rules.cut, False


def _spliced(
    old: OwnerSchedule | None, desired: OwnerSchedule, cut: datetime | None, forced: bool, rules: _Rules
) -> OwnerSchedule:
    if old is None or not forced or rules.failed is None:
        return splice(old, desired, cut)
    return forced_splice(old, desired, rules.failed, cut, rules.cut)


def _too_soon(old: OwnerSchedule | None, desired: OwnerSchedule, rules: _Rules, where: str) -> str | None:
    """A handover written in the desired document that would take effect less than the lease ahead."""
    if old is None:
        return None
    for handover in desired.handovers:
        if handover.at < rules.cut and old.owner_at(handover.at) != handover.owner:
            return (
                f"{where}: the handover to {handover.owner} at {_format(handover.at)} would take effect less than the "
                f"lease ahead (the earliest is {_format(rules.cut)}); schedule it later, or force a failover"
            )
    return None


def _schedule_data(schedule: OwnerSchedule) -> str | dict[str, Any]:
    if not schedule.handovers:
        return schedule.owner
    return {
        "owner": schedule.owner,
        "handover": [{"at": _format(h.at), "owner": h.owner} for h in schedule.handovers],
    }


def _entry_data(schedule: OwnerSchedule, tasks: dict[str, OwnerSchedule]) -> str | dict[str, Any]:
    data = _schedule_data(schedule)
    if not tasks:
        return data
    spec: dict[str, Any] = {"owner": data} if isinstance(data, str) else dict(data)
    spec["tasks"] = {task: _schedule_data(sched) for task, sched in tasks.items()}
    return spec


def _change(  # noqa: PLR0917
    key: str,
    task: str | None,
    old: OwnerSchedule | None,
    new: OwnerSchedule,
    cut: datetime | None,
    forced: bool,
    now: datetime,
) -> Change | None:
    if old is not None and old == new:
        return None
    if old is None:
        return Change(key, task, None, new.owner_at(now), None, False)
    probe = cut if cut is not None else now
    return Change(key, task, old.owner_at(probe), new.owner_at(probe), cut, forced)


def plan(
    published: Placement | None,
    desired: Placement,
    *,
    now: datetime,
    lead: float,
    failed: str | None = None,
    since: datetime | None = None,
    clock_skew: float = 0.0,
) -> Plan:
    """The document that moves ``published`` towards ``desired`` without two servers ever owning the same run.

    :param lead: seconds from now to the earliest handover: the longest maximum staleness plus the clock skew.
    :param failed: a server known to be down: its runs move at once (a forced failover).
    :param since: with ``failed``: the move covers runs dated from ``since`` on (the operator asserts the failed
        server ran none of them); without it, runs dated from ``now + 2 * clock_skew`` on (by its own clock, up to
        the skew ahead, the failed server may have run any run dated up to the skew ahead of it).
    :param clock_skew: seconds any two clocks may differ by.
    """
    if not math.isfinite(lead) or lead < 0:
        raise PublishError(f"the lead time must be a finite number of seconds >= 0, not {lead!r}")
    if since is not None and since > now:
        raise PublishError(f"since ({_format(since)}) is in the future")
    if not math.isfinite(clock_skew) or clock_skew < 0:
        raise PublishError(f"the clock skew must be a finite number of seconds >= 0, not {clock_skew!r}")
    # Without since: the failed server, its clock up to the skew ahead, may have run every run dated up to the skew
    # ahead of its clock (decide()'s horizon), so before now + twice the skew; with since, the operator asserts it
    # ran nothing dated from then on (a fraction rounds up: the handover is written in whole seconds).
    forced_from = ceil_second(since if since is not None else now + timedelta(seconds=2 * clock_skew))
    rules = _Rules(
        now, ceil_second(now + timedelta(seconds=lead)), normalize_host(failed) if failed else None, forced_from
    )
    result = Plan({})

    def place(key: str, old_entry: Entry | None, new_entry: Entry) -> None:
        old_sched = old_entry.schedule if old_entry else None
        cut, forced = _cut(old_sched, rules)
        if not forced and (problem := _too_soon(old_sched, new_entry.schedule, rules, key)):
            result.problems.append(problem)
        schedule = _spliced(old_sched, new_entry.schedule, cut, forced, rules)
        if change := _change(key, None, old_sched, schedule, cut, forced, now):
            result.changes.append(change)
        tasks: dict[str, OwnerSchedule] = {}
        task_ids = list(new_entry.tasks) + [
            t for t in (old_entry.tasks if old_entry else {}) if t not in new_entry.tasks
        ]
        for task in task_ids:
            old_task = old_entry.schedule_for(task)[0] if old_entry else None
            new_task = new_entry.schedule_for(task)[0]
            where = f"{key} task {task}"
            task_cut, task_forced = _cut(old_task, rules)
            if not task_forced and (problem := _too_soon(old_task, new_task, rules, where)):
                result.problems.append(problem)
            spliced = _spliced(old_task, new_task, task_cut, task_forced, rules)
            if spliced != schedule:
                tasks[task] = spliced
            if change := _change(key, task, old_task, spliced, task_cut, task_forced, now):
                result.changes.append(change)
        result.data[key] = _entry_data(schedule, tasks)

    by_key = {e.key: e for e in published.entries} if published else {}
    for entry in desired.entries:
        # an entry of the published document by its key (a pattern's own text need not match the pattern)
        place(entry.key, by_key.get(entry.key) or (published.entry_for(entry.key) if published else None), entry)
    if published is not None:
        for entry in published.entries:
            if entry.key in result.data:
                continue
            successor = desired.entry_for(entry.key)
            if successor is None:
                result.changes.append(Change(entry.key, None, entry.schedule.owner_at(now), "nobody", None, False))
                continue  # a DAG that no entry matches runs nowhere: dropping it can only stop runs
            place(entry.key, entry, Entry(entry.key, entry.line, successor.schedule, successor.tasks))
        result.problems += pattern_problems(published, desired, list(result.data))
        result.problems += order_problems(published, list(result.data))
    return result


# --- Patterns -------------------------------------------------------------------------------------------------------
# A handover is scheduled per entry, and a new entry is spliced onto the entry the published document gives its own
# text. For a DAG id, a pattern added, dropped or reordered can change which entry decides it, and so its owner at
# once. The checks below refuse those changes unless no DAG id can be affected (conservatively: two patterns may
# match a common DAG id unless their literal starts or ends exclude it).


def _literal_ends(pattern: str) -> tuple[str, str]:
    spans = [m.span() for m in _WILDCARDS.finditer(pattern)]
    if not spans:
        return pattern, pattern
    return pattern[: spans[0][0]], pattern[spans[-1][1] :]


def may_overlap(first: str, second: str) -> bool:
    """Whether some DAG id might match both patterns (False only when none can)."""
    (start_a, end_a), (start_b, end_b) = _literal_ends(first), _literal_ends(second)
    starts = start_a.startswith(start_b) or start_b.startswith(start_a)
    ends = end_a.endswith(end_b) or end_b.endswith(end_a)
    return starts and ends


def contains(outer: str, inner: str) -> bool:
    """Whether every DAG id ``inner`` matches, ``outer`` matches too (False when that cannot be told simply): true
    when ``outer`` has no wildcard but ``*`` and matches ``inner``'s own text."""
    if _WILDCARDS.sub("", outer) != outer.replace("*", "") or any(c in outer.replace("*", "") for c in "?[]!"):
        return False
    return fnmatch.fnmatchcase(inner, outer)


def _same_owners(first: Entry | None, second: Entry | None) -> bool:
    if first is None or second is None:
        return first is second
    return first.schedule == second.schedule and first.tasks == second.tasks


def _rank(keys: list[str]) -> dict[str, int]:
    """Where each pattern of a document with ``keys`` (in order) is tried: most literal characters first."""
    patterns = [k for k in keys if _GLOB_CHARS.search(k)]
    return {k: i for i, k in enumerate(sorted(patterns, key=lambda k: (-len(_WILDCARDS.sub("", k)), keys.index(k))))}


def pattern_problems(published: Placement, desired: Placement, keys: list[str]) -> list[str]:
    """Pattern changes that could give a DAG another owner at once (see the comment above); ``keys``: the new
    document's keys in order."""
    problems = []
    old_patterns = [e for e in published.entries if e.is_pattern]
    new_rank = _rank(keys)
    old_rank = _rank([e.key for e in published.entries])
    advice = "publish explicit entries for the DAGs concerned first, or change one pattern at a time"
    for pattern in (e for e in desired.entries if e.is_pattern):
        if pattern.key in old_rank or pattern.key not in new_rank:
            continue
        base = published.entry_for(pattern.key)
        for other in old_patterns:
            if other is base or _same_owners(other, base) or not may_overlap(pattern.key, other.key):
                continue
            if base is not None and contains(base.key, pattern.key) and old_rank[base.key] < old_rank[other.key]:
                continue  # every DAG id the new pattern matches, base matches too, and base is tried first
            if other.key in new_rank and new_rank[other.key] < new_rank[pattern.key]:
                continue  # it still decides the DAG ids both match
            problems.append(
                f"the new pattern {pattern.key!r} may match DAGs that {other.key!r} decides in the published document "
                f"and would take them at once; {advice}"
            )
    old_entries = {e.key: e for e in published.entries}
    for dropped in (e for e in old_patterns if desired.entry_for(e.key) is None):
        # every pattern of the new document, kept ones included: until its handovers, each carries the owners the
        # published document gives it (by its key if it had one, else by its text)
        for key in new_rank:
            carried = old_entries.get(key) or published.entry_for(key)
            if key in old_rank and old_rank[key] < old_rank[dropped.key]:
                continue  # it decided the DAG ids both match before too
            if may_overlap(dropped.key, key) and not _same_owners(dropped, carried):
                problems.append(
                    f"dropping the pattern {dropped.key!r} may give DAGs it decides to {key!r} at once; " + advice
                )
    return problems


def order_problems(published: Placement, keys: list[str]) -> list[str]:
    """Patterns of the published document that the new document, its keys in ``keys`` order, ranks the other way
    round (equally specific patterns are tried as written), where a DAG id both match would change owner at once."""
    old = {e.key: e for e in published.entries}
    old_rank = _rank([e.key for e in published.entries])
    kept = [k for k in keys if k in old_rank]
    ranked = sorted(kept, key=lambda k: (-len(_WILDCARDS.sub("", k)), kept.index(k)))
    problems = []
    for later, key in enumerate(ranked):
        for earlier in ranked[:later]:
            swapped = old_rank[earlier] > old_rank[key]
            if swapped and may_overlap(earlier, key) and not _same_owners(old[earlier], old[key]):
                problems.append(
                    f"the patterns {earlier!r} and {key!r} would be tried in the other order, which may move DAGs "
                    "both match at once; keep their order (equally specific patterns are tried as written)"
                )
    return problems


def render(data: dict[str, Any], meta: Meta, signing_key: Ed25519PrivateKey | None = None) -> str:
    """The document's text: the header, ``@meta`` in a fixed form (so a renewal changes one line), the entries.

    :param signing_key: the publisher's key: with one, ``@meta`` carries its signature (see
        :mod:`airflow_placement.signing`).
    """
    lines = [
        HEADER.rstrip("\n"),
        f'"{META_KEY}":',
        f"  serial: {meta.serial}",
        f'  issued: "{_format(meta.issued)}"',
        f'  renewed: "{_format(meta.renewed or meta.issued)}"',
    ]
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=1000) if data else ""
    text = "\n".join(lines) + "\n" + body
    return _signed(text, signing_key, "the new document") if signing_key else text


def _signed(text: str, signing_key: Ed25519PrivateKey | None, origin: str) -> str:
    """``text`` with its ``@meta.signature`` line made for ``signing_key`` (after the renewal line), or without one.

    :raises PublishError: without a key, when ``text`` was signed: it would go out with a signature that no longer
        matches.
    """
    unsigned, count = _SIGNATURE_LINE.subn("", text)
    if signing_key is None:
        if count:
            raise PublishError(f"{origin} is signed: give the signing key (--signing-key) to renew or publish it")
        return unsigned
    meta = parse_document(unsigned, origin=origin).meta
    assert meta is not None
    line = f'  signature: "{sign(meta.signed, signing_key)}"'
    signed = _RENEWED_LINE.sub(lambda match: f"{match.group(0)}\n{line}", unsigned, count=1)
    try:
        verify(parse_document(signed, origin=origin).meta, signing_key.public_key())
    except SignatureError as exc:  # pragma: no cover - a signature that does not verify is a bug of this module
        raise PublishError(f"{origin}: {exc}") from None
    return signed


# --- The publisher's state --------------------------------------------------------------------------------------------


class Publisher:
    """The publisher's state directory (see the module docstring)."""

    def __init__(self, state_dir: Path, signing_key: Ed25519PrivateKey | None = None) -> None:
        """:param signing_key: the publisher's key: every document it issues or renews is signed with it."""
        self.dir = state_dir
        self.signing_key = signing_key
        self.published_path = state_dir / "published.yaml"
        self.pending_path = state_dir / "pending.yaml"
        self.serial_path = state_dir / "serial"
        self.publishing_path = state_dir / "publishing.json"
        self._lock = filelock.FileLock(state_dir / ".state.lock")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with self._lock.acquire(timeout=60):
            yield

    def published(self) -> Placement | None:
        try:
            text = self.published_path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return parse_document(text, origin=str(self.published_path))
        except DocumentError as exc:
            raise PublishError(f"the last published document is not valid: {exc}") from None

    def _issued_serial(self) -> int:
        try:
            text = self.serial_path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return 0
        if not text.isdigit():
            raise PublishError(f"{self.serial_path} holds {text[:40]!r}, not a serial")
        return int(text)

    def holder(self) -> str | None:
        """Who is publishing now, in one line; None when nobody is."""
        try:
            info = json.loads(self.publishing_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return f"an unreadable {self.publishing_path}"
        what = f"serial {info['serial']}" if info.get("serial") else "no serial issued yet"
        return f"{what}, by pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"

    def acquire(self, *, wait: float = 0.0, now: datetime | None = None) -> str:
        """Take the publishing lock (waiting up to ``wait`` seconds for another publish to end); return its token.

        Take it before reading anything a publish depends on (the inventory's record of failed servers), and keep
        it until that record is written: :meth:`begin` with the token, then :meth:`commit` or :meth:`abort`.

        :raises PublishError: when another publish is still under way after ``wait`` seconds.
        """
        deadline = time.monotonic() + wait
        while True:
            with self._locked():
                holder = self.holder()
                if holder is None:
                    token = secrets.token_hex(8)
                    self._write_holder(token, None, now or datetime.now(UTC))
                    return token
            if time.monotonic() >= deadline:
                raise PublishError(
                    f"another publish is under way ({holder}); it ends with publish-commit or publish-abort. If that "
                    f"run is gone, run: airflow-placement publish-abort --state-dir {self.dir}"
                )
            time.sleep(0.5)

    def _write_holder(self, token: str, serial: int | None, now: datetime, *, forced: bool = False) -> None:
        info = {
            "token": token,
            "serial": serial,
            "forced": forced,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": _format(now),
        }
        replace_file(self.publishing_path, json.dumps(info), mode=0o644)

    def _token(self) -> str | None:
        try:
            token = json.loads(self.publishing_path.read_text(encoding="utf-8")).get("token")
        except (OSError, ValueError, AttributeError):
            return None
        return token if isinstance(token, str) else None

    def begin(
        self,
        desired: Placement,
        *,
        lead: float,
        failed: str | None = None,
        since: datetime | None = None,
        clock_skew: float = 0.0,
        check: bool = False,
        wait: float = 0.0,
        now: datetime | None = None,
        baseline: Placement | None = None,
        token: str | None = None,
    ) -> tuple[str, Plan]:
        """Plan the next document and, unless ``check``, issue it as pending under the publishing lock.

        :param baseline: what the servers hold when this publisher has published nothing yet (e.g. a document
            published by other means): changes from it are scheduled like any other.
        :param token: the lock taken with :meth:`acquire`; without one the lock is taken here (``wait``).
        :returns: the document's text and the plan.
        :raises PublishError: when the lock is held by another publish, or the plan is refused.
        """
        now = now or datetime.now(UTC)
        issue = partial(
            self._issue,
            desired,
            lead=lead,
            failed=failed,
            since=since,
            clock_skew=clock_skew,
            now=now,
            baseline=baseline,
        )
        if check:
            with self._locked():
                return issue(check=True)
        if token is None:
            token = self.acquire(wait=wait, now=now)
        with self._locked():
            if self._token() != token:
                raise PublishError(
                    f"this run does not hold the publishing lock ({self.holder() or 'nobody does'}); take it with "
                    "publish-lock first"
                )
            try:
                return issue(check=False, token=token)
            except Exception:
                if self.pending_path.exists():
                    raise
                self.publishing_path.unlink(missing_ok=True)  # nothing was issued: the lock goes with the attempt
                raise

    def _issue(
        self,
        desired: Placement,
        *,
        lead: float,
        failed: str | None,
        since: datetime | None,
        clock_skew: float,
        check: bool,
        now: datetime,
        baseline: Placement | None,
        token: str | None = None,
    ) -> tuple[str, Plan]:
        published = self.published() or baseline
        the_plan = plan(published, desired, now=now, lead=lead, failed=failed, since=since, clock_skew=clock_skew)
        if the_plan.problems:
            more = len(the_plan.problems) - 1
            raise PublishError(the_plan.problems[0] + (f" (and {more} more)" if more else ""))
        serial = max(self._issued_serial(), published.meta.serial if published and published.meta else 0) + 1
        issued = now.replace(microsecond=0)
        text = render(the_plan.data, Meta(serial, issued, issued), self.signing_key)
        parse_document(text, origin="the new document")  # never issue what a server would refuse
        if check:
            return text, the_plan
        assert token is not None
        replace_file(self.serial_path, f"{serial}\n", mode=0o644)
        replace_file(self.pending_path, text, mode=0o644)
        self._write_holder(token, serial, now, forced=failed is not None)
        return text, the_plan

    def commit(self) -> int:
        """The pending document was distributed: it becomes the published one. Returns its serial."""
        with self._locked():
            if not self.pending_path.exists():
                raise PublishError(f"nothing to commit: no {self.pending_path}")
            serial = parse_document(self.pending_path.read_bytes(), origin=str(self.pending_path)).meta
            os.replace(self.pending_path, self.published_path)
            self.publishing_path.unlink(missing_ok=True)
            return serial.serial if serial else 0

    def abort(self) -> int | None:
        """The distribution failed or was given up: release the lock. The serial stays used, and the next renewal
        re-issues the published document under a new one (a server that got the given-up copy takes it).

        A forced failover cannot be given up: a server may already run the failed server's runs by it, and taking
        them back would let the failed server's runs run twice once it returns. Its document becomes the published
        one instead, as if committed, and its serial is returned (None for anything else).
        """
        with self._locked():
            try:
                forced = bool(json.loads(self.publishing_path.read_text(encoding="utf-8")).get("forced"))
            except (OSError, ValueError, AttributeError):
                forced = False
            if forced and self.pending_path.exists():
                meta = parse_document(self.pending_path.read_bytes(), origin=str(self.pending_path)).meta
                os.replace(self.pending_path, self.published_path)
                self.publishing_path.unlink(missing_ok=True)
                return meta.serial if meta else 0
            self.pending_path.unlink(missing_ok=True)
            self.publishing_path.unlink(missing_ok=True)
            return None

    def renew(self, now: datetime | None = None) -> str:
        """The published document with a new renewal time (same content). Returns its text.

        Its serial stays, unless a later serial was issued and given up (:meth:`abort`): then it is re-issued under
        a new serial, so that a server holding the given-up copy accepts it.

        :raises PublishError: while a publish is under way: renewing the old document then would let a server that
            misses the new one trust the old one past the handovers the new one schedules.
        """
        now = (now or datetime.now(UTC)).replace(microsecond=0)
        with self._locked():
            if self.pending_path.exists():
                raise PublishError(
                    f"a publish is under way ({self.holder() or 'unknown'}): the published document is renewed again "
                    "once it is committed or aborted"
                )
            try:
                text = self.published_path.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise PublishError(f"nothing to renew: nothing was published yet ({self.published_path})") from None
            before = parse_document(text, origin=str(self.published_path))
            if before.meta is not None and now < before.meta.issued:
                # Issued on a clock ahead of this one (the watchdog's, within the skew): never renewed before issued.
                now = before.meta.issued
            renewed, count = _RENEWED_LINE.subn(f'  renewed: "{_format(now)}"', text, count=1)
            if count != 1:
                raise PublishError(f"{self.published_path} has no renewal line; publish it again")
            serial = before.meta.serial if before.meta else 0
            if (issued := self._issued_serial()) > serial:
                serial = issued + 1
                renewed, count = _SERIAL_LINE.subn(f"  serial: {serial}", renewed, count=1)
                if count != 1:
                    raise PublishError(f"{self.published_path} has no serial line; publish it again")
            after = parse_document(renewed, origin="the renewed document")
            same = after.entries == before.entries and after.meta is not None and after.meta.serial == serial
            if not same or after.meta is None or after.meta.renewed is None:
                raise PublishError(f"renewing {self.published_path} would change its content; publish it again")
            if serial != (before.meta.serial if before.meta else 0):
                replace_file(self.serial_path, f"{serial}\n", mode=0o644)
            renewed = _signed(renewed, self.signing_key, str(self.published_path))
            replace_file(self.published_path, renewed, mode=0o644)
            return renewed
