"""The Thermal page and its JSON API: a FastAPI app that the plugin mounts in the api-server.

Routes, relative to the mount point (``/thermal``):

| route | returns |
|---|---|
| ``GET /`` | the Thermal page (``?host=H&hours=6``) |
| ``GET /api/hosts`` | every host with its newest reading, its age and whether it is stale |
| ``GET /api/history?host=H&hours=6`` | the readings of one host in the last ``hours`` (0 < hours <= 168) |
| ``GET /api/state`` | the hosts as above plus the four tier pools with slots and running tasks |
| ``GET /static/{name}`` | the page's style sheet and the nav icon |

Every route goes through Airflow's own auth dependencies, so the UI's ``_token`` cookie and an
``Authorization: Bearer`` token both work, and a request without either gets 401. Routes that
show pools also need read access to pools.

The readings store is opened once per process and every query is bounded and served by the
``(host, taken_at)`` index. A missing or locked readings database returns 503 with a message
that names the database (password hidden) and the cause.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import requires_access_pool, requires_access_view
from airflow.exceptions import AirflowException
from thermal_pools.config import ConfigError, ThermalSchedulingConfig, load_config
from thermal_pools.reading import ThermalState
from thermal_pools.store import MAX_HISTORY_ROWS, ReadingStore, RecordedStep, store_from_config
from thermal_pools.ui.chart import BAND_COLOURS, LINE_COLOURS, render_history_svg

log = logging.getLogger(__name__)

URL_PREFIX = "/thermal"
DEFAULT_HOURS = 6.0
MAX_HOURS = 168.0
# Windows offered as links on the page, in hours; any other valid value works in the URL.
WINDOW_CHOICES = (1, 6, 24, 72, 168)
MAINTENANCE_DAG_ID = "thermal_pool_maintenance"

PACKAGE_FOLDER = Path(__file__).parent
STATIC_FOLDER = PACKAGE_FOLDER / "static"
STATIC_FILES = {
    "thermal.css": "text/css",
    "icon.svg": "image/svg+xml",
}

T = TypeVar("T")


# -- readings store -------------------------------------------------------------------------


class ReadingsUnavailable(Exception):
    """Error for invalid settings or an unreadable readings database, served as 503.

    The message gives the cause and the fix.
    """


_open_lock = threading.Lock()
_opened: tuple[ThermalSchedulingConfig, ReadingStore] | None = None


def safe_url(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparsable URL>"


def open_store() -> tuple[ThermalSchedulingConfig, ReadingStore]:
    """Return the settings and the readings store, opened on first use and kept for the process.

    A failure is not cached, so a database that appears later is picked up by the next request.
    """
    global _opened
    with _open_lock:
        if _opened is None:
            try:
                config = load_config()
            except ConfigError as error:
                log.warning("Thermal page cannot load the [thermal_pools] settings: %s", error)
                raise ReadingsUnavailable(f"invalid [thermal_pools] settings: {error}") from None
            try:
                store = store_from_config(config)
            except (SQLAlchemyError, ValueError, AirflowException) as error:
                # AirflowException: readings_conn_id names a connection that cannot be found.
                log.warning("Thermal page cannot open the readings database: %s", error)
                raise ReadingsUnavailable(
                    f"cannot open the readings database: {error}; check readings_url or readings_conn_id "
                    "in [thermal_pools]"
                ) from None
            log.info("Thermal page reads readings from %s", safe_url(store.url))
            _opened = (config, store)
        return _opened


def query_store(store: ReadingStore, action: str, call: Callable[[], T]) -> T:
    """Run one store query and turn a database error into :class:`ReadingsUnavailable`."""
    try:
        return call()
    except SQLAlchemyError as error:
        cause = getattr(error, "orig", None) or error.__class__.__name__
        log.warning("Thermal page could not %s in %s: %s", action, safe_url(store.url), cause)
        raise ReadingsUnavailable(
            f"could not {action} in the readings database {safe_url(store.url)}: {cause}; "
            "it is missing, locked or unreachable, try again in a minute or check readings_url"
        ) from None


# -- request values -------------------------------------------------------------------------


def parse_hours(raw: str | None) -> float:
    """Parse the ``hours`` window; raise 400 naming the value and the valid range."""
    if raw is None or raw == "":
        return DEFAULT_HOURS
    try:
        hours = float(raw)
    except ValueError:
        hours = math.nan
    if not math.isfinite(hours) or not 0 < hours <= MAX_HOURS:
        raise HTTPException(
            status_code=400,
            detail=f"invalid hours {raw!r}: expected a window in hours with 0 < hours <= {MAX_HOURS:g}, "
            f"for example hours={DEFAULT_HOURS:g}",
        )
    return hours


def resolve_host(store: ReadingStore, host: str | None) -> str | None:
    """Return ``host`` if it has readings, or the only host when none is named.

    Raises 404 for a host without readings and 400 when several hosts exist and none is named.
    Returns None when no host has readings yet.
    """
    hosts = query_store(store, "list hosts", store.hosts)
    if host:
        if host not in hosts:
            known = ", ".join(hosts) if hosts else "none yet"
            raise HTTPException(
                status_code=404,
                detail=f"unknown host {host!r}: no readings recorded for it; known hosts: {known}",
            )
        return host
    if len(hosts) > 1:
        raise HTTPException(status_code=400, detail=f"missing host: pass host=NAME, one of {', '.join(hosts)}")
    return hosts[0] if hosts else None


# -- views of the data ----------------------------------------------------------------------


def describe_power(step: RecordedStep) -> str:
    mode = {True: "low power", False: "normal", None: "unknown mode"}[step.reading.low_power_mode]
    source = {True: "on battery", False: "mains power", None: "unknown power source"}[step.reading.on_battery]
    return f"{mode}, {source}"


def summarize_host(step: RecordedStep, now: datetime, config: ThermalSchedulingConfig) -> dict[str, Any]:
    """Summarize the newest reading of a host with its age. A stale reading's state counts as unknown."""
    age = (now - step.taken_at).total_seconds()
    stale = age > config.stale_after_seconds
    state = None if stale else ThermalState(step.observed_state)
    return {
        "host": step.host,
        "state": "unknown" if state is None else state.label,
        "state_value": None if state is None else int(state),
        "stale": stale,
        "age_seconds": round(age, 1),
        "stale_after_seconds": config.stale_after_seconds,
        "power": describe_power(step),
        "latest": step.to_dict(),
    }


