"""Loading the placement document on a server: the source, the shared store and the lease, put together.

Every task process on a server goes through one store per source. While the copy was checked within ``ttl`` (and
the lease allows it) it is used without a request. After that one process, holding the store's lock, reads the
source again (conditionally, on a strong ETag) while the others wait for it and then use its result. When the
source fails, the last good copy is used only while the lease still allows it (:mod:`airflow_placement.lease`);
past that :class:`PlacementUnavailable` is raised and nothing runs. A failed attempt is remembered for ``ttl`` too,
so an outage costs one request per TTL, not one per task.
"""

from __future__ import annotations

import math
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

import filelock
import requests

from airflow_placement.document import DEFAULT_MAX_BYTES, DocumentError, Placement, PlacementView, parse_document
from airflow_placement.lease import (
    LeaseSettings,
    Rejected,
    accept,
    age,
    distrust,
    failed_recently,
    is_fresh,
    stack_started_at,
)
from airflow_placement.signing import SignatureError, load_public_key, verify
from airflow_placement.snapshot import SnapshotPlacement, write_snapshot
from airflow_placement.source import describe_error, is_http, local_path, open_source, token_transport_problem
from airflow_placement.store import CacheDirError, CacheEntry, SerialFloorError, Store

DEFAULT_CACHE_DIR = Path(tempfile.gettempdir()) / f"airflow-placement-{os.geteuid()}"  # per user, mode 0700

__all__ = ["CacheEntry", "FetchSettings", "Loaded", "PlacementCache", "PlacementUnavailable", "load_placement"]


class PlacementUnavailable(RuntimeError):
    """No trustworthy placement document is available, so this server must not run anything."""


@dataclass(frozen=True)
class FetchSettings:
    """Where the document comes from and how long a copy of it may be trusted.

    :param source: an ``https://`` or ``http://`` URL, a ``file://`` URL, or a local path.
    :param ttl: seconds a checked copy is used without reading the source again.
    :param max_staleness: seconds after the publisher last vouched for the copy past which it is not trusted.
    :param clock_skew: the most this server's clock may differ from the publisher's, in seconds.
    :param timeout: seconds to wait for the source to connect, and again to answer; a fetch, retries included,
        ends within ``timeout * (retries + 1)``.
    :param retries: how many times a failed request is retried (connection errors and 429/5xx answers).
    :param token_env: the name of an environment variable holding a bearer token for the source, if any; it is
        sent over ``https``, or plain HTTP to this host only.
    :param ca_bundle: a CA bundle (PEM file) the source's certificate is checked against (None: the system's CAs).
    :param public_key: the publisher's Ed25519 public key (base64): documents it did not sign are refused.
    :param cache_dir: the directory shared by every task process of this server; keep it across restarts.
    :param max_bytes: larger documents are rejected.
    """

    source: str
    ttl: float = 30.0
    max_staleness: float = 300.0
    clock_skew: float = 60.0
    timeout: float = 5.0
    retries: int = 2
    token_env: str | None = None
    ca_bundle: str | None = None
    public_key: str | None = None
    cache_dir: Path = DEFAULT_CACHE_DIR
    max_bytes: int = DEFAULT_MAX_BYTES

    def __post_init__(self) -> None:
        if not self.source:
            raise ValueError("no placement source is configured (set [placement] source)")
        if not math.isfinite(self.timeout) or self.timeout <= 0 or self.retries < 0:
            raise ValueError("timeout must be a finite number of seconds > 0, and retries >= 0")
        self.lease  # noqa: B018 - validates ttl, max_staleness and clock_skew
        if self.token_env and self.is_http and (problem := token_transport_problem(self.source, self.token_env)):
            raise ValueError(problem)
        if self.ca_bundle is not None and not Path(self.ca_bundle).is_file():
            raise ValueError(f"[placement] ca_bundle: no such file: {self.ca_bundle}")
        if self.public_key is not None:
            load_public_key(self.public_key)

    @property
    def lease(self) -> LeaseSettings:
        return LeaseSettings(self.ttl, self.max_staleness, self.clock_skew)

    @property
    def horizon(self) -> timedelta:
        """How far ahead of now a run may be dated and still run (decide()'s ``horizon``): the clock-skew margin.

        A later handover is scheduled at least the lease ahead, so it never moves a run dated this close; and a forced
        failover, moving a failed server's runs dated from now plus twice the skew, never moves one it may have run.
        """
        return timedelta(seconds=self.clock_skew)

    @property
    def is_http(self) -> bool:
        return is_http(self.source)

    @property
    def local_path(self) -> Path:
        return local_path(self.source)


