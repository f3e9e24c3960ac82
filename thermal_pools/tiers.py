"""Tier pools: the rules that turn an observation of a host into pool sizes.

There is one Airflow pool per thermal tier. A task placed in tier T's pool may start only while
the host's planned state is T or cooler, so at planned state S:

1. Tiers cooler than S get 0 slots.
2. Every other tier gets ``base_slots(T) * throttle(S) * memory_factor * power_factor`` slots,
   rounded down. ``throttle(S)`` is 1.0 / 0.9 / 0.7 / 0.5 for nominal / fair / serious /
   critical by default. ``memory_factor`` is ``memory_warning_factor`` or
   ``memory_critical_factor`` under memory pressure (1.0 otherwise, also when pressure is unknown).
   ``power_factor`` is ``low_power_factor`` in low-power mode or on battery (1.0 otherwise).
3. An allowed tier with a base size above 0 never rounds down to 0: it keeps at least 1 slot.
4. The critical tier always keeps at least 1 slot, so critical work can still run, heavily
   throttled, on the hottest host.

The planned state S comes from :func:`resolve_state` (what to believe when the sensor is missing
or failing) and :func:`stabilize` (pools shrink at once but grow back only after the hotter state
has been absent for the stabilization window).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from thermal_pools.config import ThermalSchedulingConfig
from thermal_pools.reading import NO_SENSOR, MemoryPressure, Reading, ThermalState


@dataclass(frozen=True)
class Observation:
    """The thermal state the package acts on, and why it believes it.

    ``basis`` is a short phrase for logs and pool descriptions: ``sensor``, ``no sensor``,
    ``last good value, 42 s old`` or ``safe state, sensor failed: ...``.
    """

    state: ThermalState
    basis: str
    reading: Reading

    @property
    def from_sensor(self) -> bool:
        return self.basis == "sensor"

    @property
    def failed_read(self) -> bool:
        """The sensor exists but this read failed, so the state is a fallback, not a measurement."""
        return self.reading.thermal_state is None and self.reading.thermal_reason != NO_SENSOR


def resolve_state(
    reading: Reading,
    last_good: Reading | None,
    config: ThermalSchedulingConfig,
) -> Observation:
    """Decide which thermal state to act on for this reading.

    - A sensor value is used as it is.
    - A host with no thermal sensor uses ``no_sensor_state`` (default nominal).
    - A failing sensor keeps ``last_good`` for ``sensor_grace_period_seconds``, then uses
      ``safe_state`` (default serious). A failed read never counts as nominal by itself.
    """
    if reading.thermal_state is not None:
        return Observation(reading.thermal_state, "sensor", reading)

    if reading.thermal_reason == NO_SENSOR:
        return Observation(ThermalState(config.no_sensor_state), NO_SENSOR, reading)

    if last_good is not None and last_good.thermal_state is not None:
        age = (reading.taken_at - last_good.taken_at).total_seconds()
        if 0 <= age <= config.sensor_grace_period_seconds:
            return Observation(last_good.thermal_state, f"last good value, {age:.0f} s old", reading)

    return Observation(
        ThermalState(config.safe_state), f"safe state, sensor failed: {reading.thermal_reason}", reading
    )


def stabilize(
    current: ThermalState,
    recent: Iterable[tuple[datetime, ThermalState]],
    now: datetime,
    config: ThermalSchedulingConfig,
) -> tuple[ThermalState, str]:
    """Return the state to plan for, keeping a hotter recent state through the window.

    ``recent`` contains (time, observed state) pairs from the readings table. The result is the
    hottest state seen within ``stabilization_window_seconds`` before ``now``, or ``current`` if
    that is hotter, with a phrase explaining a hold (empty when no hold applies). Heating up
    therefore takes effect at once, while cooling down waits out the window.
    """
    window_start = now - timedelta(seconds=config.stabilization_window_seconds)
    in_window = [(taken_at, state) for taken_at, state in recent if window_start <= taken_at <= now]
    planned = max([current, *(state for _, state in in_window)])
    if planned == current:
        return current, ""

    last_seen = max(taken_at for taken_at, state in in_window if state >= planned)
    until = last_seen + timedelta(seconds=config.stabilization_window_seconds)
    # The end time, not a countdown, so the phrase (and the pool descriptions) stay the same
    # from step to step while the hold lasts.
    return planned, f"pools held at {planned.label} until {until.strftime('%H:%M:%S')} UTC (stabilization window)"


@dataclass(frozen=True)
class PoolTarget:
    """The size one tier pool should have, with the one-line description shown in the UI."""

    name: str
    tier: ThermalState
    slots: int
    description: str


@dataclass(frozen=True)
class PoolPlan:
    """The four tier pools' target sizes for one planned state."""

    state: ThermalState
    throttle: float
    slot_factor: float
    pools: tuple[PoolTarget, ...]

    def slots_by_name(self) -> dict[str, int]:
        return {pool.name: pool.slots for pool in self.pools}


