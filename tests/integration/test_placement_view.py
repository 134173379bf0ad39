"""The placement view in a real Airflow API server, seen through a real headless browser (Debian's chromium).

One Airflow home plays server-1 (SQLite, SimpleAuthManager with one user whose password is in a file): the DAGs in
``dags_placement_view/``, a run of ``etl_daily`` triggered by hand although server-2 owns it, a copy of the document
in the placement cache as the gate leaves it, and the gate's record of recent decisions. The browser logs in through
Airflow's login page, opens the view from the navigation and reads it; screenshots go to ``tests/artifacts/``.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from airflow_harness import REPO, VENV_BIN, Airflow
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from airflow_placement import observe
from airflow_placement.decision import decide
from airflow_placement.document import Placement, parse_document
from airflow_placement.fetch import FetchSettings, Loaded, PlacementUnavailable

HERE = Path(__file__).parent
ARTIFACTS = REPO / "tests" / "artifacts"
HOST, USER, PASSWORD = "server-1", "viewer", "view-it-all"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
WAIT = 60  # seconds the browser and the server get to answer; a deadline for failures, not a measured time

pytestmark = pytest.mark.airflow


def document(serial: int, renewed: datetime) -> str:
    """A document as the publisher writes it for file publishing: reports moves to server-2 in two hours."""
    handover = (renewed + timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    return (
        f'"@meta":\n  serial: {serial}\n  issued: "{renewed.isoformat()}"\n  renewed: "{renewed.isoformat()}"\n'
        f'reports:\n  owner: server-1\n  handover:\n    - {{at: "{handover.isoformat()}", owner: server-2}}\n'
        "  tasks:\n    publish: server-2\n"
        "'etl_*': server-2\n"
        "housekeeping: server-1\n"
    )


@dataclass
class Server:
    """server-1's API server on 127.0.0.1, and what the gate there uses."""

    url: str
    airflow: Airflow
    fetch: FetchSettings
    auth: dict[str, str]

    def token(self) -> str:
        answer = requests.post(f"{self.url}/auth/token", json={"username": USER, "password": PASSWORD}, timeout=WAIT)
        answer.raise_for_status()
        return str(answer.json()["access_token"])

    def state(self) -> dict[str, Any]:
        answer = requests.get(
            f"{self.url}/placement/api/state", headers={"Authorization": f"Bearer {self.token()}"}, timeout=WAIT
        )
        answer.raise_for_status()
        data: dict[str, Any] = answer.json()
        return data


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Run:
    """The ``dag_run`` of a task context: only its type is read."""

    def __init__(self, run_type: str) -> None:
        self.run_type = run_type


