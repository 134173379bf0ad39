"""Settings of the gate: the ``[placement]`` Airflow config section, per-task overrides, and this host's name."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from airflow_placement.fetch import DEFAULT_CACHE_DIR, FetchSettings

NotOwner = Literal["skip", "echo", "fail"]
OnUnavailable = Literal["skip", "fail"]

SECTION = "placement"


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

    def number(key: str, default: float) -> float:
        value = pick(key)
        try:
            result = default if value in (None, "") else float(value)
        except ValueError:
            raise ValueError(f"[{SECTION}] {key} must be a number of seconds, not {value!r}") from None
        if not math.isfinite(result):
            raise ValueError(f"[{SECTION}] {key} must be a finite number of seconds, not {value!r}")
        return result

    def whole(key: str, default: int) -> int:
        value = pick(key)
        if value in (None, ""):
            return default
        text = str(value).strip()
        if isinstance(value, bool) or not (text.isdigit() or (isinstance(value, int) and value >= 0)):
            raise ValueError(f"[{SECTION}] {key} must be a whole number >= 0, not {value!r}")
        return int(text)

    fetch = FetchSettings(
        source=str(pick("source") or ""),
        ttl=number("ttl", 30.0),
        max_staleness=number("max_staleness", 300.0),
        clock_skew=number("clock_skew", 60.0),
        timeout=number("timeout", 5.0),
        retries=whole("retries", 2),
        token_env=pick("token_env") or None,
        public_key=pick("public_key") or None,
        cache_dir=Path(pick("cache_dir") or DEFAULT_CACHE_DIR),
    )
    return GateSettings(
        fetch=fetch,
        host=overrides.get("host") or this_host(config.get("host")),
        not_owner=check_choice("not_owner", pick("not_owner") or "skip", NotOwner),  # type: ignore[arg-type]
        on_unavailable=check_choice("on_unavailable", pick("on_unavailable") or "skip", OnUnavailable),  # type: ignore[arg-type]
    )


KEYS = (
    "source",
    "host",
    "ttl",
    "max_staleness",
    "clock_skew",
    "timeout",
    "retries",
    "token_env",
    "public_key",
    "cache_dir",
    "not_owner",
    "on_unavailable",
)
