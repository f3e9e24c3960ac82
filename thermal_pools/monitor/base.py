"""The monitor contract and the readings every platform takes the same way.

A monitor returns one :class:`~thermal_pools.reading.Reading` per ``read()`` call. The helpers
here fill in the figures that psutil and the C library report alike on macOS and Linux:

| field | unit | source |
|---|---|---|
| ``memory_used_percent`` | percent 0-100 | ``psutil.virtual_memory().percent`` |
| ``memory_available_gib`` | GiB (2**30 bytes) | ``psutil.virtual_memory().available`` |
| ``cpu_load`` | load per logical CPU | ``os.getloadavg()[0] / os.cpu_count()`` |
| ``on_battery`` | bool | ``not psutil.sensors_battery().power_plugged`` |

Each helper leaves a figure unknown (``None``) when its source fails, and records the error in
``raw`` so the reading still shows why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import psutil

from thermal_pools.reading import Reading

GIB = 2**30


@runtime_checkable
class Monitor(Protocol):
    """Protocol of any object that takes readings of a host."""

    def read(self) -> Reading:
        """Take one reading. Implementations should return quickly, well under 10 ms."""
        ...


@dataclass
class ReadingBuilder:
    """Figures of a reading being taken, with the source and raw value of each."""

    host: str
    taken_at: datetime
    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def set(self, name: str, value: Any, source: str) -> None:
        """Set the ``Reading`` field ``name`` and record its source. A ``None`` value is skipped."""
        if value is None:
            return
        self.values[name] = value
        self.sources[name] = source

    def build(self, thermal_reason: str = "") -> Reading:
        return Reading(
            host=self.host,
            taken_at=self.taken_at,
            thermal_reason=thermal_reason,
            sources=self.sources,
            raw=self.raw,
            **self.values,
        )


def add_memory(builder: ReadingBuilder) -> None:
    """Set memory use and available memory from ``psutil.virtual_memory()``."""
    try:
        memory = psutil.virtual_memory()
    except (OSError, psutil.Error) as error:
        builder.raw["virtual_memory_error"] = str(error)
        return

    builder.raw["memory_total_bytes"] = memory.total
    builder.raw["memory_available_bytes"] = memory.available
    builder.set("memory_used_percent", float(memory.percent), "psutil.virtual_memory")
    builder.set("memory_available_gib", memory.available / GIB, "psutil.virtual_memory")


def add_cpu_load(builder: ReadingBuilder) -> None:
    """Set the 1-minute load average per logical CPU from ``os.getloadavg()``."""
    cpus = os.cpu_count()
    try:
        load_1m = os.getloadavg()[0]
    except OSError as error:
        builder.raw["loadavg_error"] = str(error)
        return

    builder.raw["load_1m"] = load_1m
    builder.raw["cpu_count"] = cpus
    if cpus:
        builder.set("cpu_load", load_1m / cpus, "os.getloadavg")


def add_battery(builder: ReadingBuilder) -> None:
    """Set ``on_battery`` from ``psutil.sensors_battery()``. It stays unknown without a battery."""
    sensors_battery = getattr(psutil, "sensors_battery", None)
    if sensors_battery is None:
        return
    try:
        battery = sensors_battery()
    except (OSError, psutil.Error) as error:
        builder.raw["battery_error"] = str(error)
        return

    if battery is None or battery.power_plugged is None:
        return
    builder.raw["battery_percent"] = battery.percent
    builder.raw["power_plugged"] = battery.power_plugged
    builder.set("on_battery", not battery.power_plugged, "psutil.sensors_battery")