@dataclass(frozen=True)
class Loaded:
    """A placement document fit to decide with, and how it was obtained."""

    placement: PlacementView
    age: float  # seconds since the publisher last vouched for it
    origin: str  # "cache", "source" or "fallback"
    note: str | None = None  # why a fallback copy is used
    requests: int = field(default=0, compare=False)  # requests this call made to the source


class PlacementCache:
    """One source's document on this server, as the lease allows it to be used.

    :param clock: this server's clock (tests pass a simulated one).
    :param started: when this server's stack started, on ``clock`` (default: the start of this container).
    """

    def __init__(
        self,
        settings: FetchSettings,
        clock: Callable[[], float] = time.time,
        started: Callable[[], float] = stack_started_at,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.started = started
        self.store = Store(settings.cache_dir, settings.source)
        self.lease = settings.lease

    @property
    def path(self) -> Path:
        return self.store.path

    def read(self) -> CacheEntry | None:
        """The store's entry (without its body: deciding reads the snapshot)."""
        return self.store.read()

    def load(self) -> Loaded:
        """Return a trustworthy document, asking the source at most once per TTL.

        :raises PlacementUnavailable: when the lease allows no copy to be used.
        """
        try:
            self.store.prepare()  # before anything in it is read
        except CacheDirError as exc:
            raise PlacementUnavailable(str(exc)) from None
        loaded = self._without_request(self.read())
        if loaded is not None:
            return loaded
        wait = self.settings.timeout * 2 * (self.settings.retries + 1) + 5
        try:
            with self.store.lock.acquire(timeout=wait):
                entry = self.read()
                loaded = self._without_request(entry)
                if loaded is not None:  # another process read the source while this one waited
                    return loaded
                return self._refresh(self._signed_copy(entry) or CacheEntry(self.settings.source))
        except filelock.Timeout:
            entry = self._signed_copy(self.read()) or CacheEntry(self.settings.source)
            return self._fallback(entry, f"another process has held the cache lock for over {wait:g} s")

    def _signed_copy(self, entry: CacheEntry | None) -> CacheEntry | None:
        """``entry``, unless a public key is configured that did not check its copy (then: no copy is held)."""
        key = self.settings.public_key
        if entry is None or key is None or entry.revision is None or entry.signed_by == key:
            return entry
        return replace(entry, etag=None, serial=None, revision=None, vouched_at=0.0, signed_by=None)

    def _without_request(self, entry: CacheEntry | None) -> Loaded | None:
        entry = self._signed_copy(entry)
        if entry is None:
            return None
        now, started = self.clock(), self.started()
        if is_fresh(entry, now, started, self.lease):
            view = self._view(entry)
            if view is not None:
                return Loaded(view, age(entry, now), "cache")
            return None
        if failed_recently(entry, now, started, self.lease):
            assert entry.failure is not None
            return self._fallback(entry, entry.failure)
        return None

    def _refresh(self, entry: CacheEntry) -> Loaded:
        now = self.clock()
        settings = self.settings
        source = open_source(
            settings.source,
            timeout=settings.timeout,
            retries=settings.retries,
            max_bytes=settings.max_bytes,
            token_env=settings.token_env,
            ca_bundle=settings.ca_bundle,
        )
        try:
            floor = self.store.floor()  # before any request: an unreadable floor accepts nothing
        except SerialFloorError as exc:
            raise PlacementUnavailable(str(exc)) from None
        requests_made = int(settings.is_http)
        try:
            fetched = source.fetch(entry.etag if entry.revision is not None else None)
            placement = body = None
            if fetched.status == 200:
                placement = parse_document(fetched.body, origin=settings.source, max_bytes=settings.max_bytes)
                if settings.public_key is not None:
                    verify(placement.meta, load_public_key(settings.public_key))
                body = fetched.body.decode("utf-8")
            new = accept(entry, fetched, placement, body, now=now, floor=floor)
            if placement is not None:
                new = replace(new, signed_by=settings.public_key)
        except DocumentError as exc:
            return self._failed(entry, now, f"the source served an invalid document: {exc}", requests_made)
        except SignatureError as exc:
            return self._failed(entry, now, f"{settings.source}: {exc}", requests_made)
        except Rejected as exc:
            return self._failed(entry, now, str(exc), requests_made)
        except (OSError, requests.RequestException) as exc:
            return self._failed(entry, now, f"cannot read {settings.source}: {describe_error(exc)}", requests_made)
        if new.serial is not None:
            self.store.raise_floor(new.serial)  # before the copy is used, so no restart can take it back
        view: PlacementView | None = placement
        if placement is not None and placement.revision != entry.revision:
            self._snapshot(placement)
        self.store.write(new)
        reason = distrust(new, now, self.started(), self.lease)
        if reason is not None:
            raise PlacementUnavailable(f"{settings.source}: {reason}")
        view = view or self._view(new)
        if view is None:
            raise PlacementUnavailable(f"{settings.source}: the cached copy is missing or damaged")
        return Loaded(view, age(new, now), "source", requests=requests_made)

    def _failed(self, entry: CacheEntry, now: float, reason: str, requests_made: int) -> Loaded:
        self.store.write(replace(entry, attempted_at=now, failure=reason))
        return replace(self._fallback(entry, reason), requests=requests_made)

    def _fallback(self, entry: CacheEntry, reason: str) -> Loaded:
        view = self._view(entry) if entry.revision is not None else None
        if view is None:
            raise PlacementUnavailable(f"{reason}; no earlier copy of the placement document is cached")
        now = self.clock()
        why_not = distrust(entry, now, self.started(), self.lease)
        if why_not is not None:
            raise PlacementUnavailable(f"{reason}; {why_not}")
        copy_age = age(entry, now)
        return Loaded(
            view,
            copy_age,
            "fallback",
            note=f"{reason}; using the copy the publisher vouched for {copy_age:.0f} s ago",
        )

    def _view(self, entry: CacheEntry) -> PlacementView | None:
        """The held copy, from its snapshot (rebuilt from the stored body if need be); None when it is gone."""
        assert entry.revision is not None
        try:
            return SnapshotPlacement.open(self.store.snapshot_path(entry.revision))
        except (OSError, sqlite3.Error):
            pass
        with_body = self.store.read(with_body=True)
        if with_body is None or with_body.body is None or with_body.revision != entry.revision:
            return None
        try:
            placement = parse_document(with_body.body, origin=self.settings.source, max_bytes=self.settings.max_bytes)
        except DocumentError:
            return None
        if placement.revision != entry.revision:
            return None
        self._snapshot(placement)
        return placement

    def _snapshot(self, placement: Placement) -> None:
        try:
            write_snapshot(placement, self.store.snapshot_path(placement.revision))
            self.store.prune_snapshots(keep=placement.revision)
        except (OSError, sqlite3.Error):
            pass  # deciding falls back to parsing the stored body


def load_placement(
    settings: FetchSettings, clock: Callable[[], float] = time.time, started: Callable[[], float] = stack_started_at
) -> Loaded:
    """Return a trustworthy placement document for ``settings.source`` (see :class:`PlacementCache`)."""
    return PlacementCache(settings, clock, started).load()


def read_source(source: str, timeout: float = 5.0, max_bytes: int = DEFAULT_MAX_BYTES) -> Placement:
    """Read and validate the document at ``source`` once, without the store or the lease.

    :raises DocumentError: when the document is not valid.
    :raises PlacementUnavailable: when the source cannot be read.
    """
    try:
        fetched = open_source(source, timeout=timeout, retries=0, max_bytes=max_bytes).fetch(None)
    except (OSError, requests.RequestException) as exc:
        raise PlacementUnavailable(f"cannot read {source}: {describe_error(exc)}") from None
    return parse_document(fetched.body, origin=source, max_bytes=max_bytes)
