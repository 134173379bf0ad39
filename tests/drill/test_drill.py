"""The failover drill (tests/drill/drill.py) as a test: needs the local demo up (scripts/demo.sh, with its renewer)
and root. (tests/drill/test_drill_dags.py, beside it, needs neither: the drill's DAGs on a throwaway work database.)

Opt-in, not part of scripts/test.sh's default stages:

    scripts/test.sh drill     # = scripts/demo.sh && .venv/bin/pytest -q -s tests/drill; scripts/demo-down.sh

It stops and starts server-1 (the crash and the restarts) and leaves its DAGs on server-2. About half an hour.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import drill

STEPS = (
    "ownership edit (placement.yml)",
    "two failover.yml at once",
    "republished twice",
    "stale mirror",
    "restart, route to the source cut",
    "restart, route open",
)


def _demo_up() -> bool:
    if os.geteuid() != 0 or shutil.which("podman") is None:
        return False
    names = subprocess.run(["podman", "ps", "--format", "{{.Names}}"], check=False, capture_output=True, text=True)
    running = set(names.stdout.split())
    return {"server-1", "server-2", drill.WORK_DB} <= running


def test_failover_drill() -> None:
    if not _demo_up():
        pytest.fail("the local demo is not up: run scripts/demo.sh (as root) first")
    report = drill.run_drill(settle=float(os.environ.get("DRILL_SETTLE", "60")))
    print("\n".join(report.lines()))
    assert report.problems == []
    assert report.runs_checked > 0
    assert report.duplicates == 0
    assert report.lost == 0
    for dag_id in drill.DAGS:  # drill_mixed too: its Python task's rows as well as its container task's
        assert report.by_dag[dag_id]["runs"] > 0, dag_id
        assert report.by_dag[dag_id]["rows"] > 0, dag_id
        assert report.by_dag[dag_id]["duplicates"] == report.by_dag[dag_id]["lost"] == 0, dag_id
    assert report.failover_seconds is not None and report.restore_seconds is not None
    assert report.forced_failover_seconds is not None
    assert report.rerun_runs > 0 and report.rerun_once == report.rerun_runs
    assert len(report.source_steps) == 2
    assert set(STEPS) <= set(report.steps)
