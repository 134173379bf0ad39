"""Fetching against a real HTTP server on 127.0.0.1: conditional requests, the TTL, the lease, and failures."""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from placement_server import GOOD, Clock, DocumentServer, Reply

from airflow_placement.fetch import CacheEntry, FetchSettings, PlacementCache, PlacementUnavailable, load_placement

TTL, MAX_STALENESS = 30.0, 300.0
NEW = b"dag_1: server-3.tld\n"


def owner(loaded: Any, dag_id: str = "dag_1") -> str:
    entry = loaded.placement.entry_for(dag_id)
    assert entry is not None
    return str(entry.schedule.owner)


@pytest.fixture
def settings(server: DocumentServer, tmp_path: Path) -> FetchSettings:
    return FetchSettings(
        server.url, ttl=TTL, max_staleness=MAX_STALENESS, timeout=0.5, retries=0, cache_dir=tmp_path / "cache"
    )


def test_a_conditional_request_confirms_the_cached_copy(
    server: DocumentServer, settings: FetchSettings, clock: Clock
) -> None:
    first = load_placement(settings, clock)
    assert (first.origin, owner(first), server.count) == ("source", "server-1.tld", 1)
    assert server.requests[0]["Cache-Control"] == "no-cache"
    assert "If-None-Match" not in server.requests[0]

    clock.advance(TTL)
    second = load_placement(settings, clock)
    assert server.count == 2
    assert server.requests[1]["If-None-Match"] == '"v1"'
    assert server.requests[1]["If-Modified-Since"] == server.last_modified
    assert server.requests[1]["Cache-Control"] == "no-cache"
    assert (second.origin, second.age, owner(second)) == ("source", 0.0, "server-1.tld")
    assert second.placement.revision == first.placement.revision

    clock.advance(TTL - 1)  # the 304 restarted the TTL
    assert load_placement(settings, clock).origin == "cache"
    assert server.count == 2


def test_a_new_etag_brings_the_new_document(server: DocumentServer, settings: FetchSettings, clock: Clock) -> None:
    load_placement(settings, clock)
    server.document, server.etag = NEW, '"v2"'
    clock.advance(TTL - 1)
    assert owner(load_placement(settings, clock)) == "server-1.tld"  # within the TTL: no request yet
    clock.advance(1)
    loaded = load_placement(settings, clock)
    assert (loaded.origin, owner(loaded), server.count) == ("source", "server-3.tld", 2)
    clock.advance(TTL)
    load_placement(settings, clock)
    assert server.requests[-1]["If-None-Match"] == '"v2"'


def test_a_slow_server_falls_back_within_max_staleness_and_refuses_beyond(
    server: DocumentServer, settings: FetchSettings, clock: Clock
) -> None:
    load_placement(settings, clock)
    server.respond = lambda headers: Reply(200, NEW, delay=settings.timeout * 3)
    clock.advance(TTL)
    started = time.monotonic()
    loaded = load_placement(settings, clock)
    assert time.monotonic() - started < settings.timeout * 2.5
    assert (loaded.origin, owner(loaded), loaded.age) == ("fallback", "server-1.tld", TTL)
    assert loaded.note is not None
    assert "timed out" in loaded.note

    clock.advance(MAX_STALENESS - TTL + 1)
    with pytest.raises(PlacementUnavailable, match=r"timed out; the last good copy is 301 s old, over the maximum"):
        load_placement(settings, clock)


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
}


@pytest.mark.parametrize(("make_reply", "why"), list(BAD_REPLIES.values()), ids=list(BAD_REPLIES))
def test_a_bad_answer_keeps_the_last_good_copy(
    server: DocumentServer, settings: FetchSettings, clock: Clock, make_reply: Any, why: str
) -> None:
    settings = replace(settings, max_bytes=64 * 1024)
    cache = PlacementCache(settings, clock)
    cache.load()
    server.respond = lambda headers: make_reply(settings)
    clock.advance(TTL)
    loaded = cache.load()
    assert (loaded.origin, owner(loaded)) == ("fallback", "server-1.tld")
    assert loaded.note is not None
    assert why in loaded.note
    entry = cache.read()
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
        load_placement(settings, clock)
    assert why in str(caught.value)


