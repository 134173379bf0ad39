"""This machine's Podman is what the project's podman role makes of it (scripts/host-podman.yml, run by
scripts/bootstrap.sh): the playbook in check mode would change nothing, Podman runs with the settings of the
containers.conf drop-in the role rendered, both API sockets answer, and one `podman system service` serves them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "scripts" / "host-podman.yml"
VENV_BIN = Path(sys.executable).parent
SOCKET = Path("/run/podman/podman.sock")
DOCKER_SOCKET = Path("/run/docker.sock")
PIDFILE = Path("/run/podman/podman-api.pid")
CONTAINERS_CONF = Path("/etc/containers/containers.conf.d/50-airflow-placement.conf")  # the role's drop-in

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the host's Podman set-up is root's (scripts/bootstrap.sh)")


@pytest.fixture(scope="module")
def check_run() -> dict[str, Any]:
    """host-podman.yml in check mode with diffs, as the ansible.posix.json callback reports it."""
    env = {**os.environ, "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json", "ANSIBLE_NOCOLOR": "1"}
    run = subprocess.run(
        [VENV_BIN / "ansible-playbook", "-i", "localhost,", "-c", "local", "--check", "--diff", PLAYBOOK],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, f"host-podman.yml --check failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    report: dict[str, Any] = json.loads(run.stdout)
    return report


def _task_results(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(task name without the role's prefix, result) for every task that ran."""
    return [
        (task["task"]["name"].split(" : ", 1)[-1], result)
        for play in report["plays"]
        for task in play["tasks"]
        for result in task["hosts"].values()
    ]


def test_the_podman_role_would_change_nothing_on_this_machine(check_run: dict[str, Any]) -> None:
    stats = check_run["stats"]["localhost"]
    changed = {name: result.get("diff", "") for name, result in _task_results(check_run) if result.get("changed")}
    assert stats["changed"] == 0 and not changed, f"the host differs from the podman role: {changed}"
    assert stats["failures"] == 0 and stats["unreachable"] == 0


def test_containers_conf_is_the_one_the_role_renders(check_run: dict[str, Any]) -> None:
    results = dict(_task_results(check_run))
    rendered = results[
        "configure | Render the containers.conf drop-in (runtime, ulimits, cgroup manager, network backend)"
    ]
    assert not rendered.get("changed") and not rendered.get("skipped"), rendered
    assert rendered["dest"] == str(CONTAINERS_CONF)


def test_podman_runs_with_the_settings_of_containers_conf() -> None:
    conf = tomllib.loads(CONTAINERS_CONF.read_text())
    info = json.loads(subprocess.run(["podman", "info", "--format", "json"], capture_output=True, check=True).stdout)
    assert info["host"]["ociRuntime"]["name"] == conf["engine"]["runtime"]
    assert info["host"]["cgroupManager"] == conf["engine"]["cgroup_manager"]
    assert info["host"]["eventLogger"] == conf["engine"]["events_logger"]
    assert info["host"]["networkBackend"] == conf["network"]["network_backend"]


def _ping(socket: Path) -> str:
    run = subprocess.run(
        ["curl", "-fsS", "--max-time", "5", "--unix-socket", socket, "http://d/_ping"],
        capture_output=True,
        text=True,
        check=False,
    )
    return run.stdout or run.stderr


@pytest.mark.parametrize("socket", [SOCKET, DOCKER_SOCKET], ids=str)
def test_the_api_answers(socket: Path) -> None:
    assert _ping(socket) == "OK"


def test_docker_clients_reach_the_podman_socket() -> None:
    assert DOCKER_SOCKET.resolve() == SOCKET


def _api_processes() -> list[int]:
    """Every `podman system service` serving SOCKET, whoever started it."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if Path(args[0]).name == "podman" and args[1:3] == ["system", "service"]:
            endpoints = [urllib.parse.urlparse(a).path for a in args[3:] if a.startswith("unix://")]
            if str(SOCKET) in endpoints:
                pids.append(int(proc.name))
    return pids


@pytest.mark.skipif(Path("/run/systemd/system").is_dir(), reason="where systemd runs, podman.socket serves the API")
def test_one_api_process_the_one_the_role_started() -> None:
    assert PIDFILE.is_file(), f"{PIDFILE} is missing: the API was not started by the podman role"
    assert _api_processes() == [int(PIDFILE.read_text())]
