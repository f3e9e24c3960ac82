"""Properties of the policy: a hotter or more loaded host never gets more work or faster retries.

Each test draws a reading and a "worse" one (hotter, more memory used, higher pressure, higher
CPU load, less memory available, low-power or battery added) and compares what the pools, the
health score and the scheduler make of the two.
"""

from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from thermal_pools.config import ThermalSchedulingConfig
from thermal_pools.health import health_score
from thermal_pools.profiles import PRIORITIES, TaskConfig
from thermal_pools.reading import MemoryPressure, Reading, ThermalState
from thermal_pools.scheduler import decide, retry_delay, suggest_configuration
from thermal_pools.tiers import plan_pools, resolve_state

TAKEN_AT = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
CONFIG = ThermalSchedulingConfig()

# No deadline, because unit tests here carry no wall-clock limits.
policy_settings = settings(deadline=None, max_examples=200)

states = st.sampled_from(list(ThermalState))
pressures = st.none() | st.sampled_from(list(MemoryPressure))
percents = st.none() | st.floats(min_value=0, max_value=100)
loads = st.none() | st.floats(min_value=0, max_value=8)
gibs = st.none() | st.floats(min_value=0, max_value=256)
flags = st.none() | st.booleans()


def _worse_optional(draw, value, strategy_above):
    """Draw a figure at least as bad as ``value``; an unknown figure stays unknown."""
    if value is None:
        return None
    return draw(strategy_above(value))


@st.composite
def reading_pairs(draw):
    """A reading and one that is hotter or more loaded in every figure, or equal."""
    state = draw(states)
    used = draw(percents)
    pressure = draw(pressures)
    cpu = draw(loads)
    available = draw(gibs)
    low_power = draw(flags)
    battery = draw(flags)
    base = Reading(
        host="mac-studio",
        taken_at=TAKEN_AT,
        thermal_state=state,
        memory_used_percent=used,
        memory_available_gib=available,
        memory_pressure=pressure,
        cpu_load=cpu,
        low_power_mode=low_power,
        on_battery=battery,
    )

    worse = Reading(
        host="mac-studio",
        taken_at=TAKEN_AT,
        thermal_state=draw(st.sampled_from([s for s in ThermalState if s >= state])),
        memory_used_percent=_worse_optional(draw, used, lambda v: st.floats(min_value=v, max_value=100)),
        memory_available_gib=_worse_optional(draw, available, lambda v: st.floats(min_value=0, max_value=v)),
        memory_pressure=_worse_optional(
            draw, pressure, lambda v: st.sampled_from([p for p in MemoryPressure if p >= v])
        ),
        cpu_load=_worse_optional(draw, cpu, lambda v: st.floats(min_value=v, max_value=8)),
        low_power_mode=True if low_power else draw(st.sampled_from([low_power, True])),
        on_battery=True if battery else draw(st.sampled_from([battery, True])),
    )
    return base, worse


def observe(reading: Reading):
    return resolve_state(reading, None, CONFIG)


task_arguments = st.fixed_dictionaries(
    {
        "thermal_threshold": st.integers(min_value=0, max_value=3),
        "memory_required_gb": st.sampled_from([0.0, 1.0, 8.0, 32.0]),
        "priority": st.sampled_from(PRIORITIES),
    }
)


@policy_settings
@given(reading_pairs())
def test_worse_reading_no_more_slots(pair):
    base, worse = pair
    base_slots = plan_pools(observe(base), CONFIG).slots_by_name()
    worse_slots = plan_pools(observe(worse), CONFIG).slots_by_name()
    for name, slots in worse_slots.items():
        assert slots <= base_slots[name], name


@policy_settings
@given(reading_pairs())
def test_worse_reading_no_higher_health(pair):
    base, worse = pair
    base_health = health_score(base, observe(base).state, CONFIG)
    worse_health = health_score(worse, observe(worse).state, CONFIG)
    assert worse_health <= base_health


