"""The publisher: splicing keeps every run's owner for the lease ahead, serials only grow, one publisher at a time."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_placement.decision import decide
from airflow_placement.document import Handover, Meta, OwnerSchedule, Placement, parse_document
from airflow_placement.publish import Publisher, PublishError, ceil_second, plan, render, splice

NOW = datetime(2026, 11, 30, 5, 0, 0, 500_000, tzinfo=UTC)
LEAD = 65.0
HOSTS = ("s1", "s2", "s3")


def doc(text: str) -> Placement:
    return parse_document(text)


# --- splice and plan, as properties ---------------------------------------------------------------------------------

offsets = st.integers(min_value=-300, max_value=300)
hosts = st.sampled_from(HOSTS)


@st.composite
def schedules(draw: st.DrawFn) -> OwnerSchedule:
    moments = sorted(set(draw(st.lists(offsets, max_size=3))))
    return OwnerSchedule(draw(hosts), tuple(Handover(NOW + timedelta(seconds=m), draw(hosts)) for m in moments))


@given(old=schedules(), desired=schedules(), cut=offsets)
def test_splice_keeps_the_old_owner_before_the_cut_and_the_desired_one_after(
    old: OwnerSchedule, desired: OwnerSchedule, cut: int
) -> None:
    at = NOW + timedelta(seconds=cut)
    new = splice(old, desired, at)
    for probe in range(-400, 401, 7):
        when = NOW + timedelta(seconds=probe)
        assert new.owner_at(when) == (old.owner_at(when) if when < at else desired.owner_at(when))


def _render(entries: dict[str, str]) -> Placement:
    return doc("".join(f'"{key}": {owner}\n' for key, owner in entries.items()) or "{}\n")


keys = st.sampled_from(["dag_a", "dag_b", "etl_x", "etl_*", "*"])
assignments = st.dictionaries(keys, hosts, min_size=1, max_size=5)


@settings(max_examples=200)
@given(first=assignments, second=assignments, failed=st.sampled_from([None, *HOSTS]))
def test_no_run_changes_owner_sooner_than_the_lead_unless_its_owner_failed(
    first: dict[str, str], second: dict[str, str], failed: str | None
) -> None:
    published = plan(None, _render(first), now=NOW, lead=LEAD)
    old = doc(_publish_text(published.data))
    new_plan = plan(old, _render(second), now=NOW, lead=LEAD, failed=failed)
    if new_plan.problems:  # refused: only a pattern change that might move a DAG at once
        assert all("pattern" in problem for problem in new_plan.problems), new_plan.problems
        return
    new = doc(_publish_text(new_plan.data))
    cut = ceil_second(NOW + timedelta(seconds=LEAD))
    for dag in ("dag_a", "dag_b", "etl_x", "etl_y", "other"):
        for probe in (-10_000, -60, 0, 30, 64, 65, 66, 600):
            when = NOW + timedelta(seconds=probe)
            before = decide(old, dag_id=dag, task_id=None, host="s1", when=when).owner
            after = decide(new, dag_id=dag, task_id=None, host="s1", when=when).owner
            if when < cut and before != after:
                # Early moves only of the failed server's runs, of runs nobody owned, or to nobody: never from one
                # live owner to another.
                assert before == failed or before is None or after is None, (dag, probe, before, after)


def _publish_text(data: dict[str, object]) -> str:
    import yaml  # noqa: PLC0415

    return yaml.safe_dump(data, sort_keys=False) if data else "{}\n"


def test_an_inventory_edit_becomes_a_handover_the_lease_ahead() -> None:
    old = doc('"*": s1\nreports: s2\n')
    result = plan(old, doc('"*": s1\nreports: s3\n'), now=NOW, lead=LEAD)
    cut = ceil_second(NOW + timedelta(seconds=LEAD))
    assert result.data["reports"] == {
        "owner": "s2",
        "handover": [{"at": cut.strftime("%Y-%m-%dT%H:%M:%SZ"), "owner": "s3"}],
    }
    assert [c.describe(NOW) for c in result.changes] == [
        f"reports: s2 -> s3 for runs dated from {cut.strftime('%Y-%m-%dT%H:%M:%SZ')} (in 66 s)"
    ]
    assert result.pending(NOW) == [f"reports: to s3 for runs dated from {cut.strftime('%Y-%m-%dT%H:%M:%SZ')}"]


def test_a_forced_failover_moves_only_the_failed_servers_runs_at_once() -> None:
    """Without ``since``: from now plus twice the clock skew (the failed server, its clock the skew ahead, may have
    run any run dated up to the skew ahead of its clock just before it went down)."""
    old = doc('"*": s1\nreports: s2\netl:\n  owner: s1\n  tasks:\n    load: s2\n')
    result = plan(old, doc('"*": s1\nreports: s1\netl: s1\n'), now=NOW, lead=LEAD, failed="s2", clock_skew=5)
    moved = {"owner": "s2", "handover": [{"at": "2026-11-30T05:00:11Z", "owner": "s1"}]}
    assert result.data["reports"] == moved
    assert result.data["etl"] == {"owner": "s1", "tasks": {"load": moved}}
    assert [c.describe(NOW) for c in result.changes] == [
        "reports: s2 -> s1 for runs dated from 2026-11-30T05:00:11Z (forced)",
        "etl task load: s2 -> s1 for runs dated from 2026-11-30T05:00:11Z (forced)",
    ]


@pytest.mark.parametrize("skew", [-1.0, math.nan, math.inf])
def test_a_bad_clock_skew_is_refused(skew: float) -> None:
    with pytest.raises(PublishError, match="the clock skew must be a finite number of seconds >= 0"):
        plan(doc("reports: s2\n"), doc("reports: s1\n"), now=NOW, lead=LEAD, failed="s2", clock_skew=skew)


def test_a_forced_failover_since_a_time_keeps_earlier_runs_with_the_failed_server() -> None:
    """``since`` is the operator's word that the failed server ran nothing dated from then on: a fraction of a second
    rounds up, as the runs dated in the whole second before it may have run there."""
    since = NOW - timedelta(minutes=10)  # 04:50:00.5
    result = plan(doc("reports: s2\n"), doc("reports: s1\n"), now=NOW, lead=LEAD, failed="s2", since=since)
    assert result.data["reports"] == {"owner": "s2", "handover": [{"at": "2026-11-30T04:50:01Z", "owner": "s1"}]}
    whole = plan(
        doc("reports: s2\n"), doc("reports: s1\n"), now=NOW, lead=LEAD, failed="s2", since=since.replace(microsecond=0)
    )
    assert whole.data["reports"] == {"owner": "s2", "handover": [{"at": "2026-11-30T04:50:00Z", "owner": "s1"}]}


def test_a_forced_failover_keeps_a_handover_to_another_server_still_to_come() -> None:
    """A handover to another server still to come stays: that server may hold a copy without the failover, and would
    run those runs from the handover on. The failed server's runs move at once."""
    published = doc(
        'reports:\n  owner: s1\n  handover:\n    - {at: "2026-11-30T05:00:20Z", owner: s3}\n'
        '    - {at: "2026-11-30T05:00:40Z", owner: s2}\n'
    )
    result = plan(published, doc("reports: s1\n"), now=NOW, lead=LEAD, failed="s2", since=None)
    schedule = result.data["reports"]
    assert schedule == {
        "owner": "s1",
        "handover": [{"at": "2026-11-30T05:00:20Z", "owner": "s3"}, {"at": "2026-11-30T05:00:40Z", "owner": "s1"}],
    }
    # s2 down and owning now: its runs move at once, s3's segment still to come stays until the lead
    published = doc('reports:\n  owner: s2\n  handover:\n    - {at: "2026-11-30T05:00:30Z", owner: s3}\n')
    result = plan(published, doc("reports: s1\n"), now=NOW, lead=LEAD, failed="s2", since=None)
    assert result.data["reports"] == {
        "owner": "s2",
        "handover": [
            {"at": "2026-11-30T05:00:01Z", "owner": "s1"},
            {"at": "2026-11-30T05:00:30Z", "owner": "s3"},
            {"at": "2026-11-30T05:01:06Z", "owner": "s1"},
        ],
    }


