"""Real Airflow and real Podman: an Airflow home with a SQLite metadata database, and a task image built locally."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin"
SOCKET = Path("/run/podman/podman.sock")
TASK_IMAGE = "localhost/airflow-placement/busybox:latest"


def podman(*args: str) -> str:
    return subprocess.run(["podman", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="session")
def task_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A one-binary image (the host's static busybox): no registry needed."""
    if not SOCKET.is_socket():
        pytest.fail(f"the Podman API socket {SOCKET} is missing: run scripts/bootstrap.sh first")
    if podman("images", "-q", TASK_IMAGE).strip():
        return TASK_IMAGE
    root = tmp_path_factory.mktemp("busybox-rootfs")
    (root / "bin").mkdir()
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    for applet in ("sh", "echo", "cat", "sleep", "date", "hostname"):
        (root / "bin" / applet).symlink_to("busybox")
    archive = root.parent / "busybox.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(root, arcname=".")
    podman("import", "--change", 'CMD ["sh"]', str(archive), TASK_IMAGE)
    return TASK_IMAGE


@dataclass
class Airflow:
    """An Airflow installation on this machine, run through its CLI as a server named by HOST_HOSTNAME."""

    home: Path
    placement_file: Path

    def env(self, host: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            AIRFLOW_HOME=str(self.home),
            AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
            AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{self.home}/airflow.db",
            AIRFLOW__PLACEMENT__SOURCE=str(self.placement_file),
            AIRFLOW__PLACEMENT__CACHE_DIR=str(self.home / f"placement-cache-{host}"),
            HOST_HOSTNAME=host,
            PATH=f"{VENV_BIN}:{os.environ['PATH']}",
        )
        env.update(extra)
        return env

    def run(self, *args: str, host: str = "nobody", **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VENV_BIN / "airflow"), *args],
            env=self.env(host, **extra),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    def check(self, *args: str, host: str = "nobody", **extra: str) -> str:
        result = self.run(*args, host=host, **extra)
        if result.returncode != 0:
            raise AssertionError(f"airflow {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result.stdout

    def json(self, *args: str) -> list[dict[str, str]]:
        """An ``airflow ... --output json`` listing (warnings printed before it are skipped)."""
        out = self.check(*args, "--output", "json")
        rows: list[dict[str, str]] = json.loads(next(line for line in out.splitlines() if line.startswith("[")))
        return rows

    def dags_test(self, dag_id: str, logical_date: str, host: str, **extra: str) -> dict[str, str]:
        """Run one real DAG run with ``logical_date`` as server ``host``; return each task's final state.

        ``airflow dags test`` exits non-zero when the run fails, which some tests expect: the states tell.
        """
        self.run("dags", "test", dag_id, logical_date, host=host, **extra)
        runs = [r for r in self.json("dags", "list-runs", dag_id) if r["logical_date"] == logical_date]
        run_id = max(runs, key=lambda run: run["run_after"])["run_id"]
        return {row["task_id"]: row["state"] for row in self.json("tasks", "states-for-dag-run", dag_id, run_id)}


@pytest.fixture(scope="session")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:
    home = tmp_path_factory.mktemp("airflow-home")
    instance = Airflow(home=home, placement_file=home / "airflow-dag-on-server.yaml")
    instance.placement_file.write_text("placement_example: server-1\n")
    instance.check("db", "migrate")
    instance.check("dags", "reserialize")
    yield instance


def containers_started(image: str, since: float) -> int:
    """How many containers of ``image`` Podman started since ``since`` (epoch seconds)."""
    out = podman(
        "events", "--stream=false", "--since", str(int(since)), "--filter", "event=start", "--format", "{{.Image}}"
    )
    return sum(1 for line in out.splitlines() if line.strip() == image)


@pytest.fixture
def clock_start() -> float:
    return time.time() - 1
