"""The ``airflow-placement`` console script, run as a subprocess as an operator would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from placement_server import DocumentServer, Reply

SCRIPT = Path(sys.executable).with_name("airflow-placement")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "airflow_placement.cli"]

DOCUMENT = """\
dag_1: server-1.tld
"etl_*": Server-2.TLD.
reports:
  owner: server-1.tld
  handover:
    - {at: "2025-12-01T06:00:00Z", owner: server-2.tld}
    - {at: "2999-01-01T00:00:00Z", owner: server-3.tld}
  tasks:
    publish: server-3.tld
"""


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "HOST_HOSTNAME" and not k.startswith("AIRFLOW__PLACEMENT__")}
    environment = {**clean, **(env or {})}
    return subprocess.run([*COMMAND, *args], check=False, capture_output=True, text=True, env=environment, timeout=60)


@pytest.fixture
def document(tmp_path: Path) -> Path:
    path = tmp_path / "airflow-dag-on-server.yaml"
    path.write_text(DOCUMENT)
    return path


# --- check -----------------------------------------------------------------------------------------------------------


def test_check_accepts_a_valid_document(document: Path) -> None:
    result = run("check", str(document))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{document}: valid, 3 entries, revision ")
    assert result.stderr == ""


def test_check_names_each_problem_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text('dag_1: ""\ndag_2: server-2\ndag_3:\n  owner: a\n  onwer: b\ndag_2: c\n')
    result = run("check", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"{path}:6: duplicate key 'dag_2' (first defined on line 2)"]

    path.write_text('dag_1: ""\ndag_3:\n  owner: a\n  onwer: b\n')
    result = run("check", str(path))
    lines = result.stderr.splitlines()
    assert result.returncode == 1
    assert [line.split(": ")[0] for line in lines] == [f"{path}:1", f"{path}:4"]
    assert "the owner is empty" in lines[0]
    assert "unknown key 'onwer'" in lines[1]


def test_check_refuses_an_html_page(tmp_path: Path) -> None:
    path = tmp_path / "page.yaml"
    path.write_text("<!DOCTYPE html>\n<html></html>\n")
    result = run("check", str(path))
    assert (result.returncode, result.stderr.strip()) == (
        1,
        f"{path}:1: this is an HTML page, not a placement document",
    )


@pytest.mark.parametrize(
    ("hosts", "unknown"),
    [
        ("server-1.tld,server-2.tld,server-3.tld", []),
        ("SERVER-1.tld.,server-2.tld,server-3.tld", []),  # compared as DNS names
        ("server-1.tld,server-2.tld", ["server-3.tld"]),
        ("server-1.tld", ["server-2.tld", "server-3.tld"]),
    ],
)
def test_check_hosts_rejects_unknown_owners(document: Path, hosts: str, unknown: list[str]) -> None:
    result = run("check", str(document), "--hosts", hosts)
    assert result.returncode == (1 if unknown else 0), result.stderr
    reported = {owner for owner in unknown if f"owner '{owner}' is not one of the servers" in result.stderr}
    assert reported == set(unknown)
    assert all(line.startswith(f"{document}:") for line in result.stderr.splitlines())


def test_check_a_missing_file(tmp_path: Path) -> None:
    result = run("check", str(tmp_path / "absent.yaml"))
    assert result.returncode == 1
    assert "no such file" in result.stderr
    assert "Traceback" not in result.stderr


# --- decide ----------------------------------------------------------------------------------------------------------


def decide(document: Path | str, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = run("decide", "--source", str(document), "--cache-dir", str(tmp_path / "cache"), *args, env=env)
    assert result.returncode == 0, result.stderr
    output: dict[str, Any] = json.loads(result.stdout)
    return output


def test_decide_runs_nothing_dated_beyond_the_horizon(document: Path, tmp_path: Path) -> None:
    """A run dated the clock-skew margin or more ahead runs nowhere: a handover or a failover published meanwhile
    could move it."""
    ahead = (datetime.now(UTC) + timedelta(seconds=40)).isoformat()
    args = ["--dag-id", "reports", "--task-id", "publish", "--host", "server-3.tld", "--clock-skew", "30"]
    output = decide(document, tmp_path, *args, "--logical-date", ahead)
    assert (output["decision"], output["owner"]) == ("skip", "server-3.tld")
    assert "30 s or more ahead" in output["reason"]
    near = (datetime.now(UTC) + timedelta(seconds=15)).isoformat()
    assert decide(document, tmp_path, *args, "--logical-date", near)["decision"] == "run"


@pytest.mark.parametrize(
    "row",
    [
        (["--dag-id", "dag_1", "--host", "server-1.tld"], "run", "server-1.tld", "this host owns the run"),
        (["--dag-id", "dag_1", "--host", "SERVER-1.TLD."], "run", "server-1.tld", "this host owns the run"),
        (["--dag-id", "dag_1", "--host", "server-2.tld"], "skip", "server-1.tld", "owned by server-1.tld"),
        (["--dag-id", "etl_x", "--host", "server-2.tld"], "run", "server-2.tld", "entry 'etl_*'"),
        (["--dag-id", "nobody", "--host", "server-1.tld"], "skip", None, "no entry or pattern"),
        (
            ["--dag-id", "reports", "--host", "server-1.tld", "--logical-date", "2025-12-01T05:59:59Z"],
            "run",
            "server-1.tld",
            "entry 'reports'",
        ),
        (
            ["--dag-id", "reports", "--host", "server-1.tld", "--logical-date", "2025-12-01T06:00:00+00:00"],
            "skip",
            "server-2.tld",
            "after a scheduled handover",
        ),
        (
            ["--dag-id", "reports", "--host", "server-2.tld", "--logical-date", "2025-12-01T07:30:00+01:00"],
            "run",
            "server-2.tld",
            "after a scheduled handover",
        ),
        (  # no offset: UTC
            ["--dag-id", "reports", "--host", "server-1.tld", "--logical-date", "2025-12-01T05:59:59"],
            "run",
            "server-1.tld",
            "",
        ),
        (
            ["--dag-id", "reports", "--task-id", "publish", "--host", "server-3.tld", "--logical-date", "2026-01-01"],
            "run",
            "server-3.tld",
            "task override",
        ),
    ],
)
def test_decide(document: Path, tmp_path: Path, row: tuple[list[str], str, str | None, str]) -> None:
    args, decision, owner, words = row
    output = decide(document, tmp_path, *args)
    assert (output["decision"], output["owner"]) == (decision, owner)
    assert words in output["reason"]
    assert output["revision"]
    assert output["document_from"] == "source"


def test_decide_host_defaults_to_host_hostname(document: Path, tmp_path: Path) -> None:
    output = decide(document, tmp_path, "--dag-id", "dag_1", env={"HOST_HOSTNAME": "Server-1.tld"})
    assert (output["decision"], output["host"]) == ("run", "server-1.tld")
    output = decide(document, tmp_path, "--dag-id", "dag_1", env={"HOST_HOSTNAME": "server-2.tld"})
    assert output["decision"] == "skip"


def assert_refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0
    assert '"run"' not in result.stdout
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr


def test_decide_refuses_without_a_trustworthy_document(tmp_path: Path, server: DocumentServer) -> None:
    cache = str(tmp_path / "cache")
    unreachable = run(
        "decide", "--source", "http://127.0.0.1:9/x.yaml", "--dag-id", "dag_1", "--host", "server-1.tld",
        "--cache-dir", cache, "--timeout", "0.5", "--retries", "0",
    )  # fmt: skip
    assert_refused(unreachable, "connection failed", "no earlier copy")

    server.respond = lambda headers: Reply(200, b"<!DOCTYPE html><html>login</html>")
    html = run("decide", "--source", server.url, "--dag-id", "dag_1", "--host", "server-1.tld", "--cache-dir", cache)
    assert_refused(html, "HTML page")

    server.respond = lambda headers: Reply(500, b"")
    failing = run(
        "decide", "--source", server.url, "--dag-id", "dag_1", "--host", "server-1.tld", "--cache-dir", cache,
        "--retries", "0", "--ttl", "0",
    )  # fmt: skip
    assert_refused(failing, "HTTP 500")


def test_decide_uses_the_last_good_copy_within_the_lease(tmp_path: Path, server: DocumentServer) -> None:
    args = ("--dag-id", "dag_1", "--host", "server-1.tld", "--ttl", "0", "--retries", "0")
    assert decide(server.url, tmp_path, *args)["document_from"] == "source"
    server.respond = lambda headers: Reply(503, b"")
    output = decide(server.url, tmp_path, *args)
    assert (output["decision"], output["document_from"]) == ("run", "fallback")
    assert "HTTP 503" in output["note"]


def test_decide_without_a_host_refuses(document: Path, tmp_path: Path) -> None:
    result = run("decide", "--source", str(document), "--dag-id", "dag_1", "--cache-dir", str(tmp_path))
    assert_refused(result, "HOST_HOSTNAME")


def test_decide_rejects_a_bad_date(document: Path) -> None:
    result = run("decide", "--source", str(document), "--dag-id", "d", "--host", "h", "--logical-date", "tomorrow")
    assert result.returncode == 2
    assert "not an ISO 8601 date and time: 'tomorrow'" in result.stderr


# --- show and help ---------------------------------------------------------------------------------------------------


def test_show_lists_owners_and_pending_handovers(document: Path) -> None:
    document.write_text(DOCUMENT.replace("2025-12-01T06:00:00Z", "2020-12-01T06:00:00Z"))
    result = run("show", str(document))
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[0] == ["DAG", "/", "PATTERN", "TASK", "OWNER", "FROM", "(LOGICAL", "DATE)"]
    assert ["dag_1", "*", "server-1.tld", "always"] in rows
    assert ["etl_*", "*", "server-2.tld", "always"] in rows
    assert ["reports", "*", "server-1.tld", "before", "first"] in rows
    assert ["reports", "*", "server-2.tld", "2020-12-01T06:00:00+00:00"] in rows  # past: not pending
    assert ["reports", "*", "server-3.tld", "2999-01-01T00:00:00+00:00", "(pending)"] in rows
    assert ["reports", "publish", "server-3.tld", "always"] in rows
    assert rows[-1][0] == "revision"


def test_show_an_invalid_document(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("- a\n")
    result = run("show", str(path))
    assert result.returncode == 1
    assert "must be a mapping" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [[], ["check"], ["decide"], ["show"]])
def test_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: airflow-placement")


def test_decide_refuses_a_future_dated_run_across_a_pending_handover(tmp_path: Path) -> None:
    """A run dated after a handover still to come runs nowhere: a server holding the document from before the
    handover was published would run it, so one holding this document must not."""
    handover = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    document = tmp_path / "doc.yaml"
    document.write_text(
        f'reports:\n  owner: server-1.tld\n  handover:\n    - {{at: "{handover}", owner: server-2.tld}}\n'
    )
    later = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    for host in ("server-1.tld", "server-2.tld"):
        output = decide(document, tmp_path, "--dag-id", "reports", "--host", host, "--logical-date", later)
        assert output["decision"] == "skip"
        assert "has not taken effect yet" in output["reason"]
    before = decide(document, tmp_path, "--dag-id", "reports", "--host", "server-1.tld")
    assert before["decision"] == "run"
