"""The watchdog drill on the local demo with serve publishing and the watchdog (scripts/demo.sh --watchdog must be
up; run as root).

    .venv/bin/python tests/drill/watchdog_drill.py [--settle 60] [--scenarios crash,cut,scheduler,isolated]

The drill DAGs of tests/drill/drill.py (``drill_a`` and ``drill_mixed`` owned by server-1, ``drill_b`` by server-2)
run every minute on both servers; each task that runs writes one row into ``drill_runs`` of the work database. The
confirming source (``airflow-placement serve`` on the publisher container) records each server's confirmations and
the watchdog (``airflow-placement watch``, demo/watchdog.sh, its lines in .cache/demo/watchdog.log) moves a failed
server's DAGs and, with the demo's ``restore: true``, gives them back once it is healthy again. No step of the
drill publishes anything: every move is the watchdog's.

Scenarios, each a failure of server-1 followed by its recovery (back, and its DAGs given back by the watchdog: its
first row of ``drill_a`` after the handover back) before the next:

1. ``crash``: ``podman stop --time 0 server-1`` (once its runs of a tick are done); started again once the watchdog
   has moved its DAGs and server-2 has run one of them.
2. ``cut``: server-1 cut off from the source and the watchdog, still reaching the work database: blackhole routes
   in its network namespace to the publisher and to this machine (the demo network's gateway, 10.213.0.1: the
   watchdog's health checks reach server-1 through its UI port on 127.0.0.1, which Podman forwards from there).
   Removed once server-2 has run one of its DAGs.
3. ``scheduler``: only server-1's Airflow scheduler stopped (``podman stop`` of its container inside server-1),
   started again once server-2 has run one of its DAGs.
4. ``isolated``: the watchdog cut off from every server and the source (blackhole routes to this machine in the
   servers and the publisher) for longer than its grace: it must publish nothing. Restored servers first, then the
   publisher (so that it never sees the source and a server still cut off at once).

Each failure: the watchdog's lines from it on (the moves, re-runs and listings: no person acts), the time from the
failure to server-2's first row of a server-1 DAG (a scheduled run or a re-run), and at the end every minute tick of
every drill DAG checked in the work database: one row per task, or none when the watchdog listed that run as
unprovable (dated between the failure and the proven stop: the failed server may or may not have run it). Two rows
are a duplicate; no row and not listed is a lost run.

Prints the figures one line each, problems named; exits 1 on any. ``run_watchdog_drill()`` returns them for
tests/drill/test_watchdog_drill.py.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import drill  # the file-publishing drill: its API client, work-database reading and checks
from airflow_placement.document import Placement
from airflow_placement.publish import Publisher
from drill import DAGS, TASKS, Api, log, minute, next_tick, parse_time, psql, sleep_until

REPO = drill.REPO
INVENTORY = REPO / "inventory" / "local-watchdog"
LOGS = REPO / ".cache" / "demo"
WATCHDOG_LOG = LOGS / "watchdog.log"  # demo/watchdog.sh: each line of airflow-placement watch, UTC time first
WATCHDOG_CONFIG = LOGS / "watchdog" / "watch.yaml"  # ansible/watchdog.yml wrote it
PUBLISHER = "publisher"  # the container of the confirming source
GATEWAY = "10.213.0.1"  # this machine on the demo network, where the watchdog runs
SCENARIOS = ("crash", "cut", "scheduler", "isolated")
OWN = ("drill_a", "drill_mixed")  # server-1's DAGs (host_vars, and the catch-all)
LINE = re.compile(r"^(\S+Z) (watch.*)$")
LISTED = re.compile(r"(\w+) \(\d+ task instances dated (\S+)(?: \.\. (\S+))?\): airflow tasks clear")


def watch_config() -> dict[str, Any]:
    """The watchdog's configuration, as ansible/watchdog.yml wrote it."""
    return dict(yaml.safe_load(WATCHDOG_CONFIG.read_text())) if WATCHDOG_CONFIG.exists() else {}


@dataclass
class Scenario:
    name: str
    failed_at: datetime | None = None
    first_row: float | None = None  # seconds from the failure to server-2's first row of a server-1 DAG
    first_row_what: str = ""
    recovered: float | None = None  # seconds from the failure to server-1's first drill_a row after the give-back
    actions: list[str] = field(default_factory=list)  # the watchdog's lines from the failure to the recovery
    note: str = ""


