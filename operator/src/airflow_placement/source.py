"""Where the placement document comes from: an HTTP(S) URL or a local file.

A source only reads. What a read is worth is the lease policy's business (:mod:`airflow_placement.lease`): an HTTP
answer is the source's own word that this is the document now; reading a local file is nobody's word, so a file's
copy is trusted only as far as the publisher's issue or renewal time written in it.
"""

from __future__ import annotations

import ipaddress
import os
import re
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Protocol
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from airflow_placement import __version__

MAX_REDIRECTS = 5
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_TOKEN = re.compile(r"[\x21-\x7e]+")  # visible ASCII: no control character, no space, nothing a header cannot carry


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


class TokenError(OSError):
    """The token may not be sent; ``str()`` says why in one line and never holds the token."""


class DeadlineExceeded(OSError):
    """A fetch, its retries and redirects included, ran out of time."""


def read_token(env: str | None) -> str | None:
    """The bearer token in the environment variable ``env`` (None: no token), checked before it goes anywhere.

    :raises TokenError: when it holds a control character, a space or a character outside ASCII.
    """
    token = os.environ.get(env) if env else None
    if not token:
        return None
    if not _TOKEN.fullmatch(token):
        raise TokenError(
            f"the token in ${env} holds a control character, a space or a non-ASCII character; it is not sent"
        )
    return token


