"""Fetching against a real HTTP server on 127.0.0.1 and real files: conditional requests, the TTL, the lease,
serials, restarts and failures."""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from placement_server import GOOD, Clock, DocumentServer, Reply, with_meta

from airflow_placement.decision import decide
from airflow_placement.fetch import (
    CacheEntry,
    FetchSettings,
    Loaded,
    PlacementCache,
    PlacementUnavailable,
    load_placement,
)
from airflow_placement.settings import gate_settings

TTL, MAX_STALENESS, CLOCK_SKEW = 30.0, 300.0, 60.0
NEW = b"dag_1: server-3.tld\n"
NEWER = b"dag_1: server-4.tld\n"


def owner(loaded: Loaded, dag_id: str = "dag_1") -> str:
    entry = loaded.placement.entry_for(dag_id)
    assert entry is not None
    return str(entry.schedule.owner)


def load(settings: FetchSettings, clock: Clock) -> Loaded:
    """What one task process on the server gets: each task makes a cache object of its own."""
    return load_placement(settings, clock, clock.stack_started)


# A known bug, reported: fetch.py asks conditionally only when the entry holds a body, and since the store keeps the
# body apart, an entry read from the store never does. Remove the mark where the bug is fixed (strict: it will say so).


@pytest.fixture
def settings(server: DocumentServer, tmp_path: Path) -> FetchSettings:
    return FetchSettings(
        server.url, ttl=TTL, max_staleness=MAX_STALENESS, timeout=0.5, retries=0, cache_dir=tmp_path / "cache"
    )


# --- Conditional requests: on a strong ETag only -------------------------------------------------------------------


def test_a_conditional_request_confirms_the_cached_copy(
    server: DocumentServer, settings: FetchSettings, clock: Clock
) -> None:
    first = load(settings, clock)
    assert (first.origin, owner(first), server.count) == ("source", "server-1.tld", 1)
    assert server.requests[0]["Cache-Control"] == "no-cache"
    assert "If-None-Match" not in server.requests[0]

    clock.advance(TTL)
    second = load(settings, clock)
    assert server.count == 2
    assert server.requests[1]["If-None-Match"] == '"v1"'
    assert server.requests[1]["Cache-Control"] == "no-cache"
    assert server.statuses == [200, 304]
    assert (second.origin, second.age, owner(second)) == ("source", 0.0, "server-1.tld")
    assert second.placement.revision == first.placement.revision

    clock.advance(TTL - 1)  # the 304 restarted the TTL
    assert load(settings, clock).origin == "cache"
    assert server.count == 2
    assert not any("If-Modified-Since" in headers for headers in server.requests)


def test_a_new_etag_brings_the_new_document(server: DocumentServer, settings: FetchSettings, clock: Clock) -> None:
    load(settings, clock)
    server.document, server.etag = NEW, '"v2"'
    clock.advance(TTL - 1)
    assert owner(load(settings, clock)) == "server-1.tld"  # within the TTL: no request yet
    clock.advance(1)
    loaded = load(settings, clock)
    assert (loaded.origin, owner(loaded), server.count) == ("source", "server-3.tld", 2)
    clock.advance(TTL)
    load(settings, clock)
    assert server.requests[-1]["If-None-Match"] == '"v2"'


def test_a_document_replaced_twice_in_one_second_arrives_after_the_ttl(
    server: DocumentServer, settings: FetchSettings, clock: Clock
) -> None:
    """The issue's server: no ETag, a Last-Modified of one-second resolution, and 304 to a matching If-Modified-Since.

    Three documents written within the same second carry the same Last-Modified; a client that asked with
    If-Modified-Since would be told 304 and keep the first one for ever.
    """
    server.etag = None
    assert owner(load(settings, clock)) == "server-1.tld"
    for document, expected in ((NEW, "server-3.tld"), (NEWER, "server-4.tld")):
        server.document = document  # same Last-Modified
        clock.advance(TTL)
        loaded = load(settings, clock)
        assert (loaded.origin, owner(loaded)) == ("source", expected)
    assert server.statuses == [200, 200, 200]
    assert not any("If-Modified-Since" in headers or "If-None-Match" in headers for headers in server.requests)


