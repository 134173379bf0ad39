"""The airflow_compose role's login, TLS and token settings as it renders them (compose.yaml, airflow.env) and checks
them (tasks/assert.yml), run by a real ansible-playbook with the role's own defaults and vars. The running stack (FAB
login over HTTPS, the token inside the containers) is checked by its all-options Molecule scenario."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROLE = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "airflow_compose"
TOKEN = "placement-token-0123456789"

RENDER = """
- hosts: localhost
  gather_facts: false
  vars_files:
    - {role}/defaults/main.yml
    - {role}/vars/main.yml
  tasks:
    - ansible.builtin.template:
        src: {role}/templates/opt/airflow-compose/{{{{ item }}}}.j2
        dest: "{{{{ out }}}}/{{{{ item }}}}"
        mode: "0600"
      loop: [compose.yaml, airflow.env]
"""

TLS = """
- hosts: server-1
  gather_facts: false
  vars_files:
    - {role}/defaults/main.yml
    - {role}/vars/main.yml
  tasks:
    - ansible.builtin.file:
        path: "{{{{ item }}}}"
        state: directory
        mode: "0755"
      loop: ["{{{{ airflow_compose_dir }}}}/tls", "{{{{ airflow_compose_dir }}}}/tls-key"]
    - ansible.builtin.include_tasks: {role}/tasks/tls.yml
  handlers:
    - name: Restart the Airflow services
      ansible.builtin.debug:
        msg: no stack here
"""

CHECK = """
- hosts: localhost
  gather_facts: false
  vars_files:
    - {role}/defaults/main.yml
    - {role}/vars/main.yml
  tasks:
    - ansible.builtin.include_tasks: {role}/tasks/assert.yml
