"""Signed documents: the publisher signs with Ed25519, a server holding its public key refuses anything else.

Servers read from a real HTTP server on 127.0.0.1 and from real files; the publisher's commands run as the console
script would (``cli.main``, in this process, with its output captured).
"""

from __future__ import annotations

import os
import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from placement_server import Clock, DocumentServer, Reply

from airflow_placement.cli import main
from airflow_placement.document import DocumentError, Meta, parse_document
from airflow_placement.fetch import FetchSettings, Loaded, PlacementCache, PlacementUnavailable
from airflow_placement.publish import Publisher, PublishError, render
from airflow_placement.settings import gate_settings
from airflow_placement.signing import (
    Ed25519PrivateKey,
    SignatureError,
    load_public_key,
    load_signing_key,
    public_key_text,
    verify,
    write_key_pair,
)

TTL, MAX_STALENESS = 30.0, 300.0
DESIRED = "dag_1: server-1.tld\n'etl_*': server-2.tld\n'*': server-1.tld\n"


def signed_text(key: Ed25519PrivateKey, serial: int, when: datetime, data: dict[str, str] | None = None) -> str:
    return render(data or {"dag_1": "server-1.tld", "*": "server-2.tld"}, Meta(serial, when, when), key)


def owner(loaded: Loaded, dag_id: str = "dag_1") -> str:
    entry = loaded.placement.entry_for(dag_id)
    assert entry is not None
    return str(entry.schedule.owner)


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def public(key: Ed25519PrivateKey) -> str:
    return public_key_text(key.public_key())


def now_of(clock: Clock) -> datetime:
    return datetime.fromtimestamp(clock.now, UTC)


# --- The document -----------------------------------------------------------------------------------------------------


def test_a_signed_document_verifies_and_keeps_its_revision(key: Ed25519PrivateKey) -> None:
    when = datetime(2026, 12, 1, 6, tzinfo=UTC)
    signed = parse_document(signed_text(key, 3, when))
    unsigned = parse_document(render({"dag_1": "server-1.tld", "*": "server-2.tld"}, Meta(3, when, when)))
    assert signed.meta is not None and signed.meta.signature is not None
    verify(signed.meta, key.public_key())
    assert signed.revision == unsigned.revision  # the signature is not content
    assert unsigned.meta is not None and unsigned.meta.signature is None
    assert (signed.meta.serial, signed.meta.issued, signed.meta.renewed) == (3, when, when)


TAMPERED = {
    "owner changed": lambda text: text.replace("dag_1: server-1.tld", "dag_1: server-2.tld"),
    "entry added": lambda text: text + "dag_9: server-9.tld\n",
    "renewal moved on": lambda text: text.replace('renewed: "2026-12-01T06:00:00Z"', 'renewed: "2026-12-01T07:00:00Z"'),
    "serial raised": lambda text: text.replace("serial: 3", "serial: 4"),
    "patterns reordered": lambda text: text.replace("'*': server-2.tld\n", "").replace(
        '"@meta":', "'*': server-2.tld\n\"@meta\":"
    ),
}


@pytest.mark.parametrize("tamper", list(TAMPERED.values()), ids=list(TAMPERED))
def test_any_change_breaks_the_signature(key: Ed25519PrivateKey, tamper: object) -> None:
    text = signed_text(key, 3, datetime(2026, 12, 1, 6, tzinfo=UTC))
    changed = tamper(text)  # type: ignore[operator]
    assert changed != text
    with pytest.raises(SignatureError, match="does not verify with the configured public key"):
        verify(parse_document(changed).meta, key.public_key())


def test_another_key_and_no_signature_are_refused(key: Ed25519PrivateKey) -> None:
    when = datetime(2026, 12, 1, 6, tzinfo=UTC)
    other = Ed25519PrivateKey.generate()
    with pytest.raises(SignatureError, match="does not verify"):
        verify(parse_document(signed_text(other, 3, when)).meta, key.public_key())
    with pytest.raises(SignatureError, match=r"not signed \(no @meta.signature\)"):
        verify(parse_document(render({"d": "s"}, Meta(3, when, when))).meta, key.public_key())
    with pytest.raises(SignatureError, match=r"not signed \(no @meta\)"):
        verify(parse_document("d: s\n").meta, key.public_key())


def test_a_malformed_signature_is_a_rejected_document(key: Ed25519PrivateKey) -> None:
    text = signed_text(key, 3, datetime(2026, 12, 1, 6, tzinfo=UTC))
    broken = text.replace('signature: "', 'signature: "!', 1)
    with pytest.raises(DocumentError, match=r":8: @meta.signature: not an Ed25519 signature"):
        parse_document(broken)


