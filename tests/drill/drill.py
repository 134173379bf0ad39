"""The failover drill on the local two-server demo (scripts/demo.sh must be up; run as root).

    .venv/bin/python tests/drill/drill.py [--settle 180] [--no-force]

1. Creates the ``drill_runs`` table in the work database and the ``drill_work_db`` connection on both servers,
   then unpauses ``drill_a`` (server-1) and ``drill_b`` (server-2) on both servers (every minute, two tasks, each
   inserting one row per run, task and server).
2. Scheduled failover: ``failover.yml -e failed=server-1`` while runs keep coming; measures the time from starting
   it to the first ``drill_a`` row written by server-2. Then ``-e restore=server-1`` and waits for server-1 to run
   ``drill_a`` again.
3. Checks every run so far: exactly one row per (DAG, run, task), written by the owner the published document
   gives for its logical date, the task ``success`` there and ``skipped`` on the other server; none missing.
4. Forced failover with a re-run (unless ``--no-force``): ``podman stop server-1`` (a crash) 20 s after a tick, two
   ``drill_a`` runs go by (skipped on server-2: server-1 owns them), then ``failover.yml -e failed=server-1
   -e force=true -e rerun_since=<the crash>``: the move is dated back to the crash and server-2 re-runs those two.
   Checks that each ran exactly once, on server-2, and every later run too; measures the time to server-2's first
   ``drill_a`` row (a re-run) and to its first scheduled one. server-1 stays stopped (scripts/demo.sh restarts it).
5. (unless ``--no-source``) server-2's placement source broken, right after a task's gate confirmed its copy at a
   minute tick: moved away, then serving garbage. That tick's later gate reads decide from the last good copy
   (younger than the maximum staleness, 30 s), the next tick's refuse (skipped, no row); the task logs say which.

Prints runs checked, duplicates (must be 0), lost runs (must be 0), the failover times, the re-run counts and the
fallback evidence; exits 1 on a failure.
``run_drill()`` returns the same figures for tests/drill/test_drill.py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from airflow_placement.document import Placement, parse_document

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / "inventory" / "local"
SECRETS = INVENTORY / ".secrets"
DOCUMENT = INVENTORY / ".rendered" / "airflow-dag-on-server.yaml"
SERVERS = {"server-1": 8081, "server-2": 8082}
DAGS = ("drill_a", "drill_b")
TASKS = ("first", "second")
WORK_DB = "airflow-placement-work-db"
WORK_DB_ADDRESS = "10.213.0.10"
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


def log(message: str) -> None:
    print(f"{datetime.now(UTC):%H:%M:%S} drill: {message}", flush=True)


class Api:
    """Airflow's REST API v2 of one server, through the demo's published UI port, with a JWT from /auth/token."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.base = f"http://127.0.0.1:{SERVERS[server]}"
        self.token: str | None = None

    def _send(self, method: str, path: str, body: Any = None, auth: bool = True) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.login()}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
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
        status, answer = self._send(method, path, body)
        if status == 401:  # the token expired
            self.token = None
            status, answer = self._send(method, path, body)
        if status not in ok:
            raise RuntimeError(f"{self.server}: {method} {path} answered {status}: {answer}")
        return answer

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


def psql(sql: str) -> list[list[str]]:
    """Rows of a query on the work database, through the database container's local socket."""
    result = subprocess.run(
        ["podman", "exec", WORK_DB, "psql", "-X", "-q", "-At", "-F", "\t", "-U", "work", "-d", "work", "-c", sql],
        check=True,
        capture_output=True,
        text=True,
    )
    return [line.split("\t") for line in result.stdout.splitlines() if line]


