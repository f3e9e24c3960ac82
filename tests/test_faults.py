"""Faults without a running Airflow: failing monitors, stale and unreadable recorded readings.

Each source below fails the way a real sensor can: it raises, hangs or returns nonsense. The
policy reads it through :class:`GuardedMonitor`, as ``create_monitor`` builds it, and must fall
back to the last good value for the grace period, then to the safe state, clear no task below
critical priority on a failed read, and log each cause once rather than once per read. A recorded
reading of another host counts as unknown once it is older than ``stale_after_seconds``, and so
does one the readings table cannot return.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from thermal_pools.config import ThermalSchedulingConfig
from thermal_pools.monitor import GuardedMonitor
from thermal_pools.reading import MemoryPressure, Reading, ThermalState, utc_now
from thermal_pools.scheduler import ThermalAwareScheduler
from thermal_pools.sensors.clearance_trigger import ClearanceCheck
from thermal_pools.store import ReadingStore

GUARD_LOGGER = "thermal_pools.monitor.guard"
SCHEDULER_LOGGER = "thermal_pools.scheduler"
READS = 12


def calm_reading(state: ThermalState | None = ThermalState.FAIR, age_seconds: float = 0.0) -> Reading:
    return Reading(
        host="faulty-host",
        taken_at=utc_now() - timedelta(seconds=age_seconds),
        thermal_state=state,
        thermal_reason="" if state is not None else "replayed dropout",
        memory_used_percent=40.0,
        memory_available_gib=24.0,
        memory_pressure=MemoryPressure.NORMAL,
        cpu_load=0.2,
        low_power_mode=False,
        on_battery=False,
    )


class RaisingSource:
    host = "faulty-host"

    def read(self) -> Reading:
        raise OSError("SMC key TC0P unreadable")


class HangingSource:
    """A read that blocks until ``release`` is set, as a stuck system call does."""

    host = "faulty-host"

    def __init__(self) -> None:
        self.release = threading.Event()

    def read(self) -> Reading:
        self.release.wait(30)
        return calm_reading(ThermalState.NOMINAL)


class NonsenseSource:
    host = "faulty-host"

    def read(self) -> Any:
        reading = calm_reading(ThermalState.NOMINAL)
        # A thermal state off Apple's 0-3 scale, which Reading's own checks do not catch.
        object.__setattr__(reading, "thermal_state", 7)
        return reading


@pytest.fixture(params=["raises", "hangs", "nonsense"])
def failing_source(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "raises":
        yield RaisingSource()
    elif request.param == "hangs":
        source = HangingSource()
        yield source
        source.release.set()
    else:
        yield NonsenseSource()


def scheduler_for(source: Any, last_good: Reading | None) -> ThermalAwareScheduler:
    # A short timeout keeps the hanging case fast, and the guard's contract is the same at any value.
    return ThermalAwareScheduler(ThermalSchedulingConfig(), GuardedMonitor(source, timeout_seconds=0.05), last_good=last_good)


def test_failed_read_within_grace_keeps_last_good(failing_source):
    # Last good value: fair, 100 s old, inside the default 300 s grace period.
    scheduler = scheduler_for(failing_source, calm_reading(ThermalState.FAIR, age_seconds=100))

    held = scheduler.should_run_task("nominal_only", thermal_threshold=0)
    cleared = scheduler.should_run_task("fair_ok", thermal_threshold=1)

    assert held.thermal_state == ThermalState.FAIR
    assert held.observation_basis.startswith("last good value")
    assert held.should_run is False
    # The last good value sizes the pools, but a failed read clears no task by itself.
    assert cleared.should_run is False
    assert "sensor read failed" in cleared.reason


def test_failed_read_after_grace_uses_safe_state(failing_source):
    # Last good value: nominal, 400 s old, past the grace period, so the safe state (serious) applies.
    scheduler = scheduler_for(failing_source, calm_reading(ThermalState.NOMINAL, age_seconds=400))

    decisions = {threshold: scheduler.should_run_task(f"t{threshold}", thermal_threshold=threshold) for threshold in range(4)}

    for decision in decisions.values():
        assert decision.thermal_state == ThermalState.SERIOUS
        assert decision.observation_basis.startswith("safe state, sensor failed")
    for decision in decisions.values():
        assert decision.should_run is False, decision.reason


def test_failed_read_clears_no_cooler_task(failing_source):
    # Without a good reading, no priority below critical may start, whatever its threshold.
    scheduler = scheduler_for(failing_source, None)
    for priority in ("low", "normal", "high"):
        for threshold in (0, 1, 2, 3):
            decision = scheduler.should_run_task("cool_work", thermal_threshold=threshold, priority=priority)
            assert decision.should_run is False, (priority, threshold, decision.reason)


def test_failed_read_critical_runs_throttled(failing_source):
    decision = scheduler_for(failing_source, None).should_run_task("urgent", thermal_threshold=0, priority="critical")
    assert decision.should_run is True
    assert decision.throttle_level == 0.5


def guard_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == GUARD_LOGGER and record.levelno == logging.WARNING]


def test_raising_source_logged_once(caplog):
    scheduler = scheduler_for(RaisingSource(), None)
    with caplog.at_level(logging.INFO):
        for _ in range(READS):
            scheduler.should_run_task("task")

    warnings = guard_warnings(caplog)
    assert len(warnings) == 1
    assert "OSError: SMC key TC0P unreadable" in warnings[0]
    assert "faulty-host" in warnings[0]


def test_nonsense_source_logged_once(caplog):
    scheduler = scheduler_for(NonsenseSource(), None)
    with caplog.at_level(logging.INFO):
        for _ in range(READS):
            scheduler.should_run_task("task")

    warnings = guard_warnings(caplog)
    assert len(warnings) == 1
    assert "invalid thermal_state 7" in warnings[0]


def test_hanging_source_logged_once_per_cause(caplog):
    source = HangingSource()
    scheduler = scheduler_for(source, None)
    try:
        with caplog.at_level(logging.INFO):
            for _ in range(READS):
                scheduler.should_run_task("task")
    finally:
        source.release.set()

    # The first read times out, and later reads fail fast while it is still hung: two causes.
    warnings = guard_warnings(caplog)
    assert len(warnings) == 2
    assert "read timed out after 0.05 s" in warnings[0]
    assert "previous read still hung" in warnings[1]


def test_unguarded_raising_monitor_logged_once(caplog):
    # A monitor passed in by hand, without the guard: the scheduler still logs the cause only once.
    scheduler = ThermalAwareScheduler(ThermalSchedulingConfig(), RaisingSource())
    with caplog.at_level(logging.WARNING, logger=SCHEDULER_LOGGER):
        decisions = [scheduler.should_run_task("task", thermal_threshold=1) for _ in range(READS)]

    failures = [record for record in caplog.records if record.name == SCHEDULER_LOGGER and "failed to read" in record.getMessage()]
    assert len(failures) == 1
    assert "SMC key TC0P unreadable" in failures[0].getMessage()
    assert not any(decision.should_run for decision in decisions)


def test_unguarded_nonsense_monitor_safe_state():
    scheduler = ThermalAwareScheduler(ThermalSchedulingConfig(), NonsenseSource())
    decision = scheduler.should_run_task("task", thermal_threshold=1)
    assert decision.should_run is False
    assert decision.thermal_state == ThermalState.SERIOUS


def test_recovery_then_new_failure_logged_again(caplog):
    class FlakySource:
        host = "faulty-host"
        failing = True

        def read(self) -> Reading:
            if self.failing:
                raise OSError("SMC key TC0P unreadable")
            return calm_reading(ThermalState.NOMINAL)

    source = FlakySource()
    scheduler = scheduler_for(source, None)
    with caplog.at_level(logging.INFO):
        for failing in (True, True, False, False, True, True):
            source.failing = failing
            scheduler.should_run_task("task")

    messages = [record.getMessage() for record in caplog.records if record.name == GUARD_LOGGER]
    assert sum("failed on host" in message for message in messages) == 2
    assert sum("recovered after 2 failed read(s)" in message for message in messages) == 1


# -- stale and unreadable recorded readings --------------------------------------------------------


def record_step(store: ReadingStore, state: ThermalState, age_seconds: float) -> None:
    reading = dataclasses.replace(calm_reading(state, age_seconds=age_seconds), host="remote-mac")
    store.record(
        reading, observed_state=state, planned_state=state, basis="sensor", throttle=1.0, health_score=90.0, pools={}
    )


def remote_check(store: ReadingStore) -> ClearanceCheck:
    return ClearanceCheck("cool_work", thermal_threshold=0, target_host="remote-mac", config=ThermalSchedulingConfig(), store=store)


def test_fresh_recorded_reading_used(tmp_path):
    store = ReadingStore(f"sqlite:///{tmp_path / 'readings.db'}")
    # 10 s inside the default stale_after_seconds of 180 s.
    record_step(store, ThermalState.NOMINAL, age_seconds=170)
    decision = remote_check(store).decide()
    assert decision.observation_basis == "sensor"
    assert decision.should_run is True


def test_stale_recorded_reading_unknown(tmp_path):
    store = ReadingStore(f"sqlite:///{tmp_path / 'readings.db'}")
    # 10 s past stale_after_seconds: the nominal value must not clear cool work any more.
    record_step(store, ThermalState.NOMINAL, age_seconds=190)
    decision = remote_check(store).decide()
    assert decision.should_run is False
    assert decision.thermal_state == ThermalState.SERIOUS
    assert "older than stale_after_seconds 180" in decision.observation_basis


def test_locked_readings_table_holds_remote_task(tmp_path):
    path = tmp_path / "readings.db"
    url = f"sqlite:///{path}"
    store = ReadingStore(url, engine=sa.create_engine(url, connect_args={"timeout": 0.2}))
    record_step(store, ThermalState.NOMINAL, age_seconds=5)

    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        decision = remote_check(store).decide()
    finally:
        locker.execute("ROLLBACK")
        locker.close()

    assert decision.should_run is False
    assert decision.thermal_state == ThermalState.SERIOUS
    assert "database is locked" in decision.observation_basis
