"""The failover drill's DAG drill_b (tests/drill/drill.py): every minute, two gated tasks that each insert one row
per (DAG, run, task, server) into the shared work database. The table has no unique key, so a run executed twice
shows as two rows. server-2 owns it in inventory/local; the drill moves it with placement.yml and failover.yml.

Paused when it first appears: the drill creates the ``drill_work_db`` connection, then unpauses it.
"""

from __future__ import annotations

from airflow.sdk import DAG  # also what Airflow's safe mode looks for in a DAG file
from drill_common import drill_dag

dag: DAG = drill_dag("drill_b")
