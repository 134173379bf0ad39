"""The placement_watchdog role on this machine (``ansible_connection: local``): the configuration it writes and
validates, with the publisher's token dag_placement uploads with and the source's CA. This machine has no systemd, so
the services (the watchdog's, and dag_placement's serve, which the role installs through dag_placement's tasks) are
left out (``placement_watchdog_service: false``; dag_placement's all-options Molecule scenario runs serve); the
rendered watchdog configuration is run once (``watch --once --dry-run``) against a real ``serve``.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from airflow_placement.serve import SourceClient, token_hash

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ENV = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_ROLES_PATH": str(ROOT / "ansible" / "roles")}


def play(tmp_path: Path, **extra: object) -> subprocess.CompletedProcess[str]:
    inventory = tmp_path / "inventory" / "hosts.yml"
    inventory.parent.mkdir(parents=True, exist_ok=True)
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "hosts": {"localhost": local},
                    "children": {
                        "airflow_servers": {
                            "hosts": {
                                "server-1": {**local, "dag_placement_failover_order": ["server-2"]},
                                "server-2": local,
                            }
                        }
                    },
                }
            }
        )
    )
    settings = {
        "placement_watchdog_service": False,
        "placement_watchdog_config_dir": str(tmp_path / "etc"),
        "placement_watchdog_state_dir": str(tmp_path / "state"),
        "placement_watchdog_api_urls": {"server-1": "http://127.0.0.1:1", "server-2": "http://127.0.0.1:2"},
        "dag_placement_publish": "serve",
        "dag_placement_source_cache_seconds": 30,
        "placement_source": "http://127.0.0.1:8765/airflow-dag-on-server.yaml",
        **extra,
    }
    return subprocess.run(
        [
            str(VENV_BIN / "ansible-playbook"),
            "-i",
            str(inventory),
            str(ROOT / "ansible" / "watchdog.yml"),
            "-e",
            json.dumps(settings),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("watchdog-role")
    first = play(tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    second = play(tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "changed=0" in second.stdout.split("PLAY RECAP", 1)[1]  # idempotent: the tokens are generated once
    return tmp_path


def test_the_watchdog_holds_the_publisher_token_dag_placement_uploads_with(rendered: Path) -> None:
    secrets = rendered / "inventory" / ".secrets" / "airflow_placement"
    publisher = (secrets / "publisher.token").read_text().strip()
    assert len(publisher) == 43
    env = rendered / "etc" / "watch.env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert f"AIRFLOW_PLACEMENT_PUBLISHER_TOKEN={publisher}" in env.read_text()
    assert not (rendered / "etc" / "serve-tokens.yaml").exists()  # the source's files are dag_placement's


def test_an_https_source_gets_the_ca_of_dag_placements_certificate(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nnot checked here\n-----END CERTIFICATE-----\n")
    run = play(tmp_path, placement_source="https://publisher.example:8765/p.yaml", dag_placement_serve_tls_cert=str(ca))
    assert run.returncode == 0, run.stdout + run.stderr
    config = yaml.safe_load((tmp_path / "etc" / "watch.yaml").read_text())
    assert config["source"] == "https://publisher.example:8765/p.yaml"
    assert config["source_ca"] == str(tmp_path / "etc" / "source-ca.pem")
    assert (tmp_path / "etc" / "source-ca.pem").read_text() == ca.read_text()


def test_the_rendered_configuration_runs_against_the_rendered_source(rendered: Path) -> None:
    config = yaml.safe_load((rendered / "etc" / "watch.yaml").read_text())
    assert [(s["name"], s["failover_order"]) for s in config["servers"]] == [
        ("server-1", ["server-2"]),
        ("server-2", []),
    ]
    assert config["publisher_dir"] == str(rendered / "inventory" / ".placement")
    secrets = rendered / "inventory" / ".secrets" / "airflow_placement"
    publisher = (secrets / "publisher.token").read_text().strip()
    servers = {"server-1": token_hash("t1"), "server-2": token_hash("t2")}
    tokens_file = rendered / "serve-tokens.yaml"
    tokens_file.write_text(yaml.safe_dump({"publisher": token_hash(publisher), "servers": servers}))
    cli = [sys.executable, "-m", "airflow_placement.cli"]
    serve = subprocess.Popen(
        [
            *cli,
            "serve",
            "--state-dir",
            str(rendered / "serve-state"),
            "--tokens",
            str(tokens_file),
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert serve.stdout is not None
        url = serve.stdout.readline().split()[1]
        assert SourceClient(url, publisher).confirmations()["servers"] == {}
        (rendered / "etc" / "watch.yaml").write_text(yaml.safe_dump({**config, "source": url}))
        watched = subprocess.run(
            [*cli, "watch", "--config", str(rendered / "etc" / "watch.yaml"), "--once", "--dry-run"],
            capture_output=True,
            text=True,
            env={**os.environ, "AIRFLOW_PLACEMENT_PUBLISHER_TOKEN": publisher},
            check=False,
        )
    finally:
        serve.terminate()
        serve.wait(timeout=10)
    assert watched.returncode == 0, watched.stderr
    # Neither fake API answers (ports 1 and 2): the watchdog sees only the source, and stays put.
    assert "no majority" in watched.stdout


def test_a_plain_http_source_off_this_host_is_refused_in_one_line(tmp_path: Path) -> None:
    run = play(tmp_path, placement_source="http://192.0.2.1:8765/airflow-dag-on-server.yaml")
    assert run.returncode != 0
    assert "the servers send their tokens only over HTTPS" in run.stdout


def test_a_source_that_is_not_dag_placements_serve_is_refused_in_one_line(tmp_path: Path) -> None:
    """One source: the watchdog publishes where placement.yml does, so file or git publishing is refused."""
    run = play(tmp_path, dag_placement_publish="file")
    assert run.returncode != 0
    assert "the watchdog publishes to dag_placement's confirming source" in run.stdout


def test_no_time_for_the_upload_is_refused_in_one_line(tmp_path: Path) -> None:
    """serve --min-lead refuses a handover uploaded later than the lease allows: the lead must leave time for it."""
    run = play(tmp_path, dag_placement_source_cache_seconds=0)
    assert run.returncode != 0
    assert "with time for the upload in the lead" in run.stdout


def test_the_source_is_the_inventorys_placement_source(tmp_path: Path) -> None:
    """One name: the servers' placement_source is the URL the watchdog watches and the source serves."""
    run = play(tmp_path, placement_source="http://localhost:8770/placement.yaml")
    assert run.returncode == 0, run.stdout + run.stderr
    assert yaml.safe_load((tmp_path / "etc" / "watch.yaml").read_text())["source"] == (
        "http://localhost:8770/placement.yaml"
    )


def test_the_servers_api_certificates_airflow_compose_generated_are_bundled_for_the_health_checks(
    tmp_path: Path,
) -> None:
    """airflow_compose serves each API over HTTPS with a certificate of its own and keeps a copy on the controller."""
    copies = tmp_path / "inventory" / ".secrets" / "airflow_compose"
    pems = {}
    for server in ("server-1", "server-2"):
        (copies / server).mkdir(parents=True)
        pems[server] = f"-----BEGIN CERTIFICATE-----\n{server}\n-----END CERTIFICATE-----"
        (copies / server / "tls.crt").write_text(pems[server] + "\n")
    run = play(tmp_path, placement_watchdog_api_urls={})
    assert run.returncode == 0, run.stdout + run.stderr
    config = yaml.safe_load((tmp_path / "etc" / "watch.yaml").read_text())
    assert [s["api"] for s in config["servers"]] == ["https://server-1:8080", "https://server-2:8080"]
    assert config["api_ca"] == str(tmp_path / "etc" / "api-ca.pem")
    bundle = (tmp_path / "etc" / "api-ca.pem").read_text()
    assert pems["server-1"] in bundle and pems["server-2"] in bundle
