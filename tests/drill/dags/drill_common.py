"""Shared by the drill DAGs (drill_a.py, drill_b.py, drill_mixed.py); not a DAG itself. A test fixture: the local demo
ships this folder to its servers beside the example DAGs (inventory/local/group_vars/all/drill.yml).

Each task inserts one row into ``drill_runs`` of the work database: the DAG, the run, its logical date, the task and
the server (``HOST_HOSTNAME``). A container task does it with psql in its container (the postgres image); the Python
task of drill_mixed from the Airflow worker itself, with psycopg2. The work database's address, user and password come
from the Airflow connection ``drill_work_db`` (created by tests/drill/drill.py on every server); a container gets them
as private environment (not a template field: not rendered, not stored with the task instance).
"""

from __future__ import annotations

import os
from contextlib import closing
from datetime import datetime
from typing import Any

from airflow.sdk import DAG, BaseHook, task

from airflow_placement import GatedDockerOperator
from airflow_placement.gate import configured

IMAGE = os.environ.get("DRILL_IMAGE", "localhost/airflow-placement/postgres:15")
CONN_ID = "drill_work_db"
INSERT = (
    'psql -X -q -v ON_ERROR_STOP=1 -c "insert into drill_runs (dag_id, run_id, logical_date, task_id, server) '
    "values ('$DRILL_DAG_ID', '$DRILL_RUN_ID', '$DRILL_LOGICAL_DATE', '$DRILL_TASK_ID', '$HOST_HOSTNAME')\""
)


class DrillOperator(GatedDockerOperator):
    """A GatedDockerOperator whose container gets the work database's credentials; the gate still decides."""

    def execute(self, context: Any) -> Any:
        settings = self.placement_settings()
        conn = BaseHook.get_connection(CONN_ID)
        self._private_environment = {
            "PGHOST": conn.host or "",
            "PGPORT": str(conn.port or 5432),
            "PGUSER": conn.login or "",
            "PGPASSWORD": conn.password or "",
            "PGDATABASE": conn.schema or "",
            "HOST_HOSTNAME": settings.host or "",
        }
        return super().execute(context)


def container_task(dag_id: str, task_id: str) -> DrillOperator:
    """A task whose container inserts the task's row."""
    return DrillOperator(
        task_id=task_id,
        image=IMAGE,
        command=["sh", "-c", INSERT],
        environment={
            "DRILL_DAG_ID": dag_id,
            "DRILL_RUN_ID": "{{ run_id }}",
            "DRILL_LOGICAL_DATE": "{{ (logical_date or dag_run.run_after).isoformat() }}",
            "DRILL_TASK_ID": task_id,
        },
        auto_remove="success",
        retries=0,
    )


def insert_row(**context: Any) -> None:
    """Insert this task's row from the Airflow worker: no container, only the cluster policy's gate before it."""
    import psycopg2  # noqa: PLC0415 - needed only when the task runs, not each time the file is parsed

    conn = BaseHook.get_connection(CONN_ID)
    ti = context["ti"]
    logical_date = context.get("logical_date") or context["dag_run"].run_after
    with (
        closing(
            psycopg2.connect(
                host=conn.host,
                port=conn.port or 5432,
                user=conn.login,
                password=conn.password,
                dbname=conn.schema,
                connect_timeout=10,
            )
        ) as db,
        db,  # one transaction, committed on leaving
        db.cursor() as cursor,
    ):
        cursor.execute(
            "insert into drill_runs (dag_id, run_id, logical_date, task_id, server) values (%s, %s, %s, %s, %s)",
            (ti.dag_id, ti.run_id, logical_date, ti.task_id, configured().host),
        )


def _dag(dag_id: str) -> DAG:
    return DAG(
        dag_id=dag_id,
        schedule="* * * * *",
        start_date=datetime(2026, 1, 1),
        catchup=False,
        is_paused_upon_creation=True,
        max_active_runs=3,
        tags=["airflow-placement", "drill"],
    )


def drill_dag(dag_id: str) -> DAG:
    """Two container tasks, ``first`` then ``second``."""
    with _dag(dag_id) as dag:
        container_task(dag_id, "first") >> container_task(dag_id, "second")
    return dag


def mixed_drill_dag(dag_id: str) -> DAG:
    """A Python task ``first``, then a container task ``second``."""
    with _dag(dag_id) as dag:
        task(insert_row, task_id="first", retries=0)() >> container_task(dag_id, "second")
    return dag
