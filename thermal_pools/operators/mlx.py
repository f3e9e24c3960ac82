"""Thermal-aware operators that run MLX work at the throttle they were cleared at.

- :class:`ThermalAwareMLXOperator` runs any Python callable.
- :class:`ThermalAwareTrainingOperator` trains a model: a built-in ``linear`` or ``mlp`` model
  with MLX, a ``training_callable`` of your own, or any other ``model_name`` through
  ``mlx_lm lora``.
- :class:`ThermalAwareInferenceOperator` runs a model over inputs: a built-in model folder with
  MLX, an ``inference_callable``, or a language model through ``mlx_lm generate``.
- :func:`create_thermal_aware_task` wraps a callable (or any of these operators) in a task group
  of a clearance sensor and the work task.

The work's batch size is the configured one scaled by the throttle level
(:func:`thermal_pools.throttle.scaled_batch_size`), and loops are paced to the throttle level
(:class:`thermal_pools.throttle.DutyCyclePacer`). MLX is imported only when a task runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, TaskGroup

from thermal_pools.operators import mlx_work
from thermal_pools.operators.mixin import ThermalAwareOperatorMixin, accepts_keyword, given_settings
from thermal_pools.profiles import create_task_config, prefix_task_errors
from thermal_pools.sensors.clearance import ThermalClearanceSensor
from thermal_pools.throttle import ThrottleContext

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = [
    "ThermalAwareInferenceOperator",
    "ThermalAwareMLXOperator",
    "ThermalAwareTrainingOperator",
    "create_thermal_aware_task",
]

# Settings of built-in training, with their defaults; "iters" is for mlx_lm only.
TRAINING_DEFAULTS: dict[str, Any] = {
    "epochs": 3,
    "learning_rate": 1e-2,
    "hidden_size": 32,
    "loss": "mse",
    "seed": 0,
    "iters": 100,
}
INFERENCE_DEFAULTS: dict[str, Any] = {"max_tokens": 512}

# Names training_config and inference_config accept; batch_size defaults to the task profile's.
TRAINING_SETTINGS = {"batch_size", *TRAINING_DEFAULTS}
INFERENCE_SETTINGS = {"batch_size", *INFERENCE_DEFAULTS}

# Predictions returned in the inference XCom value; the full set goes to output_path.
PREDICTION_PREVIEW = 10


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


def _whole_number(value: Any, low: int) -> int | None:
    """Return ``value`` (or its text) as an int >= ``low``, or None when it is not one."""
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        return None
    return value


def _positive_number(value: Any) -> float | None:
    """Return ``value`` (or its text) as a finite float > 0, or None when it is not one."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        return None
    return float(value)


def _loss_name(value: Any) -> str | None:
    return value if isinstance(value, str) and value in mlx_work.LOSSES else None


# Known settings of training_config and inference_config: name -> (converter that returns the
# value or None when it is invalid, the accepted form for the message). Text is accepted for
# numbers because a templated value renders as text.
SETTING_CHECKS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "batch_size": (lambda v: _whole_number(v, 1), "a whole number >= 1, for example 32"),
    "epochs": (lambda v: _whole_number(v, 1), "a whole number >= 1, for example 3"),
    "iters": (lambda v: _whole_number(v, 1), "a whole number >= 1, for example 100"),
    "hidden_size": (lambda v: _whole_number(v, 1), "a whole number >= 1, for example 32"),
    "max_tokens": (lambda v: _whole_number(v, 1), "a whole number >= 1, for example 512"),
    "seed": (lambda v: _whole_number(v, 0), "a whole number >= 0, for example 0"),
    "learning_rate": (_positive_number, "a finite number > 0, for example 0.01"),
    "loss": (_loss_name, f"one of {', '.join(mlx_work.LOSSES)}"),
}


