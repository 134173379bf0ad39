"""Benchmark DAGs: what a server that does not own a DAG spends on each task, today's operator against the gated one.

``todays_operator`` reproduces the behaviour of the original SCDockerOperator (described in shared/reference): it
fetches the document on every task with no timeout, sleeps 5 s, and on the wrong server still starts a container
that only echoes. ``gated_operator`` is this project's GatedDockerOperator. Both DAGs have the same three
independent tasks.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from typing import Any

import requests
import yaml
from airflow.providers.docker.operators.docker import DockerOperator
from airflow.sdk import DAG

from airflow_placement import GatedDockerOperator

IMAGE = os.environ.get("PLACEMENT_EXAMPLE_IMAGE", "localhost/airflow-placement/busybox:latest")
TASKS = ("first", "second", "third")


class TodaysDockerOperator(DockerOperator):
    """The behaviour being replaced, kept only to measure it."""

    def execute(self, context: Any) -> Any:
        data = yaml.safe_load(requests.get(os.environ["BENCH_SOURCE_URL"], headers={"Cache-Control": "no-cache"}).text)
        if self.dag_id not in data or data[self.dag_id] != os.getenv("HOST_HOSTNAME"):
            self.command = 'sh -c "echo NOT CORRECT SERVER"'
        time.sleep(5)
        return super().execute(context)


for dag_id, operator in (("todays_operator", TodaysDockerOperator), ("gated_operator", GatedDockerOperator)):
    with DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1), tags=["benchmark"]):
        # Independent tasks: each one really executes (a skipped upstream would skip the rest without executing them).
        for task_id in TASKS:
            operator(task_id=task_id, image=IMAGE, command=["sh", "-c", "echo working"], auto_remove="success")
