"""DAGs for the placement view's browser test: only their ids matter (nothing runs them)."""

from __future__ import annotations

from datetime import datetime

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

for dag_id in ("reports", "etl_daily", "housekeeping", "unplaced"):
    with DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
        EmptyOperator(task_id="work")
