"""Scheduling decisions, retry delays, suggestions and stats, across states, priorities and memory."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone

import pytest

from thermal_pools.config import ThermalSchedulingConfig
from thermal_pools.health import health_score
from thermal_pools.reading import NO_SENSOR, MemoryPressure, Reading, ThermalState
from thermal_pools.scheduler import (
    SchedulingDecision,
    ThermalAwareScheduler,
    retry_delay,
    safely_available_gib,
)

TAKEN_AT = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
FAILED = "powermetrics timed out"


class FakeMonitor:
    """Stands in for the macOS monitor: returns the readings it was given, the last one repeatedly."""

    def __init__(self, *readings: Reading) -> None:
        self.readings = list(readings)
        self.calls = 0

    def read(self) -> Reading:
        self.calls += 1
        if len(self.readings) > 1:
            return self.readings.pop(0)
        return self.readings[0]


class BrokenMonitor:
    def read(self) -> Reading:
        raise OSError("sysctl kern.memorystatus_vm_pressure_level failed")


def make_reading(state: ThermalState | None = ThermalState.NOMINAL, **figures) -> Reading:
    """A calm host at ``state``: 50 % memory used, 12 GiB available, light CPU load, mains power."""
    values = {
        "host": "mac-studio",
        "taken_at": TAKEN_AT,
        "thermal_state": state,
        "thermal_reason": "" if state is not None else FAILED,
        "memory_used_percent": 50.0,
        "memory_available_gib": 12.0,
        "memory_pressure": MemoryPressure.NORMAL,
        "cpu_load": 0.2,
        "low_power_mode": False,
        "on_battery": False,
    }
    values.update(figures)
    return Reading(**values)


def make_scheduler(reading: Reading | None = None, *, last_good: Reading | None = None, **settings):
    monitor = FakeMonitor(reading or make_reading())
    return ThermalAwareScheduler(ThermalSchedulingConfig(**settings), monitor, last_good=last_good)


# Observed situations: the reading, the last good reading, the state acted on and its basis.
GOOD_AT_FAIR = make_reading(ThermalState.FAIR, taken_at=TAKEN_AT - timedelta(seconds=60))
GOOD_LONG_AGO = make_reading(ThermalState.NOMINAL, taken_at=TAKEN_AT - timedelta(seconds=3600))
SITUATIONS = {
    "nominal": (make_reading(ThermalState.NOMINAL), None, ThermalState.NOMINAL, "sensor"),
    "fair": (make_reading(ThermalState.FAIR), None, ThermalState.FAIR, "sensor"),
    "serious": (make_reading(ThermalState.SERIOUS), None, ThermalState.SERIOUS, "sensor"),
    "critical": (make_reading(ThermalState.CRITICAL), None, ThermalState.CRITICAL, "sensor"),
    "no-sensor": (make_reading(None, thermal_reason=NO_SENSOR), None, ThermalState.NOMINAL, NO_SENSOR),
    "failed": (make_reading(None), None, ThermalState.SERIOUS, "safe state"),
    "failed-in-grace": (make_reading(None), GOOD_AT_FAIR, ThermalState.FAIR, "last good value"),
    "failed-after-grace": (make_reading(None), GOOD_LONG_AGO, ThermalState.SERIOUS, "safe state"),
}

# (situation, priority, threshold 2 task runs, throttle level) on a calm host, no memory needed.
DECISIONS = [
    ("nominal", "low", True, 1.0),
    ("nominal", "normal", True, 1.0),
    ("nominal", "high", True, 1.0),
    ("nominal", "critical", True, 1.0),
    ("fair", "low", True, 0.9),
    ("fair", "normal", True, 0.9),
    ("fair", "high", True, 0.9),
    ("fair", "critical", True, 0.9),
    ("serious", "low", True, 0.7),
    ("serious", "normal", True, 0.7),
    ("serious", "high", True, 0.7),
    ("serious", "critical", True, 0.7),
    ("critical", "low", False, 0.5),
    ("critical", "normal", False, 0.5),
    ("critical", "high", False, 0.5),
    ("critical", "critical", True, 0.5),
    ("no-sensor", "normal", True, 1.0),
    ("no-sensor", "critical", True, 1.0),
    # A failed read sizes the throttle by its fallback state but clears only critical work.
    ("failed", "low", False, 0.7),
    ("failed", "normal", False, 0.7),
    ("failed", "high", False, 0.7),
    ("failed", "critical", True, 0.5),
    ("failed-in-grace", "normal", False, 0.9),
    ("failed-after-grace", "normal", False, 0.7),
]


@pytest.mark.parametrize(("situation", "priority", "runs", "throttle"), DECISIONS)
def test_decision_table(situation, priority, runs, throttle):
    reading, last_good, state, basis = SITUATIONS[situation]
    scheduler = make_scheduler(reading, last_good=last_good)

    decision = scheduler.should_run_task("train_model", 2, 0.0, priority)

    assert decision.should_run is runs
    assert decision.throttle_level == throttle
    assert decision.thermal_state == state
    assert decision.observation_basis.startswith(basis)
    assert decision.reason.startswith("Run" if runs else "Hold")


@pytest.mark.parametrize("situation", list(SITUATIONS))
@pytest.mark.parametrize("threshold", [0, 1, 2, 3])
@pytest.mark.parametrize("priority", ["low", "normal", "high"])
def test_threshold_rule_every_state(situation, threshold, priority):
    reading, last_good, state, _ = SITUATIONS[situation]
    scheduler = make_scheduler(reading, last_good=last_good)

    decision = scheduler.should_run_task("task", threshold, 0.0, priority)

    # The calm host is healthy in every state, so only the threshold decides, except that a
    # failed read clears nothing below critical priority.
    assert decision.should_run is (state <= threshold and not situation.startswith("failed"))


@pytest.mark.parametrize("threshold", [0, 1])
@pytest.mark.parametrize("priority", ["low", "normal", "high"])
def test_failed_sensor_holds_cooler_work(threshold, priority):
    scheduler = make_scheduler(make_reading(None))
    decision = scheduler.should_run_task("task", threshold, 0.0, priority)
    assert decision.should_run is False
    assert "safe state, sensor failed: powermetrics timed out" in decision.reason
    assert "above the task's threshold" in decision.reason


def test_critical_bypass_threshold_reason():
    scheduler = make_scheduler(make_reading(ThermalState.CRITICAL))
    decision = scheduler.should_run_task("deploy", 1, 0.0, "critical")
    assert decision.should_run is True
    assert decision.throttle_level == 0.5
    assert "bypassed the threshold fair (1)" in decision.reason


def test_critical_bypass_uses_throttle_critical():
    scheduler = make_scheduler(make_reading(ThermalState.FAIR), throttle_critical=0.3)
    decision = scheduler.should_run_task("deploy", 0, 0.0, "critical")
    assert decision.should_run is True
    assert decision.throttle_level == 0.3


def test_critical_within_threshold_not_bypassed():
    scheduler = make_scheduler(make_reading(ThermalState.FAIR))
    decision = scheduler.should_run_task("deploy", 3, 0.0, "critical")
    assert decision.throttle_level == 0.9
    assert "bypassed" not in decision.reason


def test_custom_throttle_by_state():
    scheduler = make_scheduler(make_reading(ThermalState.SERIOUS), throttle_serious=0.6)
    decision = scheduler.should_run_task("task", 2)
    assert decision.throttle_level == 0.6


# A loaded host: serious, 95 % memory used, pressure critical, CPU load 2 per core. Health 11.7.
LOADED = make_reading(ThermalState.SERIOUS, memory_used_percent=95.0, memory_pressure=MemoryPressure.CRITICAL, cpu_load=2.0)


@pytest.mark.parametrize("priority", ["low", "normal", "high"])
def test_low_health_holds(priority):
    decision = make_scheduler(LOADED).should_run_task("task", 3, 0.0, priority)
    assert decision.should_run is False
    assert "Health score 11.7 is below min_health_score 40" in decision.reason
    assert "memory 95% used" in decision.reason
    assert "pressure critical" in decision.reason


def test_low_health_critical_bypasses():
    decision = make_scheduler(LOADED).should_run_task("task", 3, 0.0, "critical")
    assert decision.should_run is True
    assert decision.throttle_level == 0.5
    assert "bypassed the health check (11.7 < min_health_score 40)" in decision.reason


def test_min_health_boundary_runs():
    # Critical state on a calm host scores 100 - 45 - 10 * 50 / 85, about 49.1.
    reading = make_reading(ThermalState.CRITICAL)
    score = health_score(reading, ThermalState.CRITICAL, ThermalSchedulingConfig())
    at_score = make_scheduler(reading, min_health_score=score).should_run_task("task", 3)
    above_score = make_scheduler(reading, min_health_score=score + 0.1).should_run_task("task", 3)
    assert at_score.should_run is True
    assert above_score.should_run is False


# (memory_available_gib, required GiB, overcommit allowed, {priority: runs}). 12 GiB available
# leaves 10.2 GiB safely available at memory_threshold_percent 85.
MEMORY_CASES = [
    pytest.param(12.0, 8.0, False, {"low": True, "normal": True, "high": True, "critical": True}, id="enough"),
    pytest.param(12.0, 10.2, False, {"low": True, "normal": True, "high": True, "critical": True}, id="exactly-safe"),
    pytest.param(12.0, 11.0, False, {"low": False, "normal": False, "high": False, "critical": False}, id="not-enough"),
    pytest.param(12.0, 11.0, True, {"low": False, "normal": False, "high": False, "critical": True}, id="overcommit"),
    pytest.param(None, 1.0, False, {"low": False, "normal": False, "high": False, "critical": False}, id="unknown"),
    pytest.param(None, 1.0, True, {"low": False, "normal": False, "high": False, "critical": True}, id="unknown-overcommit"),
    pytest.param(None, 0.0, False, {"low": True, "normal": True, "high": True, "critical": True}, id="unknown-none-needed"),
]


@pytest.mark.parametrize(("available", "required", "overcommit", "expected"), MEMORY_CASES)
@pytest.mark.parametrize("priority", ["low", "normal", "high", "critical"])
def test_memory_table(available, required, overcommit, expected, priority):
    reading = make_reading(ThermalState.NOMINAL, memory_available_gib=available)
    scheduler = make_scheduler(reading, allow_memory_overcommit=overcommit)
    decision = scheduler.should_run_task("task", 2, required, priority)
    assert decision.should_run is expected[priority]


def test_memory_shortfall_reason():
    decision = make_scheduler().should_run_task("train", 2, 11.0, "critical")
    assert "needs 11.0 GiB" in decision.reason
    assert "only 10.2 GiB of the 12.0 GiB available" in decision.reason
    assert "memory_threshold_percent 85" in decision.reason


def test_memory_unknown_reason():
    reading = make_reading(memory_available_gib=None)
    decision = make_scheduler(reading).should_run_task("train", 2, 1.0)
    assert "available memory on mac-studio is unknown" in decision.reason
    assert "fix the monitor" in decision.reason


def test_memory_overcommit_reason():
    scheduler = make_scheduler(allow_memory_overcommit=True)
    decision = scheduler.should_run_task("deploy", 2, 11.0, "critical")
    assert "allow_memory_overcommit is on" in decision.reason
    assert "needs 11.0 GiB" in decision.reason


def test_safely_available_headroom():
    config = ThermalSchedulingConfig(memory_threshold_percent=50.0)
    assert safely_available_gib(make_reading(memory_available_gib=20.0), config) == pytest.approx(10.0)
    assert safely_available_gib(make_reading(memory_available_gib=None), config) is None


@pytest.mark.parametrize(
    "figures",
    [
        pytest.param({"memory_used_percent": 90.0}, id="memory-above-threshold"),
        pytest.param({"memory_pressure": MemoryPressure.WARNING}, id="pressure-warning"),
        pytest.param({"memory_pressure": MemoryPressure.CRITICAL}, id="pressure-critical"),
    ],
)
def test_low_priority_yields_to_memory_load(figures):
    scheduler = make_scheduler(make_reading(ThermalState.NOMINAL, **figures))
    low = scheduler.should_run_task("task", 2, 0.0, "low")
    normal = scheduler.should_run_task("task", 2, 0.0, "normal")
    assert low.should_run is False
    assert "low-priority work waits while memory is loaded" in low.reason
    assert normal.should_run is True


def test_empty_tier_pool_holds():
    scheduler = make_scheduler(make_reading(ThermalState.NOMINAL), base_slots_fair=0)
    decision = scheduler.should_run_task("task", 1)
    assert decision.should_run is False
    assert "Tier pool thermal_fair has 0 slots because base_slots_fair is 0" in decision.reason


def test_hold_reason_names_every_problem():
    reading = make_reading(ThermalState.CRITICAL, memory_used_percent=95.0, memory_pressure=MemoryPressure.CRITICAL)
    decision = make_scheduler(reading).should_run_task("train", 1, 16.0, "low")
    assert "needs 16.0 GiB" in decision.reason
    assert "above the task's threshold fair (1)" in decision.reason
    assert "Health score" in decision.reason
    assert "low-priority work waits" in decision.reason
    assert f"Retry in {decision.retry_delay_seconds:.0f} s." in decision.reason


# (health score, priority, expected delay) with the default bounds 30 s and 900 s.
RETRY_CASES = [
    (100.0, "normal", 30.0),
    (0.0, "normal", 900.0),
    (50.0, "normal", 247.5),
    (50.0, "low", 371.25),
    (50.0, "high", 123.75),
    (50.0, "critical", 123.75),
    (100.0, "high", 30.0),
    (0.0, "low", 900.0),
]


@pytest.mark.parametrize(("health", "priority", "expected"), RETRY_CASES)
def test_retry_delay_table(health, priority, expected):
    assert retry_delay(health, priority, ThermalSchedulingConfig()) == pytest.approx(expected)


def test_retry_delay_custom_bounds():
    config = ThermalSchedulingConfig(min_retry_delay_seconds=10, max_retry_delay_seconds=110)
    assert retry_delay(50.0, "normal", config) == pytest.approx(35.0)
    assert retry_delay(0.0, "low", config) == pytest.approx(110.0)


@pytest.mark.parametrize("situation", list(SITUATIONS))
def test_retry_delay_in_decision(situation):
    reading, last_good, state, _ = SITUATIONS[situation]
    config = ThermalSchedulingConfig()
    decision = make_scheduler(reading, last_good=last_good).should_run_task("task", 0)
    expected = retry_delay(health_score(reading, state, config), "normal", config)
    assert decision.retry_delay_seconds == pytest.approx(expected)
    assert config.min_retry_delay_seconds <= decision.retry_delay_seconds <= config.max_retry_delay_seconds


def test_retry_delay_hotter_is_longer():
    delays = [
        make_scheduler(make_reading(state)).should_run_task("task", 3).retry_delay_seconds for state in ThermalState
    ]
    assert delays == sorted(delays)
    assert delays[0] < delays[-1]


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("thermal_threshold", True),
        ("thermal_threshold", 2.0),
        ("thermal_threshold", -1),
        ("thermal_threshold", 4),
        ("thermal_threshold", "2"),
        ("memory_required_gb", -1.0),
        ("memory_required_gb", float("nan")),
        ("memory_required_gb", float("inf")),
        ("memory_required_gb", 4097),
        ("memory_required_gb", "8"),
        ("priority", "urgent"),
        ("priority", ""),
        ("priority", None),
        ("task_id", ""),
        ("task_id", None),
    ],
)
def test_should_run_invalid_argument(argument, value):
    arguments = {"task_id": "task", "thermal_threshold": 2, "memory_required_gb": 0.0, "priority": "normal"}
    arguments[argument] = value
    with pytest.raises(ValueError, match=argument) as error:
        make_scheduler().should_run_task(**arguments)
    assert repr(value) in str(error.value)


def test_threshold_error_names_range():
    with pytest.raises(ValueError, match="integer thermal state 0-3"):
        make_scheduler().should_run_task("task", 5)


def test_decision_frozen():
    decision = make_scheduler().should_run_task("task")
    assert isinstance(decision, SchedulingDecision)
    with pytest.raises(AttributeError):
        decision.should_run = False


def test_same_reading_same_decision():
    reading = make_reading(ThermalState.SERIOUS, memory_pressure=MemoryPressure.WARNING)
    first = make_scheduler().should_run_task("task", 2, 4.0, "high", reading=reading)
    second = make_scheduler().should_run_task("task", 2, 4.0, "high", reading=reading)
    assert first == second


def test_explicit_reading_skips_monitor():
    monitor = FakeMonitor(make_reading(ThermalState.NOMINAL))
    scheduler = ThermalAwareScheduler(ThermalSchedulingConfig(), monitor)
    decision = scheduler.should_run_task("task", 1, reading=make_reading(ThermalState.CRITICAL))
    assert monitor.calls == 0
    assert decision.thermal_state == ThermalState.CRITICAL


def test_remembers_last_good():
    good = make_reading(ThermalState.FAIR, taken_at=TAKEN_AT)
    failed = make_reading(None, taken_at=TAKEN_AT + timedelta(seconds=100))
    scheduler = ThermalAwareScheduler(ThermalSchedulingConfig(), FakeMonitor(good, failed))

    first = scheduler.should_run_task("task", 1)
    second = scheduler.should_run_task("task", 1)

    assert first.observation_basis == "sensor"
    assert second.observation_basis == "last good value, 100 s old"
    assert second.thermal_state == ThermalState.FAIR
    assert scheduler.last_good is good


def test_older_reading_keeps_newer_last_good():
    newer = make_reading(ThermalState.FAIR, taken_at=TAKEN_AT)
    older = make_reading(ThermalState.NOMINAL, taken_at=TAKEN_AT - timedelta(seconds=30))
    scheduler = make_scheduler(newer)
    scheduler.should_run_task("task")
    scheduler.should_run_task("task", reading=older)
    assert scheduler.last_good is newer


def test_last_good_without_state_rejected():
    with pytest.raises(ValueError, match="last_good"):
        make_scheduler(last_good=make_reading(None))


def test_broken_monitor_safe_state(caplog):
    scheduler = ThermalAwareScheduler(ThermalSchedulingConfig(), BrokenMonitor())
    with caplog.at_level(logging.WARNING, logger="thermal_pools.scheduler"):
        decision = scheduler.should_run_task("task", 1, 0.0, "high")
    assert decision.should_run is False
    assert decision.thermal_state == ThermalState.SERIOUS
    assert decision.observation_basis.startswith("safe state, sensor failed: monitor read failed: sysctl")
    assert "failed to read" in caplog.text


def test_broken_monitor_memory_unknown():
    scheduler = ThermalAwareScheduler(ThermalSchedulingConfig(), BrokenMonitor())
    decision = scheduler.should_run_task("task", 3, 1.0, "critical")
    assert decision.should_run is False
    assert "unknown" in decision.reason


def test_default_config_from_environment(monkeypatch):
    monkeypatch.setenv("AIRFLOW__THERMAL_POOLS__MIN_HEALTH_SCORE", "55")
    scheduler = ThermalAwareScheduler(monitor=FakeMonitor(make_reading()))
    assert scheduler.config.min_health_score == 55.0


def test_to_xcom_plain_json():
    reading = make_reading(ThermalState.SERIOUS, taken_at=datetime(2025, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))))
    decision = make_scheduler(reading).should_run_task("train", 2, 4.0, "high")

    data = decision.to_xcom()

    assert json.loads(json.dumps(data)) == data
    assert data["thermal_state"] == 2
    assert type(data["thermal_state"]) is int
    assert data["throttle_level"] == 0.7
    assert data["health_score"] == round(decision.health_score, 1)
    assert data["memory_available_gib"] == 12.0
    assert data["host"] == "mac-studio"
    assert data["taken_at"] == "2025-03-01T12:00:00+00:00"
    assert data["should_run"] is True
    assert data["reason"] == decision.reason
    assert data["task_id"] == "train"


# (state, figures, expected batch_size, workers, memory_gb) for the training profile: 32, 4, 16 GiB.
SUGGESTIONS = [
    (ThermalState.NOMINAL, {}, 32, 4, 16.0),
    (ThermalState.FAIR, {}, 28, 3, 14.4),
    (ThermalState.SERIOUS, {}, 22, 2, 11.2),
    (ThermalState.CRITICAL, {}, 16, 2, 8.0),
    (ThermalState.NOMINAL, {"memory_pressure": MemoryPressure.WARNING}, 24, 3, 12.0),
    (ThermalState.NOMINAL, {"memory_pressure": MemoryPressure.CRITICAL}, 16, 2, 8.0),
    (ThermalState.NOMINAL, {"low_power_mode": True}, 24, 3, 12.0),
    (ThermalState.CRITICAL, {"memory_pressure": MemoryPressure.CRITICAL, "on_battery": True}, 6, 1, 3.0),
]


@pytest.mark.parametrize(("state", "figures", "batch_size", "workers", "memory_gb"), SUGGESTIONS)
def test_suggest_training_table(state, figures, batch_size, workers, memory_gb):
    suggestion = make_scheduler(make_reading(state, **figures)).suggest_task_configuration("training")
    assert suggestion["config"]["batch_size"] == batch_size
    assert suggestion["config"]["workers"] == workers
    assert suggestion["config"]["memory_gb"] == pytest.approx(memory_gb)
    assert suggestion["thermal_state"] == int(state)
    assert suggestion["throttle_level"] == ThermalSchedulingConfig().throttle(state)
    assert suggestion["profile"] == "training"


@pytest.mark.parametrize("situation", ["no-sensor", "failed"])
def test_suggest_unknown_state(situation):
    reading, _, state, basis = SITUATIONS[situation]
    suggestion = make_scheduler(reading).suggest_task_configuration("inference")
    assert suggestion["thermal_state"] == int(state)
    assert suggestion["observation_basis"].startswith(basis)


def test_suggest_keeps_one_worker():
    reading = make_reading(ThermalState.CRITICAL, memory_pressure=MemoryPressure.CRITICAL, low_power_mode=True)
    suggestion = make_scheduler(reading).suggest_task_configuration("deployment")
    assert suggestion["config"]["batch_size"] == 1
    assert suggestion["config"]["workers"] == 1


def test_suggest_unknown_profile():
    with pytest.raises(ValueError, match="unknown profile 'trainng'"):
        make_scheduler().suggest_task_configuration("trainng")


def test_stats_calm_host():
    stats = make_scheduler(make_reading(ThermalState.NOMINAL)).get_scheduling_stats()
    assert stats["thermal_state"] == 0
    assert stats["health_score"] == pytest.approx(94.1)
    assert stats["memory_utilization"] == 50.0
    assert stats["can_schedule_low"] is True
    assert stats["can_schedule_normal"] is True
    assert stats["can_schedule_high"] is True
    assert stats["can_schedule_critical"] is True
    assert stats["recommendations"] == ["No action needed: the host is nominal with health score 94.1."]
    assert json.loads(json.dumps(stats)) == stats


def test_stats_critical_host():
    stats = make_scheduler(make_reading(ThermalState.CRITICAL)).get_scheduling_stats()
    assert stats["can_schedule_normal"] is False
    assert stats["can_schedule_high"] is False
    assert stats["can_schedule_critical"] is True
    assert any("The host is critical (3)" in line for line in stats["recommendations"])


def test_stats_recommendations_loaded():
    reading = make_reading(
        None,
        memory_used_percent=95.0,
        memory_pressure=MemoryPressure.CRITICAL,
        cpu_load=2.0,
        low_power_mode=True,
    )
    advice = " ".join(make_scheduler(reading).get_scheduling_stats()["recommendations"])
    assert "The thermal sensor failed (powermetrics timed out)" in advice
    assert "Memory use 95% is above memory_threshold_percent 85" in advice
    assert "Memory pressure is critical" in advice
    assert "CPU load is 2.00 per core" in advice
    assert "Low-power mode is on" in advice
    assert "below min_health_score 40" in advice


def test_stats_memory_unknown_advice():
    reading = make_reading(memory_used_percent=None, memory_available_gib=None)
    stats = make_scheduler(reading).get_scheduling_stats()
    assert stats["memory_utilization"] is None
    assert any("Available memory is unknown" in line for line in stats["recommendations"])


def test_default_monitor_reads_this_host():
    # The real monitor for this platform: on a Linux host without a thermal sensor the state
    # comes from no_sensor_state, on a Mac from the sensor.
    scheduler = ThermalAwareScheduler(ThermalSchedulingConfig())
    decision = scheduler.should_run_task("smoke", 3, 0.0, "normal")
    assert decision.reading.host
    assert decision.observation_basis in ("sensor", NO_SENSOR)
    assert 0.0 <= decision.health_score <= 100.0
    assert decision.reading.memory_available_gib is not None