def test_retries_are_bounded(server: DocumentServer, settings: FetchSettings, clock: Clock) -> None:
    server.respond = lambda headers: Reply(500, b"oops")
    with pytest.raises(PlacementUnavailable, match="HTTP 500"):
        load_placement(replace(settings, retries=2), clock)
    assert server.count == 3


def test_retry_after_does_not_hold_the_task(server: DocumentServer, settings: FetchSettings, clock: Clock) -> None:
    server.respond = lambda headers: Reply(503, b"busy", {"Retry-After": "30"})
    started = time.monotonic()
    with pytest.raises(PlacementUnavailable, match="HTTP 503"):
        load_placement(replace(settings, retries=1), clock)
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
    cache = PlacementCache(settings, clock)
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
    load_placement(settings, clock)
    assert "Authorization" not in server.requests[0]


def test_loads_within_the_ttl_make_one_request(server: DocumentServer, settings: FetchSettings, clock: Clock) -> None:
    for _ in range(50):
        assert owner(load_placement(settings, clock)) == "server-1.tld"
        clock.advance(TTL / 51)
    assert server.count == 1


def test_an_outage_costs_one_request_per_ttl(server: DocumentServer, settings: FetchSettings, clock: Clock) -> None:
    load_placement(settings, clock)
    server.respond = lambda headers: Reply(500, b"down")
    clock.advance(TTL)
    for _ in range(3 * 50):  # three TTLs of an outage, 50 loads in each
        assert load_placement(settings, clock).origin == "fallback"
        clock.advance(TTL / 50)
    assert server.count == 1 + 3


def test_a_cold_outage_is_remembered_too(server: DocumentServer, settings: FetchSettings, clock: Clock) -> None:
    server.respond = lambda headers: Reply(500, b"down")
    for _ in range(20):
        with pytest.raises(PlacementUnavailable, match="HTTP 500"):
            load_placement(settings, clock)
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


def _read_repeatedly(settings: FetchSettings, reads: int, results: Any) -> None:
    cache = PlacementCache(settings)
    misses = 0
    for _ in range(reads):
        entry = cache.read()
        if entry is None or entry.body is None or not entry.body.startswith("dag_1:"):
            misses += 1
    results.put(misses)


def test_readers_never_see_a_half_written_cache_file(settings: FetchSettings) -> None:
    cache = PlacementCache(settings)
    bodies = [GOOD.decode() + "".join(f"dag_{i}_{n}: server-{n}.tld\n" for i in range(2000)) for n in (1, 2)]
    cache.write(CacheEntry(settings.source, body=bodies[0], confirmed_at=1.0))
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    readers = [context.Process(target=_read_repeatedly, args=(settings, 200, results)) for _ in range(3)]
    for reader in readers:
        reader.start()
    writes, deadline = 0, time.monotonic() + 20
    while any(reader.is_alive() for reader in readers) and time.monotonic() < deadline:
        cache.write(CacheEntry(settings.source, body=bodies[writes % 2], confirmed_at=float(writes)))
        writes += 1
    misses = [results.get(timeout=10) for _ in readers]
    for reader in readers:
        reader.join(timeout=10)
    assert writes > 10
    assert misses == [0, 0, 0]


