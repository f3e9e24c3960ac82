"""Thermal-aware operators: tier pools, clearance paths, real MLX training and inference, task groups."""

from __future__ import annotations

import datetime
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow.sdk import DAG, TaskGroup
from airflow.sdk.exceptions import TaskDeferred
from tests.airflow_helpers import CRITICAL, FAIR, NOMINAL, SERIOUS
from thermal_pools.monitor import ReplayMonitor
from thermal_pools.operators import (
    THERMAL_METRICS_KEY,
    ThermalAwareInferenceOperator,
    ThermalAwareMLXOperator,
    ThermalAwareTrainingOperator,
    ThermalHoldError,
    create_thermal_aware_task,
)
from thermal_pools.operators import mlx_work
from thermal_pools.sensors import ThermalClearanceSensor, ThermalClearanceTrigger

REPO = Path(__file__).resolve().parent.parent

@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """400 examples of a noisy linear function of 4 features, written as JSON Lines."""
    xs, ys = mlx_work.make_regression_data(400, 4, seed=3)
    return mlx_work.write_examples(tmp_path / "train.jsonl", xs, ys)


class FakeTaskInstance:
    """The task-instance members the operators use: task_id, xcom_pull and xcom_push."""

    def __init__(self, task_id: str, values: dict[str, Any] | None = None) -> None:
        self.task_id = task_id
        self.values = values or {}
        self.pushed: dict[str, Any] = {}

    def xcom_pull(self, task_ids: str) -> Any:
        return self.values.get(task_ids)

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def run(operator: Any, values: dict[str, Any] | None = None) -> tuple[Any, FakeTaskInstance]:
    ti = FakeTaskInstance(operator.task_id, values)
    return operator.execute({"ti": ti}), ti


# -- construction -------------------------------------------------------------------------------


@pytest.mark.parametrize(("threshold", "pool"), [(0, "thermal_nominal"), (1, "thermal_fair"), (2, "thermal_serious"), (3, "thermal_critical")])
def test_operator_tier_pool(replay: ReplayMonitor, threshold: int, pool: str) -> None:
    operator = ThermalAwareMLXOperator(task_id="work", python_callable=print, thermal_threshold=threshold)

    assert operator.pool == pool


def test_operator_rejects_other_pool(replay: ReplayMonitor) -> None:
    with pytest.raises(ValueError, match="^task 'work': invalid pool 'default_pool'.*tier pool 'thermal_fair'"):
        ThermalAwareMLXOperator(task_id="work", python_callable=print, thermal_threshold=1, pool="default_pool")


def test_operator_profile_defaults(replay: ReplayMonitor, dataset: Path) -> None:
    training = ThermalAwareTrainingOperator(task_id="train", model_name="mlp", dataset_path=str(dataset))
    inference = ThermalAwareInferenceOperator(task_id="infer", model_path="model", input_data=[[1.0]])

    assert (training.thermal_threshold, training.priority, training.memory_required_gb) == (2, "high", 16.0)
    assert (inference.thermal_threshold, inference.priority, inference.memory_required_gb) == (1, "normal", 8.0)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"thermal_threshold": 5}, "invalid thermal_threshold 5"),
        ({"priority": "asap"}, "invalid priority 'asap'"),
        ({"memory_required_gb": -2}, "invalid memory_required_gb -2"),
        ({"clearance_timeout_seconds": 0}, "invalid clearance_timeout_seconds 0"),
        ({"training_config": {"epoch": 3}}, "unknown training_config setting.*epoch.*valid names"),
        ({"model_name": ""}, "invalid model_name ''"),
        ({"training_callable": "train.py"}, "invalid training_callable 'train.py'"),
    ],
)
def test_training_rejects_invalid_args(replay: ReplayMonitor, dataset: Path, arguments: dict, message: str) -> None:
    values = {"task_id": "train", "model_name": "mlp", "dataset_path": str(dataset), **arguments}

    with pytest.raises(ValueError, match=f"^task 'train': {message}"):
        ThermalAwareTrainingOperator(**values)