def _check_settings(
    name: str, settings: Any, valid: set[str], *, extra_allowed: bool, rendered: bool
) -> dict[str, Any] | str:
    """Return ``settings`` with the known ones converted; raise ``ValueError`` on a bad one.

    Before rendering (``rendered=False``), Jinja strings, including a whole-dict template, are
    kept as they are, to be checked once rendered. Unknown names are rejected unless ``extra_allowed``, when a callable of the
    user's receives them. ``loss`` is checked only when it is in ``valid`` and no callable
    replaces the built-in training, which is the only code that reads it.
    """
    if settings is None:
        return {}
    if not rendered and _is_template(settings):
        return settings
    if not isinstance(settings, dict):
        hint = ", or set render_template_as_native_obj=True on the DAG to render it as one" if rendered else ""
        raise ValueError(f"invalid {name} {settings!r}: expected a dict of settings{hint}")

    unknown = sorted(set(settings) - valid)
    if unknown and not extra_allowed:
        raise ValueError(f"unknown {name} setting(s) {', '.join(unknown)}: valid names are {', '.join(sorted(valid))}")

    checked = dict(settings)
    for key, value in settings.items():
        if key not in valid or key not in SETTING_CHECKS or (key == "loss" and extra_allowed):
            continue
        if not rendered and _is_template(value):
            continue
        convert, expected = SETTING_CHECKS[key]
        converted = convert(value)
        if converted is None:
            raise ValueError(f"invalid {name}[{key!r}] {value!r}: expected {expected}")
        checked[key] = converted
    return checked


def _call(function: Callable[..., Any], throttle: ThrottleContext, *args: Any, **kwargs: Any) -> Any:
    """Call ``function``, passing ``throttle=`` when it accepts that keyword."""
    if accepts_keyword(function, "throttle"):
        kwargs["throttle"] = throttle
    return function(*args, **kwargs)


class ThermalAwareMLXOperator(ThermalAwareOperatorMixin, BaseOperator):
    """Runs ``python_callable(*op_args, **op_kwargs)`` once the host is clear for it.

    The callable receives the :class:`~thermal_pools.throttle.ThrottleContext` as ``throttle=``
    when it accepts that keyword (or ``**kwargs``). See
    :class:`~thermal_pools.operators.mixin.ThermalAwareOperatorMixin` for the thermal arguments.
    """

    template_fields: Sequence[str] = ("op_args", "op_kwargs")

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Sequence[Any] | None = None,
        op_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        with prefix_task_errors(self.task_id):
            if not callable(python_callable):
                raise ValueError(f"invalid python_callable {python_callable!r}: expected a function")
        self.python_callable = python_callable
        self.op_args = list(op_args or [])
        self.op_kwargs = dict(op_kwargs or {})

    def execute_work(self, context: Context, throttle: ThrottleContext) -> Any:
        return _call(self.python_callable, throttle, *self.op_args, **self.op_kwargs)


