"""``GatedDockerOperator``: a DockerOperator that runs its container only on the server that owns the DAG run."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.docker.operators.docker import DockerOperator
from airflow.sdk import conf
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from airflow_placement.decision import Decision, decide
from airflow_placement.fetch import PlacementUnavailable, load_placement
from airflow_placement.settings import (
    KEYS,
    SECTION,
    GateSettings,
    NotOwner,
    OnUnavailable,
    check_choice,
    gate_settings,
)

if TYPE_CHECKING:
    from airflow.sdk import Context


def run_date(context: Context) -> datetime:
    """The date that decides a run's owner: its logical date, or run_after for runs that have none."""
    logical_date = context.get("logical_date")
    if logical_date is not None:
        return logical_date
    return context["dag_run"].run_after


class GatedDockerOperator(DockerOperator):
    """Run a command in a container only on the server that owns this DAG run in the placement document.

    Before anything touches the container engine, ``execute`` reads the placement document (through a cache shared
    by all tasks on this server) and decides by the run's logical date. On the owner the container runs as with
    :class:`DockerOperator`; elsewhere the task is skipped (or, as configured, runs an ``echo`` or fails). When no
    trustworthy document is available the task never runs its container.

    Settings come from the ``[placement]`` Airflow config section (``AIRFLOW__PLACEMENT__SOURCE`` and so on); each
    ``placement_*`` argument overrides its setting for this task. All other arguments are DockerOperator's.

    :param placement_source: URL or path of the placement document. (templated)
    :param placement_host: this server's name; default ``HOST_HOSTNAME``, else ``[placement] host``.
    :param placement_not_owner: what a server that does not own the run does: ``"skip"`` (default), ``"echo"``
        (run the container with an echo, the behaviour of the original SCDockerOperator) or ``"fail"``.
    :param placement_on_unavailable: what to do when no trustworthy document is available: ``"skip"`` (default)
        or ``"fail"`` (retried like any failure).
    :param placement_ttl: seconds a confirmed copy is used without asking the source again.
    :param placement_max_staleness: seconds after the publisher last vouched for a copy past which it is no longer
        trusted.
    """

    template_fields: Sequence[str] = (*DockerOperator.template_fields, "placement_source")

    def __init__(
        self,
        *,
        placement_source: str | None = None,
        placement_host: str | None = None,
        placement_not_owner: NotOwner | None = None,
        placement_on_unavailable: OnUnavailable | None = None,
        placement_ttl: float | None = None,
        placement_max_staleness: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if placement_not_owner is not None:
            check_choice("placement_not_owner", placement_not_owner, NotOwner)
        if placement_on_unavailable is not None:
            check_choice("placement_on_unavailable", placement_on_unavailable, OnUnavailable)
        self.placement_source = placement_source
        self.placement_host = placement_host
        self.placement_not_owner = placement_not_owner
        self.placement_on_unavailable = placement_on_unavailable
        self.placement_ttl = placement_ttl
        self.placement_max_staleness = placement_max_staleness

    def placement_settings(self) -> GateSettings:
        overrides = {
            "source": self.placement_source,
            "host": self.placement_host,
            "not_owner": self.placement_not_owner,
            "on_unavailable": self.placement_on_unavailable,
            "ttl": self.placement_ttl,
            "max_staleness": self.placement_max_staleness,
        }
        config = {key: conf.get(SECTION, key, fallback=None) for key in KEYS}
        try:
            return gate_settings(overrides, config)
        except ValueError as exc:
            raise AirflowFailException(f"placement: invalid settings: {exc}") from None

    def execute(self, context: Context) -> Any:
        settings = self.placement_settings()
        run_id = context["run_id"]
        try:
            if not settings.host:
                raise PlacementUnavailable("this server's name is unknown: set HOST_HOSTNAME or [placement] host")
            loaded = load_placement(settings.fetch)
        except (PlacementUnavailable, OSError) as exc:  # OSError: the cache directory is not usable
            message = f"placement: decision=refuse dag={self.dag_id} task={self.task_id} run={run_id} reason={exc}"
            self.log.error("%s", message)
            if settings.on_unavailable == "fail":
                raise AirflowException(message) from None
            raise AirflowSkipException(message) from None
        if loaded.note:
            self.log.warning("placement: %s", loaded.note)
        decision = decide(
            loaded.placement,
            dag_id=self.dag_id,
            task_id=self.task_id,
            host=settings.host,
            when=run_date(context),
            now=datetime.now(UTC),
            horizon=timedelta(seconds=settings.fetch.max_staleness),
        )
        meta = loaded.placement.meta
        self.log.info("%s", _log_line(decision, run_id, meta.serial if meta else None))
        if decision.run:
            return super().execute(context)
        if settings.not_owner == "fail":
            raise AirflowFailException(f"placement: this server is not the owner: {decision.reason}")
        if settings.not_owner == "echo":
            self.command = ["echo", f"NOT CORRECT SERVER: {decision.reason}"]
            return super().execute(context)
        raise AirflowSkipException(f"placement: {decision.reason}")


class SCDockerOperator(GatedDockerOperator):
    """The name existing DAGs use (``from operators.sc_operators import SCDockerOperator``): a GatedDockerOperator.

    Unlike the original, a server that does not own the run skips the task instead of running an ``echo``
    container; set ``[placement] not_owner = echo`` to keep the old behaviour.
    """


def _log_line(decision: Decision, run_id: str, serial: int | None) -> str:
    return (
        f"placement: decision={decision.decision} dag={decision.dag_id} task={decision.task_id} run={run_id} "
        f"host={decision.host} owner={decision.owner} serial={serial if serial is not None else '-'} "
        f"revision={decision.revision} reason={decision.reason}"
    )