# Bad training_config value and the accepted form the message must give.
BAD_TRAINING_SETTINGS = [
    ("epochs", -1, "a whole number >= 1"),
    ("epochs", 0, "a whole number >= 1"),
    ("epochs", 2.5, "a whole number >= 1"),
    ("epochs", True, "a whole number >= 1"),
    ("epochs", "three", "a whole number >= 1"),
    ("batch_size", 0, "a whole number >= 1"),
    ("hidden_size", -8, "a whole number >= 1"),
    ("iters", 0, "a whole number >= 1"),
    ("seed", -1, "a whole number >= 0"),
    ("learning_rate", 0, "a finite number > 0"),
    ("learning_rate", -0.1, "a finite number > 0"),
    ("learning_rate", float("nan"), "a finite number > 0"),
    ("learning_rate", float("inf"), "a finite number > 0"),
    ("learning_rate", "fast", "a finite number > 0"),
    ("loss", "huber", "one of mse, cross_entropy"),
]


@pytest.mark.parametrize(("key", "value", "expected"), BAD_TRAINING_SETTINGS)
def test_training_config_bad_value(replay: ReplayMonitor, dataset: Path, key: str, value: Any, expected: str) -> None:
    with pytest.raises(ValueError) as error:
        ThermalAwareTrainingOperator(task_id="train", model_name="mlp", dataset_path=str(dataset), training_config={key: value})

    message = str(error.value)
    assert message.startswith(f"task 'train': invalid training_config[{key!r}] {value!r}: ")
    assert f"expected {expected}" in message


def test_training_config_numeric_text(replay: ReplayMonitor, dataset: Path) -> None:
    operator = ThermalAwareTrainingOperator(
        task_id="train", model_name="mlp", dataset_path=str(dataset), training_config={"epochs": "4", "learning_rate": "0.05"}
    )

    assert operator.training_config == {"epochs": 4, "learning_rate": 0.05}


def test_training_config_callable_extras(replay: ReplayMonitor, dataset: Path) -> None:
    # A training_callable receives names the built-in training does not know, and its own losses.
    operator = ThermalAwareTrainingOperator(
        task_id="train", model_name="custom", dataset_path=str(dataset), training_callable=print,
        training_config={"tokenizer": "bpe", "loss": "huber"},
    )  # fmt: skip

    assert operator.training_config == {"tokenizer": "bpe", "loss": "huber"}


def test_training_config_callable_bad_epochs(replay: ReplayMonitor, dataset: Path) -> None:
    with pytest.raises(ValueError, match=r"^task 'train': invalid training_config\['epochs'\] 0: "):
        ThermalAwareTrainingOperator(
            task_id="train", model_name="custom", dataset_path=str(dataset), training_callable=print, training_config={"epochs": 0}
        )


def test_training_config_whole_template(replay: ReplayMonitor, dataset: Path) -> None:
    operator = ThermalAwareTrainingOperator(
        task_id="train", model_name="mlp", dataset_path=str(dataset), training_config="{{ params.training }}"
    )

    operator.training_config = "{'epochs': 3}"  # rendered as text, without render_template_as_native_obj
    with pytest.raises(ValueError, match="^task 'train': invalid training_config .*render_template_as_native_obj=True"):
        run(operator)


@pytest.mark.parametrize(
    ("inference_config", "message"),
    [
        ({"max_tokens": 0}, r"invalid inference_config\['max_tokens'\] 0: expected a whole number >= 1"),
        ({"batch_size": "many"}, r"invalid inference_config\['batch_size'\] 'many': expected a whole number >= 1"),
        ({"batch": 8}, r"unknown inference_config setting\(s\) batch: valid names are batch_size, max_tokens"),
        ([("batch_size", 8)], r"invalid inference_config \[\('batch_size', 8\)\]: expected a dict of settings"),
    ],
)
def test_inference_config_bad_value(replay: ReplayMonitor, inference_config: Any, message: str) -> None:
    with pytest.raises(ValueError, match=f"^task 'infer': {message}"):
        ThermalAwareInferenceOperator(task_id="infer", model_path="model", input_data=[[1.0]], inference_config=inference_config)


