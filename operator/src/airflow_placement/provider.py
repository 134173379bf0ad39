"""The provider info Airflow reads through the package's ``apache_airflow_provider`` entry point.

It declares the ``[placement]`` configuration section (every key with its type, default and meaning, from
:data:`airflow_placement.settings.OPTIONS`), so ``airflow config list`` shows it and the gate reads each key
without a fallback of its own. The cluster policy comes in through its own entry point (``airflow.policy``):
Airflow reads policies only from there.
"""

from __future__ import annotations

from typing import Any

from airflow_placement import __version__
from airflow_placement.settings import OPTIONS, SECTION


def get_provider_info() -> dict[str, Any]:
    """The provider's description, in the form of Airflow's ``provider_info.schema.json``."""
    return {
        "package-name": "airflow-placement",
        "name": "Airflow Placement",
        "description": "Identical Airflow servers that never run the same DAG run twice: every task is gated by a "
        "placement document (the cluster policy airflow_placement.policy, GatedDockerOperator, the "
        "airflow-placement command).",
        "versions": [__version__],
        "config": {
            SECTION: {
                "description": "Where this server reads the placement document and what its tasks do when they "
                "do not run here. Every task decides from it before its own code runs (the airflow.policy entry "
                "point airflow_placement.policy); a DAG tagged placement:everywhere runs on every server.",
                "options": {
                    option.key: {
                        "description": option.description,
                        "version_added": None,
                        "type": option.type,
                        "example": None,
                        "default": option.default,
                    }
                    for option in OPTIONS
                },
            }
        },
    }