@pytest.mark.parametrize(
    "content",
    [
        "",
        "{",
        "[]",
        "null",
        json.dumps({"source": "x", "unexpected": 1}),
        json.dumps({"source": "SOURCE", "body": 5, "confirmed_at": "NOW"}),
        json.dumps({"source": "SOURCE", "body": "- not\n- a document\n", "confirmed_at": "NOW"}),
        json.dumps({"source": "elsewhere", "body": "dag_1: server-9.tld\n", "confirmed_at": "NOW"}),
    ],
    ids=["empty", "truncated", "list", "null", "unknown key", "wrong types", "invalid body", "other source"],
)
def test_a_corrupt_cache_file_is_ignored(
    server: DocumentServer, settings: FetchSettings, clock: Clock, content: str
) -> None:
    cache = PlacementCache(settings, clock)
    settings.cache_dir.mkdir(parents=True)
    cache.path.write_text(content.replace('"SOURCE"', json.dumps(settings.source)).replace('"NOW"', str(clock.now)))
    loaded = cache.load()
    assert (loaded.origin, owner(loaded), server.count) == ("source", "server-1.tld", 1)


@pytest.mark.parametrize("as_url", [False, True], ids=["path", "file URL"])
def test_local_file_sources(tmp_path: Path, clock: Clock, as_url: bool) -> None:
    path = tmp_path / "airflow-dag-on-server.yaml"
    path.write_bytes(GOOD)
    source = path.as_uri() if as_url else str(path)
    settings = FetchSettings(source, ttl=TTL, max_staleness=MAX_STALENESS, cache_dir=tmp_path / "cache")
    loaded = load_placement(settings, clock)
    assert (loaded.origin, owner(loaded), loaded.requests) == ("source", "server-1.tld", 0)

    path.write_bytes(NEW)
    assert owner(load_placement(settings, clock)) == "server-1.tld"  # within the TTL
    clock.advance(TTL)
    assert owner(load_placement(settings, clock)) == "server-3.tld"

    path.write_bytes(b"<html>oops</html>")
    clock.advance(TTL)
    fallback = load_placement(settings, clock)
    assert (fallback.origin, owner(fallback)) == ("fallback", "server-3.tld")

    path.unlink()
    clock.advance(MAX_STALENESS)
    with pytest.raises(PlacementUnavailable, match="no such file"):
        load_placement(settings, clock)


def test_a_missing_local_file_on_a_cold_cache_refuses(tmp_path: Path, clock: Clock) -> None:
    settings = FetchSettings(str(tmp_path / "absent.yaml"), cache_dir=tmp_path / "cache")
    with pytest.raises(PlacementUnavailable, match=r"cannot read .*absent.yaml: no such file; no earlier copy"):
        load_placement(settings, clock)


def test_an_unreachable_server_refuses(tmp_path: Path, clock: Clock) -> None:
    settings = FetchSettings("http://127.0.0.1:9/placement.yaml", timeout=0.5, retries=1, cache_dir=tmp_path)
    with pytest.raises(PlacementUnavailable, match="connection failed; no earlier copy"):
        load_placement(settings, clock)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"source": ""}, "no placement source"),
        ({"ttl": 300.0}, "must be shorter than max_staleness"),
        ({"timeout": 0.0}, "timeout > 0"),
        ({"retries": -1}, "retries must be >= 0"),
    ],
)
def test_settings_are_checked(changes: dict[str, Any], words: str) -> None:
    arguments: dict[str, Any] = {"source": "http://x/", "ttl": 30.0, "max_staleness": 300.0, **changes}
    with pytest.raises(ValueError, match=words):
        FetchSettings(**arguments)


def test_a_clock_that_went_back_does_not_extend_the_lease(tmp_path: Path) -> None:
    """A copy confirmed "in the future" (the clock was set back) is neither fresh nor a fallback."""
    source = tmp_path / "doc.yaml"
    source.write_text("dag_a: server-1\n")
    now = [10_000.0]
    settings = FetchSettings(str(source), ttl=30, max_staleness=300, cache_dir=tmp_path / "cache")
    cache = PlacementCache(settings, clock=lambda: now[0])
    assert cache.load().origin == "source"
    now[0] -= 3600  # the clock goes back an hour, and the source disappears
    source.unlink()
    with pytest.raises(PlacementUnavailable, match="clock go back"):
        cache.load()