def test_training_config_template_checked_rendered(replay: ReplayMonitor, dataset: Path) -> None:
    replay.seek(NOMINAL)
    seen: dict[str, Any] = {}
    operator = ThermalAwareTrainingOperator(
        task_id="train", model_name="custom", dataset_path=str(dataset), memory_required_gb=1.0,
        training_callable=lambda dataset_path, output_path, config: seen.update(config),
        training_config={"epochs": "{{ params.epochs }}"},
    )  # fmt: skip

    operator.training_config = {"epochs": "-1"}  # as Jinja would render it
    with pytest.raises(ValueError, match=r"^task 'train': invalid training_config\['epochs'\] '-1': "):
        run(operator)

    operator.training_config = {"epochs": "5"}
    run(operator)
    assert seen["epochs"] == 5


def test_operator_error_names_grouped_task(replay: ReplayMonitor) -> None:
    with DAG("grouped", schedule=None, start_date=datetime.datetime(2026, 1, 1)), TaskGroup("prepare"):
        with pytest.raises(ValueError) as error:
            ThermalAwareMLXOperator(task_id="run", python_callable=print, priority="asap")

    assert str(error.value).startswith("task 'prepare.run': invalid priority 'asap': ")


def test_task_group_error_names_group(replay: ReplayMonitor) -> None:
    with DAG("grouped", schedule=None, start_date=datetime.datetime(2026, 1, 1)):
        with pytest.raises(ValueError) as error:
            create_thermal_aware_task("prepare", print, thermal_threshold=9)

    assert str(error.value).startswith("task group 'prepare': invalid thermal_threshold 9: ")


def test_operator_module_imports_no_mlx() -> None:
    code = "import sys, thermal_pools.operators; print('mlx' in sys.modules, 'thermal_pools.monitor' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout

    assert output.split() == ["False", "False"]


@pytest.mark.parametrize("name", ["example_training_dag.py", "example_inference_dag.py"])
def test_example_dag_parses_without_mlx(name: str, tmp_path: Path) -> None:
    code = (
        "import runpy, sys; runpy.run_path(sys.argv[1]); "
        "print('mlx' in sys.modules, 'thermal_pools.monitor' in sys.modules)"
    )
    env = {"PATH": "/usr/bin:/bin", "AIRFLOW_HOME": str(tmp_path)}
    completed = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "dags" / name)], capture_output=True, text=True, cwd=REPO, env=env
    )

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split()[-2:] == ["False", "False"]


# -- clearance paths ----------------------------------------------------------------------------


def test_operator_passes_throttle_to_callable(replay: ReplayMonitor) -> None:
    replay.seek(SERIOUS)

    def work(size: int, throttle: Any) -> int:
        return throttle.batch_size(size)

    operator = ThermalAwareMLXOperator(task_id="work", python_callable=work, op_args=[100], thermal_threshold=2)
    result, ti = run(operator)

    assert result == 70
    assert ti.pushed[THERMAL_METRICS_KEY]["throttle_level"] == 0.7
    assert ti.pushed[THERMAL_METRICS_KEY]["throttle_source"] == "live decision"


def test_operator_without_wait_fails_when_hot(replay: ReplayMonitor) -> None:
    replay.seek(SERIOUS)
    operator = ThermalAwareMLXOperator(task_id="work", python_callable=print, thermal_threshold=1, wait_for_clearance=False)

    with pytest.raises(ThermalHoldError, match="above the task's threshold fair"):
        run(operator)


def test_operator_defers_when_hot(replay: ReplayMonitor) -> None:
    replay.seek(SERIOUS)
    operator = ThermalAwareMLXOperator(task_id="work", python_callable=print, thermal_threshold=1, clearance_timeout_seconds=90)

    with pytest.raises(TaskDeferred) as raised:
        run(operator)

    assert isinstance(raised.value.trigger, ThermalClearanceTrigger)
    assert raised.value.method_name == "execute_cleared"
    assert raised.value.trigger.serialize()[1]["thermal_threshold"] == 1


