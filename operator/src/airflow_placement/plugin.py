"""The placement view: an Airflow 3 plugin that shows, in each server's own UI, what this server holds and decides.

A FastAPI app mounted by the API server at ``/placement`` (``/placement/`` the page, ``/placement/api/state`` the
same data as JSON) and an external view that puts the page in the UI's navigation (``/plugin/placement``). It reads
the placement cache with the gate's own code and the lease's rules, and never asks the source: what it shows is what
the next task would start from. DAGs and runs come from Airflow's database, limited to those the user may read.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Annotated, Any

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import GetUserDep
from airflow.models.dag import DagModel
from airflow.models.dagrun import DagRun
from airflow.plugins_manager import AirflowPlugin
from airflow.utils.types import DagRunType
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, select_autoescape
from sqlalchemy import select

from airflow_placement.gate import SettingsError, configured
from airflow_placement.observe import ManualRun, server_state, unusable_state
from airflow_placement.settings import SECTION

URL_PREFIX = "/placement"
MANUAL_RUNS = 20  # the newest runs triggered by hand that the view lists

ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2">'
    '<path d="M12 21s-7-6.2-7-11.5a7 7 0 0 1 14 0C19 14.8 12 21 12 21z"/><circle cx="12" cy="9.5" r="2.5"/></svg>'
)

app = FastAPI(title="airflow-placement", docs_url=None, redoc_url=None, openapi_url=None)


def permitted_dags(user: GetUserDep, session: SessionDep) -> list[str]:
    """The DAGs Airflow knows (not stale) that the user may read, sorted."""
    allowed = get_auth_manager().get_authorized_dag_ids(user=user, method="GET", session=session)
    known = session.scalars(select(DagModel.dag_id).where(DagModel.is_stale.is_(False)))
    return sorted(set(known) & allowed)


def manual_runs(dag_ids: Annotated[list[str], Depends(permitted_dags)], session: SessionDep) -> list[ManualRun]:
    """The newest runs triggered by hand on this server, of the DAGs the user may read."""
    rows = session.scalars(
        select(DagRun)
        .where(DagRun.run_type == DagRunType.MANUAL, DagRun.dag_id.in_(dag_ids))
        .order_by(DagRun.run_after.desc())
        .limit(MANUAL_RUNS)
    )
    return [ManualRun(r.dag_id, r.run_id, r.logical_date or r.run_after, r.triggering_user_name) for r in rows]


def state(
    dag_ids: Annotated[list[str], Depends(permitted_dags)],
    runs: Annotated[list[ManualRun], Depends(manual_runs)],
) -> dict[str, Any]:
    """What the view shows; settings that cannot be used make a state that says why nothing runs here."""
    try:
        settings = configured()
    except SettingsError as exc:
        return unusable_state(f"invalid [{SECTION}] settings: {exc}", dag_ids)
    return server_state(settings.fetch, settings.host, dag_ids, runs)


StateDep = Annotated[dict[str, Any], Depends(state)]


@app.get("/api/state")
def api_state(data: StateDep) -> dict[str, Any]:
    """This server's placement state as JSON: the same data as the page."""
    return data


@app.get("/", response_class=HTMLResponse)
def page(data: StateDep) -> HTMLResponse:
    """The placement view."""
    return HTMLResponse(_template().render(state=data, prefix=URL_PREFIX))


@app.get("/icon.svg")
def icon() -> Response:
    """The view's icon in the UI's navigation: a pin."""
    return Response(ICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})


@app.exception_handler(HTTPException)
async def _login_first(request: Request, exc: HTTPException) -> Response:
    """The page sends a visitor who is not logged in to the login page; the JSON API answers 401 as it is."""
    if exc.status_code == 401 and not request.url.path.rstrip("/").endswith("/api/state"):
        return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)))
    from fastapi.exception_handlers import http_exception_handler  # noqa: PLC0415

    return await http_exception_handler(request, exc)


def _template() -> Any:
    source = files("airflow_placement").joinpath("templates/placement.html").read_text(encoding="utf-8")
    environment = Environment(autoescape=select_autoescape(default=True), trim_blocks=True, lstrip_blocks=True)
    environment.filters["duration"] = duration
    return environment.from_string(source)


def duration(seconds: float) -> str:
    """``seconds`` as a person reads it: 45 s, 12 min 5 s, 3 h 20 min, 2 d 4 h."""
    whole = round(seconds)
    for unit, size, small, small_size in (("d", 86400, "h", 3600), ("h", 3600, "min", 60), ("min", 60, "s", 1)):
        if whole >= size:
            rest = (whole % size) // small_size
            return f"{whole // size} {unit}" + (f" {rest} {small}" if rest else "")
    return f"{whole} s"


class PlacementPlugin(AirflowPlugin):
    """The placement view in the UI's navigation, and its API."""

    name = "placement"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Placement"}]  # noqa: RUF012 - Airflow's API
    external_views = [  # noqa: RUF012 - Airflow's API
        {
            "name": "Placement",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "nav_top_level": True,
            "icon": f"{URL_PREFIX}/icon.svg",
            "url_route": "placement",
        }
    ]