def test_an_inventory_handover_sooner_than_the_lead_is_refused() -> None:
    desired = doc('reports:\n  owner: s1\n  handover:\n    - {at: "2026-11-30T05:00:30Z", owner: s2}\n')
    result = plan(doc("reports: s1\n"), desired, now=NOW, lead=LEAD)
    assert result.problems == [
        "reports: the handover to s2 at 2026-11-30T05:00:30Z would take effect less than the lease ahead (the "
        "earliest is 2026-11-30T05:01:06Z); schedule it later, or force a failover"
    ]


def test_a_handover_far_enough_ahead_passes_through() -> None:
    desired = doc('reports:\n  owner: s1\n  handover:\n    - {at: "2026-11-30T06:00:00Z", owner: s2}\n')
    result = plan(doc("reports: s1\n"), desired, now=NOW, lead=LEAD)
    assert not result.problems
    assert result.data["reports"] == {"owner": "s1", "handover": [{"at": "2026-11-30T06:00:00Z", "owner": "s2"}]}


def test_a_removed_entry_keeps_its_runs_until_the_cut_when_a_pattern_takes_over() -> None:
    result = plan(doc('"*": s1\nreports: s2\n'), doc('"*": s1\n'), now=NOW, lead=LEAD)
    new = doc(_publish_text(result.data))
    assert decide(new, dag_id="reports", task_id=None, host="s1", when=NOW).owner == "s2"
    later = NOW + timedelta(seconds=LEAD + 1)
    assert decide(new, dag_id="reports", task_id=None, host="s1", when=later).owner == "s1"


