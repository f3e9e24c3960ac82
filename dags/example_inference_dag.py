"""Example: batch inference over several shards, throttled by the host's heat.

- ``prepare_batches`` (threshold fair) writes reference data and three input shards.
- ``fit_reference_model`` (threshold serious) fits a small MLX linear model to the reference data.
- ``score_shard_0`` .. ``score_shard_2`` (threshold fair) each run the model over one shard in
  the ``thermal_fair`` pool, so the pool decides how many run at once: none while the host is
  serious or critical, fewer as it warms. Each scales its batch size by the throttle level (64 at
  nominal, 57 at fair) and writes its predictions to a JSON Lines file.
- ``summarize`` collects the counts and each shard's ``thermal_metrics``.

The tier pools come from the maintenance DAG (``thermal_pool_maintenance``). Files go to
``$THERMAL_POOLS_EXAMPLE_DATA`` (default ``$AIRFLOW_HOME/thermal_pools_examples``), one folder
per run. MLX is imported only when a task runs.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, task

from thermal_pools.operators import (
    THERMAL_METRICS_KEY,
    ThermalAwareInferenceOperator,
    ThermalAwareTrainingOperator,
    create_thermal_aware_task,
)

DAG_ID = "thermal_aware_batch_inference"
SHARDS = 3

BASE = os.environ.get(
    "THERMAL_POOLS_EXAMPLE_DATA",
    str(Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow")) / "thermal_pools_examples"),
)
RUN_FOLDER = BASE + "/" + DAG_ID + "/{{ run_id | replace(':', '_') | replace('+', '_') }}"


def prepare_batches(folder: str, shards: int, shard_size: int = 500, features: int = 6) -> dict:
    """Write reference data with targets and ``shards`` input files of the same function."""
    from thermal_pools.operators.mlx_work import make_regression_data, write_examples

    xs, ys = make_regression_data(800 + shards * shard_size, features, seed=11)
    write_examples(f"{folder}/reference.jsonl", xs[:800], ys[:800])
    for shard in range(shards):
        start = 800 + shard * shard_size
        write_examples(f"{folder}/shard_{shard}.jsonl", xs[start : start + shard_size])
    return {"folder": folder, "shards": shards, "shard_size": shard_size}


with DAG(
    DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"owner": "mlops", "retries": 1, "retry_delay": timedelta(seconds=30)},
    tags=["thermal-pools", "example"],
    doc_md=__doc__,
) as dag:
    prep = create_thermal_aware_task(
        task_id="prepare_batches",
        python_callable=prepare_batches,
        op_kwargs={"folder": RUN_FOLDER, "shards": SHARDS},
        thermal_threshold=1,
        memory_required_gb=0.5,
        poke_interval=5,
    )

    fit = ThermalAwareTrainingOperator(
        task_id="fit_reference_model",
        model_name="linear",
        dataset_path=RUN_FOLDER + "/reference.jsonl",
        output_path=RUN_FOLDER + "/model",
        thermal_threshold=2,
        priority="normal",
        memory_required_gb=1.0,
        training_config={"epochs": 20, "batch_size": 32, "learning_rate": 0.05},
    )

    scores = [
        ThermalAwareInferenceOperator(
            task_id=f"score_shard_{shard}",
            model_path=RUN_FOLDER + "/model",
            input_data=RUN_FOLDER + f"/shard_{shard}.jsonl",
            output_path=RUN_FOLDER + f"/predictions_{shard}.jsonl",
            thermal_threshold=1,
            priority="normal",
            memory_required_gb=1.0,
            inference_config={"batch_size": 64},
        )
        for shard in range(SHARDS)
    ]

    @task
    def summarize(ti=None) -> dict:
        """Add up the shards' predictions and list each shard's throttle and batch size."""
        shard_ids = [f"score_shard_{shard}" for shard in range(SHARDS)]
        results = ti.xcom_pull(task_ids=shard_ids)
        metrics = ti.xcom_pull(task_ids=shard_ids, key=THERMAL_METRICS_KEY)
        return {
            "predictions": sum(result["count"] for result in results),
            "shards": [
                {"task_id": m["task_id"], "throttle_level": m["throttle_level"], "effective_batch_size": m["effective_batch_size"]}
                for m in metrics
            ],
        }

    prep >> fit >> scores >> summarize()
