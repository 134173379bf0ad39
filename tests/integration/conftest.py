"""Fixtures for the integration tests: a real Airflow home and a task image on the real Podman."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from airflow_harness import Airflow, ensure_task_image


@pytest.fixture(scope="session")
def task_image() -> str:
    try:
        return ensure_task_image()
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:
    home = tmp_path_factory.mktemp("airflow-home")
    instance = Airflow(home=home, placement_file=home / "airflow-dag-on-server.yaml")
    instance.placement_file.write_text("placement_example: server-1\n")
    instance.setup()
    yield instance
