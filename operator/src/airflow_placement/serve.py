"""``airflow-placement serve``: the confirming source. Serves the placement document and remembers who confirmed it.

Every server fetches the document with its own bearer token (the ``[placement] token_env`` setting names the
variable that holds it), so the source knows which server asks; one server's token cannot confirm another's copy.
Before the answer (200, or 304 to the strong ETag) is sent, the time is recorded for that server and the record is
synced to disk: a lost record would make a live server look stopped. A server's lease on its copy ends at most
``max_staleness`` after the source last answered it, so a server whose last confirmation is older than that (plus
the clock-skew margin) holds no copy it may run anything from, and can get one only from this source, which would
record it first. That is the proof the watchdog (:mod:`airflow_placement.watch`) needs before it moves a silent
server's runs at once.

The proof holds only while the servers read the document nowhere else: no mirror, no second source, no file copy.

What other sources can offer:

- **A Git forge's raw files, a CDN, an object store**: every server reads the same URL, usually with one shared
  credential or none. The logs, if any, do not say which server asked, are written after the answer, and a cache in
  front answers without asking the origin. No proof: only scheduled handovers are safe with them.
- **A plain web server** (``python -m http.server``, nginx serving a file): its access log names the client's
  address, not a credential, and is written after the answer, buffered. Per-server basic-auth users and a synced log
  would come close; nothing here reads such logs.
- **A file on each server**: nobody is asked, so nothing can be recorded.

Endpoints (one process per state directory):

- ``GET /PATH`` (a server's token): the document, with a strong ETag; 304 to ``If-None-Match`` with it. 401 for an
  unknown token, 403 while the server is fenced, 503 before anything was uploaded.
- ``PUT /PATH`` (the publisher's token): a new document. It must carry ``@meta``; its serial must be higher than the
  served one (or the same serial with the same content, a renewal).
- ``GET /_confirmations`` (the publisher's token; this and the next two live in PATH's directory): the record, as
  JSON.
- ``POST /_fence`` (the publisher's token; ``{"server": NAME, "stopped_for": SECONDS}``): if NAME has not confirmed
  for SECONDS (on this source's clock), refuse it every document up to the served serial, durably, and say so (200);
  else 409. A fenced server gets documents again once a newer serial is uploaded. The watchdog fences a silent
  server before it issues the document that moves its runs at once, so that the server cannot fetch the old document
  and run from it in between.
- ``POST /_unfence`` (the publisher's token; ``{"server": NAME}``): lift the fence, when the publish it was made for
  issued nothing (the served document still holds).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import filelock
import requests
import yaml

from airflow_placement.document import DocumentError, Placement, normalize_host, parse_document
from airflow_placement.files import replace_file
from airflow_placement.source import read_token, token_transport_problem

DOCUMENT_FILE = "document.yaml"
RECORD_FILE = "confirmations.json"
MAX_UPLOAD = 4 * 1024 * 1024


class ServeError(RuntimeError):
    """The source cannot start or was asked something it refuses; ``str()`` is one line."""


def token_hash(token: str) -> str:
    """How a token is written in the tokens file: ``sha256:`` and the hex digest (the token itself is never stored)."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Tokens:
    """Who may do what: the publisher's token hash, and each server's.

    The file (YAML)::

        publisher: sha256:...          # may upload documents, read the record and fence servers
        servers:
          server-1: sha256:...         # may fetch the document, and confirms only its own copy
          server-2: sha256:...
    """

    publisher: str
    servers: dict[str, str]  # token hash -> server name

    @classmethod
    def load(cls, path: Path) -> Tokens:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ServeError(f"{path}: cannot read the tokens file: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("servers"), dict):
            raise ServeError(f"{path}: the tokens file must map 'publisher' to a hash and 'servers' to name: hash")
        hashes: dict[str, str] = {}
        for name, value in [("publisher", data.get("publisher")), *data["servers"].items()]:
            if not isinstance(value, str) or not value.startswith("sha256:") or len(value) != 71:
                raise ServeError(f"{path}: {name}: not a token hash (sha256: and 64 hex digits)")
            if value in hashes:
                raise ServeError(f"{path}: {name} has the same token as {hashes[value]}")
            hashes[value] = str(name)
        servers = {value: normalize_host(str(name)) for name, value in data["servers"].items()}
        return cls(publisher=str(data["publisher"]), servers=servers)

    def server(self, token: str | None) -> str | None:
        return self.servers.get(token_hash(token)) if token else None

    def is_publisher(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(token_hash(token or ""), self.publisher)


@dataclass(frozen=True)
class Served:
    """The served document: its bytes, their strong ETag, its serial and revision."""

    body: bytes
    etag: str
    serial: int
    revision: str
    placement: Placement = field(repr=False, compare=False)


def _served(body: bytes, origin: str) -> Served:
    placement = parse_document(body, origin=origin)
    if placement.meta is None:
        raise ValueError(f"{origin} has no @meta: this source serves only documents with a serial")
    etag = f'"{hashlib.sha256(body).hexdigest()[:40]}"'
    return Served(body, etag, placement.meta.serial, placement.revision, placement)


@dataclass(frozen=True)
class Move:
    """Runs of ``what`` dated from ``at`` that the served document gives ``old`` and an upload gives ``new``."""

    what: str
    at: datetime
    old: str
    new: str


def early_moves(served: Placement, new: Placement, now: datetime, lead: float) -> list[Move]:
    """The runs ``new`` gives another owner than ``served`` does, dated before ``now`` + ``lead``.

    The servers hold ``served`` until they fetch ``new``, and may act on it for up to the lease after their last
    fetch. A change of owner for runs dated sooner than that can therefore run twice: the old owner from its copy,
    the new one from ``new``. Only a server that has provably stopped may lose runs that soon. Each entry of either
    document is compared with what decides its key in the other (its own entry, else what a DAG named so would
    match), at ``now`` and at every handover before ``now`` + ``lead`` in either; a run without an owner on either
    side runs nowhere and moves nothing.
    """
    horizon = now + timedelta(seconds=lead)
    old_own, new_own = ({e.key: e for e in placement.entries} for placement in (served, new))
    moves: list[Move] = []
    for key in dict.fromkeys([*old_own, *new_own]):
        old_entry = old_own.get(key) or served.entry_for(key)
        new_entry = new_own.get(key) or new.entry_for(key)
        if old_entry is None or new_entry is None:
            continue
        tasks = {t for own in (old_own, new_own) if key in own for t in own[key].tasks}
        for task in (None, *sorted(tasks)):
            old_schedule, new_schedule = old_entry.schedule_for(task)[0], new_entry.schedule_for(task)[0]
            times = {now} | {h.at for sched in (old_schedule, new_schedule) for h in sched.handovers if h.at < horizon}
            for at in sorted(times):
                old, owner = old_schedule.owner_at(at), new_schedule.owner_at(at)
                if old != owner:
                    moves.append(Move(key if task is None else f"{key}.{task}", at, old, owner))
                    break
    return moves


class ConfirmingSource:
    """The state behind ``serve``: the served document and the record of confirmations, in ``state_dir``.

    Every method holds one lock, so a confirmation and a fence are ordered: a server fenced is refused from then on,
    and a confirmation recorded before a fence makes the fence refuse.

    :param clock: this source's clock (tests pass one moved by hand).
    :param min_lead: the servers' lease (``max_staleness`` plus the clock-skew margin). With it, an upload that gives
        runs dated sooner than that another owner is refused, unless their old owner has provably stopped (no
        confirmation for that long): a publish whose upload came too late, or a forced move of a live server.
    """

    def __init__(
        self, state_dir: Path, tokens: Tokens, clock: Callable[[], float] = time.time, min_lead: float = 0.0
    ) -> None:
        self.dir = state_dir
        self.tokens = tokens
        self.clock = clock
        self.min_lead = min_lead
        self._lock = threading.Lock()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._process_lock = filelock.FileLock(self.dir / ".serve.lock")
        try:
            self._process_lock.acquire(timeout=0)
        except filelock.Timeout:
            raise ServeError(f"{self.dir}: another airflow-placement serve uses this state directory") from None
        self.record = self._load_record()
        self.served = self._load_document()

    def close(self) -> None:
        self._process_lock.release()

    def _load_record(self) -> dict[str, Any]:
        path = self.dir / RECORD_FILE
        try:
            record: dict[str, Any] = json.loads(path.read_bytes())
        except FileNotFoundError:
            record = {"created": self.clock(), "servers": {}}
            replace_file(path, json.dumps(record).encode(), sync_directory=True)
            return record
        except (OSError, ValueError) as exc:
            # Starting afresh would make every server look silent since now: safe, but hide a damaged disk. Stop.
            raise ServeError(
                f"{path}: the record of confirmations is unreadable ({exc}); repair or remove it"
            ) from None
        if not isinstance(record.get("created"), float | int) or not isinstance(record.get("servers"), dict):
            raise ServeError(f"{path}: not a record of confirmations; repair or remove it")
        return record

    def _save_record(self) -> None:
        replace_file(self.dir / RECORD_FILE, json.dumps(self.record, sort_keys=True).encode(), sync_directory=True)

    def _load_document(self) -> Served | None:
        path = self.dir / DOCUMENT_FILE
        try:
            body = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return _served(body, origin=str(path))
        except (DocumentError, ValueError) as exc:
            raise ServeError(f"{path}: the served document is not valid ({exc}); upload a good one") from None

    # --- the servers' side ---

    def fetch(self, server: str, etag: str | None) -> tuple[int, Served | None, str]:
        """A server's request: (status, the document for a 200, a reason for anything else)."""
        with self._lock:
            served = self.served
            if served is None:
                return 503, None, "nothing has been published to this source yet"
            entry = self.record["servers"].get(server, {})
            fenced = entry.get("fenced_through")
            if fenced is not None and served.serial <= fenced:
                return 403, None, f"{server} is fenced: it was failed over; it gets the document after serial {fenced}"
            servers = self.record["servers"]
            servers[server] = {**entry, "last": self.clock(), "serial": served.serial}
            try:
                self._save_record()  # before the answer: a lost confirmation would make a live server look stopped
            except OSError as exc:
                if entry:
                    servers[server] = entry
                else:
                    del servers[server]
                return 503, None, f"cannot record the confirmation, so no answer: {exc.strerror or exc}"
            if etag is not None and hmac.compare_digest(etag.encode(), served.etag.encode()):
                return 304, served, ""
            return 200, served, ""

    # --- the publisher's side ---

    def upload(self, body: bytes) -> int:
        """Serve ``body`` from now on; returns its serial. A fence lifts once a newer serial is served."""
        new = _served(body, origin="the uploaded document")  # DocumentError is a ValueError
        with self._lock:
            current = self.served
            if current is not None:
                if new.serial < current.serial:
                    raise ValueError(f"serial {new.serial} is older than the served serial {current.serial}")
                if new.serial == current.serial and new.revision != current.revision:
                    raise ValueError(f"serial {current.serial} is served already, with other content")
                self._check_lead(current.placement, new.placement)
            replace_file(self.dir / DOCUMENT_FILE, body, sync_directory=True)
            self.served = new
            return new.serial

    def _check_lead(self, served: Placement, new: Placement) -> None:
        if self.min_lead <= 0:
            return
        now = self.clock()
        for move in early_moves(served, new, datetime.fromtimestamp(now, UTC), self.min_lead):
            entry = self.record["servers"].get(move.old, {})
            silent = now - float(entry.get("last", self.record["created"]))
            if silent < self.min_lead:
                ahead = max(move.at.timestamp() - now, 0.0)
                raise ValueError(
                    f"{move.what} would move from {move.old} to {move.new} for runs dated from "
                    f"{move.at:%Y-%m-%dT%H:%M:%SZ}, {ahead:.0f} s from now, less than the lease of "
                    f"{self.min_lead:g} s, and {move.old} confirmed its copy {silent:.0f} s ago, so it may still run "
                    "from it: publish again (an upload that came late gets a new handover the lease ahead), or, to "
                    f"move at once, wait until {move.old} has been silent for {self.min_lead:g} s "
                    f"({self.min_lead - silent:.0f} s more)"
                )

    def fence(self, server: str, stopped_for: float) -> tuple[bool, float]:
        """Fence ``server`` if it has not confirmed for ``stopped_for`` seconds; returns (fenced, last confirmation).

        The last confirmation of a server never seen is the creation of the record: it has confirmed nothing since.
        """
        server = normalize_host(server)
        with self._lock:
            entry = self.record["servers"].get(server, {})
            last = float(entry.get("last", self.record["created"]))
            if self.clock() - last < stopped_for:
                return False, last
            through = self.served.serial if self.served else 0
            self.record["servers"][server] = {**entry, "fenced_through": max(through, entry.get("fenced_through", 0))}
            self._save_record()
            return True, last

    def unfence(self, server: str) -> None:
        """Lift ``server``'s fence: the publish it was made for issued nothing, so the served document still holds."""
        server = normalize_host(server)
        with self._lock:
            entry = self.record["servers"].get(server)
            if entry and "fenced_through" in entry:
                self.record["servers"][server] = {k: v for k, v in entry.items() if k != "fenced_through"}
                self._save_record()

    def confirmations(self) -> dict[str, Any]:
        with self._lock:
            served = self.served.serial if self.served else None
            return {"now": self.clock(), "serial": served, **json.loads(json.dumps(self.record))}


class ServeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    source: ConfirmingSource
    path_name: str
    log: Callable[[str], None]

    def _token(self) -> str | None:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _text(self, status: int, text: str) -> None:
        self._send(status, (text + "\n").encode(), {"Content-Type": "text/plain; charset=utf-8"})

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json"})

    def _path(self) -> str:
        return self.path.split("?", 1)[0]

    def _beside(self, name: str) -> str:
        """The path of the publisher's endpoint ``name``, in the document's directory (as the client finds it)."""
        return self.path_name.rsplit("/", 1)[0] + "/" + name

    def do_GET(self) -> None:
        token = self._token()
        if self._path() == self._beside("_confirmations"):
            if not self.source.tokens.is_publisher(token):
                self._text(401, "the publisher's token is needed")
                return
            self._json(200, self.source.confirmations())
            return
        if self._path() != self.path_name:
            self._text(404, f"only {self.path_name} is served here")
            return
        server = self.source.tokens.server(token)
        if server is None:
            self._text(401, "a server's own bearer token is needed")
            return
        status, served, reason = self.source.fetch(server, self.headers.get("If-None-Match"))
        if served is None:
            self._text(status, reason)
            return
        headers = {"ETag": served.etag, "Content-Type": "application/yaml"}
        self._send(status, served.body if status == 200 else b"", headers)

    def _body(self) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self._text(400, "a Content-Length is needed")
            self.close_connection = True
            return None
        if length > MAX_UPLOAD:
            self._text(413, f"larger than {MAX_UPLOAD} bytes")
            self.close_connection = True
            return None
        return self.rfile.read(length)

    def _publisher_body(self, paths: tuple[str, ...], not_found: str) -> bytes | None:
        """The body of the publisher's request to one of ``paths``; None once another answer has been sent."""
        if self._path() not in paths:
            self._text(404, not_found)
            return None
        if not self.source.tokens.is_publisher(self._token()):
            self._text(401, "the publisher's token is needed")
            return None
        return self._body()

    def do_PUT(self) -> None:
        body = self._publisher_body((self.path_name,), f"only {self.path_name} is served here")
        if body is None:
            return
        try:
            serial = self.source.upload(body)
        except ValueError as exc:
            self._text(409, str(exc))
            return
        self.log(f"serve: serial {serial} uploaded")
        self._json(200, {"serial": serial})

    def do_POST(self) -> None:
        body = self._publisher_body((self._beside("_fence"), self._beside("_unfence")), "not found")
        if body is None:
            return
        try:
            request = json.loads(body)
            server = str(request["server"])
            unfence = self._path() == self._beside("_unfence")
            stopped_for = 0.0 if unfence else float(request["stopped_for"])
        except (ValueError, KeyError, TypeError):
            self._text(400, 'expected {"server": NAME, "stopped_for": SECONDS} (/_unfence: {"server": NAME})')
            return
        if unfence:
            self.source.unfence(server)
            self.log(f"serve: {server} no longer fenced")
            self._json(200, {"server": server, "fenced": False})
            return
        fenced, last = self.source.fence(server, stopped_for)
        if fenced:
            self.log(f"serve: {server} fenced (last confirmation {self.source.clock() - last:.0f} s ago)")
        self._json(200 if fenced else 409, {"server": server, "fenced": fenced, "last": last})

    def log_message(self, format: str, *args: object) -> None:
        pass


def make_server(
    source: ConfirmingSource,
    bind: str,
    port: int,
    path: str,
    *,
    log: Callable[[str], None] = print,
    tls: tuple[Path, Path] | None = None,
) -> ThreadingHTTPServer:
    """An HTTP(S) server for ``source`` serving the document at ``/path`` (not started).

    :param tls: a certificate (chain) file and its key file: serve HTTPS. The servers send their tokens only over
        HTTPS, unless the source is on their own host.
    """
    handler = type(
        "Handler", (ServeHandler,), {"source": source, "path_name": "/" + path.lstrip("/"), "log": staticmethod(log)}
    )
    server = ThreadingHTTPServer((bind, port), handler)
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(*tls)
        except (OSError, ssl.SSLError) as exc:
            server.server_close()
            raise ServeError(f"cannot load the TLS certificate {tls[0]} and key {tls[1]}: {exc}") from None
        # The handshake happens in the request's thread, so a slow client cannot hold up the others.
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    return server


_NOT_SENT = (requests.exceptions.SSLError, requests.exceptions.ConnectTimeout, requests.exceptions.InvalidURL)


class AnswerLost(ServeError):
    """A request that may have reached the source, whose answer never came (a dropped connection, a timeout)."""


def _reason(response: requests.Response) -> str:
    """The source's one-line reason (its refusals say what to do, so they are kept whole), never a page."""
    text = " ".join(response.text.split())
    return text if len(text) <= 600 else text[:600] + "..."


@dataclass
class SourceClient:
    """The publisher's (and the watchdog's) client of a confirming source.

    :param url: the document's URL, as the servers fetch it.
    :param token: the publisher's token.
    :param ca: a CA bundle that trusts the source's certificate (default: the system's, or ``REQUESTS_CA_BUNDLE``).
    """

    url: str
    token: str
    timeout: float = 10.0
    ca: str | None = None

    def _base(self) -> str:
        return self.url.rsplit("/", 1)[0]

    def _call(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            verify: str | bool = self.ca or True
            return requests.request(method, url, headers=headers, timeout=self.timeout, verify=verify, **kwargs)
        except _NOT_SENT as exc:
            raise ServeError(f"{method} {url}: {type(exc).__name__}") from None  # nothing reached the source
        except requests.RequestException as exc:
            raise AnswerLost(f"{method} {url}: {type(exc).__name__}") from None

    def upload(self, text: str) -> int:
        """PUT ``text``; returns the serial the source serves from now on.

        When the answer is lost (the connection dropped, a timeout), the source may have stored the document all the
        same: giving the publish up then would leave the servers on a document the publisher has forgotten. So the
        source is asked what it serves, and serving this serial counts as done (it never serves one serial with two
        contents). Only when that cannot be asked either is the outcome unknown, and the error says so.
        """
        try:
            response = self._call("PUT", self.url, data=text.encode("utf-8"))
        except AnswerLost as lost:
            try:
                meta = parse_document(text, origin="the uploaded document").meta
            except DocumentError:
                raise lost from None
            try:
                served = self.confirmations().get("serial")
            except ServeError:
                serial = meta.serial if meta else None
                raise ServeError(f"{lost}; whether the source stored serial {serial} is unknown") from None
            if meta is not None and served == meta.serial:
                return meta.serial
            raise lost from None
        if response.status_code != 200:
            raise ServeError(f"PUT {self.url} answered {response.status_code}: {_reason(response)}")
        return int(response.json()["serial"])

    def confirmations(self) -> dict[str, Any]:
        url = self._base() + "/_confirmations"
        response = self._call("GET", url)
        if response.status_code != 200:
            raise ServeError(f"GET {url} answered {response.status_code}: {_reason(response)}")
        data: dict[str, Any] = response.json()
        return data

    def fence(self, server: str, stopped_for: float) -> tuple[bool, float]:
        url = self._base() + "/_fence"
        response = self._call("POST", url, json={"server": server, "stopped_for": stopped_for})
        if response.status_code not in (200, 409):
            raise ServeError(f"POST {url} answered {response.status_code}: {_reason(response)}")
        answer = response.json()
        return bool(answer["fenced"]), float(answer["last"])

    def unfence(self, server: str) -> None:
        url = self._base() + "/_unfence"
        response = self._call("POST", url, json={"server": server})
        if response.status_code != 200:
            raise ServeError(f"POST {url} answered {response.status_code}: {_reason(response)}")


# --- the command line ---------------------------------------------------------------------------------------------


def add_commands(commands: Any, seconds: Callable[[str], float]) -> None:
    """``serve``, ``serve-token`` and ``upload``, for ``airflow-placement``'s parser; ``seconds`` is its argument type
    for a number of seconds (finite, not negative)."""
    serve = commands.add_parser(
        "serve",
        help="serve the document and record each server's confirmations",
        description="Serve the placement document over HTTP to servers that each name themselves with their own "
        "bearer token, and record durably, before answering, when each last fetched or confirmed it (the watchdog's "
        "proof that a silent server has stopped). The publisher uploads documents with PUT and its own token.",
    )
    serve.add_argument("--state-dir", required=True, help="the served document and the record of confirmations")
    serve.add_argument("--tokens", required=True, help="YAML file: publisher: HASH, servers: {NAME: HASH}")
    serve.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="TCP port (default 8765)")
    serve.add_argument(
        "--path", default="airflow-dag-on-server.yaml", help="the document's path in URLs (default %(default)s)"
    )
    serve.add_argument("--tls-cert", help="serve HTTPS with this certificate (chain), PEM (needs --tls-key)")
    serve.add_argument("--tls-key", help="the certificate's private key, PEM")
    serve.add_argument(
        "--min-lead",
        type=seconds,
        default=0.0,
        metavar="SECONDS",
        help="the servers' max_staleness plus clock skew: refuse an upload that gives runs dated sooner than that "
        "another owner, unless that owner has not confirmed for as long (default 0: no such check)",
    )
    token = commands.add_parser(
        "serve-token",
        help="make a token for serve",
        description="Print a new random token on the first line and its hash for serve's tokens file on the second.",
    )
    del token
    upload = commands.add_parser(
        "upload",
        help="upload a document to a confirming source (the publisher's side)",
        description="PUT the document FILE to the confirming source at URL with the publisher's token, and print "
        "the serial it serves from now on. The source refuses a serial lower than the one it serves (and the same "
        "serial with other content); the token goes only over HTTPS, or plain HTTP to this host.",
    )
    upload.add_argument("file", metavar="FILE", help="the issued document (airflow-placement publish --out)")
    upload.add_argument("--url", required=True, help="the document's URL at the source, as the servers fetch it")
    upload.add_argument(
        "--token-env",
        default="AIRFLOW_PLACEMENT_PUBLISHER_TOKEN",
        metavar="VAR",
        help="environment variable holding the publisher's token (default %(default)s)",
    )
    upload.add_argument(
        "--token-file", metavar="FILE", help="read the publisher's token from FILE's first line instead (keep it 0600)"
    )
    upload.add_argument("--ca", help="CA bundle that trusts the source's certificate (default: the system's)")


def upload_command(args: Any) -> int:
    if args.token_file:
        lines = Path(args.token_file).read_text(encoding="utf-8").splitlines()
        os.environ[args.token_env] = lines[0].strip() if lines else ""  # checked by read_token like any token
    token = read_token(args.token_env)
    if token is None:
        where = f"the file {args.token_file}" if args.token_file else f"the environment variable {args.token_env}"
        raise ServeError(f"{where} holds no token")
    if problem := token_transport_problem(args.url, args.token_env):
        raise ServeError(problem)
    serial = SourceClient(args.url, token, ca=args.ca).upload(Path(args.file).read_text(encoding="utf-8"))
    print(f"uploaded: {args.url} serves serial {serial}")
    return 0


def serve_command(args: Any) -> int:
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ServeError("--tls-cert and --tls-key go together")
    tls = (Path(args.tls_cert), Path(args.tls_key)) if args.tls_cert else None
    source = ConfirmingSource(Path(args.state_dir), Tokens.load(Path(args.tokens)), min_lead=args.min_lead)
    try:
        server = make_server(source, args.bind, args.port, args.path, tls=tls)
    except ServeError:
        source.close()
        raise
    scheme = "https" if tls else "http"
    url = f"{scheme}://{args.bind}:{server.server_address[1]}/{args.path.lstrip('/')}"
    print(f"serve: {url} from {args.state_dir}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        source.close()
    return 0


def token_command(args: Any) -> int:
    token = new_token()
    print(token)
    print(token_hash(token))
    return 0
