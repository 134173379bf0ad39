"""The failover drill's DAG drill_mixed (tests/drill/drill.py): every minute, a Python task that inserts its row into
the shared work database itself, from the Airflow worker (no container: the cluster policy's gate alone stands before
its code), then a gated container task that inserts its own. One row per (DAG, run, task, server), no unique key, so
a run executed twice shows as two rows. No line of inventory/local names it: the catch-all ``"*": server-1`` of
group_vars/all/placement.yml gives it to server-1, so failover.yml moves it with drill_a.

Paused when it first appears: the drill creates the ``drill_work_db`` connection, then unpauses it.
"""

from __future__ import annotations

from airflow.sdk import DAG  # also what Airflow's safe mode looks for in a DAG file
from drill_common import mixed_drill_dag

dag: DAG = mixed_drill_dag("drill_mixed")
