"""The decision: a matrix of cases, and the invariant that at most one server runs each task of each DAG run."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_placement.decision import decide
from airflow_placement.document import Placement, normalize_host, parse_document

T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)

DOCUMENT = parse_document(
    """\
dag_1: server-1.tld
"etl_*": server-2.tld
"*": server-3.tld
reports:
  owner: server-1.tld
  handover:
    - {at: "2026-12-01T06:00:00Z", owner: server-2.tld}
  tasks:
    publish: server-3.tld
"""
)
NARROW = parse_document('"etl_*": server-2.tld\n')


Row = tuple[Placement, str, str | None, str, datetime, str, str | None, str]


@pytest.mark.parametrize(
    "row",
    [
        (DOCUMENT, "dag_1", "t", "server-1.tld", T0, "run", "server-1.tld", "this host owns the run by entry 'dag_1'"),
        (DOCUMENT, "dag_1", "t", "SERVER-1.tld.", T0, "run", "server-1.tld", "this host owns"),
        (DOCUMENT, "dag_1", "t", "server-2.tld", T0, "skip", "server-1.tld", "owned by server-1.tld by entry 'dag_1'"),
        (DOCUMENT, "dag_1", None, "server-1.tld", T0, "run", "server-1.tld", "entry 'dag_1'"),
        (DOCUMENT, "etl_sales", "t", "server-2.tld", T0, "run", "server-2.tld", "entry 'etl_*'"),
        (DOCUMENT, "unlisted", "t", "server-3.tld", T0, "run", "server-3.tld", "entry '*'"),
        (DOCUMENT, "reports", "t", "server-1.tld", T0 - timedelta(seconds=1), "run", "server-1.tld", "entry 'reports'"),
        (DOCUMENT, "reports", "t", "server-1.tld", T0, "skip", "server-2.tld", "after a scheduled handover"),
        (DOCUMENT, "reports", "t", "server-2.tld", T0, "run", "server-2.tld", "after a scheduled handover"),
        (DOCUMENT, "reports", "publish", "server-3.tld", T0, "run", "server-3.tld", "task override in entry 'reports'"),
        (DOCUMENT, "reports", "publish", "server-2.tld", T0, "skip", "server-3.tld", "task override"),
        (NARROW, "reports", "t", "server-2.tld", T0, "skip", None, "no entry or pattern in the document matches"),
        (NARROW, "etl_x", "t", "server-2.tld", T0.astimezone(timezone(timedelta(hours=5))), "run", "server-2.tld", ""),
    ],
)
def test_decision_matrix(row: Row) -> None:
    placement, dag_id, task_id, host, when, decision, owner, reason = row
    result = decide(placement, dag_id=dag_id, task_id=task_id, host=host, when=when)
    assert (result.decision, result.owner) == (decision, owner)
    assert reason in result.reason
    assert result.run == (decision == "run")
    assert result.host == normalize_host(host)
    assert result.revision == placement.revision
    as_json = result.as_json()
    assert json.loads(json.dumps(as_json))["decision"] == decision
    assert as_json["when"] == when.isoformat()


def test_the_run_date_must_carry_an_offset() -> None:
    with pytest.raises(ValueError, match="no UTC offset"):
        decide(DOCUMENT, dag_id="dag_1", task_id=None, host="server-1.tld", when=datetime(2026, 12, 1))


# --- A handover that has not taken effect yet -------------------------------------------------------------------------

HOUR = timedelta(hours=1)


@pytest.mark.parametrize(
    ("dag_id", "task_id", "when", "now", "runner"),
    [
        ("reports", None, T0 + HOUR, T0 - HOUR, None),  # dated after the pending handover: nobody
        ("reports", None, T0, T0 - HOUR, None),  # dated at it
        ("reports", None, T0 + HOUR, T0 - timedelta(microseconds=1), None),
        ("reports", None, T0 - timedelta(minutes=30), T0 - HOUR, "server-1.tld"),  # in the future, before it
        ("reports", None, T0 + HOUR, T0, "server-2.tld"),  # the handover has taken effect
        ("reports", None, T0 + 2 * HOUR, T0 + HOUR, "server-2.tld"),
        ("reports", None, T0 - HOUR, T0 + HOUR, "server-1.tld"),  # a past run keeps its owner
        ("reports", None, T0 + HOUR, T0 + HOUR, "server-2.tld"),  # dated now
        ("reports", "publish", T0 + HOUR, T0 - HOUR, "server-3.tld"),  # the override has no handover
        ("dag_1", None, T0 + 24 * HOUR, T0 - HOUR, "server-1.tld"),  # nor has this entry
        ("reports", None, T0 + HOUR, None, "server-2.tld"),  # without now: by the run's date alone
    ],
)
def test_a_run_dated_after_a_pending_handover_runs_nowhere(
    dag_id: str, task_id: str | None, when: datetime, now: datetime | None, runner: str | None
) -> None:
    decisions = [
        decide(DOCUMENT, dag_id=dag_id, task_id=task_id, host=host, when=when, now=now)
        for host in ("server-1.tld", "server-2.tld", "server-3.tld")
    ]
    assert [d.host for d in decisions if d.run] == ([runner] if runner else [])
    if runner is None:
        assert {d.owner for d in decisions} == {"server-2.tld"}
        assert all("after the handover to server-2.tld at 2026-12-01T06:00:00+00:00" in d.reason for d in decisions)
        assert all("has not taken effect yet" in d.reason for d in decisions)


AWAY_AND_BACK = parse_document(
    """