@dataclass
class Report:
    scenarios: list[Scenario] = field(default_factory=list)
    runs_checked: int = 0
    rows: int = 0
    duplicates: int = 0
    lost: int = 0
    listed: int = 0  # task runs with no row, listed by the watchdog as unprovable
    reruns: int = 0  # task runs of server-1's DAGs that server-2 ran after they were due (the watchdog's re-runs)
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.duplicates == 0 and self.lost == 0

    def lines(self) -> list[str]:
        out = [
            f"runs checked:  {self.runs_checked} task runs (minute ticks x DAGs x {len(TASKS)} tasks)",
            f"duplicates:    {self.duplicates} (work database: {self.rows} rows in all)",
            f"lost runs:     {self.lost}",
            f"listed:        {self.listed} task runs not run, listed by the watchdog as unprovable (with the command)",
            f"re-run:        {self.reruns} task runs of server-1's DAGs run by server-2 after they were due",
        ]
        for s in self.scenarios:
            out.append(
                f"{s.name}: failed at {s.failed_at:%H:%M:%S}; server-2's first row of a server-1 DAG "
                f"{_seconds(s.first_row)} after ({s.first_row_what}); server-1 back with its DAGs "
                f"{_seconds(s.recovered)} after{'; ' + s.note if s.note else ''}"
                if s.failed_at is not None
                else f"{s.name}: {s.note}"
            )
            out += [f"{s.name}: watchdog: {action}" for action in s.actions]
        out.append(f"drill duration: {_seconds(self.seconds)}")
        out += [f"problem: {problem}" for problem in self.problems]
        return out


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} s"


@contextmanager
def local_watchdog() -> Iterator[None]:
    """drill.py's helpers pointed at inventory/local-watchdog (its secrets, state and documents), and back."""
    names = {
        "INVENTORY": INVENTORY,
        "SECRETS": INVENTORY / ".secrets",
        "PUBLISHER_DIR": INVENTORY / ".placement",
        "RENDERED": INVENTORY / ".rendered" / "airflow-dag-on-server.yaml",
        "MOVES": INVENTORY / "group_vars" / "all" / "dag_placement_moves.yml",
        "wait_renewal": wait_watching,  # nothing to renew with serve: wait for the watchdog instead
        "published": published,
    }
    saved = {name: getattr(drill, name) for name in names}
    saved_login = Api.login
    for name, value in names.items():
        setattr(drill, name, value)
    Api.login = _login  # type: ignore[method-assign]
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(drill, name, value)
        Api.login = saved_login  # type: ignore[method-assign]


def _login(self: Api) -> str:
    """Both servers' admin password is one file here (the watchdog re-runs with it)."""
    if self.token is None:
        password = (INVENTORY / ".secrets" / "airflow_compose" / "admin_password").read_text().strip()
        status, answer = self._send("POST", "/auth/token", {"username": "admin", "password": password}, False)
        if status not in (200, 201):
            raise RuntimeError(f"{self.server}: /auth/token answered {status}: {answer}")
        self.token = answer["access_token"]
    return str(self.token)


def published() -> Placement:
    """The publisher's last published document (the source serves it)."""
    document = Publisher(INVENTORY / ".placement").published()
    if document is None:
        raise RuntimeError(f"nothing published in {INVENTORY / '.placement'}")
    return document


def watchdog_lines(since: datetime, until: datetime | None = None) -> list[tuple[datetime, str]]:
    """The watchdog's lines logged at ``since`` or later (and before ``until``)."""
    found = []
    text = WATCHDOG_LOG.read_text() if WATCHDOG_LOG.exists() else ""
    for line in text.splitlines():
        if matched := LINE.match(line):
            when = parse_time(matched.group(1))
            if when >= since.replace(microsecond=0) and (until is None or when < until):
                found.append((when, matched.group(2)))
    return found


def wait_watching(timeout: float = 120) -> None:
    """Until the watchdog says it sees a majority (its first line); demo/watchdog.sh must be running (its log
    outlives a demo)."""
    pid = (LOGS / "watchdog.pid").read_text().strip() if (LOGS / "watchdog.pid").exists() else ""
    if not pid or not Path(f"/proc/{pid}").exists():
        raise RuntimeError(f"demo/watchdog.sh is not running ({LOGS / 'watchdog.pid'}): scripts/demo.sh --watchdog")
    deadline = time.monotonic() + timeout
    while not any("a majority, watching" in text for _, text in watchdog_lines(datetime.min.replace(tzinfo=UTC))):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the watchdog is not watching after {timeout:.0f} s: is demo/watchdog.sh running? ({WATCHDOG_LOG})"
            )
        time.sleep(2)


