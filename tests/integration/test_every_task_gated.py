"""Every task is gated, whatever its operator: real `airflow dags test` runs of tests/integration/dags_every_task.

The cluster policy comes from the package's ``airflow.policy`` entry point, as on a server; nothing in the DAG
file knows about the placement document. Each kind of task leaves a file when its own code runs: on the owner every
file is there, on a non-owner (and without a trustworthy document) none is and every task is *skipped*. One Airflow
home and one run per scenario serve every test (the runs take about 10-15 s each).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from airflow_harness import REPO, Airflow, own_image

from airflow_placement.operators import GatedDockerOperator
from airflow_placement.settings import OPTIONS

pytestmark = [pytest.mark.airflow, pytest.mark.podman]

DOCUMENT = "every_kind: server-1\n"

# task id -> the files its code leaves when it runs (see the DAG file)
KINDS = {
    "taskflow": ["taskflow"],
    "bash": ["bash"],
    "python": ["python"],
    "mapped_taskflow": ["mapped_taskflow-0", "mapped_taskflow-1", "mapped_taskflow-2"],
    "mapped_bash": ["mapped_bash-0", "mapped_bash-1"],
    "deferring": ["deferring.before", "deferring.after"],
    "from_triggerer": ["from_triggerer"],
    "rescheduled": ["rescheduled.poke1", "rescheduled.poke2"],
    "retried": ["retried.try1", "retried.try2"],
    "set_up": ["set_up"],
    "tear_down": ["tear_down"],
}
# how many times each task decides on its owner: once per entry into the task's code
DECISIONS_ON_THE_OWNER = {
    "mapped_taskflow": 3,
    "mapped_bash": 2,
    "deferring": 2,
    "from_triggerer": 2,
    "rescheduled": 2,
    "retried": 2,
}


@dataclass(frozen=True)
class Run:
    states: dict[tuple[str, str], str]  # (task id, map index) -> state
    files: set[str]
    log: str
    containers: int

    def states_of(self, task_id: str) -> set[str]:
        return {state for (task, _), state in self.states.items() if task == task_id}

    def decisions(self, decision: str, task_id: str) -> int:
        return self.log.count(f"placement: decision={decision} dag=every_kind task={task_id} ")


@pytest.fixture(scope="module")
def airflow_every_task(tmp_path_factory: pytest.TempPathFactory) -> Airflow:
    home = tmp_path_factory.mktemp("airflow-every-task")
    airflow = Airflow(
        home=home,
        placement_file=home / "airflow-dag-on-server.yaml",
        dags_folder=REPO / "tests" / "integration" / "dags_every_task",
    )
    airflow.placement_file.write_text(DOCUMENT)
    airflow.setup()
    assert airflow.json("dags", "list-import-errors") == []
    return airflow


@pytest.fixture(scope="module")
def every_task(airflow_every_task: Airflow, task_image: str) -> Iterator[Callable[..., Run]]:
    """Run a DAG of tests/integration/dags_every_task once per scenario, as a server; later calls reuse the run."""
    airflow = airflow_every_task
    home = airflow.home
    runs: dict[str, Run] = {}
    dates = iter(f"2026-11-20T0{hour}:00:00+00:00" for hour in range(10))

    def run(scenario: str, dag_id: str, host: str, **extra: str) -> Run:
        if scenario not in runs:
            logical_date = next(dates)
            out = home / f"out-{scenario}"
            out.mkdir()
            with own_image(task_image) as image:
                result = airflow.run(
                    "dags",
                    "test",
                    dag_id,
                    logical_date,
                    host=host,
                    EVERY_TASK_OUT=str(out),
                    EVERY_TASK_IMAGE=image.name,
                    AIRFLOW__PLACEMENT__CACHE_DIR=str(home / f"cache-{scenario}"),
                    **extra,
                )
                containers = image.started()
            rows = airflow.task_instances(dag_id, logical_date)
            runs[scenario] = Run(
                states={(row["task_id"], row.get("map_index", "")): row["state"] for row in rows},
                files={path.name for path in out.iterdir()},
                log=result.stdout + result.stderr,
                containers=containers,
            )
        return runs[scenario]

    yield run


@pytest.fixture
def owner(every_task: Callable[..., Run]) -> Run:
    return every_task("owner", "every_kind", "server-1")


@pytest.fixture
def non_owner(every_task: Callable[..., Run]) -> Run:
    return every_task("non-owner", "every_kind", "server-2")


@pytest.fixture
def unavailable(every_task: Callable[..., Run], tmp_path_factory: pytest.TempPathFactory) -> Run:
    missing = tmp_path_factory.mktemp("no-document") / "airflow-dag-on-server.yaml"
    return every_task("unavailable", "every_kind", "server-1", AIRFLOW__PLACEMENT__SOURCE=str(missing))


@pytest.mark.parametrize("task_id", KINDS)
def test_on_the_owner_every_kind_of_task_decides_then_runs(owner: Run, task_id: str) -> None:
    assert owner.states_of(task_id) == {"success"}
    assert set(KINDS[task_id]) <= owner.files
    assert owner.decisions("run", task_id) == DECISIONS_ON_THE_OWNER.get(task_id, 1)


@pytest.mark.parametrize("task_id", KINDS)
def test_on_a_non_owner_no_task_code_runs_and_every_task_is_skipped(non_owner: Run, task_id: str) -> None:
    assert non_owner.states_of(task_id) == {"skipped"}
    assert not {name for name in non_owner.files if name.split(".")[0].split("-")[0] == task_id}
    if task_id != "tear_down":  # Airflow skips a teardown whose setup was skipped, before it starts
        expected = len(KINDS[task_id]) if task_id.startswith("mapped") else 1  # each mapped instance decides
        assert non_owner.decisions("skip", task_id) == expected


@pytest.mark.parametrize("task_id", [task for task in KINDS if task != "tear_down"])
def test_without_a_trustworthy_document_no_task_code_runs(unavailable: Run, task_id: str) -> None:
    assert unavailable.states_of(task_id) == {"skipped"}
    assert unavailable.files == set()
    assert unavailable.decisions("refuse", task_id) >= 1


def test_a_task_set_to_start_in_the_triggerer_starts_on_a_worker_where_the_gate_decides(owner: Run) -> None:
    warning = "placement: task from_triggerer of DAG every_kind would start in the triggerer, past the gate"
    assert warning in owner.log


def test_a_gated_docker_operator_decides_once(owner: Run, non_owner: Run) -> None:
    assert owner.states_of("docker") == {"success"}
    assert owner.decisions("run", "docker") == 1
    assert owner.containers == 1
    assert non_owner.states_of("docker") == {"skipped"}
    assert non_owner.decisions("skip", "docker") == 1
    assert non_owner.containers == 0


def test_a_dag_tagged_placement_everywhere_runs_on_every_server_and_says_so(
    every_task: Callable[..., Run], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """It needs no document either: here the source is missing."""
    missing = tmp_path_factory.mktemp("no-document") / "airflow-dag-on-server.yaml"
    run = every_task("everywhere", "everywhere", "server-2", AIRFLOW__PLACEMENT__SOURCE=str(missing))
    assert run.states == {("housekeeping", ""): "success"}
    assert run.files == {"housekeeping"}
    assert "placement: decision=everywhere dag=everywhere task=housekeeping run=manual__" in run.log
    assert "host=server-2 reason=the DAG is tagged 'placement:everywhere': it runs on every server" in run.log


def test_airflow_lists_the_placement_section_with_its_defaults(airflow_every_task: Airflow) -> None:
    listing = airflow_every_task.check(
        "config", "list", "--section", "placement", "--include-descriptions", "--show-values", "--color", "off"
    )
    assert listing.lstrip().startswith("[placement]")
    for option in OPTIONS:
        assert f"# {option.description}\n" in listing
        if option.key not in ("source", "cache_dir"):  # set by the harness
            assert f"\n{option.key} = {option.default}\n" in listing
    assert airflow_every_task.check("config", "get-value", "placement", "max_staleness").strip() == "300"


def test_a_gated_docker_operator_without_a_run_runs_its_container_on_the_dags_owner_now(
    task_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Drop-in parity: execute(None) and execute({}) as DockerOperator's own tests call it, here in this process."""
    document = tmp_path / "airflow-dag-on-server.yaml"
    document.write_text('"*": server-1\n')
    monkeypatch.setenv("AIRFLOW__PLACEMENT__SOURCE", str(document))
    monkeypatch.setenv("AIRFLOW__PLACEMENT__CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HOST_HOSTNAME", "server-1")
    with own_image(task_image) as image:
        operator = GatedDockerOperator(task_id="load", image=image.name, command=["echo", "ran"])
        assert [operator.execute(None), operator.execute({})] == ["ran", "ran"]
        assert image.started() == 2
