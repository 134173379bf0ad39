"""A DAG whose tasks are cleared and run again (a test fixture for tests/integration/test_cleared_rerun.py).

Every time its own code runs, the TaskFlow task adds a line to ``$CLEARED_RERUN_OUT/write.log`` and the
GatedDockerOperator's container prints ``container ran`` into the task's log. Neither knows about the placement
document: the cluster policy decides for the TaskFlow task, the GatedDockerOperator in its own ``execute``.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, task

from airflow_placement import GatedDockerOperator

TASK_IMAGE = "localhost/airflow-placement/busybox:latest"


with DAG(
    dag_id="cleared_rerun",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["airflow-placement", "test"],
) as cleared_rerun:

    @task
    def write(ti: Any = None) -> None:
        with Path(os.environ["CLEARED_RERUN_OUT"], "write.log").open("a") as out:
            out.write(f"{ti.run_id} try {ti.try_number}\n")

    container = GatedDockerOperator(
        task_id="container",
        image=TASK_IMAGE,
        command=["echo", "container ran"],
        auto_remove="success",
    )
    write() >> container
