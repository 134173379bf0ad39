"""Molecule's check of the gate: one DAG this server owns, one owned by another server.

``gated_owned`` uses ``GatedDockerOperator``; ``gated_elsewhere`` uses ``SCDockerOperator`` through the
compatibility module, as existing DAGs do. Each task names its container so that verify can tell whether it ran.
"""

import pendulum
from airflow.sdk import DAG

from airflow_placement import GatedDockerOperator
from operators.sc_operators import SCDockerOperator

for dag_id, operator in (("gated_owned", GatedDockerOperator), ("gated_elsewhere", SCDockerOperator)):
    with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC"), catchup=False) as dag:
        operator(
            task_id="hello",
            image="localhost/airflow-placement/busybox:latest",
            command=["echo", f"hello from {dag_id}"],
            container_name=f"molecule-{dag_id}",
            auto_remove="never",
            mount_tmp_dir=False,
        )
    globals()[dag_id] = dag