def playbook(*extra: str) -> tuple[float, str]:
    """Run failover.yml with ``extra``; its duration and output."""
    start = time.monotonic()
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(REPO / "ansible" / "roles"), "ANSIBLE_FORCE_COLOR": "0"}
    command = [str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", str(INVENTORY), "ansible/failover.yml"]
    result = subprocess.run([*command, *extra], check=False, cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"failover.yml {' '.join(extra)} failed:\n{result.stdout[-3000:]}{result.stderr[-2000:]}")
    return time.monotonic() - start, result.stdout


def last_move_at() -> datetime:
    """The handover time T of the last move failover.yml recorded."""
    moves = yaml.safe_load((INVENTORY / "group_vars" / "all" / "dag_placement_moves.yml").read_text())
    return parse_time(moves["dag_placement_moves"][-1]["at"])


def placement() -> Placement:
    return parse_document(DOCUMENT.read_bytes(), str(DOCUMENT))


def owner(document: Placement, dag_id: str, task_id: str, when: datetime) -> str:
    entry = document.entry_for(dag_id)
    if entry is None:
        raise RuntimeError(f"{dag_id} has no owner in {DOCUMENT}")
    return entry.schedule_for(task_id)[0].owner_at(when)


def minute(when: datetime) -> datetime:
    return when.replace(second=0, microsecond=0)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T"))


@dataclass
class Report:
    runs_checked: int = 0
    duplicates: int = 0
    lost: int = 0
    missed_by_crashed: int = 0
    failover_seconds: float | None = None
    failover_playbook_seconds: float | None = None
    handover_seconds: float | None = None
    forced_failover_seconds: float | None = None
    rerun_seconds: float | None = None
    forced_playbook_seconds: float | None = None
    rerun_cleared: int | None = None
    rerun_runs: int = 0
    rerun_once: int = 0
    source_steps: list[str] = field(default_factory=list)
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.duplicates == 0 and self.lost == 0

    def lines(self) -> list[str]:
        out = [
            f"runs checked:  {self.runs_checked} (DAG runs; each with {len(TASKS)} tasks on {len(SERVERS)} servers)",
            f"duplicates:    {self.duplicates}",
            f"lost runs:     {self.lost}",
            f"failover time: {_seconds(self.failover_seconds)} from starting failover.yml to server-2's first "
            f"drill_a row (playbook {_seconds(self.failover_playbook_seconds)}, handover time T at "
            f"{_seconds(self.handover_seconds)}, then the next minute tick)",
        ]
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
        out.append(f"drill duration: {_seconds(self.seconds)}")
        out += [f"problem: {problem}" for problem in self.problems]
        return out


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} s"


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
                    if ti["state"] not in ("success", "skipped", "failed", "upstream_failed"):
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
    """Check every minute tick of both DAGs with a logical date in [since, until] against ``document``.

    ``crashed``: a server stopped as a crash. Runs the document still gives it (logical date before the forced
    failover's rerun_since) it may have run before it crashed, or not (counted as missed); the survivors must have
    skipped them. Every other run must have run exactly once, on its owner.
    """
    states = collect(apis, since, until)
    rows = rows_by_run()
    tick = minute(since) + (timedelta(minutes=1) if since != minute(since) else timedelta())
    while tick <= until:
        for dag_id in DAGS:
            report.runs_checked += 1
            key = (dag_id, tick.isoformat())
            run_ids = {states[s][key]["run_id"] for s in states if key in states[s]}
            if not run_ids:
                report.lost += 1
                report.problems.append(f"{dag_id} {tick:%H:%M}: no run on any server")
                continue
            run_id = run_ids.pop()
            for task_id in TASKS:
                expected = owner(document, dag_id, task_id, tick)
                missed = expected == crashed
                written = rows.get((dag_id, run_id, task_id), [])
                label = f"{dag_id} {run_id} {task_id}"
                if len(written) > 1:
                    report.duplicates += len(written) - 1
                    report.problems.append(f"{label}: executed {len(written)} times, by {written}")
                if missed:
                    if written and written[0] != expected:
                        report.problems.append(f"{label}: run by {written[0]}, owner {expected} (crashed)")
                    elif not written and task_id == TASKS[0]:
                        report.missed_by_crashed += 1
                elif not written:
                    report.lost += 1
                    report.problems.append(f"{label}: no row (owner {expected})")
                elif written[0] != expected:
                    report.problems.append(f"{label}: run by {written[0]}, owner {expected}")
                for server, by_run in states.items():
                    state = by_run.get(key, {}).get(task_id)
                    want = "skipped" if missed or server != expected else "success"
                    if state != want:
                        report.problems.append(f"{label}: {state} on {server}, expected {want}")
        tick += timedelta(minutes=1)


