"""How the dag_placement role publishes through airflow-placement: every change of owner a handover the lease ahead,
check mode, one publisher at a time, a distribution that fails, a handover asked too soon, serials, and upgrades
from a document published without @meta. Real ansible-playbook runs against throwaway local inventories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from placement_site import DOCUMENT, EARLY, LEAD, Site, hold_the_lock, lead_of, make_site

from airflow_placement.publish import Publisher


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _move_dashboard(site: Site, owner: str = "server-1") -> None:
    site.group_vars["dag_placement_document"]["dashboard"] = owner
    site.write()


def test_an_inventory_edit_becomes_a_handover_at_least_the_lease_ahead(site: Site) -> None:
    _move_dashboard(site)
    before = datetime.now(UTC)
    run = site.play("placement.yml")
    assert run.returncode == 0, run.output
    for server in site.servers:
        assert site.meta(server).serial == 2
        [handover] = site.placement(server).entry_for("dashboard").schedule.handovers  # type: ignore[union-attr]
        assert handover.owner == "server-1"
        assert LEAD <= lead_of(handover.at, site.meta(server)) <= LEAD + 1  # from its issue, rounded up
        assert handover.at >= before + timedelta(seconds=LEAD)
        # The old owner keeps every run dated before the handover, today's included; the new one gets the rest.
        assert site.owner(server, "dashboard", datetime.now(UTC)) == "server-3"
        assert site.owner(server, "dashboard", handover.at - timedelta(seconds=1)) == "server-3"
        assert site.owner(server, "dashboard", handover.at) == "server-1"
        assert site.owner(server, "etl_web", handover.at) == "server-2"  # nothing else moved
    assert f"dashboard: server-3 -> server-1 for runs dated from {_iso(handover.at)}" in run.output
    pending = f"pending handovers: 1\n  dashboard: to server-1 for runs dated from {_iso(handover.at)}"
    assert pending in _lines(run.output)


def _lines(output: str) -> str:
    """The lines of the debug messages in ``output``, as the role printed them (one JSON string per line)."""
    return "\n".join(line.strip().strip(",").strip('"') for line in output.splitlines())


def test_check_mode_prints_the_pending_handovers_and_changes_nothing(site: Site) -> None:
    _move_dashboard(site)
    before = site.files()
    run = site.play("placement.yml", "--check")
    assert run.returncode == 0, run.output
    assert "would issue serial 2: 1 change of owner" in run.output
    assert "dashboard: server-3 -> server-1 for runs dated from" in run.output
    assert "pending handovers: 1" in run.output
    failover = site.play("failover.yml", "--check", "-e", "failed=server-1")
    assert failover.returncode == 0, failover.output
    assert "etl_orders: server-1 -> server-2 for runs dated from" in failover.output
    assert "pending handovers: 5" in failover.output  # dashboard's and server-1's four
    assert site.files() == before  # no state, no published or rendered document, no recorded move
    assert not site.publishing()


def test_a_publish_under_way_stops_a_failover_with_one_line_and_keeps_its_lock(site: Site) -> None:
    hold_the_lock(site)
    run = site.play("failover.yml", "-e", "failed=server-1", "-e", "dag_placement_lock_wait_seconds=1")
    assert run.returncode != 0
    message = run.failure()
    assert message.startswith("dag_placement: nothing published; no move recorded: ")
    assert "another publish is under way (serial 2" in message and "\n" not in message
    assert site.publishing(), "the other publish's lock must stay"
    assert site.moves() == []
    assert {site.meta(s).serial for s in site.servers} == {1}


def test_two_failovers_at_once_take_turns_and_record_each_move_once(site: Site) -> None:
    runs = [site.start("failover.yml", "-e", f"failed={server}") for server in ("server-1", "server-3")]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs  # the second waited for the first's lock
    moves = site.moves()
    assert sorted(m["failed"] for m in moves) == ["server-1", "server-3"]
    assert [m["serial"] for m in moves] == [2, 3]
    # The second read the first's record under the lock: its successor is not the server that failed first.
    first, second = moves
    assert second["to"] != first["failed"]
    assert not site.publishing()
    later = datetime.now(UTC) + timedelta(days=1)
    for server in site.servers:
        assert site.meta(server).serial == 3
        assert site.owner(server, "etl_orders", later) == "server-2"
        assert site.owner(server, "dashboard", later) == "server-2"


def test_failovers_follow_the_order_pass_runs_on_and_read_the_record_under_the_lock(site: Site) -> None:
    site.hosts["server-1"]["dag_placement_failover_order"] = ["server-3", "server-2"]
    site.write()
    assert site.play("failover.yml", "-e", "failed=server-1").returncode == 0
    # A run that loaded the inventory before that failover was recorded: the role reads the record again once it
    # holds the publishing lock, so server-1's move stays, and server-3's DAGs go to server-2 (server-1 is down).
    run = site.play("failover.yml", "-e", "failed=server-3", "-e", '{"dag_placement_moves": []}')
    assert run.returncode == 0, run.output
    assert [(m["failed"], m["to"], m["serial"]) for m in site.moves()] == [
        ("server-1", "server-3", 2),  # server-1's failover order, from its host_vars
        ("server-3", "server-2", 3),
    ]
    later = datetime.now(UTC) + timedelta(days=1)
    assert site.owner("server-2", "etl_orders", later) == "server-2"  # server-1's, passed on by server-3
    assert site.owner("server-2", "dashboard", later) == "server-2"

    again = site.play("failover.yml", "-e", "failed=server-1")
    assert again.returncode != 0
    assert "failed=server-1: it is failed over already (restore it first)" in again.failure()
    last = site.play("failover.yml", "-e", "failed=server-2")
    assert last.returncode != 0
    assert last.failure().endswith(
        "failed=server-2: no server is left to take over (failover order the inventory order; failed already: "
        "server-1, server-3)"
    )
    assert len(site.moves()) == 2
    assert not site.publishing()


def test_a_server_that_cannot_take_the_document_stops_the_publish_and_serials_still_grow(site: Site) -> None:
    blocker = site.path / "blocker"
    blocker.write_text("a file where the server's directory should be\n")
    good = site.hosts["server-3"]["dag_placement_file_dir"]
    site.hosts["server-3"]["dag_placement_file_dir"] = str(blocker / "dir")
    site.write()
    run = site.play("failover.yml", "-e", "failed=server-1")
    assert run.returncode != 0
    message = run.failure()
    assert message.startswith("dag_placement: publish of serial 2 aborted, lock released; no move recorded: ")
    assert "the document did not reach server-3 (" in message and "\n" not in message
    assert site.moves() == []
    assert not site.publishing()
    assert site.meta("server-3").serial == 1

    site.hosts["server-3"]["dag_placement_file_dir"] = good
    site.write()
    run = site.play("failover.yml", "-e", "failed=server-1")
    assert run.returncode == 0, run.output
    assert {site.meta(s).serial for s in site.servers} == {3}  # serial 2 stays used: serials only grow
    assert [m["serial"] for m in site.moves()] == [3]
    assert site.owner("server-3", "etl_orders", datetime.now(UTC) + timedelta(days=1)) == "server-2"


def test_a_forced_failover_that_reached_a_server_is_not_given_up(site: Site) -> None:
    """server-2 may already run server-1's runs by the forced document: when server-3 cannot take it, the publish
    stops, but the document stays the published one (renewals carry it) instead of being aborted."""
    blocker = site.path / "blocker"
    blocker.write_text("a file where the server's directory should be\n")
    site.hosts["server-3"]["dag_placement_file_dir"] = str(blocker / "dir")
    site.write()
    run = site.play("failover.yml", "-e", "failed=server-1", "-e", "force=true")
    assert run.returncode != 0
    message = run.failure()
    assert message.startswith("dag_placement: forced failover serial 2 kept published (a server may already run by it;")
    assert "\n" not in message
    assert not site.publishing()
    published = Publisher(site.state_dir).published()
    assert published is not None and published.meta is not None and published.meta.serial == 2


def test_a_handover_in_the_inventory_sooner_than_the_lease_is_refused(site: Site) -> None:
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=20)
    site.group_vars["dag_placement_document"]["dashboard"] = {
        "owner": "server-3",
        "handover": [{"at": _iso(soon), "owner": "server-1"}],
    }
    site.write()
    before = site.files()
    run = site.play("placement.yml")
    assert run.returncode != 0
    message = run.failure()
    assert message.startswith("dag_placement: nothing published: ")
    assert f"dashboard: the handover to server-1 at {_iso(soon)} would take effect less than the lease ahead" in message
    assert "\n" not in message
    assert {k: v for k, v in site.files().items() if "desired" not in k} == {
        k: v for k, v in before.items() if "desired" not in k
    }
    assert not site.publishing()

    later = soon + timedelta(seconds=LEAD + 120)
    site.group_vars["dag_placement_document"]["dashboard"]["handover"][0]["at"] = _iso(later)
    site.write()
    run = site.play("placement.yml")
    assert run.returncode == 0, run.output
    [handover] = site.placement("server-2").entry_for("dashboard").schedule.handovers  # type: ignore[union-attr]
    assert (handover.at, handover.owner) == (later, "server-1")


def _serve_an_old_document(site: Site, text: str) -> None:
    """What the role before the lease left: its rendered copy, and the same on every server, without @meta."""
    site.rendered.parent.mkdir(parents=True, exist_ok=True)
    site.rendered.write_text(text)
    for server in site.servers:
        site.publish_dir(server).mkdir(parents=True, exist_ok=True)
        (site.publish_dir(server) / DOCUMENT).write_text(text)


OLD = "etl_orders: server-2\netl_stock: server-1\netl_web: server-2\n'report_*': server-2\n'*': server-1\n"


def test_an_upgrade_schedules_the_changes_from_the_document_the_servers_hold(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    _serve_an_old_document(site, OLD)
    before = datetime.now(UTC)
    run = site.play("placement.yml")
    assert run.returncode == 0, run.output
    assert site.meta("server-1").serial == 1
    # etl_orders was server-2's in the document the servers held: it moves the lease ahead, not at once.
    [handover] = site.placement("server-1").entry_for("etl_orders").schedule.handovers  # type: ignore[union-attr]
    assert handover.owner == "server-1" and LEAD <= lead_of(handover.at, site.meta("server-1")) <= LEAD + 1
    assert handover.at >= before + timedelta(seconds=LEAD)
    assert site.owner("server-1", "etl_orders", datetime.now(UTC)) == "server-2"
    # dashboard matched the catch-all (server-1's) there; it is server-3's from the handover on.
    assert site.owner("server-1", "dashboard", datetime.now(UTC)) == "server-1"


def test_a_scheduled_failover_of_an_unreachable_server_goes_ahead_once_copies_expire(site: Site) -> None:
    site.hosts["server-1"].update(UNREACHABLE)
    site.write()
    run = site.play("failover.yml", "-e", "failed=server-1")
    assert run.returncode == 0, run.output
    for server in ("server-2", "server-3"):
        [handover] = site.placement(server).entry_for("etl_orders").schedule.handovers  # type: ignore[union-attr]
        assert handover.owner == "server-2"
    assert site.meta("server-1").serial == 1  # it holds serial 1, which it stops trusting before the handover
    assert [m["failed"] for m in site.moves()] == ["server-1"]


UNREACHABLE = {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": 9, "ansible_timeout": 3}


def test_a_scheduled_failover_of_an_unreachable_server_holding_a_copy_that_never_expires_needs_force(
    tmp_path: Path,
) -> None:
    site = make_site(tmp_path, host_vars={"server-1": UNREACHABLE})
    _serve_an_old_document(site, OLD)
    refused = site.play("failover.yml", "-e", "failed=server-1")
    assert refused.returncode != 0
    message = refused.failure()
    assert "the document did not reach server-1 (unreachable; it holds a copy without @meta" in message
    assert "run again with -e force=true" in message and "\n" not in message
    assert site.moves() == []
    assert not site.publishing()

    forced = site.play("failover.yml", "-e", "failed=server-1", "-e", "force=true")
    assert forced.returncode == 0, forced.output
    assert site.owner("server-2", "etl_orders", EARLY) == "server-2"
    assert site.owner("server-3", "etl_orders", EARLY) == "server-2"
    assert site.meta("server-2").serial == 2  # serial 1 was given up with the refused one
