"""Declared connections, variables and pools: reading a declaration, and the plan that makes Airflow hold it, as plain
data (tests/integration/test_objects_in_airflow.py applies plans to a real Airflow)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from airflow_placement.cli import main
from airflow_placement.objects import Declaration, ObjectsError, State, plan, read_declaration

SECRETS = ("s3cr3t-password", "s3cr3t-extra", "s3cr3t-value")
DECLARED = """
connections:
  - conn_id: warehouse
    conn_type: postgres
    host: db.example.org
    port: 5432
    login: etl
    password: s3cr3t-password
    extra: {sslmode: require, token: s3cr3t-extra}
variables:
  - {key: api_token, value: s3cr3t-value, description: the API's token}
  - {key: recipients, value: [ops@example.org, dev@example.org]}
pools:
  - {name: warehouse, slots: 4}
"""


def declared(text: str = DECLARED) -> Declaration:
    return read_declaration(text, "objects.yml")


def held() -> dict[str, dict[str, State]]:
    """What Airflow would hold after applying DECLARED, as Airflow stores it (texts)."""
    return {
        "connections": {
            "warehouse": {
                "conn_type": "postgres",
                "description": None,
                "host": "db.example.org",
                "schema": None,
                "login": "etl",
                "password": "s3cr3t-password",
                "port": 5432,
                "extra": {"sslmode": "require", "token": "s3cr3t-extra"},
            }
        },
        "variables": {
            "api_token": {"value": "s3cr3t-value", "description": "the API's token"},
            "recipients": {"value": '[\n  "ops@example.org",\n  "dev@example.org"\n]', "description": None},
        },
        "pools": {
            "default_pool": {"slots": 128, "description": "Default pool", "include_deferred": False},
            "warehouse": {"slots": 4, "description": None, "include_deferred": False},
        },
    }


def no_secret_in(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def test_a_fresh_airflow_gets_every_object_created_and_default_pool_is_left_alone() -> None:
    result = plan(declared(), {"pools": {"default_pool": held()["pools"]["default_pool"]}})
    summary = result.summary(check=False)
    assert summary["changed"] is True
    assert summary["connections"]["created"] == ["warehouse"]
    assert summary["variables"]["created"] == ["api_token", "recipients"]
    assert summary["pools"]["created"] == ["warehouse"]
    assert summary["pools"]["undeclared"] == ["default_pool"]
    assert '+ connection warehouse: conn_type="postgres", host="db.example.org", login="etl", ' in summary["diff"][0]
    no_secret_in(json.dumps(summary))


def test_what_airflow_holds_already_changes_nothing() -> None:
    """JSON values compare as data (Airflow's indented JSON equals the declared list), an extra as a mapping."""
    summary = plan(declared(), held()).summary(check=False)
    assert summary["changed"] is False
    assert summary["diff"] == []
    assert {kind: summary[kind]["unchanged"] for kind in ("connections", "variables", "pools")} == {
        "connections": 1,
        "variables": 2,
        "pools": 1,
    }


def test_an_extra_given_as_json_text_equals_the_same_mapping() -> None:
    text = DECLARED.replace(
        "extra: {sslmode: require, token: s3cr3t-extra}", """extra: '{"token": "s3cr3t-extra", "sslmode": "require"}'"""
    )
    assert not plan(declared(text), held()).changes


@pytest.mark.parametrize(
    ("kind", "ident", "field", "drifted", "line"),
    [
        (
            "connections",
            "warehouse",
            "host",
            "other.example.org",
            '~ connection warehouse: host "other.example.org" -> "db.example.org"',
        ),
        ("connections", "warehouse", "password", "changed-by-hand", "~ connection warehouse: password changed"),
        ("connections", "warehouse", "extra", {"sslmode": "disable"}, "~ connection warehouse: extra changed"),
        ("connections", "warehouse", "port", 6432, "~ connection warehouse: port 6432 -> 5432"),
        ("variables", "api_token", "value", "changed-by-hand", "~ variable api_token: value changed"),
        ("variables", "recipients", "value", '["ops@example.org"]', "~ variable recipients: value changed"),
        ("variables", "api_token", "description", None, '~ variable api_token: description null -> "the API\'s token"'),
        ("pools", "warehouse", "slots", 16, "~ pool warehouse: slots 16 -> 4"),
        ("pools", "warehouse", "include_deferred", True, "~ pool warehouse: include_deferred true -> false"),
    ],
)
def test_drift_is_one_update_naming_the_field_with_secrets_masked(
    kind: str, ident: str, field: str, drifted: Any, line: str
) -> None:
    current = held()
    current[kind][ident][field] = drifted
    result = plan(declared(), current)
    assert [(c.kind, c.id, c.action, c.fields) for c in result.changes] == [(kind, ident, "update", (field,))]
    summary = result.summary(check=True)
    assert summary["diff"] == [line]
    assert summary[kind]["updated"] == {ident: [field]}
    no_secret_in(json.dumps(summary))


def test_undeclared_objects_are_left_alone_unless_their_kind_is_pruned() -> None:
    current = held()
    current["connections"]["by_hand"] = {**current["connections"]["warehouse"], "password": "s3cr3t-password"}
    current["variables"]["by_hand"] = {"value": "s3cr3t-value", "description": None}
    current["pools"]["by_hand"] = {"slots": 1, "description": None, "include_deferred": False}

    kept = plan(declared(), current).summary(check=False)
    assert kept["changed"] is False
    assert [kept[kind]["undeclared"] for kind in ("connections", "variables", "pools")] == [
        ["by_hand"],
        ["by_hand"],
        ["by_hand", "default_pool"],
    ]

    pruned = plan(declared(), current, prune=["variables", "pools"])
    assert [(c.kind, c.id, c.action) for c in pruned.changes] == [
        ("variables", "by_hand", "delete"),
        ("pools", "by_hand", "delete"),
    ]
    summary = pruned.summary(check=False)
    assert summary["connections"]["undeclared"] == ["by_hand"]
    assert summary["pools"]["undeclared"] == ["default_pool"]  # Airflow needs it: never pruned
    assert summary["diff"] == ["- variable by_hand", "- pool by_hand"]
    no_secret_in(json.dumps(summary))


def test_a_declared_object_is_complete_a_field_left_out_is_emptied() -> None:
    current = held()
    current["connections"]["warehouse"]["schema"] = "analytics"
    (change,) = plan(declared(), current).changes
    assert change.fields == ("schema",)
    assert change.line() == '~ connection warehouse: schema "analytics" -> null'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "pools: [{name: p, slot: 4}]",
            "objects.yml: pool 'p': unknown field 'slot' (known: name, slots, description, include_deferred)",
        ),
        ("connections: [{conn_id: c, host: h}]", "objects.yml: connection 'c': conn_type is missing"),
        ("connections: [{conn_id: c, conn_type: ''}]", "objects.yml: connection 'c': conn_type is missing"),
        (
            "variables: [{key: k, value: a}, {key: k, value: b}]",
            "objects.yml: variable 'k' is declared twice",
        ),
        (
            "pools: [{name: p, slots: 1, slots: 2}]",
            "objects.yml: line 1: not valid YAML or JSON: duplicate key 'slots'",
        ),
        ("pool: [{name: p, slots: 1}]", "objects.yml: unknown kind 'pool' (known: connections, variables, pools)"),
        ("pools: {p: 1}", "objects.yml: pools must be a list, found a mapping"),
        ("pools: [p]", "objects.yml: pools[0] must be a mapping, found a string"),
        ("pools: [{slots: 1}]", "objects.yml: pools[0]: name is missing or not a string"),
        (
            "pools: [{name: p, slots: many}]",
            "objects.yml: pool 'p': slots must be a whole number, -1 (unlimited) or more, found a string",
        ),
        (
            "pools: [{name: p, slots: 1, include_deferred: 'yes'}]",
            "objects.yml: pool 'p': include_deferred must be true or false, found a string",
        ),
        (
            "connections: [{conn_id: c, conn_type: http, port: '80'}]",
            "objects.yml: connection 'c': port must be a whole number from 1 to 65535, found a string",
        ),
        (
            "connections: [{conn_id: c, conn_type: http, extra: nope}]",
            "objects.yml: connection 'c': extra must be a mapping or a JSON object",
        ),
        (
            "connections: [{conn_id: c, conn_type: http, host: [a]}]",
            "objects.yml: connection 'c': host must be a string, found a list",
        ),
        ("variables: [{key: k}]", "objects.yml: variable 'k': value is missing"),
        ("[]", "objects.yml: expected a mapping of connections, variables, pools, found a list"),
    ],
)
def test_a_bad_declaration_is_one_line_naming_the_object_and_the_file(text: str, message: str) -> None:
    with pytest.raises(ObjectsError) as caught:
        read_declaration(text, "objects.yml")
    assert str(caught.value) == message


def test_an_empty_declaration_declares_nothing() -> None:
    assert not plan(read_declaration("", "objects.yml"), held()).changes


def test_the_command_line_refuses_a_bad_file_in_one_line_without_its_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing reaches Airflow: the declaration is refused before its database is read."""
    path = tmp_path / "objects.yml"
    path.write_text("connections:\n  - {conn_id: warehouse, password: s3cr3t-password}\n")
    assert main(["objects", "apply", str(path), "--check"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"airflow-placement objects: error: {path}: connection 'warehouse': conn_type is missing\n"


def test_the_command_line_names_standard_input_as_told(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("pools: [{name: p, slots: 1, size: 2}]"))
    assert main(["objects", "apply", "-", "--name", "the inventory's airflow_objects_*"]) == 1
    assert capsys.readouterr().err == (
        "airflow-placement objects: error: the inventory's airflow_objects_*: pool 'p': unknown field 'size' "
        "(known: name, slots, description, include_deferred)\n"
    )
