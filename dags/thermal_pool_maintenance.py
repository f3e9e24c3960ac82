"""Resize the thermal tier pools every minute from the host's readings.

Each run reads the host, records the reading in the readings table and applies the pool plan
through Airflow's REST API (see ``thermal_pools.maintenance``). The task runs in
``default_pool``, never in a tier pool, because a hot host throttles the tier pools and the
step that would cool them must still run.

Nothing is read at parse time: the monitor, the database and the API are touched only when the
task runs, so this file parses in milliseconds.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task

DAG_ID = "thermal_pool_maintenance"


@dag(
    dag_id=DAG_ID,
    schedule="* * * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,
    dagrun_timeout=timedelta(minutes=2),
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=10),
        "execution_timeout": timedelta(seconds=45),
        "pool": "default_pool",
    },
    tags=["thermal-pools"],
    doc_md=__doc__,
)
def thermal_pool_maintenance():
    @task
    def resize_tier_pools() -> dict:
        """Read the host, record the reading and resize the four tier pools."""
        from thermal_pools.maintenance import run_from_airflow

        return run_from_airflow()

    resize_tier_pools()


thermal_pool_maintenance()