# --- patterns -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("published", "desired", "problem"),
    [
        (  # etl_sales is *_sales's (s2); the new pattern is spliced onto etl_*'s owner (s1): s1 at once
            '"etl_*": s1\n"*_sales": s2\n',
            '"etl_*": s1\n"*_sales": s2\n"etl_sal*": s3\n',
            "the new pattern 'etl_sal*' may match DAGs that '*_sales' decides in the published document",
        ),
        (  # no old entry matches the new pattern's text, but *s decides etl_sales
            '"*s": s2\n',
            '"*s": s2\n"etl_*": s1\n',
            "the new pattern 'etl_*' may match DAGs that '*s' decides",
        ),
        (  # etl_sales was etl_*'s (s1); without it, *s's (s2) at once
            '"etl_*": s1\n"*s": s2\n',
            '"*s": s2\n',
            "dropping the pattern 'etl_*' may give DAGs it decides to '*s' at once",
        ),
        (  # etl_sales was *_sales's (s1); etl_s* stays (spliced onto itself, s2 until the cut) and would take it
            '"etl_*": s1\n"*_sales": s1\n"*s": s1\n"etl_s*": s2\n',
            '"etl_*": s1\n',
            "dropping the pattern '*_sales' may give DAGs it decides to 'etl_s*' at once",
        ),
        (  # equally specific: tried as written; etl_sales goes from a_* order to the other
            '"etl_*": s1\n"*_sales": s2\n"*tl_s*": s3\n',
            '"*tl_s*": s3\n"etl_*": s1\n"*_sales": s2\n',
            "the patterns '*tl_s*' and 'etl_*' would be tried in the other order",
        ),
    ],
)
def test_a_pattern_change_that_could_move_a_dag_at_once_is_refused(published: str, desired: str, problem: str) -> None:
    result = plan(doc(published), doc(desired), now=NOW, lead=LEAD)
    assert any(problem in p for p in result.problems), result.problems


@pytest.mark.parametrize(
    ("published", "desired"),
    [
        ('"etl_*": s1\n"*_sales": s2\n', '"etl_*": s1\n"*_sales": s2\n"rep_*": s3\n'),  # no common DAG id
        ('"etl_*": s1\n"*_sales": s1\n', '"etl_*": s1\n"*_sales": s1\n"etl_sal*": s3\n'),  # same owner either way
        ('"etl_*": s1\n"*_sales": s2\n', '"etl_*": s1\n"*_sales": s2\n"etl_*_sales": s3\n'),  # outranks neither
        ('"etl_*": s1\n"rep_*": s2\n', '"rep_*": s2\n"etl_*": s1\n'),  # reordered, but disjoint
        ('"*": s1\n', '"*": s1\netl_sales: s2\n'),  # an explicit entry is spliced by its DAG id
    ],
)
def test_a_pattern_change_that_moves_no_dag_at_once_is_planned(published: str, desired: str) -> None:
    result = plan(doc(published), doc(desired), now=NOW, lead=LEAD)
    assert result.problems == []