def record_decisions(fetch: FetchSettings, placement: Placement) -> None:
    """What the gate records on server-1: a scheduled run of housekeeping, then the manual run of etl_daily."""
    loaded = Loaded(placement, 1.0, "cache")
    now = datetime.now(UTC)
    for dag_id, run_type in (("housekeeping", "scheduled"), ("etl_daily", "manual")):
        decision = decide(placement, dag_id=dag_id, task_id="work", host=HOST, when=now, now=now)
        context = {"run_id": f"{run_type}__{dag_id}", "dag_run": Run(run_type)}
        observe.decided(fetch.cache_dir, decision, context=context, loaded=loaded, log=logging.getLogger("task"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("placement-view")
    (home / "passwords.json").write_text(f'{{"{USER}": "{PASSWORD}"}}')
    airflow = Airflow(home=home, placement_file=home / "placement.yaml", dags_folder=HERE / "dags_placement_view")
    auth = {
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
    }
    airflow.check("db", "migrate", host=HOST, **auth)
    airflow.check("dags", "reserialize", host=HOST, **auth)
    airflow.check("dags", "trigger", "etl_daily", host=HOST, **auth)  # by hand, on a server that does not own it

    env = airflow.env(HOST, **auth)
    fetch = FetchSettings(
        source=env["AIRFLOW__PLACEMENT__SOURCE"], cache_dir=Path(env["AIRFLOW__PLACEMENT__CACHE_DIR"])
    )
    airflow.placement_file.write_text(document(7, datetime.now(UTC).replace(microsecond=0)))
    observe.load_placement(fetch)  # the gate's first read, as a task would make it
    record_decisions(fetch, parse_document(airflow.placement_file.read_bytes()))

    port = free_port()
    log = (home / "api-server.log").open("w")
    process = subprocess.Popen(
        [str(VENV_BIN / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT * 2
        while True:
            try:
                if requests.get(f"{url}/api/v2/monitor/health", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the API server did not start:\n{(home / 'api-server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield Server(url, airflow, fetch, auth)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    for program in (CHROMIUM, CHROMEDRIVER):
        if not program.exists():
            pytest.fail(f"{program} is missing: run scripts/bootstrap.sh (it installs chromium and chromium-driver)")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1500"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def open_view(browser: WebDriver, server: Server) -> None:
    """Open the view from the UI's navigation, logging in first when Airflow asks, and switch into its frame."""
    browser.switch_to.default_content()
    browser.get(f"{server.url}/")
    wait = WebDriverWait(browser, WAIT)
    wait.until(
        expected_conditions.any_of(
            expected_conditions.presence_of_element_located((By.NAME, "username")),
            expected_conditions.presence_of_element_located((By.XPATH, "//a[normalize-space()='Placement']")),
        )
    )
    if browser.find_elements(By.NAME, "username"):
        browser.find_element(By.NAME, "username").send_keys(USER)
        browser.find_element(By.NAME, "password").send_keys(PASSWORD)
        browser.find_element(By.XPATH, "//button[normalize-space()='Sign in']").click()
    wait.until(expected_conditions.element_to_be_clickable((By.XPATH, "//a[normalize-space()='Placement']"))).click()
    wait.until(expected_conditions.frame_to_be_available_and_switch_to_it((By.TAG_NAME, "iframe")))
    wait.until(expected_conditions.presence_of_element_located((By.ID, "decisions")))


def screenshot(browser: WebDriver, name: str) -> Path:
    browser.switch_to.default_content()
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    assert browser.save_screenshot(str(path)), f"no screenshot written to {path}"
    return path


def rows(browser: WebDriver, table: str) -> list[str]:
    return [row.text for row in browser.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")]


def test_the_plugin_loads_once_without_errors(server: Server) -> None:
    headers = {"Authorization": f"Bearer {server.token()}"}
    errors = requests.get(f"{server.url}/api/v2/plugins/importErrors", headers=headers, timeout=WAIT).json()
    assert errors["import_errors"] == []
    plugins = requests.get(f"{server.url}/api/v2/plugins", headers=headers, timeout=WAIT).json()["plugins"]
    [placement] = [plugin for plugin in plugins if plugin["name"] == "placement"]
    assert [view["url_route"] for view in placement["external_views"]] == ["placement"]


def test_the_json_api_needs_a_login(server: Server) -> None:
    assert requests.get(f"{server.url}/placement/api/state", timeout=WAIT).status_code == 401
    page = requests.get(f"{server.url}/placement/", timeout=WAIT, allow_redirects=False)
    assert page.status_code == 307
    assert page.headers["location"].startswith("/auth/login?next=")


def test_the_json_api_serves_this_servers_state(server: Server) -> None:
    state = server.state()
    assert (state["host"], state["status"], state["document"]["serial"]) == (HOST, "ok", 7)
    owners = {dag["dag_id"]: (dag["owner"], dag["here"]) for dag in state["dags"]}
    assert owners == {
        "etl_daily": ("server-2", False),
        "housekeeping": ("server-1", True),
        "reports": ("server-1", True),
        "unplaced": (None, False),
    }
    [manual] = state["manual_runs"]
    assert (manual["dag_id"], manual["owner"], manual["here"]) == ("etl_daily", "server-2", False)
    assert [d["dag_id"] for d in state["decisions"]] == ["etl_daily", "housekeeping"]


def test_the_view_in_the_browser(server: Server, browser: WebDriver) -> None:
    open_view(browser, server)
    assert browser.find_element(By.ID, "host").text == HOST
    status = browser.find_element(By.ID, "status")
    assert status.get_attribute("data-status") == "ok"
    assert status.text.startswith("This server holds a trustworthy placement document.")
    assert browser.find_element(By.ID, "serial").text == "7"
    assert "vouched for by the publisher (@meta)" in browser.find_element(By.ID, "lease").text
    dags = rows(browser, "dags")
    assert dags[0].startswith("etl_daily server-2 etl_* none")
    assert dags[1].startswith("housekeeping server-1 (this server) housekeeping none")
    assert dags[2].startswith("reports server-1 (this server) reports to server-2 for runs from")
    assert "task publish: server-2" in dags[2]
    assert dags[3].startswith("unplaced nobody: runs on no server")
    [manual] = rows(browser, "manual-runs")
    assert manual.startswith("etl_daily manual__")
    assert "which does not own it: server-2 owns runs of this DAG" in manual
    assert "trigger it in server-2's Airflow instead" in manual
    decisions = rows(browser, "decisions")
    assert "skip etl_daily / work manual__etl_daily (by hand) server-2" in decisions[0]
    assert "trigger it in server-2's Airflow instead" in decisions[0]
    assert "run housekeeping / work scheduled__housekeeping server-1" in decisions[1]
    shot = screenshot(browser, "placement-view.png")
    assert shot.stat().st_size > 10_000


def test_a_run_triggered_by_hand_on_a_non_owner_says_where_it_belongs(server: Server) -> None:
    """A real run of etl_daily on server-1 (``airflow dags test`` triggers it by hand): the gate skips its task, and
    the task's log and the view both say that server-2 owns the run and that it should be triggered there."""
    result = server.airflow.run("dags", "test", "etl_daily", host=HOST, **server.auth)
    log = result.stdout + result.stderr
    [notice] = [line for line in log.splitlines() if "was triggered by hand on server-1" in line]
    assert "which does not own it: server-2 owns runs of this DAG dated" in notice
    assert "Nothing runs here; trigger it in server-2's Airflow instead" in notice
    [run_id] = re.findall(r"run (manual__\S+) of DAG etl_daily", notice)
    newest = server.state()["decisions"][0]
    assert (newest["run_id"], newest["outcome"], newest["owner"], newest["run_type"]) == (
        run_id,
        "skip",
        "server-2",
        "manual",
    )
    assert newest["notice"] in notice


def test_the_view_warns_when_the_publisher_stops_renewing(server: Server, browser: WebDriver) -> None:
    """The publisher's last renewal is ten minutes old: the gate's next read refuses the copy, the view says so."""
    stale = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    server.airflow.placement_file.write_text(document(8, stale))
    with pytest.raises(PlacementUnavailable):
        observe.load_placement(FetchSettings(source=server.fetch.source, cache_dir=server.fetch.cache_dir, ttl=0))
    assert server.state()["status"] == "refusing"
    open_view(browser, server)
    status = browser.find_element(By.ID, "status")
    assert status.get_attribute("data-status") == "refusing"
    assert status.text.startswith("Warning\nThis server has no trustworthy placement document and runs nothing: ")
    assert "over the maximum staleness of 300 s" in status.text
    assert browser.find_element(By.ID, "serial").text == "8"
    screenshot(browser, "placement-view-refusing.png")
