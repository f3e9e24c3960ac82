"""GuardedMonitor: failures, hangs and nonsense become unknown readings, logged once per cause."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import pytest

from thermal_pools.config import ThermalSchedulingConfig
from thermal_pools.monitor import GuardedMonitor, HostMonitor, create_monitor
from thermal_pools.reading import MemoryPressure, Reading, ThermalState, utc_now

LOGGER = "thermal_pools.monitor.guard"


def good_reading(**changes: Any) -> Reading:
    values: dict[str, Any] = {
        "host": "inner-host",
        "taken_at": utc_now(),
        "thermal_state": ThermalState.FAIR,
        "memory_used_percent": 55.0,
        "memory_available_gib": 6.5,
        "memory_pressure": MemoryPressure.NORMAL,
        "cpu_load": 0.4,
        "sources": {"thermal_state": "sensor", "cpu_load": "os.getloadavg", "memory_used_percent": "psutil"},
    }
    values.update(changes)
    return Reading(**values)


def corrupted(**figures: Any) -> Reading:
    """A reading with figures that Reading itself would reject, as a buggy monitor could build."""
    reading = good_reading()
    for name, value in figures.items():
        object.__setattr__(reading, name, value)
    return reading


class ScriptedMonitor:
    """A monitor whose reads run the next callable of a script (the last one repeats)."""

    host = "inner-host"

    def __init__(self, *steps: Callable[[], Any]) -> None:
        self.steps = list(steps)
        self.calls = 0

    def read(self) -> Any:
        step = self.steps[min(self.calls, len(self.steps) - 1)]
        self.calls += 1
        return step()


def raising(error: BaseException) -> Callable[[], Any]:
    def step() -> Any:
        raise error

    return step


def returning(value: Any) -> Callable[[], Any]:
    return lambda: value


def assert_failed(reading: Reading, cause: str) -> None:
    assert isinstance(reading, Reading)
    assert reading.thermal_state is None
    assert reading.thermal_reason.startswith("sensor failed: ")
    assert cause in reading.thermal_reason


# -- failures --------------------------------------------------------------------------------


def test_good_reading_passes_unchanged() -> None:
    reading = good_reading()

    assert GuardedMonitor(ScriptedMonitor(returning(reading))).read() is reading


def test_exception_becomes_unknown() -> None:
    reading = GuardedMonitor(ScriptedMonitor(raising(RuntimeError("bus error")))).read()

    assert_failed(reading, "RuntimeError: bus error")
    assert reading.host == "inner-host"
    assert reading.memory_used_percent is None
    assert reading.cpu_load is None
    assert reading.sources == {}


def test_base_exception_becomes_unknown() -> None:
    reading = GuardedMonitor(ScriptedMonitor(raising(KeyboardInterrupt()))).read()

    assert_failed(reading, "KeyboardInterrupt")


@pytest.mark.parametrize("result", [None, "nominal", 2, {"thermal_state": 0}])
def test_not_a_reading(result: Any) -> None:
    reading = GuardedMonitor(ScriptedMonitor(returning(result))).read()

    assert_failed(reading, f"returned {type(result).__name__} instead of a Reading")


@pytest.mark.parametrize("state", [7, -1, 2.5, "serious", True])
def test_state_out_of_range(state: Any) -> None:
    reading = GuardedMonitor(ScriptedMonitor(returning(good_reading(thermal_state=state)))).read()

    assert_failed(reading, f"invalid thermal_state {state!r}")
    assert reading.memory_used_percent == 55.0
    assert "thermal_state" not in reading.sources
    assert reading.sources["cpu_load"] == "os.getloadavg"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("cpu_load", float("nan")),
        ("cpu_load", -0.5),
        ("memory_used_percent", 130.0),
        ("memory_available_gib", float("inf")),
        ("memory_pressure", 5),
        ("on_battery", "yes"),
    ],
)
def test_nonsense_figure_dropped(name: str, value: Any) -> None:
    reading = GuardedMonitor(ScriptedMonitor(returning(corrupted(**{name: value})))).read()

    assert_failed(reading, f"invalid {name}")
    assert getattr(reading, name) is None
    assert name not in reading.sources
    assert reading.memory_available_gib == (6.5 if name != "memory_available_gib" else None)


def test_unknown_state_without_reason() -> None:
    reading = GuardedMonitor(ScriptedMonitor(returning(corrupted(thermal_state=None, thermal_reason="")))).read()

    assert_failed(reading, "without a reason")


def test_naive_taken_at() -> None:
    reading = GuardedMonitor(ScriptedMonitor(returning(corrupted(taken_at=utc_now().replace(tzinfo=None))))).read()

    assert_failed(reading, "invalid taken_at")
    assert reading.taken_at.tzinfo is not None
    assert reading.memory_used_percent is None


def test_plain_int_state_converted() -> None:
    reading = GuardedMonitor(ScriptedMonitor(returning(good_reading(thermal_state=2)))).read()

    assert reading.thermal_state is ThermalState.SERIOUS
    assert reading.thermal_reason == ""


def test_unknown_state_with_reason_passes() -> None:
    inner = good_reading(thermal_state=None, thermal_reason="no sensor")

    assert GuardedMonitor(ScriptedMonitor(returning(inner))).read() is inner


# -- hangs -----------------------------------------------------------------------------------


def test_hung_read_times_out_then_recovers() -> None:
    release = threading.Event()
    healthy = good_reading()
    inner = ScriptedMonitor(lambda: release.wait(30) and healthy, returning(healthy))
    monitor = GuardedMonitor(inner, timeout_seconds=0.05)

    first = monitor.read()
    second = monitor.read()

    assert_failed(first, "read timed out after 0.05 s")
    assert_failed(second, "previous read still hung")
    assert inner.calls == 1
    assert monitor._worker.thread.daemon

    release.set()
    assert monitor._hung.done.wait(5)
    third = monitor.read()

    assert third is healthy
    assert inner.calls == 2


def test_broken_inner_host_still_returns() -> None:
    class BrokenHost(ScriptedMonitor):
        @property
        def host(self) -> str:
            raise RuntimeError("host lookup failed")

    reading = GuardedMonitor(BrokenHost(raising(OSError("sensor gone")))).read()

    assert_failed(reading, "guard failed: RuntimeError: host lookup failed")


def test_invalid_timeout() -> None:
    for timeout in (0, -1, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="invalid timeout_seconds"):
            GuardedMonitor(ScriptedMonitor(returning(None)), timeout_seconds=timeout)


# -- logging ---------------------------------------------------------------------------------


def test_each_cause_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    inner = ScriptedMonitor(
        raising(OSError("sensor gone")),
        raising(OSError("sensor gone")),
        raising(OSError("sensor gone")),
        raising(ValueError("garbage")),
        raising(OSError("sensor gone")),
        returning(good_reading()),
    )
    monitor = GuardedMonitor(inner)

    for _ in range(7):
        monitor.read()

    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    infos = [record.getMessage() for record in caplog.records if record.levelno == logging.INFO]
    assert len(warnings) == 2
    assert "OSError: sensor gone" in warnings[0]
    assert "inner-host" in warnings[0]
    assert "ValueError: garbage" in warnings[1]
    assert len(infos) == 1
    assert "recovered after 5 failed read(s)" in infos[0]


def test_failure_after_recovery_logged_again(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    inner = ScriptedMonitor(
        raising(OSError("sensor gone")),
        returning(good_reading()),
        raising(OSError("sensor gone")),
    )
    monitor = GuardedMonitor(inner)

    for _ in range(4):
        monitor.read()

    assert len([record for record in caplog.records if record.levelno == logging.WARNING]) == 2


# -- create_monitor --------------------------------------------------------------------------


def test_create_monitor_host() -> None:
    monitor = create_monitor(ThermalSchedulingConfig(monitor="host"))

    assert isinstance(monitor, GuardedMonitor)
    assert isinstance(monitor.inner, HostMonitor)
    assert isinstance(monitor.read(), Reading)


def test_reads_share_one_worker_thread() -> None:
    healthy = good_reading()
    monitor = GuardedMonitor(ScriptedMonitor(returning(healthy), returning(healthy), returning(healthy)))
    before = threading.active_count()

    for _ in range(3):
        assert monitor.read() is healthy

    assert threading.active_count() == before + 1
    assert monitor._worker.thread.is_alive()


def test_read_after_fork_starts_new_worker() -> None:
    healthy = good_reading()
    monitor = GuardedMonitor(ScriptedMonitor(returning(healthy)))
    assert monitor.read() is healthy

    # A forked child, like an Airflow task process, has no copy of the parent's worker thread.
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        state = monitor.read().thermal_state
        os.write(writer, str(int(state)).encode() if state is not None else b"unknown")
        os._exit(0)
    os.close(writer)
    _, status = os.waitpid(pid, 0)
    child_state = os.read(reader, 16).decode()
    os.close(reader)

    assert os.waitstatus_to_exitcode(status) == 0
    assert child_state == str(int(ThermalState.FAIR))