@given(
    st.lists(st.sampled_from(["etl_*", "*_sales", "*s", "etl_s*", "rep_*", "*", "e?l_*", "*_[sx]ales"]), max_size=4),
    st.lists(st.sampled_from(["etl_*", "*_sales", "*s", "etl_s*", "rep_*", "*", "e?l_*", "*_[sx]ales"]), max_size=4),
    st.lists(st.sampled_from(["s1", "s2", "s3"]), min_size=8, max_size=8),
)
@settings(max_examples=300, deadline=None)
def test_no_dag_changes_owner_sooner_than_the_lead_through_patterns(
    old_keys: list[str], new_keys: list[str], owners: list[str]
) -> None:
    """Whatever patterns are added, dropped or reordered: a plan without problems gives every DAG id, for runs dated
    before the cut, the owner the published document gives it."""
    old = parse_document("".join(f'"{k}": {owners[i]}\n' for i, k in enumerate(dict.fromkeys(old_keys))) or "{}")
    new = parse_document("".join(f'"{k}": {owners[-1 - i]}\n' for i, k in enumerate(dict.fromkeys(new_keys))) or "{}")
    result = plan(old, new, now=NOW, lead=LEAD)
    if result.problems:
        return
    issued = parse_document(render(result.data, Meta(1, NOW, NOW)))
    for dag_id in ["etl_sales", "etl_stock", "rep_sales", "etl_xales", "eXl_sales", "other", "sales", "etl_"]:
        before = old.entry_for(dag_id)
        after = issued.entry_for(dag_id)
        was = before.schedule.owner_at(NOW) if before else None
        now_owner = after.schedule.owner_at(NOW) if after else None
        if was is not None:  # a DAG nothing placed ran nowhere: placing it at once is safe
            assert now_owner in (was, None), (dag_id, was, now_owner, result.data)


# --- the publisher's state ------------------------------------------------------------------------------------------


def test_serials_grow_across_commits_and_aborts(tmp_path: Path) -> None:
    publisher = Publisher(tmp_path)
    text, _ = publisher.begin(doc('"*": s1\n'), lead=LEAD)
    assert "serial: 1\n" in text
    assert publisher.commit() == 1
    text, _ = publisher.begin(doc('"*": s2\n'), lead=LEAD)
    assert "serial: 2\n" in text
    publisher.abort()
    text, _ = publisher.begin(doc('"*": s2\n'), lead=LEAD)
    assert "serial: 3\n" in text  # 2 may have reached a server: never issued again
    assert publisher.commit() == 3
    published = publisher.published()
    assert published is not None and published.meta is not None and published.meta.serial == 3


def test_a_second_publisher_stops_with_one_line_naming_the_first(tmp_path: Path) -> None:
    publisher = Publisher(tmp_path)
    publisher.begin(doc('"*": s1\n'), lead=LEAD)
    with pytest.raises(PublishError) as raised:
        Publisher(tmp_path).begin(doc('"*": s2\n'), lead=LEAD)
    message = str(raised.value)
    assert "another publish is under way (serial 1, by pid" in message
    assert "\n" not in message


def test_a_waiting_publisher_goes_on_once_the_first_commits(tmp_path: Path) -> None:
    first = Publisher(tmp_path)
    first.begin(doc('"*": s1\n'), lead=LEAD)
    threading.Timer(0.5, first.commit).start()
    text, _ = Publisher(tmp_path).begin(doc('"*": s1\nreports: s2\n'), lead=LEAD, wait=10)
    assert "serial: 2\n" in text


def test_check_mode_issues_and_writes_nothing(tmp_path: Path) -> None:
    publisher = Publisher(tmp_path)
    publisher.begin(doc('"*": s1\n'), lead=LEAD)
    publisher.commit()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    _, result = publisher.begin(doc('"*": s2\n'), lead=LEAD, check=True)
    assert [c.new for c in result.changes] == ["s2"]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_renewal_changes_only_the_renewal_time(tmp_path: Path) -> None:
    publisher = Publisher(tmp_path)
    text, _ = publisher.begin(doc('"*": s1\n'), lead=LEAD, now=NOW)
    publisher.commit()
    renewed = publisher.renew(NOW + timedelta(seconds=40))
    before, after = doc(text), doc(renewed)
    assert after.meta is not None and before.meta is not None
    assert (after.meta.serial, after.revision) == (before.meta.serial, before.revision)
    assert after.meta.renewed == datetime(2026, 11, 30, 5, 0, 40, tzinfo=UTC)
    assert [line for line in text.splitlines() if line not in renewed.splitlines()] == [
        '  renewed: "2026-11-30T05:00:00Z"'
    ]


