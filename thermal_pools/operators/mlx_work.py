"""The MLX work the thermal-aware operators run: small built-in models, user code, or ``mlx_lm``.

Built-in models (``linear`` and ``mlp``) train and predict with ``mlx.nn`` and
``mlx.optimizers`` on numeric data, on the GPU on Apple Silicon and on the CPU elsewhere (the
``mlx[cpu]`` build). They are small enough for examples and tests, and show how a throttled batch
size and a :class:`~thermal_pools.throttle.DutyCyclePacer` enter a training loop.

Data files are JSON Lines, one example per line: ``{"x": [features...], "y": [targets...]}``
(``y`` may be a single number). A trained model is a folder with ``weights.safetensors`` and
``thermal_pools_model.json`` (model name and sizes), which :func:`load_model` reads back.

Larger models go through the ``mlx_lm`` command line (:func:`mlx_lm_lora_command`,
:func:`mlx_lm_generate_command`), which must be installed separately (``pip install mlx-lm``).

This module imports MLX only inside its functions, so importing it costs nothing at DAG parse time.
"""

from __future__ import annotations

import json
import logging
import math
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from thermal_pools.throttle import DutyCyclePacer

__all__ = [
    "BUILTIN_MODELS",
    "MODEL_FILE",
    "TrainingResult",
    "load_examples",
    "load_model",
    "make_regression_data",
    "mlx_lm_generate_command",
    "mlx_lm_lora_command",
    "predict",
    "run_command",
    "train_builtin",
    "write_examples",
]

log = logging.getLogger(__name__)

BUILTIN_MODELS = ("linear", "mlp")
MODEL_FILE = "thermal_pools_model.json"
WEIGHTS_FILE = "weights.safetensors"
LOSSES = ("mse", "cross_entropy")


# -- data ---------------------------------------------------------------------------------------


def make_regression_data(
    count: int, features: int, *, seed: int = 0, noise: float = 0.05
) -> tuple[list[list[float]], list[list[float]]]:
    """Return ``count`` examples of a fixed random linear function plus Gaussian noise.

    The targets are ``x . w + b + noise`` with ``w`` and ``b`` drawn from ``seed``, so the data
    is learnable and the same seed gives the same data.
    """
    if count < 1 or features < 1:
        raise ValueError(f"invalid data size {count} x {features}: expected at least 1 example and 1 feature")
    generator = random.Random(seed)
    weights = [generator.uniform(-2, 2) for _ in range(features)]
    bias = generator.uniform(-1, 1)
    xs = [[generator.gauss(0, 1) for _ in range(features)] for _ in range(count)]
    ys = [[sum(w * v for w, v in zip(weights, x)) + bias + generator.gauss(0, noise)] for x in xs]
    return xs, ys