def test_a_weak_etag_is_never_sent(server: DocumentServer, settings: FetchSettings, clock: Clock) -> None:
    """A weak ETag may stand for other bytes: this server answers 304 to it although the document changed."""
    server.etag = 'W/"v1"'
    cache = PlacementCache(settings, clock, clock.stack_started)
    cache.load()
    entry = cache.read()
    assert entry is not None
    assert entry.etag is None
    server.document = NEW  # same weak ETag
    clock.advance(TTL)
    assert owner(cache.load()) == "server-3.tld"
    assert server.statuses == [200, 200]
    assert not any("If-None-Match" in headers or "If-Modified-Since" in headers for headers in server.requests)


def test_a_304_to_an_unconditional_request_is_a_failure(
    server: DocumentServer, settings: FetchSettings, clock: Clock
) -> None:
    server.etag = None
    load(settings, clock)
    server.respond = lambda headers: Reply(304)
    clock.advance(TTL)
    loaded = load(settings, clock)
    assert (loaded.origin, owner(loaded)) == ("fallback", "server-1.tld")
    assert loaded.note is not None
    assert "HTTP 304 to a request that asked for no validation" in loaded.note


# --- Failures of the source and the lease ----------------------------------------------------------------------------


def test_a_slow_server_falls_back_within_max_staleness_and_refuses_beyond(
    server: DocumentServer, settings: FetchSettings, clock: Clock
) -> None:
    load(settings, clock)
    server.respond = lambda headers: Reply(200, NEW, delay=settings.timeout * 3)
    clock.advance(TTL)
    started = time.monotonic()
    loaded = load(settings, clock)
    assert time.monotonic() - started < settings.timeout * 2.5
    assert (loaded.origin, owner(loaded), loaded.age) == ("fallback", "server-1.tld", TTL)
    assert loaded.note is not None
    assert "timed out" in loaded.note

    clock.advance(MAX_STALENESS - TTL + 1)
    with pytest.raises(PlacementUnavailable, match=r"timed out; the copy is 301 s old, over the maximum staleness"):
        load(settings, clock)