def test_no_renewal_while_a_publish_is_under_way(tmp_path: Path) -> None:
    """A renewal of the old document between publish and publish-commit would let a server that misses the new one
    trust the old one past the handovers the new one schedules."""
    publisher = Publisher(tmp_path)
    publisher.begin(doc('"*": s1\n'), lead=LEAD, now=NOW)
    publisher.commit()
    publisher.begin(doc('"*": s2\n'), lead=LEAD, now=NOW)
    before = publisher.published_path.read_bytes()
    with pytest.raises(PublishError, match=r"^a publish is under way \(serial 2, by pid .*committed or aborted$"):
        publisher.renew(NOW + timedelta(seconds=10))
    assert publisher.published_path.read_bytes() == before
    publisher.commit()
    assert "serial: 2\n" in publisher.renew(NOW + timedelta(seconds=20))


def test_after_an_abort_the_renewal_is_re_issued_under_a_new_serial(tmp_path: Path) -> None:
    """A server that got the given-up document (serial 2) refuses serial 1 as a rollback: the renewal carries 3."""
    publisher = Publisher(tmp_path)
    first, _ = publisher.begin(doc('"*": s1\n'), lead=LEAD, now=NOW)
    publisher.commit()
    publisher.begin(doc('"*": s2\n'), lead=LEAD, now=NOW)
    assert publisher.abort() is None
    renewed = doc(publisher.renew(NOW + timedelta(seconds=10)))
    assert renewed.meta is not None and renewed.meta.serial == 3
    assert renewed.entries == doc(first).entries
    assert (tmp_path / "serial").read_text() == "3\n"
    again = doc(publisher.renew(NOW + timedelta(seconds=20)))
    assert again.meta is not None and again.meta.serial == 3  # once re-issued, renewals keep the serial
    text, _ = publisher.begin(doc('"*": s2\n'), lead=LEAD, now=NOW + timedelta(seconds=30))
    assert "serial: 4\n" in text


def test_a_forced_failover_cannot_be_given_up(tmp_path: Path) -> None:
    """A server may already run the failed server's runs by it: publish-abort keeps it as the published document."""
    publisher = Publisher(tmp_path)
    publisher.begin(doc('"*": s1\n'), lead=LEAD, now=NOW)
    publisher.commit()
    forced, _ = publisher.begin(doc('"*": s2\n'), lead=LEAD, now=NOW, failed="s1")
    assert publisher.abort() == 2
    assert publisher.published_path.read_text() == forced
    assert not (tmp_path / "publishing.json").exists()
    result = cli("publish-abort", "--state-dir", str(tmp_path))
    assert (result.returncode, result.stdout) == (0, "publish aborted: the publishing lock is released\n")


def test_cli_publish_abort_of_a_forced_failover_says_it_stays_published(tmp_path: Path) -> None:
    desired = tmp_path / "desired.yaml"
    desired.write_text('"*": s1\n')
    state = tmp_path / "state"
    assert cli("publish", str(desired), "--state-dir", str(state), "--lead", "65").returncode == 0
    assert cli("publish-commit", "--state-dir", str(state)).returncode == 0
    desired.write_text('"*": s2\n')
    assert cli("publish", str(desired), "--state-dir", str(state), "--lead", "65", "--failed", "s1").returncode == 0
    result = cli("publish-abort", "--state-dir", str(state))
    assert result.returncode == 0
    assert result.stdout.startswith("publish-abort: serial 2 is a forced failover, which a server may already run by")
    assert len(result.stdout.splitlines()) == 1
    published = Publisher(state).published()
    assert published is not None and published.meta is not None and published.meta.serial == 2


