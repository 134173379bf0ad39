"""The failover drill on the local two-server demo (scripts/demo.sh must be up, with its renewer; run as root).

    .venv/bin/python tests/drill/drill.py [--settle 60] [--no-source] [--no-force]

``drill_a`` (server-1), ``drill_b`` (server-2) and ``drill_mixed`` (server-1, by the catch-all) run every minute on
both servers; each task that runs inserts one row into ``drill_runs`` of the work database, which has no unique key: a
run executed twice is two rows. drill_a and drill_b have two container tasks (GatedDockerOperator); drill_mixed a
Python task that writes its row from the Airflow worker itself (gated by the cluster policy), then a container task.
Every minute tick is checked against the published document by logical date: one row per task, by its owner; the
figures are given per DAG as well.

1. Setup: the table, the ``drill_work_db`` connection on both servers, every DAG unpaused on both; ``--settle``.
2. An ownership edit: ``drill_b`` moved to server-1 in ``inventory/local/host_vars`` (restored right after) and
   published with ``placement.yml`` while runs come: a handover the lease ahead; runs dated before it stay
   server-2's, from it on server-1's.
3. Two ``failover.yml -e failed=server-1`` at once: one publishes (a scheduled handover of server-1's DAGs), the
   other waits or stops with a one-line message; the failover is recorded once. Then
   ``failover.yml -e restore=server-1`` hands them back.
4. The same document published twice within one second (the package's publisher, as the role runs it, written to
   both servers back to back): both servers end on the higher serial.
5. A stale mirror: right after a gate read on server-2, its file gets the document of step 3 (an older serial,
   with a fresh renewal time, so only the serial gives it away) until a ``drill_a`` run triggered on both servers
   has decided there. Refused as a rollback; that run executes once, on server-1.
6. Every tick so far checked (plus the segments of each DAG's owners by logical date).
7. (unless ``--no-source``) Both sources broken at the same tick, right after a gate read: server-2's file moved
   away, server-1's replaced with garbage, and the renewer kept out (``chattr +i``). Later gate reads decide from
   the last copy the publisher vouched for while it is within the maximum staleness, then refuse; then repaired.
8. (unless ``--no-force``) A crash and a forced failover: server-1 stopped with ``podman stop --time 0`` once its
   runs of a tick are done, two ticks of its DAGs (``drill_a``, ``drill_mixed``) go by (skipped on server-2), then
   ``failover.yml -e failed=server-1 -e force=true -e rerun_since=<the crash>`` re-runs them on server-2, each once
   (the Python task too: cleared, it decides again).
   Then server-1 comes back twice: first with the renewer kept out (its directory ``chattr +i`` since the crash):
   it must refuse everything (its copy was renewed before its restart); then, stopped and started again with the
   route open: it gets the new document and skips what moved.

Prints the figures and its duration; exits 1 on any problem, each named. ``run_drill()`` returns them for
tests/drill/test_drill.py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from airflow_placement.document import DocumentError, Placement, parse_document
from airflow_placement.publish import Publisher

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / "inventory" / "local"
SECRETS = INVENTORY / ".secrets"
PUBLISHER_DIR = INVENTORY / ".placement"  # dag_placement_publisher_dir
RENDERED = INVENTORY / ".rendered" / "airflow-dag-on-server.yaml"  # the controller's copy of the published document
MOVES = INVENTORY / "group_vars" / "all" / "dag_placement_moves.yml"
RENEWER_LOG = REPO / ".cache" / "demo" / "renewer.log"  # demo/renewer.sh: one line per renewal
SERVERS = {"server-1": 8081, "server-2": 8082}
DAGS = ("drill_a", "drill_b", "drill_mixed")  # tests/drill/dags
TASKS = ("first", "second")
WORK_DB = "airflow-placement-work-db"
WORK_DB_ADDRESS = "10.213.0.10"
SERVER_DIR = "/opt/airflow-placement"  # dag_placement_file_dir, mounted read-only into the Airflow containers
SERVER_DOCUMENT = f"{SERVER_DIR}/airflow-dag-on-server.yaml"
SERVER_CACHE = "/opt/airflow-compose/placement-cache"  # the tasks' [placement] cache_dir, as the server sees it
_LEASE = yaml.safe_load((INVENTORY / "group_vars" / "all" / "placement.yml").read_text())
TTL = int(_LEASE["placement_ttl_seconds"])
MAX_STALENESS = int(_LEASE["placement_max_staleness_seconds"])
LEAD = MAX_STALENESS + int(_LEASE["placement_clock_skew_seconds"])  # how far ahead a handover is scheduled
TABLE = """
create table if not exists drill_runs (
    id bigserial primary key,
    dag_id text not null,
    run_id text not null,
    logical_date timestamptz,
    task_id text not null,
    server text not null,
    recorded_at timestamptz not null default now()
)"""
# What the gates write in the task logs (airflow_placement.operators, .fetch, .lease).
FALLBACK = re.compile(r"using the copy the publisher vouched for (\d+) s ago")
STALE = re.compile(r"decision=refuse .*the copy is (\d+) s old, over the maximum staleness")
ROLLBACK = re.compile(r"served serial (\d+), older than serial (\d+) that this server has accepted; refused as a")
RESTARTED = re.compile(r"decision=refuse .*renewed the copy before this server's stack started")
DECISION = re.compile(r"decision=(run|skip) .*? owner=(\S+) serial=(\S+)")


def log(message: str) -> None:
    print(f"{datetime.now(UTC):%H:%M:%S} drill: {message}", flush=True)


class Api:
    """Airflow's REST API v2 of one server, through the demo's published UI port, with a JWT from /auth/token."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.base = f"https://127.0.0.1:{SERVERS[server]}"
        # airflow_compose serves the API over HTTPS with a certificate it generated, copied to the controller.
        self.tls = ssl.create_default_context(cafile=str(SECRETS / "airflow_compose" / server / "tls.crt"))
        self.token: str | None = None

    def _send(self, method: str, path: str, body: Any = None, auth: bool = True) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.login()}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30, context=self.tls) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def login(self) -> str:
        if self.token is None:
            password = (SECRETS / "airflow_compose" / self.server / "admin_password").read_text().strip()
            status, answer = self._send("POST", "/auth/token", {"username": "admin", "password": password}, False)
            if status not in (200, 201):
                raise RuntimeError(f"{self.server}: /auth/token answered {status}: {answer}")
            self.token = answer["access_token"]
        return self.token

    def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201)) -> Any:
        for attempt in range(4 if method == "GET" else 1):  # a server just started, or under load, may time out
            try:
                status, answer = self._send(method, path, body)
                break
            except OSError:
                if attempt == 3 or method != "GET":
                    raise
                time.sleep(10)
        if status == 401:  # the token expired
            self.token = None
            status, answer = self._send(method, path, body)
        if status not in ok:
            raise RuntimeError(f"{self.server}: {method} {path} answered {status}: {answer}")
        return answer

    def up(self) -> bool:
        try:
            return self._send("GET", "/api/v2/monitor/health", auth=False)[0] == 200
        except OSError:
            return False

    def task_instances(self, dag_id: str, since: datetime) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            page = self.call(
                "GET",
                f"/api/v2/dags/{dag_id}/dagRuns/~/taskInstances?limit=100&offset={len(found)}"
                f"&logical_date_gte={since.isoformat().replace('+', '%2B')}",
            )
            found += page["task_instances"]
            if len(found) >= page["total_entries"] or not page["task_instances"]:
                return found

    def task_log(self, ti: dict[str, Any]) -> str:
        """The text of a task instance's log (its last try), one event a line."""
        run_id = urllib.parse.quote(ti["dag_run_id"], safe="")
        answer = self.call(
            "GET",
            f"/api/v2/dags/{ti['dag_id']}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/{ti['try_number']}"
            "?full_content=true",
        )
        lines = answer.get("content") or []
        return "\n".join(str(line.get("event", "")) if isinstance(line, dict) else str(line) for line in lines)

    def trigger(self, dag_id: str, when: datetime) -> str:
        """Trigger a run of ``dag_id`` with logical date ``when``; its run id."""
        run = self.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": when.isoformat()})
        return str(run["dag_run_id"])


