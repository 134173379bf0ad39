"""What an attacker or a careless setting could do to a server's fetch, and the one-line refusal each gets.

Tokens with control characters, tokens over plain HTTP or to another host, downgrade redirects, a source that drips
its answer, a cache directory someone else planted, characters YAML refuses, settings that are not numbers. Every
source is a real HTTP(S) server on 127.0.0.1 (HTTPS with a certificate made here, trusted through
``REQUESTS_CA_BUNDLE``); the command line runs in this process (``cli.main``) with its output captured.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import ssl
import stat
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from placement_server import GOOD, Clock, DocumentServer, Reply

from airflow_placement.cli import main
from airflow_placement.document import DocumentError, parse_document
from airflow_placement.fetch import DEFAULT_CACHE_DIR, FetchSettings, PlacementCache, PlacementUnavailable

Handler = Callable[[BaseHTTPRequestHandler], None]


class Server:
    """A real HTTP(S) server on 127.0.0.1 whose every GET is answered by ``handle``; records the requests' headers."""

    def __init__(self, handle: Handler, context: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> None:
        self.requests: list[dict[str, str]] = []
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.requests.append(dict(self.headers.items()))
                try:
                    handle(self)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._http.daemon_threads = True
        if context is not None:
            self._http.socket = context.wrap_socket(self._http.socket, server_side=True)
        scheme = "https" if context is not None else "http"
        self.base = f"{scheme}://{host}:{self._http.server_address[1]}"
        self.url = f"{self.base}/placement.yaml"
        threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()


def answer(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Handler:
    def handle(request: BaseHTTPRequestHandler) -> None:
        request.send_response(status)
        for name, value in (headers or {}).items():
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    return handle


def redirect_to(location: str) -> Handler:
    return answer(302, b"", {"Location": location})


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A server context with a certificate for 127.0.0.1 and localhost, and the CA bundle that trusts it."""
    directory = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


@pytest.fixture
def ca_file(tls: ssl.SSLContext, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CA bundle that trusts ``tls``'s certificate."""
    return next(tmp_path_factory.getbasetemp().glob("tls*/cert.pem"))


@pytest.fixture
def trust(ca_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))


def settings_for(url: str, tmp_path: Path, **changes: object) -> FetchSettings:
    arguments: dict[str, object] = {"timeout": 0.5, "retries": 0, "cache_dir": tmp_path / "cache", **changes}
    return FetchSettings(url, **arguments)  # type: ignore[arg-type]


def load(settings: FetchSettings, clock: Clock) -> object:
    return PlacementCache(settings, clock, clock.stack_started).load()


# --- Tokens -----------------------------------------------------------------------------------------------------------

BAD_TOKENS = {
    "newline": "s3cr3t-T0KEN\nX-Injected: 1",
    "carriage return": "s3cr3t-T0KEN\r",
    "tab": "s3cr3t\tT0KEN",
    "escape": "s3cr3t\x1b[2JT0KEN",
    "space": "s3cr3t T0KEN",
    "non-ASCII": "s3cr3t-T0KEN-\u00e9",
}


@pytest.mark.parametrize("token", list(BAD_TOKENS.values()), ids=list(BAD_TOKENS))
def test_a_token_with_a_control_character_is_refused_and_never_shown(
    *,
    server: DocumentServer,
    tmp_path: Path,
    token: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("PLACEMENT_TOKEN", token)
    caplog.set_level(logging.DEBUG)
    cache = tmp_path / "cache"
    args = ["decide", "--source", server.url, "--dag-id", "dag_1", "--host", "server-1.tld"]
    assert main([*args, "--token-env", "PLACEMENT_TOKEN", "--cache-dir", str(cache)]) == 1
    out, err = capsys.readouterr()
    assert err.count("\n") == 1, err
    assert "the token in $PLACEMENT_TOKEN holds a control character, a space or a non-ASCII character" in err
    assert server.count == 0  # nothing was sent
    for secret in ("s3cr3t", "T0KEN"):
        assert secret not in out + err
        assert secret not in caplog.text
        assert all(secret not in path.read_bytes().decode(errors="replace") for path in cache.iterdir())


def test_a_token_is_never_sent_over_plain_http_to_another_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PLACEMENT_TOKEN", "s3cr3t")
    with pytest.raises(ValueError, match=r"refusing to send the token of \$PLACEMENT_TOKEN over plain HTTP to 192"):
        settings_for("http://192.0.2.10/placement.yaml", tmp_path, token_env="PLACEMENT_TOKEN")
    args = ["decide", "--source", "http://placement.example.org/p.yaml", "--dag-id", "d", "--host", "h"]
    assert main([*args, "--token-env", "PLACEMENT_TOKEN", "--cache-dir", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "over plain HTTP to placement.example.org: use https://" in err
    for allowed in ("https://placement.example.org/p.yaml", "http://127.0.0.1:8765/p", "http://localhost/p"):
        settings_for(allowed, tmp_path, token_env="PLACEMENT_TOKEN")
    settings_for("http://placement.example.org/p.yaml", tmp_path)  # without a token, plain HTTP is allowed


def test_a_redirect_to_another_origin_gets_no_token(
    servers: list[Server], tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = Server(answer(200, GOOD, {"ETag": '"a"'}), host="localhost")
    origin = Server(redirect_to(target.url))
    servers += [target, origin]
    monkeypatch.setenv("PLACEMENT_TOKEN", "s3cr3t")
    loaded = load(settings_for(origin.url, tmp_path, token_env="PLACEMENT_TOKEN"), clock)
    assert loaded.origin == "source"  # type: ignore[attr-defined]
    assert origin.requests[0]["Authorization"] == "Bearer s3cr3t"
    assert "Authorization" not in target.requests[0]


# --- Redirects --------------------------------------------------------------------------------------------------------


def test_a_downgrade_redirect_is_refused(
    servers: list[Server], tls: ssl.SSLContext, trust: None, tmp_path: Path, clock: Clock
) -> None:
    plain = Server(answer(200, GOOD))
    secure = Server(redirect_to(plain.url), tls)
    servers += [plain, secure]
    with pytest.raises(PlacementUnavailable, match=r"redirected from https to plain http \(127.0.0.1\); refused"):
        load(settings_for(secure.url, tmp_path), clock)
    assert plain.requests == []


def test_a_redirect_within_https_is_followed(
    servers: list[Server], tls: ssl.SSLContext, trust: None, tmp_path: Path, clock: Clock
) -> None:
    target = Server(answer(200, GOOD, {"ETag": '"a"'}), tls, host="localhost")
    secure = Server(redirect_to(target.url), tls)
    servers += [target, secure]
    assert load(settings_for(secure.url, tmp_path), clock).origin == "source"  # type: ignore[attr-defined]


def test_an_untrusted_certificate_is_one_line(
    servers: list[Server], tls: ssl.SSLContext, tmp_path: Path, clock: Clock
) -> None:
    secure = Server(answer(200, GOOD), tls)
    servers.append(secure)
    with pytest.raises(PlacementUnavailable, match=r"the TLS handshake failed \(is the certificate trusted\?"):
        load(settings_for(secure.url, tmp_path), clock)


@pytest.fixture
def bundle(ca_file: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``ca_file``, with no ``REQUESTS_CA_BUNDLE`` in the environment."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    return ca_file


def test_ca_bundle_trusts_a_private_ca_for_the_placement_fetch_alone(
    servers: list[Server], tls: ssl.SSLContext, bundle: Path, tmp_path: Path, clock: Clock
) -> None:
    """The role gives the containers the source's CA as ``[placement] ca_bundle``, not ``REQUESTS_CA_BUNDLE``, which
    would replace the trust store of every ``requests`` call there, the DAGs' own included."""
    secure = Server(answer(200, GOOD, {"ETag": '"a"'}), tls)
    servers.append(secure)
    loaded = load(settings_for(secure.url, tmp_path, ca_bundle=str(bundle)), clock)
    assert loaded.origin == "source"  # type: ignore[attr-defined]
    assert "REQUESTS_CA_BUNDLE" not in os.environ
    with pytest.raises(PlacementUnavailable, match=r"\[placement\] ca_bundle can name its CA"):
        load(settings_for(secure.url, tmp_path / "without"), clock)


def test_ca_bundle_from_the_config_section_and_the_command_line(
    *,
    servers: list[Server],
    tls: ssl.SSLContext,
    bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secure = Server(answer(200, GOOD, {"ETag": '"a"'}), tls)
    servers.append(secure)
    args = ["decide", "--source", secure.url, "--dag-id", "dag_1", "--host", "server-1.tld"]
    monkeypatch.setenv("AIRFLOW__PLACEMENT__CA_BUNDLE", str(bundle))
    assert main([*args, "--cache-dir", str(tmp_path / "a")]) == 0, capsys.readouterr().err
    assert '"decision": "run"' in capsys.readouterr().out
    monkeypatch.delenv("AIRFLOW__PLACEMENT__CA_BUNDLE")
    assert main([*args, "--cache-dir", str(tmp_path / "b"), "--ca-bundle", str(bundle)]) == 0
    capsys.readouterr()
    missing = tmp_path / "no-such-ca.pem"
    assert main([*args, "--cache-dir", str(tmp_path / "c"), "--ca-bundle", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err == f"airflow-placement decide: error: [placement] ca_bundle: no such file: {missing}\n", err
    assert len(secure.requests) == 2  # nothing was fetched with the missing bundle


def test_a_redirect_loop_ends(servers: list[Server], tmp_path: Path, clock: Clock) -> None:
    looping = Server(redirect_to("/placement.yaml"))
    servers.append(looping)
    with pytest.raises(PlacementUnavailable, match="more than 5 redirects"):
        load(settings_for(looping.url, tmp_path), clock)


# --- A total deadline -------------------------------------------------------------------------------------------------


def drip(body: bytes, every: float) -> Handler:
    """Announce ``body`` and send it one byte every ``every`` seconds, as a slow-drip attack does."""

    def handle(request: BaseHTTPRequestHandler) -> None:
        request.send_response(200)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        for byte in body:
            request.wfile.write(bytes([byte]))
            request.wfile.flush()
            time.sleep(every)

    return handle


def test_a_source_that_drips_its_answer_times_out(servers: list[Server], tmp_path: Path, clock: Clock) -> None:
    """Each byte comes well within the read timeout, so only a deadline over the whole fetch stops it (the
    document would take 6 s; the fetch may take 0.5 s)."""
    slow = Server(drip(GOOD + b"# " + b"x" * 40 + b"\n", every=0.1))
    servers.append(slow)
    with pytest.raises(PlacementUnavailable, match="timed out while the answer was read; no earlier copy"):
        load(settings_for(slow.url, tmp_path), clock)


def test_retries_share_the_deadline(servers: list[Server], tmp_path: Path, clock: Clock) -> None:
    """Every answer comes within the timeout, but the retries and their back-off would outlast the deadline of
    timeout x (retries + 1) = 2 s: the fourth attempt is never made."""

    def slow_error(request: BaseHTTPRequestHandler) -> None:
        time.sleep(0.3)
        answer(503, b"busy")(request)

    busy = Server(slow_error)
    servers.append(busy)
    with pytest.raises(PlacementUnavailable, match="timed out: the fetch used up its time, retries included"):
        load(settings_for(busy.url, tmp_path, timeout=0.5, retries=3), clock)
    assert len(busy.requests) < 4


# --- The cache directory ----------------------------------------------------------------------------------------------


def test_the_default_cache_directory_is_per_user() -> None:
    assert DEFAULT_CACHE_DIR.name == f"airflow-placement-{os.geteuid()}"


def test_a_new_cache_directory_is_private_and_so_are_its_files(
    server: DocumentServer, tmp_path: Path, clock: Clock
) -> None:
    settings = settings_for(server.url, tmp_path)
    load(settings, clock)
    assert stat.S_IMODE(settings.cache_dir.stat().st_mode) == 0o700
    cache_file = PlacementCache(settings, clock).path
    assert stat.S_IMODE(cache_file.stat().st_mode) == 0o600


def test_a_cache_directory_only_its_owner_writes_is_made_private(
    server: DocumentServer, tmp_path: Path, clock: Clock
) -> None:
    settings = settings_for(server.url, tmp_path)
    settings.cache_dir.mkdir(mode=0o755)
    os.chmod(settings.cache_dir, 0o755)
    load(settings, clock)
    assert stat.S_IMODE(settings.cache_dir.stat().st_mode) == 0o700


def planted(directory: Path, server: DocumentServer, clock: Clock) -> None:
    """Someone else's copy of the document, fresh, where the server would read it."""
    PlacementCache(settings_for(server.url, directory.parent), clock, clock.stack_started).load()


@pytest.mark.parametrize(("make_unsafe", "why"), [
    pytest.param(lambda d: os.chmod(d, 0o770), "has mode 0770: others may write in it", id="group-writable"),
    pytest.param(lambda d: os.chmod(d, 0o1777), "has mode 1777: others may write in it", id="world-writable"),
    pytest.param(
        lambda d: os.chown(d, 65534, 65534), "belongs to uid 65534, not to this user", id="another user's",
        marks=pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory away needs root (CI runs as root)"),
    ),
])  # fmt: skip
def test_an_unsafe_cache_directory_is_refused_in_one_line_naming_it(
    *,
    server: DocumentServer,
    tmp_path: Path,
    clock: Clock,
    make_unsafe: Callable[[Path], None],
    why: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cache = tmp_path / "cache"
    planted(cache, server, clock)
    make_unsafe(cache)
    with pytest.raises(PlacementUnavailable, match=f"the cache directory {cache} {why}"):
        load(settings_for(server.url, tmp_path), clock)
    args = ["decide", "--source", server.url, "--dag-id", "dag_1", "--host", "server-1.tld"]
    assert main([*args, "--cache-dir", str(cache)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"the cache directory {cache} {why}" in err and "refused" in err


def test_a_cache_directory_that_is_a_link_is_refused(server: DocumentServer, tmp_path: Path, clock: Clock) -> None:
    """A link to a private directory is still refused: whoever made the link chose where the server reads."""
    real = tmp_path / "elsewhere" / "cache"
    planted(real, server, clock)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(PlacementUnavailable, match=f"the cache directory {link} is a symbolic link; refused"):
        load(settings_for(server.url, tmp_path, cache_dir=link), clock)


def test_a_cache_directory_that_cannot_be_made_is_one_line(tmp_path: Path, clock: Clock) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(PlacementUnavailable, match=f"cannot use the cache directory {tmp_path}/file/cache: not a"):
        load(settings_for("http://127.0.0.1:9/p", tmp_path, cache_dir=tmp_path / "file" / "cache"), clock)


# --- What YAML refuses, and settings ----------------------------------------------------------------------------------

READER_ERRORS = {
    "NUL": (b"dag_1: server-1\x00\n", 1, "unacceptable #x0000"),
    "bell on line 2": (b"dag_1: server-1\ndag_2: s\x07\n", 2, "unacceptable #x0007"),
    "escape in quotes": (b'dag_1: server-1\n\ndag_3: "\x1b[2J"\n', 3, "unacceptable #x001b"),
    "noncharacter": ("dag_1: s\ufffe\n".encode(), 1, "unacceptable #xfffe"),
    "bad UTF-8": (b"dag_1: server-\xc3\x28\n", None, "not UTF-8 text"),
    "surrogate": (b"dag_1: \xed\xa0\x80\n", None, "not UTF-8 text"),
}


@pytest.mark.parametrize(("body", "line", "words"), list(READER_ERRORS.values()), ids=list(READER_ERRORS))
def test_characters_yaml_refuses_are_a_rejected_document(
    body: bytes, line: int | None, words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(DocumentError) as caught:
        parse_document(body, origin="doc.yaml")
    assert caught.value.problems[0].line == line
    assert words in str(caught.value) and "\n" not in str(caught.value)
    path = tmp_path / "doc.yaml"
    path.write_bytes(body)
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and "Traceback" not in err


def test_a_server_keeps_its_copy_when_the_source_serves_a_nul(
    server: DocumentServer, tmp_path: Path, clock: Clock
) -> None:
    settings = settings_for(server.url, tmp_path, ttl=30)
    cache = PlacementCache(settings, clock, clock.stack_started)
    cache.load()
    server.respond = lambda headers: Reply(200, b"dag_1: server-3\x00\n", {"ETag": '"bad"'})
    clock.advance(30)
    loaded = cache.load()
    assert loaded.origin == "fallback"
    assert loaded.note is not None and "unacceptable #x0000" in loaded.note


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--ttl", "nan", "ttl must be a finite number"),
        ("--max-staleness", "inf", "max_staleness must be a finite number"),
        ("--clock-skew", "-5", "clock_skew must be a finite number of seconds >= 0"),
        ("--timeout", "inf", "timeout must be a finite number"),
        ("--timeout", "-1", "timeout must be a finite number of seconds > 0"),
        ("--retries", "-1", "retries"),
    ],
)
def test_settings_that_are_not_finite_or_are_negative_are_one_line(
    option: str, value: str, words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["decide", "--source", "http://127.0.0.1:9/p", "--dag-id", "d", "--host", "h"]
    assert main([*args, option, value, "--cache-dir", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "soon"])
@pytest.mark.parametrize("command", [["publish-lock"], ["publish", "desired.yaml", "--lead", "60"]])
def test_a_publisher_wait_that_is_not_finite_is_refused(
    command: list[str], value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``--wait nan`` would wait for ever on a held lock; ``--lead`` likewise refuses what is not seconds."""
    with pytest.raises(SystemExit) as caught:
        main([*command, "--state-dir", str(tmp_path), "--wait", value])
    assert caught.value.code == 2
    assert f"argument --wait: not a finite number of seconds >= 0: {value!r}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["publish", "desired.yaml", "--state-dir", str(tmp_path), "--lead", value])
    assert "argument --lead: not a finite number of seconds >= 0" in capsys.readouterr().err