@pytest.mark.parametrize("text", ["", "abc", "AAAA", "A" * 42 + "==", "ed25519:" + "A" * 44, "A" * 44 + "\x00"])
def test_a_bad_public_key_setting_is_one_line(text: str) -> None:
    with pytest.raises(ValueError, match="public_key is not an Ed25519 public key") as caught:
        FetchSettings("http://127.0.0.1/x", public_key=text)
    assert "\n" not in str(caught.value)
    assert load_public_key(public_key_text(Ed25519PrivateKey.generate().public_key()))


# --- The publisher ----------------------------------------------------------------------------------------------------


def test_keygen_publish_and_renew_sign_and_check_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_path = tmp_path / "placement.key"
    assert main(["keygen", str(key_path)]) == 0
    public = capsys.readouterr().out.strip()
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert (tmp_path / "placement.key.pub").read_text().strip() == public
    load_public_key(public)

    desired, out, state = tmp_path / "desired.yaml", tmp_path / "published.yaml", tmp_path / "state"
    desired.write_text(DESIRED)
    publish = ["publish", str(desired), "--state-dir", str(state), "--lead", "60", "--out", str(out)]
    assert main([*publish, "--signing-key", str(key_path)]) == 0
    assert main(["publish-commit", "--state-dir", str(state)]) == 0
    capsys.readouterr()
    assert main(["check", str(out), "--public-key", public]) == 0
    assert "valid" in capsys.readouterr().out

    first = parse_document(out.read_bytes())
    assert main(["renew", "--state-dir", str(state), "--out", str(out), "--signing-key", str(key_path)]) == 0
    renewed = parse_document(out.read_bytes())
    assert renewed.meta is not None and first.meta is not None
    assert renewed.meta.signature != first.meta.signature or renewed.meta.renewed == first.meta.renewed
    verify(renewed.meta, load_public_key(public))
    assert main(["check", str(out), "--public-key", public]) == 0

    other = public_key_text(Ed25519PrivateKey.generate().public_key())
    capsys.readouterr()
    assert main(["check", str(out), "--public-key", other]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "does not verify with the configured public key" in error


def test_renewing_a_signed_document_without_the_key_is_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    publisher = Publisher(tmp_path / "state", key)
    publisher.begin(parse_document(DESIRED), lead=60)
    publisher.commit()
    with pytest.raises(PublishError, match=r"is signed: give the signing key \(--signing-key\)"):
        Publisher(tmp_path / "state").renew()
    renewed = Publisher(tmp_path / "state", key).renew(now=datetime.now(UTC) + timedelta(seconds=5))
    meta = parse_document(renewed).meta
    verify(meta, key.public_key())
    assert renewed.count("signature:") == 1


def test_an_unsigned_document_is_signed_from_its_next_renewal(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    Publisher(tmp_path / "state").begin(parse_document(DESIRED), lead=60)
    Publisher(tmp_path / "state").commit()
    verify(parse_document(Publisher(tmp_path / "state", key).renew()).meta, key.public_key())


def test_keygen_never_replaces_a_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_path = tmp_path / "placement.key"
    write_key_pair(key_path)
    before = key_path.read_bytes()
    assert main(["keygen", str(key_path)]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "exists; keygen never replaces a key" in error
    assert key_path.read_bytes() == before


def test_a_signing_key_others_may_read_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_path = tmp_path / "placement.key"
    write_key_pair(key_path)
    os.chmod(key_path, 0o640)
    (tmp_path / "desired.yaml").write_text(DESIRED)
    args = ["publish", str(tmp_path / "desired.yaml"), "--state-dir", str(tmp_path / "s"), "--lead", "60"]
    assert main([*args, "--signing-key", str(key_path)]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "has mode 0640: others may read it; chmod 600 it" in error
    assert not (tmp_path / "s" / "serial").exists()  # nothing was issued
    with pytest.raises(ValueError, match="not an unencrypted PEM private key"):
        (tmp_path / "junk.key").write_text("not a key")
        os.chmod(tmp_path / "junk.key", 0o600)
        load_signing_key(tmp_path / "junk.key")


# --- Servers ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def settings(server: DocumentServer, tmp_path: Path, public: str) -> FetchSettings:
    return FetchSettings(
        server.url, ttl=TTL, max_staleness=MAX_STALENESS, timeout=0.5, retries=0, public_key=public,
        cache_dir=tmp_path / "cache",
    )  # fmt: skip


def test_a_server_with_the_key_takes_a_signed_document(
    server: DocumentServer, settings: FetchSettings, clock: Clock, key: Ed25519PrivateKey
) -> None:
    server.document = signed_text(key, 3, now_of(clock)).encode()
    loaded = PlacementCache(settings, clock, clock.stack_started).load()
    assert (loaded.origin, owner(loaded)) == ("source", "server-1.tld")


BAD = {
    "unsigned": (lambda key, when: render({"dag_1": "server-3.tld"}, Meta(4, when, when)), "is not signed"),
    "another key": (
        lambda key, when: signed_text(Ed25519PrivateKey.generate(), 4, when, {"dag_1": "server-3.tld"}),
        "does not verify",
    ),
    "tampered": (
        lambda key, when: signed_text(key, 4, when).replace("dag_1: server-1.tld", "dag_1: server-3.tld"),
        "does not verify",
    ),
    "original form": (lambda key, when: "dag_1: server-3.tld\n", "not signed (no @meta) and"),
}


@pytest.mark.parametrize(("make", "why"), list(BAD.values()), ids=list(BAD))
def test_a_server_with_the_key_refuses_what_the_publisher_did_not_sign(
    *, server: DocumentServer, settings: FetchSettings, clock: Clock, key: Ed25519PrivateKey, make: object, why: str
) -> None:
    server.document = signed_text(key, 3, now_of(clock)).encode()
    cache = PlacementCache(settings, clock, clock.stack_started)
    cache.load()
    server.document, server.etag = make(key, now_of(clock)).encode(), '"v2"'  # type: ignore[operator]
    clock.advance(TTL)
    loaded = cache.load()
    assert (loaded.origin, owner(loaded)) == ("fallback", "server-1.tld")  # never server-3
    assert loaded.note is not None and why in loaded.note and "\n" not in loaded.note
    clock.advance(MAX_STALENESS)
    with pytest.raises(PlacementUnavailable, match=re.escape(why)):
        cache.load()


def test_a_file_source_with_the_key_refuses_an_unsigned_copy(
    tmp_path: Path, clock: Clock, key: Ed25519PrivateKey, public: str
) -> None:
    path = tmp_path / "placement.yaml"
    path.write_text(render({"dag_1": "server-3.tld"}, Meta(1, now_of(clock), now_of(clock))))
    settings = FetchSettings(str(path), public_key=public, cache_dir=tmp_path / "cache")
    with pytest.raises(PlacementUnavailable, match=r"is not signed .*; no earlier copy"):
        PlacementCache(settings, clock, clock.stack_started).load()
    path.write_text(signed_text(key, 2, now_of(clock)))
    clock.advance(TTL)
    assert owner(PlacementCache(settings, clock, clock.stack_started).load()) == "server-1.tld"


def test_a_copy_cached_before_the_key_was_set_is_not_used(
    server: DocumentServer, settings: FetchSettings, clock: Clock, key: Ed25519PrivateKey
) -> None:
    """A server that held an unsigned copy when the key was configured asks again, unconditionally, and never falls
    back to the unsigned copy."""
    server.document = b"dag_1: server-3.tld\n"
    unsigned = PlacementCache(FetchSettings(**{**settings.__dict__, "public_key": None}), clock, clock.stack_started)
    assert owner(unsigned.load()) == "server-3.tld"
    cache = PlacementCache(settings, clock, clock.stack_started)
    with pytest.raises(PlacementUnavailable, match="is not signed"):
        cache.load()  # within the TTL of the unsigned copy, and yet
    assert "If-None-Match" not in server.requests[-1]
    server.document, server.etag = signed_text(key, 3, now_of(clock)).encode(), '"v2"'
    clock.advance(TTL)
    assert owner(cache.load()) == "server-1.tld"


def test_the_public_key_setting_reaches_the_gate(public: str) -> None:
    gate = gate_settings({}, {"source": "https://placement.example/doc.yaml", "public_key": public})
    assert gate.fetch.public_key == public
    with pytest.raises(ValueError, match="public_key is not an Ed25519 public key"):
        gate_settings({}, {"source": "https://placement.example/doc.yaml", "public_key": "nope"})


def test_decide_refuses_an_unsigned_document_in_one_line(
    server: DocumentServer, tmp_path: Path, public: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server.respond = lambda headers: Reply(200, b"dag_1: server-1.tld\n", {"ETag": '"u"'})
    args = ["decide", "--source", server.url, "--dag-id", "dag_1", "--host", "server-1.tld"]
    assert main([*args, "--public-key", public, "--cache-dir", str(tmp_path / "c")]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "is not signed (no @meta) and a public key is configured; refused" in error
    assert main([*args, "--cache-dir", str(tmp_path / "d")]) == 0  # the same document, no key: it runs
