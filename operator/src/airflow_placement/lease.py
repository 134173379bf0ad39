"""The lease: when a copy of the placement document may be used to decide that this server runs something.

The rules (each tested on its own in ``tests/unit/test_lease.py``):

1. **Vouched, not read.** A copy is trusted for at most ``max_staleness`` after its publisher last vouched for it.
   An HTTP source vouches by serving it (200, or 304 to a strong ETag), on this server's clock. A file vouches
   through the ``@meta`` issue or renewal time the publisher wrote in it, on the publisher's clock; reading the
   file is nobody's word. (A file in the original form, with no ``@meta``, has only its reading to go by: it keeps
   working, without this protection.)
2. **Restart fencing.** Nothing vouched for before this server's stack started is trusted: after a restart the first
   ``run`` needs a fresh word from the publisher. On the publisher's clock, "after" means by more than the clock-skew
   margin.
3. **Serials never go back.** A copy with a lower serial than one this server has accepted, a document without
   ``@meta`` after one with it, or a serial served again with other content is a failure of the source, never a
   new document.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from functools import cache

from airflow_placement.document import Placement
from airflow_placement.source import Fetched
from airflow_placement.store import CacheEntry, Clock


@dataclass(frozen=True)
class LeaseSettings:
    """:param ttl: seconds a checked copy is used without reading the source again.
    :param max_staleness: seconds after the publisher last vouched for a copy past which it is not trusted.
    :param clock_skew: the most this server's clock may differ from the publisher's, in seconds.
    """

    ttl: float = 30.0
    max_staleness: float = 300.0
    clock_skew: float = 60.0

    def __post_init__(self) -> None:
        for name in ("ttl", "max_staleness", "clock_skew"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number of seconds >= 0, not {value!r}")
        if self.ttl >= self.max_staleness:
            raise ValueError(f"ttl ({self.ttl:g} s) must be shorter than max_staleness ({self.max_staleness:g} s)")


class Rejected(Exception):
    """The source answered, but with nothing this server may accept; ``str()`` is the one-line reason."""


def accept(
    entry: CacheEntry, fetched: Fetched, placement: Placement | None, body: str | None, *, now: float, floor: int
) -> CacheEntry:
    """The cache entry after the source answered ``fetched`` at ``now`` (``placement``: the body, validated).

    :param floor: the highest serial this server has accepted from this source.
    :raises Rejected: a 304 for a copy not held, a rollback, a downgrade to no ``@meta``, a serial with other content.
    """
    if fetched.status == 304:
        if entry.revision is None or fetched.etag is None or fetched.etag != entry.etag:
            raise Rejected("the source answered 304 Not Modified for a copy this server does not hold")
        return replace(entry, vouched_at=now, vouched_clock="server", checked_at=now, attempted_at=now, failure=None)
    assert placement is not None and body is not None
    reason = rollback_reason(entry, placement, floor)
    if reason is not None:
        raise Rejected(reason)
    vouched_at, clock = vouched_time(fetched, placement, now)
    return CacheEntry(
        entry.source,
        body=body,
        etag=fetched.etag,
        serial=placement.meta.serial if placement.meta else None,
        revision=placement.revision,
        vouched_at=vouched_at,
        vouched_clock=clock,
        checked_at=now,
        attempted_at=now,
    )


def vouched_time(fetched: Fetched, placement: Placement, now: float) -> tuple[float, Clock]:
    """Rule 1: when the publisher last vouched for a copy just read, and on whose clock."""
    if fetched.vouches or placement.meta is None:
        return now, "server"
    return placement.meta.vouched.timestamp(), "publisher"


def rollback_reason(entry: CacheEntry, placement: Placement, floor: int) -> str | None:
    """Rule 3: why a validated document may not replace ``entry``'s copy; None when it may."""
    meta = placement.meta
    if meta is None:
        if floor:
            return f"the source served a document without @meta after serial {floor}; refused as a rollback"
        return None
    if meta.serial < floor:
        return (
            f"the source served serial {meta.serial}, older than serial {floor} that this server has accepted; "
            "refused as a rollback"
        )
    if meta.serial == entry.serial and entry.revision is not None and placement.revision != entry.revision:
        return f"the source served serial {meta.serial} again with other content; refused"
    return None


def restart_reason(entry: CacheEntry, started: float, settings: LeaseSettings) -> str | None:
    """Rule 2: why a copy vouched for before this server's stack started may not be used; None when it may."""
    if entry.vouched_clock == "server":
        if entry.vouched_at < started:
            return (
                f"the copy was confirmed {started - entry.vouched_at:.0f} s before this server's stack started; a "
                "fresh confirmation from the source is needed"
            )
    elif entry.vouched_at < started + settings.clock_skew:
        return (
            "the publisher last renewed the copy before this server's stack started (within the clock-skew margin "
            f"of {settings.clock_skew:g} s); waiting for a renewal"
        )
    return None


def staleness_reason(entry: CacheEntry, now: float, settings: LeaseSettings) -> str | None:
    """Rule 1, in time: why a copy is too old (or dated too far ahead) to use; None when it is within its lease."""
    vouched = entry.vouched_at
    if entry.vouched_clock == "server" and now < vouched:
        return f"the copy was confirmed {vouched - now:.0f} s in the future (did the clock go back?)"
    if entry.vouched_clock == "publisher" and now < vouched - settings.clock_skew:
        return f"the publisher renewed the copy {vouched - now:.0f} s in the future, beyond the clock-skew margin"
    copy_age = max(0.0, now - vouched)
    if copy_age > settings.max_staleness:
        return f"the copy is {copy_age:.0f} s old, over the maximum staleness of {settings.max_staleness:g} s"
    return None


def distrust(entry: CacheEntry, now: float, started: float, settings: LeaseSettings) -> str | None:
    """Why ``entry``'s copy may not be used to run anything now; None when it may.

    :param started: when this server's stack started (this server's clock).
    """
    if entry.revision is None:
        return "no copy of the placement document is held"
    return restart_reason(entry, started, settings) or staleness_reason(entry, now, settings)


def age(entry: CacheEntry, now: float) -> float:
    return max(0.0, now - entry.vouched_at)


def is_fresh(entry: CacheEntry, now: float, started: float, settings: LeaseSettings) -> bool:
    """Whether the copy may be used without reading the source: checked within the TTL, since the stack started."""
    return (
        entry.failure is None
        and started <= entry.checked_at <= now < entry.checked_at + settings.ttl
        and distrust(entry, now, started, settings) is None
    )


def failed_recently(entry: CacheEntry, now: float, started: float, settings: LeaseSettings) -> bool:
    """Whether the last attempt failed within the TTL: an outage costs one request per TTL, not one per task."""
    return entry.failure is not None and started <= entry.attempted_at <= now < entry.attempted_at + settings.ttl


@cache
def stack_started_at() -> float:
    """When this container (or machine) started: the start of its PID 1, as a Unix time.

    Every Airflow container of the stack has its own PID 1, so a restart of the container, the stack or the server
    gives a later time. Falls back to now (this process forgets everything) where ``/proc`` cannot tell.
    """
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            boot = next(float(line.split()[1]) for line in handle if line.startswith("btime "))
        with open("/proc/1/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, IndexError, ValueError):
        import time  # noqa: PLC0415

        return time.time()