def psql(sql: str) -> list[list[str]]:
    """Rows of a query on the work database, through the database container's local socket."""
    result = subprocess.run(
        ["podman", "exec", WORK_DB, "psql", "-X", "-q", "-At", "-F", "\t", "-U", "work", "-d", "work", "-c", sql],
        check=True,
        capture_output=True,
        text=True,
    )
    return [line.split("\t") for line in result.stdout.splitlines() if line]


def on_server(server: str, *argv: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["podman", "exec", "-i", server, *argv], input=stdin, check=True, capture_output=True, text=True
    )
    return result.stdout


def _playbook_command(name: str, *extra: str) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(REPO / "ansible" / "roles"), "ANSIBLE_FORCE_COLOR": "0"}
    return [str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", str(INVENTORY), f"ansible/{name}", *extra], env


def playbook(name: str, *extra: str) -> tuple[float, str]:
    """Run ``ansible/<name>`` with ``extra``; its duration and output. Raises when it fails."""
    start = time.monotonic()
    command, env = _playbook_command(name, *extra)
    result = subprocess.run(command, check=False, cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{name} {' '.join(extra)} failed:\n{result.stdout[-3000:]}{result.stderr[-2000:]}")
    return time.monotonic() - start, result.stdout


def one_line(output: str) -> str:
    """The one-line message a failed playbook stopped with."""
    found = re.findall(r'"msg": "((?:[^"\\]|\\.)*)"', output)
    return found[-1] if found else output.strip().splitlines()[-1] if output.strip() else "(no output)"


def moves() -> list[dict[str, Any]]:
    if not MOVES.exists():
        return []
    return list((yaml.safe_load(MOVES.read_text()) or {}).get("dag_placement_moves") or [])


def server_document(server: str) -> Placement | None:
    """The document on ``server`` (None when it is down, missing or not valid)."""
    try:
        return parse_document(on_server(server, "cat", SERVER_DOCUMENT), f"{server}:{SERVER_DOCUMENT}")
    except (subprocess.CalledProcessError, DocumentError):
        return None


def serial(document: Placement | None) -> int:
    return document.meta.serial if document is not None and document.meta is not None else 0


def published() -> Placement:
    """The published document as the servers hold it: the highest serial among the servers that answer."""
    documents = [doc for doc in map(server_document, SERVERS) if doc is not None]
    if not documents:
        raise RuntimeError("no server holds a valid placement document")
    return max(documents, key=serial)


def owner(document: Placement, dag_id: str, task_id: str, when: datetime) -> str:
    entry = document.entry_for(dag_id)
    if entry is None:
        raise RuntimeError(f"{dag_id} has no owner in the published document")
    return entry.schedule_for(task_id)[0].owner_at(when)


def minute(when: datetime) -> datetime:
    return when.replace(second=0, microsecond=0)


def next_tick(when: datetime) -> datetime:
    """The first minute tick at or after ``when``."""
    return when if when == minute(when) else minute(when) + timedelta(minutes=1)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T"))


def sleep_until(when: datetime) -> None:
    delay = (when - datetime.now(UTC)).total_seconds()
    if delay > 0:
        time.sleep(delay)


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} s"


def _ages(ages: list[int]) -> str:
    if not ages:
        return "none"
    return f"{min(ages)} s" if min(ages) == max(ages) else f"{min(ages)}-{max(ages)} s"


@dataclass
class Report:
    runs_checked: int = 0
    duplicates: int = 0
    lost: int = 0
    rows: int = 0
    missed_by_crashed: int = 0
    failover_seconds: float | None = None
    failover_playbook_seconds: float | None = None
    handover_seconds: float | None = None
    restore_seconds: float | None = None
    forced_failover_seconds: float | None = None
    rerun_seconds: float | None = None
    forced_playbook_seconds: float | None = None
    rerun_cleared: int | None = None
    rerun_runs: int = 0
    by_dag: dict[str, dict[str, int]] = field(
        default_factory=lambda: {dag_id: dict.fromkeys(("runs", "lost", "duplicates", "rows"), 0) for dag_id in DAGS}
    )
    rerun_once: int = 0
    steps: dict[str, str] = field(default_factory=dict)  # what each step showed, by name
    source_steps: list[str] = field(default_factory=list)
    owners: list[str] = field(default_factory=list)  # per DAG: who ran it, by logical date
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.duplicates == 0 and self.lost == 0

    def lines(self) -> list[str]:
        out = [
            f"runs checked:  {self.runs_checked} (minute ticks x DAGs; each with {len(TASKS)} tasks on "
            f"{len(SERVERS)} servers)",
            f"duplicates:    {self.duplicates} (work database: {self.rows} rows in all, probes included)",
            f"lost runs:     {self.lost}",
            f"failover time: {_seconds(self.failover_seconds)} from starting the two failover.yml to server-2's "
            f"first drill_a row (playbook {_seconds(self.failover_playbook_seconds)}, handover at "
            f"{_seconds(self.handover_seconds)}, then the next minute tick); restore "
            f"{_seconds(self.restore_seconds)}",
        ]
        out.append(
            "by DAG:        "
            + "; ".join(
                f"{dag_id} {n['runs']} runs, {n['duplicates']} duplicates, {n['lost']} lost, {n['rows']} rows"
                for dag_id, n in self.by_dag.items()
            )
        )
        out += [f"{name}: {text}" for name, text in self.steps.items()]
        if self.forced_failover_seconds is not None:
            out += [
                f"forced failover time: {_seconds(self.forced_failover_seconds)} to server-2's first row of a "
                f"scheduled drill_a run, {_seconds(self.rerun_seconds)} to its first row of a missed one (re-run) "
                f"(playbook {_seconds(self.forced_playbook_seconds)}, re-run included)",
                f"re-run of the dead server's missed runs (rerun_since = the crash): {self.rerun_cleared} task "
                f"instances cleared by failover.yml; {self.rerun_runs} DAG runs missed, {self.rerun_once} of them "
                "then executed exactly once, on server-2",
                f"runs of the crashed server before the crash left unfinished: {self.missed_by_crashed}",
            ]
        out += [f"placement source {step}" for step in self.source_steps]
        out += [f"owners by logical date: {line}" for line in self.owners]
        out.append(f"drill duration: {_seconds(self.seconds)}")
        out += [f"problem: {problem}" for problem in self.problems]
        return out


# --- Runs and their checks -------------------------------------------------------------------------------------------


def rows_by_run() -> dict[tuple[str, str, str], list[str]]:
    """(dag_id, run_id, task_id) -> servers of its rows."""
    found: dict[tuple[str, str, str], list[str]] = {}
    for dag_id, run_id, task_id, server in psql("select dag_id, run_id, task_id, server from drill_runs"):
        found.setdefault((dag_id, run_id, task_id), []).append(server)
    return found


def first_row(
    dag_id: str, server: str, after: datetime, logical: tuple[datetime, datetime] | None = None
) -> datetime | None:
    """When ``server`` first wrote a ``dag_id`` row after ``after`` (of a run with a logical date in
    [``logical``), when given)."""
    runs = ""
    if logical is not None:
        runs = f" and logical_date >= '{logical[0].isoformat()}' and logical_date < '{logical[1].isoformat()}'"
    rows = psql(
        f"select min(recorded_at) from drill_runs where dag_id = '{dag_id}' and server = '{server}' "
        f"and recorded_at > '{after.isoformat()}'{runs}"
    )
    return parse_time(rows[0][0]) if rows and rows[0] and rows[0][0] else None


def wait_first_row(
    dag_id: str, server: str, after: datetime, timeout: float, logical: tuple[datetime, datetime] | None = None
) -> datetime:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = first_row(dag_id, server, after, logical)
        if found is not None:
            return found
        time.sleep(2)
    raise RuntimeError(f"no {dag_id} row by {server} within {timeout:.0f} s")


FINISHED = ("success", "skipped", "failed", "upstream_failed")


def collect(
    apis: dict[str, Api], since: datetime, until: datetime, timeout: float = 240
) -> dict[str, dict[tuple[str, str], dict[str, Any]]]:
    """Task instances of the drill DAGs by server, (dag_id, logical date iso) -> {task_id: state}, once every run
    with a logical date in [since, until] is finished on every server given."""
    deadline = time.monotonic() + timeout
    while True:
        states: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        unfinished = []
        for server, api in apis.items():
            by_run: dict[tuple[str, str], dict[str, Any]] = {}
            for dag_id in DAGS:
                for ti in api.task_instances(dag_id, since):
                    when = parse_time(ti["logical_date"])
                    if when > until:
                        continue
                    by_run.setdefault((dag_id, when.isoformat()), {"run_id": ti["dag_run_id"]})[ti["task_id"]] = ti[
                        "state"
                    ]
                    if ti["state"] not in FINISHED:
                        unfinished.append(f"{server} {dag_id} {ti['dag_run_id']} {ti['task_id']} {ti['state']}")
            states[server] = by_run
        if not unfinished:
            return states
        if time.monotonic() > deadline:
            raise RuntimeError(f"runs not finished after {timeout:.0f} s: {unfinished[:5]}")
        time.sleep(5)


def check(
    report: Report,
    apis: dict[str, Api],
    document: Placement,
    since: datetime,
    until: datetime,
    *,
    crashed: str | None = None,
) -> None:
    """Check every minute tick of every DAG with a logical date in [since, until] against ``document``.

    ``crashed``: a server stopped as a crash. Runs the document still gives it (logical date before the forced
    failover's rerun_since) it may have run before it crashed, or not (counted as missed); the survivors must have
    skipped them. Every other run must have run on its owner (twice counts as a duplicate, at the end).
    """
    states = collect(apis, since, until)
    rows = rows_by_run()
    tick = next_tick(since)
    while tick <= until:
        for dag_id in DAGS:
            report.runs_checked += 1
            report.by_dag[dag_id]["runs"] += 1
            key = (dag_id, tick.isoformat())
            run_ids = {states[s][key]["run_id"] for s in states if key in states[s]}
            if not run_ids:
                report.lost += 1
                report.by_dag[dag_id]["lost"] += 1
                report.problems.append(f"{dag_id} {tick:%H:%M}: no run on any server")
                continue
            run_id = run_ids.pop()
            for task_id in TASKS:
                expected = owner(document, dag_id, task_id, tick)
                missed = expected == crashed
                written = rows.get((dag_id, run_id, task_id), [])
                label = f"{dag_id} {run_id} {task_id}"
                if missed:
                    if written and written[0] != expected:
                        report.problems.append(f"{label}: run by {written[0]}, owner {expected} (crashed)")
                    elif not written and task_id == TASKS[0]:
                        report.missed_by_crashed += 1
                elif not written:
                    report.lost += 1
                    report.by_dag[dag_id]["lost"] += 1
                    report.problems.append(f"{label}: no row (owner {expected})")
                elif set(written) != {expected}:
                    report.problems.append(f"{label}: run by {written}, owner {expected}")
                for server, by_run in states.items():
                    state = by_run.get(key, {}).get(task_id)
                    want = "skipped" if missed or server != expected else "success"
                    if state != want:
                        report.problems.append(f"{label}: {state} on {server}, expected {want}")
        tick += timedelta(minutes=1)


def owners_by_date(dag_id: str, since: datetime, until: datetime) -> str:
    """Who wrote ``dag_id``'s ``first`` rows of the minute ticks in [since, until], as runs of one server."""
    rows = psql(
        f"select logical_date, string_agg(server, '+' order by server) from drill_runs where dag_id = '{dag_id}' "
        f"and task_id = '{TASKS[0]}' and logical_date = date_trunc('minute', logical_date) "
        f"and logical_date >= '{since.isoformat()}' and logical_date <= '{until.isoformat()}' "
        "group by logical_date order by logical_date"
    )
    segments: list[list[str]] = []
    for when, servers in rows:
        tick = f"{parse_time(when):%H:%M}"
        if segments and segments[-1][0] == servers:
            segments[-1][2] = tick
        else:
            segments.append([servers, tick, tick])
    return f"{dag_id}: " + ", ".join(f"{s} {a}" + (f"-{b}" if b != a else "") for s, a, b in segments)


def count_duplicates(report: Report) -> None:
    """Every (DAG, run, task) of the work database executed more than once, whichever step it belongs to."""
    report.rows = int(psql("select count(*) from drill_runs")[0][0])
    for dag_id, rows in psql("select dag_id, count(*) from drill_runs group by 1"):
        report.by_dag.setdefault(dag_id, dict.fromkeys(("runs", "lost", "duplicates", "rows"), 0))["rows"] = int(rows)
    for dag_id, run_id, task_id, servers in psql(
        "select dag_id, run_id, task_id, string_agg(server, ',') from drill_runs group by 1, 2, 3 having count(*) > 1"
    ):
        report.duplicates += len(servers.split(",")) - 1
        report.by_dag[dag_id]["duplicates"] += len(servers.split(",")) - 1
        report.problems.append(f"{dag_id} {run_id} {task_id}: executed {len(servers.split(','))} times, by {servers}")


# --- Setup -----------------------------------------------------------------------------------------------------------


def renewals() -> int:
    """How many renewals demo/renewer.sh has logged."""
    return len(RENEWER_LOG.read_text().splitlines()) if RENEWER_LOG.exists() else 0


def wait_renewal(timeout: float = 90) -> None:
    """Until demo/renewer.sh logs its next renewal (then it pauses for its interval)."""
    before, deadline = renewals(), time.monotonic() + timeout
    while renewals() == before:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no renewal in {timeout:.0f} s: is demo/renewer.sh running? ({RENEWER_LOG})")
        time.sleep(0.2)


def setup(apis: dict[str, Api]) -> None:
    wait_renewal()
    psql(TABLE)
    password = (SECRETS / "work_db" / "password").read_text().strip()
    connection = {
        "connection_id": "drill_work_db",
        "conn_type": "postgres",
        "host": WORK_DB_ADDRESS,
        "port": 5432,
        "login": "work",
        "schema": "work",
        "password": password,
    }
    for server, api in apis.items():
        status, _ = api._send("POST", "/api/v2/connections", connection)
        if status == 409:
            api.call("PATCH", "/api/v2/connections/drill_work_db", connection)
        elif status not in (200, 201):
            raise RuntimeError(f"{server}: creating the drill_work_db connection answered {status}")
        for dag_id in DAGS:
            deadline = time.monotonic() + 180
            while api._send("GET", f"/api/v2/dags/{dag_id}")[0] != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{server}: {dag_id} not parsed after 180 s (deployed by site.yml from "
                        "inventory/local/group_vars/all/drill.yml's folder?)"
                    )
                time.sleep(5)
            api.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
    log(f"{', '.join(DAGS)} unpaused on both servers (lease: TTL {TTL} s, maximum staleness {MAX_STALENESS} s)")


def pause(apis: dict[str, Api]) -> None:
    for api in apis.values():
        for dag_id in DAGS:
            with suppress(OSError):
                api._send("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": True})


