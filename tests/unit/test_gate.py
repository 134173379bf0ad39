"""The gate (gate.py), the cluster policy that puts it in front of every task (policy.py), the provider info that
declares the ``[placement]`` section (provider.py), and GatedDockerOperator without a run in its context.

Real documents in files, the real fetcher and Airflow's real configuration (``AIRFLOW__PLACEMENT__*`` variables);
nothing is mocked. Real DAG runs of every kind of task are in tests/integration/test_every_task_gated.py.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest
from airflow.providers.standard.operators.python import PythonOperator
from airflow.providers.standard.sensors.date_time import DateTimeSensorAsync
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from airflow_placement import gate as gate_module
from airflow_placement import policy
from airflow_placement.gate import SettingsError, configured, gate, run_of
from airflow_placement.operators import GatedDockerOperator
from airflow_placement.provider import get_provider_info
from airflow_placement.settings import DEFAULTS, KEYS, OPTIONS, GateSettings, gate_settings

RUN = datetime(2026, 11, 20, 5, tzinfo=UTC)


class Lines:
    """A task log that keeps its lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def _add(self, msg: str, *args: Any) -> None:
        self.lines.append(msg % args)

    info = warning = error = _add

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def document(tmp_path: Path) -> Path:
    path = tmp_path / "airflow-dag-on-server.yaml"
    path.write_text("reports: server-1\n")
    return path


@pytest.fixture
def settings(document: Path, tmp_path: Path) -> GateSettings:
    return gate_settings({"host": "server-1"}, {"source": str(document), "cache_dir": str(tmp_path / "cache")})


@pytest.fixture
def placement_env(monkeypatch: pytest.MonkeyPatch, document: Path, tmp_path: Path) -> None:
    """This process as server-1 with the document, through Airflow's configuration as a server has it."""
    for key in KEYS:
        monkeypatch.delenv(f"AIRFLOW__PLACEMENT__{key.upper()}", raising=False)
    monkeypatch.setenv("AIRFLOW__PLACEMENT__SOURCE", str(document))
    monkeypatch.setenv("AIRFLOW__PLACEMENT__CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HOST_HOSTNAME", "server-1")


def context(when: datetime = RUN, run_id: str = "scheduled__2026-11-20T05:00:00+00:00") -> dict[str, Any]:
    return {"run_id": run_id, "logical_date": when, "dag_run": SimpleNamespace(run_after=when)}


# --- the gate ---


def test_the_owner_runs_and_logs_one_line(settings: GateSettings) -> None:
    log = Lines()
    decision = gate(context(), dag_id="reports", task_id="load", settings=settings, log=log)
    assert decision.run
    assert log.lines == [
        "placement: decision=run dag=reports task=load run=scheduled__2026-11-20T05:00:00+00:00 host=server-1 "
        f"owner=server-1 serial=- revision={decision.revision} reason=this host owns the run by entry 'reports'"
    ]


@pytest.mark.parametrize(
    ("not_owner", "can_echo", "outcome"),
    [
        ("skip", False, AirflowSkipException),
        ("skip", True, AirflowSkipException),
        ("fail", False, AirflowFailException),
        ("echo", False, AirflowSkipException),  # a task that cannot echo skips
        ("echo", True, None),  # GatedDockerOperator: the decision comes back and it runs an echo
    ],
)
def test_a_non_owner_never_goes_on_unless_it_echoes(
    settings: GateSettings, not_owner: str, can_echo: bool, outcome: type[Exception] | None
) -> None:
    log = Lines()
    settings = replace(settings, host="server-2", not_owner=not_owner)  # type: ignore[arg-type]
    if outcome is None:
        assert not gate(context(), dag_id="reports", task_id="load", settings=settings, log=log, can_echo=True).run
    else:
        with pytest.raises(outcome, match=r"owned by server-1 by entry 'reports'|not the owner"):
            gate(context(), dag_id="reports", task_id="load", settings=settings, log=log, can_echo=can_echo)
    assert "placement: decision=skip dag=reports task=load run=scheduled__" in log.text
    assert "host=server-2 owner=server-1" in log.text