def slot_factor(state: ThermalState, reading: Reading, config: ThermalSchedulingConfig) -> float:
    """Product of the throttle, memory and power factors applied to every allowed tier."""
    factor = config.throttle(state)
    if reading.memory_pressure == MemoryPressure.WARNING:
        factor *= config.memory_warning_factor
    elif reading.memory_pressure == MemoryPressure.CRITICAL:
        factor *= config.memory_critical_factor
    if reading.low_power_mode or reading.on_battery:
        factor *= config.low_power_factor
    return factor


def tier_slots(tier: ThermalState, state: ThermalState, factor: float, config: ThermalSchedulingConfig) -> int:
    """Slots of one tier pool at planned state ``state``; see the module docstring for the rules."""
    if tier < state:
        return 0
    base = config.base_slots(tier)
    # A small epsilon keeps 4 * 0.7 * 1.0 from flooring to 2 through float error.
    slots = math.floor(base * factor + 1e-9)
    if base > 0:
        slots = max(slots, 1)
    if tier == ThermalState.CRITICAL:
        slots = max(slots, 1)
    return slots


def describe(
    observation: Observation, state: ThermalState, hold: str, since: datetime, throttle: float, factor: float
) -> str:
    """Build the one-line pool description: state, throttle, memory, time.

    Figures are rounded (memory to 10 %) so that the description changes only when something a
    person would act on changes. An unchanged plan then needs no write to Airflow.
    """
    reading = observation.reading
    # The observed state comes first. A stabilization hold adds the state the pools keep.
    parts = [f"{reading.host}: {observation.state.label} ({observation.basis})"]
    if hold:
        parts[0] += f", {hold}"
    parts.append(f"since {since.strftime('%Y-%m-%d %H:%M')} UTC")
    parts.append(f"throttle {throttle:.0%}" + (f", slots x{factor:.2f}" if abs(factor - throttle) > 1e-9 else ""))
    if reading.memory_used_percent is not None:
        memory = f"memory ~{round(reading.memory_used_percent, -1):.0f}% used"
    else:
        memory = "memory unknown"
    if reading.memory_pressure is not None:
        memory += f", pressure {reading.memory_pressure.label}"
    parts.append(memory)
    if reading.low_power_mode:
        parts.append("low-power mode")
    if reading.on_battery:
        parts.append("on battery")
    return "; ".join(parts)


def plan_pools(
    observation: Observation,
    config: ThermalSchedulingConfig,
    *,
    planned_state: ThermalState | None = None,
    hold: str = "",
    since: datetime | None = None,
) -> PoolPlan:
    """Compute the four tier pools' sizes for an observation.

    ``planned_state`` overrides the observed state (as :func:`stabilize` returns it) and
    ``since`` is when that state took effect, shown in the descriptions.
    """
    state = planned_state if planned_state is not None else observation.state
    factor = slot_factor(state, observation.reading, config)
    throttle = config.throttle(state)
    description = describe(observation, state, hold, since or observation.reading.taken_at, throttle, factor)
    pools = tuple(
        PoolTarget(
            name=config.pool_name(tier),
            tier=tier,
            slots=tier_slots(tier, state, factor, config),
            description=description,
        )
        for tier in ThermalState
    )
    return PoolPlan(state=state, throttle=throttle, slot_factor=factor, pools=pools)