"""


def playbook(tmp_path: Path, text: str, **variables: Any) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "play.yml"
    path.write_text(text.format(role=ROLE))
    extra = {
        "ansible_python_interpreter": sys.executable,
        "airflow_compose_secrets_dir": str(tmp_path / "secrets"),
        "airflow_compose_dags_src": str(tmp_path),
        "airflow_compose_plugins_src": "",
        **variables,
    }
    command = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "server-1,", "-c", "local"]
    return subprocess.run(
        [*command, str(path), "-e", yaml.safe_dump(extra, default_flow_style=True)],
        capture_output=True,
        text=True,
        check=False,
    )


def render(tmp_path: Path, **variables: Any) -> tuple[dict[str, Any], str]:
    done = playbook(tmp_path, RENDER, out=str(tmp_path), **variables)
    assert done.returncode == 0, done.stdout + done.stderr
    compose: dict[str, Any] = yaml.safe_load((tmp_path / "compose.yaml").read_text())
    return compose, (tmp_path / "airflow.env").read_text()


def environment(compose: dict[str, Any], service: str = "airflow-scheduler") -> dict[str, str]:
    return {k: str(v) for k, v in compose["services"][service]["environment"].items()}


def test_the_token_reaches_the_containers_through_the_0600_env_file_only(tmp_path: Path) -> None:
    compose, env = render(tmp_path, placement_source_token=TOKEN)
    assert f"AIRFLOW_PLACEMENT_TOKEN={TOKEN}\n" in env
    assert TOKEN not in (tmp_path / "compose.yaml").read_text()
    for service in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        assert environment(compose, service)["AIRFLOW__PLACEMENT__TOKEN_ENV"] == "AIRFLOW_PLACEMENT_TOKEN"
        assert compose["services"][service]["env_file"] == ["/opt/airflow-compose/airflow.env"]


def test_without_a_token_no_token_env_is_set(tmp_path: Path) -> None:
    compose, env = render(tmp_path)
    assert "AIRFLOW__PLACEMENT__TOKEN_ENV" not in environment(compose)
    assert "AIRFLOW_PLACEMENT_TOKEN" not in env


def test_fab_is_the_default_auth_manager_and_simple_keeps_its_users_file(tmp_path: Path) -> None:
    fab, _ = render(tmp_path)
    assert environment(fab)["AIRFLOW__CORE__AUTH_MANAGER"].endswith(".FabAuthManager")
    assert not [k for k in environment(fab) if k.startswith("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER")]
    assert not [v for v in fab["services"]["airflow-apiserver"]["volumes"] if "/auth:" in v]
    users = [{"username": "analyst", "role": "Viewer", "password": "analyst-password"}]
    simple, _ = render(tmp_path, airflow_compose_auth_manager="simple", airflow_compose_users=users)
    assert environment(simple)["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin,analyst:viewer"


def test_the_components_call_the_api_server_over_https_by_the_certificates_name(tmp_path: Path) -> None:
    compose, _ = render(tmp_path, airflow_compose_tls_server_name="airflow.server-1.example")
    env = environment(compose)
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "https://airflow.server-1.example:8080/execution/"
    assert env["AIRFLOW__API__SSL_CERT"] == "/opt/airflow/tls/cert.pem"
    api = compose["services"]["airflow-apiserver"]
    assert api["networks"]["default"]["aliases"] == ["airflow.server-1.example"]
    assert "https://airflow.server-1.example:8080/api/v2/monitor/health" in api["healthcheck"]["test"]


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"placement_source_token": TOKEN + "\x07"},
            "airflow_compose_placement_token (placement_source_token) may only contain visible ASCII characters",
        ),
        (
            {"airflow_compose_extra_env": {"AIRFLOW_PLACEMENT_TOKEN": TOKEN}},
            "airflow_compose_extra_env must not carry the placement token or its CA",
        ),
        (
            {"airflow_compose_tls_cert": "/nonexistent/cert.pem"},
            "airflow_compose_tls_cert and airflow_compose_tls_key go together",
        ),
        (
            {"airflow_compose_users": [{"username": "analyst", "role": "Viewer", "password": "short"}]},
            "airflow_compose_users[0] (analyst) needs a username, a role and a password of at least 8 characters",
        ),
    ],
    ids=["control-character", "extra-env", "cert-without-key", "short-password"],
)
def test_a_bad_setting_stops_in_one_line_that_shows_no_secret(
    tmp_path: Path, variables: dict[str, Any], message: str
) -> None:
    done = playbook(tmp_path, CHECK, **variables)
    assert done.returncode != 0
    # Each check's message is also the label of its loop item: look for it on the failed item's line.
    assert [line for line in done.stdout.splitlines() if line.startswith("failed:") and message in line]
    assert TOKEN not in done.stdout + done.stderr
    assert "short" not in (done.stdout + done.stderr).replace("shorter", "")


def handshake(client_context: ssl.SSLContext, server_context: ssl.SSLContext, name: str) -> None:
    """A TLS handshake in memory, the client asking for ``name``; raises if the client does not trust the server."""
    to_client, to_server = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(to_client, to_server, server_hostname=name)
    server = server_context.wrap_bio(to_server, to_client, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for side, ends in (("client", client), ("server", server)):
            if not done[side]:
                try:
                    ends.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        if all(done.values()):
            return
    raise AssertionError(f"no TLS handshake for {name}")


def test_without_a_certificate_one_is_generated_once_kept_and_copied_to_the_controller(tmp_path: Path) -> None:
    """The server here is this machine (root, as on a server); the key goes to the Airflow user (uid 50000)."""
    server = tmp_path / "server"
    first = playbook(tmp_path, TLS, airflow_compose_dir=str(server))
    assert first.returncode == 0, first.stdout + first.stderr
    cert, key, copy = (
        server / "tls" / "cert.pem",
        server / "tls-key" / "key.pem",
        tmp_path / "secrets" / "server-1" / "tls.crt",
    )
    assert copy.read_bytes() == cert.read_bytes()
    assert (key.stat().st_mode & 0o777, key.stat().st_uid) == (0o600, 50000)
    assert "the API server uses the self-signed certificate generated on this server" in first.stdout
    # It is for the server's name, localhost and 127.0.0.1, and a strict client (Python 3.13's defaults) trusts it.
    context = ssl.create_default_context(cafile=str(cert))
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(cert, key)
    for name in ("server-1", "localhost", "127.0.0.1"):
        handshake(context, served, name)
    before = cert.read_bytes()
    second = playbook(tmp_path, TLS, airflow_compose_dir=str(server))
    assert second.returncode == 0, second.stdout + second.stderr
    assert "changed=0" in second.stdout
    assert cert.read_bytes() == before


def test_an_inventory_name_with_underscores_is_a_valid_server_name(tmp_path: Path) -> None:
    """Molecule's instance names (and some inventories') have underscores; the certificate is made for the name."""
    done = playbook(tmp_path, CHECK, airflow_compose_tls_server_name="molecule-gated_operator-default-debian12")
    assert done.returncode == 0, done.stdout
