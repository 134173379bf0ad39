"""Signed placement documents: the publisher signs, servers holding its public key verify.

The publisher signs with an Ed25519 private key and writes the signature, base64, as ``@meta.signature``. It covers
the document as parsed without that one key (:func:`airflow_placement.document.signed_content`): every entry in
its order, the serial, and the issue and renewal times, so a renewal is signed again. A server configured with the
publisher's public key (``[placement] public_key``) refuses a document that is unsigned or whose signature does not
verify, as it refuses any bad answer of its source.

Keys: the private key is a PKCS #8 PEM file readable by its owner only; the public key is written as one line, the
base64 of its 32 raw bytes, which is what the ``public_key`` setting holds.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from airflow_placement.document import Meta

__all__ = [
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "SignatureError",
    "load_public_key",
    "load_signing_key",
    "public_key_text",
    "sign",
    "verify",
    "write_key_pair",
]


class SignatureError(ValueError):
    """A document is unsigned or its signature does not verify; ``str()`` is the one-line reason."""


def public_key_text(key: Ed25519PublicKey) -> str:
    """The public key as the ``public_key`` setting holds it: the base64 of its 32 raw bytes."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def load_public_key(text: str) -> Ed25519PublicKey:
    """The public key written as :func:`public_key_text` writes it.

    :raises ValueError: naming the setting, when ``text`` is not one.
    """
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        if len(raw) != 32:
            raise ValueError
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, binascii.Error):
        raise ValueError(
            "public_key is not an Ed25519 public key (one line, the base64 of 32 bytes, as "
            "`airflow-placement keygen` prints it)"
        ) from None


def write_key_pair(path: Path) -> str:
    """Write a new private key to ``path`` (mode 0600, never over an existing file) and its public key to
    ``path.pub``; return the public key's text.

    :raises OSError: when either file exists or cannot be written.
    """
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public = public_key_text(key.public_key())
    public_path = path.with_name(path.name + ".pub")
    if public_path.exists():
        raise FileExistsError(f"{public_path} exists; keygen never replaces a key")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise FileExistsError(f"{path} exists; keygen never replaces a key") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public_path.write_text(public + "\n", encoding="ascii")
    return public


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The publisher's private key from ``path``, a PEM file that nobody but its owner may read.

    :raises ValueError: in one line naming ``path``, when it is missing, open to others, or not an Ed25519 key.
    """
    try:
        info = os.stat(path)
        pem = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the signing key {path}: {(exc.strerror or str(exc)).lower()}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(
            f"the signing key {path} has mode {stat.S_IMODE(info.st_mode):04o}: others may read it; chmod 600 it"
        )
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise ValueError(f"the signing key {path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"the signing key {path} is not an Ed25519 key")
    return key


def sign(content: bytes, key: Ed25519PrivateKey) -> str:
    """The signature of ``content`` (a document's :attr:`Meta.signed`), as ``@meta.signature`` holds it."""
    return base64.b64encode(key.sign(content)).decode("ascii")


def verify(meta: Meta | None, key: Ed25519PublicKey) -> None:
    """Check that the document with ``meta`` was signed by the holder of ``key``'s private key.

    :raises SignatureError: when it is unsigned or its signature does not verify.
    """
    if meta is None or meta.signature is None:
        what = "no @meta" if meta is None else "no @meta.signature"
        raise SignatureError(f"the document is not signed ({what}) and a public key is configured; refused")
    try:
        key.verify(base64.b64decode(meta.signature, validate=True), meta.signed)
    except (InvalidSignature, ValueError, binascii.Error):
        raise SignatureError(
            f"the signature of serial {meta.serial} does not verify with the configured public key; refused"
        ) from None
