"""Settings of the gate: the ``[placement]`` Airflow config section, per-task overrides, and this host's name."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, get_args

if TYPE_CHECKING:  # fetch loads on first use: the provider info Airflow reads in every process needs only OPTIONS
    from airflow_placement.fetch import FetchSettings

NotOwner = Literal["skip", "echo", "fail"]
OnUnavailable = Literal["skip", "fail"]

SECTION = "placement"


class Option(NamedTuple):
    """One key of the ``[placement]`` section: declared to Airflow by the provider info, read by the gate."""

    key: str
    type: Literal["string", "integer", "float"]
    default: str
    description: str


OPTIONS = (
    Option("source", "string", "", "URL (https://, http://, file://) or path of the placement document. Required."),
    Option(
        "host",
        "string",
        "",
        "This server's name as the placement document writes it. The environment variable HOST_HOSTNAME (set by "
        "the compose stack) wins over this key.",
    ),
    Option("ttl", "float", "30", "Seconds a confirmed copy of the document is used without asking the source."),
    Option(
        "max_staleness",
        "float",
        "300",
        "Seconds after the publisher last vouched for a copy past which it is no longer trusted: this server then "
        "runs nothing.",
    ),
    Option(
        "clock_skew",
        "float",
        "60",
        "Seconds this server's clock may differ from the publisher's (file publishing's lease is on the "
        "publisher's clock).",
    ),
    Option("timeout", "float", "5", "Seconds to connect to the source, and again to read its answer."),
    Option("retries", "integer", "2", "Retries of a failed request to the source (connection errors, 429 and 5xx)."),
    Option(
        "token_env",
        "string",
        "",
        "Name of an environment variable holding a bearer token for the source (never logged or cached). "
        "Empty: no token.",
    ),
    Option(
        "ca_bundle",
        "string",
        "",
        "A CA bundle (PEM file) the source's certificate is checked against, for a source whose certificate a "
        "private CA signed. It applies to the placement fetches only: Airflow and the DAGs keep the system's CAs. "
        "Empty: the system's CAs.",
    ),
    Option(
        "public_key",
        "string",
        "",
        "The publisher's Ed25519 public key (base64, as `airflow-placement keygen` prints it): a document that is "
        "not signed with its private key is refused. Empty: documents are not checked.",
    ),
    Option(
        "cache_dir",
        "string",
        "",
        "Directory shared by all task processes of this server: the copy, its snapshot and the serial floor. Keep "
        "it across restarts. Empty: airflow-placement-<uid> in the system's temporary directory.",
    ),
    Option(
        "not_owner",
        "string",
        "skip",
        "What a task does on a server that does not own its run: skip (state skipped), fail, or echo (a "
        "GatedDockerOperator runs an echo container, the original SCDockerOperator's behaviour; other tasks skip).",
    ),
    Option(
        "on_unavailable",
        "string",
        "skip",
        "What a task does when no trustworthy document is available: skip, or fail (retried like any failure).",
    ),
)
DEFAULTS = {option.key: option.default for option in OPTIONS}


def check_choice(name: str, value: str, allowed: Any) -> str:
    """Return ``value`` if it is one of the ``Literal`` type ``allowed``, else raise naming the setting."""
    choices = get_args(allowed)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, not {value!r}")
    return value


@dataclass(frozen=True)
class GateSettings:
    """Everything the gate needs: how to fetch the document, who this host is, and what to do when not running."""

    fetch: FetchSettings
    host: str | None
    not_owner: NotOwner = "skip"
    on_unavailable: OnUnavailable = "skip"


def this_host(configured: str | None = None) -> str | None:
    """This server's name: ``HOST_HOSTNAME`` (set by the compose stack), else ``configured``."""
    return os.environ.get("HOST_HOSTNAME") or configured or None


def gate_settings(overrides: dict[str, Any], config: dict[str, str | None]) -> GateSettings:
    """Combine per-task ``overrides`` (None: not set) with the ``[placement]`` section's ``config``.

    :param overrides: keys as in the config section; a value that is not None wins.
    :param config: the config section's raw values (strings, or None when unset).
    :raises ValueError: naming the first setting that is not valid.
    """

    def pick(key: str) -> Any:
        value = overrides.get(key)
        return config.get(key) if value is None else value

    def number(key: str) -> float:
        value = pick(key)
        if value in (None, ""):
            value = DEFAULTS[key]
        try:
            result = float(value)
        except ValueError:
            raise ValueError(f"[{SECTION}] {key} must be a number of seconds, not {value!r}") from None
        if not math.isfinite(result):
            raise ValueError(f"[{SECTION}] {key} must be a finite number of seconds, not {value!r}")
        return result

    def whole(key: str) -> int:
        value = pick(key)
        if value in (None, ""):
            value = DEFAULTS[key]
        text = str(value).strip()
        if isinstance(value, bool) or not (text.isdigit() or (isinstance(value, int) and value >= 0)):
            raise ValueError(f"[{SECTION}] {key} must be a whole number >= 0, not {value!r}")
        return int(text)

    from airflow_placement.fetch import DEFAULT_CACHE_DIR, FetchSettings  # noqa: PLC0415

    fetch = FetchSettings(
        source=str(pick("source") or ""),
        ttl=number("ttl"),
        max_staleness=number("max_staleness"),
        clock_skew=number("clock_skew"),
        timeout=number("timeout"),
        retries=whole("retries"),
        token_env=pick("token_env") or None,
        ca_bundle=pick("ca_bundle") or None,
        public_key=pick("public_key") or None,
        cache_dir=Path(pick("cache_dir") or DEFAULT_CACHE_DIR),
    )
    return GateSettings(
        fetch=fetch,
        host=overrides.get("host") or this_host(config.get("host")),
        not_owner=check_choice("not_owner", pick("not_owner") or DEFAULTS["not_owner"], NotOwner),  # type: ignore[arg-type]
        on_unavailable=check_choice(
            "on_unavailable",
            pick("on_unavailable") or DEFAULTS["on_unavailable"],
            OnUnavailable,  # type: ignore[arg-type]
        ),
    )


KEYS = tuple(option.key for option in OPTIONS)
