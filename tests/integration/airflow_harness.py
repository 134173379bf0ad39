"""Real Airflow and real Podman, driven through their command lines: used by the integration tests and benchmarks.

An Airflow home with a SQLite metadata database on this machine plays one server at a time: HOST_HOSTNAME and the
placement settings are passed per command, as the compose stack passes them to a server's containers.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin"
SOCKET = Path("/run/podman/podman.sock")
TASK_IMAGE = "localhost/airflow-placement/busybox:latest"


def podman(*args: str) -> str:
    return subprocess.run(["podman", *args], check=True, capture_output=True, text=True).stdout


def socket_answers(path: Path) -> bool:
    """Whether a server listens on the Unix socket ``path`` (a socket file left by a stopped service does not)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        try:
            client.connect(str(path))
        except OSError:
            return False
    return True


def ensure_task_image() -> str:
    """A one-binary image (the host's static busybox), as images/build.sh makes it: no registry needed."""
    if not socket_answers(SOCKET):
        raise RuntimeError(f"nothing answers on the Podman API socket {SOCKET}: run scripts/bootstrap.sh first")
    if podman("images", "-q", TASK_IMAGE).strip():
        return TASK_IMAGE
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp, "rootfs")
        (root / "bin").mkdir(parents=True)
        shutil.copy("/bin/busybox", root / "bin" / "busybox")
        for applet in ("sh", "echo", "cat", "sleep", "date", "hostname"):
            (root / "bin" / applet).symlink_to("busybox")
        archive = Path(tmp, "busybox.tar")
        with tarfile.open(archive, "w") as tar:
            tar.add(root, arcname=".")
        podman("import", "--change", 'CMD ["sh"]', str(archive), TASK_IMAGE)
    return TASK_IMAGE


class OwnImage:
    """A tag of the task image that only one run uses, so that counting the containers started from it counts that
    run's alone: not an earlier test's started in the same second, nor a demo's, a drill's or Molecule's beside the
    tests. Podman records a container's image by the name it was created with."""

    def __init__(self, image: str) -> None:
        self.name = f"{image.rsplit(':', 1)[0]}:run-{uuid.uuid4().hex[:12]}"
        self.since = time.time() - 5
        podman("tag", image, self.name)

    def started(self) -> int:
        """How many containers Podman has started from this tag."""
        out = podman(
            "events", "--stream=false", "--since", str(int(self.since)), "--filter", "event=start", "--format",
            "{{.Image}}",
        )  # fmt: skip
        return sum(1 for line in out.splitlines() if line.strip() == self.name)

    def remove(self) -> None:
        podman("untag", self.name, self.name)  # only this name: without one, untag removes every name


@contextmanager
def own_image(image: str) -> Iterator[OwnImage]:
    """An :class:`OwnImage` of ``image`` for the block, untagged after it."""
    tag = OwnImage(image)
    try:
        yield tag
    finally:
        tag.remove()


@dataclass
class Airflow:
    """An Airflow installation on this machine, run through its CLI as the server named by HOST_HOSTNAME."""

    home: Path
    placement_file: Path
    dags_folder: Path = field(default=REPO / "dags")

    def env(self, host: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            AIRFLOW_HOME=str(self.home),
            AIRFLOW__CORE__DAGS_FOLDER=str(self.dags_folder),
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

    def setup(self) -> None:
        self.check("db", "migrate")
        self.check("dags", "reserialize")

    def json(self, *args: str) -> list[dict[str, str]]:
        """An ``airflow ... --output json`` listing (warnings printed before it are skipped)."""
        out = self.check(*args, "--output", "json")
        rows: list[dict[str, str]] = json.loads(next(line for line in out.splitlines() if line.startswith("[")))
        return rows

    def task_instances(self, dag_id: str, logical_date: str) -> list[dict[str, str]]:
        """The task instances of the newest run of ``dag_id`` with ``logical_date``."""
        runs = [r for r in self.json("dags", "list-runs", dag_id) if r["logical_date"] == logical_date]
        run_id = max(runs, key=lambda run: run["run_after"])["run_id"]
        return self.json("tasks", "states-for-dag-run", dag_id, run_id)

    def dags_test(self, dag_id: str, logical_date: str, host: str, **extra: str) -> dict[str, str]:
        """Run one real DAG run with ``logical_date`` as server ``host``; return each task's final state.

        ``airflow dags test`` exits non-zero when the run fails, which some tests expect: the states tell.
        """
        self.run("dags", "test", dag_id, logical_date, host=host, **extra)
        return {row["task_id"]: row["state"] for row in self.task_instances(dag_id, logical_date)}
