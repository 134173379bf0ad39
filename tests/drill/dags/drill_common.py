"""Shared by the drill DAGs (drill_a.py, drill_b.py); not a DAG itself. A test fixture: the local demo ships this
folder to its servers beside the example DAGs (inventory/local/group_vars/all/drill.yml).

Each task's container (the postgres image, for psql) inserts one row into ``drill_runs`` of the work database:
the DAG, the run, its logical date, the task and the server (``HOST_HOSTNAME``). The work database's address,
user and password come from the Airflow connection ``drill_work_db`` (created by tests/drill/drill.py on every
server), passed as private environment (not a template field: not rendered, not stored with the task instance).
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from airflow.sdk import DAG, BaseHook

from airflow_placement import GatedDockerOperator

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


def drill_dag(dag_id: str) -> DAG:
    with DAG(
        dag_id=dag_id,
        schedule="* * * * *",
        start_date=datetime(2026, 1, 1),
        catchup=False,
        is_paused_upon_creation=True,
        max_active_runs=3,
        tags=["airflow-placement", "drill"],
    ) as dag:
        tasks = [
            DrillOperator(
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
            for task_id in ("first", "second")
        ]
        tasks[0] >> tasks[1]
    return dag
