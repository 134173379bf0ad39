"""placement.yml and failover.yml, run for real against throwaway inventories of local servers (placement_site.py):
the assignment from the inventory, failovers as handovers the lease ahead, forced failovers, restores, and what the
inventory records. Publishing itself (check mode, the lock, failures, serials) is in test_dag_placement_publish.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from placement_site import DOCUMENT, EARLY, LEAD, Site, lead_of, make_site


def test_placement_publishes_the_assignment_from_all_three_forms(site: Site) -> None:
    now = datetime.now(UTC)
    for server in site.servers:
        assert site.owner(server, "etl_orders", now) == "server-1"  # inventory: dag_placement_dags of server-1
        assert site.owner(server, "etl_web", now) == "server-2"
        assert site.owner(server, "report_sales", now) == "server-2"  # a group, by pattern
        assert site.owner(server, "dashboard", now) == "server-3"  # per DAG beats the group
        assert site.owner(server, "anything_else", now) == "server-1"  # the catch-all
        assert site.owner(server, "billing", now, task="send_invoices") == "server-2"
        assert site.meta(server).serial == 1
    texts = {site.text(s) for s in site.servers}
    assert texts == {site.rendered.read_text()}, "every server, and the controller's copy, hold the same document"
    assert oct((site.publish_dir("server-1") / DOCUMENT).stat().st_mode & 0o777) == "0o644"
    assert not site.publishing()


def test_a_document_with_an_owner_outside_the_inventory_is_never_published(tmp_path: Path) -> None:
    site = make_site(tmp_path, group_vars={"dag_placement_document": {"etl_orders": "server-9"}})
    run = site.play("placement.yml")
    assert run.returncode != 0
    assert "server-9" in run.output
    assert not (site.publish_dir("server-1") / DOCUMENT).exists()
    assert not (site.state_dir / "published.yaml").exists()
    assert not site.publishing()  # the lock it took is released


def test_failover_schedules_a_handover_after_the_longest_lease(site: Site) -> None:
    before = datetime.now(UTC)
    run = site.play("failover.yml", "-e", "failed=server-1")
    assert run.returncode == 0, run.output
    for server in site.servers:
        placement = site.placement(server)
        assert placement.meta is not None and placement.meta.serial == 2
        moved = placement.entry_for("etl_orders")
        assert moved is not None and len(moved.schedule.handovers) == 1
        handover = moved.schedule.handovers[0]
        assert handover.owner == "server-2"  # the next server in inventory order
        # The lead from its issue: the longest maximum staleness (server-1's) + the clock skew, rounded up.
        assert LEAD <= lead_of(handover.at, placement.meta) <= LEAD + 1
        assert handover.at >= before + timedelta(seconds=LEAD)
        # Runs before the handover stay with server-1, later ones go to server-2: nobody runs a run twice.
        assert site.owner(server, "etl_orders", handover.at - timedelta(seconds=1)) == "server-1"
        assert site.owner(server, "etl_orders", handover.at) == "server-2"
        assert site.owner(server, "anything_else", handover.at) == "server-2"
        assert site.owner(server, "billing", handover.at, task="archive") == "server-2"
        # What server-1 did not own does not move.
        assert site.owner(server, "billing", handover.at, task="send_invoices") == "server-2"
        assert site.owner(server, "dashboard", handover.at) == "server-3"
        assert site.owner(server, "etl_web", handover.at) == "server-2"
    at = handover.at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert f"etl_orders: server-1 -> server-2 for runs dated from {at}" in run.output
    assert "pending handovers: 4" in run.output
    [move] = site.moves()
    assert move["failed"] == "server-1" and move["to"] == "server-2" and move["forced"] is False
    assert move["serial"] == 2 and move["at"] == at

    # Later runs of placement.yml keep the move: nothing changes owner, nothing is published.
    after_failover = site.files()
    run = site.play("placement.yml")
    assert run.returncode == 0, run.output
    assert "changed=0" in run.output and "changed=1" not in run.output, run.output
    assert "nothing to publish: serial 2 is current" in run.output
    assert site.files() == after_failover


def test_forced_failover_moves_runs_at_once_and_restore_hands_them_back_later(site: Site) -> None:
    """Without rerun_since the failed server's runs move from now plus twice the clock skew (7 s here): its clock may
    be the skew ahead, and it runs runs dated up to the skew ahead of its clock, so those stay its own."""
    start = datetime.now(UTC)
    run = site.play("failover.yml", "-e", "failed=server-1", "-e", "force=true")
    assert run.returncode == 0, run.output
    for server in site.servers:
        entry = site.placement(server).entry_for("etl_orders")
        assert entry is not None
        [moved] = entry.schedule.handovers
        assert moved.owner == "server-2"
        assert start + timedelta(seconds=14) <= moved.at <= datetime.now(UTC) + timedelta(seconds=15)
        assert site.owner(server, "etl_orders", EARLY) == "server-1"  # it may have run that one
        assert site.owner(server, "billing", moved.at, task="archive") == "server-2"
        assert site.meta(server).serial == 2
    assert f"etl_orders: server-1 -> server-2 for runs dated from {moved.at:%Y-%m-%dT%H:%M:%SZ} (forced)" in run.output
    [move] = site.moves()
    assert move["forced"] is True and move["at"] == f"{moved.at:%Y-%m-%dT%H:%M:%SZ}"

    before = datetime.now(UTC)
    run = site.play("failover.yml", "-e", "restore=server-1")
    assert run.returncode == 0, run.output
    assert site.meta("server-2").serial == 3
    handover = site.placement("server-2").entry_for("etl_orders").schedule.handovers[-1]  # type: ignore[union-attr]
    assert handover.owner == "server-1" and LEAD <= lead_of(handover.at, site.meta("server-2")) <= LEAD + 1
    assert handover.at >= before + timedelta(seconds=LEAD)
    assert site.owner("server-2", "etl_orders", handover.at - timedelta(seconds=1)) == "server-2"
    assert site.owner("server-2", "etl_orders", handover.at) == "server-1"
    assert site.owner("server-2", "etl_web", handover.at) == "server-2"  # never server-1's
    assert [m.get("restored") for m in site.moves()] == [None, "server-1"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-e", "failed=server-9"], "dag_placement_failed (failed=server-9) must name a server"),
        ([], "-e failed=SERVER"),
        (["-e", "restore=server-2"], "only a failed server can be restored"),
    ],
)
def test_bad_requests_fail_fast_and_change_nothing(site: Site, extra: list[str], message: str) -> None:
    before = site.files()
    run = site.play("failover.yml", *extra)
    assert run.returncode != 0
    assert message in run.output, run.output
    assert site.files() == before