# --- The drill -------------------------------------------------------------------------------------------------------


def run_drill(settle: float = 60, force: bool = True, source: bool = True) -> Report:
    report = Report()
    started = time.monotonic()
    apis = {server: Api(server) for server in SERVERS}
    try:
        setup(apis)
        # The first tick after unpausing may be the run that was due when unpausing (catchup off); skip it.
        since = minute(datetime.now(UTC)) + timedelta(minutes=1)
        log(f"letting runs come for {settle:.0f} s")
        time.sleep(settle)
        ownership_edit_step(report)  # returns once server-1 ran drill_b: the failover's handover comes later
        stale_text = concurrent_failover_step(report)  # returns once server-2 ran drill_a
        restore_start = datetime.now(UTC)
        playbook("failover.yml", "-e", "restore=server-1")
        handover_2 = parse_time(moves()[-1]["at"])
        republished = republish_step(report)
        tick_e = next_tick(handover_2)
        rollback_step(report, apis, stale_text, tick_e, republished)
        back = wait_first_row(
            "drill_a", "server-1", restore_start, 300, logical=(handover_2, tick_e + timedelta(days=1))
        )
        report.restore_seconds = (back - restore_start).total_seconds()
        log(f"server-1 ran drill_a again {report.restore_seconds:.0f} s after starting the restore")
        check(report, apis, published(), since, tick_e)
        report.owners = [owners_by_date(dag_id, since, tick_e) for dag_id in DAGS]
        log(f"checked the runs up to {tick_e:%H:%M}: {report.runs_checked} runs; " + "; ".join(report.owners))
        normal_from = tick_e + timedelta(minutes=1)
        if source:
            normal_from = source_step(report, apis, {"server-2": "unreachable", "server-1": "garbage"})
        if force:
            crash = forced_step(report, apis, normal_from)
            restart_step(report, apis["server-1"], since=crash, cut=True)
            restart_step(report, apis["server-1"], since=None, cut=False)
    finally:
        for server in SERVERS:  # whatever step stopped, the renewer let in again and the document back
            subprocess.run(["podman", "exec", server, "sh", "-c", UNDO], check=False, capture_output=True)
        pause(apis)
    count_duplicates(report)
    report.seconds = time.monotonic() - started
    return report


