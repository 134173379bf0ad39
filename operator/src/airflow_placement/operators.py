"""``GatedDockerOperator``: a DockerOperator that runs its container only on the server that owns the DAG run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.docker.operators.docker import DockerOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_placement.gate import SettingsError, configured, gate
from airflow_placement.settings import GateSettings, NotOwner, OnUnavailable, check_choice

if TYPE_CHECKING:
    from airflow.sdk import Context


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
    placement_gates_itself: ClassVar[bool] = True  # the cluster policy leaves the decision to execute

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
        try:
            return configured(overrides)
        except SettingsError as exc:
            raise AirflowFailException(f"placement: invalid settings: {exc}") from None

    def execute(self, context: Context | None) -> Any:
        """Decide (:func:`airflow_placement.gate.gate`), then run the container on the owner.

        :param context: the task's context; without a run in it (``None`` or ``{}``) the gate decides for the DAG
            at the current time.
        """
        settings = self.placement_settings()
        decision = gate(
            context, dag_id=self.dag_id, task_id=self.task_id, settings=settings, log=self.log, can_echo=True
        )
        if not decision.run:  # not_owner = echo
            self.command = ["echo", f"NOT CORRECT SERVER: {decision.reason}"]
        return super().execute(context)  # type: ignore[arg-type]


class SCDockerOperator(GatedDockerOperator):
    """The name existing DAGs use (``from operators.sc_operators import SCDockerOperator``): a GatedDockerOperator.

    Unlike the original, a server that does not own the run skips the task instead of running an ``echo``
    container; set ``[placement] not_owner = echo`` to keep the old behaviour.
    """
