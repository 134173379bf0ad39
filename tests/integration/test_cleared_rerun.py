"""A cleared task decides again when it runs again: real Airflow (tests/integration/dags_cleared_rerun), real Podman.

Airflow 3.3's command line has no way to let a cleared run go on by itself (``airflow dags test`` deletes a run
with the same logical date and starts a new one; ``airflow tasks run`` is gone; the scheduler needs an API server
and an executor), so each task of a cleared run is run again with ``airflow tasks test RUN_ID``: the same task
instance of the same run, with the task process's own parse of the DAG file and so the cluster policy, as a worker
runs it after ``airflow tasks clear``. Airflow's test command keeps the try number where the scheduler would add one;
the gate does not read it.

1. ``airflow dags test`` as server-1 (owner) and as server-2 (not the owner), one logical date each.
2. ``airflow tasks clear`` of both runs; the document now has a handover to server-2 dated after both runs (and
   before today), and each server gets a fresh cache, so the re-run reads it.
3. Each task of each run again with ``airflow tasks test``: on server-1 it runs again (a second line, a second
   container), on server-2 it is skipped again (nothing written, no container); both decide for the run's logical
   date under the current document, not for today.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from airflow_harness import REPO, Airflow

pytestmark = [pytest.mark.airflow, pytest.mark.podman]

DAG_ID = "cleared_rerun"
TASKS = ("write", "container")
OWNER, NOT_OWNER = "server-1", "server-2"
DATES = {OWNER: "2026-11-20T01:00:00+00:00", NOT_OWNER: "2026-11-20T02:00:00+00:00"}
FIRST_DOCUMENT = f"{DAG_ID}: {OWNER}\n"
RERUN_DOCUMENT = f"""{DAG_ID}:
  owner: {OWNER}
  handover:
    - {{at: "2026-11-25T00:00:00Z", owner: {NOT_OWNER}}}
"""
CONTAINER_OUTPUT = "container ran"


@dataclass(frozen=True)
class Attempt:
    """What one server's run of the DAG left, up to the end of a phase (the first run, or the re-run)."""

    writes: list[str]  # lines of write.log: one per run of the TaskFlow task's code
    log: str  # the phase's Airflow output
    states: dict[str, str] = field(default_factory=dict)  # read from Airflow after the re-run
    started: dict[str, datetime | None] = field(default_factory=dict)

    def decisions(self, decision: str, task_id: str) -> int:
        return self.log.count(f"placement: decision={decision} dag={DAG_ID} task={task_id} ")

    def errors(self) -> str:
        """The phase's error lines, for assertion messages."""
        return "\n".join(line for line in self.log.splitlines() if re.search("error|exception", line, re.IGNORECASE))

    def revisions(self) -> set[str]:
        return {part.split("=", 1)[1] for part in self.log.split() if part.startswith("revision=")}


@dataclass(frozen=True)
class Runs:
    first: dict[str, Attempt]
    rerun: dict[str, Attempt]
    cleared_at: datetime


def _writes(out: Path) -> list[str]:
    write_log = out / "write.log"
    return write_log.read_text().splitlines() if write_log.exists() else []


