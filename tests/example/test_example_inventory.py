"""inventory/example as written, on three servers: Git publishing, the raw file read with a token, signed documents.

Opt-in (about 10 min, about 5 GB more memory at its peak; needs root, Podman and images/build.sh's archives), not
one of scripts/test.sh's default stages:

    scripts/test.sh example     # = .venv/bin/pytest -q -s tests/example; tests/example/down.sh

The module's fixture copies inventory/example with tests/example/overlay on top (tests/example/bed.py: only how the
servers are reached, where they sit, the images, the Git repository and the raw-file URL change), makes the three
servers (airflow-1/2/3.example.org) as systemd containers with nested Podman (demo/servers.yml), starts the stand-in
for the forge's raw-file host (tests/example/forge.py: no forge runs here) and provisions them with
ansible/site.yml. Then:

- the stand-in refuses the raw file without the example's token or with another one, and serves the document
  dag_placement pushed, signed with the key whose public half every server holds;
- placement_example (owned by airflow-1 through the catch-all), triggered with one logical date on all three: it runs
  on airflow-1 only (decision=run there, its containers' output in the log), skips on the other two (decision=skip,
  owner airflow-1), and each server read the document from the stand-in with the token; the task image started
  once per task that ran on airflow-1 and never on the others;
- an unsigned document pushed to the repository (giving every DAG to airflow-2) is read by every server and
  refused: the next run still runs on airflow-1 only.

The bed is removed at the end (tests/example/down.sh), even when a test fails (EXAMPLE_KEEP_BED=1 keeps it, to look
around: the copy of the inventory and the playbooks' logs are in .cache/example).
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

import bed
from forge import Forge

from airflow_placement.document import parse_document
from airflow_placement.signing import load_public_key, verify

DAG = "placement_example"  # dags/: owned by airflow-1.example.org through the example's catch-all
OWNER = "airflow-1.example.org"
TASKS = ("extract", "report")
TASK_IMAGE = "localhost/airflow-placement/busybox:latest"
TTL = int(
    yaml.safe_load((bed.REPO / "inventory/example/group_vars/all/placement.yml").read_text())["placement_ttl_seconds"]
)
RUN_DEADLINE = 600  # seconds a triggered run may take to finish on a loaded machine (a wait, not an assertion)


class Api:
    """A server's Airflow REST API at its published 127.0.0.1 port, HTTPS with its certificate, FAB login as admin."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.base = f"https://127.0.0.1:{bed.SERVERS[server]['demo_server_ui_port']}"
        secrets = bed.SECRETS / "airflow_compose" / server
        self.tls = ssl.create_default_context(cafile=str(secrets / "tls.crt"))
        self.password = (secrets / "admin_password").read_text().strip()
        self.token: str | None = None

    def _send(self, method: str, path: str, body: Any = None, auth: bool = True) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            if self.token is None:
                status, answer = self._send(
                    "POST", "/auth/token", {"username": "admin", "password": self.password}, False
                )
                assert status in (200, 201), f"{self.server}: /auth/token answered {status}: {answer}"
                self.token = answer["access_token"]
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60, context=self.tls) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def call(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = self._send(method, path, body)
        if status == 401:  # the token expired
            self.token = None
            status, answer = self._send(method, path, body)
        assert status in (200, 201), f"{self.server}: {method} {path} answered {status}: {answer}"
        return answer

    def trigger(self, dag_id: str, when: datetime) -> str:
        return str(
            self.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": when.isoformat()})["dag_run_id"]
        )

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")["state"])

    def task_instances(self, dag_id: str, run_id: str = "~") -> list[dict[str, Any]]:
        run = urllib.parse.quote(run_id, safe="~")
        answer = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run}/taskInstances?limit=1000")
        return list(answer["task_instances"])

    def task_log(self, ti: dict[str, Any]) -> str:
        run_id = urllib.parse.quote(ti["dag_run_id"], safe="")
        answer = self.call(
            "GET",
            f"/api/v2/dags/{ti['dag_id']}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/{ti['try_number']}"
            "?full_content=true",
        )
        lines = answer.get("content") or []
        return "\n".join(str(line.get("event", "")) if isinstance(line, dict) else str(line) for line in lines)


