"""The failover drill (tests/drill/drill.py) as a test: needs the local demo up (scripts/demo.sh) and root.

Opt-in, not part of scripts/test.sh's default stages:

    scripts/demo.sh && .venv/bin/pytest -q tests/drill; scripts/demo-down.sh

It stops server-1 (the crash step); scripts/demo.sh brings it back. About 15 minutes.
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


def _demo_up() -> bool:
    if os.geteuid() != 0 or shutil.which("podman") is None:
        return False
    names = subprocess.run(["podman", "ps", "--format", "{{.Names}}"], check=False, capture_output=True, text=True)
    running = set(names.stdout.split())
    return {"server-1", "server-2", drill.WORK_DB} <= running


def test_failover_drill() -> None:
    if not _demo_up():
        pytest.fail("the local demo is not up: run scripts/demo.sh (as root) first")
    report = drill.run_drill(settle=float(os.environ.get("DRILL_SETTLE", "180")))
    print("\n".join(report.lines()))
    assert report.runs_checked > 0
    assert report.duplicates == 0
    assert report.lost == 0
    assert report.problems == []
    assert report.failover_seconds is not None
    assert report.forced_failover_seconds is not None
    assert report.rerun_runs > 0 and report.rerun_once == report.rerun_runs
    assert len(report.source_steps) == 2
