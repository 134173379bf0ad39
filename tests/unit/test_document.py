"""The placement document: its forms, which entry wins, handovers, and every way a document is rejected."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import fastjsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_placement.document import (
    DEFAULT_MAX_BYTES,
    DocumentError,
    Meta,
    _fast_validator,
    _validator,
    normalize_host,
    parse_document,
)

T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)


def owner_of(text: str, dag_id: str, task_id: str | None = None, when: datetime = T0) -> str | None:
    entry = parse_document(text).entry_for(dag_id)
    if entry is None:
        return None
    schedule, _ = entry.schedule_for(task_id)
    return schedule.owner_at(when)


def rejection(text: str | bytes, **kwargs: int) -> DocumentError:
    with pytest.raises(DocumentError) as caught:
        parse_document(text, origin="placement.yaml", **kwargs)
    return caught.value


# --- Forms and precedence -------------------------------------------------------------------------------------------


def test_seed_form() -> None:
    placement = parse_document('dag_1: "server-1.tld"\ndag_2: server-2.tld\n')
    assert [(e.key, e.line, e.schedule.owner) for e in placement.entries] == [
        ("dag_1", 1, "server-1.tld"),
        ("dag_2", 2, "server-2.tld"),
    ]
    assert placement.entry_for("dag_3") is None
    assert placement.hosts() == {"server-1.tld", "server-2.tld"}


PRECEDENCE = """\
"*": catch-all
"etl_*": etl-any
"etl_daily_*": etl-daily
"*_daily_*": mid-daily
"etl_?": etl-one-char
"etl_[ab]x": etl-class
"a*": a-first
"*z": z-second
etl_daily_sales: exact
with.dots.v2: dotted
"""


@pytest.mark.parametrize(
    ("dag_id", "owner"),
    [
        ("etl_daily_sales", "exact"),  # exact beats every pattern that also matches
        ("etl_daily_stock", "etl-daily"),  # 10 literal characters beat "etl_" (4) and "_daily_" (7)
        ("xx_daily_yy", "mid-daily"),
        ("etl_weekly", "etl-any"),
        ("etl_q", "etl-any"),  # "etl_*" and "etl_?" both have 4 literals: the one written first wins
        ("etl_ax", "etl-class"),  # a [class] counts as a wildcard, so 5 literals ("etl_" + "x")
        ("etl_cx", "etl-any"),
        ("az", "a-first"),  # "a*" and "*z" both have one literal: the earlier one wins
        ("with.dots.v2", "dotted"),
        ("with_dots_v2", "catch-all"),  # dots in keys are literal, not "any character"
        ("unlisted", "catch-all"),
        ("ETL_weekly", "catch-all"),  # DAG ids are case-sensitive
    ],
)
def test_which_entry_wins(dag_id: str, owner: str) -> None:
    assert owner_of(PRECEDENCE, dag_id) == owner


def test_equal_literals_tie_goes_to_the_earlier_pattern() -> None:
    assert owner_of('"etl_*": first\n"etl_?": second\n', "etl_q") == "first"
    assert owner_of('"etl_?": first\n"etl_*": second\n', "etl_q") == "first"


def test_without_a_catch_all_an_unmatched_dag_has_no_owner() -> None:
    assert owner_of('"etl_*": a\n', "reports") is None


# --- Per-task overrides and handovers --------------------------------------------------------------------------------

OVERRIDES = """\
reports:
  owner: server-1.tld
  handover:
    - {at: "2026-12-01T06:00:00Z", owner: server-2.tld}
    - {at: "2026-12-02T06:00:00+02:00", owner: server-3.tld}
  tasks:
    publish: server-9.tld
    archive:
      owner: server-1.tld
      handover:
        - {at: 2026-12-05T00:00:00Z, owner: server-4.tld}
