"""Scheduler overhead: task throughput in the tier pools against the same tasks in default_pool.

A real local Airflow (LocalExecutor, parallelism 16) runs two DAGs of tiny mapped no-op tasks
that differ only in their pools (``benchmarks/dags/throughput``). The tier pools get 128 slots,
like ``default_pool``, so no pool limits the run and any difference is the cost of placing the
tasks in four extra pools. Runs alternate between the two DAGs, and throughput is the number of
mapped tasks divided by the time from the first task's start to the last task's end.

The maintenance DAG does not run here, so this measures the pools, not the once-a-minute
maintenance task. Target: tier-pool throughput at least 0.95 of the default_pool throughput.
"""

from __future__ import annotations

import logging

from benchmarks.local import DAGS, local_airflow, parse_time, task_instances
from benchmarks.runner import Figure, median
from tests.airflow_helpers import trigger, unpause, wait_for_dag, wait_for_run

NAME = "overhead"
TITLE = "scheduler overhead: tasks in tier pools against default_pool"

log = logging.getLogger(__name__)

DEFAULT_DAG = "bench_throughput_default_pool"
TIER_DAG = "bench_throughput_tier_pools"
TIER_POOLS = ("thermal_nominal", "thermal_fair", "thermal_serious", "thermal_critical")
POOL_SLOTS = 128


def measure_run(api, dag_id: str, tasks_per_tier: int) -> dict:
    """Trigger one run, wait for it and return its task count, span and throughput."""
    run_id = trigger(api, dag_id, {"tasks_per_tier": tasks_per_tier})
    state = wait_for_run(api, dag_id, run_id, timeout=900)
    if state != "success":
        raise RuntimeError(f"run {run_id} of {dag_id} ended {state}; see the task logs in the Airflow home")

    mapped = [ti for ti in task_instances(api, dag_id, run_id) if ti["task_id"].startswith("noop_")]
    starts = [parse_time(ti["start_date"]) for ti in mapped]
    ends = [parse_time(ti["end_date"]) for ti in mapped]
    span = max(ends) - min(starts)
    result = {"run_id": run_id, "tasks": len(mapped), "span_seconds": span, "tasks_per_second": len(mapped) / span}
    log.info("%s: %d tasks in %.1f s, %.2f tasks/s", dag_id, len(mapped), span, result["tasks_per_second"])
    return result


def run(quick: bool = False) -> list[Figure]:
    tasks_per_tier, rounds = (15, 1) if quick else (50, 3)
    runs: dict[str, list[dict]] = {DEFAULT_DAG: [], TIER_DAG: []}
    with local_airflow(NAME, DAGS / "throughput") as airflow, airflow.api() as api:
        for pool in TIER_POOLS:
            api.post("/api/v2/pools", json={"name": pool, "slots": POOL_SLOTS, "description": "benchmark"}).raise_for_status()
        for dag_id in runs:
            wait_for_dag(api, dag_id)
            unpause(api, dag_id)

        # A short warm-up run, so the first measured run does not pay for cold caches.
        measure_run(api, DEFAULT_DAG, 2)
        for round_number in range(rounds):
            order = (DEFAULT_DAG, TIER_DAG) if round_number % 2 == 0 else (TIER_DAG, DEFAULT_DAG)
            for dag_id in order:
                runs[dag_id].append(measure_run(api, dag_id, tasks_per_tier))

    tier = median([result["tasks_per_second"] for result in runs[TIER_DAG]])
    default = median([result["tasks_per_second"] for result in runs[DEFAULT_DAG]])
    tasks = 4 * tasks_per_tier
    return [
        Figure(
            NAME,
            f"throughput of {tasks} no-op tasks in the tier pools (median of {rounds} run(s))",
            tier,
            "tasks/s",
            baseline="same tasks in default_pool",
            baseline_value=default,
            higher_is_better=True,
            target="ratio >= 0.95",
            met=tier / default >= 0.95,
            details={"runs": runs},
        )
    ]
