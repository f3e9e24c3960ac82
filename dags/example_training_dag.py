"""Example: prepare data, train a small MLX model and validate it, each gated by the host's heat.

- ``prepare_data`` (threshold fair, normal priority) is a clearance sensor plus the work, built by
  ``create_thermal_aware_task``; it writes synthetic regression data.
- ``train_model`` (threshold serious, high priority) trains an MLX multilayer perceptron. It
  waits for clearance in the triggerer, then trains with its batch size scaled by the throttle
  level (32 at nominal, 28 at fair, 22 at serious).
- ``validate_model`` (threshold fair) runs the trained model on held-out data and reports the
  mean squared error.

Every task sits in the tier pool of its threshold, so the maintenance DAG
(``thermal_pool_maintenance``) must run for the pools to exist. On a laptop CPU the whole run
takes well under a minute. Files go to ``$THERMAL_POOLS_EXAMPLE_DATA`` (default
``$AIRFLOW_HOME/thermal_pools_examples``), one folder per run.

Nothing is read or imported at parse time beyond Airflow and thermal-pools: MLX is imported
when a task runs.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG

from thermal_pools.operators import (
    ThermalAwareInferenceOperator,
    ThermalAwareTrainingOperator,
    create_thermal_aware_task,
)

DAG_ID = "thermal_aware_training"

BASE = os.environ.get(
    "THERMAL_POOLS_EXAMPLE_DATA",
    str(Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow")) / "thermal_pools_examples"),
)
# One folder per run; run ids contain ':' and '+', which some tools dislike in paths.
RUN_FOLDER = BASE + "/" + DAG_ID + "/{{ run_id | replace(':', '_') | replace('+', '_') }}"


def prepare_dataset(folder: str, examples: int = 2000, features: int = 8) -> dict:
    """Write a training and a validation split of one noisy linear function."""
    from thermal_pools.operators.mlx_work import make_regression_data, write_examples

    xs, ys = make_regression_data(examples, features, seed=7)
    split = examples * 4 // 5
    write_examples(f"{folder}/train.jsonl", xs[:split], ys[:split])
    write_examples(f"{folder}/valid.jsonl", xs[split:], ys[split:])
    return {"folder": folder, "train": split, "valid": examples - split}


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
        task_id="prepare_data",
        python_callable=prepare_dataset,
        op_kwargs={"folder": RUN_FOLDER},
        thermal_threshold=1,
        priority="normal",
        memory_required_gb=0.5,
        poke_interval=5,
    )

    train = ThermalAwareTrainingOperator(
        task_id="train_model",
        model_name="mlp",
        dataset_path=RUN_FOLDER + "/train.jsonl",
        output_path=RUN_FOLDER + "/model",
        thermal_threshold=2,
        priority="high",
        memory_required_gb=2.0,
        wait_for_clearance=True,
        clearance_timeout_seconds=600,
        training_config={"epochs": 10, "batch_size": 32, "learning_rate": 1e-2, "hidden_size": 32},
    )

    validate = ThermalAwareInferenceOperator(
        task_id="validate_model",
        model_path=RUN_FOLDER + "/model",
        input_data=RUN_FOLDER + "/valid.jsonl",
        output_path=RUN_FOLDER + "/valid_predictions.jsonl",
        thermal_threshold=1,
        memory_required_gb=1.0,
        inference_config={"batch_size": 128},
    )

    prep >> train >> validate
