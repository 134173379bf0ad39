"""The compose file the airflow_compose role renders, read back as YAML: the Podman socket (root on the server) reaches
only the components that run tasks. Rendered by a real ansible-playbook with the role's own defaults and vars; the
Molecule scenarios check the same on running containers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROLE = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "airflow_compose"
SOCKET = "/var/run/docker.sock"

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  vars_files:
    - {role}/defaults/main.yml
    - {role}/vars/main.yml
  tasks:
    - ansible.builtin.template:
        src: {role}/templates/opt/airflow-compose/compose.yaml.j2
        dest: "{{{{ out }}}}"
        mode: "0644"
"""


def render(tmp_path: Path, **variables: Any) -> dict[str, Any]:
    playbook = tmp_path / "render.yml"
    playbook.write_text(PLAYBOOK.format(role=ROLE))
    out = tmp_path / "compose.yaml"
    extra = {"out": str(out), "ansible_python_interpreter": sys.executable, **variables}
    command = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local"]
    subprocess.run(
        [*command, str(playbook), "-e", yaml.safe_dump(extra, default_flow_style=True)],
        check=True,
        capture_output=True,
        text=True,
    )
    rendered: dict[str, Any] = yaml.safe_load(out.read_text())
    return rendered


def with_socket(compose: dict[str, Any]) -> list[str]:
    return sorted(
        name
        for name, service in compose["services"].items()
        if any(str(volume).split(":")[1:2] == [SOCKET] for volume in service.get("volumes", []))
    )


@pytest.mark.parametrize(
    ("variables", "runs_tasks"),
    [
        ({"airflow_compose_executor": "LocalExecutor"}, ["airflow-scheduler"]),
        (
            {"airflow_compose_executor": "CeleryExecutor", "airflow_compose_celery_workers": 2},
            ["airflow-worker-1", "airflow-worker-2"],
        ),
    ],
    ids=["LocalExecutor", "CeleryExecutor"],
)
def test_only_the_components_that_run_tasks_get_the_podman_socket(
    tmp_path: Path, variables: dict[str, Any], runs_tasks: list[str]
) -> None:
    compose = render(tmp_path, **variables)
    assert with_socket(compose) == runs_tasks
    # Every Airflow component still gets the rest: DAGs, plugins, logs, the certificate, the placement document and
    # its cache; the API server also gets the certificate's key, and only it.
    volumes = {name: s["volumes"] for name, s in compose["services"].items() if name.startswith("airflow-")}
    with_key = [name for name, mounts in volumes.items() if any(":/opt/airflow/tls-key:" in v for v in mounts)]
    assert with_key == ["airflow-apiserver"]
    assert {len(mounts) for name, mounts in volumes.items() if name not in [*runs_tasks, *with_key]} == {6}
    assert {len(volumes[name]) for name in [*runs_tasks, *with_key]} == {7}


def test_the_server_is_named_once_by_host_hostname(tmp_path: Path) -> None:
    """HOST_HOSTNAME always wins over [placement] host, so the role has no setting for the latter: an inventory that
    still sets the removed airflow_compose_placement_host changes nothing."""
    compose = render(tmp_path, airflow_compose_host_hostname="server-9", airflow_compose_placement_host="elsewhere")
    environment = compose["x-airflow-common"]["environment"]
    assert environment["HOST_HOSTNAME"] == "server-9"
    assert "AIRFLOW__PLACEMENT__HOST" not in environment


@pytest.mark.parametrize("public_key", ["", "G7St1zZjn2JUtczLYpxiEvK9ETZWyZic/LsVp+wkMTc="], ids=["unsigned", "signed"])
def test_every_airflow_component_is_given_the_publishers_public_key(tmp_path: Path, public_key: str) -> None:
    """With a public key (site.yml passes dag_placement's), every component refuses documents it did not sign."""
    compose = render(tmp_path, airflow_compose_placement_public_key=public_key)
    airflow = [service for name, service in compose["services"].items() if name.startswith("airflow-")]
    assert {service["environment"].get("AIRFLOW__PLACEMENT__PUBLIC_KEY") for service in airflow} == {public_key or None}


@pytest.mark.parametrize("ca", ["", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"], ids=["none", "ca"])
def test_the_placement_ca_is_the_placement_fetches_alone(tmp_path: Path, ca: str) -> None:
    """The source's CA reaches every component as [placement] ca_bundle; REQUESTS_CA_BUNDLE would replace the trust
    store of every requests call in the containers, the DAGs' own HTTPS included."""
    compose = render(tmp_path, airflow_compose_placement_ca=ca)
    airflow = [service for name, service in compose["services"].items() if name.startswith("airflow-")]
    bundles = {service["environment"].get("AIRFLOW__PLACEMENT__CA_BUNDLE") for service in airflow}
    assert bundles == {"/opt/airflow/tls/placement-ca.pem" if ca else None}
    assert not any("REQUESTS_CA_BUNDLE" in service["environment"] for service in airflow)
