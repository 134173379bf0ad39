"""A DAG written for the original SCDockerOperator plugin, unchanged: it keeps working with airflow-placement."""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

from operators.sc_operators import SCDockerOperator

IMAGE = os.environ.get("PLACEMENT_EXAMPLE_IMAGE", "localhost/airflow-placement/busybox:latest")

with DAG(
    dag_id="legacy_sc_example",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["airflow-placement", "example"],
) as dag:
    task = SCDockerOperator(
        task_id="my_task",
        image=IMAGE,
        api_version="auto",
        auto_remove="success",
        command="echo legacy task ran",
        docker_url="unix://var/run/docker.sock",
        network_mode="bridge",
        dag=dag,
    )
