"""``airflow-placement objects apply`` against a real Airflow (its SQLite metadata database, its models, its Fernet
key), as the airflow_objects role runs it inside a server's scheduler container. One story, each step read back through
Airflow's own CLI (exports) or its database:

1. a first apply creates the declared connection, variables and pool, encrypted at rest with the Fernet key;
   Airflow's exports hold exactly the declared values; a second apply changes nothing;
2. drift made by hand through Airflow's CLI (a variable's value and description and a pool's slots changed, objects
   nobody declared) is reported by ``--check``, which changes nothing, and objects not declared are left alone;
3. ``--prune KIND`` deletes undeclared objects of that kind only; ``default_pool`` is never deleted;
4. no secret (password, extra, variable value) is in any output of the command.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
from airflow_harness import VENV_BIN, Airflow
from cryptography.fernet import Fernet

pytestmark = pytest.mark.airflow

SECRETS = ("s3cr3t-password", "s3cr3t-extra", "s3cr3t-value")
DECLARED = """\
connections:
  - conn_id: objects_warehouse
    conn_type: postgres
    host: db.example.org
    port: 5432
    login: etl
    password: s3cr3t-password
    extra: {sslmode: require, token: s3cr3t-extra}
variables:
  - {key: objects_api_token, value: s3cr3t-value, description: the API's token}
  - {key: objects_recipients, value: [ops@example.org, dev@example.org]}
pools:
  - {name: objects_warehouse, slots: 4, description: the warehouse's connections}
"""


class Objects:
    """The command and Airflow's CLI, with one Fernet key, as every container of a server has it."""

    def __init__(self, airflow: Airflow, path: Path) -> None:
        self.airflow, self.path = airflow, path
        self.env = {"AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode()}
        self.declaration = path / "objects.yml"
        self.declaration.write_text(DECLARED)
        self.database = airflow.home / "airflow.db"

    def apply(self, *options: str) -> dict[str, Any]:
        result = subprocess.run(
            [str(VENV_BIN / "airflow-placement"), "objects", "apply", str(self.declaration), *options],
            env=self.airflow.env("nobody", **self.env),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        for secret in SECRETS:
            assert secret not in result.stdout + result.stderr
        summary: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
        return summary

    def airflow_cli(self, *args: str) -> str:
        return self.airflow.check(*args, **self.env)

    def export(self, kind: str) -> Any:
        """Airflow's own export of ``kind`` (connections, variables or pools), decrypted."""
        path = self.path / f"{kind}.json"
        self.airflow_cli(kind, "export", str(path))
        return json.loads(path.read_text())

    def variable(self, key: str) -> Any:
        """A variable's value in Airflow's own export (which gives a variable with a description as a mapping)."""
        exported = self.export("variables")[key]
        return exported["value"] if isinstance(exported, dict) else exported

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.database) as connection:
            return connection.execute(query).fetchall()

    def names(self, kind: str) -> set[str]:
        table, column = {
            "connections": ("connection", "conn_id"),
            "variables": ("variable", "key"),
            "pools": ("slot_pool", "pool"),
        }[kind]
        return {name for (name,) in self.rows(f"SELECT {column} FROM {table}")}


@pytest.fixture
def objects(airflow: Airflow, tmp_path: Path) -> Objects:
    return Objects(airflow, tmp_path)


def changes(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per kind, only what was created, updated or deleted."""
    return {
        kind: done
        for kind in ("connections", "variables", "pools")
        if (done := {what: summary[kind][what] for what in ("created", "updated", "deleted") if summary[kind][what]})
    }


def test_apply_reapply_drift_check_and_prune(objects: Objects) -> None:
    # 1. A first apply creates everything; Airflow reads back exactly what was declared; secrets are encrypted at rest.
    first = objects.apply()
    assert first["changed"] is True
    assert changes(first) == {
        "connections": {"created": ["objects_warehouse"]},
        "variables": {"created": ["objects_api_token", "objects_recipients"]},
        "pools": {"created": ["objects_warehouse"]},
    }
    connection = objects.export("connections")["objects_warehouse"]
    assert {k: connection[k] for k in ("conn_type", "host", "port", "login", "password")} == {
        "conn_type": "postgres",
        "host": "db.example.org",
        "port": 5432,
        "login": "etl",
        "password": "s3cr3t-password",
    }
    assert json.loads(connection["extra"]) == {"sslmode": "require", "token": "s3cr3t-extra"}
    variables = objects.export("variables")
    assert variables["objects_api_token"] == {"value": "s3cr3t-value", "description": "the API's token"}
    assert variables["objects_recipients"] == ["ops@example.org", "dev@example.org"]
    assert objects.export("pools")["objects_warehouse"]["slots"] == 4
    stored = objects.rows(
        "SELECT password || extra FROM connection WHERE conn_id = 'objects_warehouse' "
        "UNION ALL SELECT val FROM variable WHERE key = 'objects_api_token'"
    )
    assert len(stored) == 2
    assert not any(secret in text for (text,) in stored for secret in SECRETS)

    assert objects.apply()["changed"] is False

    # 2. Drift by hand, through Airflow's CLI: check mode reports it and changes nothing; undeclared objects stay.
    (objects.path / "drift-variables.json").write_text(
        json.dumps({"objects_api_token": "by-hand", "objects_by_hand": "x"})
    )
    objects.airflow_cli("variables", "import", str(objects.path / "drift-variables.json"))
    (objects.path / "drift-pools.json").write_text(
        json.dumps(
            {
                "objects_warehouse": {
                    "slots": 9,
                    "description": "the warehouse's connections",
                    "include_deferred": False,
                },
                "objects_by_hand": {"slots": 1, "description": "", "include_deferred": False},
            }
        )
    )
    objects.airflow_cli("pools", "import", str(objects.path / "drift-pools.json"))
    objects.airflow_cli("connections", "add", "objects_by_hand", "--conn-type", "http")
    before = objects.rows("SELECT pool, slots FROM slot_pool ORDER BY pool")

    check = objects.apply("--check", "--prune", "connections", "--prune", "variables", "--prune", "pools")
    assert check["changed"] is True
    assert check["check"] is True
    assert changes(check) == {
        "connections": {"deleted": ["objects_by_hand"]},
        "variables": {"updated": {"objects_api_token": ["value", "description"]}, "deleted": ["objects_by_hand"]},
        "pools": {"updated": {"objects_warehouse": ["slots"]}, "deleted": ["objects_by_hand"]},
    }
    assert check["diff"] == [
        "- connection objects_by_hand",
        '~ variable objects_api_token: value changed, description null -> "the API\'s token"',
        "- variable objects_by_hand",
        "~ pool objects_warehouse: slots 9 -> 4",
        "- pool objects_by_hand",
    ]
    assert check["pools"]["undeclared"] == ["default_pool"]
    assert objects.rows("SELECT pool, slots FROM slot_pool ORDER BY pool") == before
    assert objects.variable("objects_api_token") == "by-hand"
    assert {"objects_by_hand"} <= objects.names("connections")

    # 3. Without --prune, undeclared objects are left alone; with it, only the kinds named are pruned.
    fixed = objects.apply()
    assert changes(fixed) == {
        "variables": {"updated": {"objects_api_token": ["value", "description"]}},
        "pools": {"updated": {"objects_warehouse": ["slots"]}},
    }
    assert [fixed[kind]["undeclared"] for kind in ("connections", "variables", "pools")] == [
        ["objects_by_hand"],
        ["objects_by_hand"],
        ["default_pool", "objects_by_hand"],
    ]
    assert objects.variable("objects_api_token") == "s3cr3t-value"

    assert changes(objects.apply("--prune", "variables")) == {"variables": {"deleted": ["objects_by_hand"]}}
    assert "objects_by_hand" not in objects.names("variables")
    assert "objects_by_hand" in objects.names("connections")
    assert "objects_by_hand" in objects.names("pools")

    pruned = objects.apply("--prune", "connections", "--prune", "pools")
    assert changes(pruned) == {
        "connections": {"deleted": ["objects_by_hand"]},
        "pools": {"deleted": ["objects_by_hand"]},
    }
    assert objects.names("pools") == {"default_pool", "objects_warehouse"}
    assert (
        objects.apply("--check", "--prune", "connections", "--prune", "variables", "--prune", "pools")["changed"]
        is False
    )
