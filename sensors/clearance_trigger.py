"""Wait in the triggerer until a host is clear for a task, without holding a worker slot.

:class:`ThermalClearanceTrigger` is what a deferrable
:class:`~thermal_pools.sensors.clearance.ThermalClearanceSensor` (and a thermal-aware operator
with ``wait_for_clearance``) defers to. It judges the host the heavy task will run on, the
*target host*:

- When the triggerer runs on the target host (``socket.gethostname()`` equals it), it reads the
  host with the configured monitor, as the sensor does on a worker.
- Otherwise it uses the target host's latest step in the readings table, which that host's
  maintenance DAG writes every minute. A step older than ``stale_after_seconds``, or none at all,
  counts as an unknown thermal state, so the policy applies its safe state.

On clearance the trigger either resumes the deferred task on a worker with the clearance, which
an operator needs to run its work, or, with ``end_task_on_clearance``, ends the task itself with
the clearance as its XCom return value, which is all a sensor has left to do.

Either way :class:`ClearanceCheck` decides with
:meth:`thermal_pools.scheduler.ThermalAwareScheduler.should_run_task`, the policy the tier pools
follow, so a sensor and a pool never disagree about the same reading.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
from collections.abc import AsyncIterator
from datetime import timezone
from typing import Any

from airflow.triggers.base import BaseTrigger, TaskSuccessEvent, TriggerEvent
from sqlalchemy.exc import SQLAlchemyError

from thermal_pools.config import ThermalSchedulingConfig, load_config
from thermal_pools.profiles import DEFAULT_THRESHOLD
from thermal_pools.reading import Reading, utc_now
from thermal_pools.scheduler import SchedulingDecision, ThermalAwareScheduler
from thermal_pools.store import ReadingStore, store_from_config

__all__ = ["ClearanceCheck", "RecordedHostMonitor", "ThermalClearanceTrigger", "clearance_payload"]

log = logging.getLogger(__name__)

# Marks a reading that RecordedHostMonitor made up because the recorded one was missing or stale.
NOT_RECORDED = "not_recorded"


def clearance_payload(decision: SchedulingDecision) -> dict[str, Any]:
    """Return the small plain-JSON dict a clearance sensor pushes as its XCom return value.

    Keys: ``thermal_state`` (0-3), ``throttle_level`` (0-1], ``health_score`` (0-100),
    ``memory_available_gib`` (GiB or ``None``), ``host``, ``taken_at`` (ISO 8601 UTC time of the
    reading), ``observation_basis`` and ``reason``.
    """
    reading = decision.reading
    return {
        "thermal_state": int(decision.thermal_state),
        "throttle_level": decision.throttle_level,
        "health_score": round(decision.health_score, 1),
        "memory_available_gib": (
            None if reading.memory_available_gib is None else round(reading.memory_available_gib, 2)
        ),
        "host": reading.host,
        "taken_at": reading.taken_at.astimezone(timezone.utc).isoformat(),
        "observation_basis": decision.observation_basis,
        "reason": decision.reason,
    }


def describe_reading(reading: Reading) -> str:
    """Summarize a reading in one log line: host, state, memory and load."""
    state = "unknown" if reading.thermal_state is None else f"{reading.thermal_state.label} ({int(reading.thermal_state)})"
    parts = [f"host {reading.host}", f"thermal state {state}"]
    if reading.thermal_state is None:
        parts.append(f"because {reading.thermal_reason}")
    if reading.memory_available_gib is not None:
        parts.append(f"{reading.memory_available_gib:.1f} GiB available")
    if reading.memory_used_percent is not None:
        parts.append(f"memory {reading.memory_used_percent:.0f}% used")
    if reading.cpu_load is not None:
        parts.append(f"CPU load {reading.cpu_load:.2f} per core")
    parts.append(f"taken {reading.taken_at.astimezone(timezone.utc).isoformat()}")
    return ", ".join(parts)


class RecordedHostMonitor:
    """A monitor of another host: its latest step in the readings table.

    ``read()`` returns the recorded reading when it is at most ``stale_after_seconds`` old.
    Otherwise it returns a reading with an unknown thermal state, taken now, whose reason says
    why, and whose ``raw`` contains ``not_recorded: True``. Database errors propagate, so the
    scheduler turns them into an unknown reading too.
    """

    def __init__(self, store: ReadingStore, host: str, stale_after_seconds: float) -> None:
        self.store = store
        self.host = host
        self.stale_after_seconds = stale_after_seconds

    def read(self) -> Reading:
        step = self.store.latest(self.host)
        now = utc_now()
        if step is None:
            reason = f"no reading of host {self.host} recorded in the readings table"
            return Reading(host=self.host, taken_at=now, thermal_reason=reason, raw={NOT_RECORDED: True})

        age = step.reading.age_seconds(now)
        if age > self.stale_after_seconds:
            reason = (
                f"latest recorded reading of host {self.host} is {age:.0f} s old, "
                f"older than stale_after_seconds {self.stale_after_seconds:g}"
            )
            return Reading(host=self.host, taken_at=now, thermal_reason=reason, raw={NOT_RECORDED: True})
        return step.reading


class ClearanceCheck:
    """Decides, each time :meth:`decide` is called, whether ``target_host`` is clear for a task.

    :param task_id: the task the decision is for, named in reasons and logs.
    :param target_host: the host the heavy task will run on; default this host.
    :param config: settings; default :func:`thermal_pools.config.load_config`.
    :param monitor: replaces the monitor chosen by the rules in the module docstring.
    :param store: readings table; default :func:`thermal_pools.store.store_from_config`.

    The check keeps the last good reading between calls. When a reading's thermal state is
    unknown and none is kept, it asks the readings table for the host's last good reading, as
    the maintenance step does, so a failed sensor keeps its last good value for
    ``sensor_grace_period_seconds`` here too.
    """

    def __init__(
        self,
        task_id: str,
        *,
        thermal_threshold: int = DEFAULT_THRESHOLD,
        memory_required_gb: float = 0.0,
        priority: str = "normal",
        target_host: str | None = None,
        config: ThermalSchedulingConfig | None = None,
        monitor: Any = None,
        store: ReadingStore | None = None,
    ) -> None:
        self.task_id = task_id
        self.thermal_threshold = thermal_threshold
        self.memory_required_gb = memory_required_gb
        self.priority = priority
        self.config = config if config is not None else load_config()
        self.target_host = target_host or socket.gethostname()
        self.local = self.target_host == socket.gethostname()
        self._store = store

        if monitor is None and not self.local:
            monitor = RecordedHostMonitor(self.store, self.target_host, self.config.stale_after_seconds)
        # With monitor None the scheduler builds the configured (guarded) monitor of this host.
        self.scheduler = ThermalAwareScheduler(self.config, monitor)

    @property
    def store(self) -> ReadingStore:
        if self._store is None:
            self._store = store_from_config(self.config)
        return self._store

    def _recall_last_good(self, reading: Reading) -> None:
        if reading.thermal_state is not None or self.scheduler.last_good is not None or reading.raw.get(NOT_RECORDED):
            return
        try:
            self.scheduler.last_good = self.store.last_good(reading.host, before=reading.taken_at)
        except SQLAlchemyError as error:
            log.warning("readings table failed to return the last good reading of %s: %s", reading.host, error)

    def decide(self) -> SchedulingDecision:
        """Read the target host and decide by the scheduling policy.

        A failed read becomes an unknown state in the decision, not an exception.
        """
        reading = self.scheduler.read()
        self._recall_last_good(reading)
        return self.scheduler.should_run_task(
            self.task_id,
            self.thermal_threshold,
            self.memory_required_gb,
            self.priority,
            reading=reading,
        )


class ThermalClearanceTrigger(BaseTrigger):
    """Fires once the target host is clear for a task, or once the deadline passes.

    :param task_id: the task waiting for clearance, named in reasons and logs.
    :param thermal_threshold: hottest thermal state (0-3) the task may start in.
    :param memory_required_gb: GiB the task needs; 0 skips the memory check.
    :param priority: low, normal, high or critical.
    :param target_host: the host the task will run on (see the module docstring).
    :param deadline: epoch seconds (UTC) after which the trigger gives up.
    :param poll_interval: seconds between checks.
    :param exponential_backoff: double the interval after each check that keeps the task waiting.
    :param max_poll_interval: longest interval, s, when backing off; ``None`` for no limit
        other than the deadline.
    :param end_task_on_clearance: on clearance, end the task as successful in the triggerer,
        pushing the clearance as its ``return_value`` XCom, instead of resuming it on a worker.

    Events: on clearance, with ``end_task_on_clearance``, the trigger pushes
    :func:`clearance_payload` as the ``return_value`` XCom and yields ``TaskSuccessEvent()``;
    without it, the event ``{"status": "cleared", "clearance": <clearance_payload>,
    "checks": n}``. At the deadline ``{"status": "timeout", "message": ..., "reason": <last hold
    reason>, "checks": n}``, which resumes the task on a worker in both cases.
    """

    def __init__(
        self,
        *,
        task_id: str,
        thermal_threshold: int,
        memory_required_gb: float,
        priority: str,
        target_host: str,
        deadline: float,
        poll_interval: float,
        exponential_backoff: bool = False,
        max_poll_interval: float | None = None,
        end_task_on_clearance: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(poll_interval, (int, float)) or not math.isfinite(poll_interval) or poll_interval <= 0:
            raise ValueError(f"invalid poll_interval {poll_interval!r}: expected a number of seconds > 0")
        if not isinstance(deadline, (int, float)) or not math.isfinite(deadline):
            raise ValueError(f"invalid deadline {deadline!r}: expected epoch seconds")
        if not isinstance(end_task_on_clearance, bool):
            raise ValueError(f"invalid end_task_on_clearance {end_task_on_clearance!r}: expected True or False")
        self.waiting_task_id = task_id
        self.thermal_threshold = thermal_threshold
        self.memory_required_gb = memory_required_gb
        self.priority = priority
        self.target_host = target_host
        self.deadline = float(deadline)
        self.poll_interval = float(poll_interval)
        self.exponential_backoff = exponential_backoff
        self.max_poll_interval = None if max_poll_interval is None else float(max_poll_interval)
        self.end_task_on_clearance = end_task_on_clearance

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "thermal_pools.sensors.clearance_trigger.ThermalClearanceTrigger",
            {
                "task_id": self.waiting_task_id,
                "thermal_threshold": self.thermal_threshold,
                "memory_required_gb": self.memory_required_gb,
                "priority": self.priority,
                "target_host": self.target_host,
                "deadline": self.deadline,
                "poll_interval": self.poll_interval,
                "exponential_backoff": self.exponential_backoff,
                "max_poll_interval": self.max_poll_interval,
                "end_task_on_clearance": self.end_task_on_clearance,
            },
        )

    def _new_check(self) -> ClearanceCheck:
        return ClearanceCheck(
            self.waiting_task_id,
            thermal_threshold=self.thermal_threshold,
            memory_required_gb=self.memory_required_gb,
            priority=self.priority,
            target_host=self.target_host,
        )

    def _next_interval(self, interval: float) -> float:
        if not self.exponential_backoff:
            return interval
        longest = self.max_poll_interval if self.max_poll_interval is not None else math.inf
        return min(interval * 2, longest)

    async def _push_return_value(self, clearance: dict[str, Any]) -> None:
        # NOTE: Airflow 3.3.2 stores the values of TaskSuccessEvent(xcoms=...) JSON-encoded twice,
        # so a downstream task would pull a str, not this dict. The trigger therefore pushes the
        # value through the XCom backend, as a worker pushes a return value.
        from airflow.sdk.execution_time.xcom import XCom

        ti = self.task_instance
        await XCom.aset(
            key=XCom.XCOM_RETURN_KEY,
            value=clearance,
            dag_id=ti.dag_id,
            task_id=ti.task_id,
            run_id=ti.run_id,
            map_index=ti.map_index,
        )
        self.log.info("pushed the clearance of %s as its %s XCom", self.waiting_task_id, XCom.XCOM_RETURN_KEY)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # Building the check loads settings and a trace or a database engine, and each decision
        # reads a sensor or a database: all blocking, so all of it runs off the event loop.
        check = await asyncio.to_thread(self._new_check)
        where = "this host" if check.local else "the readings table"
        self.log.info(
            "waiting for clearance of %s on %s (from %s): threshold %s, %s GiB, %s priority, until %s",
            self.waiting_task_id,
            self.target_host,
            where,
            self.thermal_threshold,
            self.memory_required_gb,
            self.priority,
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.deadline)),
        )

        interval = self.poll_interval
        checks = 0
        while True:
            checks += 1
            decision = await asyncio.to_thread(check.decide)
            self.log.info("check %d for %s: %s", checks, self.waiting_task_id, describe_reading(decision.reading))
            if decision.should_run:
                clearance = clearance_payload(decision)
                if self.end_task_on_clearance:
                    # The trigger pushes the XCom and the triggerer marks the task successful, so
                    # no worker runs the task again just to return the clearance.
                    self.log.info(
                        "cleared %s after %d check(s), ending it in the triggerer: %s",
                        self.waiting_task_id,
                        checks,
                        decision.reason,
                    )
                    await self._push_return_value(clearance)
                    yield TaskSuccessEvent()
                    return
                self.log.info("cleared %s after %d check(s): %s", self.waiting_task_id, checks, decision.reason)
                yield TriggerEvent({"status": "cleared", "clearance": clearance, "checks": checks})
                return

            remaining = self.deadline - time.time()
            if remaining <= 0:
                message = (
                    f"{self.waiting_task_id} was not cleared on {self.target_host} before its deadline "
                    f"after {checks} check(s); last reason: {decision.reason}"
                )
                self.log.info("timed out: %s", message)
                # A timeout resumes the task on a worker even for a sensor: Airflow sends a
                # TaskFailedEvent through retry routing, while a sensor that times out fails
                # without retries, and the worker also applies soft_fail and the failure message.
                yield TriggerEvent({"status": "timeout", "message": message, "reason": decision.reason, "checks": checks})
                return

            wait = min(interval, remaining)
            self.log.info("waiting %.1f s: %s", wait, decision.reason)
            await asyncio.sleep(wait)
            interval = self._next_interval(interval)
