"""The airflow_objects role's ways of stopping, and its check mode on a server where Airflow does not run yet, on two
``ansible_connection: local`` servers of this machine (the real role, Podman and Ansible; no Airflow stack: the
gated_operator all-options Molecule scenario runs the role on one, and tests/integration/test_objects_in_airflow.py
covers the comparison against a real Airflow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.podman

ANSIBLE = Path(__file__).resolve().parents[2] / "ansible"
SECRET = "s3cr3t-password"
DECLARED = {
    "airflow_objects_connections": [{"conn_id": "warehouse", "conn_type": "postgres", "password": SECRET}],
    "airflow_objects_pools": [{"name": "warehouse", "slots": 4}],
    # A compose project with no containers on this machine: Airflow does not run.
    "airflow_objects_compose_project": "airflow-objects-test-none",
}


def play(tmp_path: Path, host_vars: dict[str, dict[str, Any]], *options: str) -> subprocess.CompletedProcess[str]:
    inventory = tmp_path / "hosts.yml"
    group = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, **DECLARED}
    inventory.write_text(yaml.safe_dump({"airflow_servers": {"hosts": host_vars, "vars": group}}))
    playbook = tmp_path / "objects.yml"
    playbook.write_text(
        yaml.safe_dump(
            [{"name": "Objects", "hosts": "airflow_servers", "gather_facts": False, "roles": ["airflow_objects"]}]
        )
    )
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), str(playbook), *options],
        capture_output=True,
        text=True,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_ROLES_PATH": str(ANSIBLE / "roles")},
        timeout=300,
        check=False,
    )


def messages(output: str) -> list[str]:
    """The messages of the failed tasks."""
    return [
        json.loads(line.split(" => ", 1)[1])["msg"]
        for line in output.splitlines()
        if line.startswith(("fatal: ", "failed: ")) and " => {" in line
    ]


def test_check_mode_before_the_stack_runs_says_so_and_changes_nothing(tmp_path: Path) -> None:
    run = play(tmp_path, {"server-1": {}, "server-2": {}}, "--check", "--diff")
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert output.count("Airflow does not run yet on server-") == 2
    assert "changed=0" in output
    assert SECRET not in output


def test_without_airflow_the_role_stops_in_one_line(tmp_path: Path) -> None:
    run = play(tmp_path, {"server-1": {}})
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert messages(output) == [
        "no running container of the service airflow-scheduler in the compose project airflow-objects-test-none on "
        "server-1: run the airflow_compose role first"
    ]
    assert SECRET not in output


def test_servers_that_declare_different_objects_stop_in_one_line(tmp_path: Path) -> None:
    other = [{"name": "warehouse", "slots": 8}]
    run = play(tmp_path, {"server-1": {}, "server-2": {"airflow_objects_pools": other}}, "--check")
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert messages(output) == [
        "server-2 declares other connections, variables or pools than server-1: set airflow_objects_connections, "
        "_variables and _pools for the group of all servers, not per host"
    ]
    assert SECRET not in output
