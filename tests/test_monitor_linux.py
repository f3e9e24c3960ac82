"""LinuxMonitor against fake sysfs trees, and against this machine's real /proc and psutil."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psutil
import pytest

from thermal_pools.monitor import HostMonitor
from thermal_pools.monitor.linux import LinuxMonitor, memory_pressure_from_psi, read_psi
from thermal_pools.reading import NO_SENSOR, MemoryPressure, ThermalState

PASSIVE = 90_000
HOT = 100_000
CRITICAL = 105_000


def make_zone(root: Path, index: int, temp: int | str, trips: dict[str, int] | None = None, **files: str) -> Path:
    """Write ``thermal_zone<index>`` with a temperature and trip points, all in m°C."""
    zone = root / "sys/class/thermal" / f"thermal_zone{index}"
    zone.mkdir(parents=True)
    (zone / "type").write_text("x86_pkg_temp\n")
    (zone / "temp").write_text(f"{temp}\n")
    for number, (trip_type, trip_temp) in enumerate((trips or {}).items()):
        (zone / f"trip_point_{number}_type").write_text(f"{trip_type}\n")
        (zone / f"trip_point_{number}_temp").write_text(f"{trip_temp}\n")
    for name, text in files.items():
        (zone / name).write_text(f"{text}\n")
    return zone


def make_cooling(root: Path, index: int, device_type: str, current: int, maximum: int = 10) -> Path:
    device = root / "sys/class/thermal" / f"cooling_device{index}"
    device.mkdir(parents=True)
    (device / "type").write_text(f"{device_type}\n")
    (device / "cur_state").write_text(f"{current}\n")
    (device / "max_state").write_text(f"{maximum}\n")
    return device


def make_psi(root: Path, name: str, some: float, full: float | None = None) -> None:
    folder = root / "proc/pressure"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"some avg10={some:.2f} avg60=0.00 avg300=0.00 total=100"]
    if full is not None:
        lines.append(f"full avg10={full:.2f} avg60=0.00 avg300=0.00 total=50")
    (folder / name).write_text("\n".join(lines) + "\n")


def read_state(root: Path) -> ThermalState | None:
    return LinuxMonitor(root=root, host="fake").read().thermal_state


# -- zone rule -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("temp", "expected"),
    [
        (45_000, ThermalState.NOMINAL),
        (79_999, ThermalState.NOMINAL),
        (80_000, ThermalState.FAIR),
        (89_999, ThermalState.FAIR),
        (90_000, ThermalState.SERIOUS),
        (99_999, ThermalState.SERIOUS),
        (100_000, ThermalState.CRITICAL),
        (110_000, ThermalState.CRITICAL),
    ],
)
def test_zone_rule(tmp_path: Path, temp: int, expected: ThermalState) -> None:
    make_zone(tmp_path, 0, temp, {"passive": PASSIVE, "hot": HOT, "critical": CRITICAL})

    assert read_state(tmp_path) == expected


def test_zone_critical_trip_only(tmp_path: Path) -> None:
    make_zone(tmp_path, 0, 95_000, {"critical": 97_000})
    make_zone(tmp_path, 1, 98_000, {"critical": 97_000})

    assert read_state(tmp_path) == ThermalState.CRITICAL


def test_zone_critical_trip_only_below(tmp_path: Path) -> None:
    make_zone(tmp_path, 0, 95_000, {"critical": 97_000})

    assert read_state(tmp_path) == ThermalState.NOMINAL


def test_zone_lowest_hot_or_critical_trip(tmp_path: Path) -> None:
    make_zone(tmp_path, 0, 86_000, {"passive": 95_000, "hot": 120_000, "critical": 85_000})

    assert read_state(tmp_path) == ThermalState.CRITICAL


def test_zone_hottest_wins(tmp_path: Path) -> None:
    make_zone(tmp_path, 0, 40_000, {"passive": PASSIVE})
    make_zone(tmp_path, 1, 92_000, {"passive": PASSIVE})
    make_zone(tmp_path, 2, 85_000, {"passive": PASSIVE})

    reading = LinuxMonitor(root=tmp_path, host="fake").read()

    assert reading.thermal_state == ThermalState.SERIOUS
    assert reading.sources["thermal_state"].count("thermal_zone") == 3
    assert reading.raw["zones"]["thermal_zone1"]["temp_celsius"] == 92.0
    assert reading.raw["zones"]["thermal_zone1"]["passive_celsius"] == 90.0


def test_zone_active_trip_ignored(tmp_path: Path) -> None:
    make_zone(tmp_path, 0, 70_000, {"active": 60_000, "passive": PASSIVE})

    assert read_state(tmp_path) == ThermalState.NOMINAL


# -- cooling devices -------------------------------------------------------------------------


@pytest.mark.parametrize("device_type", ["Processor", "Fan", "fan"])
def test_cooling_active_raises_to_fair(tmp_path: Path, device_type: str) -> None:
    make_zone(tmp_path, 0, 50_000, {"passive": PASSIVE})
    device = make_cooling(tmp_path, 0, device_type, current=2)

    reading = LinuxMonitor(root=tmp_path, host="fake").read()

    assert reading.thermal_state == ThermalState.FAIR
    assert str(device) in reading.sources["thermal_state"]
    assert reading.raw["cooling_devices"]["cooling_device0"]["cur_state"] == 2


def test_cooling_idle_stays_nominal(tmp_path: Path) -> None:
    make_zone(tmp_path, 0, 50_000, {"passive": PASSIVE})
    make_cooling(tmp_path, 0, "Processor", current=0)

    assert read_state(tmp_path) == ThermalState.NOMINAL


def test_cooling_other_types_ignored(tmp_path: Path) -> None:
    make_zone(tmp_path, 0, 50_000, {"passive": PASSIVE})
    make_cooling(tmp_path, 0, "intel_backlight", current=5)

    assert read_state(tmp_path) == ThermalState.NOMINAL


def test_cooling_does_not_lower_state(tmp_path: Path) -> None:
    make_zone(tmp_path, 0, 95_000, {"passive": PASSIVE})
    make_cooling(tmp_path, 0, "Fan", current=3)

    assert read_state(tmp_path) == ThermalState.SERIOUS


def test_cooling_without_zones_no_sensor(tmp_path: Path) -> None:
    make_cooling(tmp_path, 0, "Fan", current=3)

    reading = LinuxMonitor(root=tmp_path, host="fake").read()

    assert reading.thermal_state is None
    assert reading.thermal_reason == NO_SENSOR


# -- junk and failures -----------------------------------------------------------------------


@pytest.mark.parametrize("junk", ["-40000", "250000", "not a number", ""])
def test_junk_zone_ignored(tmp_path: Path, junk: str) -> None:
    make_zone(tmp_path, 0, junk, {"passive": 30_000})
    make_zone(tmp_path, 1, 50_000, {"passive": PASSIVE})

    reading = LinuxMonitor(root=tmp_path, host="fake").read()

    assert reading.thermal_state == ThermalState.NOMINAL
    assert "thermal_zone0" in reading.raw["zone_errors"]
    assert "thermal_zone0" not in reading.sources["thermal_state"]


def test_junk_trip_points_ignored(tmp_path: Path) -> None:
    zone = make_zone(tmp_path, 0, 60_000, {"passive": 0, "hot": -273_200, "critical": 255_000})
    (zone / "trip_point_3_type").write_text("passive\n")
    (zone / "trip_point_3_temp").write_text("95000\n")

    reading = LinuxMonitor(root=tmp_path, host="fake").read()

    assert reading.thermal_state == ThermalState.NOMINAL
    assert reading.raw["zones"]["thermal_zone0"]["passive_celsius"] == 95.0
    assert reading.raw["zones"]["thermal_zone0"]["hot_celsius"] is None


def test_unreadable_zone_skipped(tmp_path: Path) -> None:
    broken = make_zone(tmp_path, 0, 50_000, {"passive": PASSIVE})
    (broken / "temp").unlink()
    make_zone(tmp_path, 1, 91_000, {"passive": PASSIVE})

    reading = LinuxMonitor(root=tmp_path, host="fake").read()

    assert reading.thermal_state == ThermalState.SERIOUS
    assert "thermal_zone0" in reading.raw["zone_errors"]


def test_all_zones_failed_is_failure(tmp_path: Path) -> None:
    make_zone(tmp_path, 0, "-1", {"passive": PASSIVE})
    make_zone(tmp_path, 1, "garbage", {"passive": PASSIVE})

    reading = LinuxMonitor(root=tmp_path, host="fake").read()

    assert reading.thermal_state is None
    assert reading.thermal_reason != NO_SENSOR
    assert "2 thermal zone(s) failed to read" in reading.thermal_reason


def test_disabled_zone_ignored(tmp_path: Path) -> None:
    make_zone(tmp_path, 0, 99_000, {"passive": PASSIVE}, mode="disabled")
    make_zone(tmp_path, 1, 40_000, {"passive": PASSIVE}, mode="enabled")

    reading = LinuxMonitor(root=tmp_path, host="fake").read()

    assert reading.thermal_state == ThermalState.NOMINAL
    assert reading.raw["zones_disabled"] == ["thermal_zone0"]


def test_zone_without_trips_no_sensor(tmp_path: Path) -> None:
    make_zone(tmp_path, 0, 55_000)

    reading = LinuxMonitor(root=tmp_path, host="fake").read()

    assert reading.thermal_state is None
    assert reading.thermal_reason == NO_SENSOR
    assert reading.raw["zones"]["thermal_zone0"]["temp_celsius"] == 55.0


def test_no_thermal_directory_no_sensor(tmp_path: Path) -> None:
    reading = LinuxMonitor(root=tmp_path, host="fake").read()

    assert reading.thermal_state is None
    assert reading.thermal_reason == NO_SENSOR


# -- pressure and power ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("some", "full", "expected"),
    [
        (0.0, 0.0, MemoryPressure.NORMAL),
        (9.99, 5.0, MemoryPressure.NORMAL),
        (10.0, 2.0, MemoryPressure.WARNING),
        (45.0, 9.99, MemoryPressure.WARNING),
        (30.0, 10.0, MemoryPressure.CRITICAL),
        (12.0, None, MemoryPressure.WARNING),
    ],
)
def test_memory_psi_rule(tmp_path: Path, some: float, full: float | None, expected: MemoryPressure) -> None:
    make_psi(tmp_path, "memory", some, full)

    reading = LinuxMonitor(root=tmp_path, host="fake").read()

    assert reading.memory_pressure == expected
    assert reading.raw["memory_some_avg10"] == some
    assert reading.sources["memory_pressure"] == str(tmp_path / "proc/pressure/memory")


def test_memory_psi_rule_function() -> None:
    assert memory_pressure_from_psi(50.0, 10.0) == MemoryPressure.CRITICAL
    assert memory_pressure_from_psi(50.0, None) == MemoryPressure.WARNING
    assert memory_pressure_from_psi(0.5, None) == MemoryPressure.NORMAL


def test_cpu_psi_recorded(tmp_path: Path) -> None:
    make_psi(tmp_path, "cpu", 23.5, 0.0)

    reading = LinuxMonitor(root=tmp_path, host="fake").read()

    assert reading.raw["cpu_some_avg10"] == 23.5
    assert reading.sources["cpu_pressure"] == str(tmp_path / "proc/pressure/cpu")


def test_psi_missing_leaves_pressure_unknown(tmp_path: Path) -> None:
    reading = LinuxMonitor(root=tmp_path, host="fake").read()

    assert reading.memory_pressure is None
    assert "memory_psi_error" in reading.raw


def test_psi_malformed_leaves_pressure_unknown(tmp_path: Path) -> None:
    folder = tmp_path / "proc/pressure"
    folder.mkdir(parents=True)
    (folder / "memory").write_text("some avg10=abc\n")

    reading = LinuxMonitor(root=tmp_path, host="fake").read()

    assert reading.memory_pressure is None
    assert "abc" in reading.raw["memory_psi_error"]


def test_psi_without_some_line_rejected(tmp_path: Path) -> None:
    path = tmp_path / "memory"
    path.write_text("full avg10=1.00 avg60=0.00 avg300=0.00 total=1\n")

    with pytest.raises(ValueError, match="some avg10"):
        read_psi(path)


@pytest.mark.parametrize(("profile", "expected"), [("low-power", True), ("balanced", False), ("performance", False)])
def test_platform_profile(tmp_path: Path, profile: str, expected: bool) -> None:
    path = tmp_path / "sys/firmware/acpi/platform_profile"
    path.parent.mkdir(parents=True)
    path.write_text(f"{profile}\n")

    reading = LinuxMonitor(root=tmp_path, host="fake").read()

    assert reading.low_power_mode is expected
    assert reading.raw["platform_profile"] == profile


def test_platform_profile_missing(tmp_path: Path) -> None:
    assert LinuxMonitor(root=tmp_path, host="fake").read().low_power_mode is None


# -- this machine ----------------------------------------------------------------------------

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads a real Linux host")


@linux_only
def test_real_host_without_zones_no_sensor() -> None:
    if list(Path("/sys/class/thermal").glob("thermal_zone*")):
        pytest.skip("this host has thermal zones")

    reading = LinuxMonitor().read()

    assert reading.thermal_state is None
    assert reading.thermal_reason == NO_SENSOR


@linux_only
def test_real_host_memory_figures() -> None:
    reading = LinuxMonitor().read()
    memory = psutil.virtual_memory()

    assert reading.memory_used_percent == pytest.approx(memory.percent, abs=5.0)
    assert reading.memory_available_gib == pytest.approx(memory.available / 2**30, abs=1.0)
    assert reading.memory_available_gib < memory.total / 2**30
    assert reading.sources["memory_used_percent"] == "psutil.virtual_memory"


@linux_only
def test_real_host_cpu_load() -> None:
    reading = LinuxMonitor().read()

    assert reading.cpu_load == pytest.approx(os.getloadavg()[0] / os.cpu_count(), abs=0.5)
    assert reading.cpu_load == reading.raw["load_1m"] / reading.raw["cpu_count"]
    assert reading.sources["cpu_load"] == "os.getloadavg"


@linux_only
def test_real_host_pressure() -> None:
    if not Path("/proc/pressure/memory").exists():
        pytest.skip("this kernel has no PSI")

    reading = LinuxMonitor().read()

    assert isinstance(reading.memory_pressure, MemoryPressure)
    assert reading.sources["memory_pressure"] == "/proc/pressure/memory"
    assert reading.raw["memory_some_avg10"] >= 0
    assert reading.raw["cpu_some_avg10"] >= 0


@linux_only
def test_real_host_battery_matches_psutil() -> None:
    battery = psutil.sensors_battery()
    expected = None if battery is None or battery.power_plugged is None else not battery.power_plugged

    assert LinuxMonitor().read().on_battery == expected


@linux_only
def test_host_monitor_picks_linux() -> None:
    monitor = HostMonitor(host="build-box")

    assert isinstance(monitor.platform_monitor, LinuxMonitor)
    assert monitor.read().host == "build-box"


def test_host_monitor_other_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "sunos5")

    reading = HostMonitor().read()

    assert reading.thermal_state is None
    assert "sunos5" in reading.thermal_reason
    assert reading.thermal_reason != NO_SENSOR
    assert reading.memory_used_percent is not None