@policy_settings
@given(reading_pairs(), task_arguments)
def test_worse_reading_no_higher_throttle(pair, arguments):
    base, worse = pair
    base_decision = decide("task", observe(base), CONFIG, **arguments)
    worse_decision = decide("task", observe(worse), CONFIG, **arguments)
    assert worse_decision.throttle_level <= base_decision.throttle_level


@policy_settings
@given(reading_pairs(), task_arguments)
def test_worse_reading_no_shorter_retry(pair, arguments):
    base, worse = pair
    base_decision = decide("task", observe(base), CONFIG, **arguments)
    worse_decision = decide("task", observe(worse), CONFIG, **arguments)
    assert worse_decision.retry_delay_seconds >= base_decision.retry_delay_seconds


@policy_settings
@given(reading_pairs(), task_arguments)
def test_worse_reading_never_clears_held_task(pair, arguments):
    base, worse = pair
    base_decision = decide("task", observe(base), CONFIG, **arguments)
    worse_decision = decide("task", observe(worse), CONFIG, **arguments)
    if worse_decision.should_run:
        assert base_decision.should_run


@policy_settings
@given(reading_pairs())
def test_worse_reading_no_bigger_suggestion(pair):
    base, worse = pair
    task = TaskConfig(task_id="train", batch_size=32, workers=8, memory_required_gb=16.0)
    base_config = suggest_configuration(task, observe(base), CONFIG)["config"]
    worse_config = suggest_configuration(task, observe(worse), CONFIG)["config"]
    assert worse_config["batch_size"] <= base_config["batch_size"]
    assert worse_config["workers"] <= base_config["workers"]
    assert worse_config["memory_gb"] <= base_config["memory_gb"]


@policy_settings
@given(st.floats(min_value=0, max_value=100), st.floats(min_value=0, max_value=100), st.sampled_from(PRIORITIES))
def test_retry_delay_monotonic_bounded(first, second, priority):
    healthier, sicker = max(first, second), min(first, second)
    assert retry_delay(sicker, priority, CONFIG) >= retry_delay(healthier, priority, CONFIG)
    assert CONFIG.min_retry_delay_seconds <= retry_delay(sicker, priority, CONFIG) <= CONFIG.max_retry_delay_seconds


@policy_settings
@given(reading_pairs())
def test_health_in_range(pair):
    for reading in pair:
        score = health_score(reading, observe(reading).state, CONFIG)
        assert 0.0 <= score <= 100.0


@policy_settings
@given(
    st.text(min_size=1, max_size=40).filter(lambda text: text != "no sensor"),
    st.integers(min_value=0, max_value=3),
    task_arguments,
)
def test_failed_sensor_never_clears_cooler_work(reason, safe_state, arguments):
    config = ThermalSchedulingConfig(safe_state=safe_state)
    failed = Reading(host="mac-studio", taken_at=TAKEN_AT, thermal_reason=reason, memory_available_gib=64.0)
    decision = decide("task", resolve_state(failed, None, config), config, **arguments)

    assert decision.observation_basis.startswith("safe state")
    if arguments["priority"] != "critical" and arguments["thermal_threshold"] < safe_state:
        assert not decision.should_run


@policy_settings
@given(reading_pairs(), st.sampled_from([ThermalState.NOMINAL, ThermalState.FAIR, ThermalState.SERIOUS]))
def test_failed_sensor_no_more_slots_than_cooler(pair, sensor_state):
    # The default safe state is serious, so a failed read must not open more than any sensor
    # reading at serious or cooler would, figures otherwise equal.
    base, _ = pair
    sensor = Reading(**{**base.__dict__, "thermal_state": sensor_state})
    failed = Reading(**{**base.__dict__, "thermal_state": None, "thermal_reason": "powermetrics timed out"})
    sensor_slots = plan_pools(observe(sensor), CONFIG).slots_by_name()
    failed_slots = plan_pools(observe(failed), CONFIG).slots_by_name()
    for name, slots in failed_slots.items():
        assert slots <= sensor_slots[name], name
