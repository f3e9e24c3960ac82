"""Throttle helpers: scaled sizes, the duty-cycle pacer and throttle_for."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow.sdk import DAG, task
from tests.airflow_helpers import write_trace
from thermal_pools.monitor import ReplayMonitor
from thermal_pools.sensors import ThermalClearanceSensor
from thermal_pools.throttle import DutyCyclePacer, ThrottleContext, scaled_batch_size, scaled_workers, throttle_for


@pytest.fixture
def replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ReplayMonitor:
    """A stepped trace (rows: nominal, fair, serious, critical, failed) that load_config() plays."""
    trace = write_trace(tmp_path / "host.jsonl", [0, 1, 2, 3, None], host="replayed-host")
    monkeypatch.setenv("AIRFLOW__THERMAL_POOLS__MONITOR", "replay")
    monkeypatch.setenv("AIRFLOW__THERMAL_POOLS__REPLAY_TRACE", str(trace))
    monkeypatch.setenv("AIRFLOW__THERMAL_POOLS__READINGS_URL", f"sqlite:///{tmp_path / 'readings.db'}")
    return ReplayMonitor(trace)


class FakeClock:
    """Monotonic time that moves only when work or sleep says so."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def work(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeTaskInstance:
    """The two task-instance members throttle_for uses: task_id, task and xcom_pull."""

    def __init__(self, task_id: str, values: dict[str, Any], task: Any = None) -> None:
        self.task_id = task_id
        self.task = task
        self.values = values
        self.pulled: list[str] = []

    def xcom_pull(self, task_ids: str) -> Any:
        self.pulled.append(task_ids)
        return self.values.get(task_ids)


@pytest.mark.parametrize(
    ("base", "level", "expected"),
    [(32, 1.0, 32), (32, 0.9, 28), (32, 0.7, 22), (32, 0.5, 16), (10, 0.7, 7), (1, 0.5, 1), (3, 0.25, 1)],
)
def test_scaled_batch_size_table(base: int, level: float, expected: int) -> None:
    assert scaled_batch_size(base, level) == expected


@pytest.mark.parametrize(("base", "level"), [(0, 0.5), (-4, 0.5), (True, 0.5), (8.0, 0.5), (8, 0), (8, 1.5), (8, True)])
def test_scaled_batch_size_rejects_invalid(base: Any, level: Any) -> None:
    with pytest.raises(ValueError, match="invalid"):
        scaled_batch_size(base, level)


@given(base=st.integers(min_value=1, max_value=10_000), level=st.floats(min_value=0.01, max_value=1.0))
def test_scaled_workers_bounds(base: int, level: float) -> None:
    workers = scaled_workers(base, level)
    assert 1 <= workers <= base
    assert workers >= min(base, int(base * level))


def test_pacer_keeps_duty_cycle() -> None:
    clock = FakeClock()
    pacer = DutyCyclePacer(0.7, clock=clock, sleep=clock.sleep)
    for _ in range(100):
        clock.work(0.07)
        pacer.pace()

    assert pacer.duty_cycle == pytest.approx(0.7, abs=1e-6)
    assert pacer.idle_seconds == pytest.approx(3.0, abs=1e-6)
    assert len(clock.sleeps) == 100


def test_pacer_full_speed_never_sleeps() -> None:
    clock = FakeClock()
    pacer = DutyCyclePacer(1.0, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        clock.work(0.5)
        pacer.pace()

    assert clock.sleeps == []
    assert pacer.duty_cycle == 1.0


def test_pacer_carries_short_sleeps() -> None:
    clock = FakeClock()
    pacer = DutyCyclePacer(0.5, min_sleep_seconds=0.01, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        clock.work(0.004)
        pacer.pace()

    # Each step owes 4 ms, so the pacer sleeps once every third step, 12 ms at a time.
    assert clock.sleeps == pytest.approx([0.012, 0.012, 0.012])
    assert pacer.busy_seconds == pytest.approx(0.04)


def test_pacer_rejects_invalid_level() -> None:
    with pytest.raises(ValueError, match="invalid throttle level 0"):
        DutyCyclePacer(0)


def test_context_suggest_profile() -> None:
    throttle = ThrottleContext(level=0.7, thermal_state=2, source="test")

    assert throttle.suggest("training") == {"batch_size": 22, "workers": 2}
    assert throttle.suggest("training", batch_size=100) == {"batch_size": 70, "workers": 2}


def test_context_suggest_unknown_profile() -> None:
    throttle = ThrottleContext(level=0.7, thermal_state=2, source="test")

    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        throttle.suggest("huge")


def test_context_from_clearance_without_level() -> None:
    with pytest.raises(ValueError, match="has no throttle_level"):
        ThrottleContext.from_clearance({"thermal_state": 1}, "clearance x")


def test_throttle_for_named_upstream() -> None:
    ti = FakeTaskInstance("train", {"gate": {"throttle_level": 0.5, "thermal_state": 3}})

    throttle = throttle_for({"ti": ti}, upstream_task_id="gate")

    assert throttle.level == 0.5
    assert throttle.thermal_state == 3
    assert throttle.source == "clearance gate"


def test_throttle_for_finds_upstream_sensor(replay: ReplayMonitor) -> None:
    with DAG("throttle_lookup", schedule=None, start_date=datetime.datetime(2026, 1, 1)):
        gate = ThermalClearanceSensor(task_id="thermal_clearance", thermal_threshold=2)

        @task
        def train() -> None:
            pass

        work = train()
        gate >> work
    ti = FakeTaskInstance("train", {"thermal_clearance": {"throttle_level": 0.7, "thermal_state": 2}}, task=work.operator)

    throttle = throttle_for(ti)

    assert ti.pulled == ["thermal_clearance"]
    assert throttle.level == 0.7


def test_throttle_for_live_fallback(replay: ReplayMonitor) -> None:
    replay.seek(2)
    ti = FakeTaskInstance("train", {})

    throttle = throttle_for({"ti": ti}, upstream_task_id="thermal_clearance")

    assert throttle.source == "live decision"
    assert throttle.level == 0.7
    assert throttle.thermal_state == 2


def test_throttle_for_rejects_context_without_ti() -> None:
    with pytest.raises(ValueError, match="has no 'ti'"):
        throttle_for({"dag_run": None})
