"""Benchmark DAGs: many no-op tasks in the four tier pools, or the same tasks in default_pool.

Each DAG maps one no-op task per tier over ``dag_run.conf["tasks_per_tier"]`` items (default
50), so a run has four times that many tiny tasks. Only the pools differ between the two DAGs.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, get_current_context, task

TIERS = ("nominal", "fair", "serious", "critical")


def throughput_dag(dag_id: str, pool_of_tier) -> None:
    @dag(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, max_active_tasks=64, tags=["benchmark"])
    def throughput():
        @task(pool="default_pool")
        def items() -> list[int]:
            conf = get_current_context()["dag_run"].conf or {}
            return list(range(int(conf.get("tasks_per_tier", 50))))

        numbers = items()
        for tier in TIERS:

            @task(task_id=f"noop_{tier}", pool=pool_of_tier(tier))
            def noop(number: int) -> None:
                return None

            noop.expand(number=numbers)

    throughput()


throughput_dag("bench_throughput_default_pool", lambda tier: "default_pool")
throughput_dag("bench_throughput_tier_pools", lambda tier: f"thermal_{tier}")
