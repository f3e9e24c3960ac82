"""DarwinMonitor's mapping and parsing, against fake system calls (macOS cannot run here)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from thermal_pools.monitor.darwin import (
    MEMORY_PRESSURE_SYSCTL,
    THERMAL_PRESSURE_KEY,
    DarwinMonitor,
    SystemCalls,
    low_power_from_preferences,
    state_from_pressure_level,
)
from thermal_pools.reading import NO_SENSOR, MemoryPressure, ThermalState

REPOSITORY = Path(__file__).resolve().parent.parent

NOTIFY_SOURCE = f"notify:{THERMAL_PRESSURE_KEY}"
PROCESS_INFO_SOURCE = "NSProcessInfo.thermalState"


def returning(value: Any) -> Callable[..., Any]:
    """A fake call that returns ``value``, or raises it when it is an exception."""

    def call(*args: Any) -> Any:
        if isinstance(value, BaseException):
            raise value
        return value

    return call


def fake_calls(
    level: Any = 0,
    state: Any = 0,
    low_power: Any = False,
    pressure: Any = 1,
    preferences: Any = None,
    sysctl_names: list[str] | None = None,
) -> SystemCalls:
    """A call table of fakes; ``sysctl_names`` collects the names passed to ``sysctl_int``."""

    def sysctl_int(name: str) -> int:
        if sysctl_names is not None:
            sysctl_names.append(name)
        return returning(pressure)()

    return SystemCalls(
        thermal_pressure_level=returning(level),
        process_thermal_state=returning(state),
        low_power_mode_enabled=returning(low_power),
        sysctl_int=sysctl_int,
        power_preferences=returning({} if preferences is None else preferences),
    )


def read(**fakes: Any):
    return DarwinMonitor(host="mac-test", calls=fake_calls(**fakes)).read()


# -- thermal state ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        (0, ThermalState.NOMINAL),
        (1, ThermalState.FAIR),
        (2, ThermalState.SERIOUS),
        (3, ThermalState.CRITICAL),
        (4, ThermalState.CRITICAL),
    ],
)
def test_notify_level_mapping(level: int, expected: ThermalState) -> None:
    reading = read(level=level, state=OSError("no Foundation"))

    assert reading.thermal_state == expected
    assert reading.sources["thermal_state"] == NOTIFY_SOURCE
    assert reading.raw["thermal_pressure_level"] == level


@pytest.mark.parametrize("state", [0, 1, 2, 3])
def test_process_info_mapping(state: int) -> None:
    reading = read(level=OSError("no libSystem"), state=state)

    assert reading.thermal_state == ThermalState(state)
    assert reading.sources["thermal_state"] == PROCESS_INFO_SOURCE
    assert reading.raw["process_thermal_state"] == state


@pytest.mark.parametrize(
    ("level", "state", "expected", "source"),
    [
        (1, 2, ThermalState.SERIOUS, PROCESS_INFO_SOURCE),
        (3, 0, ThermalState.CRITICAL, NOTIFY_SOURCE),
        (4, 2, ThermalState.CRITICAL, NOTIFY_SOURCE),
        (0, 1, ThermalState.FAIR, PROCESS_INFO_SOURCE),
    ],
)
def test_hotter_of_two(level: int, state: int, expected: ThermalState, source: str) -> None:
    reading = read(level=level, state=state)

    assert reading.thermal_state == expected
    assert reading.sources["thermal_state"] == source


def test_equal_states_name_both_sources() -> None:
    reading = read(level=2, state=2)

    assert reading.sources["thermal_state"] == f"{NOTIFY_SOURCE}, {PROCESS_INFO_SOURCE}"


def test_unexpected_level_uses_other_source() -> None:
    reading = read(level=7, state=1)

    assert reading.thermal_state == ThermalState.FAIR
    assert "unexpected thermal pressure level 7" in reading.raw["thermal_errors"][0]


def test_unexpected_process_state_uses_other_source() -> None:
    reading = read(level=2, state=9)

    assert reading.thermal_state == ThermalState.SERIOUS
    assert "unexpected NSProcessInfo thermalState 9" in reading.raw["thermal_errors"][0]


def test_missing_frameworks_unknown_with_reason() -> None:
    reading = read(
        level=OSError("libSystem.B.dylib not found"),
        state=OSError("Foundation.framework not found"),
        low_power=OSError("Foundation.framework not found"),
        pressure=OSError("libSystem.B.dylib not found"),
        preferences=OSError("no such file"),
    )

    assert reading.thermal_state is None
    assert reading.thermal_reason != NO_SENSOR
    assert "libSystem.B.dylib not found" in reading.thermal_reason
    assert "Foundation.framework not found" in reading.thermal_reason
    assert reading.memory_pressure is None
    assert reading.low_power_mode is None
    assert reading.memory_used_percent is not None


def test_level_mapping_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="expected 0-4"):
        state_from_pressure_level(5)


# -- memory pressure -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [(1, MemoryPressure.NORMAL), (2, MemoryPressure.WARNING), (4, MemoryPressure.CRITICAL)],
)
def test_pressure_codes(code: int, expected: MemoryPressure) -> None:
    names: list[str] = []

    reading = DarwinMonitor(host="mac-test", calls=fake_calls(pressure=code, sysctl_names=names)).read()

    assert reading.memory_pressure == expected
    assert reading.raw["memory_pressure_code"] == code
    assert names == [MEMORY_PRESSURE_SYSCTL]


@pytest.mark.parametrize("code", [0, 3, 8])
def test_pressure_unknown_code(code: int) -> None:
    reading = read(pressure=code)

    assert reading.memory_pressure is None
    assert str(code) in reading.raw["memory_pressure_error"]


def test_pressure_sysctl_failure() -> None:
    reading = read(pressure=OSError(2, "sysctlbyname failed"))

    assert reading.memory_pressure is None
    assert "sysctlbyname failed" in reading.raw["memory_pressure_error"]


# -- low-power mode --------------------------------------------------------------------------


def test_low_power_from_process_info() -> None:
    reading = read(low_power=True)

    assert reading.low_power_mode is True
    assert reading.sources["low_power_mode"] == "NSProcessInfo.isLowPowerModeEnabled"


def test_low_power_from_preferences_file() -> None:
    reading = read(low_power=False, preferences={"AC Power": {"LowPowerMode": 1}})

    assert reading.low_power_mode is True
    assert "com.apple.PowerManagement.plist" in reading.sources["low_power_mode"]


def test_low_power_off_when_both_say_off() -> None:
    reading = read(low_power=False, preferences={"AC Power": {"LowPowerMode": 0, "powermode": 0}})

    assert reading.low_power_mode is False


def test_low_power_unknown_when_no_source() -> None:
    reading = read(low_power=OSError("selector missing"), preferences=OSError("no such file"))

    assert reading.low_power_mode is None
    assert "selector missing" in reading.raw["lowpowermode_error"]


@pytest.mark.parametrize(
    ("preferences", "on_battery", "expected"),
    [
        ({"AC Power": {"powermode": 1}}, False, True),
        ({"AC Power": {"powermode": 2}}, False, False),
        ({"AC Power": {"LowPowerMode": 0}, "Battery Power": {"LowPowerMode": 1}}, True, True),
        ({"AC Power": {"LowPowerMode": 0}, "Battery Power": {"LowPowerMode": 1}}, False, False),
        ({"AC Power": {"LowPowerMode": 1}}, None, True),
        ({"AC Power": {"Sleep": 10}}, False, None),
        ({"Battery Power": "junk"}, True, None),
        ({}, False, None),
    ],
)
def test_preferences_parsing(preferences: dict, on_battery: bool | None, expected: bool | None) -> None:
    assert low_power_from_preferences(preferences, on_battery) is expected


# -- the real calls on a host without macOS --------------------------------------------------


@pytest.mark.skipif(sys.platform == "darwin", reason="checks the failure path on a host without macOS")
def test_real_calls_fail_softly() -> None:
    reading = DarwinMonitor(host="not-a-mac").read()

    assert reading.thermal_state is None
    assert "libSystem" in reading.thermal_reason
    assert "libobjc" in reading.thermal_reason
    assert reading.memory_pressure is None
    assert reading.memory_available_gib is not None


IMPORT_PROBE = """
import ctypes, json, sys
loaded = []
original = ctypes.CDLL.__init__
def record(self, name, *args, **kwargs):
    loaded.append(str(name))
    original(self, name, *args, **kwargs)
ctypes.CDLL.__init__ = record

from thermal_pools.monitor.darwin import DarwinMonitor
monitor = DarwinMonitor(host="probe")
after_import = list(loaded)
monitor.read()
print(json.dumps({"after_import": after_import, "after_read": loaded}))
"""


def test_import_loads_no_framework() -> None:
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE],
        cwd=REPOSITORY,
        env={"PYTHONPATH": str(REPOSITORY), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    loads = json.loads(result.stdout)

    assert loads["after_import"] == []
    assert any("libSystem" in name for name in loads["after_read"])
    assert any("libobjc" in name for name in loads["after_read"])