def write_examples(path: str | Path, xs: Sequence[Sequence[float]], ys: Sequence[Sequence[float]] | None = None) -> Path:
    """Write examples as JSON Lines (see the module docstring); ``ys`` may be omitted for inputs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as file:
        for index, x in enumerate(xs):
            row: dict[str, Any] = {"x": list(x)}
            if ys is not None:
                row["y"] = list(ys[index])
            file.write(json.dumps(row) + "\n")
    return path


def load_examples(path: str | Path) -> tuple[list[list[float]], list[list[float]] | None]:
    """Read a JSON Lines data file; return features and targets (``None`` when no row has ``y``).

    Raises ``ValueError`` naming the file and line of a malformed row.
    """
    path = Path(path)
    xs: list[list[float]] = []
    ys: list[list[float]] = []
    with path.open(encoding="utf-8") as file:
        for line, text in enumerate(file, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
                x = [float(v) for v in row["x"]]
                y = row.get("y")
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                raise ValueError(
                    f"{path}, line {line}: invalid example ({error}): expected {{\"x\": [numbers], \"y\": [numbers]}}"
                ) from None
            if xs and len(x) != len(xs[0]):
                raise ValueError(f"{path}, line {line}: {len(x)} features, but line 1 has {len(xs[0])}")
            xs.append(x)
            if y is not None:
                ys.append([float(v) for v in y] if isinstance(y, list) else [float(y)])
    if not xs:
        raise ValueError(f"{path}: no examples: add JSON Lines rows with an 'x' list")
    if ys and len(ys) != len(xs):
        raise ValueError(f"{path}: {len(ys)} of {len(xs)} rows have a 'y': give every row a target or none")
    return xs, (ys or None)


# -- built-in models -----------------------------------------------------------------------------


def _build_model(name: str, in_features: int, out_features: int, hidden_size: int) -> Any:
    import mlx.nn as nn

    if name == "linear":
        return nn.Linear(in_features, out_features)
    if name == "mlp":
        return nn.Sequential(nn.Linear(in_features, hidden_size), nn.ReLU(), nn.Linear(hidden_size, out_features))
    raise ValueError(f"unknown built-in model {name!r}: use one of {', '.join(BUILTIN_MODELS)}")


@dataclass
class TrainingResult:
    """Result of a built-in training run; ``losses`` contains the mean loss of each epoch."""

    model_name: str
    examples: int
    epochs: int
    batch_size: int
    steps: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    idle_seconds: float = 0.0
    device: str = ""
    output_path: str | None = None

    @property
    def final_loss(self) -> float:
        return self.losses[-1]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["final_loss"] = self.final_loss
        return data


def train_builtin(
    model_name: str,
    xs: Sequence[Sequence[float]],
    ys: Sequence[Sequence[float]],
    *,
    epochs: int = 3,
    batch_size: int = 32,
    learning_rate: float = 1e-2,
    hidden_size: int = 32,
    loss: str = "mse",
    seed: int = 0,
    output_path: str | Path | None = None,
    pacer: DutyCyclePacer | None = None,
) -> TrainingResult:
    """Train a built-in model with Adam and return per-epoch losses; save it to ``output_path``.

    ``batch_size`` is the size actually used, so pass the throttled one. With ``loss="mse"``
    targets are numbers; with ``"cross_entropy"`` each target is ``[class index]``. ``pacer`` is
    paced after every optimizer step.
    """
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim

    if loss not in LOSSES:
        raise ValueError(f"invalid loss {loss!r}: use one of {', '.join(LOSSES)}")
    if batch_size < 1 or epochs < 1:
        raise ValueError(f"invalid batch_size {batch_size!r} or epochs {epochs!r}: expected whole numbers >= 1")
    if len(xs) != len(ys):
        raise ValueError(f"{len(xs)} feature rows but {len(ys)} targets: give every example a target")

    mx.random.seed(seed)
    x = mx.array(xs, dtype=mx.float32)
    if loss == "mse":
        y = mx.array(ys, dtype=mx.float32)
        out_features = y.shape[1]
    else:
        y = mx.array([int(row[0]) for row in ys], dtype=mx.int32)
        out_features = int(y.max().item()) + 1
    in_features = x.shape[1]
    model = _build_model(model_name, in_features, out_features, hidden_size)
    mx.eval(model.parameters())

    def loss_fn(model: Any, xb: Any, yb: Any) -> Any:
        if loss == "mse":
            return nn.losses.mse_loss(model(xb), yb, reduction="mean")
        return nn.losses.cross_entropy(model(xb), yb, reduction="mean")

    loss_and_grad = nn.value_and_grad(model, loss_fn)
    optimizer = optim.Adam(learning_rate=learning_rate)
    count = x.shape[0]
    result = TrainingResult(model_name, count, epochs, batch_size, steps=0, device=str(mx.default_device()))
    started = time.monotonic()

    for epoch in range(epochs):
        order = mx.random.permutation(count)
        total, batches = 0.0, 0
        for start in range(0, count, batch_size):
            index = order[start : start + batch_size]
            value, grads = loss_and_grad(model, x[index], y[index])
            optimizer.update(model, grads)
            mx.eval(model.parameters(), optimizer.state, value)
            total += value.item()
            batches += 1
            result.steps += 1
            if pacer is not None:
                pacer.pace()
        result.losses.append(total / batches)
        log.info("%s epoch %d/%d: mean loss %.5f over %d batches of <= %d", model_name, epoch + 1, epochs, result.losses[-1], batches, batch_size)

    result.seconds = time.monotonic() - started
    result.idle_seconds = 0.0 if pacer is None else pacer.idle_seconds
    if output_path is not None:
        folder = Path(output_path)
        folder.mkdir(parents=True, exist_ok=True)
        model.save_weights(str(folder / WEIGHTS_FILE))
        spec = {
            "model_name": model_name,
            "in_features": in_features,
            "out_features": out_features,
            "hidden_size": hidden_size,
            "loss": loss,
        }
        (folder / MODEL_FILE).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
        result.output_path = str(folder)
    return result


def is_builtin_model_folder(path: str | Path) -> bool:
    return (Path(path) / MODEL_FILE).is_file()


def load_model(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Load a model saved by :func:`train_builtin`; return it and its spec."""
    folder = Path(path)
    spec_path = folder / MODEL_FILE
    if not spec_path.is_file():
        raise FileNotFoundError(f"model spec {spec_path} not found: train the model with a built-in model_name first")
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    model = _build_model(spec["model_name"], spec["in_features"], spec["out_features"], spec["hidden_size"])
    model.load_weights(str(folder / WEIGHTS_FILE))
    return model, spec