def _huge(settings: FetchSettings) -> Reply:
    return Reply(200, b"dag_1: server-1.tld\n" + b"# padding\n" * (settings.max_bytes // 10 + 1))


BAD_REPLIES = {
    "500": (lambda s: Reply(500, b"oops"), "HTTP 500"),
    "404 html": (
        lambda s: Reply(404, b"<!DOCTYPE html><html><body>Not Found</body></html>", {"Content-Type": "text/html"}),
        "HTTP 404",
    ),
    "200 html": (lambda s: Reply(200, b"<!DOCTYPE html>\n<html><body>Sign in</body></html>"), "HTML page"),
    "truncated": (lambda s: Reply(200, b"dag_1: server-3.tld\ndag_2: ser", content_length=4096), "cannot read"),
    "huge": (_huge, "over the limit"),
    "garbage": (lambda s: Reply(200, b"- dag_1\n- server-3.tld\n"), "must be a mapping"),
    "empty": (lambda s: Reply(200, b""), "the document is empty"),
    "binary": (lambda s: Reply(200, b"\x89PNG\r\n\x1a\n\xff\xfe"), "not UTF-8"),
    "bad @meta": (lambda s: Reply(200, b'"@meta": {serial: 0, issued: 2026-12-01T06:00:00Z}\n' + NEW), "serial"),
}


@pytest.mark.parametrize(("make_reply", "why"), list(BAD_REPLIES.values()), ids=list(BAD_REPLIES))
def test_a_bad_answer_keeps_the_last_good_copy(
    server: DocumentServer, settings: FetchSettings, clock: Clock, make_reply: Any, why: str
) -> None:
    settings = replace(settings, max_bytes=64 * 1024)
    cache = PlacementCache(settings, clock, clock.stack_started)
    cache.load()
    server.respond = lambda headers: make_reply(settings)
    clock.advance(TTL)
    loaded = cache.load()
    assert (loaded.origin, owner(loaded)) == ("fallback", "server-1.tld")
    assert loaded.note is not None
    assert why in loaded.note
    entry = cache.store.read(with_body=True)
    assert entry is not None
    assert entry.body == GOOD.decode()  # never the bad answer
    assert entry.failure is not None

    clock.advance(MAX_STALENESS)
    with pytest.raises(PlacementUnavailable, match="over the maximum staleness"):
        cache.load()


@pytest.mark.parametrize(("make_reply", "why"), list(BAD_REPLIES.values()), ids=list(BAD_REPLIES))
def test_a_bad_answer_on_a_cold_cache_refuses(
    server: DocumentServer, settings: FetchSettings, clock: Clock, make_reply: Any, why: str
) -> None:
    settings = replace(settings, max_bytes=64 * 1024)
    server.respond = lambda headers: make_reply(settings)
    with pytest.raises(PlacementUnavailable, match="no earlier copy of the placement document is cached") as caught:
        load(settings, clock)
    assert why in str(caught.value)


def test_retries_are_bounded(server: DocumentServer, settings: FetchSettings, clock: Clock) -> None:
    server.respond = lambda headers: Reply(500, b"oops")
    with pytest.raises(PlacementUnavailable, match="HTTP 500"):
        load(replace(settings, retries=2), clock)
    assert server.count == 3


def test_retry_after_does_not_hold_the_task(server: DocumentServer, settings: FetchSettings, clock: Clock) -> None:
    server.respond = lambda headers: Reply(503, b"busy", {"Retry-After": "30"})
    started = time.monotonic()
    with pytest.raises(PlacementUnavailable, match="HTTP 503"):
        load(replace(settings, retries=1), clock)
    assert time.monotonic() - started < 5
    assert server.count == 2


def test_the_token_is_sent_and_never_shown(
    server: DocumentServer,
    settings: FetchSettings,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = "s3cr3t-T0KEN"
    monkeypatch.setenv("PLACEMENT_TOKEN", token)
    settings = replace(settings, token_env="PLACEMENT_TOKEN")
    caplog.set_level(logging.DEBUG)
    cache = PlacementCache(settings, clock, clock.stack_started)
    cache.load()
    assert server.requests[0]["Authorization"] == f"Bearer {token}"

    server.respond = lambda headers: Reply(401, b"bad credentials")
    clock.advance(TTL)
    note = cache.load().note
    assert note is not None
    assert "HTTP 401" in note
    clock.advance(MAX_STALENESS)
    with pytest.raises(PlacementUnavailable) as caught:
        cache.load()
    assert server.requests[-1]["Authorization"] == f"Bearer {token}"
    assert token not in note
    assert token not in str(caught.value)
    assert token not in repr(caught.value)
    assert token not in caplog.text
    assert caplog.text  # urllib3 did log, at debug level
    assert token not in cache.path.read_text()
    assert all(token not in path.read_bytes().decode(errors="replace") for path in settings.cache_dir.iterdir())


def test_no_token_without_the_setting(server: DocumentServer, settings: FetchSettings, clock: Clock) -> None:
    load(settings, clock)
    assert "Authorization" not in server.requests[0]


def test_loads_within_the_ttl_make_one_request(server: DocumentServer, settings: FetchSettings, clock: Clock) -> None:
    for _ in range(50):
        assert owner(load(settings, clock)) == "server-1.tld"
        clock.advance(TTL / 51)
    assert server.count == 1


def test_an_outage_costs_one_request_per_ttl(server: DocumentServer, settings: FetchSettings, clock: Clock) -> None:
    load(settings, clock)
    server.respond = lambda headers: Reply(500, b"down")
    clock.advance(TTL)
    for _ in range(3 * 50):  # three TTLs of an outage, 50 loads in each
        assert load(settings, clock).origin == "fallback"
        clock.advance(TTL / 50)
    assert server.count == 1 + 3


def test_a_cold_outage_is_remembered_too(server: DocumentServer, settings: FetchSettings, clock: Clock) -> None:
    server.respond = lambda headers: Reply(500, b"down")
    for _ in range(20):
        with pytest.raises(PlacementUnavailable, match="HTTP 500"):
            load(settings, clock)
        clock.advance(TTL / 20)
    assert server.count == 1


def _load_at_once(settings: FetchSettings, barrier: Any, results: Any) -> None:
    barrier.wait()
    try:
        results.put(owner(load_placement(settings)))
    except Exception as exc:  # reported to the parent, which fails the test
        results.put(repr(exc))


def test_concurrent_processes_on_a_cold_cache_make_one_request(server: DocumentServer, settings: FetchSettings) -> None:
    server.respond = lambda headers: replace(server.serve_document(headers), delay=0.2)
    context = multiprocessing.get_context("fork")
    processes = 12
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=_load_at_once, args=(settings, barrier, results)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=30) for _ in workers]
    for worker in workers:
        worker.join(timeout=10)
    assert outcomes == ["server-1.tld"] * processes
    assert server.count == 1


BODIES = [GOOD.decode() + "".join(f"dag_{i}_{n}: server-{n}.tld\n" for i in range(2000)) for n in (1, 2)]


def _read_repeatedly(settings: FetchSettings, seconds: float, results: Any) -> None:
    store = PlacementCache(settings).store
    misses, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        entry = store.read(with_body=True)
        if entry is None or entry.body not in BODIES:
            misses += 1
    results.put(misses)


def test_readers_never_see_a_half_written_cache_file(settings: FetchSettings) -> None:
    store = PlacementCache(settings).store
    store.write(CacheEntry(settings.source, body=BODIES[0], revision="r0", checked_at=1.0))
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    readers = [context.Process(target=_read_repeatedly, args=(settings, 0.3, results)) for _ in range(3)]
    for reader in readers:
        reader.start()
    writes, deadline = 0, time.monotonic() + 20
    while any(reader.is_alive() for reader in readers) and time.monotonic() < deadline:
        store.write(CacheEntry(settings.source, body=BODIES[writes % 2], revision=f"r{writes % 2}", checked_at=writes))
        writes += 1
    misses = [results.get(timeout=10) for _ in readers]
    for reader in readers:
        reader.join(timeout=10)
    assert writes > 10
    assert misses == [0, 0, 0]


CORRUPT_CACHE_FILES = {
    "empty": "",
    "truncated": "{",
    "list": "[]",
    "null": "null",
    "unknown key": json.dumps({"source": "SOURCE", "unexpected": 1}),
    "wrong types": json.dumps({"source": "SOURCE", "revision": "r1", "serial": "5", "checked_at": "NOW"}),
    "other source": json.dumps({"source": "elsewhere", "revision": "r1", "checked_at": "NOW", "vouched_at": "NOW"}),
    "unknown clock": json.dumps({"source": "SOURCE", "revision": "r1", "vouched_clock": "sundial"}),
    "the form before leases": json.dumps({"source": "SOURCE", "body": "dag_1: server-9.tld\n", "confirmed_at": "NOW"}),
    "a revision without its copy": json.dumps(
        {"source": "SOURCE", "revision": "r1", "etag": '"r1"', "checked_at": "NOW", "vouched_at": "NOW"}
    ),
    "a number for an etag": json.dumps({"source": "SOURCE", "revision": "r1", "etag": 5}),
}


@pytest.mark.parametrize("content", list(CORRUPT_CACHE_FILES.values()), ids=list(CORRUPT_CACHE_FILES))
def test_a_corrupt_cache_file_is_ignored(
    server: DocumentServer, settings: FetchSettings, clock: Clock, content: str
) -> None:
    cache = PlacementCache(settings, clock, clock.stack_started)
    settings.cache_dir.mkdir(parents=True)
    cache.path.write_text(content.replace('"SOURCE"', json.dumps(settings.source)).replace('"NOW"', str(clock.now)))
    loaded = cache.load()
    assert (loaded.origin, owner(loaded), server.count) == ("source", "server-1.tld", 1)


def test_a_cache_file_with_a_nan_time_is_not_trusted(
    server: DocumentServer, settings: FetchSettings, clock: Clock
) -> None:
    cache = PlacementCache(settings, clock, clock.stack_started)
    cache.load()
    cache.path.write_text(cache.path.read_text().replace(f'"vouched_at": {clock.now}', '"vouched_at": NaN'))
    assert "NaN" in cache.path.read_text()
    server.respond = lambda headers: Reply(503, b"down")
    clock.advance(10 * MAX_STALENESS)
    with pytest.raises(PlacementUnavailable):
        cache.load()


@pytest.mark.parametrize("damage", ["corrupt", "deleted"])
def test_a_damaged_snapshot_is_rebuilt_from_the_stored_copy(
    server: DocumentServer, settings: FetchSettings, clock: Clock, damage: str
) -> None:
    cache = PlacementCache(settings, clock, clock.stack_started)
    revision = cache.load().placement.revision
    snapshot = cache.store.snapshot_path(revision)
    if damage == "corrupt":
        snapshot.write_bytes(b"not a database")
    else:
        snapshot.unlink()
    clock.advance(1)
    loaded = load(settings, clock)
    assert (loaded.origin, owner(loaded), loaded.placement.revision) == ("cache", "server-1.tld", revision)
    assert server.count == 1
    server.respond = lambda headers: Reply(503, b"down")
    cache.store.body_path.unlink()
    snapshot.unlink(missing_ok=True)
    clock.advance(TTL)
    with pytest.raises(PlacementUnavailable, match=r"HTTP 503 .*; no earlier copy"):
        load(settings, clock)


# --- Serials never go back --------------------------------------------------------------------------------------------

ROLLBACKS = {
    "lower serial": (lambda now: with_meta(4, now, body=NEW), "served serial 4, older than serial 5"),
    "no @meta": (lambda now: NEW, "without @meta after serial 5"),
    "same serial, other content": (lambda now: with_meta(5, now, body=NEW), "served serial 5 again with other content"),
}


@pytest.mark.parametrize(("make_document", "why"), list(ROLLBACKS.values()), ids=list(ROLLBACKS))
def test_a_rollback_is_a_failure_of_the_source(
    server: DocumentServer, settings: FetchSettings, clock: Clock, make_document: Any, why: str
) -> None:
    issued = clock.now
    server.document, server.etag = with_meta(5, issued), '"s5"'
    cache = PlacementCache(settings, clock, clock.stack_started)
    assert owner(cache.load()) == "server-1.tld"

    server.document, server.etag = make_document(clock.now), '"rolled-back"'
    clock.advance(TTL)
    loaded = cache.load()
    assert (loaded.origin, owner(loaded), loaded.age) == ("fallback", "server-1.tld", TTL)
    assert loaded.note is not None
    assert why in loaded.note
    assert "refused" in loaded.note
    entry = cache.store.read(with_body=True)
    assert entry is not None
    assert (entry.serial, entry.etag, entry.body) == (5, '"s5"', with_meta(5, issued).decode())

    clock.advance(MAX_STALENESS)  # the lease runs out while the source keeps rolling back
    with pytest.raises(PlacementUnavailable, match=why):
        cache.load()

    server.document, server.etag = with_meta(6, clock.now, body=NEW), '"s6"'
    clock.advance(TTL)
    loaded = cache.load()
    assert (loaded.origin, owner(loaded)) == ("source", "server-3.tld")


@pytest.mark.parametrize("lost", ["a new cache object", "the cache file deleted", "the cache file corrupt"])
def test_the_serial_floor_outlives_the_cache(
    server: DocumentServer, settings: FetchSettings, clock: Clock, lost: str
) -> None:
    server.document, server.etag = with_meta(5, clock.now), '"s5"'
    cache = PlacementCache(settings, clock, clock.stack_started)
    cache.load()
    assert cache.store.floor_path.read_text() == "5\n"

    server.document, server.etag = with_meta(4, clock.now, body=NEW), '"s4"'
    clock.advance(TTL)
    if lost == "the cache file deleted":
        cache.path.unlink()
    elif lost == "the cache file corrupt":
        cache.path.write_text('{"source": ')
    fresh = PlacementCache(settings, clock, clock.stack_started)
    if lost == "a new cache object":
        loaded = fresh.load()
        assert (loaded.origin, owner(loaded)) == ("fallback", "server-1.tld")
        assert loaded.note is not None
        assert "older than serial 5" in loaded.note
    else:
        with pytest.raises(PlacementUnavailable, match=r"served serial 4, older than serial 5.*; no earlier copy"):
            fresh.load()
    entry = fresh.store.read(with_body=True)
    assert entry is not None
    assert entry.serial != 4  # what the cache holds, if anything, is serial 5's
    assert entry.body is None or "serial: 4" not in entry.body
    assert cache.store.floor_path.read_text() == "5\n"


@pytest.mark.parametrize(
    "corrupt",
    [b"five\n", b"", b"\xff\xfe\n", b"5\n6\n", "a directory"],
    ids=["words", "empty", "binary", "two lines", "a directory"],
)
def test_an_unreadable_serial_floor_refuses(
    server: DocumentServer, settings: FetchSettings, clock: Clock, corrupt: bytes | str
) -> None:
    server.document, server.etag = with_meta(5, clock.now), '"s5"'
    cache = PlacementCache(settings, clock, clock.stack_started)
    cache.load()
    floor = cache.store.floor_path
    if isinstance(corrupt, bytes):
        floor.write_bytes(corrupt)
    else:
        floor.unlink()
        floor.mkdir()
    clock.advance(TTL)
    with pytest.raises(PlacementUnavailable, match="serial floor") as caught:
        cache.load()
    message = str(caught.value)
    assert str(floor) in message
    assert "\n" not in message
    assert "Traceback" not in message


# --- A file's lease: the publisher's renewal time, not the time it was read -----------------------------------------


@pytest.fixture
def file_settings(tmp_path: Path) -> FetchSettings:
    return FetchSettings(
        str(tmp_path / "airflow-dag-on-server.yaml"),
        ttl=TTL,
        max_staleness=MAX_STALENESS,
        clock_skew=CLOCK_SKEW,
        cache_dir=tmp_path / "cache",
    )


def publish(settings: FetchSettings, document: bytes) -> None:
    settings.local_path.write_bytes(document)


def runs(loaded: Loaded, clock: Clock, host: str = "server-1.tld") -> bool:
    """Whether ``host`` runs a run of dag_1 dated now, by ``loaded``."""
    now = datetime.fromtimestamp(clock.now, UTC)
    return decide(loaded.placement, dag_id="dag_1", task_id=None, host=host, when=now, now=now).run


@pytest.mark.parametrize(
    ("issued_ago", "renewed_ago", "refusal"),
    [
        (0, None, None),
        (10, None, None),
        (3000, 10, None),
        (3000, MAX_STALENESS, None),
        (3000, MAX_STALENESS + 1, "301 s old, over the maximum staleness of 300 s"),
        (MAX_STALENESS + 1, None, "over the maximum staleness"),
        (3000, -CLOCK_SKEW, None),  # the publisher's clock may run ahead by the clock skew
        (3000, -CLOCK_SKEW - 1, "in the future, beyond the clock-skew margin"),
    ],
)
def test_a_file_is_trusted_for_as_long_as_its_publisher_vouched(
    file_settings: FetchSettings, clock: Clock, issued_ago: float, renewed_ago: float | None, refusal: str | None
) -> None:
    clock.started = clock.now - 3 * 3600
    renewed = None if renewed_ago is None else clock.now - renewed_ago
    publish(file_settings, with_meta(5, clock.now - issued_ago, renewed))
    if refusal is None:
        loaded = load(file_settings, clock)
        assert loaded.origin == "source"
        assert loaded.age == max(0, renewed_ago if renewed_ago is not None else issued_ago)
        assert runs(loaded, clock)
    else:
        with pytest.raises(PlacementUnavailable, match=refusal):
            load(file_settings, clock)  # the file was read just now


def test_reading_a_file_does_not_renew_its_lease(file_settings: FetchSettings, clock: Clock) -> None:
    issued = clock.now - 10
    publish(file_settings, with_meta(5, issued, renewed=issued))
    assert runs(load(file_settings, clock), clock)
    for _ in range(int((MAX_STALENESS - 10) // TTL)):
        clock.advance(TTL)
        assert load(file_settings, clock).origin == "source"  # read again, its lease still running
    clock.advance(TTL)
    with pytest.raises(PlacementUnavailable, match="over the maximum staleness"):
        load(file_settings, clock)
    assert file_settings.local_path.exists()

    publish(file_settings, with_meta(5, issued, renewed=clock.now))  # the publisher renews it
    loaded = load(file_settings, clock)
    assert (loaded.origin, loaded.age) == ("source", 0.0)
    assert runs(loaded, clock)


def test_a_renewal_keeps_the_revision_and_a_new_serial_brings_the_new_document(
    file_settings: FetchSettings, clock: Clock
) -> None:
    issued = clock.now - 10
    publish(file_settings, with_meta(5, issued, renewed=issued))
    first = load(file_settings, clock)
    clock.advance(TTL)
    publish(file_settings, with_meta(5, issued, renewed=clock.now))
    renewed = load(file_settings, clock)
    assert (renewed.origin, renewed.age, renewed.note) == ("source", 0.0, None)
    assert renewed.placement.revision == first.placement.revision

    clock.advance(TTL)
    publish(file_settings, with_meta(6, clock.now, body=NEW))
    assert owner(load(file_settings, clock)) == "server-3.tld"


def test_the_first_renewal_of_a_file_is_accepted(file_settings: FetchSettings, clock: Clock) -> None:
    publish(file_settings, with_meta(5, clock.now))
    load(file_settings, clock)
    clock.advance(TTL)
    publish(file_settings, with_meta(5, clock.now - TTL, renewed=clock.now))
    loaded = load(file_settings, clock)
    assert (loaded.origin, loaded.age, loaded.note) == ("source", 0.0, None)


def test_a_file_without_meta_is_vouched_for_by_reading_it(file_settings: FetchSettings, clock: Clock) -> None:
    """The original form keeps working, without the lease's protection: each read starts its lease."""
    publish(file_settings, GOOD)
    assert runs(load(file_settings, clock), clock)
    clock.advance(10 * MAX_STALENESS)
    loaded = load(file_settings, clock)
    assert (loaded.origin, loaded.age) == ("source", 0.0)
    assert runs(loaded, clock)


@pytest.mark.parametrize("as_url", [False, True], ids=["path", "file URL"])
def test_local_file_sources(tmp_path: Path, clock: Clock, as_url: bool) -> None:
    path = tmp_path / "airflow-dag-on-server.yaml"
    path.write_bytes(GOOD)
    source = path.as_uri() if as_url else str(path)
    settings = FetchSettings(source, ttl=TTL, max_staleness=MAX_STALENESS, cache_dir=tmp_path / "cache")
    loaded = load(settings, clock)
    assert (loaded.origin, owner(loaded), loaded.requests) == ("source", "server-1.tld", 0)

    path.write_bytes(NEW)
    assert owner(load(settings, clock)) == "server-1.tld"  # within the TTL
    clock.advance(TTL)
    assert owner(load(settings, clock)) == "server-3.tld"

    path.write_bytes(b"<html>oops</html>")
    clock.advance(TTL)
    fallback = load(settings, clock)
    assert (fallback.origin, owner(fallback)) == ("fallback", "server-3.tld")

    path.unlink()
    clock.advance(MAX_STALENESS)
    with pytest.raises(PlacementUnavailable, match="no such file"):
        load(settings, clock)


def test_a_missing_local_file_on_a_cold_cache_refuses(tmp_path: Path, clock: Clock) -> None:
    settings = FetchSettings(str(tmp_path / "absent.yaml"), cache_dir=tmp_path / "cache")
    with pytest.raises(PlacementUnavailable, match=r"cannot read .*absent.yaml: no such file; no earlier copy"):
        load(settings, clock)


def test_an_unreachable_server_refuses(tmp_path: Path, clock: Clock) -> None:
    settings = FetchSettings("http://127.0.0.1:9/placement.yaml", timeout=0.5, retries=1, cache_dir=tmp_path)
    with pytest.raises(PlacementUnavailable, match="connection failed; no earlier copy"):
        load(settings, clock)


# --- Restart fencing ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("answer", [304, 200])
def test_an_http_copy_from_before_a_restart_needs_a_fresh_answer(
    server: DocumentServer, settings: FetchSettings, clock: Clock, answer: int
) -> None:
    load(settings, clock)
    clock.advance(5)
    clock.restart()
    server.respond = lambda headers: Reply(503, b"down")
    clock.advance(1)  # well within the TTL of the copy, and of its lease
    with pytest.raises(PlacementUnavailable, match=r"HTTP 503 .*; the copy was confirmed 5 s before this server"):
        load(settings, clock)
    assert server.count == 2  # asked, although the copy was checked within the TTL
    clock.advance(TTL - 1)
    with pytest.raises(PlacementUnavailable, match="before this server's stack started"):
        load(settings, clock)  # the failure is remembered for the TTL: no request
    assert server.count == 2

    server.respond = server.serve_document
    if answer == 200:
        server.document, server.etag = NEW, '"v2"'
    clock.advance(1)
    loaded = load(settings, clock)
    assert (loaded.origin, loaded.age, loaded.note) == ("source", 0.0, None)
    assert owner(loaded) == ("server-1.tld" if answer == 304 else "server-3.tld")
    assert server.statuses[-1] == answer
    server.respond = lambda headers: Reply(503, b"down")
    clock.advance(TTL)
    assert load(settings, clock).origin == "fallback"  # a copy confirmed since the restart is a fallback again


def test_after_a_restart_a_working_source_is_asked_at_once(
    server: DocumentServer, settings: FetchSettings, clock: Clock
) -> None:
    load(settings, clock)
    clock.advance(1)
    clock.restart()
    loaded = load(settings, clock)
    assert (loaded.origin, server.statuses) == ("source", [200, 304])


def test_a_file_renewed_before_a_restart_waits_for_a_renewal(file_settings: FetchSettings, clock: Clock) -> None:
    issued = clock.now - 10
    publish(file_settings, with_meta(5, issued, renewed=issued))
    assert runs(load(file_settings, clock), clock)
    clock.advance(5)
    clock.restart()
    with pytest.raises(PlacementUnavailable, match=r"stack started \(within the clock-skew margin of 60 s\)"):
        load(file_settings, clock)

    clock.advance(CLOCK_SKEW - 1)
    publish(file_settings, with_meta(5, issued, renewed=clock.now))  # within the margin of the start: not enough
    with pytest.raises(PlacementUnavailable, match="waiting for a renewal"):
        load(file_settings, clock)

    clock.advance(2)
    publish(file_settings, with_meta(5, issued, renewed=clock.now))
    loaded = load(file_settings, clock)
    assert (loaded.origin, loaded.age) == ("source", 0.0)
    assert runs(loaded, clock)


def test_a_file_without_meta_is_usable_at_once_after_a_restart(file_settings: FetchSettings, clock: Clock) -> None:
    publish(file_settings, GOOD)
    load(file_settings, clock)
    clock.advance(1)
    clock.restart()
    assert runs(load(file_settings, clock), clock)


# --- Settings ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"source": ""}, "no placement source"),
        ({"ttl": 300.0}, "must be shorter than max_staleness"),
        ({"timeout": 0.0}, "timeout must be a finite number of seconds > 0"),
        ({"timeout": float("nan")}, "timeout must be a finite number"),
        ({"timeout": float("inf")}, "timeout must be a finite number"),
        ({"retries": -1}, "retries >= 0"),
        ({"ttl": float("nan")}, "ttl must be a finite number of seconds >= 0, not nan"),
        ({"max_staleness": float("inf")}, "max_staleness must be a finite number of seconds >= 0, not inf"),
        ({"clock_skew": float("nan")}, "clock_skew must be a finite number of seconds >= 0, not nan"),
        ({"clock_skew": -1.0}, "clock_skew must be a finite number of seconds >= 0, not -1"),
    ],
)
def test_settings_are_checked(changes: dict[str, Any], words: str) -> None:
    arguments: dict[str, Any] = {"source": "http://x/", "ttl": 30.0, "max_staleness": 300.0, **changes}
    with pytest.raises(ValueError, match=words):
        FetchSettings(**arguments)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ttl", "nan"),
        ("ttl", "inf"),
        ("max_staleness", "nan"),
        ("max_staleness", "inf"),
        ("clock_skew", "nan"),
        ("clock_skew", "inf"),
        ("clock_skew", "-inf"),
        ("timeout", "nan"),
        ("timeout", "inf"),
        ("retries", "nan"),
        ("retries", "inf"),
        ("retries", "2.7"),
    ],
)
def test_non_finite_settings_are_refused_by_name(key: str, value: str) -> None:
    with pytest.raises(ValueError, match=key):
        gate_settings({}, {"source": "http://x/", key: value})


def test_a_clock_that_went_back_does_not_extend_the_lease(tmp_path: Path, clock: Clock) -> None:
    """A copy confirmed "in the future" (the clock was set back) is neither fresh nor a fallback."""
    source = tmp_path / "doc.yaml"
    source.write_text("dag_a: server-1\n")
    settings = FetchSettings(str(source), ttl=30, max_staleness=300, cache_dir=tmp_path / "cache")
    cache = PlacementCache(settings, clock, clock.stack_started)
    assert cache.load().origin == "source"
    clock.advance(-1800)  # the clock goes back half an hour, and the source disappears
    source.unlink()
    with pytest.raises(PlacementUnavailable, match="clock go back"):
        cache.load()
