"""Re-run on a successor what a failed server missed: the task instances it skipped only because that server owned them.

After a forced failover dated back to ``since`` (the failed server ran nothing with a logical date from then on), the
successor owns the moved DAGs' runs from ``since``. It skipped those that came before the move. This clears exactly
those through the successor's Airflow REST API (v2), so that they run once more, there. A task instance qualifies
when its logical date (``run_after`` for runs without one) is in [since, until), it was skipped, the document before
the move gave it to the failed server and the document after the move gives it to the successor.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

import requests

from airflow_placement.decision import decide
from airflow_placement.document import PlacementView, normalize_host

PAGE = 100  # Airflow's default maximum_page_limit


class ApiError(RuntimeError):
    """Airflow's API refused or failed; ``str()`` is one line naming the request."""


@dataclass
class Airflow:
    """The few calls of Airflow's REST API v2 a re-run needs."""

    url: str
    user: str
    password: str = field(repr=False)
    timeout: float = 30.0
    ca: str | None = None  # a CA bundle that trusts the API server's certificate (default: the system's)
    _session: requests.Session = field(default_factory=requests.Session, repr=False)

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        where = f"{method} {self.url}{path.split('?', maxsplit=1)[0]}"  # in messages: no query string
        try:
            response = self._session.request(
                method, self.url + path, json=body, timeout=self.timeout, verify=self.ca or True
            )
        except requests.exceptions.SSLError:
            raise ApiError(
                f"{where}: the TLS handshake failed (is the API server's certificate trusted? --ca names a CA bundle "
                "that trusts it)"
            ) from None
        except requests.RequestException as exc:
            raise ApiError(f"{where}: {type(exc).__name__}") from None
        if response.status_code not in (200, 201):
            try:
                detail = response.json().get("detail", "")
            except ValueError:
                detail = response.text[:200]
            raise ApiError(f"{where} answered {response.status_code}: {detail}")
        return response.json()

    def sign_in(self) -> None:
        token = self._call("POST", "/auth/token", {"username": self.user, "password": self.password})["access_token"]
        self._session.headers["Authorization"] = f"Bearer {token}"

    def skipped_since(self, since: datetime) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            query = urlencode(
                {
                    "state": "skipped",
                    "order_by": "id",
                    "limit": PAGE,
                    "offset": offset,
                    "run_after_gte": since.isoformat(),
                }
            )
            page = self._call("GET", f"/api/v2/dags/~/dagRuns/~/taskInstances?{query}")
            yield from page["task_instances"]
            offset += PAGE
            if offset >= page["total_entries"]:
                return

    def clear(self, run: dict[str, Any], *, dry_run: bool, note: str) -> list[dict[str, Any]]:
        body = {
            "dag_run_id": run["dag_run_id"],
            "task_ids": run["task_ids"],
            "dry_run": dry_run,
            "only_failed": False,
            "only_running": False,
            "reset_dag_runs": True,
            "include_upstream": False,
            "include_downstream": False,
            "include_past": False,
            "include_future": False,
            "note": note,
        }
        answer = self._call("POST", f"/api/v2/dags/{quote(run['dag_id'], safe='')}/clearTaskInstances", body)
        instances: list[dict[str, Any]] = answer["task_instances"]
        return instances


def _when(ti: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(ti.get("logical_date") or ti["run_after"]).replace("Z", "+00:00"))


def select(
    task_instances: Iterator[dict[str, Any]] | list[dict[str, Any]],
    *,
    before: PlacementView,
    after: PlacementView,
    failed: str,
    successor: str,
    since: datetime,
    until: datetime,
) -> list[dict[str, Any]]:
    """The skipped task instances to re-run, grouped by DAG run: ``{dag_id, dag_run_id, logical_date, task_ids}``."""
    failed, successor = normalize_host(failed), normalize_host(successor)
    runs: dict[tuple[str, str], dict[str, Any]] = {}
    for ti in task_instances:
        when = _when(ti)
        if not since <= when < until or ti.get("state") != "skipped":
            continue
        dag_id, task_id = ti["dag_id"], ti["task_id"]
        was = decide(before, dag_id=dag_id, task_id=task_id, host=successor, when=when).owner
        now = decide(after, dag_id=dag_id, task_id=task_id, host=successor, when=when).owner
        if was != failed or now != successor:
            continue
        run = runs.setdefault(
            (dag_id, ti["dag_run_id"]),
            {"dag_id": dag_id, "dag_run_id": ti["dag_run_id"], "logical_date": when.isoformat(), "task_ids": []},
        )
        map_index = ti.get("map_index", -1)
        run["task_ids"].append(task_id if map_index is None or map_index < 0 else [task_id, map_index])
    return sorted(runs.values(), key=lambda run: (run["logical_date"], run["dag_id"]))


def describe(ti: dict[str, Any]) -> str:
    """One line for a task instance of Airflow's API: DAG, run, task (and map index), logical date, state."""
    index = ti.get("map_index", -1)
    task = ti["task_id"] + (f"[{index}]" if index is not None and index >= 0 else "")
    when = ti.get("logical_date") or ti.get("run_after") or "?"
    return f"{ti['dag_id']} {ti['dag_run_id']} {task} (logical date {when}, was {ti.get('state')})"