@contextmanager
def inventory_edit(dag_id: str, old: str, new: str) -> Iterator[None]:
    """Move ``dag_id``'s line of ``dag_placement_dags`` from host_vars/<old>.yml to host_vars/<new>.yml, and back."""
    old_path, new_path = (INVENTORY / "host_vars" / f"{host}.yml" for host in (old, new))
    old_text, new_text = old_path.read_text(), new_path.read_text()
    line = next(line for line in old_text.splitlines(keepends=True) if line.strip().startswith(f"- {dag_id} "))
    anchor = "dag_placement_dags:\n"
    if anchor not in new_text:
        raise RuntimeError(f"{new_path} has no {anchor.strip()}")
    try:
        old_path.write_text(old_text.replace(line, "", 1))
        new_path.write_text(new_text.replace(anchor, anchor + line, 1))
        yield
    finally:
        old_path.write_text(old_text)
        new_path.write_text(new_text)


def ownership_edit_step(report: Report) -> None:
    """drill_b moved to server-1 in the inventory and published with placement.yml while runs come; returns once
    server-1 ran it (the check by logical date comes with the others)."""
    start = datetime.now(UTC)
    with inventory_edit("drill_b", "server-2", "server-1"):
        seconds, output = playbook("placement.yml")
    found = re.search(r"drill_b: server-2 -> server-1 for runs dated from (\S+)", output)
    if found is None:
        raise RuntimeError(f"placement.yml scheduled no handover of drill_b to server-1:\n{output[-3000:]}")
    handover = parse_time(found.group(1))
    log(f"placement.yml: drill_b goes to server-1 for runs dated from {handover:%H:%M:%S}")
    first = wait_first_row("drill_b", "server-1", start, 300, logical=(handover, handover + timedelta(days=1)))
    report.steps["ownership edit (placement.yml)"] = (
        f"drill_b server-2 -> server-1 for runs dated from {handover:%H:%M:%S}, "
        f"{(handover - start).total_seconds():.0f} s after starting placement.yml (playbook {seconds:.0f} s; the "
        f"lease {LEAD} s); server-1's first drill_b row {(first - start).total_seconds():.0f} s after the start"
    )


