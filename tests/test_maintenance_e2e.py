"""The main job end to end: a replayed host drives the tier pools of a real Airflow."""

from __future__ import annotations

import pytest

from tests.airflow_helpers import pool_slots, run_once, task_states, wait_for
from thermal_pools.monitor import ReplayMonitor

pytestmark = pytest.mark.airflow

DAG_ID = "thermal_pool_maintenance"
TASK_ID = "resize_tier_pools"

# Expected sizes with the default base slots 10/10/10/4 and throttle 1.0/0.9/0.7/0.5.
EXPECTED = {
    "nominal": {"thermal_nominal": 10, "thermal_fair": 10, "thermal_serious": 10, "thermal_critical": 4},
    "fair": {"thermal_nominal": 0, "thermal_fair": 9, "thermal_serious": 9, "thermal_critical": 3},
    "serious": {"thermal_nominal": 0, "thermal_fair": 0, "thermal_serious": 7, "thermal_critical": 2},
    "critical": {"thermal_nominal": 0, "thermal_fair": 0, "thermal_serious": 0, "thermal_critical": 2},
}


def step_to(trace, index: int) -> None:
    ReplayMonitor(trace).seek(index)


def result_of(api, run_id: str) -> dict:
    response = api.get(
        f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK_ID}/xcomEntries/return_value",
        params={"deserialize": True},
    )
    response.raise_for_status()
    return response.json()["value"]


def sync(airflow, api) -> dict:
    run_id, state = run_once(airflow, api, DAG_ID)
    assert state == "success", task_states(api, DAG_ID, run_id)
    return result_of(api, run_id)


def test_pools_follow_replayed_states(airflow, airflow_trace):
    # Trace rows: 0 nominal, 1 serious, 2 critical, 3 nominal.
    with airflow.api() as api:
        for index, label in [(0, "nominal"), (1, "serious"), (2, "critical"), (3, "nominal")]:
            step_to(airflow_trace, index)
            summary = sync(airflow, api)
            assert summary["planned_state"] == ["nominal", "fair", "serious", "critical"].index(label)
            assert pool_slots(api) == EXPECTED[label], f"after stepping to {label}"


def test_unchanged_plan_writes_nothing(airflow, airflow_trace):
    with airflow.api() as api:
        step_to(airflow_trace, 4)
        sync(airflow, api)
        summary = sync(airflow, api)
        assert summary["outcome"] == "unchanged"
        assert pool_slots(api) == EXPECTED["fair"]


def test_pool_descriptions_carry_state(airflow, airflow_trace):
    with airflow.api() as api:
        step_to(airflow_trace, 1)
        sync(airflow, api)
        pools = api.get("/api/v2/pools", params={"pool_name_prefix_pattern": "thermal_"}).json()["pools"]
        for pool in pools:
            assert pool["description"].startswith("replayed-host: serious (sensor)"), pool


def test_deleted_pool_comes_back(airflow, airflow_trace):
    with airflow.api() as api:
        step_to(airflow_trace, 0)
        sync(airflow, api)
        assert api.delete("/api/v2/pools/thermal_fair").status_code == 204
        assert "thermal_fair" not in pool_slots(api)
        sync(airflow, api)
        assert pool_slots(api) == EXPECTED["nominal"]


def test_hand_resized_pool_restored(airflow, airflow_trace):
    with airflow.api() as api:
        step_to(airflow_trace, 0)
        sync(airflow, api)
        body = {"name": "thermal_serious", "slots": 99, "include_deferred": True}
        assert api.patch("/api/v2/pools/thermal_serious", json=body).status_code == 200
        sync(airflow, api)
        pool = api.get("/api/v2/pools/thermal_serious").json()
        assert pool["slots"] == 10
        # Fields the package does not manage keep the value a person gave them.
        assert pool["include_deferred"] is True


def test_failed_sensor_uses_safe_state(airflow, airflow_trace):
    # Row 5 is a sensor dropout; the grace period is 0 s, so the safe state (serious) applies.
    with airflow.api() as api:
        step_to(airflow_trace, 5)
        summary = sync(airflow, api)
        assert summary["thermal_state"] is None
        assert summary["observed_state"] == 2
        assert summary["basis"].startswith("safe state")
        assert pool_slots(api) == EXPECTED["serious"]


def test_other_pools_untouched(airflow, airflow_trace):
    with airflow.api() as api:
        api.post("/api/v2/pools", json={"name": "team_gpu", "slots": 3, "description": "by hand"})
        step_to(airflow_trace, 2)
        sync(airflow, api)
        pool = api.get("/api/v2/pools/team_gpu").json()
        assert (pool["slots"], pool["description"]) == (3, "by hand")
        default = api.get("/api/v2/pools/default_pool").json()
        assert default["slots"] == 128


def test_schedule_fires_by_itself(airflow):
    with airflow.api() as api:

        def scheduled_success():
            runs = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns", params={"run_type": "scheduled", "state": "success"}).json()
            return runs["total_entries"]

        assert wait_for(scheduled_success, timeout=200, interval=5, what="a scheduled maintenance run to succeed")
