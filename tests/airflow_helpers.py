"""Helpers for end-to-end tests that drive a real local Airflow through its REST API."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from thermal_pools.local_airflow import LocalAirflow

TERMINAL_RUN_STATES = {"success", "failed"}

# Row index of each state in the trace of the ``replay`` fixture (tests/conftest.py).
NOMINAL, FAIR, SERIOUS, CRITICAL, FAILED = range(5)

# Keys of the clearance a sensor returns, whichever way it is cleared.
CLEARANCE_KEYS = {
    "thermal_state",
    "throttle_level",
    "health_score",
    "memory_available_gib",
    "host",
    "taken_at",
    "observation_basis",
    "reason",
}


def write_trace(path: Path, states: list[int | None], **columns: Any) -> Path:
    """Write a JSON Lines trace with one row per state, 60 s apart."""
    with path.open("w") as trace:
        for index, state in enumerate(states):
            row = {"offset_seconds": index * 60, "thermal_state": state, "memory_used_percent": 40.0,
                   "memory_available_gib": 20.0, "memory_pressure": "normal", "cpu_load": 0.2}
            row.update(columns)
            if state is None:
                row["thermal_reason"] = "sensor failed: replayed dropout"
            trace.write(json.dumps(row) + "\n")
    return path


def wait_for(condition, *, timeout: float, interval: float = 1.0, what: str = "condition"):
    """Poll ``condition`` until it returns a truthy value; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}; last value {last!r}")


def wait_for_dag(api: httpx.Client, dag_id: str, timeout: float = 180) -> dict:
    def parsed() -> dict | None:
        response = api.get(f"/api/v2/dags/{dag_id}")
        return response.json() if response.status_code == 200 else None

    return wait_for(parsed, timeout=timeout, what=f"dag {dag_id} to be parsed")


def unpause(api: httpx.Client, dag_id: str) -> None:
    response = api.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False})
    response.raise_for_status()


def trigger(api: httpx.Client, dag_id: str, conf: dict | None = None) -> str:
    response = api.post(f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})
    response.raise_for_status()
    return response.json()["dag_run_id"]


def wait_for_run(api: httpx.Client, dag_id: str, run_id: str, timeout: float = 180) -> str:
    """Wait until the run ends; return its state."""

    def ended() -> str | None:
        state = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").json().get("state")
        return state if state in TERMINAL_RUN_STATES else None

    return wait_for(ended, timeout=timeout, what=f"run {run_id} of {dag_id} to end")


def task_states(api: httpx.Client, dag_id: str, run_id: str) -> dict[str, str]:
    body = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances").json()
    return {ti["task_id"]: ti["state"] for ti in body["task_instances"]}


def pool_slots(api: httpx.Client, prefix: str = "thermal_") -> dict[str, int]:
    body = api.get("/api/v2/pools", params={"pool_name_prefix_pattern": prefix, "limit": 100}).json()
    return {pool["name"]: pool["slots"] for pool in body["pools"]}


def run_once(airflow: LocalAirflow, api: httpx.Client, dag_id: str, timeout: float = 180) -> tuple[str, str]:
    """Trigger one run and wait for it; return (run id, final state)."""
    run_id = trigger(api, dag_id)
    return run_id, wait_for_run(api, dag_id, run_id, timeout)


def component_logs(airflow: LocalAirflow) -> str:
    return "\n".join(path.read_text(errors="replace")[-4000:] for path in sorted(airflow.log_folder.glob("*.log")))
