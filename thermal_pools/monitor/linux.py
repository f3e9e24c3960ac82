"""Readings of a Linux host, from sysfs, PSI and psutil, with no subprocess on the read path.

| field | unit | source |
|---|---|---|
| ``thermal_state`` | 0-3 | ``/sys/class/thermal/thermal_zone*`` and ``cooling_device*``, rule below |
| ``memory_pressure`` | normal/warning/critical | ``/proc/pressure/memory`` (PSI), rule below |
| ``memory_used_percent``, ``memory_available_gib``, ``cpu_load``, ``on_battery`` | see base | psutil, ``os.getloadavg`` |
| ``low_power_mode`` | bool | ``/sys/firmware/acpi/platform_profile`` is ``low-power`` |

``raw`` also keeps each zone's temperature and trip points, each cooling device's state and the
PSI ``avg10`` figures of memory and CPU (``cpu_some_avg10``, percent of the last 10 s in which
some task waited for a CPU).

Thermal state rule. Each enabled zone whose temperature reads as a plausible value (0-200 °C)
is rated against its own trip points, ignoring trip temperatures outside (0, 200] °C:

- at or above its lowest ``hot`` or ``critical`` trip: critical;
- at or above its lowest ``passive`` trip (where the kernel starts throttling): serious;
- within ``FAIR_MARGIN_CELSIUS`` below that passive trip: fair;
- otherwise: nominal.

The host gets the hottest rating of its zones, raised to at least fair while any ``Processor``
or ``Fan`` cooling device has ``0 < cur_state <= max_state``. A zone without usable trip points cannot be
rated. A host with no rateable zone has no sensor (:data:`~thermal_pools.reading.NO_SENSOR`),
unless some zone failed to read, which counts as a failed sensor.

Memory pressure rule, on PSI ``avg10`` (percent of the last 10 s spent stalled on memory):
critical when ``full avg10 >= 10`` (all runnable tasks stalled), warning when
``some avg10 >= 10`` (at least one task stalled), normal otherwise. Both thresholds are
estimates of where memory stalls start to slow batch work noticeably, not kernel constants.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from thermal_pools.monitor.base import ReadingBuilder, add_battery, add_cpu_load, add_memory
from thermal_pools.reading import NO_SENSOR, MemoryPressure, Reading, ThermalState, utc_now

# A zone this close below its passive trip point, in °C, counts as fair: it is about to throttle.
FAIR_MARGIN_CELSIUS = 10.0

# Temperatures outside this range, in °C, are firmware placeholders rather than measurements
# (for example negative values or 255 °C), so such zones and trip points are ignored.
MIN_PLAUSIBLE_CELSIUS = 0.0
MAX_PLAUSIBLE_CELSIUS = 200.0

# PSI avg10 thresholds, percent of the last 10 s (rule in the module docstring).
MEMORY_WARNING_SOME_AVG10 = 10.0
MEMORY_CRITICAL_FULL_AVG10 = 10.0

# Cooling device types whose activity means the host is already shedding heat.
ACTIVE_COOLING_TYPES = ("processor", "fan")


class ZoneError(ValueError):
    """Error for a thermal zone whose files are missing or contain a value that is not a temperature."""


@dataclass(frozen=True)
class Zone:
    """One thermal zone. Temperatures are in °C, ``None`` where the zone has no such trip point."""

    name: str
    path: Path
    type: str
    temp_celsius: float
    passive_celsius: float | None
    hot_celsius: float | None

    @property
    def rateable(self) -> bool:
        return self.passive_celsius is not None or self.hot_celsius is not None

    def rate(self) -> ThermalState:
        """Rate the zone by the rule in the module docstring. Call it only when ``rateable``."""
        if self.hot_celsius is not None and self.temp_celsius >= self.hot_celsius:
            return ThermalState.CRITICAL
        if self.passive_celsius is not None:
            if self.temp_celsius >= self.passive_celsius:
                return ThermalState.SERIOUS
            if self.temp_celsius >= self.passive_celsius - FAIR_MARGIN_CELSIUS:
                return ThermalState.FAIR
        return ThermalState.NOMINAL


def _read_text(path: Path) -> str:
    return path.read_text(encoding="ascii", errors="replace").strip()


def _millidegrees(text: str) -> float | None:
    """Convert a sysfs temperature in m°C to °C, or return ``None`` if it is not plausible."""
    try:
        celsius = int(text) / 1000
    except ValueError:
        return None
    if not MIN_PLAUSIBLE_CELSIUS <= celsius <= MAX_PLAUSIBLE_CELSIUS:
        return None
    return celsius


def read_zone(path: Path) -> Zone:
    """Read a ``thermal_zoneN`` directory. Raise ``ZoneError`` or ``OSError`` if it is unusable."""
    temp_text = _read_text(path / "temp")
    temp = _millidegrees(temp_text)
    if temp is None:
        raise ZoneError(f"implausible temperature {temp_text!r} m°C")

    trips: dict[str, list[float]] = {"passive": [], "hot": [], "critical": []}
    for trip_path in sorted(path.glob("trip_point_*_temp")):
        type_path = trip_path.with_name(trip_path.name.removesuffix("_temp") + "_type")
        try:
            trip_type = _read_text(type_path)
            trip_temp = _millidegrees(_read_text(trip_path))
        except OSError:
            continue
        if trip_type in trips and trip_temp is not None and trip_temp > MIN_PLAUSIBLE_CELSIUS:
            trips[trip_type].append(trip_temp)

    hot = trips["hot"] + trips["critical"]
    try:
        zone_type = _read_text(path / "type")
    except OSError:
        zone_type = ""
    return Zone(
        name=path.name,
        path=path,
        type=zone_type,
        temp_celsius=temp,
        passive_celsius=min(trips["passive"], default=None),
        hot_celsius=min(hot, default=None),
    )


def _zone_disabled(path: Path) -> bool:
    try:
        return _read_text(path / "mode") == "disabled"
    except OSError:
        return False


def read_psi(path: Path) -> dict[str, float]:
    """Parse a PSI file into ``{"some_avg10": ..., "full_avg10": ...}`` (percent)."""
    figures: dict[str, float] = {}
    for line in _read_text(path).splitlines():
        kind, *fields = line.split()
        for item in fields:
            key, _, value = item.partition("=")
            if key == "avg10":
                figures[f"{kind}_avg10"] = float(value)
    if "some_avg10" not in figures:
        raise ValueError(f"no 'some avg10' figure in {path}")
    return figures


def memory_pressure_from_psi(some_avg10: float, full_avg10: float | None) -> MemoryPressure:
    if full_avg10 is not None and full_avg10 >= MEMORY_CRITICAL_FULL_AVG10:
        return MemoryPressure.CRITICAL
    if some_avg10 >= MEMORY_WARNING_SOME_AVG10:
        return MemoryPressure.WARNING
    return MemoryPressure.NORMAL


class LinuxMonitor:
    """Monitor of a Linux host.

    ``root`` is prefixed to every sysfs and ``/proc/pressure`` path, so tests can point it at a
    fake tree. psutil and ``os.getloadavg`` always read the real host.
    """

    def __init__(self, *, root: str | Path = "/", host: str | None = None) -> None:
        self.root = Path(root)
        self.host = host or socket.gethostname()

    def read(self) -> Reading:
        builder = ReadingBuilder(host=self.host, taken_at=utc_now())
        reason = self._add_thermal_state(builder)
        self._add_pressure(builder)
        add_memory(builder)
        add_cpu_load(builder)
        add_battery(builder)
        self._add_platform_profile(builder)
        return builder.build(thermal_reason=reason)

    # -- thermal zones ----------------------------------------------------------------------

    def _add_thermal_state(self, builder: ReadingBuilder) -> str:
        """Set ``thermal_state`` from the zones and return the reason when it stays unknown."""
        thermal_dir = self.root / "sys/class/thermal"
        zone_paths = sorted(thermal_dir.glob("thermal_zone*"))

        zones: list[Zone] = []
        errors: dict[str, str] = {}
        for path in zone_paths:
            if _zone_disabled(path):
                builder.raw.setdefault("zones_disabled", []).append(path.name)
                continue
            try:
                zones.append(read_zone(path))
            except (OSError, ZoneError) as error:
                errors[path.name] = str(error)

        builder.raw["zones"] = {
            zone.name: {
                "type": zone.type,
                "temp_celsius": zone.temp_celsius,
                "passive_celsius": zone.passive_celsius,
                "hot_celsius": zone.hot_celsius,
            }
            for zone in zones
        }
        if errors:
            builder.raw["zone_errors"] = errors

        rated = [zone for zone in zones if zone.rateable]
        if not rated:
            if errors:
                first = next(iter(errors.items()))
                return f"{len(errors)} thermal zone(s) failed to read, {first[0]}: {first[1]}"
            return NO_SENSOR

        state = max(zone.rate() for zone in rated)
        sources = [str(zone.path) for zone in rated]
        cooling = self._active_cooling(thermal_dir, builder)
        if cooling and state < ThermalState.FAIR:
            state = ThermalState.FAIR
            sources.extend(cooling)
        builder.set("thermal_state", state, ", ".join(sources))
        return ""

    def _active_cooling(self, thermal_dir: Path, builder: ReadingBuilder) -> list[str]:
        """Return the paths of Processor and Fan cooling devices that are working now."""
        active: list[str] = []
        devices: dict[str, dict[str, object]] = {}
        for path in sorted(thermal_dir.glob("cooling_device*")):
            try:
                device_type = _read_text(path / "type")
                current = int(_read_text(path / "cur_state"))
                maximum = int(_read_text(path / "max_state"))
            except (OSError, ValueError):
                continue
            if device_type.lower() not in ACTIVE_COOLING_TYPES:
                continue
            devices[path.name] = {"type": device_type, "cur_state": current, "max_state": maximum}
            if 0 < current <= maximum:
                active.append(str(path))
        if devices:
            builder.raw["cooling_devices"] = devices
        return active

    # -- pressure and power -----------------------------------------------------------------

    def _add_pressure(self, builder: ReadingBuilder) -> None:
        memory_path = self.root / "proc/pressure/memory"
        try:
            memory = read_psi(memory_path)
        except (OSError, ValueError) as error:
            builder.raw["memory_psi_error"] = str(error)
        else:
            builder.raw.update({f"memory_{key}": value for key, value in memory.items()})
            pressure = memory_pressure_from_psi(memory["some_avg10"], memory.get("full_avg10"))
            builder.set("memory_pressure", pressure, str(memory_path))

        cpu_path = self.root / "proc/pressure/cpu"
        try:
            cpu = read_psi(cpu_path)
        except (OSError, ValueError) as error:
            builder.raw["cpu_psi_error"] = str(error)
        else:
            builder.raw["cpu_some_avg10"] = cpu["some_avg10"]
            builder.sources["cpu_pressure"] = str(cpu_path)

    def _add_platform_profile(self, builder: ReadingBuilder) -> None:
        path = self.root / "sys/firmware/acpi/platform_profile"
        try:
            profile = _read_text(path)
        except OSError:
            return
        builder.raw["platform_profile"] = profile
        builder.set("low_power_mode", profile == "low-power", str(path))