def concurrent_failover_step(report: Report) -> str:
    """Two failover.yml -e failed=server-1 at once: one publishes, the other waits or stops in one line; the move
    is recorded once. Returns, once server-2 ran drill_a, the document published (the stale mirror's, later)."""
    before_moves, before_serial = len(moves()), serial(published())
    start = datetime.now(UTC)
    command, env = _playbook_command("failover.yml", "-e", "failed=server-1")
    runs = [
        subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [run.communicate()[0] for run in runs]
    report.failover_playbook_seconds = (datetime.now(UTC) - start).total_seconds()
    codes = [run.returncode for run in runs]
    recorded = moves()[before_moves:]
    document = published()
    outcome = [
        "published" if code == 0 and "issued serial" in out else "nothing to publish" if code == 0 else one_line(out)
        for code, out in zip(codes, outputs, strict=True)
    ]
    if len(recorded) != 1 or recorded[0].get("failed") != "server-1":
        report.problems.append(f"two failover.yml at once recorded {len(recorded)} moves: {recorded}")
    if serial(document) != before_serial + 1:
        report.problems.append(f"two failover.yml at once: serial {before_serial} -> {serial(document)}, not +1")
    if outcome.count("published") != 1:
        report.problems.append(f"two failover.yml at once: {outcome}")
    other = next((o for o in outcome if o != "published"), "")
    if "\n" in other or "\\n" in other:
        report.problems.append(f"the second failover.yml stopped with more than one line: {other!r}")
    if not recorded:
        raise RuntimeError(f"no failover recorded: {outcome}")
    handover = parse_time(recorded[0]["at"])
    report.handover_seconds = (handover - start).total_seconds()
    first = wait_first_row("drill_a", "server-2", start, 300, logical=(handover, handover + timedelta(days=1)))
    report.failover_seconds = (first - start).total_seconds()
    report.steps["two failover.yml at once"] = (
        f"serial {before_serial} -> {serial(document)}, {len(recorded)} move recorded (every drill DAG to "
        f"server-2 for runs dated from {handover:%H:%M:%S}); the other: {other!r}"
    )
    log(f"two failover.yml at once: {outcome}; server-2 ran drill_a {report.failover_seconds:.0f} s after the start")
    return on_server("server-2", "cat", SERVER_DOCUMENT)


def write_document(server: str, text: str) -> float:
    """Replace the document on ``server`` atomically; when it was replaced (the server's clock)."""
    script = f"cat > {SERVER_DOCUMENT}.drill-tmp && mv -f {SERVER_DOCUMENT}.drill-tmp {SERVER_DOCUMENT} && date +%s.%N"
    return float(on_server(server, "sh", "-c", script, stdin=text))


def in_parallel(function: Callable[[str], Any], servers: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    errors: list[BaseException] = []

    def call(server: str) -> None:
        try:
            results[server] = function(server)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(server,)) for server in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def republish_step(report: Report) -> int:
    """The published document published twice within one second, as the role does it (the publisher's lock, the
    next serial, a copy on every server, the commit), right after a renewal; both servers must end on the higher
    serial (checked with the next tick's decisions, in rollback_step), which it returns."""
    publisher = Publisher(PUBLISHER_DIR)
    if publisher.published() is None:
        raise RuntimeError(f"nothing published in {PUBLISHER_DIR}")
    desired = parse_document(re.sub(r'(?m)^"@meta":\n(?:  .*\n)+', "", publisher.published_path.read_text()))
    wait_renewal()  # the renewer pauses for its interval now: it cannot put the previous serial back meanwhile
    written: dict[str, list[float]] = {server: [] for server in SERVERS}
    serials = []
    for _ in range(2):
        token = publisher.acquire(wait=30)
        try:
            text, _plan = publisher.begin(desired, lead=LEAD, token=token)
            for server, when in in_parallel(lambda s, t=text: write_document(s, t), list(SERVERS)).items():
                written[server].append(when)
        except BaseException:
            publisher.abort()
            raise
        serials.append(publisher.commit())
        shutil.copyfile(publisher.published_path, RENDERED)
    gaps = {server: times[1] - times[0] for server, times in written.items()}
    report.steps["republished twice"] = f"serials {serials[0]} and {serials[1]} written to each server " + ", ".join(
        f"{gap:.2f} s apart on {server}" for server, gap in sorted(gaps.items())
    )
    if max(gaps.values()) >= 1:
        report.problems.append(f"republish: the two copies were not written within one second: {gaps}")
    log(f"republished twice: {report.steps['republished twice']}")
    return serials[1]


# Run on a server (python3 -c WATCH_AND_BREAK MODE TICK < stale document): wait for the first read of its document
# by a gate at or after TICK, then at once break the source (MODE unreachable: moved away; garbage; rollback: the
# stale document from standard input, renewed now) and keep the renewer out (chattr +i on the directory); prints the
# read's and the break's times.
WATCH_AND_BREAK = f"""
import glob, json, os, re, subprocess, sys, time
mode, tick = sys.argv[1], float(sys.argv[2])
document, good, cache = {SERVER_DOCUMENT!r}, {SERVER_DOCUMENT!r} + ".drill-good", {SERVER_CACHE!r}
stale = sys.stdin.read()
if os.path.exists(good):  # left by an interrupted drill
    os.unlink(good)
deadline = time.time() + 150
def confirmed():
    for path in glob.glob(cache + "/*.json"):
        try:
            entry = json.load(open(path))
        except (OSError, ValueError):
            continue
        if entry.get("source") == document and entry.get("checked_at", 0) >= tick:
            return entry["checked_at"]
while time.time() < deadline:
    read = confirmed()
    if read:
        break
    time.sleep(0.1)
else:
    sys.exit("no gate read the placement document within 150 s of the tick")
for attempt in range(5):
    if mode == "unreachable":
        os.rename(document, good)
    else:
        os.link(document, good)
        renewed = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        text = "owner: [\\n<html>garbage" if mode == "garbage" else re.sub(
            r'(?m)^  renewed: "[^"]*"$', '  renewed: "%s"' % renewed, stale)
        open(document + ".drill-tmp", "w").write(text)
        os.rename(document + ".drill-tmp", document)
    broke = time.time()
    subprocess.run(["chattr", "+i", os.path.dirname(document)], check=True)
    if (not os.path.exists(document)) if mode == "unreachable" else open(document).read() == text:
        print(read, broke)
        sys.exit(0)
    subprocess.run(["chattr", "-i", os.path.dirname(document)], check=True)  # a renewal came in between: again
    os.unlink(good)
sys.exit("the renewer kept replacing the document")
"""


def break_after_gate_read(server: str, mode: str, tick: datetime, stale: str = "") -> tuple[float, float]:
    """Break ``server``'s source (``mode``) right after a gate reads it at or after ``tick``; the times of the read
    and of the break (epoch seconds)."""
    out = on_server(server, "python3", "-c", WATCH_AND_BREAK, mode, str(tick.timestamp()), stdin=stale)
    read, broke = (float(value) for value in out.split())
    return read, broke


GOOD = f"{SERVER_DOCUMENT}.drill-good"  # break_after_gate_read keeps the document there
UNDO = f"chattr -i {SERVER_DIR}; [ ! -e {GOOD} ] || mv -f {GOOD} {SERVER_DOCUMENT}"


def repair(server: str) -> datetime:
    """Undo break_after_gate_read: the renewer let in again, the document as it was."""
    on_server(server, "sh", "-c", f"chattr -i {SERVER_DIR} && mv -f {GOOD} {SERVER_DOCUMENT}")
    return datetime.now(UTC)


def decisions(api: Api, dag_ids: tuple[str, ...], since: datetime, until: datetime) -> list[tuple[dict[str, Any], str]]:
    """The finished task instances of ``dag_ids`` on ``api``'s server dated in [since, until] that decided (they
    started: a task skipped with its upstream never did), with their logs."""
    found = []
    for dag_id in dag_ids:
        for ti in api.task_instances(dag_id, since):
            if parse_time(ti["logical_date"]) <= until and ti["state"] in FINISHED and ti.get("try_number"):
                found.append((ti, api.task_log(ti)))
    return found


def rollback_step(report: Report, apis: dict[str, Api], stale: str, tick: datetime, republished: int) -> None:
    """A stale mirror on server-2 at ``tick`` (the first tick after the restore's handover): the document of the
    failover (an older serial, giving drill_a to server-2) in its file, renewed now, until a drill_a run triggered
    on both servers past the TTL has decided there: it must run once, on server-1; the gates log the refusal. Every
    decision of the tick must use ``republished``, the serial republish_step left on both servers."""
    api = apis["server-2"]
    sleep_until(tick - timedelta(seconds=5))
    read, broke = break_after_gate_read("server-2", "rollback", tick, stale)
    sleep_until(datetime.fromtimestamp(read + TTL + 1, UTC))
    probe_date = datetime.now(UTC).replace(microsecond=0)
    for a in apis.values():
        a.trigger("drill_a", probe_date)
    # Held until a gate of server-2 has decided the probe (its log names the decision), not merely until the task
    # finished: a task Airflow fails before it starts reads nothing. No longer than needed: the copy the gates fall
    # back to ages meanwhile.
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline and not any(
        ti["task_id"] == TASKS[0] and "decision=" in text
        for ti, text in decisions(api, ("drill_a",), probe_date, probe_date)
    ):
        time.sleep(1)
    repaired = repair("server-2")
    log(f"stale mirror on server-2 from {datetime.fromtimestamp(broke, UTC):%H:%M:%S} to {repaired:%H:%M:%S}")
    collect(apis, tick, probe_date)
    refused, serials, ages = 0, set(), []
    for ti, text in decisions(api, DAGS, tick, probe_date):
        label = f"stale mirror: {ti['dag_id']} {ti['dag_run_id']} {ti['task_id']}"
        if found := ROLLBACK.search(text):
            refused += 1
            ages += [int(used.group(1))] if (used := FALLBACK.search(text)) else []
            if int(found.group(1)) >= int(found.group(2)):
                report.problems.append(f"{label}: refused serial {found.group(1)} over {found.group(2)}")
        if decided := DECISION.search(text):
            serials.add(decided.group(3))
        elif "decision=refuse" in text:
            report.problems.append(f"{label}: refused to decide: {text[-300:]}")
    probe_rows: dict[str, list[str]] = {task: [] for task in TASKS}
    for task_id, server in psql(
        f"select task_id, server from drill_runs where dag_id = 'drill_a' and logical_date = '{probe_date.isoformat()}'"
    ):
        probe_rows[task_id].append(server)
    if any(servers != ["server-1"] for servers in probe_rows.values()):
        report.problems.append(f"stale mirror: the probe run of drill_a ran {probe_rows}, not once on server-1")
    if not refused:
        report.problems.append("stale mirror: no gate of server-2 logged the rollback refusal")
    for a in apis.values():  # the republished document: every decision of this tick on the higher serial
        serials |= {d.group(3) for _ti, text in decisions(a, DAGS, tick, tick) if (d := DECISION.search(text))}
    if serials != {str(republished)}:
        report.problems.append(f"republish: decisions at {tick:%H:%M} on serials {sorted(serials)}")
    report.steps["stale mirror"] = (
        f"server-2's file held serial {serial(parse_document(stale))} (drill_a to server-2) for "
        f"{(repaired - datetime.fromtimestamp(broke, UTC)).total_seconds():.0f} s from {broke - read:.1f} s after a "
        f"gate read; {refused} gate reads refused it as a rollback and decided from the last good copy ("
        f"{_ages(ages)} after the publisher vouched for it); the drill_a "
        f"run triggered on both servers ran once per task, on {sorted({s for v in probe_rows.values() for s in v})}; "
        f"the decisions of the {tick:%H:%M} tick on both servers used serial {', '.join(sorted(serials))}"
    )
    log(report.steps["stale mirror"])


def source_step(report: Report, apis: dict[str, Api], modes: dict[str, str]) -> datetime:
    """Each server's source broken (``modes``) right after a gate read at the same tick, the renewer kept out. Gate
    reads past the TTL find it broken and decide from the last copy the publisher vouched for, while that is within
    the maximum staleness ("using the copy the publisher vouched for N s ago"); a run of each server's own DAG is
    triggered past the TTL to make sure of one. Later ones refuse ("the copy is N s old, over the maximum
    staleness"). Repaired once each server has refused. Returns the first tick with both servers running again."""
    tick = minute(datetime.now(UTC)) + timedelta(minutes=1)
    document = published()
    own = {server: next(d for d in DAGS if owner(document, d, TASKS[0], tick) == server) for server in modes}
    sleep_until(tick - timedelta(seconds=5))
    broken = in_parallel(lambda server: break_after_gate_read(server, modes[server], tick), list(modes))
    for server, (read, broke) in broken.items():
        log(f"{modes[server]} source on {server}: broken {broke - read:.1f} s after a gate read")
        sleep_until(datetime.fromtimestamp(read + TTL + 1, UTC))
        apis[server].trigger(own[server], datetime.now(UTC).replace(microsecond=0))
    # Refusals come at the next tick (or the one after, when that tick's gate read came sooner than this one's).
    until = tick + timedelta(minutes=1)
    while True:
        sleep_until(until + timedelta(seconds=40))
        collect({s: apis[s] for s in modes}, tick, until)
        found = {s: decisions(apis[s], DAGS, tick, until) for s in modes}
        if all(any(STALE.search(text) for _ti, text in found[s]) for s in modes) or until > tick + timedelta(minutes=1):
            break
        until += timedelta(minutes=1)
    rows = rows_by_run()
    verdicts = {
        server: judge_broken_source(
            report, server=server, mode=modes[server], found=found[server], rows=rows, tick=tick, times=broken[server]
        )
        for server in modes
    }
    repaired = {server: repair(server) for server in modes}
    back_ticks = []
    for server, verdict in verdicts.items():
        back = wait_first_row(own[server], server, repaired[server], 240)
        back_ticks.append(next_tick(back - timedelta(seconds=50)))
        summary = f"{verdict}; runs again {(back - repaired[server]).total_seconds():.0f} s after the repair"
        log(f"placement source {summary}")
        report.source_steps.append(summary)
    return max(back_ticks)


def judge_broken_source(
    report: Report,
    *,
    server: str,
    mode: str,
    found: list[tuple[dict[str, Any], str]],
    rows: dict[tuple[str, str, str], list[str]],
    tick: datetime,
    times: tuple[float, float],
) -> str:
    """What the decisions ``found`` on ``server`` show about its broken source (``times``: of the gate read and of
    the break), problems added to ``report``; one line."""
    read, broke = times
    late = psql(
        f"select dag_id, run_id, task_id from drill_runs where server = '{server}' and recorded_at > "
        f"'{(datetime.fromtimestamp(broke, UTC) + timedelta(seconds=MAX_STALENESS + 15)).isoformat()}'"
    )
    fallback, refused, fresh = [], [], 0
    for ti, text in found:
        written = rows.get((ti["dag_id"], ti["dag_run_id"], ti["task_id"]), [])
        label = f"{mode} source: {ti['dag_id']} {ti['dag_run_id']} {ti['task_id']} on {server}"
        decided = DECISION.search(text)
        if used := FALLBACK.search(text):
            fallback.append(int(used.group(1)))
            if int(used.group(1)) > MAX_STALENESS or decided is None:
                report.problems.append(f"{label}: last good copy {used.group(1)} s old, {ti['state']}")
        elif refusal := STALE.search(text):
            refused.append(int(refusal.group(1)))
            if int(refusal.group(1)) <= MAX_STALENESS or ti["state"] != "skipped" or written:
                report.problems.append(f"{label}: refused at {refusal.group(1)} s, {ti['state']}, rows {written}")
        elif decided and parse_time(ti["logical_date"]) == tick:
            fresh += 1  # the read that the break followed, or one within its TTL
        else:
            report.problems.append(f"{label}: {ti['state']}, neither a decision from a good copy nor a refusal")
        if decided and (decided.group(1) == "run") != (written == [server]):
            report.problems.append(f"{label}: decided {decided.group(1)}, rows {written}")
    for dag_id, run_id, task_id in late:
        report.problems.append(f"{mode} source: {dag_id} {run_id} {task_id} ran on {server} past the staleness")
    if not fallback or not refused:
        report.problems.append(
            f"{mode} source on {server}: {len(fallback)} decisions from the last good copy, {len(refused)} refusals"
        )
    return (
        f"{mode} on {server} (broken {broke - read:.1f} s after a gate read): {fresh} decisions from the fresh copy, "
        f"{len(fallback)} from the last good copy ({_ages(fallback)} after the publisher vouched for it), "
        f"{len(refused)} refused ({_ages(refused)} old: skipped), {len(late)} rows past the staleness"
    )


def forced_step(report: Report, apis: dict[str, Api], since: datetime) -> datetime:
    """Crash server-1 once its runs of a tick are done, with its route to the source cut (the renewer kept out of
    its directory: chattr +i, for restart_step), let two ticks of its DAGs (drill_a, drill_mixed) go by (skipped on
    server-2), then fail over with force and rerun_since = the crash: server-2 must run those runs exactly once, and
    every later run (checked from the tick ``since`` on). Returns the time of the crash."""
    tick = minute(datetime.now(UTC)) + timedelta(minutes=1)
    sleep_until(tick)
    deadline = time.monotonic() + 180
    while True:  # no task of server-1 running when it crashes: a crash mid-task is Airflow's business, not ours
        states = collect({"server-1": apis["server-1"]}, tick, tick)["server-1"]
        if all(len(states.get((dag_id, tick.isoformat()), {})) == 1 + len(TASKS) for dag_id in DAGS):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"server-1: the runs of {tick:%H:%M} not done within 180 s")
        time.sleep(2)
    document = published()
    crashed_dags = [dag_id for dag_id in DAGS if owner(document, dag_id, TASKS[0], tick) == "server-1"]
    on_server("server-1", "chattr", "+i", SERVER_DIR)
    crash = datetime.now(UTC)
    log("crash: podman stop --time 0 server-1 (its placement directory closed to the renewer); two ticks go by")
    subprocess.run(["podman", "stop", "--time", "0", "server-1"], check=True, capture_output=True)
    sleep_until(minute(crash) + timedelta(minutes=2, seconds=20))
    rerun_since = crash.replace(microsecond=0) + timedelta(seconds=1)  # the playbook rounds up to a second
    log(f"failover.yml -e failed=server-1 -e force=true -e rerun_since={rerun_since:%Y-%m-%dT%H:%M:%SZ}")
    forced_start = datetime.now(UTC)
    report.forced_playbook_seconds, output = playbook(
        "failover.yml",
        "-e",
        "failed=server-1",
        "-e",
        "force=true",
        "-e",
        f"rerun_since={rerun_since:%Y-%m-%dT%H:%M:%SZ}",
    )
    cleared = re.search(r"cleared on server-2 \((\d+) task instances\)", output)
    report.rerun_cleared = int(cleared.group(1)) if cleared else 0
    log(f"failover.yml cleared {report.rerun_cleared} task instances on server-2")
    later = forced_start + timedelta(days=1)
    scheduled = wait_first_row("drill_a", "server-2", forced_start, 300, logical=(forced_start, later))
    report.forced_failover_seconds = (scheduled - forced_start).total_seconds()
    rerun = wait_first_row("drill_a", "server-2", forced_start, 300, logical=(rerun_since, forced_start))
    report.rerun_seconds = (rerun - forced_start).total_seconds()
    log(
        f"server-2 ran a scheduled drill_a run {report.forced_failover_seconds:.0f} s after starting the forced "
        f"failover.yml, a missed one (re-run) {report.rerun_seconds:.0f} s after"
    )
    end = minute(max(scheduled, rerun)) + timedelta(minutes=1)
    sleep_until(end + timedelta(seconds=40))
    check(report, {"server-2": apis["server-2"]}, published(), since, end, crashed="server-1")
    # The runs the dead server missed: its DAGs' ticks from rerun_since up to the failover, each re-run once.
    rows = rows_by_run()
    states = collect({"server-2": apis["server-2"]}, rerun_since, forced_start)["server-2"]
    tick = minute(rerun_since) + timedelta(minutes=1)
    while tick < forced_start:
        for dag_id in crashed_dags:
            report.rerun_runs += 1
            run = states.get((dag_id, tick.isoformat()), {})
            written = [rows.get((dag_id, run.get("run_id", ""), task_id), []) for task_id in TASKS]
            if all(servers == ["server-2"] for servers in written):
                report.rerun_once += 1
            else:
                report.problems.append(f"missed run {dag_id} {tick:%H:%M} after the re-run: rows {written}")
        tick += timedelta(minutes=1)
    log(f"crashed at {crash:%H:%M:%S}; checked up to {end:%H:%M}; re-run {report.rerun_once}/{report.rerun_runs}")
    return crash