def predict(
    model: Any,
    xs: Sequence[Sequence[float]],
    *,
    batch_size: int = 64,
    classify: bool = False,
    pacer: DutyCyclePacer | None = None,
) -> list[Any]:
    """Run the model over ``xs`` in batches; return one output row (or class index) per input."""
    import mlx.core as mx

    if batch_size < 1:
        raise ValueError(f"invalid batch_size {batch_size!r}: expected a whole number >= 1")
    outputs: list[Any] = []
    for start in range(0, len(xs), batch_size):
        batch = mx.array(xs[start : start + batch_size], dtype=mx.float32)
        result = model(batch)
        if classify:
            result = mx.argmax(result, axis=1)
        mx.eval(result)
        outputs.extend(result.tolist())
        if pacer is not None:
            pacer.pace()
    return outputs


# -- mlx_lm command line ------------------------------------------------------------------------


def mlx_lm_lora_command(
    model: str, data: str, adapter_path: str, *, batch_size: int, iters: int, learning_rate: float
) -> list[str]:
    """Return the ``mlx_lm lora`` command that fine-tunes ``model`` on the JSON Lines folder ``data``."""
    return [
        sys.executable, "-m", "mlx_lm", "lora",
        "--model", model,
        "--train",
        "--data", data,
        "--adapter-path", adapter_path,
        "--batch-size", str(batch_size),
        "--iters", str(iters),
        "--learning-rate", str(learning_rate),
    ]  # fmt: skip


def mlx_lm_generate_command(model: str, prompt: str, *, max_tokens: int, adapter_path: str | None = None) -> list[str]:
    """Return the ``mlx_lm generate`` command for one prompt."""
    command = [sys.executable, "-m", "mlx_lm", "generate", "--model", model, "--prompt", prompt, "--max-tokens", str(max_tokens)]
    if adapter_path:
        command += ["--adapter-path", adapter_path]
    return command


def run_command(command: list[str], *, timeout: float | None = None) -> str:
    """Run a command, log its output, and return stdout; raise ``RuntimeError`` when it fails."""
    log.info("running %s", " ".join(command))
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as error:
        raise RuntimeError(f"cannot run {command[0]}: {error}") from error
    if completed.returncode != 0:
        tail = (completed.stderr or completed.stdout)[-2000:]
        hint = " (install it with: pip install mlx-lm)" if "No module named mlx_lm" in tail else ""
        raise RuntimeError(f"command failed with exit code {completed.returncode}{hint}: {' '.join(command[:5])} ...\n{tail}")
    return completed.stdout


def iterations_for(examples: int, batch_size: int, epochs: int) -> int:
    """Optimizer steps that cover ``examples`` ``epochs`` times at ``batch_size``."""
    return max(1, math.ceil(examples / batch_size) * epochs)
