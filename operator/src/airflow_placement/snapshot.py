"""A validated document compiled into an indexed file, so a new task process decides without parsing it.

Parsing and validating a 10,000-entry document takes tens of milliseconds, and every Airflow task is a new process.
So when a server accepts a document it also writes a snapshot: an SQLite file named after the document's revision,
with one row per entry. A task process opens it read-only and looks up its DAG: the exact key by primary key, else
the patterns in order of specificity. The cost does not grow with the number of exact entries. A snapshot is written
once and never changed (a new revision gets a new file), so readers never see half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import translate
from pathlib import Path
from typing import Any

from airflow_placement.document import Entry, Handover, Meta, OwnerSchedule, Placement, pattern_rank

_SCHEMA = """
CREATE TABLE doc (revision TEXT NOT NULL, serial INTEGER, issued TEXT, renewed TEXT);
CREATE TABLE entries (key TEXT PRIMARY KEY, pattern INTEGER NOT NULL, rank INTEGER NOT NULL, line INTEGER NOT NULL,
                      spec TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX patterns ON entries (pattern, rank);
"""


def _schedule_json(schedule: OwnerSchedule) -> list[Any]:
    return [schedule.owner, [[h.at.isoformat(), h.owner] for h in schedule.handovers]]


def _schedule(data: list[Any]) -> OwnerSchedule:
    return OwnerSchedule(data[0], tuple(Handover(datetime.fromisoformat(at), owner) for at, owner in data[1]))


def write_snapshot(placement: Placement, path: Path) -> None:
    """Compile ``placement`` into ``path`` (atomically: a reader sees all of it or none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".snapshot-", suffix=".tmp")
    os.close(fd)
    try:
        with contextlib.closing(sqlite3.connect(tmp)) as db:
            db.executescript("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;" + _SCHEMA)
            meta = placement.meta
            db.execute(
                "INSERT INTO doc VALUES (?, ?, ?, ?)",
                (
                    placement.revision,
                    meta.serial if meta else None,
                    meta.issued.isoformat() if meta else None,
                    meta.renewed.isoformat() if meta and meta.renewed else None,
                ),
            )
            ranks = {entry.key: rank for rank, entry in enumerate(pattern_rank(placement.entries))}
            db.executemany(
                "INSERT INTO entries VALUES (?, ?, ?, ?, ?)",
                (
                    (
                        entry.key,
                        int(entry.is_pattern),
                        ranks.get(entry.key, 0),
                        entry.line,
                        json.dumps(
                            [_schedule_json(entry.schedule), {t: _schedule_json(s) for t, s in entry.tasks.items()}]
                        ),
                    )
                    for entry in placement.entries
                ),
            )
            db.commit()
        os.chmod(tmp, 0o644)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@dataclass
class SnapshotPlacement:
    """A placement document read from its snapshot, entry by entry (what :func:`decide` needs of a document)."""

    path: Path
    revision: str
    meta: Meta | None
    _db: sqlite3.Connection = field(repr=False)
    _patterns: list[tuple[re.Pattern[str], str, int, str]] | None = field(default=None, repr=False)

    @classmethod
    def open(cls, path: Path) -> SnapshotPlacement:
        """Open the snapshot at ``path``.

        :raises sqlite3.Error, OSError: when it is missing or unreadable (rebuild it from the document).
        """
        if not path.exists():
            raise FileNotFoundError(path)
        db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        row = db.execute("SELECT revision, serial, issued, renewed FROM doc").fetchone()
        if row is None:
            raise sqlite3.DatabaseError(f"{path}: no document in the snapshot")
        revision, serial, issued, renewed = row
        meta = None
        if serial is not None:
            meta = Meta(serial, datetime.fromisoformat(issued), datetime.fromisoformat(renewed) if renewed else None)
        return cls(path, revision, meta, db)

    def entry_for(self, dag_id: str) -> Entry | None:
        row = self._db.execute(
            "SELECT key, line, spec FROM entries WHERE key = ? AND pattern = 0", (dag_id,)
        ).fetchone()
        if row is not None:
            return _entry(*row)
        if self._patterns is None:
            rows = self._db.execute("SELECT key, line, spec FROM entries WHERE pattern = 1 ORDER BY rank").fetchall()
            self._patterns = [(re.compile(translate(key)), key, line, spec) for key, line, spec in rows]
        for regex, key, line, spec in self._patterns:
            if regex.match(dag_id):
                return _entry(key, line, spec)
        return None


def _entry(key: str, line: int, spec: str) -> Entry:
    schedule, tasks = json.loads(spec)
    return Entry(key, line, _schedule(schedule), {task: _schedule(data) for task, data in tasks.items()})