def restart_step(report: Report, api: Api, *, since: datetime | None, cut: bool) -> None:
    """server-1 started again after the forced failover. With its route to the source cut (its directory closed to
    the renewer since the crash) it must refuse everything: its copy was renewed before its restart. With the route
    open (stopped and started once more) it gets the new document and skips what moved. Either way no row.

    :param since: the runs to look at are dated from then on (default: from this stop on).
    """
    name = "restart, route to the source cut" if cut else "restart, route open"
    server = api.server
    if not cut:
        on_server(server, "chattr", "-i", SERVER_DIR)
        subprocess.run(["podman", "stop", "--time", "0", server], check=True, capture_output=True)
    since = since or datetime.now(UTC)
    subprocess.run(["podman", "start", server], check=True, capture_output=True)
    started = datetime.now(UTC)
    if cut and "i" not in on_server(server, "lsattr", "-d", SERVER_DIR).split()[0]:
        report.problems.append(f"{name}: {SERVER_DIR} on {server} lost its immutable flag over the restart")
    deadline = time.monotonic() + 600
    while not api.up():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server}: Airflow not answering 600 s after podman start")
        time.sleep(5)
    answering = datetime.now(UTC)
    # Until every DAG's first task decided (with the route open: decided skip, once a renewal came after the start).
    wanted = "decision=refuse" if cut else "decision=skip"
    while True:
        found = decisions(api, DAGS, since, datetime.now(UTC) + timedelta(days=1))
        if {ti["dag_id"] for ti, text in found if ti["task_id"] == TASKS[0] and wanted in text} == set(DAGS):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server}: not every DAG decided ({wanted}) within 600 s of podman start")
        time.sleep(10)
    decided_at = datetime.now(UTC)
    expected = str(serial(published()))
    counts = {"refused (restart)": 0, "refused (other)": 0, "skip": 0, "run": 0, "failed before the gate": 0}
    for ti, text in found:
        label = f"{name}: {ti['dag_id']} {ti['dag_run_id']} {ti['task_id']}"
        decided = DECISION.search(text)
        if "placement:" not in text:  # Airflow, just started, lost it before it ran (no start date): no decision
            counts["failed before the gate"] += 1
            if ti["state"] != "failed" or ti.get("start_date"):
                report.problems.append(f"{label}: {ti['state']} without a placement decision in its log")
            continue
        if RESTARTED.search(text):
            counts["refused (restart)"] += 1
        elif "decision=refuse" in text:
            counts["refused (other)"] += 1
            report.problems.append(f"{label}: refused, but not for the restart: {text[-300:]}")
        elif decided:
            counts[decided.group(1)] += 1
            if cut or decided.group(1) == "run" or decided.group(2) != "server-2" or decided.group(3) != expected:
                report.problems.append(f"{label}: {decided.group(0)} (published: serial {expected})")
        if ti["state"] != "skipped":
            report.problems.append(f"{label}: {ti['state']}, expected skipped")
    rows = psql(
        f"select dag_id, run_id, task_id from drill_runs where server = '{server}' "
        f"and recorded_at > '{since.isoformat()}'"
    )
    for dag_id, run_id, task_id in rows:
        report.problems.append(f"{name}: {server} ran {dag_id} {run_id} {task_id}")
    report.steps[name] = (
        f"{server}'s Airflow answering {(answering - started).total_seconds():.0f} s after podman start, every DAG "
        f"decided after {(decided_at - started).total_seconds():.0f} s: "
        + ", ".join(f"{count} {what}" for what, count in counts.items())
        + f" (published: serial {expected}); {len(rows)} rows by {server}"
    )
    log(f"{name}: {report.steps[name]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=60, help="seconds of runs before the first step")
    parser.add_argument("--no-source", action="store_true", help="skip the unreachable and garbage source step")
    parser.add_argument("--no-force", action="store_true", help="skip the crash, forced failover and restarts")
    args = parser.parse_args()
    started = time.monotonic()
    report = run_drill(args.settle, not args.no_force, not args.no_source)
    for line in report.lines():
        print(line)
    print(f"drill took {time.monotonic() - started:.0f} s: {'PASSED' if report.ok else 'FAILED'}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