def wait_line(pattern: str, since: datetime, timeout: float) -> tuple[datetime, str]:
    deadline = time.monotonic() + timeout
    while True:
        for when, text in watchdog_lines(since):
            if re.search(pattern, text):
                return when, text
        if time.monotonic() > deadline:
            raise RuntimeError(f"no watchdog line matching {pattern!r} within {timeout:.0f} s of {since:%H:%M:%S}")
        time.sleep(2)


# --- failures ----------------------------------------------------------------------------------------------------


def netns(container: str) -> str:
    result = subprocess.run(
        ["podman", "inspect", "--format", "{{.State.Pid}}", container], check=True, capture_output=True, text=True
    )
    return result.stdout.strip()


def route(container: str, action: str, address: str) -> None:
    """``ip route add|del blackhole ADDRESS/32`` in ``container``'s network namespace (from this machine)."""
    subprocess.run(
        ["nsenter", "-t", netns(container), "-n", "ip", "route", action, "blackhole", f"{address}/32"],
        check=action == "add",
        capture_output=True,
    )


def scheduler_container() -> str:
    names = drill.on_server("server-1", "podman", "ps", "--all", "--format", "{{.Names}}").split()
    found = [name for name in names if "scheduler" in name]
    if len(found) != 1:
        raise RuntimeError(f"server-1: no single scheduler container among {names}")
    return found[0]


def wait_tick_done(api: Api, tick: datetime) -> None:
    """Until server-1's runs of ``tick`` are done (a failure mid-task is Airflow's business, not the placement's)."""
    deadline = time.monotonic() + 180
    while True:
        states = drill.collect({"server-1": api}, tick, tick)["server-1"]
        if all(len(states.get((dag_id, tick.isoformat()), {})) == 1 + len(TASKS) for dag_id in DAGS):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"server-1: the runs of {tick:%H:%M} not done within 180 s")
        time.sleep(2)


def first_moved_row(after: datetime, timeout: float = 600) -> tuple[datetime, str]:
    """server-2's first row of a server-1 DAG recorded after ``after``, and what it was."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = psql(
            "select recorded_at, dag_id, logical_date from drill_runs where server = 'server-2' and dag_id in "
            f"({', '.join(repr(d) for d in OWN)}) and recorded_at > '{after.isoformat()}' "
            f"and logical_date >= '{minute(after).isoformat()}' order by recorded_at limit 1"
        )
        if rows:
            recorded, dag_id, logical = rows[0]
            when, due = parse_time(recorded), parse_time(logical)
            kind = "a re-run" if (when - due).total_seconds() > 90 else "its scheduled run"
            return when, f"{dag_id} {due:%H:%M}, {kind}"
        time.sleep(2)
    raise RuntimeError(f"server-2 ran none of server-1's DAGs within {timeout:.0f} s of {after:%H:%M:%S}")


def wait_restored(scenario: Scenario, failed: datetime) -> None:
    """Until the watchdog gave server-1's DAGs back and server-1 ran drill_a again after the handover."""
    _, text = wait_line(r"server-1 healthy for .*handover back", failed, 900)
    moves = drill.moves()
    back = [m for m in moves if m.get("restored") == "server-1" and m.get("at")]
    if not back:
        raise RuntimeError(f"the watchdog gave server-1's DAGs back ({text}) but recorded no handover time")
    at = parse_time(back[-1]["at"])
    first = drill.wait_first_row("drill_a", "server-1", failed, 300, logical=(at, at + timedelta(days=1)))
    scenario.recovered = (first - failed).total_seconds()
    log(f"server-1 has its DAGs back: handover at {at:%H:%M:%S}, its first drill_a row at {first:%H:%M:%S}")


def failure(
    report: Report,
    apis: dict[str, Api],
    name: str,
    fail: Callable[[], None],
    recover: Callable[[], None],
) -> Scenario:
    scenario = Scenario(name)
    report.scenarios.append(scenario)
    tick = minute(datetime.now(UTC)) + timedelta(minutes=1)
    sleep_until(tick)
    wait_tick_done(apis["server-1"], tick)
    failed = datetime.now(UTC)
    scenario.failed_at = failed
    fail()
    first, what = first_moved_row(failed)
    scenario.first_row = (first - failed).total_seconds()
    scenario.first_row_what = what
    log(f"{name}: server-2 ran {what} {scenario.first_row:.0f} s after the failure; recovering server-1")
    recover()
    wait_restored(scenario, failed)
    scenario.actions = [f"{when:%H:%M:%S} {text}" for when, text in watchdog_lines(failed)]
    for action in scenario.actions:
        log(f"{name}: {action}")
    if not any("published serial" in a and "server-1" in a for a in scenario.actions):
        report.problems.append(f"{name}: the watchdog published no move of server-1's DAGs")
    return scenario


