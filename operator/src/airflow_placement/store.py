"""The per-server store of one source's document: the cache file, its lock, and the serial floor.

Every task process of a server shares the store (a directory mounted into each Airflow container that runs tasks).
The cache entry is replaced atomically; the serial floor, the highest serial this server has ever accepted from the
source, lives in a file of its own, written and synced before any copy with that serial is used, so that a lost or
corrupt cache never lets an older document back in. Keep the directory on storage that survives restarts.

The directory is this user's alone: before anything in it is read it is checked without following links
(:meth:`Store.prepare`), and one that is a link, belongs to another user or that others may write is refused, since
whoever can write in it can plant a document.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import filelock

from airflow_placement.files import replace_file

Clock = Literal["server", "publisher"]


@dataclass(frozen=True)
class CacheEntry:
    """What the cache file holds for one source.

    :param body: the last good document, when read with it (the store keeps it in a file of its own).
    :param etag: its strong ETag, for a conditional request.
    :param serial: its ``@meta`` serial (None for a document in the original form).
    :param revision: its content digest.
    :param vouched_at: the start of its lease: when the publisher last vouched for it (a Unix time).
    :param vouched_clock: whose clock ``vouched_at`` is on: this server's (an HTTP answer) or the publisher's (the
        ``@meta`` time of a file).
    :param checked_at: when this server last read or confirmed it (this server's clock).
    :param attempted_at: when the source was last asked, successfully or not.
    :param failure: why the last attempt failed, if it did.
    :param signed_by: the public key whose signature this copy carried, when one was checked.
    """

    source: str
    body: str | None = None
    etag: str | None = None
    serial: int | None = None
    revision: str | None = None
    vouched_at: float = 0.0
    vouched_clock: Clock = "server"
    checked_at: float = 0.0
    attempted_at: float = 0.0
    failure: str | None = None
    signed_by: str | None = None


class CacheDirError(OSError):
    """The cache directory may not be used; ``str()`` names it and says why, in one line."""


class SerialFloorError(OSError):
    """The serial floor cannot be read: nothing can be accepted until it can."""


class Store:
    """The cache file, lock file and serial floor of one source in ``cache_dir``."""

    def __init__(self, cache_dir: Path, source: str) -> None:
        self.dir = cache_dir
        self.source = source
        self.key = key = hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]
        self.path = cache_dir / f"{key}.json"
        self.body_path = cache_dir / f"{key}.yaml"
        self.floor_path = cache_dir / f"{key}.serial"
        self.lock = filelock.FileLock(cache_dir / f"{key}.lock")

    def prepare(self) -> None:
        """Create the directory (mode 0700) if it is missing, and check it without following links.

        A directory of this user's that only this user may write is made 0700.

        :raises CacheDirError: when it is not a directory (a link, say), belongs to another user, or others may
            write in it.
        """
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = os.lstat(self.dir)
        except OSError as exc:
            raise CacheDirError(
                f"cannot use the cache directory {self.dir}: {(exc.strerror or str(exc)).lower()}"
            ) from None
        mode = stat.S_IMODE(info.st_mode)
        if not stat.S_ISDIR(info.st_mode):
            problem = "is a symbolic link" if stat.S_ISLNK(info.st_mode) else "is not a directory"
        elif info.st_uid != os.geteuid():
            problem = f"belongs to uid {info.st_uid}, not to this user (uid {os.geteuid()})"
        elif mode & (stat.S_IWGRP | stat.S_IWOTH):
            problem = f"has mode {mode:04o}: others may write in it"
        else:
            if mode != 0o700:
                os.chmod(self.dir, 0o700, follow_symlinks=False)
            return
        raise CacheDirError(
            f"the cache directory {self.dir} {problem}; refused (it must be a directory of this user's, mode 0700)"
        )

    def read(self, *, with_body: bool = False) -> CacheEntry | None:
        """This source's entry (its ``body`` only ``with_body``); None when there is none or it is not usable."""
        try:
            data: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
            entry = CacheEntry(**data)
            if with_body and entry.revision is not None:
                entry = replace(entry, body=self.body_path.read_text(encoding="utf-8"))
        except (OSError, ValueError, TypeError):
            return None
        numbers = (entry.vouched_at, entry.checked_at, entry.attempted_at)
        texts = (entry.body, entry.etag, entry.revision, entry.failure, entry.signed_by)
        if not (
            entry.source == self.source
            and all(isinstance(text, str | None) for text in texts)
            and (entry.serial is None or (isinstance(entry.serial, int) and not isinstance(entry.serial, bool)))
            and entry.vouched_clock in ("server", "publisher")
            and all(isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t) for t in numbers)
        ):
            return None
        return entry

    def write(self, entry: CacheEntry) -> None:
        """Store ``entry``; its body (when given) goes first, so the entry never names a body not yet written."""
        if entry.body is not None:
            replace_file(self.body_path, entry.body)
        replace_file(self.path, json.dumps(asdict(replace(entry, body=None))))

    def snapshot_path(self, revision: str) -> Path:
        return self.dir / f"{self.key}.{revision}.db"

    def prune_snapshots(self, keep: str) -> None:
        """Remove the snapshots of revisions other than ``keep`` (a reader that has one open keeps its copy)."""
        for path in self.dir.glob(f"{self.key}.*.db"):
            if path.name != self.snapshot_path(keep).name:
                path.unlink(missing_ok=True)

    def floor(self) -> int:
        """The highest serial this server has accepted from the source (0: none yet)."""
        try:
            text = self.floor_path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return 0
        except (OSError, UnicodeDecodeError) as exc:
            raise SerialFloorError(f"cannot read the serial floor {self.floor_path}: {exc}") from None
        if not text.isdigit():
            raise SerialFloorError(f"the serial floor {self.floor_path} holds {text[:40]!r}, not a serial")
        return int(text)

    def raise_floor(self, serial: int) -> None:
        if serial > self.floor():
            replace_file(self.floor_path, f"{serial}\n")
