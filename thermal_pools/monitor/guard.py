"""A monitor wrapper that never raises, so a broken sensor cannot stop the scheduler.

A failed read becomes a reading with an unknown thermal state and the reason
``sensor failed: <cause>``. :func:`thermal_pools.tiers.resolve_state` then keeps the last good
value for a grace period and falls back to the safe state after it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import queue
import socket
import threading
from datetime import datetime
from typing import Any

from thermal_pools.monitor.base import Monitor
from thermal_pools.reading import MemoryPressure, Reading, ThermalState, utc_now

log = logging.getLogger(__name__)

SENSOR_FAILED = "sensor failed"

# Validity check per figure. A value that fails its check is dropped from the reading.
FIGURE_CHECKS = {
    "memory_used_percent": lambda v: isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v <= 100,
    "memory_available_gib": lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v >= 0,
    "cpu_load": lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v >= 0,
    "memory_pressure": lambda v: isinstance(v, MemoryPressure),
    "low_power_mode": lambda v: isinstance(v, bool),
    "on_battery": lambda v: isinstance(v, bool),
}


class _Attempt:
    """One inner read: its result or error, and an event set when it ends."""

    def __init__(self) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()


class _ReadWorker:
    """A long-lived daemon thread that runs inner reads, so a hung sensor cannot block the caller.

    One thread serves every read, because starting a thread per read cost milliseconds at the
    99th percentile on a loaded 2-core machine. A worker belongs to the process that started it,
    because a forked child (an Airflow task process) does not inherit the thread.
    """

    def __init__(self, monitor: Monitor) -> None:
        self.pid = os.getpid()
        self._monitor = monitor
        self._requests: queue.SimpleQueue[_Attempt] = queue.SimpleQueue()
        self.thread = threading.Thread(
            target=self._serve, name=f"thermal-pools-read-{type(monitor).__name__}", daemon=True
        )
        self.thread.start()

    def submit(self) -> _Attempt:
        attempt = _Attempt()
        self._requests.put(attempt)
        return attempt

    def _serve(self) -> None:
        while True:
            attempt = self._requests.get()
            try:
                attempt.result = self._monitor.read()
            except BaseException as error:  # noqa: BLE001 - reported to the caller as the failure cause
                attempt.error = error
            finally:
                attempt.done.set()


class GuardedMonitor:
    """Wraps a monitor so that ``read()`` never raises and returns within about ``timeout_seconds``.

    Only ``KeyboardInterrupt``, ``SystemExit`` and other non-``Exception`` errors propagate.
    Reads are serialized, so a caller that arrives during another caller's read waits for it first.

    A read that raises, takes longer than ``timeout_seconds`` or returns something other than a
    valid :class:`~thermal_pools.reading.Reading` yields a reading whose thermal state is
    unknown with the reason ``sensor failed: <cause>``. Figures of the inner reading that pass
    their checks are kept, and the rest are dropped.

    Inner reads run on one long-lived daemon thread. A hung read is left running there, and until
    it returns, later reads fail at once with the cause "previous read still hung".

    Each distinct cause is logged once at WARNING, and the recovery once at INFO with the number
    of failed reads. After a recovery, the next failure is logged again.
    """

    def __init__(self, inner: Monitor, *, timeout_seconds: float = 2.0) -> None:
        if isinstance(timeout_seconds, bool) or not isinstance(timeout_seconds, (int, float)) or not (
            0 < timeout_seconds < math.inf
        ):
            raise ValueError(f"invalid timeout_seconds {timeout_seconds!r}: expected a number of seconds > 0")
        self.inner = inner
        self.timeout_seconds = float(timeout_seconds)
        self._hung: _Attempt | None = None
        self._worker: _ReadWorker | None = None
        self._logged_causes: set[str] = set()
        self._failed_reads = 0
        self._lock = threading.Lock()

    @property
    def host(self) -> str:
        return getattr(self.inner, "host", None) or socket.gethostname()

    def read(self) -> Reading:
        # Serialized so that concurrent callers never start two inner reads at once.
        with self._lock:
            try:
                return self._guarded_read()
            except Exception as error:  # noqa: BLE001 - the last resort behind the promise never to raise
                log.exception("Thermal monitor guard failed on %r", self.inner)
                reason = f"{SENSOR_FAILED}: guard failed: {type(error).__name__}: {error}"
                return Reading(host=socket.gethostname(), taken_at=utc_now(), thermal_reason=reason)

    def _guarded_read(self) -> Reading:
        reading, changes, cause = self._read_inner()
        if cause is None:
            try:
                valid = dataclasses.replace(reading, **changes) if changes else reading
            except (TypeError, ValueError) as error:
                reading, changes, cause = None, {}, f"invalid reading: {error}"
            else:
                self._note_success()
                return valid

        self._note_failure(cause)
        return self._failed(reading, changes, cause)

    def _read_inner(self) -> tuple[Reading | None, dict[str, Any], str | None]:
        """Return the inner reading, the changes that make it valid, and the failure cause if any."""
        if self._worker is not None and self._worker.pid != os.getpid():
            # Forked since the worker started: its thread does not exist in this process.
            self._worker = None
            self._hung = None
        if self._hung is not None:
            if not self._hung.done.is_set():
                return None, {}, "previous read still hung"
            self._hung = None

        if self._worker is None:
            try:
                self._worker = _ReadWorker(self.inner)
            except RuntimeError as error:
                return None, {}, f"cannot start a read thread: {error}"
        attempt = self._worker.submit()
        if not attempt.done.wait(self.timeout_seconds):
            self._hung = attempt
            return None, {}, f"read timed out after {self.timeout_seconds:g} s"
        if attempt.error is not None:
            return None, {}, f"{type(attempt.error).__name__}: {attempt.error}"
        return _validate(attempt.result)

    def _failed(self, reading: Reading | None, changes: dict[str, Any], cause: str) -> Reading:
        reason = f"{SENSOR_FAILED}: {cause}"
        if reading is None:
            return Reading(host=self.host, taken_at=utc_now(), thermal_reason=reason, raw={"error": cause})

        untrusted = set(changes) | {"thermal_state"}
        fields = {
            **changes,
            "thermal_state": None,
            "thermal_reason": reason,
            "sources": {name: source for name, source in reading.sources.items() if name not in untrusted},
            "raw": {**reading.raw, "error": cause},
        }
        try:
            return dataclasses.replace(reading, **fields)
        except (TypeError, ValueError):
            # A reading too broken to copy; report the failure without its figures.
            return self._failed(None, {}, cause)

    def _note_failure(self, cause: str) -> None:
        self._failed_reads += 1
        if cause not in self._logged_causes:
            self._logged_causes.add(cause)
            log.warning("Thermal monitor %s failed on host %s: %s", type(self.inner).__name__, self.host, cause)

    def _note_success(self) -> None:
        if self._failed_reads:
            log.info(
                "Thermal monitor %s on host %s recovered after %d failed read(s)",
                type(self.inner).__name__,
                self.host,
                self._failed_reads,
            )
        self._failed_reads = 0
        self._logged_causes.clear()


def _validate(result: Any) -> tuple[Reading | None, dict[str, Any], str | None]:
    """Check an inner result.

    Return the reading (``None`` if nothing of it can be trusted), the field changes that drop
    its invalid figures or convert a plain integer state, and the cause of any fault.
    """
    if not isinstance(result, Reading):
        return None, {}, f"monitor returned {type(result).__name__} instead of a Reading"
    if not isinstance(result.taken_at, datetime) or result.taken_at.tzinfo is None:
        return None, {}, f"reading has an invalid taken_at {result.taken_at!r}"
    if not isinstance(result.host, str) or not result.host:
        return None, {}, f"reading has an invalid host {result.host!r}"
    if not isinstance(result.sources, dict) or not isinstance(result.raw, dict):
        return None, {}, "reading has sources or raw that are not dicts"

    faults: list[str] = []
    changes: dict[str, Any] = {}
    for name, check in FIGURE_CHECKS.items():
        value = getattr(result, name)
        if value is not None and not check(value):
            faults.append(f"invalid {name} {value!r}")
            changes[name] = None

    state = result.thermal_state
    if state is not None:
        if isinstance(state, bool) or not isinstance(state, int) or not 0 <= state <= 3:
            faults.append(f"invalid thermal_state {state!r}")
        elif not isinstance(state, ThermalState):
            changes["thermal_state"] = ThermalState(state)
    elif not isinstance(result.thermal_reason, str) or not result.thermal_reason:
        faults.append("unknown thermal_state without a reason")

    return result, changes, ("; ".join(faults) if faults else None)
