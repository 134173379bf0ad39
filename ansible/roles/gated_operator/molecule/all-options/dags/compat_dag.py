"""A DAG as existing ones are written: parsed without import errors only if the compatibility module is installed."""

import pendulum
from airflow.sdk import DAG

from operators.sc_operators import SCDockerOperator

with DAG("compat_dag", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC"), catchup=False) as dag:
    SCDockerOperator(task_id="hello", image="localhost/airflow-placement/busybox:latest", command=["true"])