def list_hosts(store: ReadingStore, config: ThermalSchedulingConfig, now: datetime) -> list[dict[str, Any]]:
    hosts = query_store(store, "list hosts", store.hosts)
    summaries = []
    for host in hosts:
        step = query_store(store, f"read the newest reading of {host!r}", lambda host=host: store.latest(host))
        if step is not None:
            summaries.append(summarize_host(step, now, config))
    return summaries


def read_history(store: ReadingStore, host: str, since: datetime, until: datetime) -> tuple[list[RecordedStep], bool]:
    """Return the steps of ``host`` in the window, oldest first, and whether the row cap cut older ones off."""
    steps = query_store(
        store,
        f"read the history of {host!r}",
        lambda: store.history(host, since=since, until=until, limit=MAX_HISTORY_ROWS, newest_first=True),
    )
    steps.reverse()
    # NOTE: also reports a cut when the window contains exactly MAX_HISTORY_ROWS steps.
    return steps, len(steps) >= MAX_HISTORY_ROWS


def read_pools(session: Any, config: ThermalSchedulingConfig) -> list[dict[str, Any]]:
    """Read the four tier pools and their used task slots from Airflow's metadata database.

    Two queries, both restricted to the four pool names: the pool rows, and the slots used by
    running, queued and deferred task instances, summed per pool and state.
    """
    from airflow.models import Pool, TaskInstance
    from airflow.utils.state import TaskInstanceState

    names = config.pool_names()
    rows = {
        row.pool: row
        for row in session.execute(
            sa.select(Pool.pool, Pool.slots, Pool.description, Pool.include_deferred).where(Pool.pool.in_(names))
        )
    }
    counted = (TaskInstanceState.RUNNING, TaskInstanceState.QUEUED, TaskInstanceState.DEFERRED)
    used: dict[tuple[str, str], int] = {}
    for pool, state, slots in session.execute(
        sa.select(TaskInstance.pool, TaskInstance.state, sa.func.sum(TaskInstance.pool_slots))
        .where(TaskInstance.pool.in_(names), TaskInstance.state.in_(counted))
        .group_by(TaskInstance.pool, TaskInstance.state)
    ):
        used[(pool, str(state))] = int(slots or 0)

    pools = []
    for tier in ThermalState:
        name = config.pool_name(tier)
        row = rows.get(name)
        running = used.get((name, TaskInstanceState.RUNNING.value), 0)
        queued = used.get((name, TaskInstanceState.QUEUED.value), 0)
        deferred = used.get((name, TaskInstanceState.DEFERRED.value), 0)
        entry: dict[str, Any] = {
            "name": name,
            "tier": tier.label,
            "exists": row is not None,
            "slots": None if row is None else row.slots,
            "running": running,
            "queued": queued,
            "deferred": deferred,
            "open": None,
            "description": None if row is None else row.description,
        }
        if row is not None and row.slots >= 0:
            entry["open"] = row.slots - running - queued - (deferred if row.include_deferred else 0)
        pools.append(entry)
    return pools


# -- the app --------------------------------------------------------------------------------

def format_age(seconds: float) -> str:
    """Format the age of a reading in whole units: "42 s", "12 min", "3 h 5 min", "2 d 4 h"."""
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def format_window(hours: float) -> str:
    """Format a window for links and headings: "6 h", "3 d", "90 min"."""
    if hours < 1:
        return f"{hours * 60:g} min"
    if hours >= 48 and hours % 24 == 0:
        return f"{hours / 24:g} d"
    return f"{hours:g} h"


