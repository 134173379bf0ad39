"""Real DAG runs (`airflow dags test`) of the example DAGs against the real Podman socket, as owner and non-owner."""

from __future__ import annotations

import time

import pytest
from airflow_harness import Airflow, own_image

pytestmark = [pytest.mark.airflow, pytest.mark.podman]

BEFORE, AFTER = "2026-11-20T05:00:00+00:00", "2026-11-20T07:00:00+00:00"
HANDOVER = "2026-11-20T06:00:00+00:00"


@pytest.fixture
def gate(airflow: Airflow, task_image: str, tmp_path):  # type: ignore[no-untyped-def]
    """Write a placement document; run a DAG as a server with its own fresh cache; count containers it started."""

    def run(document: str, dag_id: str, logical_date: str, host: str, **extra: str) -> tuple[dict[str, str], int]:
        airflow.placement_file.write_text(document)
        extra.setdefault("AIRFLOW__PLACEMENT__CACHE_DIR", str(tmp_path / f"cache-{host}-{time.monotonic_ns()}"))
        with own_image(task_image) as image:
            states = airflow.dags_test(dag_id, logical_date, host, PLACEMENT_EXAMPLE_IMAGE=image.name, **extra)
            return states, image.started()

    return run


def test_example_dags_import_without_errors(airflow: Airflow) -> None:
    dag_ids = {row["dag_id"] for row in airflow.json("dags", "list")}
    assert {"placement_example", "legacy_sc_example"} <= dag_ids
    assert airflow.json("dags", "list-import-errors") == []


def test_owner_runs_the_containers(gate) -> None:  # type: ignore[no-untyped-def]
    states, started = gate("placement_example: server-1\n", "placement_example", BEFORE, "server-1")
    assert states == {"extract": "success", "report": "success"}
    assert started == 2


def test_non_owner_skips_without_creating_a_container(gate) -> None:  # type: ignore[no-untyped-def]
    states, started = gate("placement_example: server-1\n", "placement_example", BEFORE, "server-2")
    assert states == {"extract": "skipped", "report": "skipped"}
    assert started == 0


def test_host_names_compare_as_dns_names(gate) -> None:  # type: ignore[no-untyped-def]
    states, started = gate(
        "placement_example: Server-1.Example.ORG.\n", "placement_example", BEFORE, "server-1.example.org"
    )
    assert states["extract"] == "success"
    assert started == 2


@pytest.mark.parametrize(
    ("host", "logical_date", "expected", "containers"),
    [
        ("server-1", BEFORE, "success", 2),
        ("server-2", BEFORE, "skipped", 0),
        ("server-1", AFTER, "skipped", 0),
        ("server-2", AFTER, "success", 2),
    ],
)
def test_a_scheduled_handover_follows_the_runs_logical_date(gate, host, logical_date, expected, containers) -> None:  # type: ignore[no-untyped-def]
    document = f"placement_example:\n  owner: server-1\n  handover:\n    - {{at: '{HANDOVER}', owner: server-2}}\n"
    states, started = gate(document, "placement_example", logical_date, host)
    assert set(states.values()) == {expected}
    assert started == containers


def test_per_task_override_splits_a_run_between_servers(gate) -> None:  # type: ignore[no-untyped-def]
    document = "placement_example:\n  owner: server-1\n  tasks:\n    report: server-2\n"
    states, started = gate(document, "placement_example", BEFORE, "server-1")
    # report is owned by server-2; on server-1 it is skipped (all_success trigger rule) after extract ran
    assert states == {"extract": "success", "report": "skipped"}
    assert started == 1


def test_legacy_dag_importing_sc_operators_keeps_working(gate) -> None:  # type: ignore[no-untyped-def]
    states, started = gate("legacy_sc_example: server-1\n", "legacy_sc_example", BEFORE, "server-1")
    assert states == {"my_task": "success"}
    assert started == 1


def test_echo_mode_runs_an_echo_container_like_the_original_operator(gate) -> None:  # type: ignore[no-untyped-def]
    states, started = gate(
        "legacy_sc_example: server-1\n", "legacy_sc_example", BEFORE, "server-2", AIRFLOW__PLACEMENT__NOT_OWNER="echo"
    )
    assert states == {"my_task": "success"}
    assert started == 1


@pytest.mark.parametrize(("on_unavailable", "expected"), [("skip", "skipped"), ("fail", "failed")])
def test_unreachable_source_never_runs(gate, on_unavailable, expected) -> None:  # type: ignore[no-untyped-def]
    states, started = gate(
        "placement_example: server-1\n",
        "placement_example",
        BEFORE,
        "server-1",
        AIRFLOW__PLACEMENT__SOURCE="http://127.0.0.1:9/airflow-dag-on-server.yaml",
        AIRFLOW__PLACEMENT__TIMEOUT="1",
        AIRFLOW__PLACEMENT__RETRIES="0",
        AIRFLOW__PLACEMENT__ON_UNAVAILABLE=on_unavailable,
    )
    assert states["extract"] == expected
    assert started == 0


def test_garbage_document_never_runs(gate) -> None:  # type: ignore[no-untyped-def]
    states, started = gate(
        "<!DOCTYPE html><html>placement_example: server-1</html>\n", "placement_example", BEFORE, "server-1"
    )
    assert states["extract"] == "skipped"
    assert started == 0


def test_unusable_cache_directory_never_runs(gate) -> None:  # type: ignore[no-untyped-def]
    states, started = gate(
        "placement_example: server-1\n",
        "placement_example",
        BEFORE,
        "server-1",
        AIRFLOW__PLACEMENT__CACHE_DIR="/dev/null/placement-cache",
    )
    assert states["extract"] == "skipped"
    assert started == 0
