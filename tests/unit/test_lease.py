"""The lease's rules, each alone, as pure functions of a cache entry, an answer of the source and the time."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import pytest
from placement_server import GOOD, T0, with_meta

from airflow_placement.document import parse_document
from airflow_placement.lease import (
    LeaseSettings,
    Rejected,
    accept,
    age,
    distrust,
    failed_recently,
    is_fresh,
    restart_reason,
    rollback_reason,
    stack_started_at,
    staleness_reason,
    vouched_time,
)
from airflow_placement.source import Fetched
from airflow_placement.store import CacheEntry, Clock

LEASE = LeaseSettings(ttl=30.0, max_staleness=300.0, clock_skew=60.0)
STARTED = T0 - 3600
SOURCE = "http://127.0.0.1/placement.yaml"
OTHER = b"dag_1: server-3.tld\n"


def http(body: bytes, etag: str | None = '"e"') -> Fetched:
    return Fetched(200, body, etag, vouches=True)


def file(body: bytes) -> Fetched:
    return Fetched(200, body, None, vouches=False)


def held(body: bytes, *, vouched_at: float = T0, clock: Clock = "server", etag: str | None = '"e"') -> CacheEntry:
    """The entry of a copy of ``body`` this server holds, checked and vouched for at ``vouched_at``."""
    placement = parse_document(body)
    return CacheEntry(
        SOURCE,
        body=body.decode(),
        etag=etag,
        serial=placement.meta.serial if placement.meta else None,
        revision=placement.revision,
        vouched_at=vouched_at,
        vouched_clock=clock,
        checked_at=vouched_at,
        attempted_at=vouched_at,
    )


# --- Settings --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ttl", "max_staleness", "clock_skew"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -1.0])
def test_lease_settings_must_be_finite_seconds(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"^{name} must be a finite number of seconds >= 0, not {value!r}$"):
        replace(LEASE, **{name: value})


def test_the_ttl_must_be_shorter_than_the_lease() -> None:
    with pytest.raises(ValueError, match=r"ttl \(300 s\) must be shorter than max_staleness \(300 s\)"):
        LeaseSettings(ttl=300.0, max_staleness=300.0)
    assert LeaseSettings(ttl=0.0, max_staleness=1.0, clock_skew=0.0).ttl == 0.0


# --- Rule 1: vouched, not read ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fetched", "expected"),
    [
        (http(GOOD), (T0, "server")),  # an HTTP answer vouches on receipt
        (http(with_meta(5, T0 - 900, renewed=T0 - 600)), (T0, "server")),  # whatever its @meta says
        (file(GOOD), (T0, "server")),  # a file in the original form: only its reading
        (file(with_meta(5, T0 - 900)), (T0 - 900, "publisher")),  # a file with @meta: its issue
        (file(with_meta(5, T0 - 900, renewed=T0 - 600)), (T0 - 600, "publisher")),  # or its renewal
        (file(with_meta(5, T0 - 900, renewed=T0 + 30)), (T0 + 30, "publisher")),  # even ahead of this clock
    ],
    ids=["http", "http with @meta", "file", "file issued", "file renewed", "file renewed ahead"],
)
def test_who_vouched_for_a_copy_and_when(fetched: Fetched, expected: tuple[float, str]) -> None:
    assert vouched_time(fetched, parse_document(fetched.body), T0) == expected


@pytest.mark.parametrize(
    ("clock", "vouched_at", "now", "words"),
    [
        ("server", T0, T0, None),
        ("server", T0, T0 + 300, None),
        ("server", T0, T0 + 301, "the copy is 301 s old, over the maximum staleness of 300 s"),
        ("server", T0, T0 - 1, "confirmed 1 s in the future (did the clock go back?)"),
        ("publisher", T0, T0 + 300, None),
        ("publisher", T0, T0 + 301, "301 s old, over the maximum staleness"),
        ("publisher", T0, T0 - 60, None),  # the publisher's clock may be ahead by the clock skew
        ("publisher", T0, T0 - 61, "renewed the copy 61 s in the future, beyond the clock-skew margin"),
    ],
)
def test_staleness(clock: Clock, vouched_at: float, now: float, words: str | None) -> None:
    entry = held(GOOD, vouched_at=vouched_at, clock=clock)
    reason = staleness_reason(entry, now, LEASE)
    if words is None:
        assert reason is None
    else:
        assert reason is not None
        assert words in reason


def test_age_is_counted_from_the_vouching_never_below_zero() -> None:
    entry = held(GOOD, vouched_at=T0)
    assert (age(entry, T0 + 12.5), age(entry, T0 - 5)) == (12.5, 0.0)


# --- Rule 2: restart fencing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("clock", "vouched_at", "words"),
    [
        ("server", STARTED - 1, "confirmed 1 s before this server's stack started"),
        ("server", STARTED, None),
        ("publisher", STARTED + 59, "within the clock-skew margin of 60 s"),
        ("publisher", STARTED + 60, None),
        ("publisher", STARTED - 3600, "waiting for a renewal"),
    ],
)
def test_nothing_vouched_for_before_the_start_is_trusted(clock: Clock, vouched_at: float, words: str | None) -> None:
    entry = held(GOOD, vouched_at=vouched_at, clock=clock)
    reason = restart_reason(entry, STARTED, LEASE)
    assert reason == distrust(entry, vouched_at + 1, STARTED, LEASE)
    if words is None:
        assert reason is None
    else:
        assert reason is not None
        assert words in reason


def test_without_a_copy_nothing_is_trusted() -> None:
    assert distrust(CacheEntry(SOURCE), T0, STARTED, LEASE) == "no copy of the placement document is held"


def test_the_stack_started_in_the_past() -> None:
    started = stack_started_at()
    assert 1e9 < started <= time.time()


# --- The TTL ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "now", "fresh"),
    [
        ({}, T0, True),
        ({}, T0 + 29.9, True),
        ({}, T0 + 30, False),  # the TTL ran out
        ({}, T0 - 1, False),  # checked "in the future"
        ({"failure": "HTTP 500"}, T0 + 1, False),  # the last attempt failed
        ({"checked_at": STARTED - 1, "vouched_at": STARTED - 1}, STARTED + 1, False),  # before the restart
        ({"vouched_clock": "publisher", "vouched_at": T0 - 301}, T0 + 1, False),  # checked, but no longer vouched
        ({"revision": None}, T0, False),  # no copy held
    ],
)
def test_a_copy_is_fresh_only_within_the_ttl_and_its_lease(changes: dict[str, Any], now: float, fresh: bool) -> None:
    entry = replace(held(GOOD), **changes)
    assert is_fresh(entry, now, STARTED, LEASE) == fresh


@pytest.mark.parametrize(
    ("attempted_at", "now", "started", "remembered"),
    [
        (T0, T0, STARTED, True),
        (T0, T0 + 29.9, STARTED, True),
        (T0, T0 + 30, STARTED, False),  # the TTL ran out
        (T0, T0 + 5, T0 + 1, False),  # a failure before the restart
    ],
)
def test_a_failure_is_remembered_for_the_ttl_of_this_stack(
    attempted_at: float, now: float, started: float, remembered: bool
) -> None:
    entry = replace(held(GOOD), attempted_at=attempted_at, failure="HTTP 500")
    assert failed_recently(entry, now, started, LEASE) == remembered
    assert not failed_recently(replace(entry, failure=None), now, started, LEASE)


# --- Rule 3: serials never go back -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("held_body", "floor", "served", "words"),
    [
        (None, 0, GOOD, None),  # the original form, as ever
        (GOOD, 0, OTHER, None),
        (GOOD, 0, with_meta(1, T0), None),  # the first @meta
        (None, 5, with_meta(5, T0), None),  # the serial of the floor, on a cold cache
        (with_meta(5, T0), 5, with_meta(6, T0, body=OTHER), None),
        (with_meta(5, T0), 5, with_meta(9, T0, body=OTHER), None),  # serials may skip
        (with_meta(5, T0, renewed=T0), 5, with_meta(5, T0, renewed=T0 + 60), None),  # a renewal
        (with_meta(5, T0), 5, with_meta(4, T0, body=OTHER), "served serial 4, older than serial 5"),
        (None, 5, with_meta(4, T0), "older than serial 5 that this server has accepted; refused as a rollback"),
        (with_meta(5, T0), 5, with_meta(4, T0), "older than serial 5"),  # even with the same content
        (with_meta(5, T0), 5, GOOD, "without @meta after serial 5"),
        (None, 5, GOOD, "without @meta after serial 5"),
        (with_meta(5, T0), 5, with_meta(5, T0, body=OTHER), "served serial 5 again with other content"),
        (with_meta(5, T0), 5, with_meta(5, T0 + 1), "served serial 5 again with other content"),  # another issue
    ],
)
def test_rollbacks(held_body: bytes | None, floor: int, served: bytes, words: str | None) -> None:
    entry = CacheEntry(SOURCE) if held_body is None else held(held_body)
    placement = parse_document(served)
    reason = rollback_reason(entry, placement, floor)
    if words is None:
        assert reason is None
        accepted = accept(entry, http(served), placement, served.decode(), now=T0, floor=floor)
        assert (accepted.serial, accepted.revision) == (placement.meta and placement.meta.serial, placement.revision)
    else:
        assert reason is not None
        assert words in reason
        with pytest.raises(Rejected, match=words):
            accept(entry, http(served), placement, served.decode(), now=T0, floor=floor)


# --- Accepting an answer ---------------------------------------------------------------------------------------------


def test_a_200_becomes_the_held_copy() -> None:
    body = with_meta(7, T0 - 900, renewed=T0 - 60)
    placement = parse_document(body)
    failed = replace(held(GOOD, vouched_at=T0 - 100), failure="HTTP 500", attempted_at=T0 - 10)
    over_http = accept(failed, http(body, '"s7"'), placement, body.decode(), now=T0, floor=5)
    assert over_http == CacheEntry(
        SOURCE,
        body=body.decode(),
        etag='"s7"',
        serial=7,
        revision=placement.revision,
        vouched_at=T0,
        vouched_clock="server",
        checked_at=T0,
        attempted_at=T0,
        failure=None,
    )
    from_a_file = accept(failed, file(body), placement, body.decode(), now=T0, floor=5)
    assert (from_a_file.vouched_at, from_a_file.vouched_clock, from_a_file.checked_at) == (T0 - 60, "publisher", T0)


def test_a_304_renews_the_held_copy() -> None:
    entry = replace(held(GOOD, vouched_at=T0 - 100), failure="HTTP 500", attempted_at=T0 - 10)
    renewed = accept(entry, Fetched(304, b"", '"e"', vouches=True), None, None, now=T0, floor=0)
    assert renewed == replace(entry, vouched_at=T0, checked_at=T0, attempted_at=T0, failure=None)


@pytest.mark.parametrize(
    "entry",
    [CacheEntry(SOURCE), held(GOOD, etag='"other"'), held(GOOD, etag=None)],
    ids=["no copy", "another etag", "no etag"],
)
def test_a_304_for_a_copy_not_held_is_rejected(entry: CacheEntry) -> None:
    with pytest.raises(Rejected, match="304 Not Modified for a copy this server does not hold"):
        accept(entry, Fetched(304, b"", '"e"', vouches=True), None, None, now=T0, floor=0)