class ThermalAwareTrainingOperator(ThermalAwareOperatorMixin, BaseOperator):
    """Trains a model at the throttle it was cleared at; defaults from the ``training`` profile.

    :param model_name: ``linear`` or ``mlp`` (built-in MLX models), or a model for
        ``mlx_lm lora`` (a Hugging Face id or local folder).
    :param dataset_path: JSON Lines examples for built-in models (see
        :mod:`thermal_pools.operators.mlx_work`), or the data folder for ``mlx_lm``.
    :param output_path: folder to save the trained model (or the ``mlx_lm`` adapter) to.
    :param training_config: ``batch_size`` (at nominal state; default from the profile, 32),
        ``epochs`` (3), ``learning_rate`` (0.01), ``hidden_size`` (32, ``mlp`` only),
        ``loss`` (``mse`` or ``cross_entropy``), ``seed`` (0), ``iters`` (``mlx_lm`` only, 100).
        Unknown names and bad values raise ``ValueError`` when the DAG is parsed, and templated
        values are checked once rendered.
    :param training_callable: replaces the built-in training:
        ``training_callable(dataset_path=, output_path=, config=, [throttle=])``, where
        ``config`` is ``training_config`` with the throttled ``batch_size``.

    Returns the training summary (per-epoch losses, steps, effective batch size).
    """

    template_fields: Sequence[str] = ("model_name", "dataset_path", "output_path", "training_config")
    profile = "training"

    def __init__(
        self,
        *,
        model_name: str,
        dataset_path: str,
        output_path: str | None = None,
        training_config: dict[str, Any] | None = None,
        training_callable: Callable[..., Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        with prefix_task_errors(self.task_id):
            if not isinstance(model_name, str) or not model_name.strip():
                raise ValueError(f"invalid model_name {model_name!r}: use 'linear', 'mlp' or an mlx_lm model")
            if training_callable is not None and not callable(training_callable):
                raise ValueError(f"invalid training_callable {training_callable!r}: expected a function")
            self.training_config = _check_settings(
                "training_config",
                training_config,
                TRAINING_SETTINGS,
                extra_allowed=training_callable is not None,
                rendered=False,
            )
        self.model_name = model_name
        self.dataset_path = dataset_path
        self.output_path = output_path
        self.training_callable = training_callable

    def _rendered_settings(self) -> dict[str, Any]:
        """Return the defaults overlaid with ``training_config``, checked again now that it is rendered."""
        with prefix_task_errors(self.task_id):
            settings = _check_settings(
                "training_config",
                self.training_config,
                TRAINING_SETTINGS,
                extra_allowed=self.training_callable is not None,
                rendered=True,
            )
        return {**TRAINING_DEFAULTS, "batch_size": self.task_config.batch_size, **settings}

    def execute_work(self, context: Context, throttle: ThrottleContext) -> Any:
        settings = self._rendered_settings()
        base = int(settings["batch_size"])
        effective = throttle.batch_size(base)
        pacer = throttle.pacer()
        self.log.info(
            "Training %s: batch size %d scaled to %d at throttle %g (%s)", self.model_name, base, effective, throttle.level, throttle.source
        )

        if self.training_callable is not None:
            result = _call(
                self.training_callable,
                throttle,
                dataset_path=self.dataset_path,
                output_path=self.output_path,
                config={**settings, "batch_size": effective},
            )
            summary: dict[str, Any] = {"backend": "callable", "result": result}
        elif self.model_name in mlx_work.BUILTIN_MODELS:
            xs, ys = mlx_work.load_examples(self.dataset_path)
            if ys is None:
                raise ValueError(f"dataset {self.dataset_path} has no 'y' targets: training needs them")
            result = mlx_work.train_builtin(
                self.model_name,
                xs,
                ys,
                epochs=int(settings["epochs"]),
                batch_size=effective,
                learning_rate=float(settings["learning_rate"]),
                hidden_size=int(settings["hidden_size"]),
                loss=str(settings["loss"]),
                seed=int(settings["seed"]),
                output_path=self.output_path,
                pacer=pacer,
            )
            summary = {"backend": "mlx", **result.to_dict()}
        else:
            # NOTE: the mlx_lm path is not run by this repository's tests, because it needs the
            # mlx-lm package and the model's weights. It runs on the GPU of an Apple Silicon Mac.
            if not self.output_path:
                raise ValueError(f"output_path is required to save the mlx_lm adapter of {self.model_name}")
            command = mlx_work.mlx_lm_lora_command(
                self.model_name,
                self.dataset_path,
                self.output_path,
                batch_size=effective,
                iters=int(settings["iters"]),
                learning_rate=float(settings["learning_rate"]),
            )
            output = mlx_work.run_command(command)
            summary = {"backend": "mlx_lm", "adapter_path": self.output_path, "output_tail": output[-1000:]}

        self.record_work_metrics(
            base_batch_size=base,
            effective_batch_size=effective,
            idle_seconds=round(pacer.idle_seconds, 3),
            duty_cycle=round(pacer.duty_cycle, 3),
        )
        summary.update(model_name=self.model_name, base_batch_size=base, effective_batch_size=effective, throttle_level=throttle.level)
        return summary


class ThermalAwareInferenceOperator(ThermalAwareOperatorMixin, BaseOperator):
    """Runs a model over inputs at the throttle it was cleared at; defaults from the ``inference`` profile.

    :param model_path: a folder saved by :class:`ThermalAwareTrainingOperator` with a built-in
        model, or a model for ``mlx_lm generate``.
    :param input_data: feature rows (lists of numbers), prompts (strings, for ``mlx_lm``), or
        the path of a JSON Lines file of examples. Rows with ``y`` targets also yield the mean
        squared error.
    :param output_path: JSON Lines file to write every prediction to (optional).
    :param inference_config: ``batch_size`` (at nominal state; default from the profile, 64)
        and ``max_tokens`` (``mlx_lm`` only, 512), checked like ``training_config``.
    :param inference_callable: replaces the built-in inference:
        ``inference_callable(model_path=, inputs=, config=, [throttle=])``.

    Returns a summary with the prediction count, the first predictions and the effective batch size.
    """

    template_fields: Sequence[str] = ("model_path", "input_data", "output_path", "inference_config")
    profile = "inference"

    def __init__(
        self,
        *,
        model_path: str,
        input_data: Sequence[Any] | str,
        output_path: str | None = None,
        inference_config: dict[str, Any] | None = None,
        inference_callable: Callable[..., Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        with prefix_task_errors(self.task_id):
            if inference_callable is not None and not callable(inference_callable):
                raise ValueError(f"invalid inference_callable {inference_callable!r}: expected a function")
            self.inference_config = _check_settings(
                "inference_config",
                inference_config,
                INFERENCE_SETTINGS,
                extra_allowed=inference_callable is not None,
                rendered=False,
            )
        self.model_path = model_path
        self.input_data = input_data
        self.output_path = output_path
        self.inference_callable = inference_callable

    def _rendered_settings(self) -> dict[str, Any]:
        """Return the defaults overlaid with ``inference_config``, checked again now that it is rendered."""
        with prefix_task_errors(self.task_id):
            settings = _check_settings(
                "inference_config",
                self.inference_config,
                INFERENCE_SETTINGS,
                extra_allowed=self.inference_callable is not None,
                rendered=True,
            )
        return {**INFERENCE_DEFAULTS, "batch_size": self.task_config.batch_size, **settings}

    def _inputs(self) -> tuple[list[Any], list[list[float]] | None]:
        if isinstance(self.input_data, str):
            return mlx_work.load_examples(self.input_data)
        return list(self.input_data), None

    def execute_work(self, context: Context, throttle: ThrottleContext) -> Any:
        settings = self._rendered_settings()
        base = int(settings["batch_size"])
        effective = throttle.batch_size(base)
        pacer = throttle.pacer()
        inputs, targets = self._inputs()
        self.log.info(
            "Inference with %s on %d inputs: batch size %d scaled to %d at throttle %g",
            self.model_path, len(inputs), base, effective, throttle.level,
        )  # fmt: skip

        summary: dict[str, Any] = {}
        if self.inference_callable is not None:
            predictions = _call(
                self.inference_callable,
                throttle,
                model_path=self.model_path,
                inputs=inputs,
                config={**settings, "batch_size": effective},
            )
            summary["backend"] = "callable"
        elif mlx_work.is_builtin_model_folder(self.model_path):
            model, spec = mlx_work.load_model(self.model_path)
            classify = spec.get("loss") == "cross_entropy"
            predictions = mlx_work.predict(model, inputs, batch_size=effective, classify=classify, pacer=pacer)
            summary["backend"] = "mlx"
            if targets is not None and not classify:
                errors = [(p - t) ** 2 for row, target in zip(predictions, targets) for p, t in zip(row, target)]
                summary["mean_squared_error"] = sum(errors) / len(errors)
        else:
            # NOTE: the mlx_lm path is not run by this repository's tests, because it needs the
            # mlx-lm package and the model's weights. Prompts run one at a time, paced between them.
            predictions = []
            for prompt in inputs:
                command = mlx_work.mlx_lm_generate_command(self.model_path, str(prompt), max_tokens=int(settings["max_tokens"]))
                predictions.append(mlx_work.run_command(command))
                pacer.pace()
            summary["backend"] = "mlx_lm"

        predictions = list(predictions)
        if self.output_path:
            path = Path(self.output_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", encoding="utf-8") as file:
                for prediction in predictions:
                    file.write(json.dumps({"prediction": prediction}) + "\n")

        self.record_work_metrics(
            base_batch_size=base,
            effective_batch_size=effective,
            idle_seconds=round(pacer.idle_seconds, 3),
            duty_cycle=round(pacer.duty_cycle, 3),
        )
        summary.update(
            model_path=self.model_path,
            count=len(predictions),
            predictions=predictions[:PREDICTION_PREVIEW],
            output_path=self.output_path,
            base_batch_size=base,
            effective_batch_size=effective,
            throttle_level=throttle.level,
        )
        return summary


def create_thermal_aware_task(
    task_id: str,
    python_callable: Callable[..., Any] | None = None,
    *,
    thermal_threshold: int | None = None,
    priority: str | None = None,
    memory_required_gb: float | None = None,
    wait_for_clearance: bool | None = None,
    clearance_timeout_seconds: float | None = None,
    profile: str | None = None,
    deferrable: bool = False,
    poke_interval: float | None = None,
    operator_class: type[ThermalAwareOperatorMixin] = ThermalAwareMLXOperator,
    **operator_kwargs: Any,
) -> TaskGroup:
    """Build a task group ``task_id`` of a clearance sensor and the work, and return it.

    With ``wait_for_clearance`` (the default), the group holds ``<task_id>.thermal_clearance``, a
    :class:`~thermal_pools.sensors.ThermalClearanceSensor` in ``default_pool`` that waits
    without a worker slot (rescheduled, or in the triggerer with ``deferrable=True``), and
    ``<task_id>.run``, the work in its tier pool at the sensor's throttle. Without it, the group
    holds only ``<task_id>.run``, which checks once and fails when held.

    The work is ``operator_class(python_callable=..., **operator_kwargs)``; any thermal-aware
    operator works, for example ``operator_class=ThermalAwareTrainingOperator`` with
    ``model_name=`` and ``dataset_path=``. The group chains with ``>>`` like a task.
    """
    overrides = given_settings(
        thermal_threshold=thermal_threshold,
        priority=priority,
        memory_required_gb=memory_required_gb,
        wait_for_clearance=wait_for_clearance,
        clearance_timeout_seconds=clearance_timeout_seconds,
    )
    with prefix_task_errors(task_id, kind="task group"):
        task_config = create_task_config(task_id, profile if profile is not None else operator_class.profile, **overrides)
    if python_callable is not None:
        operator_kwargs["python_callable"] = python_callable

    with TaskGroup(group_id=task_id) as group:
        thermal = {
            "thermal_threshold": task_config.thermal_threshold,
            "priority": task_config.priority,
            "memory_required_gb": task_config.memory_required_gb,
        }
        if task_config.wait_for_clearance:
            sensor = ThermalClearanceSensor(
                task_id="thermal_clearance",
                timeout=task_config.clearance_timeout_seconds,
                poke_interval=poke_interval,
                deferrable=deferrable,
                **thermal,
            )
            work = operator_class(
                task_id="run",
                clearance_task_id=sensor.task_id,
                wait_for_clearance=False,
                clearance_timeout_seconds=task_config.clearance_timeout_seconds,
                profile=profile,
                **thermal,
                **operator_kwargs,
            )
            sensor >> work
        else:
            operator_class(task_id="run", wait_for_clearance=False, profile=profile, **thermal, **operator_kwargs)
    return group
