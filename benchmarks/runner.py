"""Record benchmark figures with the command, the machine and the date that produced them."""

from __future__ import annotations

import json
import logging
import os
import platform
import shlex
import socket
import statistics
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RESULTS_FOLDER = Path(__file__).resolve().parent / "results"


@dataclass
class Figure:
    """One measured value, its baseline from the same run, and the target it is held to.

    ``ratio`` is computed so that a larger value is better: ``baseline / value`` for costs
    (``higher_is_better=False``), ``value / baseline`` otherwise. ``met`` is ``None`` where the
    target is not a comparison the code can check.
    """

    benchmark: str
    name: str
    value: float
    unit: str
    baseline: str = ""
    baseline_value: float | None = None
    higher_is_better: bool = False
    target: str = ""
    met: bool | None = None
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline_value is None:
            return None
        numerator, denominator = (
            (self.value, self.baseline_value) if self.higher_is_better else (self.baseline_value, self.value)
        )
        if denominator == 0:
            return None
        return numerator / denominator

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of ``values`` at ``fraction`` (0.99 for the 99th)."""
    if not values:
        raise ValueError("percentile of an empty list: measure at least one value")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)


def cpu_model() -> str:
    """CPU model from /proc/cpuinfo or sysctl, else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        import subprocess

        try:
            return subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """Cores, memory, CPU model, system and Python of this machine."""
    import psutil

    return {
        "host": socket.gethostname(),
        "system": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
    }


def airflow_version() -> str:
    try:
        from importlib.metadata import version

        return version("apache-airflow")
    except Exception:  # noqa: BLE001 - only informative
        return "unknown"


def format_figure(figure: Figure) -> str:
    ratio = figure.ratio
    parts = [f"{figure.benchmark}: {figure.name} = {figure.value:.4g} {figure.unit}"]
    if figure.baseline_value is not None:
        parts.append(f"baseline ({figure.baseline}) {figure.baseline_value:.4g} {figure.unit}")
    if ratio is not None:
        parts.append(f"ratio {ratio:.3g}x")
    if figure.target:
        verdict = {True: "met", False: "MISSED", None: "see note"}[figure.met]
        parts.append(f"target {figure.target}: {verdict}")
    line = "; ".join(parts)
    if figure.note:
        line += f"\n    note: {figure.note}"
    return line


def record(figures: list[Figure], *, argv: list[str], started_at: datetime, output: Path | None) -> Path:
    """Write the figures of one run as JSON; return the file's path."""
    finished_at = datetime.now(timezone.utc)
    document = {
        "command": " ".join(shlex.quote(arg) for arg in argv),
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": finished_at.isoformat(timespec="seconds"),
        "machine": machine(),
        "airflow": airflow_version(),
        "figures": [figure.to_dict() for figure in figures],
    }
    if output is None:
        RESULTS_FOLDER.mkdir(parents=True, exist_ok=True)
        output = RESULTS_FOLDER / f"{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=2) + "\n")
    return output
