"""Replacing a file atomically and durably: the one way the package writes its state."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def replace_file(path: Path, data: str | bytes, *, mode: int = 0o600, sync_directory: bool = False) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8): written to a temporary file beside it, synced, given
    ``mode``, then renamed over it, so a reader sees the old content or the new, never a part. With
    ``sync_directory`` the rename is synced too (the new content survives a crash right after)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if sync_directory:
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
