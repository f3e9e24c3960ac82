"""The clearance sensor, its trigger and the example DAGs on a real local Airflow.

This module starts its own Airflow with its own stepped trace (rows: serious, fair), so moving
the cursor never disturbs the session's ``airflow`` fixture. Its dags folder holds the test
DAGs below and copies of the two example DAGs. The four tier pools are created with fixed sizes
through the REST API, so what is under test here is the sensor's decision, not pool resizing.
"""

from __future__ import annotations

import shutil
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.airflow_helpers import CLEARANCE_KEYS, task_states, trigger, unpause, wait_for, wait_for_dag, wait_for_run, write_trace
from tests.conftest import ARTIFACTS
from thermal_pools.local_airflow import REPO_ROOT, LocalAirflow
from thermal_pools.monitor import ReplayMonitor

pytestmark = pytest.mark.airflow

SERIOUS, FAIR = 0, 1

# Reschedule-mode poke intervals stay at 10 s or more: Airflow 3.3's scheduler can mark a
# rescheduled sensor failed when the executor's success event of one poke arrives after the next
# poke is queued, and on a busy 2-core machine those events lag by several seconds.
TEST_DAGS = textwrap.dedent(
    """
    from datetime import datetime

    from airflow.sdk import DAG, task
    from airflow.providers.standard.operators.python import PythonOperator

    from thermal_pools.sensors import ThermalClearanceSensor
    from thermal_pools.throttle import throttle_for


    @task
    def use_throttle(**context):
        throttle = throttle_for(context)
        return {"throttle_level": throttle.level, "batch_size": throttle.batch_size(32), "source": throttle.source}


    def clearance_dag(dag_id, **sensor_args):
        with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
            gate = ThermalClearanceSensor(task_id="thermal_clearance", **sensor_args)
            templated = PythonOperator(
                task_id="templated_level",
                python_callable=lambda level: float(level),
                op_kwargs={"level": "{{ ti.xcom_pull(task_ids='thermal_clearance')['throttle_level'] }}"},
            )
            gate >> [use_throttle(), templated]
        return dag


    clearance_dag("clearance_reschedule", thermal_threshold=1, poke_interval=10, timeout=180)
    clearance_dag("clearance_deferrable", thermal_threshold=1, poke_interval=2, timeout=180, deferrable=True)
    clearance_dag("clearance_timeout", thermal_threshold=0, poke_interval=15, timeout=20)
    clearance_dag("clearance_soft_fail", thermal_threshold=0, poke_interval=15, timeout=20, soft_fail=True)
    """
)

TEST_DAG_IDS = ["clearance_reschedule", "clearance_deferrable", "clearance_timeout", "clearance_soft_fail"]
EXAMPLE_DAG_IDS = ["thermal_aware_training", "thermal_aware_batch_inference"]
TIER_POOLS = ["thermal_nominal", "thermal_fair", "thermal_serious", "thermal_critical"]


