"""The Thermal JSON API on a real Airflow: readings from real maintenance runs, errors and auth."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from tests.airflow_helpers import pool_slots, run_once, task_states
from thermal_pools.local_airflow import SERVICE_USER, LocalAirflow
from thermal_pools.monitor import ReplayMonitor
from thermal_pools.reading import Reading, ThermalState
from thermal_pools.store import ReadingStore

pytestmark = pytest.mark.airflow

DAG_ID = "thermal_pool_maintenance"
HOST = "replayed-host"
STALE_HOST = "stale-test-host"
ROUTES = ["/thermal/", "/thermal/api/hosts", f"/thermal/api/history?host={HOST}", "/thermal/api/state",
          "/thermal/static/thermal.css"]
POOLS = ["thermal_nominal", "thermal_fair", "thermal_serious", "thermal_critical"]


def readings_store(airflow: LocalAirflow) -> ReadingStore:
    """The readings table the api-server reads, opened from this test process."""
    return ReadingStore(airflow.env()["AIRFLOW__THERMAL_POOLS__READINGS_URL"])


@pytest.fixture(scope="module")
def api(airflow: LocalAirflow):
    with airflow.api() as client:
        yield client


@pytest.fixture(scope="module")
def recorded(airflow: LocalAirflow, airflow_trace: Path, api: httpx.Client) -> list[int]:
    """Record a serious and then a critical reading through real maintenance runs."""
    states = []
    for index in (1, 2):
        ReplayMonitor(airflow_trace).seek(index)
        run_id, state = run_once(airflow, api, DAG_ID)
        assert state == "success", task_states(api, DAG_ID, run_id)
        states.append(index)
    return states


@pytest.fixture(scope="module")
def stale_reading(airflow: LocalAirflow) -> datetime:
    """Record one reading of another host, two hours old (stale after the default 180 s)."""
    taken_at = datetime.now(timezone.utc) - timedelta(hours=2)
    reading = Reading(host=STALE_HOST, taken_at=taken_at, thermal_state=ThermalState.FAIR, memory_used_percent=55.0)
    readings_store(airflow).record(
        reading,
        observed_state=ThermalState.FAIR,
        planned_state=ThermalState.FAIR,
        basis="sensor",
        throttle=0.9,
        health_score=80.0,
        pools={name: 5 for name in POOLS},
        outcome="applied",
    )
    return taken_at


def test_history_returns_recorded_readings(airflow, api, recorded):
    response = api.get("/thermal/api/history", params={"host": HOST, "hours": 1})
    assert response.status_code == 200, response.text
    body = response.json()
    since = datetime.fromisoformat(body["since"])
    until = datetime.fromisoformat(body["until"])
    stored = readings_store(airflow).history(HOST, since=since, until=until)

    assert body["host"] == HOST
    assert body["hours"] == 1
    assert [step["id"] for step in body["steps"]] == [step.id for step in stored]
    assert body["count"] == len(stored)
    assert body["truncated"] is False


def test_history_has_the_runs_states_in_order(api, recorded):
    steps = api.get("/thermal/api/history", params={"host": HOST, "hours": 1}).json()["steps"]
    sensor_states = [step["thermal_state"] for step in steps]
    # Scheduled runs may add readings in between, so look for serious, then critical, at the end.
    assert sensor_states[-1] == ThermalState.CRITICAL
    assert ThermalState.SERIOUS in sensor_states
    assert max(i for i, state in enumerate(sensor_states) if state == ThermalState.SERIOUS) < len(sensor_states) - 1
    assert steps[-1]["pools"] == {"thermal_nominal": 0, "thermal_fair": 0, "thermal_serious": 0, "thermal_critical": 2}


def test_history_steps_carry_reading_fields(api, recorded):
    step = api.get("/thermal/api/history", params={"host": HOST, "hours": 1}).json()["steps"][-1]
    assert step["memory_used_percent"] == 40.0
    assert step["memory_available_gib"] == 20.0
    assert step["memory_pressure"] == "normal"
    assert step["throttle"] == 0.5
    assert step["health_score"] is not None


def test_history_window_excludes_older_readings(api, stale_reading):
    inside = api.get("/thermal/api/history", params={"host": STALE_HOST, "hours": 3}).json()
    outside = api.get("/thermal/api/history", params={"host": STALE_HOST, "hours": 1}).json()
    assert inside["count"] == 1
    assert outside["count"] == 0


@pytest.mark.parametrize("hours", ["0", "-1", "168.5", "1000", "abc", "nan", "inf"])
def test_history_rejects_bad_window(api, recorded, hours):
    response = api.get("/thermal/api/history", params={"host": HOST, "hours": hours})
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert repr(hours) in detail
    assert "0 < hours <= 168" in detail


def test_history_accepts_max_window(api, recorded):
    response = api.get("/thermal/api/history", params={"host": HOST, "hours": "168"})
    assert response.status_code == 200, response.text


def test_history_rejects_unknown_host(api, recorded):
    response = api.get("/thermal/api/history", params={"host": "no-such-host", "hours": 6})
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert "'no-such-host'" in detail
    assert HOST in detail


def test_history_needs_host_among_several(api, recorded, stale_reading):
    response = api.get("/thermal/api/history", params={"hours": 6})
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "host=" in detail
    assert HOST in detail
    assert STALE_HOST in detail


def test_hosts_lists_fresh_host(api, recorded):
    hosts = {entry["host"]: entry for entry in api.get("/thermal/api/hosts").json()["hosts"]}
    fresh = hosts[HOST]
    assert fresh["stale"] is False
    assert fresh["state"] in {state.label for state in ThermalState}
    assert fresh["age_seconds"] < fresh["stale_after_seconds"]


def test_hosts_marks_stale_reading_unknown(api, stale_reading):
    hosts = {entry["host"]: entry for entry in api.get("/thermal/api/hosts").json()["hosts"]}
    stale = hosts[STALE_HOST]
    assert stale["stale"] is True
    assert stale["state"] == "unknown"
    assert stale["state_value"] is None
    assert stale["age_seconds"] >= 7000
    assert stale["latest"]["observed_state"] == ThermalState.FAIR


def test_state_lists_tier_pools(api, recorded):
    body = api.get("/thermal/api/state").json()
    pools = {pool["name"]: pool for pool in body["pools"]}
    assert list(pools) == POOLS
    assert {name: pool["slots"] for name, pool in pools.items()} == pool_slots(api)
    for pool in pools.values():
        assert pool["running"] >= 0
        assert pool["open"] == pool["slots"] - pool["running"] - pool["queued"]


@pytest.mark.parametrize("route", ROUTES)
def test_route_without_token_is_401(airflow, route):
    response = httpx.get(f"{airflow.base_url}{route}", timeout=30)
    assert response.status_code == 401


def test_page_without_token_says_log_in(airflow):
    response = httpx.get(f"{airflow.base_url}/thermal/", headers={"Accept": "text/html"}, timeout=30)
    assert response.status_code == 401
    assert "Log in to Airflow" in response.text


@pytest.mark.parametrize("route", ROUTES)
def test_route_accepts_ui_cookie(airflow, recorded, route):
    response = httpx.get(f"{airflow.base_url}{route}", cookies={"_token": airflow.token()}, timeout=30)
    assert response.status_code == 200, response.text


def test_route_accepts_op_user(airflow, recorded):
    with airflow.api(SERVICE_USER) as client:
        assert client.get("/thermal/api/state").status_code == 200


def test_nothing_exposes_credentials(airflow, api, recorded, stale_reading):
    token = api.headers["Authorization"].removeprefix("Bearer ")
    bodies = [api.get(route).text for route in ROUTES[:-1]]
    for body in bodies:
        for user, password in airflow.passwords.items():
            assert password not in body, f"password of {user} in a Thermal response"
        assert token not in body


def test_static_rejects_unknown_file(api):
    response = api.get("/thermal/static/..%2Fapp.py")
    assert response.status_code == 404


def test_plugin_lists_nav_entry(api):
    plugins = {plugin["name"]: plugin for plugin in api.get("/api/v2/plugins").json()["plugins"]}
    plugin = plugins["thermal_pools"]
    assert [app["url_prefix"] for app in plugin["fastapi_apps"]] == ["/thermal"]
    view = plugin["external_views"][0]
    assert view["name"] == "Thermal"
    assert view["href"] == "/thermal/"
    assert view["url_route"] == "thermal"
    assert view["destination"] == "nav"
