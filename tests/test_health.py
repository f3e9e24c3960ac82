"""Health score: the formula in thermal_pools.health, checked case by case."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from thermal_pools.config import ThermalSchedulingConfig
from thermal_pools import health
from thermal_pools.health import health_score
from thermal_pools.reading import NO_SENSOR, MemoryPressure, Reading, ThermalState

TAKEN_AT = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


def make_reading(**figures) -> Reading:
    """A reading of an idle host on mains power; ``figures`` override single fields."""
    values = {
        "host": "mac-studio",
        "taken_at": TAKEN_AT,
        "thermal_state": ThermalState.NOMINAL,
        "memory_used_percent": 0.0,
        "memory_available_gib": 64.0,
        "memory_pressure": MemoryPressure.NORMAL,
        "cpu_load": 0.0,
        "low_power_mode": False,
        "on_battery": False,
    }
    values.update(figures)
    return Reading(**values)


# (state, reading figures, expected score) with the default memory_threshold_percent 85.
CASES = [
    pytest.param(ThermalState.NOMINAL, {}, 100.0, id="idle-nominal"),
    pytest.param(ThermalState.FAIR, {}, 90.0, id="fair"),
    pytest.param(ThermalState.SERIOUS, {}, 75.0, id="serious"),
    pytest.param(ThermalState.CRITICAL, {}, 55.0, id="critical"),
    pytest.param(ThermalState.NOMINAL, {"memory_used_percent": 42.5}, 95.0, id="memory-half-threshold"),
    pytest.param(ThermalState.NOMINAL, {"memory_used_percent": 85.0}, 90.0, id="memory-at-threshold"),
    pytest.param(ThermalState.NOMINAL, {"memory_used_percent": 92.5}, 80.0, id="memory-midway-above"),
    pytest.param(ThermalState.NOMINAL, {"memory_used_percent": 100.0}, 70.0, id="memory-full"),
    pytest.param(ThermalState.NOMINAL, {"memory_pressure": MemoryPressure.WARNING}, 90.0, id="pressure-warning"),
    pytest.param(ThermalState.NOMINAL, {"memory_pressure": MemoryPressure.CRITICAL}, 75.0, id="pressure-critical"),
    pytest.param(ThermalState.NOMINAL, {"cpu_load": 0.5}, 100.0, id="cpu-free-load"),
    pytest.param(ThermalState.NOMINAL, {"cpu_load": 1.25}, 92.5, id="cpu-midway"),
    pytest.param(ThermalState.NOMINAL, {"cpu_load": 2.0}, 85.0, id="cpu-full-penalty"),
    pytest.param(ThermalState.NOMINAL, {"cpu_load": 6.0}, 85.0, id="cpu-penalty-capped"),
    pytest.param(ThermalState.NOMINAL, {"low_power_mode": True}, 90.0, id="low-power"),
    pytest.param(ThermalState.NOMINAL, {"on_battery": True}, 95.0, id="on-battery"),
    pytest.param(ThermalState.NOMINAL, {"low_power_mode": True, "on_battery": True}, 85.0, id="low-power-on-battery"),
    pytest.param(ThermalState.NOMINAL, {"memory_used_percent": None}, 90.0, id="memory-unknown"),
    pytest.param(ThermalState.NOMINAL, {"memory_pressure": None}, 95.0, id="pressure-unknown"),
    pytest.param(ThermalState.NOMINAL, {"cpu_load": None}, 95.0, id="cpu-unknown"),
    pytest.param(ThermalState.NOMINAL, {"low_power_mode": None, "on_battery": None}, 100.0, id="power-unknown"),
    pytest.param(
        ThermalState.NOMINAL,
        {"memory_used_percent": None, "memory_pressure": None, "cpu_load": None, "low_power_mode": None, "on_battery": None},
        80.0,
        id="all-unknown",
    ),
    pytest.param(
        ThermalState.SERIOUS,
        {"memory_used_percent": 85.0, "memory_pressure": MemoryPressure.WARNING, "cpu_load": 1.25},
        47.5,
        id="serious-and-loaded",
    ),
    pytest.param(
        ThermalState.CRITICAL,
        {
            "memory_used_percent": 100.0,
            "memory_pressure": MemoryPressure.CRITICAL,
            "cpu_load": 3.0,
            "low_power_mode": True,
            "on_battery": True,
        },
        0.0,
        id="worst-clamped-to-zero",
    ),
]


@pytest.mark.parametrize(("state", "figures", "expected"), CASES)
def test_health_score_table(state, figures, expected):
    reading = make_reading(thermal_state=state, **figures)
    assert health_score(reading, state, ThermalSchedulingConfig()) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("threshold", "used", "expected"),
    [
        pytest.param(50.0, 25.0, 95.0, id="below-custom-threshold"),
        pytest.param(50.0, 75.0, 80.0, id="above-custom-threshold"),
        pytest.param(100.0, 100.0, 90.0, id="threshold-100-full"),
    ],
)
def test_health_custom_memory_threshold(threshold, used, expected):
    config = ThermalSchedulingConfig(memory_threshold_percent=threshold)
    reading = make_reading(memory_used_percent=used)
    assert health_score(reading, ThermalState.NOMINAL, config) == pytest.approx(expected)


def test_health_uses_given_state():
    # The state to act on may differ from the reading's, e.g. the safe state after a failed read.
    reading = make_reading(thermal_state=ThermalState.NOMINAL)
    assert health_score(reading, ThermalState.SERIOUS, ThermalSchedulingConfig()) == pytest.approx(75.0)


def test_health_failed_sensor_reading():
    reading = make_reading(thermal_state=None, thermal_reason="powermetrics timed out")
    assert health_score(reading, ThermalState.SERIOUS, ThermalSchedulingConfig()) == pytest.approx(75.0)


def test_health_no_sensor_reading():
    reading = make_reading(thermal_state=None, thermal_reason=NO_SENSOR)
    assert health_score(reading, ThermalState.NOMINAL, ThermalSchedulingConfig()) == pytest.approx(100.0)


def test_health_unknown_memory_never_full_marks():
    config = ThermalSchedulingConfig()
    unknown = health_score(make_reading(memory_used_percent=None), ThermalState.NOMINAL, config)
    idle = health_score(make_reading(memory_used_percent=0.0), ThermalState.NOMINAL, config)
    below_threshold = health_score(make_reading(memory_used_percent=80.0), ThermalState.NOMINAL, config)
    assert unknown < 100.0
    assert unknown < idle
    assert unknown < below_threshold


def test_health_accepts_plain_int_state():
    reading = make_reading()
    assert health_score(reading, 1, ThermalSchedulingConfig()) == pytest.approx(90.0)


def test_doc_mirrors_formula():
    doc = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
    doc_lines = doc.read_text(encoding="utf-8").splitlines()
    rows = [line for line in health.__doc__.splitlines() if line.startswith("|")]
    assert rows
    for row in rows:
        assert row in doc_lines, f"docs/configuration.md lacks the health formula row {row!r}"