templates = Jinja2Templates(directory=str(PACKAGE_FOLDER / "templates"))
templates.env.filters["age"] = format_age
templates.env.filters["window"] = format_window

app = FastAPI(
    title="thermal-pools",
    description="The Thermal page of thermal-pools and its JSON API.",
    # Airflow's own dependencies: a user from the Bearer token or the UI's cookie (401 when it
    # is missing or expired, 403 when it is invalid) who may use the Airflow UI (else 403).
    dependencies=[Depends(requires_access_view(AccessView.WEBSITE))],
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)

PoolAccess = Depends(requires_access_pool("GET"))


@app.exception_handler(ReadingsUnavailable)
async def _readings_unavailable(request: Request, error: ReadingsUnavailable) -> JSONResponse:
    return JSONResponse(status_code=503, content={"detail": str(error)})


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, error: StarletteHTTPException) -> HTMLResponse | JSONResponse:
    """Render the page's errors as a short HTML page and the API's as JSON, with the same status."""
    if request.url.path.rstrip("/").endswith(URL_PREFIX) and "text/html" in request.headers.get("accept", ""):
        return templates.TemplateResponse(
            request,
            "error.html",
            {"status": error.status_code, "detail": error.detail, "login": error.status_code == 401},
            status_code=error.status_code,
        )
    return JSONResponse(status_code=error.status_code, content={"detail": error.detail}, headers=error.headers)


@app.get("/api/hosts")
def api_hosts() -> dict[str, Any]:
    config, store = open_store()
    now = datetime.now(timezone.utc)
    return {"generated_at": now.isoformat(), "hosts": list_hosts(store, config, now)}


@app.get("/api/history")
def api_history(host: str | None = None, hours: str | None = None) -> dict[str, Any]:
    window = parse_hours(hours)
    config, store = open_store()
    name = resolve_host(store, host)
    if name is None:
        raise HTTPException(
            status_code=404,
            detail=f"no readings recorded yet: unpause the {MAINTENANCE_DAG_ID} DAG so it records one every minute",
        )
    until = datetime.now(timezone.utc)
    since = until - timedelta(hours=window)
    steps, truncated = read_history(store, name, since, until)
    return {
        "host": name,
        "hours": window,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "count": len(steps),
        "truncated": truncated,
        "max_rows": MAX_HISTORY_ROWS,
        "steps": [step.to_dict() for step in steps],
    }


@app.get("/api/state", dependencies=[PoolAccess])
def api_state(session: SessionDep) -> dict[str, Any]:
    config, store = open_store()
    now = datetime.now(timezone.utc)
    return {
        "generated_at": now.isoformat(),
        "stale_after_seconds": config.stale_after_seconds,
        "hosts": list_hosts(store, config, now),
        "pools": read_pools(session, config),
    }


@app.get("/static/{name}")
def static_file(name: str) -> FileResponse:
    if name not in STATIC_FILES:
        raise HTTPException(status_code=404, detail=f"unknown static file {name!r}: known files are {', '.join(STATIC_FILES)}")
    return FileResponse(STATIC_FOLDER / name, media_type=STATIC_FILES[name])


@app.get("/", response_class=HTMLResponse, dependencies=[PoolAccess])
def page(request: Request, session: SessionDep, host: str | None = None, hours: str | None = None) -> HTMLResponse:
    window = parse_hours(hours)
    now = datetime.now(timezone.utc)
    context: dict[str, Any] = {
        "hours": window,
        "window_choices": WINDOW_CHOICES,
        "dag_id": MAINTENANCE_DAG_ID,
        "band_colours": {state.label: colour for state, colour in BAND_COLOURS.items()},
        "line_colours": {state.label: colour for state, colour in LINE_COLOURS.items()},
        "tiers": [state.label for state in ThermalState],
        "now": now,
        "error": None,
        "stale_after_seconds": None,
        "pools": [],
        "hosts": [],
        "host": None,
        "chart": None,
        "count": 0,
        "truncated": False,
    }
    try:
        config, store = open_store()
        context["stale_after_seconds"] = config.stale_after_seconds
        context["pools"] = read_pools(session, config)
        context["hosts"] = list_hosts(store, config, now)
        # Without a host in the URL, the chart shows the host with the newest reading.
        freshest = min(context["hosts"], key=lambda summary: summary["age_seconds"], default=None)
        if host:
            selected = resolve_host(store, host)
        else:
            selected = freshest["host"] if freshest else None
        context["host"] = selected
        if selected is not None:
            since = now - timedelta(hours=window)
            steps, truncated = read_history(store, selected, since, now)
            context["count"] = len(steps)
            context["truncated"] = truncated
            if steps:
                pool_names = {tier: config.pool_name(tier) for tier in ThermalState}
                context["chart"] = render_history_svg(
                    steps, since=since, until=now, pool_names=pool_names, gap_seconds=config.stale_after_seconds
                )
    except ReadingsUnavailable as error:
        context["error"] = str(error)
    return templates.TemplateResponse(request, "thermal.html", context, status_code=503 if context["error"] else 200)