"""


@pytest.mark.parametrize(
    ("task_id", "when", "owner"),
    [
        (None, T0 - timedelta(microseconds=1), "server-1.tld"),  # before the first handover
        (None, T0, "server-2.tld"),  # at it
        ("extract", T0 + timedelta(hours=1), "server-2.tld"),  # a task without an override follows the DAG
        (None, datetime(2026, 12, 2, 3, 59, tzinfo=UTC), "server-2.tld"),  # the offset is honoured: 04:00Z
        (None, datetime(2026, 12, 2, 4, 0, tzinfo=UTC), "server-3.tld"),
        (None, datetime(2027, 1, 1, tzinfo=UTC), "server-3.tld"),
        ("publish", T0 - timedelta(days=1), "server-9.tld"),  # overrides ignore the DAG's handovers
        ("publish", T0 + timedelta(days=9), "server-9.tld"),
        ("archive", T0 + timedelta(days=3), "server-1.tld"),  # an override has handovers of its own
        ("archive", datetime(2026, 12, 5, tzinfo=UTC), "server-4.tld"),
    ],
)
def test_overrides_and_handovers(task_id: str | None, when: datetime, owner: str) -> None:
    assert owner_of(OVERRIDES, "reports", task_id, when) == owner


def test_handovers_must_increase() -> None:
    text = (
        "d:\n  owner: a\n  handover:\n"
        "    - {at: 2026-12-02T00:00:00Z, owner: b}\n"
        "    - {at: 2026-12-01T00:00:00Z, owner: c}\n"
    )
    error = rejection(text)
    assert error.lines() == ["placement.yaml:5: d.handover[1]: handovers must be in increasing order of 'at'"]
    same = text.replace("2026-12-01", "2026-12-02")
    assert "increasing order" in str(rejection(same))


@pytest.mark.parametrize(
    ("written", "normal"),
    [("Server-1.TLD", "server-1.tld"), ("server-1.tld.", "server-1.tld"), ("SERVER-1.tld.", "server-1.tld")],
)
def test_host_names_compare_as_dns_names(written: str, normal: str) -> None:
    assert normalize_host(written) == normal
    assert parse_document(f"d: {written}\n").entries[0].schedule.owner == normal


# --- Rejections ------------------------------------------------------------------------------------------------------


def _meta(serial: str | None, *more: str) -> str:
    """One DAG after an ``@meta`` of ``serial`` (line 2), an issue time at T0 (line 3) and ``more`` (line 4 on)."""
    fields = [serial] if serial else []
    fields += ['issued: "2026-12-01T06:00:00Z"', *more]
    return '"@meta":\n' + "".join(f"  {field}\n" for field in fields) + "d: a\n"


REJECTIONS = [
    # (name, document, line, words the message must contain)
    ("a list", "- dag_1\n- dag_2\n", 1, "must be a mapping of DAG id to owner, not a list"),
    ("a string", "server-1.tld\n", 1, "not a string"),
    ("html", "<!DOCTYPE html>\n<html><body>Not Found</body></html>\n", 1, "HTML page"),
    ("html lower", "  <html>\n<head></head></html>", 1, "HTML page"),
    ("empty owner", 'dag_1: server-1\ndag_2: ""\n', 2, "dag_2: the owner is empty"),
    ("blank owner", 'dag_1: "   "\n', 1, "dag_1: the owner is empty"),
    ("null owner", "dag_1: server-1\ndag_2:\n", 2, "dag_2: expected a host name or a mapping with 'owner'"),
    ("null task owner", "d:\n  owner: a\n  tasks:\n    t: ~\n", 4, "d.tasks.t: expected"),
    ("number owner", "dag_1: 5\n", 1, "got a number"),
    ("bool owner", "dag_1: yes\n", 1, "got a boolean"),
    ("list owner", "dag_1: [a, b]\n", 1, "got a list"),
    ("bad host", "dag_1: server one\n", 1, "'server one' is not a valid host name"),
    ("host with newline", "dag_1: |\n  server-1\n", 1, "not a valid host name"),
    ("unknown key", "d:\n  owner: a\n  onwer: b\n", 3, "d: unknown key 'onwer'"),
    (
        "unknown handover key",
        "d:\n  owner: a\n  handover:\n    - {at: 2026-12-01T00:00:00Z, owner: b, x: 1}\n",
        4,
        "unknown key 'x'",
    ),
    ("missing owner", "d:\n  tasks:\n    t: a\n", 1, "d: missing required key 'owner'"),
    ("tasks not a mapping", "d:\n  owner: a\n  tasks: [t]\n", 3, "d.tasks: expected a mapping of task id to owner"),
    ("empty tasks", "d:\n  owner: a\n  tasks: {}\n", 3, "d.tasks: must not be empty"),
    ("empty handover", "d:\n  owner: a\n  handover: []\n", 3, "must list at least one handover"),
    ("handover not a list", "d:\n  owner: a\n  handover: b\n", 3, "d.handover: expected a list of handovers"),
    ("dup top", "dag_1: a\ndag_2: b\ndag_1: c\n", 3, "duplicate key 'dag_1' (first defined on line 1)"),
    ("dup nested", "d:\n  owner: a\n  tasks:\n    t: b\n    t: c\n", 5, "duplicate key 't' (first defined on line 4)"),
    ("dup owner", "d:\n  owner: a\n  owner: b\n", 3, "duplicate key 'owner'"),
    ("python tag", "d: !!python/object/apply:os.system [id]\n", 1, "YAML tags"),
    ("str tag", "d: !!str server-1\n", 1, "YAML tags (tag:yaml.org,2002:str) are not allowed"),
    ("local tag", "d: !owner server-1\n", 1, "YAML tags"),
    ("anchor", "a: &h server-1\nb: *h\n", 1, "YAML anchors (&h) are not allowed"),
    ("merge key", "base: &b {owner: a}\nd:\n  <<: *b\n", 1, "anchors"),
    ("multiple documents", "a: server-1\n---\nb: server-2\n", 2, "more than one YAML document"),
    ("empty", "", None, "the document is empty"),
    ("only a comment", "# nothing here\n", None, "the document is empty"),
    ("bad yaml", "a: b\n  c: d\n", 2, "not valid YAML"),
    (
        "bad timestamp",
        "d:\n  owner: a\n  handover:\n    - {at: 2026-13-01T06:00:00Z, owner: b}\n",
        4,
        "not a valid date",
    ),
    (
        "not a timestamp",
        "d:\n  owner: a\n  handover:\n    - {at: tomorrow, owner: b}\n",
        4,
        "is not a date and time with a UTC offset",
    ),
    (
        "naive timestamp",
        "d:\n  owner: a\n  handover:\n    - {at: 2026-12-01T06:00:00, owner: b}\n",
        4,
        "with a UTC offset",
    ),
    ("date only", "d:\n  owner: a\n  handover:\n    - {at: 2026-12-01, owner: b}\n", 4, "with a UTC offset"),
    ("dag id with space", '"my dag": a\n', 1, "'my dag' is not a valid DAG id or pattern"),
    ("dag id with slash", "a/b: a\n", 1, "not a valid DAG id or pattern"),
    ("empty dag id", '"": a\n', 1, "not a valid DAG id"),
    ("long dag id", f"{'d' * 251}: a\n", 1, "not a valid DAG id"),
    ("task id with star", "d:\n  owner: a\n  tasks:\n    't*': b\n", 4, "'t*' is not a valid task id"),
    ("complex key", "? [a, b]\n: c\n", 1, "mapping keys must be plain strings"),
    ("too deep", "d:\n  owner: a\n  tasks:\n    t:\n      owner: [[[[[[[[a]]]]]]]]\n", 5, "nested more than"),
    ("serial 0", _meta("serial: 0"), 2, "@meta.serial: 0 is less than the minimum of 1"),
    ("serial negative", _meta("serial: -5"), 2, "less than the minimum of 1"),
    ("serial a string", _meta('serial: "5"'), 2, "@meta.serial: expected integer, got a string"),
    ("serial a fraction", _meta("serial: 5.5"), 2, "@meta.serial: expected integer, got a number"),
    ("serial a boolean", _meta("serial: yes"), 2, "@meta.serial: expected integer, got a boolean"),
    ("serial too big", _meta(f"serial: {2**53}"), 2, "greater than the maximum of 9007199254740991"),
    ("no serial", _meta(None), 1, "@meta: missing required key 'serial'"),
    ("no issued", '"@meta":\n  serial: 5\nd: a\n', 1, "@meta: missing required key 'issued'"),
    ("meta unknown key", _meta("serial: 5", "signer: abc"), 4, "@meta: unknown key 'signer' (allowed: serial,"),
    ("meta bad signature", _meta("serial: 5", "signature: abc"), 4, "@meta.signature: not an Ed25519 signature"),
    ("renewed before issued", _meta("serial: 5", 'renewed: "2026-12-01T05:59:59Z"'), 4, "renewed: earlier than issued"),
    (
        "renewed before issued, by offsets",
        _meta("serial: 5", 'renewed: "2026-12-01T06:59:59+01:00"'),
        4,
        "@meta.renewed: earlier than issued",
    ),
    ("issued no date", _meta("serial: 5").replace("2026-12-01", "2026-02-30"), 3, "@meta.issued: '2026-02-30T06:"),
    ("renewed no date", _meta("serial: 5", "renewed: 2026-12-01T25:00:00Z"), 4, "@meta.renewed: '2026-12-01T25:"),
    ("issued naive", _meta("serial: 5").replace("06:00:00Z", "06:00:00"), 3, "@meta.issued: '2026-12-01T06:00:00' is"),
    ("meta a number", '"@meta": 5\nd: a\n', 1, "@meta: expected a mapping, got a number"),
    ("meta empty", '"@meta":\nd: a\n', 1, "@meta: expected a mapping, got nothing (null)"),
    ("meta as a DAG", 'd: a\n"@meta": server-1.tld\n', 2, "@meta: expected a mapping, got a string"),
    ("meta twice", _meta("serial: 5") + '"@meta": {serial: 6}\n', 5, "duplicate key '@meta' (first defined on line 1)"),
    ("another @ key", 'd: a\n"@other": b\n', 2, "'@other' is not a valid DAG id or pattern"),
    ("meta in capitals", '"@Meta": b\n', 1, "'@Meta' is not a valid DAG id or pattern"),
    ("an @ pattern", '"@*": b\n', 1, "'@*' is not a valid DAG id or pattern"),
    ("meta as a task", 'd:\n  owner: a\n  tasks:\n    "@meta": b\n', 4, "'@meta' is not a valid task id"),
]


@pytest.mark.parametrize(("document", "line", "words"), [r[1:] for r in REJECTIONS], ids=[r[0] for r in REJECTIONS])
def test_rejections_name_the_line(document: str, line: int | None, words: str) -> None:
    error = rejection(document)
    first = error.problems[0]
    assert words in first.message, error.lines()
    assert first.line == line, error.lines()
    expected_prefix = f"placement.yaml:{line}: " if line else "placement.yaml: "
    assert str(error).startswith(expected_prefix)


def test_every_problem_is_reported_in_line_order() -> None:
    error = rejection('a: ""\nb: 5\nc:\n  owner: x\n  oops: y\n')
    assert [p.line for p in error.problems] == [1, 2, 5]
    assert "(and 2 more problems)" in str(error)


def test_an_alias_bomb_is_refused_before_it_expands() -> None:
    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    levels += [f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
    error = rejection("\n".join(levels) + "\n")
    assert error.problems[0].line == 1
    assert "anchors" in str(error)


def test_an_oversized_body_is_refused_unparsed() -> None:
    body = "".join(f"dag_{i}: server-1\n" for i in range(10)).encode()
    error = rejection(body, max_bytes=len(body) - 1)
    assert f"the document is {len(body)} bytes, over the limit of {len(body) - 1}" in str(error)
    assert parse_document(body, max_bytes=len(body)).entries
    huge = b"a: " + b"x" * DEFAULT_MAX_BYTES
    assert "over the limit" in str(rejection(huge))


def test_invalid_utf8_is_refused() -> None:
    assert "not UTF-8" in str(rejection(b"dag_1: server-\xff1\n"))


def test_revision_identifies_the_body() -> None:
    one, same, other = (parse_document(t).revision for t in ("a: b\n", "a: b\n", "a: c\n"))
    assert one == same != other
    assert len(one) == 12


# --- @meta: the publisher's serial and times -------------------------------------------------------------------------

META = """\
"@meta":
  serial: 5
  issued: "2026-12-01T06:00:00Z"
  renewed: 2026-12-01T08:30:00+02:00