def test_operator_resumes_cleared(replay: ReplayMonitor) -> None:
    operator = ThermalAwareMLXOperator(task_id="work", python_callable=lambda throttle: throttle.level, thermal_threshold=1)
    ti = FakeTaskInstance("work")
    event = {"status": "cleared", "clearance": {"throttle_level": 0.9, "thermal_state": 1}, "checks": 3}

    result = operator.resume_execution("execute_cleared", {"event": event}, {"ti": ti})

    assert result == 0.9
    assert ti.pushed[THERMAL_METRICS_KEY]["thermal_state_before"] == 1


def test_operator_resume_timeout_fails(replay: ReplayMonitor) -> None:
    operator = ThermalAwareMLXOperator(task_id="work", python_callable=print, thermal_threshold=1)
    event = {"status": "timeout", "message": "work was not cleared", "reason": "hot"}

    with pytest.raises(ThermalHoldError, match="work was not cleared"):
        operator.resume_execution("execute_cleared", {"event": event}, {"ti": FakeTaskInstance("work")})


def test_operator_uses_upstream_clearance(replay: ReplayMonitor) -> None:
    replay.seek(NOMINAL)
    operator = ThermalAwareMLXOperator(
        task_id="work", python_callable=lambda throttle: throttle.batch_size(32), clearance_task_id="gate"
    )

    result, ti = run(operator, {"gate": {"throttle_level": 0.5, "thermal_state": 3, "health_score": 50.0}})

    assert result == 16
    assert ti.pushed[THERMAL_METRICS_KEY]["throttle_source"] == "clearance gate"
    assert ti.pushed[THERMAL_METRICS_KEY]["health_score_before"] == 50.0


# -- real MLX work ------------------------------------------------------------------------------


def test_training_loss_falls_scaled_batch(replay: ReplayMonitor, dataset: Path, tmp_path: Path) -> None:
    replay.seek(SERIOUS)
    operator = ThermalAwareTrainingOperator(
        task_id="train",
        model_name="mlp",
        dataset_path=str(dataset),
        output_path=str(tmp_path / "model"),
        memory_required_gb=1.0,
        training_config={"epochs": 8, "batch_size": 32, "learning_rate": 0.01},
    )

    summary, ti = run(operator)

    assert summary["backend"] == "mlx"
    assert summary["effective_batch_size"] == 22
    assert summary["steps"] == 8 * math.ceil(400 / 22)
    assert summary["losses"][-1] < summary["losses"][0] / 5
    assert (tmp_path / "model" / mlx_work.MODEL_FILE).is_file()
    metrics = ti.pushed[THERMAL_METRICS_KEY]
    assert metrics["effective_batch_size"] == 22
    assert metrics["throttle_level"] == 0.7
    assert metrics["idle_seconds"] > 0


def test_inference_predicts_trained_model(replay: ReplayMonitor, dataset: Path, tmp_path: Path) -> None:
    replay.seek(NOMINAL)
    xs, ys = mlx_work.load_examples(dataset)
    mlx_work.train_builtin("linear", xs, ys, epochs=40, batch_size=32, learning_rate=0.05, output_path=tmp_path / "model")
    replay.seek(FAIR)
    operator = ThermalAwareInferenceOperator(
        task_id="infer",
        model_path=str(tmp_path / "model"),
        input_data=str(dataset),
        output_path=str(tmp_path / "predictions.jsonl"),
        memory_required_gb=1.0,
        inference_config={"batch_size": 64},
    )

    summary, ti = run(operator)

    assert summary["count"] == 400
    assert summary["effective_batch_size"] == 57
    assert summary["mean_squared_error"] < 0.05
    assert len((tmp_path / "predictions.jsonl").read_text().splitlines()) == 400
    assert ti.pushed[THERMAL_METRICS_KEY]["effective_batch_size"] == 57


