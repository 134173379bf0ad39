"""The failover drill's DAGs (tests/drill/dags) on real Airflow and a real work database, without the demo.

Every drill DAG parses; ``airflow dags test drill_mixed`` writes one row per task of the run (the Python task from the
Airflow process, the container task from its container) as its owner, and none as another server. The work database
is a throwaway Postgres container of the image the demo uses (images/build.sh), on Podman's default network, where
the task containers reach it too; the ``drill_work_db`` connection comes from the environment.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))

from airflow_harness import REPO, Airflow, podman

import drill

DAGS_FOLDER = REPO / "tests" / "drill" / "dags"


class Written(NamedTuple):
    rows: list[list[str]]  # task_id, server, dag_id, run_id, logical_date
    errors: str  # the run's error lines, for assertion messages


DATES = {"server-1": "2026-11-20T01:00:00+00:00", "server-2": "2026-11-20T02:00:00+00:00"}


def _psql(container: str, sql: str) -> list[list[str]]:
    out = podman("exec", container, "psql", "-X", "-q", "-At", "-F", "\t", "-U", "work", "-d", "work", "-c", sql)
    return [line.split("\t") for line in out.splitlines() if line]


@pytest.fixture(scope="module")
def work_db() -> Iterator[tuple[str, str]]:
    """A Postgres container with the drill's table: its name and the connection URI to it."""
    image = drill_image()
    name = f"drill-dags-test-work-db-{os.getpid()}"
    password = secrets.token_hex(12)
    podman(
        "run", "--detach", "--rm", "--name", name,
        "-e", "POSTGRES_USER=work", "-e", "POSTGRES_DB=work", "-e", f"POSTGRES_PASSWORD={password}",
        image,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while subprocess.run(["podman", "exec", name, "pg_isready", "-q", "-d", "work"], check=False).returncode:
            if time.monotonic() > deadline:
                pytest.fail(f"the work database container {name} did not accept connections within 120 s")
            time.sleep(1)
        _psql(name, drill.TABLE)
        address = podman("inspect", "--format", "{{.NetworkSettings.IPAddress}}", name).strip()
        yield name, f"postgres://work:{password}@{address}:5432/work"
    finally:
        subprocess.run(["podman", "rm", "--force", "--time", "0", name], check=False, capture_output=True)


def drill_image() -> str:
    image = "localhost/airflow-placement/postgres:15"  # drill_common.IMAGE
    if not podman("images", "-q", image).strip():
        pytest.fail(f"the image {image} is missing: run images/build.sh first")
    return image


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory, work_db: tuple[str, str]) -> dict[str, Written]:
    """drill_mixed run once as its owner (server-1) and once as server-2: the rows each run left, by server."""
    name, uri = work_db
    home = tmp_path_factory.mktemp("airflow-drill-dags")
    airflow = Airflow(home=home, placement_file=home / "airflow-dag-on-server.yaml", dags_folder=DAGS_FOLDER)
    airflow.placement_file.write_text("drill_mixed: server-1\n")
    airflow.setup()
    assert airflow.json("dags", "list-import-errors") == []
    assert {dag["dag_id"] for dag in airflow.json("dags", "list")} == set(drill.DAGS)
    found = {}
    for host, logical_date in DATES.items():
        result = airflow.run("dags", "test", "drill_mixed", logical_date, host=host, AIRFLOW_CONN_DRILL_WORK_DB=uri)
        rows = _psql(
            name,
            "select task_id, server, dag_id, run_id, logical_date from drill_runs "
            f"where logical_date = '{logical_date}' order by task_id",
        )
        errors = [line for line in (result.stdout + result.stderr).splitlines() if "error" in line.lower()]
        found[host] = Written(rows, "\n".join(errors))
    return found


def test_the_owner_writes_one_row_per_task_the_python_one_from_airflow_itself(rows: dict[str, Written]) -> None:
    written, errors = rows["server-1"]
    assert [(task_id, server, dag_id) for task_id, server, dag_id, _, _ in written] == [
        ("first", "server-1", "drill_mixed"),  # the Python task
        ("second", "server-1", "drill_mixed"),  # the container task
    ], errors
    assert written[0][3] == written[1][3]  # one run
    assert written[0][3].startswith("manual__")


def test_another_server_writes_no_row(rows: dict[str, Written]) -> None:
    assert rows["server-2"].rows == []
