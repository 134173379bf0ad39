"""Every kind of task the cluster policy gates, each leaving a file behind when its own code runs (a test fixture).

The files go to ``$EVERY_TASK_OUT`` (set by tests/integration/test_every_task_gated.py per run), one per piece of
task code: ``<task>`` or ``<task>-<map index>``, and for the steps of a task that runs more than once
``<task>.<step>`` (the deferrable operator before and after deferral, each poke of the sensor, each try).
None of these tasks knows about the placement document: the policy alone decides.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.providers.standard.sensors.date_time import DateTimeSensorAsync
from airflow.providers.standard.sensors.python import PythonSensor
from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import DAG, BaseOperator, setup, task, teardown

from airflow_placement import GatedDockerOperator

TASK_IMAGE = os.environ.get("EVERY_TASK_IMAGE", "localhost/airflow-placement/busybox:latest")


def mark(name: str) -> None:
    """Leave the file ``name`` in ``$EVERY_TASK_OUT``: this piece of task code ran."""
    Path(os.environ["EVERY_TASK_OUT"], name).touch()


class DeferringOperator(BaseOperator):
    """Marks, defers for a moment, and marks again when it resumes."""

    def execute(self, context: Any) -> None:
        mark(f"{self.task_id}.before")
        self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=0)), method_name="resume")

    def resume(self, context: Any, event: Any = None) -> None:
        mark(f"{self.task_id}.after")


class ResumingDateTimeSensor(DateTimeSensorAsync):
    """A sensor set to start in the triggerer (past any worker); marks when it completes on a worker."""

    def execute_complete(self, context: Any, event: Any = None) -> None:
        mark(self.task_id)


def poke_twice(task_id: str, **_: Any) -> bool:
    """False on the first poke, True on the second: the sensor is rescheduled once."""
    first = Path(os.environ["EVERY_TASK_OUT"], f"{task_id}.poke1")
    if first.exists():
        mark(f"{task_id}.poke2")
        return True
    first.touch()
    return False


def fail_first_try(ti: Any, **_: Any) -> None:
    mark(f"retried.try{ti.try_number}")
    if ti.try_number == 1:
        raise RuntimeError("the first try fails on purpose")


with DAG(
    dag_id="every_kind",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["airflow-placement", "test"],
) as every_kind:

    @task
    def taskflow() -> None:
        mark("taskflow")

    @task
    def mapped_taskflow(n: int) -> None:
        mark(f"mapped_taskflow-{n}")

    @setup
    def set_up() -> None:
        mark("set_up")

    @teardown
    def tear_down() -> None:
        mark("tear_down")

    taskflow()
    mapped_taskflow.expand(n=[0, 1, 2])
    BashOperator(task_id="bash", bash_command='touch "$EVERY_TASK_OUT/bash"')
    PythonOperator(task_id="python", python_callable=mark, op_args=["python"])
    BashOperator.partial(task_id="mapped_bash").expand(
        bash_command=[f'touch "$EVERY_TASK_OUT/mapped_bash-{i}"' for i in range(2)]
    )
    DeferringOperator(task_id="deferring")
    ResumingDateTimeSensor(task_id="from_triggerer", target_time=datetime(2026, 1, 1), start_from_trigger=True)
    PythonSensor(
        task_id="rescheduled", python_callable=poke_twice, op_args=["rescheduled"], mode="reschedule", poke_interval=1
    )
    PythonOperator(task_id="retried", python_callable=fail_first_try, retries=1, retry_delay=timedelta(seconds=0))
    GatedDockerOperator(task_id="docker", image=TASK_IMAGE, command=["sh", "-c", 'echo "docker ran"'])
    set_up() >> tear_down()


with DAG(
    dag_id="everywhere",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["airflow-placement", "test", "placement:everywhere"],
) as everywhere:
    PythonOperator(task_id="housekeeping", python_callable=mark, op_args=["housekeeping"])