def setup(apis: dict[str, Api]) -> None:
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
                    raise RuntimeError(f"{server}: {dag_id} not parsed after 180 s (deployed by site.yml?)")
                time.sleep(5)
            api.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
    log("drill_a and drill_b unpaused on both servers")


def pause(apis: dict[str, Api]) -> None:
    for api in apis.values():
        for dag_id in DAGS:
            api._send("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": True})


def sleep_until(when: datetime) -> None:
    delay = (when - datetime.now(UTC)).total_seconds()
    if delay > 0:
        time.sleep(delay)


def run_drill(settle: float = 180, force: bool = True, source: bool = True) -> Report:
    report = Report()
    started = time.monotonic()
    apis = {server: Api(server) for server in SERVERS}
    setup(apis)
    start = datetime.now(UTC)
    # The first tick after unpausing may be the run that was due when unpausing (catchup off); skip it.
    since = minute(start) + timedelta(minutes=1)
    log(f"letting runs come for {settle:.0f} s")
    time.sleep(settle)

    log("scheduled failover: failover.yml -e failed=server-1")
    failover_start = datetime.now(UTC)
    report.failover_playbook_seconds, _ = playbook("-e", "failed=server-1")
    report.handover_seconds = (last_move_at() - failover_start).total_seconds()
    first = wait_first_row("drill_a", "server-2", failover_start, 300)
    report.failover_seconds = (first - failover_start).total_seconds()
    log(f"server-2 ran drill_a {report.failover_seconds:.0f} s after starting failover.yml")
    sleep_until(first + timedelta(seconds=70))

    log("restore: failover.yml -e restore=server-1")
    restore_start = datetime.now(UTC)
    playbook("-e", "restore=server-1")
    back = wait_first_row("drill_a", "server-1", restore_start, 300)
    log(f"server-1 ran drill_a again {(back - restore_start).total_seconds():.0f} s after starting the restore")
    until = minute(back)
    check(report, apis, placement(), since, until)
    log(f"checked the runs up to {until:%H:%M}: {report.runs_checked} runs")
    if not force:
        pause(apis)
        report.seconds = time.monotonic() - started
        return report

    forced_step(report, apis, until)
    if source:
        for mode in ("unreachable", "garbage"):
            source_step(report, apis["server-2"], mode)
    pause({"server-2": apis["server-2"]})
    report.seconds = time.monotonic() - started
    return report