def crash(report: Report, apis: dict[str, Api]) -> None:
    def fail() -> None:
        log("crash: podman stop --time 0 server-1")
        subprocess.run(["podman", "stop", "--time", "0", "server-1"], check=True, capture_output=True)

    def recover() -> None:
        log("crash: podman start server-1")
        subprocess.run(["podman", "start", "server-1"], check=True, capture_output=True)

    failure(report, apis, "crash", fail, recover)


def publisher_address() -> str:
    """The publisher's address, from the source's URL in the watchdog's configuration."""
    return re.sub(r"^https://([^:/]+).*$", r"\1", str(watch_config().get("source", "")))


def cut(report: Report, apis: dict[str, Api]) -> None:
    publisher_ip = publisher_address()

    def fail() -> None:
        log(f"cut: blackhole routes in server-1 to the publisher ({publisher_ip}) and this machine ({GATEWAY})")
        for address in (publisher_ip, GATEWAY):
            route("server-1", "add", address)

    def recover() -> None:
        log("cut: routes removed")
        for address in (publisher_ip, GATEWAY):
            route("server-1", "del", address)

    failure(report, apis, "cut", fail, recover)
    # While cut off, server-1 still reached the work database: it ran its DAGs from its last copy until that
    # expired (rows by server-1 recorded after the cut).
    scenario = report.scenarios[-1]
    assert scenario.failed_at is not None
    after = psql(
        "select count(*) from drill_runs where server = 'server-1' "
        f"and recorded_at > '{(scenario.failed_at + timedelta(seconds=2)).isoformat()}' "
        f"and recorded_at < '{(scenario.failed_at + timedelta(seconds=drill.MAX_STALENESS + 30)).isoformat()}'"
    )
    scenario.note = f"{after[0][0]} rows by server-1 (still reaching the work database) in the lease after the cut"


def scheduler(report: Report, apis: dict[str, Api]) -> None:
    container = scheduler_container()

    def fail() -> None:
        log(f"scheduler: podman stop {container} inside server-1")
        drill.on_server("server-1", "podman", "stop", container)

    def recover() -> None:
        log(f"scheduler: podman start {container} inside server-1")
        drill.on_server("server-1", "podman", "start", container)

    failure(report, apis, "scheduler", fail, recover)


def isolated(report: Report, grace: float) -> None:
    """The watchdog cut off from every server and the source for longer than its grace: nothing published."""
    scenario = Scenario("isolated")
    report.scenarios.append(scenario)
    before = published().meta
    hold = grace + 40
    start = datetime.now(UTC)
    log(f"isolated: blackhole routes to this machine ({GATEWAY}) in both servers and the publisher for {hold:.0f} s")
    containers = ["server-1", "server-2", PUBLISHER]
    try:
        for container in containers:
            route(container, "add", GATEWAY)
        time.sleep(hold)
    finally:
        for container in containers:  # the servers first: never the source and a server still cut off at once
            route(container, "del", GATEWAY)
    end = datetime.now(UTC)
    time.sleep(30)  # a few cycles with everything in sight again
    after = published().meta
    lines = watchdog_lines(start)
    scenario.actions = [f"{when:%H:%M:%S} {text}" for when, text in lines]
    published_lines = [text for _, text in lines if "published serial" in text or "uploaded serial" in text]
    said = any("no majority" in text for when, text in lines if when <= end)
    if before is None or after is None or after.serial != before.serial or published_lines:
        report.problems.append(
            f"isolated: the watchdog published while cut off (serial {before and before.serial} -> "
            f"{after and after.serial}): {published_lines}"
        )
    if not said:
        report.problems.append("isolated: the watchdog never said it saw no majority")
    scenario.note = (
        f"cut off {(end - start).total_seconds():.0f} s (grace {grace:g} s): serial {before and before.serial} before, "
        f"{after and after.serial} after; {'said it is the one cut off' if said else 'said nothing'}; "
        f"{len(published_lines)} publishes"
    )
    log(f"isolated: {scenario.note}")


# --- the check ---------------------------------------------------------------------------------------------------


