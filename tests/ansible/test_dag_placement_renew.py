"""renew.yml: the published document with a new renewal time, the same serial and content, copied to every server
that answers; left alone while a publish is under way. Real runs against a throwaway local inventory."""

from __future__ import annotations

import time

from placement_site import Site, hold_the_lock
from test_dag_placement_publish import UNREACHABLE


def test_renew_bumps_the_renewal_time_and_keeps_the_serial_and_the_content(site: Site) -> None:
    before = site.placement("server-1")
    assert before.meta is not None and before.meta.renewed is not None
    time.sleep(1.1)  # renewal times have whole seconds
    run = site.play("renew.yml")
    assert run.returncode == 0, run.output
    for server in site.servers:
        after = site.placement(server)
        assert after.meta is not None and after.meta.renewed is not None
        assert after.meta.serial == before.meta.serial and after.meta.issued == before.meta.issued
        assert after.meta.renewed > before.meta.renewed
        assert after.revision == before.revision  # the same content: the revision leaves the renewal out
        assert site.text(server) == site.rendered.read_text() == (site.state_dir / "published.yaml").read_text()
    print(f"renew.yml against three local servers: {run.seconds:.1f} s")


def test_renew_copies_to_every_server_that_answers(site: Site) -> None:
    site.hosts["server-3"].update(UNREACHABLE)
    site.write()
    before = site.meta("server-3")
    time.sleep(1.1)
    run = site.play("renew.yml")
    assert run.returncode == 0, run.output
    assert site.meta("server-1").renewed > before.renewed  # type: ignore[operator]
    assert site.meta("server-3") == before  # unreachable: it gets the next renewal


def test_renew_waits_for_a_publish_under_way_and_leaves_it_alone(site: Site) -> None:
    hold_the_lock(site)
    before = site.files()
    run = site.play("renew.yml", "-e", "dag_placement_lock_wait_seconds=1")
    assert run.returncode != 0
    assert "another publish is under way (serial 2" in run.failure()
    assert site.publishing(), "the publish's lock must stay"
    assert {k: v for k, v in site.files().items() if k != "elsewhere.yaml"} == {
        k: v for k, v in before.items() if k != "elsewhere.yaml"
    }