@pytest.mark.parametrize(("on_unavailable", "raised"), [("skip", AirflowSkipException), ("fail", AirflowException)])
def test_without_a_trustworthy_document_nothing_runs(
    settings: GateSettings, document: Path, on_unavailable: str, raised: type[Exception]
) -> None:
    document.unlink()
    log = Lines()
    with pytest.raises(raised, match="decision=refuse") as caught:
        gate(
            context(),
            dag_id="reports",
            task_id="load",
            settings=replace(settings, on_unavailable=on_unavailable),  # type: ignore[arg-type]
            log=log,
        )
    assert (caught.type is AirflowSkipException) == (on_unavailable == "skip")
    assert log.lines[0].startswith("placement: decision=refuse dag=reports task=load run=scheduled__")


def test_a_server_without_a_name_runs_nothing(settings: GateSettings) -> None:
    log = Lines()
    with pytest.raises(AirflowSkipException, match="this server's name is unknown"):
        gate(context(), dag_id="reports", task_id="load", settings=replace(settings, host=None), log=log)


def test_a_run_dated_the_clock_skew_ahead_runs_nowhere(settings: GateSettings) -> None:
    """The gate gives decide() the clock-skew margin as its horizon."""
    ahead = datetime.now(UTC) + timedelta(seconds=settings.fetch.clock_skew + 1)
    log = Lines()
    with pytest.raises(AirflowSkipException, match="ahead"):
        gate(context(ahead), dag_id="reports", task_id="load", settings=settings, log=log)
    near = datetime.now(UTC) + timedelta(seconds=settings.fetch.clock_skew / 2)
    assert gate(context(near), dag_id="reports", task_id="load", settings=settings, log=log).run


@pytest.mark.parametrize(
    ("task_context", "expected"),
    [
        (None, ("-", None)),
        ({}, ("-", None)),
        (context(), ("scheduled__2026-11-20T05:00:00+00:00", RUN)),
        ({"run_id": "asset__x", "logical_date": None, "dag_run": SimpleNamespace(run_after=RUN)}, ("asset__x", RUN)),
    ],
)
def test_the_run_that_decides(task_context: dict[str, Any] | None, expected: tuple[str, datetime | None]) -> None:
    assert run_of(task_context) == expected


@pytest.mark.parametrize("task_context", [None, {}])
def test_without_a_run_it_decides_for_the_dag_now_and_says_so(
    settings: GateSettings, document: Path, task_context: dict[str, Any] | None
) -> None:
    past, future = "2026-01-01T00:00:00Z", "2099-01-01T00:00:00Z"
    document.write_text(
        f"reports:\n  owner: server-2\n  handover:\n    - {{at: '{past}', owner: server-1}}\n"
        f"    - {{at: '{future}', owner: server-2}}\n"
    )
    log = Lines()
    assert gate(task_context, dag_id="reports", task_id="load", settings=settings, log=log).run
    assert "run=- host=server-1 owner=server-1" in log.text
    assert "(no run in the context: decided for the DAG at the current time 20" in log.text


# --- settings from Airflow's configuration ---


def test_settings_come_from_airflow_with_the_provider_defaults(placement_env: None, document: Path) -> None:
    settings = configured()
    assert settings.fetch.source == str(document)
    assert settings.host == "server-1"
    assert (settings.fetch.ttl, settings.fetch.max_staleness, settings.fetch.retries) == (30.0, 300.0, 2)
    assert settings.not_owner == "skip"


