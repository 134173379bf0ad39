"""airflow-placement: identical Airflow servers that never do the same work twice.

The gated operator is imported lazily so that the document, decision and fetch modules (and the CLI) work without
loading Airflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["GatedDockerOperator", "SCDockerOperator", "__version__"]

if TYPE_CHECKING:
    from airflow_placement.operators import GatedDockerOperator, SCDockerOperator


def __getattr__(name: str) -> Any:
    if name in ("GatedDockerOperator", "SCDockerOperator"):
        from airflow_placement import operators  # noqa: PLC0415 - Airflow loads only when the operator is used

        return getattr(operators, name)
    raise AttributeError(f"module 'airflow_placement' has no attribute {name!r}")
