"""The tier pool rules, as a table."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from thermal_pools.config import ThermalSchedulingConfig
from thermal_pools.reading import NO_SENSOR, MemoryPressure, Reading, ThermalState
from thermal_pools.tiers import plan_pools, resolve_state, stabilize

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)
DEFAULT = ThermalSchedulingConfig()


def reading(state: int | None = 0, reason: str = "", **figures) -> Reading:
    return Reading(
        host="studio",
        taken_at=NOW,
        thermal_state=None if state is None else ThermalState(state),
        thermal_reason=reason,
        **figures,
    )


def slots(state, config=DEFAULT, **figures) -> tuple[int, int, int, int]:
    plan = plan_pools(resolve_state(reading(state, **figures), None, config), config)
    return tuple(pool.slots for pool in plan.pools)


# (state, figures, expected slots for nominal, fair, serious, critical) with base 10/10/10/4.
SLOT_TABLE = [
    (0, {}, (10, 10, 10, 4)),
    (1, {}, (0, 9, 9, 3)),
    (2, {}, (0, 0, 7, 2)),
    (3, {}, (0, 0, 0, 2)),
    (0, {"memory_pressure": MemoryPressure.WARNING}, (7, 7, 7, 3)),
    (0, {"memory_pressure": MemoryPressure.CRITICAL}, (5, 5, 5, 2)),
    (2, {"memory_pressure": MemoryPressure.CRITICAL}, (0, 0, 3, 1)),
    (0, {"low_power_mode": True}, (7, 7, 7, 3)),
    (0, {"on_battery": True}, (7, 7, 7, 3)),
    (3, {"memory_pressure": MemoryPressure.CRITICAL, "low_power_mode": True}, (0, 0, 0, 1)),
]


@pytest.mark.parametrize(("state", "figures", "expected"), SLOT_TABLE)
def test_slots_table(state, figures, expected):
    assert slots(state, **figures) == expected


def test_allowed_tier_never_rounds_to_zero():
    config = ThermalSchedulingConfig(base_slots_nominal=1, base_slots_fair=1, base_slots_serious=1, base_slots_critical=1)
    assert slots(2, config, memory_pressure=MemoryPressure.CRITICAL, low_power_mode=True) == (0, 0, 1, 1)


def test_critical_tier_keeps_one_slot_with_zero_base():
    config = ThermalSchedulingConfig(base_slots_critical=0)
    assert slots(3, config)[3] == 1


def test_zero_base_tier_stays_closed():
    config = ThermalSchedulingConfig(base_slots_fair=0)
    assert slots(0, config)[1] == 0


def test_slots_are_whole_and_not_negative():
    for state in ThermalState:
        for pressure in [None, *MemoryPressure]:
            for value in slots(int(state), memory_pressure=pressure):
                assert isinstance(value, int)
                assert value >= 0


def test_no_sensor_uses_configured_state():
    observation = resolve_state(reading(None, NO_SENSOR), None, DEFAULT)
    assert observation.state == ThermalState.NOMINAL
    assert observation.basis == NO_SENSOR


def test_no_sensor_state_configurable():
    config = DEFAULT.replace(no_sensor_state=1)
    assert resolve_state(reading(None, NO_SENSOR), None, config).state == ThermalState.FAIR


def test_failed_sensor_keeps_last_good_in_grace():
    last = Reading(host="studio", taken_at=NOW - timedelta(seconds=60), thermal_state=ThermalState.FAIR)
    observation = resolve_state(reading(None, "sensor failed: timeout"), last, DEFAULT)
    assert observation.state == ThermalState.FAIR
    assert observation.basis == "last good value, 60 s old"


def test_failed_sensor_falls_back_after_grace():
    last = Reading(host="studio", taken_at=NOW - timedelta(seconds=301), thermal_state=ThermalState.NOMINAL)
    observation = resolve_state(reading(None, "sensor failed: timeout"), last, DEFAULT)
    assert observation.state == ThermalState.SERIOUS
    assert observation.basis.startswith("safe state")


def test_failed_sensor_never_nominal_without_history():
    observation = resolve_state(reading(None, "sensor failed: boom"), None, DEFAULT)
    assert observation.state == ThermalState(DEFAULT.safe_state)


def test_stabilize_shrinks_at_once():
    recent = [(NOW - timedelta(seconds=60), ThermalState.NOMINAL)]
    assert stabilize(ThermalState.CRITICAL, recent, NOW, DEFAULT) == (ThermalState.CRITICAL, "")


def test_stabilize_holds_hotter_state():
    recent = [(NOW - timedelta(seconds=120), ThermalState.SERIOUS)]
    planned, hold = stabilize(ThermalState.NOMINAL, recent, NOW, DEFAULT)
    assert planned == ThermalState.SERIOUS
    assert hold == "pools held at serious until 12:03:00 UTC (stabilization window)"


def test_stabilize_grows_after_window():
    recent = [(NOW - timedelta(seconds=301), ThermalState.CRITICAL)]
    assert stabilize(ThermalState.NOMINAL, recent, NOW, DEFAULT) == (ThermalState.NOMINAL, "")


def test_flicker_resizes_once():
    # A host flickering between nominal and fair every minute for 20 minutes.
    states = [ThermalState.NOMINAL if minute % 2 else ThermalState.FAIR for minute in range(20)]
    history: list[tuple[datetime, ThermalState]] = []
    plans = []
    for minute, state in enumerate(states):
        now = NOW + timedelta(minutes=minute)
        planned, _ = stabilize(state, history, now, DEFAULT)
        history.append((now, state))
        plans.append(planned)
    resizes = sum(1 for before, after in zip(plans, plans[1:]) if before != after)
    assert plans[0] == ThermalState.FAIR
    assert resizes == 0


def test_description_is_one_line():
    plan = plan_pools(resolve_state(reading(2, memory_used_percent=62.0), None, DEFAULT), DEFAULT)
    description = plan.pools[0].description
    assert "\n" not in description
    assert description.startswith("studio: serious (sensor)")
    assert "memory ~60% used" in description


def test_description_during_hold_shows_observed_state():
    observation = resolve_state(reading(0), None, DEFAULT)
    recent = [(NOW - timedelta(seconds=120), ThermalState.CRITICAL)]
    planned, hold = stabilize(observation.state, recent, NOW, DEFAULT)
    plan = plan_pools(observation, DEFAULT, planned_state=planned, hold=hold)
    description = plan.pools[0].description
    assert description.startswith("studio: nominal (sensor), pools held at critical until 12:03:00 UTC")
    assert plan.slots_by_name()["thermal_critical"] == 2
