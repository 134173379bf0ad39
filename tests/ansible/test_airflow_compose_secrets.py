"""The airflow_compose role never gives a server that already runs the stack new secrets: a controller that lacks
them (a fresh checkout; the generated secrets are git-ignored) stops with one line saying how to restore them, before
anything is written. Real ansible-playbook runs of the role's own check (tasks/secrets.yml, with its defaults and
vars) against a server that is this machine (``ansible_connection: local``) with its compose directory in a
temporary directory; the Molecule scenarios run the whole role."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "ansible" / "roles"
KEY = base64.urlsafe_b64encode(b"the-key-the-server-encrypts-with").decode()
NEW_KEY = base64.urlsafe_b64encode(b"a-newer-key-for-a-key-rotation-!").decode()
PASSWORD = "theDatabasePasswordOfTheServer1"

PLAYBOOK = """
- hosts: server-1
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: airflow_compose
        tasks_from: secrets
"""


class Server:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.compose_dir = path / "server" / "airflow-compose"
        self.secrets_dir = path / "controller" / ".secrets" / "airflow_compose"

    def runs_the_stack(self) -> None:
        """airflow.env as the role wrote it on an earlier run."""
        self.compose_dir.mkdir(parents=True)
        (self.compose_dir / "airflow.env").write_text(
            f"AIRFLOW__CORE__FERNET_KEY={KEY}\nAIRFLOW__API_AUTH__JWT_SECRET=jwt-secret-of-the-server-1\n"
            f"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=postgresql+psycopg2://airflow:{PASSWORD}@postgres/airflow\n"
        )

    def controller_keeps_its_secrets(self) -> None:
        """The controller's generated secrets, as the role's defaults read them (the Fernet key is derived)."""
        host = self.secrets_dir / "server-1"
        host.mkdir(parents=True)
        (host / "fernet_key").write_text(base64.b64decode(KEY).decode() + "\n")
        (host / "db_password").write_text(PASSWORD + "\n")

    def apply(self, **variables: object) -> subprocess.CompletedProcess[str]:
        playbook = self.path / "check.yml"
        playbook.write_text(PLAYBOOK)
        inventory = self.path / "hosts.yml"
        inventory.write_text("all:\n  hosts:\n    server-1:\n")
        extra = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "airflow_compose_dir": str(self.compose_dir),
            "airflow_compose_secrets_dir": str(self.secrets_dir),
            **variables,
        }
        command = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), str(playbook)]
        return subprocess.run(
            [*command, "-e", json.dumps(extra)],
            capture_output=True,
            text=True,
            check=False,
            env={"PATH": "/usr/bin:/bin", "ANSIBLE_ROLES_PATH": str(ROLES), "ANSIBLE_NOCOLOR": "1"},
        )


def _failure(run: subprocess.CompletedProcess[str]) -> str:
    fatal = [line for line in run.stdout.splitlines() if line.startswith("fatal: ")]
    assert fatal, run.stdout + run.stderr
    return str(json.loads(fatal[-1].split(" => ", 1)[1])["msg"])


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return Server(tmp_path)


def test_a_controller_without_the_servers_secrets_stops_in_one_line_and_writes_nothing(server: Server) -> None:
    server.runs_the_stack()
    before = (server.compose_dir / "airflow.env").read_text()
    run = server.apply()
    assert run.returncode != 0
    message = _failure(run)
    assert message == (
        f"airflow_compose: server-1 already has a metadata database password ({server.compose_dir}/airflow.env) other "
        "than the controller's; nothing was changed. Restore the controller's secrets "
        f"({server.secrets_dir}/server-1/ from a backup, or the airflow_compose_* secrets from Vault) and run again"
    )
    assert (server.compose_dir / "airflow.env").read_text() == before
    assert PASSWORD not in run.stdout and KEY not in run.stdout


def test_a_controller_with_the_servers_secrets_goes_on(server: Server) -> None:
    server.runs_the_stack()
    server.controller_keeps_its_secrets()
    run = server.apply()
    assert run.returncode == 0, run.stdout


def test_a_new_server_gets_new_secrets(server: Server) -> None:
    run = server.apply()
    assert run.returncode == 0, run.stdout


def test_a_rotation_lists_the_new_key_first_and_keeps_the_current_one(server: Server) -> None:
    server.runs_the_stack()
    server.controller_keeps_its_secrets()
    assert server.apply(airflow_compose_fernet_key=[NEW_KEY, KEY]).returncode == 0


def test_a_fernet_key_that_drops_the_current_one_stops_in_one_line(server: Server) -> None:
    server.runs_the_stack()
    server.controller_keeps_its_secrets()
    run = server.apply(airflow_compose_fernet_key=NEW_KEY)
    assert run.returncode != 0
    message = _failure(run)
    assert message.startswith("airflow_compose: server-1 already has a Fernet key (")
    assert message.endswith("; to rotate the Fernet key, list the new key first and the current one after it")
    assert "\n" not in message and KEY not in run.stdout and NEW_KEY not in run.stdout


def test_the_role_checks_the_secrets_before_it_writes_anything() -> None:
    tasks = yaml.safe_load((ROLES / "airflow_compose" / "tasks" / "main.yml").read_text())
    steps = [task["ansible.builtin.import_tasks"] for task in tasks]
    assert steps.index("secrets.yml") < steps.index("install.yml") < steps.index("configure.yml")