@pytest.fixture(scope="module")
def workspace() -> Iterator[Path]:
    """A folder outside pytest's base temp, which concurrent pytest sessions may prune mid-run."""
    folder = Path(tempfile.mkdtemp(prefix="thermal-pools-clearance-e2e-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def clearance_trace(workspace: Path) -> Path:
    return write_trace(workspace / "host.jsonl", [2, 1], host="e2e-host")


@pytest.fixture(scope="module")
def replay(clearance_trace: Path) -> ReplayMonitor:
    return ReplayMonitor(clearance_trace)


@pytest.fixture(scope="module")
def clearance_airflow(workspace: Path, clearance_trace: Path, replay: ReplayMonitor) -> Iterator[LocalAirflow]:
    """A second local Airflow with the test and example DAGs and four fixed-size tier pools."""
    dags = workspace / "dags"
    dags.mkdir()
    (dags / "clearance_e2e_dags.py").write_text(TEST_DAGS)
    for name in ("example_training_dag.py", "example_inference_dag.py"):
        shutil.copy(REPO_ROOT / "dags" / name, dags / name)

    replay.seek(SERIOUS)
    home = workspace / "airflow-home"
    settings = {
        "monitor": "replay",
        "replay_trace": str(clearance_trace),
        "replay_started_at": "0",
        "sensor_grace_period_seconds": "0",
        "check_interval_seconds": "3",
    }
    local = LocalAirflow(
        home, dags_folder=dags, thermal_settings=settings, extra_env={"THERMAL_POOLS_EXAMPLE_DATA": str(home / "examples")}
    )
    try:
        local.start()
        with local.api() as api:
            for pool in TIER_POOLS:
                api.post("/api/v2/pools", json={"name": pool, "slots": 4, "include_deferred": False}).raise_for_status()
            for dag_id in TEST_DAG_IDS + EXAMPLE_DAG_IDS:
                wait_for_dag(api, dag_id)
                unpause(api, dag_id)
        yield local
    finally:
        local.stop()
        logs = ARTIFACTS / "clearance-airflow-logs"
        logs.mkdir(parents=True, exist_ok=True)
        for path in local.log_folder.glob("*.log"):
            (logs / path.name).write_bytes(path.read_bytes()[-200_000:])
        shutil.copytree(home / "logs", logs / "tasks", dirs_exist_ok=True)


@pytest.fixture(scope="module")
def api(clearance_airflow: LocalAirflow) -> Iterator[httpx.Client]:
    with clearance_airflow.api() as client:
        yield client


@pytest.fixture(scope="module")
def timeout_runs(api: httpx.Client) -> dict[str, str]:
    """Start both timeout runs early; their threshold 0 is never met by this trace, so they run alongside."""
    return {dag_id: trigger(api, dag_id) for dag_id in ("clearance_timeout", "clearance_soft_fail")}


def task_state(api: httpx.Client, dag_id: str, run_id: str, task_id: str) -> str | None:
    return task_states(api, dag_id, run_id).get(task_id)


def xcom(api: httpx.Client, dag_id: str, run_id: str, task_id: str, key: str = "return_value"):
    response = api.get(
        f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
        params={"deserialize": True},
    )
    response.raise_for_status()
    return response.json()["value"]


def worker_runs(api: httpx.Client, dag_id: str, run_id: str, task_id: str) -> int:
    """How many times ``task_id`` started running on a worker, from the run's event log."""
    response = api.get("/api/v2/eventLogs", params={"dag_id": dag_id, "run_id": run_id, "task_id": task_id, "limit": 100})
    response.raise_for_status()
    return sum(1 for entry in response.json()["event_logs"] if entry["event"] == "running")


def sensor_log(airflow: LocalAirflow, dag_id: str, run_id: str) -> str:
    """The sensor's log of its first try, read from the shared log folder."""
    folder = airflow.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / "task_id=thermal_clearance"
    return (folder / "attempt=1.log").read_text(errors="replace")


def wait_for_state(api: httpx.Client, dag_id: str, run_id: str, task_id: str, state: str, timeout: float = 90) -> None:
    wait_for(
        lambda: task_state(api, dag_id, run_id, task_id) == state,
        timeout=timeout,
        what=f"{dag_id}.{task_id} to be {state} (states: {task_states(api, dag_id, run_id)})",
    )


def test_reschedule_waits_then_clears(api: httpx.Client, replay: ReplayMonitor, timeout_runs: dict) -> None:
    replay.seek(SERIOUS)
    dag_id = "clearance_reschedule"
    run_id = trigger(api, dag_id)

    wait_for_state(api, dag_id, run_id, "thermal_clearance", "up_for_reschedule")
    replay.seek(FAIR)
    final = wait_for_run(api, dag_id, run_id, timeout=120)

    assert final == "success", task_states(api, dag_id, run_id)
    clearance = xcom(api, dag_id, run_id, "thermal_clearance")
    assert set(clearance) == CLEARANCE_KEYS
    assert clearance["thermal_state"] == 1
    assert clearance["host"] == "e2e-host"
    downstream = xcom(api, dag_id, run_id, "use_throttle")
    assert downstream == {"throttle_level": 0.9, "batch_size": 28, "source": "clearance thermal_clearance"}
    assert xcom(api, dag_id, run_id, "templated_level") == 0.9


def test_deferrable_waits_in_triggerer(api: httpx.Client, replay: ReplayMonitor, timeout_runs: dict) -> None:
    replay.seek(SERIOUS)
    dag_id = "clearance_deferrable"
    run_id = trigger(api, dag_id)

    wait_for_state(api, dag_id, run_id, "thermal_clearance", "deferred")
    replay.seek(FAIR)
    final = wait_for_run(api, dag_id, run_id, timeout=120)

    assert final == "success", task_states(api, dag_id, run_id)
    # The trigger ended the sensor: its only worker run is the first check before deferring.
    assert task_state(api, dag_id, run_id, "thermal_clearance") == "success"
    assert worker_runs(api, dag_id, run_id, "thermal_clearance") == 1
    clearance = xcom(api, dag_id, run_id, "thermal_clearance")
    assert set(clearance) == CLEARANCE_KEYS
    assert clearance["thermal_state"] == 1
    assert clearance["throttle_level"] == 0.9
    assert clearance["host"] == "e2e-host"
    downstream = xcom(api, dag_id, run_id, "use_throttle")
    assert downstream == {"throttle_level": 0.9, "batch_size": 28, "source": "clearance thermal_clearance"}
    assert xcom(api, dag_id, run_id, "templated_level") == 0.9


def test_timeout_fails_sensor(clearance_airflow: LocalAirflow, api: httpx.Client, timeout_runs: dict) -> None:
    run_id = timeout_runs["clearance_timeout"]

    final = wait_for_run(api, "clearance_timeout", run_id, timeout=150)

    states = task_states(api, "clearance_timeout", run_id)
    assert final == "failed"
    assert states["thermal_clearance"] == "failed"
    assert states["use_throttle"] == "upstream_failed"
    assert "Sensor has timed out" in sensor_log(clearance_airflow, "clearance_timeout", run_id)


def test_soft_fail_skips_sensor(clearance_airflow: LocalAirflow, api: httpx.Client, timeout_runs: dict) -> None:
    run_id = timeout_runs["clearance_soft_fail"]

    wait_for_run(api, "clearance_soft_fail", run_id, timeout=150)

    states = task_states(api, "clearance_soft_fail", run_id)
    assert states["thermal_clearance"] == "skipped"
    assert states["use_throttle"] == "skipped"
    assert "Sensor has timed out" in sensor_log(clearance_airflow, "clearance_soft_fail", run_id)


def test_example_dags_succeed(api: httpx.Client, replay: ReplayMonitor) -> None:
    replay.seek(FAIR)
    runs = {dag_id: trigger(api, dag_id) for dag_id in EXAMPLE_DAG_IDS}

    finals = {dag_id: wait_for_run(api, dag_id, run_id, timeout=300) for dag_id, run_id in runs.items()}

    assert finals == {"thermal_aware_training": "success", "thermal_aware_batch_inference": "success"}, {
        dag_id: task_states(api, dag_id, run_id) for dag_id, run_id in runs.items()
    }
    training_run = runs["thermal_aware_training"]
    trained = xcom(api, "thermal_aware_training", training_run, "train_model")
    assert trained["effective_batch_size"] == 28
    assert trained["losses"][-1] < trained["losses"][0]
    validated = xcom(api, "thermal_aware_training", training_run, "validate_model")
    assert validated["count"] == 400
    assert validated["mean_squared_error"] < 0.1
    metrics = xcom(api, "thermal_aware_training", training_run, "train_model", key="thermal_metrics")
    assert metrics["throttle_level"] == 0.9
    summary = xcom(api, "thermal_aware_batch_inference", runs["thermal_aware_batch_inference"], "summarize")
    assert summary["predictions"] == 1500
    assert [shard["effective_batch_size"] for shard in summary["shards"]] == [57, 57, 57]
