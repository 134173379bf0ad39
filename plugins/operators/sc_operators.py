"""Keeps ``from operators.sc_operators import SCDockerOperator`` working in existing DAGs.

Installed into Airflow's plugins folder (which Airflow puts on ``sys.path``) by the ``gated_operator`` role.
"""

from airflow_placement import GatedDockerOperator, SCDockerOperator

__all__ = ["GatedDockerOperator", "SCDockerOperator"]
