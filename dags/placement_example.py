"""An example DAG gated by the placement document: its container runs only on the server that owns the run.

Every server schedules this DAG. On the owner (see ``airflow-placement show``) the tasks' containers run; on the
other servers the tasks are skipped without a container being created.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

from airflow_placement import GatedDockerOperator

# The task image must exist on every server; sites without a registry load it there (see images/README.md).
IMAGE = os.environ.get("PLACEMENT_EXAMPLE_IMAGE", "localhost/airflow-placement/busybox:latest")

with DAG(
    dag_id="placement_example",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["airflow-placement", "example"],
):
    extract = GatedDockerOperator(
        task_id="extract",
        image=IMAGE,
        command=["sh", "-c", "echo extracting on $HOST_HOSTNAME for {{ dag_run.run_id }}"],
        environment={"HOST_HOSTNAME": os.environ.get("HOST_HOSTNAME", "")},
        auto_remove="success",
    )
    report = GatedDockerOperator(
        task_id="report",
        image=IMAGE,
        command=["sh", "-c", "echo reporting on $HOST_HOSTNAME"],
        environment={"HOST_HOSTNAME": os.environ.get("HOST_HOSTNAME", "")},
        auto_remove="success",
    )
    extract >> report