def _date(text: str) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, task_image: str) -> Runs:
    """Both servers' runs, cleared and run again: about a dozen Airflow commands in one Airflow home."""
    home = tmp_path_factory.mktemp("airflow-cleared-rerun")
    airflow = Airflow(
        home=home,
        placement_file=home / "airflow-dag-on-server.yaml",
        dags_folder=REPO / "tests" / "integration" / "dags_cleared_rerun",
    )
    airflow.placement_file.write_text(FIRST_DOCUMENT)
    airflow.check("db", "migrate")  # `airflow dags test` serializes the DAG itself

    def as_server(host: str, phase: str) -> dict[str, str]:
        out = home / f"out-{host}"
        out.mkdir(exist_ok=True)
        return {"CLEARED_RERUN_OUT": str(out), "AIRFLOW__PLACEMENT__CACHE_DIR": str(home / f"cache-{phase}-{host}")}

    first = {}
    for host, logical_date in DATES.items():
        result = airflow.run("dags", "test", DAG_ID, logical_date, host=host, **as_server(host, "first"))
        first[host] = Attempt(writes=_writes(home / f"out-{host}"), log=result.stdout + result.stderr)
    run_ids = {row["logical_date"]: row["run_id"] for row in airflow.json("dags", "list-runs", DAG_ID)}

    cleared_at = datetime.now(UTC)
    airflow.check("tasks", "clear", DAG_ID, "--yes", "--start-date", DATES[OWNER], "--end-date", DATES[NOT_OWNER])
    airflow.placement_file.write_text(RERUN_DOCUMENT)
    rerun = {}
    for host, date in DATES.items():
        log = ""
        for task_id in TASKS:
            result = airflow.run("tasks", "test", DAG_ID, task_id, run_ids[date], host=host, **as_server(host, "rerun"))
            log += result.stdout + result.stderr
        rows = airflow.json("tasks", "states-for-dag-run", DAG_ID, run_ids[date])
        rerun[host] = Attempt(
            writes=_writes(home / f"out-{host}"),
            log=log,
            states={row["task_id"]: row["state"] for row in rows},
            started={
                row["task_id"]: datetime.fromisoformat(row["start_date"]) if row["start_date"] else None for row in rows
            },
        )
    return Runs(first=first, rerun=rerun, cleared_at=cleared_at)


def test_the_first_runs_run_on_the_owner_and_are_skipped_elsewhere(runs: Runs) -> None:
    owner, not_owner = runs.first[OWNER], runs.first[NOT_OWNER]
    assert [owner.decisions("run", task_id) for task_id in TASKS] == [1, 1]
    assert len(owner.writes) == 1
    assert CONTAINER_OUTPUT in owner.log
    assert not_owner.decisions("skip", "write") == 1  # Airflow then skips its downstream container task unstarted
    assert not_owner.writes == []
    assert CONTAINER_OUTPUT not in not_owner.log


@pytest.mark.parametrize("host", DATES)
def test_every_task_ran_again_after_the_clear(runs: Runs, host: str) -> None:
    """The states read after the re-run belong to it, not to the first run."""
    started = runs.rerun[host].started
    assert all(when is not None and when > runs.cleared_at for when in started.values()), started


@pytest.mark.parametrize("task_id", TASKS)
def test_a_cleared_task_on_the_owner_decides_again_and_runs_again(runs: Runs, task_id: str) -> None:
    rerun = runs.rerun[OWNER]
    assert rerun.states[task_id] == "success", rerun.errors()
    assert rerun.decisions("run", task_id) == 1
    assert f"run={rerun.writes[0].split()[0]} host={OWNER} owner={OWNER} " in rerun.log


def test_on_the_owner_the_cleared_tasks_code_runs_a_second_time(runs: Runs) -> None:
    rerun = runs.rerun[OWNER]
    assert len(rerun.writes) == 2, rerun.errors()
    assert rerun.writes[0].split()[0] == rerun.writes[1].split()[0]  # the same run
    assert rerun.log.count(CONTAINER_OUTPUT) == 1, rerun.errors()


@pytest.mark.parametrize("task_id", TASKS)
def test_a_cleared_task_on_a_non_owner_decides_again_and_is_skipped_again(runs: Runs, task_id: str) -> None:
    rerun = runs.rerun[NOT_OWNER]
    assert rerun.states[task_id] == "skipped", rerun.errors()
    assert rerun.decisions("skip", task_id) == 1
    assert f"host={NOT_OWNER} owner={OWNER} " in rerun.log


def test_on_a_non_owner_the_cleared_tasks_code_never_runs(runs: Runs) -> None:
    rerun = runs.rerun[NOT_OWNER]
    assert rerun.writes == []
    assert CONTAINER_OUTPUT not in rerun.log


def test_a_rerun_decides_for_the_runs_date_under_the_current_document(runs: Runs) -> None:
    """The re-runs read the document with the handover (another revision), dated after their runs: unchanged owner."""
    for host in DATES:
        assert runs.rerun[host].revisions().isdisjoint(runs.first[host].revisions())
        assert len(runs.rerun[host].revisions()) == 1
