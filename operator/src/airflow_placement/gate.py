"""The gate: before a task's own code runs, load the placement document, decide, log one line, and skip or fail.

One function, :func:`gate`, used by ``GatedDockerOperator.execute`` and by the cluster policy
(:mod:`airflow_placement.policy`) that puts it in front of every other task, so that every task decides the same way
and says so in the same log line.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from airflow.sdk import conf
from airflow.sdk.exceptions import (
    AirflowConfigException,
    AirflowException,
    AirflowFailException,
    AirflowSkipException,
)

from airflow_placement.decision import Decision, decide
from airflow_placement.fetch import PlacementUnavailable
from airflow_placement.observe import decided, load_placement, refused
from airflow_placement.settings import KEYS, SECTION, GateSettings, gate_settings

NO_RUN = "-"


class TaskLog(Protocol):
    """A task's logger (Airflow's, or the standard library's)."""

    def info(self, msg: str, /, *args: Any) -> Any: ...
    def warning(self, msg: str, /, *args: Any) -> Any: ...
    def error(self, msg: str, /, *args: Any) -> Any: ...


class SettingsError(ValueError):
    """The ``[placement]`` settings cannot be read or are not valid."""


def configured(overrides: Mapping[str, Any] | None = None) -> GateSettings:
    """This server's gate settings: the ``[placement]`` section as Airflow reads it, with per-task ``overrides``.

    Every key is read without a fallback: its default comes from the provider info Airflow loaded
    (:mod:`airflow_placement.provider`), so a key Airflow does not know is an error, not a silent default.

    :param overrides: per-task values by key (None: not set).
    :raises SettingsError: naming the key that is missing or not valid.
    """
    config: dict[str, str | None] = {}
    for key in KEYS:
        try:
            config[key] = conf.get(SECTION, key)
        except AirflowConfigException:
            raise SettingsError(
                f"[{SECTION}] {key} is not in Airflow's configuration: is the airflow-placement provider installed?"
            ) from None
    try:
        return gate_settings(dict(overrides or {}), config)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def run_of(context: Mapping[str, Any] | None) -> tuple[str, datetime | None]:
    """The run a task context belongs to: its id, and the date that decides its owner.

    The date is the run's logical date, or its ``run_after`` for runs without one; None when the context carries
    no run (``None`` or ``{}``, as DockerOperator's own tests and code that composes operators pass).
    """
    if not context:
        return NO_RUN, None
    run_id = str(context.get("run_id") or NO_RUN)
    logical_date = context.get("logical_date")
    if logical_date is not None:
        return run_id, logical_date
    dag_run = context.get("dag_run")
    return run_id, getattr(dag_run, "run_after", None)


def gate(
    context: Mapping[str, Any] | None,
    *,
    dag_id: str,
    task_id: str,
    settings: GateSettings,
    log: TaskLog,
    can_echo: bool = False,
) -> Decision:
    """Decide whether this server runs ``task_id`` of the run in ``context``, log it in one line, and enforce it.

    The run's owner is decided by the run's date (see :func:`run_of`); without a run in the context, for the DAG at
    the current time, as the log line says.

    :param context: the task's context; None or ``{}`` when there is no run.
    :param dag_id: the DAG's id.
    :param task_id: the task's id (per-task entries of the document apply).
    :param settings: where the document comes from, this server's name, what to do when not running.
    :param log: where the decision's line goes (the task's log).
    :param can_echo: the task can run an echo instead (``not_owner = echo``); otherwise echo skips.
    :returns: the decision, when the task goes on: ``run``, or a ``skip`` the caller turns into an echo.
    :raises AirflowSkipException: this server does not run the task (or has no trustworthy document).
    :raises AirflowFailException: ``not_owner = fail`` on a non-owner.
    :raises AirflowException: ``on_unavailable = fail`` without a trustworthy document (retried like any failure).
    """
    run_id, when = run_of(context)
    now = datetime.now(UTC)
    try:
        if not settings.host:
            raise PlacementUnavailable("this server's name is unknown: set HOST_HOSTNAME or [placement] host")
        loaded = load_placement(settings.fetch)
    except (PlacementUnavailable, OSError) as exc:  # OSError: the cache directory is not usable
        message = f"placement: decision=refuse dag={dag_id} task={task_id} run={run_id} reason={exc}"
        log.error("%s", message)
        refused(
            settings.fetch.cache_dir,
            context=context,
            dag_id=dag_id,
            task_id=task_id,
            host=settings.host,
            reason=str(exc),
        )
        if settings.on_unavailable == "fail":
            raise AirflowException(message) from None
        raise AirflowSkipException(message) from None
    if loaded.note:
        log.warning("placement: %s", loaded.note)
    decision = decide(
        loaded.placement,
        dag_id=dag_id,
        task_id=task_id,
        host=settings.host,
        when=when or now,
        now=now,
        horizon=settings.fetch.horizon,
    )
    meta = loaded.placement.meta
    note = "" if when else f" (no run in the context: decided for the DAG at the current time {now.isoformat()})"
    log.info("%s%s", log_line(decision, run_id, meta.serial if meta else None), note)
    decided(settings.fetch.cache_dir, decision, context=context, loaded=loaded, log=log)
    if decision.run or (settings.not_owner == "echo" and can_echo):
        return decision
    if settings.not_owner == "fail":
        raise AirflowFailException(f"placement: this server is not the owner: {decision.reason}")
    raise AirflowSkipException(f"placement: {decision.reason}")


def log_line(decision: Decision, run_id: str, serial: int | None) -> str:
    """The decision's one log line."""
    return (
        f"placement: decision={decision.decision} dag={decision.dag_id} task={decision.task_id} run={run_id} "
        f"host={decision.host} owner={decision.owner} serial={serial if serial is not None else '-'} "
        f"revision={decision.revision} reason={decision.reason}"
    )
