"""The cluster policy that gates every task: registered as an ``airflow.policy`` entry point of the package.

Airflow applies ``task_policy`` to every task of every DAG it parses: in the DAG processor and, again, in the task
process that parses the DAG file before it runs a task. The policy puts the gate (:func:`airflow_placement.gate.gate`)
in front of the task's own code as its ``pre_execute`` hook, which Airflow calls before ``on_execute_callback``,
``pre_execute`` and ``execute``, and again before a deferred task resumes (``execute_complete``) and before each
poke of a sensor in reschedule mode. Whatever the operator, a task on a server that does not own its run is skipped
before any of its code runs.

- Mapped tasks get the hook through their partial arguments, so every mapped instance decides.
- A task set to start in the triggerer (``start_from_trigger``) would skip the worker, and so the gate: the policy
  makes it start on a worker, which then defers as usual (logged once per parse).
- ``GatedDockerOperator`` decides in its own ``execute`` (with its per-task settings): the policy leaves it alone,
  so it decides once.
- A DAG tagged ``placement:everywhere`` opts out: its tasks run on every server, each saying so in its log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from airflow.policies import hookimpl

log = logging.getLogger(__name__)

EVERYWHERE_TAG = "placement:everywhere"
"""A DAG with this tag opts out of the gate: each of its tasks runs on every server (and says so in its log)."""

HOOK = "pre_execute"


def gate_task(context: Mapping[str, Any]) -> None:
    """The placement gate (airflow_placement.policy): does this server run this task of this run?"""
    _gate(context)


def _gate(context: Mapping[str, Any]) -> None:
    """Decide for this task of this run; log; skip or fail unless it runs here (or its DAG opted out)."""
    from airflow.sdk.exceptions import AirflowFailException  # noqa: PLC0415 - loaded only when a task runs

    from airflow_placement.gate import SettingsError, configured, gate, run_of  # noqa: PLC0415
    from airflow_placement.settings import this_host  # noqa: PLC0415

    task = context["task"]
    dag = context["dag"]
    if EVERYWHERE_TAG in (dag.tags or ()):
        task.log.info(
            "placement: decision=everywhere dag=%s task=%s run=%s host=%s reason=the DAG is tagged %r: it runs on "
            "every server, the document is not read",
            dag.dag_id,
            task.task_id,
            run_of(context)[0],
            this_host() or "-",
            EVERYWHERE_TAG,
        )
        return
    try:
        settings = configured()
    except SettingsError as exc:
        raise AirflowFailException(f"placement: invalid settings: {exc}") from None
    gate(context, dag_id=dag.dag_id, task_id=task.task_id, settings=settings, log=task.log)


class _GateThen:
    """The gate, then a ``pre_execute`` hook the DAG author gave the task."""

    def __init__(self, hook: Callable[[Any], Any]) -> None:
        self.hook = hook

    def __call__(self, context: Mapping[str, Any]) -> Any:
        gate_task(context)
        return self.hook(context)


def _gated(hook: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    if hook is None or hook is gate_task or isinstance(hook, _GateThen):
        return hook or gate_task
    return _GateThen(hook)


@hookimpl
def task_policy(task: Any) -> None:
    """Gate ``task``: its ``pre_execute`` hook decides first (unless it is a GatedDockerOperator, which decides)."""
    mapped = bool(getattr(task, "is_mapped", False))
    operator_class = task.operator_class if mapped else type(task)
    if getattr(operator_class, "placement_gates_itself", False):
        return
    if task.start_from_trigger:
        log.warning(
            "placement: task %s of DAG %s would start in the triggerer, past the gate: it starts on a worker instead",
            task.task_id,
            task.dag_id,
        )
        task.start_from_trigger = False
        if mapped:
            task.partial_kwargs["start_from_trigger"] = False
    if mapped:
        task.partial_kwargs[HOOK] = _gated(task.partial_kwargs.get(HOOK))
    else:
        task._pre_execute_hook = _gated(task._pre_execute_hook)
