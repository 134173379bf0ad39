"""Fetching the placement document: sources, the shared on-disk cache, and the lease.

Every task process on a server goes through one cache file per source. Within ``ttl`` of the last time the source
confirmed the document, the cached copy is used without a request. After that, one process (holding a file lock)
asks the source again, conditionally (ETag / Last-Modified), while the others wait for it and then read its result.

The copy is a lease: when the source is unreachable or serves something that is not a valid document, the last good
copy is used only while it is younger than ``max_staleness``; past that, :class:`PlacementUnavailable` is raised and
nothing runs. A failed attempt is remembered for ``ttl`` too, so an outage costs one request per TTL, not one per
task.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import filelock
import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from airflow_placement import __version__
from airflow_placement.document import DEFAULT_MAX_BYTES, DocumentError, Placement, parse_document

DEFAULT_CACHE_DIR = Path(tempfile.gettempdir()) / "airflow-placement"


class PlacementUnavailable(RuntimeError):
    """No trustworthy placement document is available, so this server must not run anything."""


@dataclass(frozen=True)
class FetchSettings:
    """Where the document comes from and how long a copy of it may be trusted.

    :param source: an ``https://`` or ``http://`` URL, a ``file://`` URL, or a local path.
    :param ttl: seconds a confirmed copy is used without asking the source again.
    :param max_staleness: seconds after the last confirmation past which the copy is no longer trusted.
    :param timeout: seconds to wait for the source to connect, and again to answer.
    :param retries: how many times a failed request is retried (connection errors and 429/5xx answers).
    :param token_env: the name of an environment variable holding a bearer token for the source, if any.
    :param cache_dir: the directory shared by every task process of this server.
    :param max_bytes: larger documents are rejected.
    """

    source: str
    ttl: float = 30.0
    max_staleness: float = 300.0
    timeout: float = 5.0
    retries: int = 2
    token_env: str | None = None
    cache_dir: Path = DEFAULT_CACHE_DIR
    max_bytes: int = DEFAULT_MAX_BYTES

    def __post_init__(self) -> None:
        if not self.source:
            raise ValueError("no placement source is configured (set [placement] source)")
        if self.ttl < 0 or self.max_staleness <= 0 or self.timeout <= 0 or self.retries < 0:
            raise ValueError("ttl and retries must be >= 0, max_staleness and timeout > 0")
        if self.ttl >= self.max_staleness:
            raise ValueError(f"ttl ({self.ttl:g} s) must be shorter than max_staleness ({self.max_staleness:g} s)")

    @property
    def is_http(self) -> bool:
        return urlsplit(self.source).scheme in ("http", "https")

    @property
    def local_path(self) -> Path:
        parts = urlsplit(self.source)
        return Path(parts.path) if parts.scheme == "file" else Path(self.source)


@dataclass
class CacheEntry:
    """What the cache file holds for one source."""

    source: str
    body: str | None = None  # the last good document
    etag: str | None = None
    last_modified: str | None = None
    confirmed_at: float = 0.0  # when the source last served (or confirmed, with 304) the good document
    attempted_at: float = 0.0  # when the source was last asked, successfully or not
    failure: str | None = None  # why the last attempt failed, if it did


@dataclass(frozen=True)
class Loaded:
    """A placement document fit to decide with, and how it was obtained."""

    placement: Placement
    age: float  # seconds since the source last confirmed it
    origin: str  # "cache", "source" or "fallback"
    note: str | None = None  # why a fallback copy is used
    requests: int = field(default=0, compare=False)  # requests this call made to the source


class _Source:
    """Reads the document from its source; HTTP through one session per process, with retries."""

    _sessions: dict[tuple[int, float], requests.Session] = {}  # noqa: RUF012 - a per-process pool, on purpose

    def __init__(self, settings: FetchSettings) -> None:
        self.settings = settings

    def session(self) -> requests.Session:
        key = (self.settings.retries, self.settings.timeout)
        if key not in self._sessions:
            retry = Retry(
                total=self.settings.retries,
                backoff_factor=0.2,
                status_forcelist=(429, 500, 502, 503, 504),
                allowed_methods=("GET",),
                respect_retry_after_header=False,  # a Retry-After of minutes would hold the task; the lease covers
                raise_on_status=False,
            )
            session = requests.Session()
            session.mount("http://", HTTPAdapter(max_retries=retry))
            session.mount("https://", HTTPAdapter(max_retries=retry))
            session.headers["User-Agent"] = f"airflow-placement/{__version__}"
            self._sessions[key] = session
        return self._sessions[key]

    def fetch(self, cached: CacheEntry | None) -> tuple[int, bytes, dict[str, str]]:
        """Return (status, body, headers); status 304 means the cached copy is still current."""
        if not self.settings.is_http:
            path = self.settings.local_path
            with path.open("rb") as handle:
                return 200, handle.read(self.settings.max_bytes + 1), {}
        headers = {"Cache-Control": "no-cache", "Accept": "application/yaml, text/yaml, text/plain, */*"}
        if cached is not None and cached.body is not None:
            if cached.etag:
                headers["If-None-Match"] = cached.etag
            if cached.last_modified:
                headers["If-Modified-Since"] = cached.last_modified
        token = os.environ.get(self.settings.token_env) if self.settings.token_env else None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        with self.session().get(
            self.settings.source, headers=headers, timeout=self.settings.timeout, stream=True, allow_redirects=True
        ) as response:
            if response.status_code == 304:
                return 304, b"", dict(response.headers)
            if response.status_code != 200:
                raise OSError(f"HTTP {response.status_code} {response.reason}")
            body = bytearray()
            for chunk in response.iter_content(64 * 1024):
                body += chunk
                if len(body) > self.settings.max_bytes:
                    break
            return 200, bytes(body), dict(response.headers)


_parsed: dict[str, Placement] = {}  # body digest -> parsed document, so a warm cache does not re-validate


def _parse(body: str, origin: str, max_bytes: int) -> Placement:
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
    placement = _parsed.get(digest)
    if placement is None:
        placement = parse_document(body, origin=origin, max_bytes=max_bytes)
        if len(_parsed) > 16:
            _parsed.clear()
        _parsed[digest] = placement
    return placement


class PlacementCache:
    """The shared on-disk cache of one source's document on this server."""

    def __init__(self, settings: FetchSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        key = hashlib.sha256(settings.source.encode("utf-8")).hexdigest()[:16]
        self.path = settings.cache_dir / f"{key}.json"
        self.lock = filelock.FileLock(settings.cache_dir / f"{key}.lock")

    def read(self) -> CacheEntry | None:
        """The cache file's entry for this source; None when there is none or it is not usable."""
        try:
            data: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
            entry = CacheEntry(**data)
            if not (
                entry.source == self.settings.source
                and isinstance(entry.body, str | None)
                and all(isinstance(t, int | float) for t in (entry.confirmed_at, entry.attempted_at))
            ):
                return None
            if entry.body is not None:
                self._parse(entry.body)  # a copy that does not validate (now) is no copy
        except (OSError, ValueError, TypeError):
            return None
        return entry

    def write(self, entry: CacheEntry) -> None:
        self.settings.cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.settings.cache_dir, prefix=".entry-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(entry.__dict__, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def load(self) -> Loaded:
        """Return a trustworthy document, asking the source at most once per TTL.

        :raises PlacementUnavailable: when no copy younger than ``max_staleness`` is available.
        """
        fresh = self._fresh(self.read())
        if fresh is not None:
            return fresh
        self.settings.cache_dir.mkdir(parents=True, exist_ok=True)
        wait = self.settings.timeout * 2 * (self.settings.retries + 1) + 5
        try:
            with self.lock.acquire(timeout=wait):
                entry = self.read()
                fresh = self._fresh(entry)
                if fresh is not None:  # another process refreshed it while we waited
                    return fresh
                return self._refresh(entry)
        except filelock.Timeout:
            return self._fallback(self.read(), f"another process has held the cache lock for over {wait:g} s")

    def _fresh(self, entry: CacheEntry | None) -> Loaded | None:
        """The cached copy, when it needs no request: confirmed, or last attempted, within the TTL."""
        if entry is None:
            return None
        now = self.clock()
        # A time in the future means this server's clock went back: nothing recorded then is trusted to be fresh.
        if entry.body is not None and 0 <= now - entry.confirmed_at < self.settings.ttl:
            return Loaded(self._parse(entry.body), now - entry.confirmed_at, "cache")
        if entry.failure and 0 <= now - entry.attempted_at < self.settings.ttl:
            return self._fallback(entry, entry.failure)
        return None

    def _refresh(self, entry: CacheEntry | None) -> Loaded:
        now = self.clock()
        entry = entry or CacheEntry(self.settings.source)
        try:
            status, body, headers = _Source(self.settings).fetch(entry)
            if status == 304 and entry.body is not None:
                placement = self._parse(entry.body)
                self.write(replace(entry, confirmed_at=now, attempted_at=now, failure=None))
                return Loaded(placement, 0.0, "source", requests=1)
            text = body.decode("utf-8", errors="replace") if len(body) <= self.settings.max_bytes else None
            placement = parse_document(body, origin=self.settings.source, max_bytes=self.settings.max_bytes)
        except DocumentError as exc:
            return self._failed(entry, now, f"the source served an invalid document: {exc}")
        except (OSError, requests.RequestException) as exc:
            return self._failed(entry, now, f"cannot read {self.settings.source}: {_describe(exc)}")
        assert text is not None  # parse_document rejected anything over max_bytes
        self.write(
            CacheEntry(
                self.settings.source,
                body=text,
                etag=headers.get("ETag"),
                last_modified=headers.get("Last-Modified"),
                confirmed_at=now,
                attempted_at=now,
            )
        )
        return Loaded(placement, 0.0, "source", requests=int(self.settings.is_http))

    def _failed(self, entry: CacheEntry, now: float, reason: str) -> Loaded:
        self.write(replace(entry, attempted_at=now, failure=reason))
        loaded = self._fallback(entry, reason)
        return replace(loaded, requests=int(self.settings.is_http))

    def _fallback(self, entry: CacheEntry | None, reason: str) -> Loaded:
        if entry is None or entry.body is None:
            raise PlacementUnavailable(f"{reason}; no earlier copy of the placement document is cached")
        age = self.clock() - entry.confirmed_at
        if age < 0:
            raise PlacementUnavailable(
                f"{reason}; the last good copy was confirmed {-age:.0f} s in the future (did the clock go back?)"
            )
        if age > self.settings.max_staleness:
            raise PlacementUnavailable(
                f"{reason}; the last good copy is {age:.0f} s old, over the maximum staleness of "
                f"{self.settings.max_staleness:g} s"
            )
        return Loaded(
            self._parse(entry.body), age, "fallback", note=f"{reason}; using the copy confirmed {age:.0f} s ago"
        )

    def _parse(self, body: str) -> Placement:
        return _parse(body, self.settings.source, self.settings.max_bytes)


def _describe(exc: BaseException) -> str:
    """A one-line reason without the noise of nested urllib3 exception reprs."""
    if isinstance(exc, requests.exceptions.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.ConnectionError):
        # A read timeout that used up the retries arrives as a ConnectionError wrapping urllib3's MaxRetryError.
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        return "timed out" if isinstance(reason, urllib3.exceptions.ReadTimeoutError) else "connection failed"
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def load_placement(settings: FetchSettings, clock: Callable[[], float] = time.time) -> Loaded:
    """Return a trustworthy placement document for ``settings.source`` (see :class:`PlacementCache`)."""
    return PlacementCache(settings, clock).load()


def read_source(source: str, timeout: float = 5.0, max_bytes: int = DEFAULT_MAX_BYTES) -> Placement:
    """Read and validate the document at ``source`` once, without the cache.

    :raises DocumentError: when the document is not valid.
    :raises PlacementUnavailable: when the source cannot be read.
    """
    settings = FetchSettings(source, ttl=0, max_staleness=1, timeout=timeout, retries=0, max_bytes=max_bytes)
    try:
        _, body, _ = _Source(settings).fetch(None)
    except (OSError, requests.RequestException) as exc:
        raise PlacementUnavailable(f"cannot read {source}: {_describe(exc)}") from None
    return parse_document(body, origin=source, max_bytes=max_bytes)