def listed_runs(since: datetime) -> set[tuple[str, datetime]]:
    """(dag_id, minute tick) the watchdog listed as unprovable (may or may not have run on the failed server)."""
    found = set()
    for _, text in watchdog_lines(since):
        if "may or may not have run there" not in text:
            continue
        for dag_id, first, last in LISTED.findall(text):
            tick, end = parse_time(first), parse_time(last or first)
            while tick <= end:
                found.add((dag_id, tick))
                tick += timedelta(minutes=1)
    return found


def check(report: Report, since: datetime, until: datetime) -> None:
    """Every minute tick of every drill DAG in [since, until]: one row per task, or none and listed."""
    rows: dict[tuple[str, datetime, str], list[tuple[str, datetime]]] = {}
    for dag_id, logical, task_id, server, recorded in psql(
        "select dag_id, logical_date, task_id, server, recorded_at from drill_runs where logical_date = "
        f"date_trunc('minute', logical_date) and logical_date >= '{since.isoformat()}' "
        f"and logical_date <= '{until.isoformat()}'"
    ):
        rows.setdefault((dag_id, parse_time(logical), task_id), []).append((server, parse_time(recorded)))
    listed = listed_runs(since)
    tick = next_tick(since)
    while tick <= until:
        for dag_id in DAGS:
            for task_id in TASKS:
                report.runs_checked += 1
                written = rows.get((dag_id, tick, task_id), [])
                if len(written) > 1:
                    report.duplicates += len(written) - 1
                    report.problems.append(f"{dag_id} {tick:%H:%M} {task_id}: run {len(written)} times: {written}")
                elif not written and (dag_id, tick) in listed:
                    report.listed += 1
                elif not written:
                    report.lost += 1
                    report.problems.append(f"{dag_id} {tick:%H:%M} {task_id}: no row, not listed by the watchdog")
                elif dag_id in OWN and written[0][0] == "server-2" and written[0][1] > tick + timedelta(seconds=90):
                    report.reruns += 1
        tick += timedelta(minutes=1)


# --- the drill ---------------------------------------------------------------------------------------------------


def run_watchdog_drill(settle: float = 60, scenarios: tuple[str, ...] = SCENARIOS) -> Report:
    report = Report()
    started = time.monotonic()
    if not WATCHDOG_CONFIG.exists():
        raise RuntimeError(f"{WATCHDOG_CONFIG} is missing: bring the demo up with scripts/demo.sh --watchdog")
    with local_watchdog():
        apis = {server: Api(server) for server in drill.SERVERS}
        try:
            drill.setup(apis)
            since = minute(datetime.now(UTC)) + timedelta(minutes=1)
            log(f"letting runs come for {settle:.0f} s")
            time.sleep(settle)
            steps: dict[str, Callable[[], None]] = {
                "crash": lambda: crash(report, apis),
                "cut": lambda: cut(report, apis),
                "scheduler": lambda: scheduler(report, apis),
                "isolated": lambda: isolated(report, float(watch_config().get("grace", 60))),
            }
            for name in scenarios:
                try:
                    steps[name]()
                except RuntimeError as exc:
                    report.problems.append(f"{name}: {exc}")
                    log(f"{name}: stopped: {exc}")
                    break
            until = minute(datetime.now(UTC))
            sleep_until(until + timedelta(seconds=50))
            with suppress(RuntimeError):
                drill.collect(apis, since, until)
            check(report, since, until)
        finally:  # whatever stopped the drill: server-1 and its scheduler running, every route open
            subprocess.run(["podman", "start", "server-1"], check=False, capture_output=True)
            with suppress(RuntimeError, subprocess.CalledProcessError):
                drill.on_server("server-1", "podman", "start", scheduler_container())
            for container in ("server-1", "server-2", PUBLISHER):
                for address in (GATEWAY, publisher_address()):
                    with suppress(subprocess.CalledProcessError):
                        route(container, "del", address)
            drill.pause(apis)
    report.rows = int(psql("select count(*) from drill_runs")[0][0])
    report.seconds = time.monotonic() - started
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=60, help="seconds of runs before the first scenario")
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, in order (default {','.join(SCENARIOS)})"
    )
    args = parser.parse_args()
    chosen = tuple(name for name in args.scenarios.split(",") if name)
    if unknown := [name for name in chosen if name not in SCENARIOS]:
        parser.error(f"unknown scenario {unknown[0]!r} (known: {', '.join(SCENARIOS)})")
    report = run_watchdog_drill(args.settle, chosen)
    for line in report.lines():
        print(line)
    print(f"watchdog drill took {report.seconds:.0f} s: {'PASSED' if report.ok else 'FAILED'}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