def _ready() -> str | None:
    """Why this machine cannot hold the bed, or None."""
    if os.geteuid() != 0 or shutil.which("podman") is None:
        return "needs root and Podman (scripts/bootstrap.sh)"
    missing = [name for name in bed.IMAGES if not (bed.ARCHIVES / f"{name.replace(':', '-')}.tar").exists()]
    if missing:
        return f"needs images/build.sh's archives of {', '.join(missing)} in {bed.ARCHIVES}"
    return None


@pytest.fixture(scope="module")
def forge() -> Iterator[Forge]:
    """The bed up: the copy, the servers, the forge stand-in, site.yml; everything removed afterwards."""
    problem = _ready()
    if problem:
        pytest.fail(f"the example's test bed {problem}")
    bed.down()  # what an interrupted run left
    started: Forge | None = None
    try:
        bed.prepare()
        start = time.monotonic()
        servers = bed.playbook("demo/servers.yml", "servers.log")
        print(f"\nexample bed: demo/servers.yml {time.monotonic() - start:.0f} s", flush=True)
        assert servers.returncode == 0, f"demo/servers.yml failed, see {bed.LOGS / 'servers.log'}"
        started = Forge(
            {"data/airflow-placement": bed.BARE_REPO},
            bed.vault_value("vault_placement_source_token"),
            address=bed.GATEWAY,
            port=bed.PORT,
            cert=bed.FORGE_CERT,
            key=bed.FORGE_KEY,
        ).start()
        start = time.monotonic()
        site = bed.playbook("ansible/site.yml", "site.log")
        print(f"example bed: ansible/site.yml {time.monotonic() - start:.0f} s", flush=True)
        assert site.returncode == 0, f"ansible/site.yml failed, see {bed.LOGS / 'site.log'}:\n{site.stdout[-3000:]}"
        yield started
    finally:
        if started is not None:
            started.stop()
        if os.environ.get("EXAMPLE_KEEP_BED") != "1":
            bed.down()