dag_1: server-1.tld
"*": server-2.tld
"""


def test_meta_is_parsed_and_is_no_entry() -> None:
    placement = parse_document(META)
    renewed = datetime(2026, 12, 1, 6, 30, tzinfo=UTC)
    assert placement.meta == Meta(5, T0, renewed)
    assert placement.meta.vouched == renewed  # the offset is honoured
    assert [(e.key, e.line) for e in placement.entries] == [("dag_1", 5), ("*", 6)]
    assert placement.hosts() == {"server-1.tld", "server-2.tld"}


def test_without_a_renewal_the_issue_vouches() -> None:
    meta = parse_document(_meta("serial: 1")).meta
    assert meta is not None
    assert (meta, meta.vouched) == (Meta(1, T0), T0)


def test_without_meta_a_document_has_none() -> None:
    assert parse_document("dag_1: server-1.tld\n").meta is None


def test_a_document_of_meta_alone_owns_nothing() -> None:
    placement = parse_document('"@meta": {serial: 3, issued: "2026-12-01T06:00:00Z"}\n')
    assert (placement.entries, placement.entry_for("dag_1")) == ((), None)
    assert placement.meta == Meta(3, T0)


def renewed_at(text: str, when: str) -> str:
    return text.replace("2026-12-01T08:30:00+02:00", when)


FLOW_META = """\
"@meta": {serial: 5, issued: "2026-12-01T06:00:00Z", renewed: "2026-12-02T00:00:00Z"}
dag_1: server-1.tld
"*": server-2.tld
"""


@pytest.mark.parametrize(
    ("other", "same"),
    [
        (renewed_at(META, "2026-12-01T09:00:00+02:00"), True),
        (renewed_at(META, '"2026-12-24T00:00:00Z"'), True),
        (FLOW_META, True),  # the layout is not the content
        ("# published by hand\n" + META.replace("dag_1:", "\ndag_1:"), True),
        (_meta("serial: 5", "renewed: 2026-12-01T06:05:00Z"), False),
        (META.replace("serial: 5", "serial: 6"), False),
        (META.replace('issued: "2026-12-01T06:00:00Z"', 'issued: "2026-12-01T06:00:01Z"'), False),
        (META.replace("dag_1: server-1.tld", "dag_1: server-3.tld"), False),
        (META.replace('dag_1: server-1.tld\n"*": server-2.tld', '"*": server-2.tld\ndag_1: server-1.tld'), False),
    ],
    ids=[
        "renewed later",
        "renewed, quoted",
        "flow style",
        "a comment and a blank line",
        "another document",
        "another serial",
        "another issue",
        "another owner",
        "entries in another order",
    ],
)
def test_the_revision_ignores_the_renewal_and_the_layout(other: str, same: bool) -> None:
    assert (parse_document(other).revision == parse_document(META).revision) == same


def test_the_first_renewal_keeps_the_revision() -> None:
    """A copy issued without ``renewed`` (the key is optional) and its first renewal are the same content."""
    issued = _meta("serial: 5")
    first_renewal = _meta("serial: 5", 'renewed: "2026-12-01T06:05:00Z"')
    assert parse_document(first_renewal).revision == parse_document(issued).revision


# --- The two validators agree ----------------------------------------------------------------------------------------


def _accepts_fast(data: object) -> bool:
    try:
        _fast_validator()(data)
    except fastjsonschema.JsonSchemaValueException:
        return False
    return True


def _accepts_reference(data: object) -> bool:
    return bool(_validator().is_valid(data))


# Mostly valid pieces with the odd broken one, so that a single flaw decides whether a document is valid.
_good_hosts = st.sampled_from(["server-1.tld", "S2.", "a", "_x"])
_bad_hosts = st.one_of(
    st.sampled_from(["", " ", "a b", "x\n", "-x", ".", "server-1.tld\n", "é", "a/b"]),
    st.text(alphabet="ab-._ \n", max_size=6),
)
_hosts = st.one_of(_good_hosts, _good_hosts, _good_hosts, _bad_hosts)
_good_keys = st.sampled_from(["dag", "etl_*", "*", "a.b", "[ab]x", "!", "t-1"])
_bad_keys = st.one_of(
    st.sampled_from(["", "a b", "d\n", "x" * 251, "a/b", "@meta", "@other"]),
    st.text(alphabet="ab*?[]!._- \n/@", max_size=5),
)
_keys = st.one_of(_good_keys, _good_keys, _good_keys, _bad_keys)
_good_times = st.sampled_from(["2026-12-01T06:00:00Z", "2026-12-01 06:00+0100", "2026-12-01T06:00:00.5-05:00"])
_bad_times = st.sampled_from(["2026-12-01T06:00:00", "2026-12-01", "2026-12-01T06:00:00Z\n", "soon"])
_times = st.one_of(_good_times, _good_times, _bad_times)
_scalars = st.one_of(_hosts, st.none(), st.integers(), st.booleans(), st.floats(allow_nan=False))
_handover = st.one_of(
    st.fixed_dictionaries({"at": _times, "owner": _hosts}),
    st.dictionaries(st.sampled_from(["at", "owner", "x"]), st.one_of(_times, _hosts, st.none()), max_size=3),
)
_owner_spec = st.one_of(
    _scalars,
    st.dictionaries(
        st.sampled_from(["owner", "handover", "x"]),
        st.one_of(_hosts, st.lists(_handover, max_size=2), st.none()),
        max_size=3,
    ),
)
_entry = st.one_of(
    _owner_spec,
    st.fixed_dictionaries(
        {"owner": _hosts},
        optional={
            "tasks": st.one_of(st.dictionaries(_keys, _owner_spec, max_size=2), st.lists(_hosts, max_size=1)),
            "handover": st.lists(_handover, max_size=2),
        },
    ),
)
_serials = st.one_of(st.integers(min_value=-1, max_value=2**53 + 1), st.sampled_from([True, 5.0, 5.5, "5", None]))
_meta_spec = st.one_of(
    st.fixed_dictionaries({"serial": _serials, "issued": _times}, optional={"renewed": _times, "x": st.none()}),
    st.dictionaries(st.sampled_from(["serial", "issued", "renewed"]), st.one_of(_serials, _times), max_size=3),
    _scalars,
)
_entries = st.dictionaries(_keys, _entry, max_size=4)
_documents = st.one_of(
    _entries,
    st.builds(lambda meta, entries: {"@meta": meta, **entries}, _meta_spec, _entries),
    _scalars,
    st.lists(_hosts, max_size=2),
)


@settings(max_examples=400, deadline=None)
@given(_documents)
def test_fastjsonschema_and_jsonschema_agree(data: object) -> None:
    assert _accepts_fast(data) == _accepts_reference(data)


@settings(max_examples=300, deadline=None)
@given(_documents)
def test_any_document_is_parsed_or_rejected_with_a_line(data: object) -> None:
    """JSON is YAML: whatever the schema lets through, the model is built or a DocumentError says why."""
    try:
        parse_document(json.dumps(data))
    except DocumentError as error:
        assert error.problems


@pytest.mark.parametrize(
    "data",
    [
        {"d": "server-1\n"},  # Python's "$" matches before a final newline; ECMA-262's and fastjsonschema's do not
        {"d\n": "server-1"},
        {"d": {"owner": "a", "handover": [{"at": "2026-12-01T06:00:00Z\n", "owner": "b"}]}},
        {"d": {"owner": "a", "tasks": {"t\n": "b"}}},
    ],
)
def test_validators_agree_on_a_trailing_newline(data: object) -> None:
    assert not _accepts_fast(data)
    assert not _accepts_reference(data)
