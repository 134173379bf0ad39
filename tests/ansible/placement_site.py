"""A throwaway inventory of ``ansible_connection: local`` servers for the dag_placement tests: each server publishes
the document to its own directory under the site, the controller keeps its render directory and the publisher's
state under the inventory (the role's defaults). Documents are read back with the project's parser and decision,
so the tests check ownership, not text."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from airflow_placement.decision import decide
from airflow_placement.document import Meta, Placement, parse_document

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = ROOT / "ansible"
VENV_BIN = Path(sys.executable).parent
CLI = str(VENV_BIN / "airflow-placement")
DOCUMENT = "airflow-dag-on-server.yaml"
EARLY = datetime(2020, 1, 1, tzinfo=UTC)
THREE = ("server-1", "server-2", "server-3")
LEAD = 90 + 7  # server-1's maximum staleness (the longest) + the clock skew: how far ahead a handover must be


def lead_of(handover_at: datetime, meta: Meta) -> float:
    """How far ahead of the document's issue a handover in it takes effect, in seconds."""
    return (handover_at - meta.issued).total_seconds()


@dataclass
class Run:
    returncode: int
    output: str
    seconds: float

    def failure(self) -> str:
        """The message of the last failed task (the role stops with one line), or a failed command's standard error."""
        results = [
            json.loads(line.split(" => ", 1)[1])
            for line in self.output.splitlines()
            if line.startswith("fatal: ") and " => {" in line
        ]
        assert results, self.output
        return str(results[-1].get("stderr") or results[-1].get("msg", ""))


@dataclass
class Site:
    """The inventory's directory, its servers, and how it was made (so a test can change it and write it again)."""

    path: Path
    servers: tuple[str, ...]
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    group_vars: dict[str, Any] = field(default_factory=dict)

    @property
    def inventory(self) -> Path:
        return self.path / "inventory"

    @property
    def state_dir(self) -> Path:
        return self.inventory / ".placement"

    @property
    def rendered(self) -> Path:
        return self.inventory / ".rendered" / DOCUMENT

    @property
    def moves_file(self) -> Path:
        return self.inventory / "group_vars" / "all" / "dag_placement_moves.yml"

    def publish_dir(self, server: str) -> Path:
        return self.path / "published" / server

    def write(self) -> None:
        _write(self.inventory / "hosts.yml", {"airflow_servers": {"hosts": self.hosts}})
        _write(self.inventory / "group_vars" / "all" / "site.yml", self.group_vars)

    def text(self, server: str) -> str:
        return (self.publish_dir(server) / DOCUMENT).read_text()

    def placement(self, server: str) -> Placement:
        path = self.publish_dir(server) / DOCUMENT
        return parse_document(path.read_bytes(), origin=str(path))

    def meta(self, server: str) -> Meta:
        meta = self.placement(server).meta
        assert meta is not None
        return meta

    def owner(self, server: str, dag: str, when: datetime, task: str | None = None) -> str | None:
        return decide(self.placement(server), dag_id=dag, task_id=task, host=server, when=when).owner

    def moves(self) -> list[dict[str, Any]]:
        if not self.moves_file.exists():
            return []
        return list(yaml.safe_load(self.moves_file.read_text())["dag_placement_moves"])

    def publishing(self) -> bool:
        """Whether the publisher's lock is held (a publish under way)."""
        return (self.state_dir / "publishing.json").exists()

    def files(self) -> dict[str, bytes]:
        """Every file of the site but the publisher's lock file, by path: to show that a run changed nothing."""
        return {
            str(path.relative_to(self.path)): path.read_bytes()
            for path in sorted(self.path.rglob("*"))
            if path.is_file() and path.name != ".state.lock"
        }

    def command(self, playbook: str, *extra: str) -> list[str]:
        return [str(VENV_BIN / "ansible-playbook"), "-i", str(self.inventory), str(ANSIBLE / playbook), *extra]

    def start(self, playbook: str, *extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(playbook, *extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_ENV
        )

    def play(self, playbook: str, *extra: str) -> Run:
        start = time.monotonic()
        result = subprocess.run(
            self.command(playbook, *extra), capture_output=True, text=True, env=_ENV, timeout=180, check=False
        )
        return Run(result.returncode, result.stdout + result.stderr, time.monotonic() - start)

    def copy_to(self, path: Path) -> Site:
        """The same site under ``path``: its inventory written for the new place, its state and documents copied."""
        site = make_site(path, self.servers)
        for name, values in copy.deepcopy(self.hosts).items():
            site.hosts[name] = {**values, "dag_placement_file_dir": str(site.publish_dir(name))}
        site.group_vars = copy.deepcopy(self.group_vars)
        site.write()
        for part in ("inventory/.placement", "inventory/.rendered", "inventory/.secrets", "published"):
            if (self.path / part).exists():
                shutil.copytree(self.path / part, path / part, dirs_exist_ok=True)
        if self.moves_file.exists():
            shutil.copy(self.moves_file, site.moves_file)
        return site


_ENV = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_ROLES_PATH": str(ANSIBLE / "roles")}


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("---\n" + yaml.safe_dump(data, sort_keys=False))


def make_site(tmp_path: Path, servers: tuple[str, ...] = THREE, **overrides: Any) -> Site:
    """Three servers (or ``servers``): server-1 the primary of etl_orders and etl_stock, the second of etl_web; a
    group, per-DAG entries, a catch-all and task overrides; server-1's maximum staleness the longest (90 s)."""
    site = Site(tmp_path, servers)
    site.hosts = {name: {"dag_placement_file_dir": str(site.publish_dir(name))} for name in servers}
    site.hosts["server-1"]["dag_placement_dags"] = ["etl_orders", "etl_stock"]
    site.hosts["server-1"]["placement_max_staleness_seconds"] = 90  # the longest: a handover must wait for it
    site.hosts[servers[1]]["dag_placement_dags"] = ["etl_web"]
    site.group_vars = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "placement_max_staleness_seconds": 30,
        "placement_clock_skew_seconds": 7,
        "dag_placement_groups": [{"dags": ["report_*", "dashboard"], "owner": servers[1]}],
        "dag_placement_document": {
            "*": "server-1",
            "billing": {"owner": "server-1", "tasks": {"send_invoices": servers[1], "archive": "server-1"}},
            "dashboard": servers[-1],  # per DAG wins over its group
        },
        **overrides.pop("group_vars", {}),
    }
    for name, values in overrides.pop("host_vars", {}).items():
        site.hosts[name].update(values)
    assert not overrides, overrides
    site.write()
    return site


def hold_the_lock(site: Site) -> None:
    """Start a publish the way another controller run would, and leave it under way (its lock held)."""
    desired = site.inventory / ".rendered" / f"desired-{DOCUMENT}"
    out = site.path / "elsewhere.yaml"
    subprocess.run(
        [CLI, "publish", str(desired), "--state-dir", str(site.state_dir), "--lead", str(LEAD), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    assert site.publishing()