def _get(token: str | None) -> tuple[int, bytes]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    request = urllib.request.Request(bed.SOURCE, headers=headers)
    try:
        with urllib.request.urlopen(
            request, timeout=30, context=ssl.create_default_context(cafile=str(bed.FORGE_CERT))
        ) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _published() -> str:
    """The document at the head of the repository's branch, as dag_placement pushed it."""
    return subprocess.run(
        ["git", "--git-dir", str(bed.BARE_REPO), "show", "main:airflow-dag-on-server.yaml"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _blob() -> str:
    """The id of the document's blob at the head of the branch (what the stand-in serves, as its ETag)."""
    return subprocess.run(
        ["git", "--git-dir", str(bed.BARE_REPO), "rev-parse", "main:airflow-dag-on-server.yaml"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def _push(work: Path, text: str) -> None:
    """A commit of ``text`` as the document pushed to the repository's branch, as an intruder would."""
    git = ["git", "-c", "user.name=intruder", "-c", "user.email=intruder@localhost"]
    subprocess.run([*git, "clone", "--quiet", "--branch", "main", str(bed.BARE_REPO), str(work / "clone")], check=True)
    (work / "clone" / "airflow-dag-on-server.yaml").write_text(text)
    subprocess.run([*git, "-C", str(work / "clone"), "commit", "--quiet", "-am", "Move everything"], check=True)
    subprocess.run([*git, "-C", str(work / "clone"), "push", "--quiet", "origin", "main"], check=True)


def _run_everywhere(when: datetime) -> dict[str, tuple[Api, str]]:
    """``DAG`` triggered with logical date ``when`` on every server, waited for until each run has finished."""
    runs = {}
    for server in bed.SERVERS:
        api = Api(server)
        runs[server] = (api, api.trigger(DAG, when))
    deadline = time.monotonic() + RUN_DEADLINE
    for server, (api, run_id) in runs.items():
        while (state := api.run_state(DAG, run_id)) not in ("success", "failed"):
            assert time.monotonic() < deadline, f"{server}: run {run_id} still {state} after {RUN_DEADLINE} s"
            time.sleep(5)
    return runs


def _decisions(api: Api, run_id: str) -> dict[str, tuple[str, str]]:
    """task id -> (its state, its log) for ``run_id`` of ``DAG`` on ``api``'s server."""
    return {ti["task_id"]: (ti["state"], api.task_log(ti)) for ti in api.task_instances(DAG, run_id)}


def _task_image_starts(server: str) -> int:
    """How many containers of the task image the server's Podman has started (the nested Podman's events)."""
    answer = subprocess.run(
        [
            *("podman", "exec", server, "podman", "events", "--stream=false", "--since", "24h"),
            *("--filter", "event=start", "--format", "{{.Image}}"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return sum(1 for line in answer.stdout.splitlines() if line.strip() == TASK_IMAGE)


def test_the_forge_stand_in_wants_the_token_and_serves_the_signed_document(forge: Forge) -> None:
    assert _get(None)[0] == 401
    assert _get("not-the-example-token")[0] == 403
    status, body = _get(bed.vault_value("vault_placement_source_token"))
    assert status == 200
    assert body.decode() == _published()
    placement = parse_document(body, origin=bed.SOURCE)
    public_key = (bed.SECRETS / "dag_placement" / "signing_key.pub").read_text().strip()
    verify(placement.meta, load_public_key(public_key))  # raises unless signed with the publisher's key


def test_a_dag_runs_on_its_owner_only(forge: Forge) -> None:
    runs = _run_everywhere(datetime.now(UTC).replace(microsecond=0) - timedelta(days=1))
    for server, (api, run_id) in runs.items():
        decisions = _decisions(api, run_id)
        assert set(decisions) == set(TASKS), server
        for task, (state, text) in decisions.items():
            if server == OWNER:
                assert state == "success", (server, task, text)
                assert f"decision=run dag={DAG} task={task}" in text, (server, task, text)
                assert f"{task}ing on {OWNER}" in text, (server, task, text)  # the container's own output
            else:  # extract decides and skips; report, downstream of a skipped task, is skipped without running
                assert state == "skipped", (server, task, text)
                assert "decision=run" not in text, (server, task, text)
        if server != OWNER:
            assert f"decision=skip dag={DAG} task={TASKS[0]}" in decisions[TASKS[0]][1], (server, decisions)
            assert f"owner={OWNER}" in decisions[TASKS[0]][1], (server, decisions)
    # Every server read the signed document from the stand-in, with the token, and was never refused for want of it
    # (a 404 before dag_placement's first push is not a refusal: the DAG's run at unpause decided then).
    signed = _blob()
    for server, facts in bed.SERVERS.items():
        served = [r for r in forge.served() if r.client == facts["demo_server_ip"]]
        assert any(r.status == 200 and r.blob == signed for r in served), (server, served)
        assert not [r for r in served if r.status in (401, 403)], (server, served)
    # The task image started once per task that ran on the owner (this run and any scheduled one), never elsewhere.
    ran = [ti for ti in Api(OWNER).task_instances(DAG) if ti["state"] == "success"]
    assert _task_image_starts(OWNER) == len(ran) >= len(TASKS)
    for server in bed.SERVERS:
        if server != OWNER:
            assert _task_image_starts(server) == 0, server


def test_an_unsigned_document_is_refused(forge: Forge, tmp_path: Path) -> None:
    """Whoever can push to the repository (or the forge) cannot move a DAG without the publisher's key."""
    document = yaml.safe_load(_published())
    assert document["@meta"].pop("signature")
    document["@meta"]["serial"] += 1
    document["*"] = "airflow-2.example.org"  # every DAG nobody listed, placement_example among them, to airflow-2
    _push(tmp_path, yaml.safe_dump(document, sort_keys=False))
    unsigned = _blob()
    time.sleep(TTL + 5)  # every server's copy past its TTL: the next decision reads the source again
    runs = _run_everywhere(datetime.now(UTC).replace(microsecond=0) - timedelta(days=2))
    for server, (api, run_id) in runs.items():
        served = [r for r in forge.served() if r.client == bed.SERVERS[server]["demo_server_ip"]]
        assert any(r.status == 200 and r.blob == unsigned for r in served), (server, served)
        decisions = _decisions(api, run_id)
        assert "the document is not signed (no @meta.signature)" in decisions[TASKS[0]][1], (server, decisions)
        for task, (state, text) in decisions.items():
            # The owner decides from the signed copy it holds (while within its maximum staleness); no one runs
            # what the unsigned document says.
            assert "owner=airflow-2.example.org" not in text, (server, task, text)
            assert (state == "success") == (server == OWNER and "decision=run" in text), (server, task, text)
    assert _task_image_starts("airflow-2.example.org") == 0
