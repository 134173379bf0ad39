"""The example inventory's test bed: a copy of inventory/example with tests/example/overlay on top, in .cache/example.

- ``prepare()``: the copy (the overlay's files added: a second inventory source with the containers' addresses and how
  Ansible reaches them, and ``group_vars/all/testbed.yml``, which loads after the example's own files), the vault
  password (the example's, ``example``), the bare Git repository the example publishes to (branch ``main`` with a
  first commit: the role needs the branch) and the forge stand-in's certificate (for the network's gateway address).
- ``playbook()``: ``ansible-playbook -i COPY`` with the vault password, its output in ``.cache/example/logs``.
- ``down()``: tests/example/down.sh (the containers, their volumes, the network, ``.cache/example``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from ansible.constants import DEFAULT_VAULT_ID_MATCH
from ansible.parsing.vault import VaultLib, VaultSecret

REPO = Path(__file__).resolve().parents[2]
BED = REPO / ".cache" / "example"
INVENTORY = BED / "inventory"
SECRETS = INVENTORY / ".secrets"
VAULT_PASSWORD = BED / "vault-password"
FORGE = BED / "forge"
BARE_REPO = FORGE / "data" / "airflow-placement.git"  # the overlay's dag_placement_git_repo
FORGE_CERT, FORGE_KEY = FORGE / "tls.crt", FORGE / "tls.key"  # the overlay's placement_source_ca
LOGS = BED / "logs"
_OVERLAY = yaml.safe_load((Path(__file__).parent / "overlay" / "group_vars" / "all" / "testbed.yml").read_text())
_HOSTS = yaml.safe_load((Path(__file__).parent / "overlay" / "testbed-hosts.yml").read_text())
SOURCE: str = _OVERLAY["placement_source"]
GATEWAY = SOURCE.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[0]
PORT = int(SOURCE.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
SERVERS: dict[str, dict[str, Any]] = _HOSTS["all"]["children"]["airflow_servers"]["hosts"]
LABEL: str = _OVERLAY["demo_label"]
ARCHIVES = Path(_OVERLAY["demo_image_archives"])
IMAGES: list[str] = ["debian-systemd:12", *_OVERLAY["demo_server_images"]]
NETWORK: str = _OVERLAY["demo_network"]


def prepare() -> None:
    shutil.rmtree(BED, ignore_errors=True)
    shutil.copytree(REPO / "inventory" / "example", INVENTORY)
    shutil.copytree(Path(__file__).parent / "overlay", INVENTORY, dirs_exist_ok=True)
    VAULT_PASSWORD.write_text("example\n")
    VAULT_PASSWORD.chmod(0o600)
    LOGS.mkdir(parents=True)
    # The repository the example pushes to, with the branch it publishes on (dag_placement_git_branch).
    BARE_REPO.parent.mkdir(parents=True)
    git = ["git", "-c", "user.name=test bed", "-c", "user.email=bed@localhost"]
    subprocess.run([*git, "init", "--quiet", "--bare", "--initial-branch=main", str(BARE_REPO)], check=True)
    seed = BED / "seed"
    subprocess.run([*git, "init", "--quiet", "--initial-branch=main", str(seed)], check=True)
    (seed / "README").write_text("The DAG placement document, published by the dag_placement role.\n")
    subprocess.run([*git, "-C", str(seed), "add", "README"], check=True)
    subprocess.run([*git, "-C", str(seed), "commit", "--quiet", "-m", "Start"], check=True)
    subprocess.run([*git, "-C", str(seed), "push", "--quiet", str(BARE_REPO), "main"], check=True)
    shutil.rmtree(seed)
    # The stand-in forge's certificate, for the address the servers reach it at.
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"),
            *("-days", "7", "-subj", "/CN=forge stand-in", "-addext", f"subjectAltName=IP:{GATEWAY}"),
            *("-keyout", str(FORGE_KEY), "-out", str(FORGE_CERT)),
        ],
        check=True,
        capture_output=True,
    )


def vault_value(name: str) -> str:
    """A value of the example's vault.yml, decrypted with the example's password."""

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!vault", lambda loader, node: loader.construct_scalar(node))  # type: ignore[arg-type]
    values = yaml.load((INVENTORY / "group_vars" / "all" / "vault.yml").read_text(), Loader=Loader)
    vault = VaultLib([(DEFAULT_VAULT_ID_MATCH, VaultSecret(VAULT_PASSWORD.read_text().strip().encode()))])
    return str(vault.decrypt(values[name]).decode())


def playbook(playbook: str, log: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``ansible-playbook -i COPY PLAYBOOK ARGS`` with the vault password; its output in LOGS/``log`` (and stdout)."""
    env = {
        **os.environ,
        "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}",
        "ANSIBLE_ROLES_PATH": str(REPO / "ansible" / "roles"),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_HOST_KEY_CHECKING": "False",
    }
    command = [str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", str(INVENTORY)]
    command += ["--vault-password-file", str(VAULT_PASSWORD), str(REPO / playbook), *args]
    with (LOGS / log).open("w") as output:  # written as it runs: tail -f it to follow
        status = subprocess.run(command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT, check=False)
    return subprocess.CompletedProcess(command, status.returncode, (LOGS / log).read_text(), "")


def down() -> None:
    subprocess.run([str(Path(__file__).parent / "down.sh")], check=False)