dag_a:
  owner: server-1.tld
  handover:
    - {at: "2026-12-01T06:00:00Z", owner: server-2.tld}
    - {at: "2026-12-01T07:00:00Z", owner: server-1.tld}
"""
)


@pytest.mark.parametrize("host", ["server-1.tld", "server-2.tld"])
def test_a_run_dated_after_a_handover_away_and_back_runs_nowhere(host: str) -> None:
    """The owner now and at the run's date are the same, but a server holding a copy from before the first handover
    was published would run it too: nobody holding this copy runs it until the handovers take effect."""
    decision = decide(AWAY_AND_BACK, dag_id="dag_a", task_id=None, host=host, when=T0 + 2 * HOUR, now=T0 - HOUR)
    assert decision.decision == "skip"
    assert "after the handover to server-2.tld at 2026-12-01T06:00:00+00:00" in decision.reason


@pytest.mark.parametrize(
    ("ahead", "runs"),
    [(timedelta(seconds=299), True), (timedelta(seconds=300), False), (timedelta(days=400), False)],
)
def test_a_run_dated_beyond_the_horizon_runs_nowhere(ahead: timedelta, runs: bool) -> None:
    horizon = timedelta(seconds=300)
    now = T0 + 3 * HOUR
    decision = decide(
        DOCUMENT, dag_id="dag_1", task_id=None, host="server-1.tld", when=now + ahead, now=now, horizon=horizon
    )
    assert decision.run is runs
    assert runs or "300 s or more ahead" in decision.reason


def test_the_time_of_the_decision_may_carry_any_offset() -> None:
    now = (T0 - HOUR).astimezone(timezone(timedelta(hours=-5)))
    decision = decide(DOCUMENT, dag_id="reports", task_id=None, host="server-2.tld", when=T0 + HOUR, now=now)
    assert decision.decision == "skip"


# --- The invariant ---------------------------------------------------------------------------------------------------

HOSTS = ["server-1.tld", "server-2.tld", "server-3.tld", "server-4.tld"]
DAG_IDS = ["etl_sales", "etl_stock", "reports", "team.daily", "other"]
PATTERNS = ["etl_*", "*", "*.daily", "?ther", "etl_s[a-z]*", "re*s"]
TASK_IDS = ["extract", "load", "publish"]
TIMES = [T0 + timedelta(hours=h) for h in range(-3, 4)]


def _spelled(host: str) -> st.SearchStrategy[str]:
    """The same host as a document or a server may write it: any case, with or without the trailing dot."""
    return st.sampled_from([host, host.upper(), host + ".", host.capitalize() + "."])


_owner = st.sampled_from(HOSTS).flatmap(_spelled)


@st.composite
def _schedule(draw: st.DrawFn) -> Any:
    owner = draw(_owner)
    times = draw(st.lists(st.sampled_from(TIMES), unique=True, max_size=3))
    if not times and draw(st.booleans()):
        return owner
    spec: dict[str, Any] = {"owner": owner}
    if times:
        spec["handover"] = [{"at": at.isoformat(), "owner": draw(_owner)} for at in sorted(times)]
    return spec


@st.composite
def _entry(draw: st.DrawFn) -> Any:
    schedule = draw(_schedule())
    tasks = draw(st.dictionaries(st.sampled_from(TASK_IDS), _schedule(), max_size=2))
    if not tasks:
        return schedule
    spec = {"owner": schedule} if isinstance(schedule, str) else dict(schedule)
    spec["tasks"] = tasks
    return spec


# JSON is YAML, and json.dumps never writes anchors, aliases or tags.
documents = st.dictionaries(st.sampled_from(DAG_IDS + PATTERNS), _entry(), min_size=1, max_size=6).map(json.dumps)


@settings(max_examples=200, deadline=None)
@given(
    text=documents,
    servers=st.lists(st.sampled_from(HOSTS), unique=True, min_size=1).flatmap(
        lambda names: st.tuples(*(_spelled(name) for name in names))
    ),
    dag_id=st.sampled_from([*DAG_IDS, "unmatched_id"]),
    task_id=st.sampled_from([*TASK_IDS, None]),
    when=st.sampled_from(TIMES) | st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))])),
)
def test_at_most_one_server_runs_each_task_of_each_run(
    text: str, servers: tuple[str, ...], dag_id: str, task_id: str | None, when: datetime
) -> None:
    # Servers parse their own copies of the document, as each server's tasks do.
    copies = [parse_document(text), parse_document(text)]
    decisions = [
        decide(copies[i % 2], dag_id=dag_id, task_id=task_id, host=server, when=when)
        for i, server in enumerate(servers)
    ]
    runners = [d.host for d in decisions if d.run]
    assert len(runners) <= 1
    owners = {d.owner for d in decisions}
    assert len(owners) == 1, "servers with the same document disagree on the owner"
    owner = owners.pop()
    if owner is not None and owner in {normalize_host(s) for s in servers}:
        assert runners == [owner]
    else:
        assert runners == []
    assert all(d.entry == decisions[0].entry for d in decisions)


# --- Two versions of a document: at most one server runs a run, whichever version each holds ------------------------


@st.composite
def _versions(draw: st.DrawFn) -> tuple[str, str, datetime]:
    """An old and a new version of a document that agree on who owns what before ``cut``, and ``cut``.

    This is what publishing a change the lease ahead gives: the new version only changes handovers from ``cut`` on,
    and every copy of the old one has expired by then, so servers hold either version only before ``cut``.
    """
    cut = draw(st.sampled_from(TIMES))
    earlier, later = [t for t in TIMES if t < cut], [t for t in TIMES if t >= cut]

    def handovers(times: list[datetime]) -> list[dict[str, str]]:
        chosen = sorted(draw(st.lists(st.sampled_from(times), unique=True, max_size=2))) if times else []
        return [{"at": at.isoformat(), "owner": draw(st.sampled_from(HOSTS))} for at in chosen]

    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from(DAG_IDS + PATTERNS), unique=True, min_size=1, max_size=4)):
        owner, agreed = draw(st.sampled_from(HOSTS)), handovers(earlier)
        for version in (old, new):
            schedule = agreed + handovers(later)
            version[key] = {"owner": owner, "handover": schedule} if schedule else owner
    return json.dumps(old), json.dumps(new), cut


HALF_HOURS = [t + timedelta(minutes=30 * n) for t in TIMES for n in (-1, 0, 1)]


@settings(max_examples=200, deadline=None)
@given(
    versions=_versions(),
    holds_new=st.lists(st.booleans(), min_size=len(HOSTS), max_size=len(HOSTS)),
    dag_id=st.sampled_from([*DAG_IDS, "unmatched_id"]),
    when=st.sampled_from(HALF_HOURS),
    before_cut=st.sampled_from([timedelta(microseconds=1), timedelta(minutes=30), 3 * HOUR]),
)
def test_servers_holding_either_version_never_both_run(
    versions: tuple[str, str, datetime], holds_new: list[bool], dag_id: str, when: datetime, before_cut: timedelta
) -> None:
    old_text, new_text, cut = versions
    old, new = parse_document(old_text), parse_document(new_text)
    now = cut - before_cut
    decisions = [
        decide(new if newer else old, dag_id=dag_id, task_id=None, host=host, when=when, now=now)
        for host, newer in zip(HOSTS, holds_new, strict=True)
    ]
    assert len([d for d in decisions if d.run]) <= 1