def forced_step(report: Report, apis: dict[str, Api], checked_until: datetime) -> None:
    """Crash server-1 20 s after a tick, let two of its drill_a runs go by (skipped on server-2: server-1 owns
    them), then fail over with force and rerun_since = the crash: server-2 must run those two exactly once, and
    every later run."""
    sleep_until(minute(datetime.now(UTC)) + timedelta(minutes=1, seconds=20))
    crash = datetime.now(UTC)
    log("crash: podman stop --time 0 server-1; two drill_a runs go by before the failover")
    subprocess.run(["podman", "stop", "--time", "0", "server-1"], check=True, capture_output=True)
    sleep_until(minute(crash) + timedelta(minutes=2, seconds=20))
    rerun_since = crash.replace(microsecond=0) + timedelta(seconds=1)  # the playbook rounds up to a second
    log(f"failover.yml -e failed=server-1 -e force=true -e rerun_since={rerun_since:%Y-%m-%dT%H:%M:%SZ}")
    forced_start = datetime.now(UTC)
    report.forced_playbook_seconds, output = playbook(
        "-e", "failed=server-1", "-e", "force=true", "-e", f"rerun_since={rerun_since:%Y-%m-%dT%H:%M:%SZ}"
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
    document = placement()
    check(
        report, {"server-2": apis["server-2"]}, document, checked_until + timedelta(seconds=1), end, crashed="server-1"
    )
    # The runs the dead server missed: drill_a ticks from rerun_since up to the failover, each re-run once.
    rows = rows_by_run()
    states = collect({"server-2": apis["server-2"]}, rerun_since, forced_start)["server-2"]
    tick = minute(rerun_since) + timedelta(minutes=1)
    while tick < forced_start:
        report.rerun_runs += 1
        run = states.get(("drill_a", tick.isoformat()), {})
        written = [rows.get(("drill_a", run.get("run_id", ""), task_id), []) for task_id in TASKS]
        if all(servers == ["server-2"] for servers in written):
            report.rerun_once += 1
        else:
            report.problems.append(f"missed run drill_a {tick:%H:%M} after the re-run: rows {written}")
        tick += timedelta(minutes=1)
    log(f"crashed at {crash:%H:%M:%S}; checked up to {end:%H:%M}; re-run {report.rerun_once}/{report.rerun_runs}")


SERVER_DOCUMENT = "/opt/airflow-placement/airflow-dag-on-server.yaml"
SERVER_CACHE = "/opt/airflow-compose/placement-cache"  # the tasks' [placement] cache_dir, as the server sees it
# Run on the server (python3 -c SCRIPT TICK): wait for the first confirmation of its cached copy at or after TICK
# (a task's gate read the source), then break the source at once; prints the confirmation and the break times.
WATCH_AND_BREAK = """
import glob, json, os, sys, time
tick, deadline = float(sys.argv[1]), time.time() + 120
while time.time() < deadline:
    for path in glob.glob("{cache}/*.json"):
        try:
            entry = json.load(open(path))
        except (OSError, ValueError):
            continue
        if entry.get("confirmed_at", 0) >= tick and entry.get("source") == "{document}":
            if "{mode}" == "unreachable":
                os.rename("{document}", "{good}")
            else:
                os.link("{document}", "{good}")
                open("{document}.tmp", "w").write("owner: [\\n<html>garbage")
                os.rename("{document}.tmp", "{document}")
            print(entry["confirmed_at"], time.time())
            sys.exit(0)
    time.sleep(0.2)
sys.exit("no gate read the placement document within 120 s of the tick")
"""
MAX_STALENESS = 30  # inventory/local/group_vars/all/placement.yml: placement_max_staleness_seconds
TTL = 5  # placement_ttl_seconds
FALLBACK = re.compile(r"using the copy confirmed (\d+) s ago")
REFUSE = re.compile(r"decision=refuse .*the last good copy is (\d+) s old")


def on_server(server: str, script: str) -> None:
    subprocess.run(["podman", "exec", server, "sh", "-c", script], check=True, capture_output=True)


def source_step(report: Report, api: Api, mode: str) -> None:
    """The placement source of ``api``'s server made unreachable (the file moved away) or serving garbage.

    Broken right after a task's gate confirmed the server's copy at a minute tick (a watcher on the server polls the
    tasks' cache entry). Gate reads past the TTL find the source broken and decide from the last good copy, as long
    as it is younger than the maximum staleness (log: "using the copy confirmed N s ago"): the tick's later tasks,
    and a ``drill_b`` run triggered just after the TTL. The next tick's find it too old and refuse (log:
    "decision=refuse ... N s old": skipped, no row). Then the file is repaired.
    """
    server = api.server
    tick = minute(datetime.now(UTC)) + timedelta(minutes=1)
    sleep_until(tick - timedelta(seconds=5))
    confirmed, broke_at = break_after_gate_read(server, mode, tick)
    broke = datetime.fromtimestamp(broke_at, UTC)
    log(
        f"placement source {mode} on {server}: broken {broke_at - confirmed:.1f} s after a task's gate confirmed "
        f"the copy ({broke:%H:%M:%S})"
    )
    # The tick's own tasks may all read within the TTL of that confirmation (fresh copy, no fallback needed): a run
    # triggered once the TTL is over reads the source again, finds it broken, and has only the last good copy.
    sleep_until(datetime.fromtimestamp(confirmed + TTL + 1, UTC))
    api.call("POST", "/api/v2/dags/drill_b/dagRuns", {"logical_date": datetime.now(UTC).isoformat()})
    sleep_until(tick + timedelta(minutes=1, seconds=30))
    collect({server: api}, tick, tick + timedelta(minutes=1))
    fallback: list[int] = []
    refused: list[int] = []
    fresh = 0
    rows = rows_by_run()
    for dag_id in DAGS:
        for ti in api.task_instances(dag_id, tick):
            when = parse_time(ti["logical_date"])
            if when > tick + timedelta(minutes=1):
                continue
            written = rows.get((dag_id, ti["dag_run_id"], ti["task_id"]), [])
            label = f"{mode} source: {dag_id} {when:%H:%M} {ti['task_id']}"
            if not ti.get("try_number"):  # skipped with its upstream task: never ran, so never decided
                if ti["state"] != "skipped" or written:
                    report.problems.append(f"{label}: never started, yet {ti['state']}, rows {written}")
                continue
            text = api.task_log(ti)
            if (used := FALLBACK.search(text)) and "decision=run" in text:
                fallback.append(int(used.group(1)))
                if int(used.group(1)) > MAX_STALENESS or ti["state"] != "success" or written != [server]:
                    report.problems.append(
                        f"{label}: last good copy {used.group(1)} s old, {ti['state']}, rows {written}"
                    )
            elif "decision=run" in text and when == tick:  # the read that confirmed the copy, or within its TTL
                fresh += 1
                if ti["state"] != "success" or written != [server]:
                    report.problems.append(f"{label}: decided from a fresh copy, {ti['state']}, rows {written}")
            elif refusal := REFUSE.search(text):
                refused.append(int(refusal.group(1)))
                if int(refusal.group(1)) <= MAX_STALENESS or ti["state"] != "skipped" or written:
                    report.problems.append(f"{label}: refused at {refusal.group(1)} s, {ti['state']}, rows {written}")
            else:
                report.problems.append(f"{label}: {ti['state']}, neither the last good copy nor a refusal in its log")
    late = psql(
        f"select dag_id, run_id, task_id from drill_runs where server = '{server}' "
        f"and recorded_at > '{(broke + timedelta(seconds=MAX_STALENESS + 15)).isoformat()}'"
    )
    for dag_id, run_id, task_id in late:
        report.problems.append(f"{mode} source: {dag_id} {run_id} {task_id} ran on {server} past the staleness")
    if not fallback or not refused:
        report.problems.append(
            f"{mode} source: {len(fallback)} decisions from the last good copy, {len(refused)} refusals"
        )
    repaired = datetime.now(UTC)
    on_server(server, f"mv {SERVER_DOCUMENT}.drill-good {SERVER_DOCUMENT}")
    back = wait_first_row("drill_b", server, repaired, 180)
    summary = (
        f"{mode}: {fresh} task decisions from the fresh copy before the break, "
        f"{len(fallback)} from the last good copy after it ({_ages(fallback)} old, ran), "
        f"{len(refused)} refused ({_ages(refused)} old, skipped), {len(late)} rows past the staleness; "
        f"runs again {(back - repaired).total_seconds():.0f} s after the repair"
    )
    log(f"placement source {summary}")
    report.source_steps.append(summary)


def break_after_gate_read(server: str, mode: str, tick: datetime) -> tuple[float, float]:
    """Break ``server``'s placement source (``mode``) right after a gate confirms its copy at or after ``tick``;
    the times of the confirmation and of the break (epoch seconds, the server's clock)."""
    watcher = WATCH_AND_BREAK.format(
        cache=SERVER_CACHE, document=SERVER_DOCUMENT, good=SERVER_DOCUMENT + ".drill-good", mode=mode
    )
    result = subprocess.run(
        ["podman", "exec", server, "python3", "-c", watcher, str(tick.timestamp())],
        check=True,
        capture_output=True,
        text=True,
    )
    confirmed, broke = (float(value) for value in result.stdout.split())
    return confirmed, broke


def _ages(ages: list[int]) -> str:
    return f"{min(ages)}-{max(ages)} s" if ages else "none"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=180, help="seconds of runs before the failover")
    parser.add_argument("--no-force", action="store_true", help="skip the crash, forced failover and source steps")
    parser.add_argument("--no-source", action="store_true", help="skip the unreachable and garbage source steps")
    args = parser.parse_args()
    started = time.monotonic()
    report = run_drill(args.settle, not args.no_force, not args.no_source)
    for line in report.lines():
        print(line)
    print(f"drill took {time.monotonic() - started:.0f} s: {'PASSED' if report.ok else 'FAILED'}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
