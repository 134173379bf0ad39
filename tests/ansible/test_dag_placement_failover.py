"""placement.yml and failover.yml, run for real against a throwaway inventory of ``ansible_connection: local`` servers
that publish the document to temporary directories. The documents are read back with the project's parser and
decision, so these tests check ownership, not text."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_placement.decision import decide
from airflow_placement.document import Placement, parse_document

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = ROOT / "ansible"
ROLE = ANSIBLE / "roles" / "dag_placement"
VENV_BIN = Path(sys.executable).parent
DOCUMENT = "airflow-dag-on-server.yaml"
EARLY = datetime(2020, 1, 1, tzinfo=UTC)


@dataclass
class Run:
    returncode: int
    output: str
    seconds: float


@dataclass
class Site:
    """A throwaway inventory: three servers (server-1..3), each publishing to its own directory."""

    path: Path
    servers: tuple[str, ...]

    def publish_dir(self, server: str) -> Path:
        return self.path / "published" / server

    def placement(self, server: str) -> Placement:
        path = self.publish_dir(server) / DOCUMENT
        return parse_document(path.read_bytes(), origin=str(path))

    def owner(self, server: str, dag: str, when: datetime, task: str | None = None) -> str | None:
        return decide(self.placement(server), dag_id=dag, task_id=task, host=server, when=when).owner

    def play(self, playbook: str, *extra: str) -> Run:
        start = time.monotonic()
        result = subprocess.run(
            [str(VENV_BIN / "ansible-playbook"), "-i", str(self.path / "inventory"), str(ANSIBLE / playbook), *extra],
            capture_output=True,
            text=True,
            env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_ROLES_PATH": str(ANSIBLE / "roles")},
            timeout=180,
            check=False,
        )
        return Run(result.returncode, result.stdout + result.stderr, time.monotonic() - start)


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("---\n" + yaml.safe_dump(data, sort_keys=False))


THREE = ("server-1", "server-2", "server-3")


def make_site(tmp_path: Path, servers: tuple[str, ...] = THREE, **overrides: Any) -> Site:
    site = Site(tmp_path, servers)
    hosts: dict[str, Any] = {name: {"dag_placement_file_dir": str(site.publish_dir(name))} for name in servers}
    hosts["server-1"]["dag_placement_dags"] = ["etl_orders", "etl_stock"]
    hosts["server-1"]["placement_max_staleness_seconds"] = 90  # the longest: a failover must wait for it
    hosts[servers[1]]["dag_placement_dags"] = ["etl_web"]
    group_vars: dict[str, Any] = {
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
        hosts[name].update(values)
    assert not overrides, overrides
    _write(tmp_path / "inventory" / "hosts.yml", {"airflow_servers": {"hosts": hosts}})
    _write(tmp_path / "inventory" / "group_vars" / "all" / "site.yml", group_vars)
    return site


@pytest.fixture
def site(tmp_path: Path) -> Site:
    site = make_site(tmp_path)
    run = site.play("placement.yml")
    assert run.returncode == 0, run.output
    return site


def test_placement_publishes_the_assignment_from_all_three_forms(site: Site) -> None:
    now = datetime.now(UTC)
    for server in site.servers:
        assert site.owner(server, "etl_orders", now) == "server-1"  # inventory: dag_placement_dags of server-1
        assert site.owner(server, "etl_web", now) == "server-2"
        assert site.owner(server, "report_sales", now) == "server-2"  # a group, by pattern
        assert site.owner(server, "dashboard", now) == "server-3"  # per DAG beats the group
        assert site.owner(server, "anything_else", now) == "server-1"  # the catch-all
        assert site.owner(server, "billing", now, task="send_invoices") == "server-2"
    texts = {(site.publish_dir(s) / DOCUMENT).read_text() for s in site.servers}
    assert len(texts) == 1, "every server must get the same document"
    assert oct((site.publish_dir("server-1") / DOCUMENT).stat().st_mode & 0o777) == "0o644"


def test_placement_is_idempotent(site: Site) -> None:
    run = site.play("placement.yml")
    assert run.returncode == 0, run.output
    assert "changed=0" in run.output and "changed=1" not in run.output, run.output


def test_a_document_with_an_owner_outside_the_inventory_is_never_published(tmp_path: Path) -> None:
    site = make_site(tmp_path, group_vars={"dag_placement_document": {"etl_orders": "server-9"}})
    run = site.play("placement.yml")
    assert run.returncode != 0
    assert "server-9" in run.output
    assert not (site.publish_dir("server-1") / DOCUMENT).exists()


def test_failover_schedules_a_handover_after_the_longest_lease(site: Site) -> None:
    before = datetime.now(UTC)
    run = site.play("failover.yml", "-e", "failed=server-1")
    assert run.returncode == 0, run.output
    earliest = before + timedelta(seconds=90 + 7)  # the longest maximum staleness (server-1's) + skew
    for server in site.servers:
        placement = site.placement(server)
        moved = placement.entry_for("etl_orders")
        assert moved is not None and len(moved.schedule.handovers) == 1
        handover = moved.schedule.handovers[0]
        assert handover.owner == "server-2"  # the next server in inventory order
        assert earliest <= handover.at <= earliest + timedelta(seconds=60)
        # Runs before the handover stay with server-1, later ones go to server-2: nobody runs a run twice.
        assert site.owner(server, "etl_orders", handover.at - timedelta(seconds=1)) == "server-1"
        assert site.owner(server, "etl_orders", handover.at) == "server-2"
        assert site.owner(server, "anything_else", handover.at) == "server-2"
        assert site.owner(server, "billing", handover.at, task="archive") == "server-2"
        # What server-1 did not own does not move.
        assert site.owner(server, "billing", handover.at, task="send_invoices") == "server-2"
        assert site.owner(server, "dashboard", handover.at) == "server-3"
        assert site.owner(server, "etl_web", handover.at) == "server-2"
    assert "etl_orders: server-1 -> server-2" in run.output
    assert handover.at.strftime("%Y-%m-%dT%H:%M:%SZ") in run.output


def test_failover_follows_the_failover_order_from_host_vars(tmp_path: Path) -> None:
    site = make_site(tmp_path, host_vars={"server-1": {"dag_placement_failover_order": ["server-3", "server-2"]}})
    assert site.play("placement.yml").returncode == 0
    run = site.play("failover.yml", "-e", "failed=server-1")
    assert run.returncode == 0, run.output
    assert site.owner("server-2", "etl_orders", datetime.now(UTC) + timedelta(days=1)) == "server-3"


def test_forced_failover_rewrites_the_owner_for_every_run(site: Site) -> None:
    run = site.play("failover.yml", "-e", "failed=server-1", "-e", "force=true")
    assert run.returncode == 0, run.output
    for server in site.servers:
        entry = site.placement(server).entry_for("etl_orders")
        assert entry is not None and not entry.schedule.handovers
        assert site.owner(server, "etl_orders", EARLY) == "server-2"  # even a re-run of an old run
        assert site.owner(server, "billing", EARLY, task="archive") == "server-2"
        assert "server-1" not in site.placement(server).hosts()
    assert "at once (forced)" in run.output


def test_placement_after_a_failover_keeps_the_move(site: Site) -> None:
    assert site.play("failover.yml", "-e", "failed=server-1").returncode == 0
    after_failover = (site.publish_dir("server-2") / DOCUMENT).read_text()
    run = site.play("placement.yml")
    assert run.returncode == 0, run.output
    assert (site.publish_dir("server-2") / DOCUMENT).read_text() == after_failover
    assert "changed=0" in run.output and "changed=1" not in run.output, run.output


def test_restore_hands_the_dags_back_as_a_scheduled_handover(site: Site) -> None:
    assert site.play("failover.yml", "-e", "failed=server-1", "-e", "force=true").returncode == 0
    before = datetime.now(UTC)
    run = site.play("failover.yml", "-e", "restore=server-1")
    assert run.returncode == 0, run.output
    handover = site.placement("server-2").entry_for("etl_orders").schedule.handovers[-1]  # type: ignore[union-attr]
    assert handover.owner == "server-1" and handover.at >= before + timedelta(seconds=97)
    assert site.owner("server-2", "etl_orders", handover.at - timedelta(seconds=1)) == "server-2"
    assert site.owner("server-2", "etl_orders", handover.at) == "server-1"
    assert site.owner("server-2", "etl_web", handover.at) == "server-2"  # never server-1's


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-e", "failed=server-9"], "dag_placement_failed (failed=server-9) must name a server"),
        ([], "-e failed=SERVER"),
        (["-e", "restore=server-2"], "only a failed server can be restored"),
    ],
)
def test_bad_requests_fail_fast_and_change_nothing(site: Site, extra: list[str], message: str) -> None:
    before = (site.publish_dir("server-1") / DOCUMENT).read_text()
    run = site.play("failover.yml", *extra)
    assert run.returncode != 0
    assert message in run.output, run.output
    assert run.seconds < 20
    assert (site.publish_dir("server-1") / DOCUMENT).read_text() == before
    assert not (site.path / "inventory" / "group_vars" / "all" / "dag_placement_moves.yml").exists()


def test_failover_without_a_survivor_is_refused(tmp_path: Path) -> None:
    site = make_site(tmp_path, servers=("server-1", "server-2"))
    assert site.play("placement.yml").returncode == 0
    assert site.play("failover.yml", "-e", "failed=server-1", "-e", "force=true").returncode == 0
    run = site.play("failover.yml", "-e", "failed=server-2")
    assert run.returncode != 0
    assert "no server is left to take over" in run.output, run.output


def test_file_publishing_refuses_a_scheduled_move_off_an_unreachable_server_unless_forced(tmp_path: Path) -> None:
    unreachable = {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": 9, "ansible_timeout": 3}
    site = make_site(tmp_path, host_vars={"server-1": unreachable})
    refused = site.play("failover.yml", "-e", "failed=server-1")
    assert refused.returncode != 0
    assert "server-1 is unreachable" in refused.output and "force=true" in refused.output, refused.output
    assert not (site.publish_dir("server-2") / DOCUMENT).exists()

    forced = site.play("failover.yml", "-e", "failed=server-1", "-e", "force=true")
    assert forced.returncode == 0, forced.output
    assert site.owner("server-2", "etl_orders", EARLY) == "server-2"
    assert site.owner("server-3", "etl_orders", EARLY) == "server-2"