def test_a_task_override_wins_over_airflow(placement_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__PLACEMENT__TTL", "7")
    assert configured().fetch.ttl == 7.0
    assert configured({"ttl": 3.0}).fetch.ttl == 3.0


def test_an_invalid_setting_is_named(placement_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__PLACEMENT__NOT_OWNER", "maybe")
    with pytest.raises(SettingsError, match="not_owner must be one of 'skip', 'echo', 'fail', not 'maybe'"):
        configured()


def test_a_key_airflow_does_not_know_is_an_error_not_a_default(
    placement_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gate_module, "KEYS", (*KEYS, "undeclared"))
    with pytest.raises(SettingsError, match=r"\[placement\] undeclared is not in Airflow's configuration"):
        configured()


# --- the provider info ---


def test_the_provider_info_is_what_airflow_validates() -> None:
    schema = json.loads(files("airflow").joinpath("provider_info.schema.json").read_text())
    info = get_provider_info()
    jsonschema.validate(info, schema)
    assert info["package-name"] == "airflow-placement"


def test_the_provider_declares_every_setting_with_the_defaults_the_gate_uses() -> None:
    options = get_provider_info()["config"]["placement"]["options"]
    assert list(options) == list(KEYS)
    assert {key: option["default"] for key, option in options.items()} == DEFAULTS
    assert all(
        option["description"] and option["type"] in ("string", "integer", "float") for option in options.values()
    )
    assert [(option.key, option.type) for option in OPTIONS] == [(key, o["type"]) for key, o in options.items()]
    defaults = gate_settings({}, {**DEFAULTS, "source": "/etc/placement.yaml"})
    assert (defaults.fetch.ttl, defaults.fetch.timeout, defaults.fetch.retries) == (30.0, 5.0, 2)


# --- the policy ---


def test_the_policy_gates_a_task_before_its_own_code_and_before_the_authors_hook(
    placement_env: None, document: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__PLACEMENT__TTL", "0")
    called: list[str] = []
    with DAG("reports", schedule=None) as dag:
        load = PythonOperator(task_id="load", python_callable=print, pre_execute=lambda ctx: called.append("hook"))
    policy.task_policy(load)
    policy.task_policy(load)  # Airflow may apply it again: still one gate
    assert isinstance(load._pre_execute_hook, policy._GateThen)
    assert load._pre_execute_hook.hook is not policy.gate_task
    load._pre_execute_hook({**context(), "task": load, "dag": dag})
    assert called == ["hook"]
    document.write_text("reports: server-2\n")
    with pytest.raises(AirflowSkipException, match="owned by server-2"):
        load._pre_execute_hook({**context(), "task": load, "dag": dag})
    assert called == ["hook"]


def test_the_policy_gates_every_mapped_instance() -> None:
    with DAG("reports", schedule=None):
        mapped = PythonOperator.partial(task_id="load", python_callable=print).expand(op_args=[[1], [2]])
    policy.task_policy(mapped)
    assert mapped.partial_kwargs["pre_execute"] is policy.gate_task
    assert mapped.unmap({"op_args": [1]})._pre_execute_hook is policy.gate_task


def test_a_task_set_to_start_in_the_triggerer_starts_on_a_worker() -> None:
    with DAG("reports", schedule=None):
        task = DateTimeSensorAsync(task_id="wait", target_time=RUN, start_from_trigger=True)
    policy.task_policy(task)
    assert task.start_from_trigger is False
    assert task._pre_execute_hook is policy.gate_task


def test_a_mapped_task_set_to_start_in_the_triggerer_starts_on_a_worker() -> None:
    with DAG("reports", schedule=None):
        mapped = DateTimeSensorAsync.partial(task_id="wait", start_from_trigger=True).expand(target_time=[RUN])
    policy.task_policy(mapped)
    instance = mapped.unmap({"target_time": RUN})
    assert (mapped.start_from_trigger, instance.start_from_trigger) == (False, False)
    assert instance._pre_execute_hook is policy.gate_task


def test_a_gated_docker_operator_is_left_to_decide_in_execute() -> None:
    with DAG("reports", schedule=None):
        task = GatedDockerOperator(task_id="load", image="busybox")
    policy.task_policy(task)
    assert task._pre_execute_hook is None


def test_a_dag_tagged_placement_everywhere_runs_without_the_document_and_says_so(
    placement_env: None, document: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    document.unlink()
    with DAG("housekeeping", schedule=None, tags=["placement:everywhere"]) as dag:
        clean = PythonOperator(task_id="clean", python_callable=print)
    policy.gate_task({**context(), "task": clean, "dag": dag})
    out = capfd.readouterr()
    assert (
        "placement: decision=everywhere dag=housekeeping task=clean run=scheduled__2026-11-20T05:00:00+00:00 "
        "host=server-1 reason=the DAG is tagged 'placement:everywhere': it runs on every server, the document is not "
        "read"
    ) in out.out + out.err


# --- GatedDockerOperator, a drop-in DockerOperator ---


@pytest.mark.parametrize("task_context", [None, {}])
def test_execute_without_a_run_decides_for_the_dag_now(
    placement_env: None, document: Path, task_context: dict[str, Any] | None, capfd: pytest.CaptureFixture[str]
) -> None:
    """The owner's side (the container runs) is in tests/integration/test_every_task_gated.py."""
    document.write_text('"*": server-2\n')
    operator = GatedDockerOperator(task_id="load", image="busybox")
    with pytest.raises(AirflowSkipException, match="owned by server-2"):
        operator.execute(task_context)
    out = capfd.readouterr()
    assert (
        "placement: decision=skip dag=adhoc_airflow task=load run=- host=server-1 owner=server-2" in out.out + out.err
    )
    assert "(no run in the context: decided for the DAG at the current time" in out.out + out.err
