"""dag_placement's serve publishing stops in one line, before anything is installed or published, on settings that
could never work: a placement_source that is not https (the servers send their tokens only over HTTPS), no time
for the upload in the lead (serve --min-lead would refuse every handover), one token for every server (serve tells
the servers apart by their tokens). Real ansible-playbook runs (in check mode) against throwaway local inventories;
the source itself runs in dag_placement's all-options Molecule scenario."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from placement_site import make_site

SERVE = {
    "dag_placement_publish": "serve",
    "placement_source": "https://publisher.example.invalid:8765/airflow-dag-on-server.yaml",
    "dag_placement_source_cache_seconds": 30,
}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"placement_source": "http://publisher.example.invalid:8765/airflow-dag-on-server.yaml"},
            "dag_placement_publish=serve needs placement_source, the https:// URL",
        ),
        (
            {"dag_placement_publish": "http", "placement_source": "file:///srv/p.yaml"},
            "dag_placement_publish=http needs placement_source, the https:// URL",
        ),
        (
            {"dag_placement_source_cache_seconds": 0},
            "dag_placement_publish=serve needs dag_placement_source_cache_seconds > 0",
        ),
        (
            {"placement_source_token": "one-token-for-all"},
            "placement_source_token is the same for two servers",
        ),
    ],
    ids=["plain-http", "http-alias-file-url", "no-upload-time", "shared-token"],
)
def test_a_serve_setting_that_cannot_work_stops_in_one_line(
    tmp_path: Path, settings: dict[str, Any], message: str
) -> None:
    site = make_site(tmp_path / "site", group_vars={**SERVE, **settings})
    run = site.play("placement.yml", "--check")  # check mode: even a check that let it through installs nothing here
    assert run.returncode != 0
    [failure] = [
        json.loads(line.split(" => ", 1)[1])["msg"]
        for line in run.output.splitlines()
        if line.startswith("failed: ") and " => {" in line
    ]
    assert failure.startswith(message), failure
    assert "\n" not in failure
    assert "one-token-for-all" not in run.output
    assert not (site.inventory / ".secrets" / "airflow_placement" / "serve.crt").exists()