# --- the command line -----------------------------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "airflow_placement.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def test_cli_publishes_commits_and_refuses_too_soon_in_one_line(tmp_path: Path) -> None:
    state, out = tmp_path / "state", tmp_path / "out.yaml"
    desired = tmp_path / "desired.yaml"
    desired.write_text('"*": s1\nreports: s2\n')
    first = cli("publish", str(desired), "--state-dir", str(state), "--lead", "65", "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert "issued serial 1: 2 changes of owner" in first.stdout
    assert cli("publish-commit", "--state-dir", str(state)).stdout == "published serial 1\n"

    soon = (datetime.now(UTC) + timedelta(seconds=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    desired.write_text(f'"*": s1\nreports:\n  owner: s2\n  handover:\n    - {{at: "{soon}", owner: s1}}\n')
    refused = cli("publish", str(desired), "--state-dir", str(state), "--lead", "65", "--out", str(out))
    assert refused.returncode == 1
    assert refused.stderr.startswith("airflow-placement publish: error: reports: the handover to s1 at ")
    assert len(refused.stderr.splitlines()) == 1
    assert "Traceback" not in refused.stderr
    assert "serial: 1\n" in out.read_text()  # nothing issued


def test_cli_check_prints_the_pending_handovers(tmp_path: Path) -> None:
    state, desired = tmp_path / "state", tmp_path / "desired.yaml"
    desired.write_text('"*": s1\n')
    cli("publish", str(desired), "--state-dir", str(state), "--lead", "65")
    cli("publish-commit", "--state-dir", str(state))
    desired.write_text('"*": s2\n')
    result = cli("publish", str(desired), "--state-dir", str(state), "--lead", "65", "--check")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "would issue serial 2: 1 change of owner"
    assert lines[2] == "pending handovers: 1"
    assert lines[3].startswith("  *: to s2 for runs dated from ")
    assert not (state / "publishing.json").exists()


def test_cli_renew_before_any_publish_is_one_line(tmp_path: Path) -> None:
    result = cli("renew", "--state-dir", str(tmp_path))
    assert result.returncode == 1
    assert (
        result.stderr
        == f"airflow-placement renew: error: nothing to renew: nothing was published yet ({tmp_path}/published.yaml)\n"
    )


def test_two_publishers_at_once_one_wins(tmp_path: Path) -> None:
    state, desired = tmp_path / "state", tmp_path / "desired.yaml"
    desired.write_text('"*": s1\n')
    args = ("publish", str(desired), "--state-dir", str(state), "--lead", "65")
    command = [sys.executable, "-m", "airflow_placement.cli", *args]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [(p.wait(), p.stderr.read() if p.stderr else "") for p in processes]
    assert sorted(code for code, _ in results) == [0, 1, 1, 1]
    assert all("another publish is under way" in err for code, err in results if code)
    time.sleep(0)  # the winner's serial is 1; nothing else was issued
    assert (state / "serial").read_text() == "1\n"


def test_the_lock_is_taken_before_the_inputs_are_read_and_held_to_the_commit(tmp_path: Path) -> None:
    """The role takes the lock, then reads the record of failed servers, then publishes with the lock's token: a
    second run that waits reads that record only after the first has written it."""
    publisher = Publisher(tmp_path)
    token = publisher.acquire()
    with pytest.raises(PublishError, match=r"another publish is under way \(no serial issued yet, by pid"):
        Publisher(tmp_path).acquire()
    with pytest.raises(PublishError, match="this run does not hold the publishing lock"):
        publisher.begin(doc('"*": s1\n'), lead=LEAD, token="not-the-token")
    text, _ = publisher.begin(doc('"*": s1\n'), lead=LEAD, token=token)
    assert "serial: 1\n" in text
    assert publisher.commit() == 1
    assert Publisher(tmp_path).acquire()  # released by the commit


def test_a_refused_plan_issues_nothing_and_releases_the_lock(tmp_path: Path) -> None:
    publisher = Publisher(tmp_path)
    publisher.begin(doc("reports: s1\n"), lead=LEAD, now=NOW)
    publisher.commit()
    desired = doc('reports:\n  owner: s1\n  handover:\n    - {at: "2026-11-30T05:00:30Z", owner: s2}\n')
    with pytest.raises(PublishError, match="less than the lease ahead"):
        publisher.begin(desired, lead=LEAD, now=NOW)
    assert (tmp_path / "serial").read_text() == "1\n"
    assert publisher.holder() is None
