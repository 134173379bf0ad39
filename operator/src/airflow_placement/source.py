"""Where the placement document comes from: an HTTP(S) URL or a local file.

A source only reads. What a read is worth is the lease policy's business (:mod:`airflow_placement.lease`): an HTTP
answer is the source's own word that this is the document now; reading a local file is nobody's word, so a file's
copy is trusted only as far as the publisher's issue or renewal time written in it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from airflow_placement import __version__


@dataclass(frozen=True)
class Fetched:
    """One answer of a source.

    :param status: 200 (``body`` is the document) or 304 (the copy with ``etag`` is still current).
    :param etag: the strong ETag of the body, if the source gave one; weak ETags are never kept.
    :param vouches: whether the answer itself vouches for the document (HTTP) or only its ``@meta`` can (a file).
    """

    status: int
    body: bytes
    etag: str | None
    vouches: bool


class Source(Protocol):
    def fetch(self, etag: str | None) -> Fetched: ...


@dataclass(frozen=True)
class FileSource:
    path: Path
    max_bytes: int

    def fetch(self, etag: str | None) -> Fetched:  # a file has no conditional reads: etag is unused
        with self.path.open("rb") as handle:
            return Fetched(200, handle.read(self.max_bytes + 1), None, vouches=False)


def strong_etag(value: str | None) -> str | None:
    """``value`` if it is a strong ETag (``"..."``); a weak one (``W/"..."``) may stand for other bytes."""
    if value and value.startswith('"') and value.endswith('"') and len(value) >= 2:
        return value
    return None


@dataclass(frozen=True)
class HttpSource:
    """GET with retries, conditional only on a strong ETag (never ``If-Modified-Since``: one-second dates lie)."""

    url: str
    timeout: float
    retries: int
    max_bytes: int
    token_env: str | None = None

    _sessions: ClassVar[dict[tuple[int, float], requests.Session]] = {}  # one pool per process

    def session(self) -> requests.Session:
        key = (self.retries, self.timeout)
        if key not in self._sessions:
            retry = Retry(
                total=self.retries,
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

    def fetch(self, etag: str | None) -> Fetched:
        headers = {"Cache-Control": "no-cache", "Accept": "application/yaml, text/yaml, text/plain, */*"}
        if etag := strong_etag(etag):
            headers["If-None-Match"] = etag
        token = os.environ.get(self.token_env) if self.token_env else None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        with self.session().get(
            self.url, headers=headers, timeout=self.timeout, stream=True, allow_redirects=True
        ) as response:
            if response.status_code == 304:
                if etag is None:
                    raise OSError("HTTP 304 to a request that asked for no validation")
                return Fetched(304, b"", etag, vouches=True)
            if response.status_code != 200:
                raise OSError(f"HTTP {response.status_code} {response.reason}")
            body = bytearray()
            for chunk in response.iter_content(64 * 1024):
                body += chunk
                if len(body) > self.max_bytes:
                    break
            return Fetched(200, bytes(body), strong_etag(response.headers.get("ETag")), vouches=True)


def is_http(source: str) -> bool:
    return urlsplit(source).scheme in ("http", "https")


def local_path(source: str) -> Path:
    parts = urlsplit(source)
    return Path(parts.path) if parts.scheme == "file" else Path(source)


def open_source(
    source: str, *, timeout: float, retries: int, max_bytes: int, token_env: str | None = None
) -> HttpSource | FileSource:
    if is_http(source):
        return HttpSource(source, timeout, retries, max_bytes, token_env)
    return FileSource(local_path(source), max_bytes)


def describe_error(exc: BaseException) -> str:
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
