"""Health score: one 0-100 figure for how much room a host has for more heavy work.

The score starts at 100 and loses points for each source of stress, then is clamped to 0-100:

| input | points lost |
|---|---|
| thermal state (as acted on) | nominal 0, fair 10, serious 25, critical 45 |
| memory used, u % (threshold t = ``memory_threshold_percent``) | u <= t: ``10 * u / t``; u > t: ``10 + 20 * (u - t) / (100 - t)``; unknown: 10 |
| memory pressure | normal 0, warning 10, critical 25; unknown: 5 |
| CPU load per core, l | ``15 * min(max(l - 0.5, 0) / 1.5, 1)``; unknown: 5 |
| power | low-power mode 10, on battery 5 (both: 15); unknown: 0 |

So a cool, idle host on mains power with no memory in use scores 100, a host in critical state
with nothing else wrong scores 55, and memory use at the threshold costs as much as a fair
thermal state.

Unknown figures: an unknown memory figure costs what a host at the memory threshold would lose,
and an unknown CPU load costs what a fully busy host (load 1.0) would lose. A host that reports
nothing therefore never gets full marks. Unknown power mode costs nothing, because most Linux servers and
desktops report none, and the tier pools also apply no power factor then.

The thermal state is an argument rather than ``reading.thermal_state`` so that a missing or
failed sensor is scored at the state :func:`thermal_pools.tiers.resolve_state` chose for it.
"""

from __future__ import annotations

from thermal_pools.config import ThermalSchedulingConfig
from thermal_pools.reading import MemoryPressure, Reading, ThermalState

__all__ = ["health_score"]

THERMAL_PENALTY = {
    ThermalState.NOMINAL: 0.0,
    ThermalState.FAIR: 10.0,
    ThermalState.SERIOUS: 25.0,
    ThermalState.CRITICAL: 45.0,
}

PRESSURE_PENALTY = {
    MemoryPressure.NORMAL: 0.0,
    MemoryPressure.WARNING: 10.0,
    MemoryPressure.CRITICAL: 25.0,
}
UNKNOWN_PRESSURE_PENALTY = 5.0

# Memory use: up to 10 points below the threshold, up to 20 more between it and 100 %.
MEMORY_BELOW_THRESHOLD_PENALTY = 10.0
MEMORY_ABOVE_THRESHOLD_PENALTY = 20.0

# CPU load per core: free up to 0.5, then linear to the full 15 points at 2.0.
CPU_FREE_LOAD = 0.5
CPU_FULL_PENALTY_LOAD = 2.0
CPU_PENALTY = 15.0
UNKNOWN_CPU_PENALTY = CPU_PENALTY * (1.0 - CPU_FREE_LOAD) / (CPU_FULL_PENALTY_LOAD - CPU_FREE_LOAD)

LOW_POWER_PENALTY = 10.0
ON_BATTERY_PENALTY = 5.0


def memory_penalty(used_percent: float | None, threshold_percent: float) -> float:
    """Return the points lost for memory use (rule in the module docstring)."""
    if used_percent is None:
        return MEMORY_BELOW_THRESHOLD_PENALTY
    used = min(used_percent, 100.0)
    if used <= threshold_percent:
        return MEMORY_BELOW_THRESHOLD_PENALTY * used / threshold_percent

    # threshold_percent < used <= 100 here, so the divisor is never 0.
    over = (used - threshold_percent) / (100.0 - threshold_percent)
    return MEMORY_BELOW_THRESHOLD_PENALTY + MEMORY_ABOVE_THRESHOLD_PENALTY * over


def pressure_penalty(pressure: MemoryPressure | None) -> float:
    """Return the points lost for the memory pressure level (rule in the module docstring)."""
    if pressure is None:
        return UNKNOWN_PRESSURE_PENALTY
    return PRESSURE_PENALTY[pressure]


def cpu_penalty(cpu_load: float | None) -> float:
    """Return the points lost for CPU load per core (rule in the module docstring)."""
    if cpu_load is None:
        return UNKNOWN_CPU_PENALTY
    busy = (cpu_load - CPU_FREE_LOAD) / (CPU_FULL_PENALTY_LOAD - CPU_FREE_LOAD)
    return CPU_PENALTY * min(max(busy, 0.0), 1.0)


def power_penalty(low_power_mode: bool | None, on_battery: bool | None) -> float:
    """Return the points lost for low-power mode and battery power (rule in the module docstring)."""
    points = 0.0
    if low_power_mode:
        points += LOW_POWER_PENALTY
    if on_battery:
        points += ON_BATTERY_PENALTY
    return points


def health_score(reading: Reading, state: ThermalState, config: ThermalSchedulingConfig) -> float:
    """Return the host's health score, 0 (no room) to 100 (idle and cool).

    ``state`` is the thermal state to act on, normally ``resolve_state(...).state``.
    """
    lost = (
        THERMAL_PENALTY[ThermalState(state)]
        + memory_penalty(reading.memory_used_percent, config.memory_threshold_percent)
        + pressure_penalty(reading.memory_pressure)
        + cpu_penalty(reading.cpu_load)
        + power_penalty(reading.low_power_mode, reading.on_battery)
    )
    return min(max(100.0 - lost, 0.0), 100.0)
