"""The lease in real `airflow dags test` runs against the real Podman socket: a file copy is trusted only as far as
the publisher's own renewal time in it, not older than this machine's start, and never with a lower serial.

Each refusal shows in the task log as one line with the reason, and no container starts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from airflow_harness import Airflow, own_image

from airflow_placement.lease import stack_started_at

pytestmark = [pytest.mark.airflow, pytest.mark.podman]

RUN_DATE = "2026-11-20T05:00:00+00:00"


def published(serial: int, renewed: datetime, owner: str) -> str:
    stamp = renewed.strftime("%Y-%m-%dT%H:%M:%SZ")
    return f'"@meta":\n  serial: {serial}\n  issued: "{stamp}"\n  renewed: "{stamp}"\nplacement_example: {owner}\n'


def run(airflow: Airflow, task_image: str, document: str, cache: Path, **extra: str) -> tuple[dict[str, str], int, str]:
    """One run as server-1 with the given document and store: its states, containers started, and placement log."""
    airflow.placement_file.write_text(document)
    with own_image(task_image) as image:
        result = airflow.run(
            "dags",
            "test",
            "placement_example",
            RUN_DATE,
            host="server-1",
            AIRFLOW__PLACEMENT__CACHE_DIR=str(cache),
            PLACEMENT_EXAMPLE_IMAGE=image.name,
            **extra,
        )
        started = image.started()
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    lines = "\n".join(line for line in output.splitlines() if "placement: " in line and "Skipping task" not in line)
    states = {row["task_id"]: row["state"] for row in airflow.task_instances("placement_example", RUN_DATE)}
    return states, started, lines


def test_a_copy_the_publisher_renewed_just_now_runs(airflow: Airflow, task_image: str, tmp_path: Path) -> None:
    states, started, refused = run(airflow, task_image, published(1, datetime.now(UTC), "server-1"), tmp_path)
    assert states == {"extract": "success", "report": "success"}
    assert started == 2
    assert "decision=run dag=placement_example task=extract" in refused
    assert "serial=1" in refused
    assert "decision=refuse" not in refused


def test_an_expired_file_copy_never_runs_although_it_was_just_read(
    airflow: Airflow, task_image: str, tmp_path: Path
) -> None:
    renewed = datetime.now(UTC) - timedelta(seconds=45)
    states, started, refused = run(
        airflow,
        task_image,
        published(1, renewed, "server-1"),
        tmp_path,
        AIRFLOW__PLACEMENT__TTL="5",
        AIRFLOW__PLACEMENT__MAX_STALENESS="40",
        AIRFLOW__PLACEMENT__CLOCK_SKEW="1",
    )
    assert states["extract"] == "skipped"
    assert started == 0
    assert "decision=refuse dag=placement_example task=extract" in refused
    assert "over the maximum staleness of 40 s" in refused


def test_a_copy_renewed_before_this_machine_started_never_runs(
    airflow: Airflow, task_image: str, tmp_path: Path
) -> None:
    """A server that was down during a forced failover comes back with its old file: that file's renewal is older
    than the server's start, so nothing runs until the publisher renews it (with the document that moved its DAGs)."""
    renewed = datetime.fromtimestamp(stack_started_at() - 5, UTC)
    states, started, refused = run(
        airflow, task_image, published(1, renewed, "server-1"), tmp_path, AIRFLOW__PLACEMENT__MAX_STALENESS="1e9"
    )
    assert states["extract"] == "skipped"
    assert started == 0
    assert "before this server's stack started" in refused


def test_a_lower_serial_is_refused_and_the_last_good_copy_decides(
    airflow: Airflow, task_image: str, tmp_path: Path
) -> None:
    """A mirror serves serial 5 after serial 9 moved the DAG away: server-1 keeps deciding by serial 9."""
    settings = {"AIRFLOW__PLACEMENT__TTL": "0"}  # read the source on every task
    now = datetime.now(UTC)
    states, started, _ = run(airflow, task_image, published(9, now, "server-2"), tmp_path, **settings)
    assert (states["extract"], started) == ("skipped", 0)

    states, started, log = run(airflow, task_image, published(5, now, "server-1"), tmp_path, **settings)
    assert (states["extract"], started) == ("skipped", 0)
    assert "the source served serial 5, older than serial 9 that this server has accepted; refused as a rollback" in log
    assert "decision=skip dag=placement_example task=extract" in log
    assert "owner=server-2 serial=9" in log
    assert (tmp_path / next(p.name for p in tmp_path.glob("*.serial"))).read_text() == "9\n"
