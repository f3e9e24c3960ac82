"""One observation of a host: thermal state, memory, CPU load and power mode.

A :class:`Reading` is what every monitor returns and what the readings table stores. Each
figure is optional because any sensor may be missing on a given host. A missing figure is
``None`` (unknown), never a made-up default. ``sources`` names where each figure came from
and ``raw`` keeps the value as the operating system reported it, so a surprising decision can
be traced back to its input.
"""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any


class ThermalState(enum.IntEnum):
    """Apple's thermal scale, as ``NSProcessInfo.thermalState`` reports it (0 coolest)."""

    NOMINAL = 0
    FAIR = 1
    SERIOUS = 2
    CRITICAL = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: int | str | ThermalState) -> ThermalState:
        """Convert 0-3 or a tier name ("nominal" ... "critical") to a state.

        Raises ``ValueError`` naming the value and the accepted forms.
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, bool):
            raise ValueError(f"invalid thermal state {value!r}: use an integer 0-3 or a tier name")
        if isinstance(value, int):
            if 0 <= value <= 3:
                return cls(value)
            raise ValueError(
                f"invalid thermal state {value!r}: use 0 (nominal), 1 (fair), 2 (serious) or 3 (critical)"
            )
        if isinstance(value, str):
            text = value.strip().lower()
            if text.isdigit():
                return cls.parse(int(text))
            for state in cls:
                if state.label == text:
                    return state
        raise ValueError(
            f"invalid thermal state {value!r}: use 0-3 or one of nominal, fair, serious, critical"
        )


class MemoryPressure(enum.IntEnum):
    """Memory pressure level, ordered from calm to severe.

    macOS reports it directly (``kern.memorystatus_vm_pressure_level``: 1 normal, 2 warning,
    4 critical). On Linux it is derived from PSI ``memory`` stall times.
    """

    NORMAL = 0
    WARNING = 1
    CRITICAL = 2

    @property
    def label(self) -> str:
        return self.name.lower()


# Reason recorded in ``Reading.thermal_reason`` when the host has no thermal sensor at all, as
# opposed to a sensor that exists but failed. Only this reason may use the configured
# no-sensor state. Every other unknown state is treated as a failure.
NO_SENSOR = "no sensor"


@dataclass(frozen=True)
class Reading:
    """A snapshot of one host's thermal and resource state.

    Fields, each ``None`` when unknown:

    - ``thermal_state``: 0-3 on Apple's scale. ``thermal_reason`` gives the cause when it is unknown.
    - ``memory_used_percent``: physical memory in use, percent (0-100).
    - ``memory_available_gib``: memory a new process can get without swapping, GiB (2**30 bytes).
    - ``memory_pressure``: the operating system's pressure level.
    - ``cpu_load``: 1-minute load average divided by the logical CPU count (1.0 = all cores busy).
    - ``low_power_mode``: the OS low-power (energy saver) mode is on.
    - ``on_battery``: the host runs on battery rather than mains power.
    """

    host: str
    taken_at: datetime
    thermal_state: ThermalState | None = None
    thermal_reason: str = ""
    memory_used_percent: float | None = None
    memory_available_gib: float | None = None
    memory_pressure: MemoryPressure | None = None
    cpu_load: float | None = None
    low_power_mode: bool | None = None
    on_battery: bool | None = None
    sources: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.taken_at.tzinfo is None:
            raise ValueError(f"reading time {self.taken_at!r} has no time zone: pass an aware UTC datetime")
        if self.thermal_state is None and not self.thermal_reason:
            raise ValueError("a reading with an unknown thermal state needs a thermal_reason saying why")
        for name in ("memory_used_percent", "memory_available_gib", "cpu_load"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise ValueError(f"invalid {name} {value!r}: expected a finite number >= 0 or None")

    def age_seconds(self, now: datetime | None = None) -> float:
        """Return the seconds since the reading was taken (negative if it is from the future)."""
        now = now or datetime.now(timezone.utc)
        return (now - self.taken_at).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        """Return a plain JSON-ready dict: enums as integers, time as ISO 8601 UTC."""
        data = asdict(self)
        data["taken_at"] = self.taken_at.astimezone(timezone.utc).isoformat()
        data["thermal_state"] = None if self.thermal_state is None else int(self.thermal_state)
        data["memory_pressure"] = None if self.memory_pressure is None else int(self.memory_pressure)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reading:
        """Rebuild a reading stored with :meth:`to_dict`."""
        values = dict(data)
        values["taken_at"] = datetime.fromisoformat(values["taken_at"])
        if values.get("thermal_state") is not None:
            values["thermal_state"] = ThermalState(values["thermal_state"])
        if values.get("memory_pressure") is not None:
            values["memory_pressure"] = MemoryPressure(values["memory_pressure"])
        return cls(**values)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
