"""The watchdog drill (tests/drill/watchdog_drill.py) as a test: needs the watchdog demo up (scripts/demo.sh
--watchdog: serve publishing, the publisher container, airflow-placement watch running) and root.

Opt-in, not part of scripts/test.sh's default stages, nor of its drill stage (the file-publishing demo):

    scripts/test.sh drill-watchdog   # = scripts/demo.sh --watchdog && .venv/bin/pytest -q -s
                                     #   tests/drill/test_watchdog_drill.py; scripts/demo-down.sh

Fails server-1 three times (a crash, cut off from the source and the watchdog, its scheduler stopped), each time
waiting for the watchdog to move its DAGs and give them back, then cuts the watchdog off from everything. About
half an hour.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import watchdog_drill


def _demo_up() -> bool:
    if os.geteuid() != 0 or shutil.which("podman") is None:
        return False
    names = subprocess.run(["podman", "ps", "--format", "{{.Names}}"], check=False, capture_output=True, text=True)
    return {"server-1", "server-2", watchdog_drill.PUBLISHER, "airflow-placement-work-db"} <= set(names.stdout.split())


def test_watchdog_drill() -> None:
    if not _demo_up() or not watchdog_drill.WATCHDOG_CONFIG.exists():
        pytest.fail("the watchdog demo is not up: run scripts/demo.sh --watchdog (as root) first")
    report = watchdog_drill.run_watchdog_drill(settle=float(os.environ.get("DRILL_SETTLE", "60")))
    print("\n".join(report.lines()))
    assert report.problems == []
    assert report.runs_checked > 0
    assert report.duplicates == 0
    assert report.lost == 0
    assert [s.name for s in report.scenarios] == list(watchdog_drill.SCENARIOS)
    for scenario in report.scenarios[:3]:  # each failure: the DAGs moved by the watchdog, and given back
        assert scenario.first_row is not None, scenario.name
        assert scenario.recovered is not None, scenario.name
        assert any("published serial" in action for action in scenario.actions), scenario.name
