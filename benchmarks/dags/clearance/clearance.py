"""Benchmark DAGs: heavy tasks that wait for thermal clearance in three ways.

- ``bench_wait_blocking``: each heavy task polls ``ThermalAwareScheduler.should_run_task`` in a
  sleep loop on its worker, then works; it returns the epoch time its work started.
- ``bench_wait_reschedule``: a ``ThermalClearanceSensor`` in reschedule mode before each task.
- ``bench_wait_reschedule_60s``: the same, poking every 60 s instead.
- ``bench_wait_deferrable``: the same sensor, deferrable, so the triggerer waits.

Every way but the 60 s one checks every ``CHECK_INTERVAL_SECONDS`` and lets the heavy work
start at ``THERMAL_THRESHOLD`` (fair) or cooler.
"""

from __future__ import annotations

import time
from datetime import datetime

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG

from thermal_pools.sensors import ThermalClearanceSensor

HEAVY_TASKS = 4
CHECK_INTERVAL_SECONDS = 10
THERMAL_THRESHOLD = 1
# Maximum wait, s, before a waiting task fails; the benchmark's hot spell is shorter.
WAIT_TIMEOUT_SECONDS = 1200
# Stand-in for the heavy work, s.
WORK_SECONDS = 3


def heavy_work() -> dict:
    started = time.time()
    time.sleep(WORK_SECONDS)
    return {"heavy_started_at": started}


def wait_then_work(task_id: str) -> dict:
    """Poll the policy in a sleep loop on the worker until the task is clear, then work (the baseline)."""
    from thermal_pools.scheduler import ThermalAwareScheduler

    scheduler = ThermalAwareScheduler()
    deadline = time.time() + WAIT_TIMEOUT_SECONDS
    checks = 1
    while not scheduler.should_run_task(task_id, thermal_threshold=THERMAL_THRESHOLD).should_run:
        if time.time() > deadline:
            raise TimeoutError(f"{task_id}: no thermal clearance after {WAIT_TIMEOUT_SECONDS} s")
        time.sleep(CHECK_INTERVAL_SECONDS)
        checks += 1
    return {**heavy_work(), "checks": checks}


def bench_dag(dag_id: str) -> DAG:
    return DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, max_active_tasks=32, tags=["benchmark"])


with bench_dag("bench_wait_blocking"):
    for index in range(HEAVY_TASKS):
        PythonOperator(task_id=f"heavy_{index}", python_callable=wait_then_work, op_kwargs={"task_id": f"heavy_{index}"})

SENSOR_DAGS = (
    ("bench_wait_reschedule", False, CHECK_INTERVAL_SECONDS),
    ("bench_wait_reschedule_60s", False, 60),
    ("bench_wait_deferrable", True, CHECK_INTERVAL_SECONDS),
)
for dag_id, deferrable, poke_interval in SENSOR_DAGS:
    with bench_dag(dag_id):
        for index in range(HEAVY_TASKS):
            gate = ThermalClearanceSensor(
                task_id=f"clearance_{index}",
                thermal_threshold=THERMAL_THRESHOLD,
                poke_interval=poke_interval,
                timeout=WAIT_TIMEOUT_SECONDS,
                mode="reschedule",
                deferrable=deferrable,
            )
            gate >> PythonOperator(task_id=f"heavy_{index}", python_callable=heavy_work)