def is_loopback(url: str) -> bool:
    """Whether ``url`` names this host (127.0.0.0/8, ::1, localhost): traffic to it never leaves the machine."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_transport_problem(url: str, token_env: str) -> str | None:
    """Why the token of ``token_env`` may not be sent to ``url`` (None: it may): plain HTTP only to this host."""
    if urlsplit(url).scheme == "https" or is_loopback(url):
        return None
    return (
        f"refusing to send the token of ${token_env} over plain HTTP to {urlsplit(url).hostname or url}: use "
        "https:// (plain HTTP carries a token only to 127.0.0.1, ::1 or localhost)"
    )


@dataclass(frozen=True)
class HttpSource:
    """GET with retries, conditional only on a strong ETag (never ``If-Modified-Since``: one-second dates lie).

    A fetch, its retries, redirects and the reading of the body included, ends within :attr:`deadline`
    (``timeout * (retries + 1)`` seconds) however slowly the source answers. Redirects are followed, never from
    ``https`` to ``http``; the token goes only to the configured URL's origin (scheme, host and port), and only
    over ``https`` or to this host.
    """

    url: str
    timeout: float
    retries: int
    max_bytes: int
    token_env: str | None = None
    ca_bundle: str | None = None

    @property
    def deadline(self) -> float:
        """Seconds a fetch may take in all."""
        return self.timeout * (self.retries + 1)

    def fetch(self, etag: str | None) -> Fetched:
        deadline = time.monotonic() + self.deadline
        token = read_token(self.token_env)
        try:
            return self._fetch(strong_etag(etag), token, deadline)
        except (requests.RequestException, ValueError) as exc:
            if token and token in f"{exc} {exc.args!r}":  # never let the token into a message
                raise OSError("the request failed (its details are withheld: they hold the token)") from None
            raise

    def _fetch(self, etag: str | None, token: str | None, deadline: float) -> Fetched:
        headers = {"Cache-Control": "no-cache", "Accept": "application/yaml, text/yaml, text/plain, */*"}
        if etag:
            headers["If-None-Match"] = etag
        origin = urlsplit(self.url)[:2]
        url = self.url
        for _ in range(MAX_REDIRECTS + 1):
            sent = dict(headers)
            if token and self.token_env and urlsplit(url)[:2] == origin:
                if problem := token_transport_problem(url, self.token_env):
                    raise TokenError(problem)
                sent["Authorization"] = f"Bearer {token}"
            with self._get(url, sent, deadline) as response:
                if response.is_redirect:
                    url = _redirect(url, response.headers["Location"])
                    continue
                if response.status_code == 304:
                    if etag is None:
                        raise OSError("HTTP 304 to a request that asked for no validation")
                    return Fetched(304, b"", etag, vouches=True)
                if response.status_code != 200:
                    raise OSError(f"HTTP {response.status_code} {response.reason}")
                body = self._read(response, deadline)
                return Fetched(200, body, strong_etag(response.headers.get("ETag")), vouches=True)
        raise OSError(f"more than {MAX_REDIRECTS} redirects")

    def _get(self, url: str, headers: dict[str, str], deadline: float) -> requests.Response:
        """One GET, retried on connection errors, timeouts and 429/5xx answers while the deadline allows."""
        attempt = 0
        while True:
            wait = min(self.timeout, _remaining(deadline))
            try:
                response = _session().get(
                    url,
                    headers=headers,
                    timeout=wait,
                    stream=True,
                    allow_redirects=False,
                    verify=self.ca_bundle or True,
                )
            except (requests.ConnectionError, requests.Timeout):
                if attempt == self.retries:
                    raise
            else:
                if response.status_code not in RETRY_STATUSES or attempt == self.retries:
                    return response
                response.close()  # a Retry-After is not waited for: the lease covers an outage
            time.sleep(min(0.2 * 2**attempt, _remaining(deadline)))
            attempt += 1

    def _read(self, response: requests.Response, deadline: float) -> bytes:
        """The body, up to one byte over ``max_bytes``, read before the deadline however slowly it comes."""
        raw = response.raw
        sock = getattr(getattr(raw, "connection", None), "sock", None)
        body = bytearray()
        while len(body) <= self.max_bytes:
            left = _remaining(deadline)
            if sock is not None:
                sock.settimeout(min(self.timeout, left))  # no read waits past the deadline
            try:
                chunk = raw.read1(64 * 1024, decode_content=True)
            except (urllib3.exceptions.ReadTimeoutError, TimeoutError):
                raise DeadlineExceeded("timed out while the answer was read") from None
            except urllib3.exceptions.HTTPError as exc:
                raise OSError(f"the answer broke off ({type(exc).__name__})") from None
            if not chunk:
                break
            body += chunk
        return bytes(body)


def _redirect(url: str, location: str) -> str:
    """Where a redirect from ``url`` leads; never from ``https`` to plain ``http``."""
    target = urljoin(url, location)
    scheme = urlsplit(target).scheme
    if scheme not in ("http", "https"):
        raise OSError(f"the source redirected to a {scheme!r} URL; refused")
    if urlsplit(url).scheme == "https" and scheme != "https":
        raise OSError(f"the source redirected from https to plain http ({urlsplit(target).hostname}); refused")
    return target


@cache
def _session() -> requests.Session:
    """One connection pool per process, with no retries of its own: :class:`HttpSource` retries in its deadline."""
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=0))
    session.mount("https://", HTTPAdapter(max_retries=0))
    session.headers["User-Agent"] = f"airflow-placement/{__version__}"
    return session


def _remaining(deadline: float) -> float:
    """Seconds left before ``deadline``.

    :raises DeadlineExceeded: when none are.
    """
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded("timed out: the fetch used up its time, retries included")
    return left


def is_http(source: str) -> bool:
    return urlsplit(source).scheme in ("http", "https")


def local_path(source: str) -> Path:
    parts = urlsplit(source)
    return Path(parts.path) if parts.scheme == "file" else Path(source)


def open_source(
    source: str,
    *,
    timeout: float,
    retries: int,
    max_bytes: int,
    token_env: str | None = None,
    ca_bundle: str | None = None,
) -> HttpSource | FileSource:
    if is_http(source):
        return HttpSource(source, timeout, retries, max_bytes, token_env, ca_bundle)
    return FileSource(local_path(source), max_bytes)


def describe_error(exc: BaseException) -> str:
    """A one-line reason without the noise of nested urllib3 exception reprs."""
    if isinstance(exc, requests.exceptions.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.SSLError):
        return "the TLS handshake failed (is the certificate trusted? [placement] ca_bundle can name its CA)"
    if isinstance(exc, requests.exceptions.ConnectionError):
        # A read timeout can arrive as a ConnectionError wrapping urllib3's MaxRetryError.
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        return "timed out" if isinstance(reason, urllib3.exceptions.ReadTimeoutError) else "connection failed"
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