def test_classifier_trains_and_predicts(replay: ReplayMonitor, tmp_path: Path) -> None:
    replay.seek(NOMINAL)
    xs, _ = mlx_work.make_regression_data(300, 2, seed=5)
    labels = [[1 if x[0] + x[1] > 0 else 0] for x in xs]

    result = mlx_work.train_builtin("mlp", xs, labels, epochs=15, batch_size=16, loss="cross_entropy", output_path=tmp_path / "clf")
    model, spec = mlx_work.load_model(tmp_path / "clf")
    predicted = mlx_work.predict(model, xs, batch_size=50, classify=True)
    accuracy = sum(p == label[0] for p, label in zip(predicted, labels)) / len(labels)

    assert spec["out_features"] == 2
    assert result.final_loss < result.losses[0]
    assert accuracy > 0.9


def test_training_callable_gets_scaled_config(replay: ReplayMonitor, dataset: Path) -> None:
    replay.seek(CRITICAL)
    seen: dict[str, Any] = {}

    def train(dataset_path: str, output_path: str | None, config: dict) -> str:
        seen.update(config)
        return "trained"

    operator = ThermalAwareTrainingOperator(
        task_id="train",
        model_name="custom",
        dataset_path=str(dataset),
        thermal_threshold=3,
        memory_required_gb=1.0,
        training_callable=train,
        training_config={"batch_size": 40, "tokenizer": "bpe"},
    )
    summary, _ = run(operator)

    assert summary["result"] == "trained"
    assert seen["batch_size"] == 20
    assert seen["tokenizer"] == "bpe"


def test_load_examples_rejects_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"x": [1, 2], "y": [3]}\n{"x": "oops"}\n')

    with pytest.raises(ValueError, match=r"bad.jsonl, line 2: invalid example"):
        mlx_work.load_examples(path)


def test_mlx_lm_commands() -> None:
    lora = mlx_work.mlx_lm_lora_command("org/model", "data", "adapter", batch_size=3, iters=50, learning_rate=1e-5)
    generate = mlx_work.mlx_lm_generate_command("org/model", "Hello", max_tokens=64)

    assert lora[1:4] == ["-m", "mlx_lm", "lora"]
    assert lora[lora.index("--batch-size") + 1] == "3"
    assert generate[generate.index("--max-tokens") + 1] == "64"


# -- create_thermal_aware_task ------------------------------------------------------------------


def test_create_task_builds_group(replay: ReplayMonitor) -> None:
    with DAG("group_shape", schedule=None, start_date=datetime.datetime(2026, 1, 1)) as dag:
        prep = create_thermal_aware_task("prep", print, thermal_threshold=1, priority="normal", memory_required_gb=2.0)
        after = ThermalAwareMLXOperator(task_id="after", python_callable=print)
        prep >> after

    sensor = dag.get_task("prep.thermal_clearance")
    work = dag.get_task("prep.run")
    assert isinstance(sensor, ThermalClearanceSensor)
    assert sensor.pool == "default_pool"
    assert sensor.mode == "reschedule"
    assert work.pool == "thermal_fair"
    assert work.clearance_task_id == "prep.thermal_clearance"
    assert work.upstream_task_ids == {"prep.thermal_clearance"}
    assert after.upstream_task_ids == {"prep.run"}


def test_create_task_without_wait(replay: ReplayMonitor) -> None:
    with DAG("group_no_wait", schedule=None, start_date=datetime.datetime(2026, 1, 1)) as dag:
        create_thermal_aware_task("prep", print, thermal_threshold=1, wait_for_clearance=False)

    assert dag.task_ids == ["prep.run"]


def test_create_task_wraps_training(replay: ReplayMonitor, dataset: Path) -> None:
    with DAG("group_training", schedule=None, start_date=datetime.datetime(2026, 1, 1)) as dag:
        create_thermal_aware_task(
            "train", operator_class=ThermalAwareTrainingOperator, model_name="linear", dataset_path=str(dataset), deferrable=True
        )

    assert dag.get_task("train.thermal_clearance").deferrable is True
    assert dag.get_task("train.thermal_clearance").thermal_threshold == 2
    assert isinstance(dag.get_task("train.run"), ThermalAwareTrainingOperator)
    assert dag.get_task("train.run").pool == "thermal_serious"
