"""The throttle a task runs at, and helpers that turn it into smaller, slower work.

A :class:`~thermal_pools.sensors.ThermalClearanceSensor` returns the throttle level it cleared
the task at (1.0 / 0.9 / 0.7 / 0.5 at nominal / fair / serious / critical by default) as part of
its XCom value. A downstream task reads it with :func:`throttle_for` and scales its work::

    @task
    def train(**context):
        throttle = throttle_for(context)            # finds the upstream clearance sensor
        batch_size = throttle.batch_size(32)        # 28 at fair, 22 at serious, 16 at critical
        pacer = throttle.pacer()
        for batch in batches(batch_size):
            step(batch)
            pacer.pace()                            # idles so the loop is busy `level` of the time

In a templated field, the same value is
``{{ ti.xcom_pull(task_ids='thermal_clearance')['throttle_level'] }}``. It renders as a string,
so convert it with ``float()`` in the task, or set ``render_template_as_native_obj=True`` on the DAG.

Without a clearance value (no upstream sensor, or a sensor that was skipped), :func:`throttle_for`
falls back to a live decision on the host the task runs on, by the same policy the sensor uses.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from thermal_pools.profiles import PROFILES

__all__ = [
    "DutyCyclePacer",
    "ThrottleContext",
    "scaled_batch_size",
    "scaled_workers",
    "throttle_for",
]

log = logging.getLogger(__name__)

# Added before rounding down, so that 10 * 0.7 does not floor to 6 through float error.
EPSILON = 1e-9


def _check_level(level: Any) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not math.isfinite(level) or not 0 < level <= 1:
        raise ValueError(f"invalid throttle level {level!r}: expected a share of full speed in (0, 1], for example 0.7")
    return float(level)


def _scale(name: str, base: Any, level: Any) -> int:
    if isinstance(base, bool) or not isinstance(base, int) or base < 1:
        raise ValueError(f"invalid {name} {base!r}: expected a whole number >= 1")
    return max(1, math.floor(base * _check_level(level) + EPSILON))


def scaled_batch_size(base: int, level: float) -> int:
    """Return ``base`` scaled by the throttle level, rounded down and never below 1.

    Raises ``ValueError`` for a base below 1 or a level outside (0, 1].
    """
    return _scale("batch size", base, level)


def scaled_workers(base: int, level: float) -> int:
    """Return a worker (process or thread) count scaled by the throttle level, never below 1."""
    return _scale("worker count", base, level)


class DutyCyclePacer:
    """Keeps a work loop busy for ``level`` of its wall time by idling after each step.

    Call :meth:`pace` once per step. It measures the busy time since the previous call and
    sleeps ``busy * (1 - level) / level``, so a loop at level 0.7 idles about 30 % of the time
    and a loop at 1.0 never sleeps. Sleeps shorter than ``min_sleep_seconds`` are carried over
    to the next step instead of being slept one by one, because very short sleeps cost more in
    scheduling overhead than they save in heat.

    ``clock`` (monotonic seconds) and ``sleep`` are injectable for tests.
    """

    def __init__(
        self,
        level: float,
        *,
        min_sleep_seconds: float = 0.005,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.level = _check_level(level)
        if isinstance(min_sleep_seconds, bool) or not isinstance(min_sleep_seconds, (int, float)) or min_sleep_seconds < 0:
            raise ValueError(f"invalid min_sleep_seconds {min_sleep_seconds!r}: expected a number of seconds >= 0")
        self.min_sleep_seconds = float(min_sleep_seconds)
        self._clock = clock
        self._sleep = sleep
        self.busy_seconds = 0.0
        self.idle_seconds = 0.0
        self._owed_seconds = 0.0
        self._resumed_at = clock()

    def pace(self) -> float:
        """Idle for this step's share of rest; return the seconds slept (0 when carried over)."""
        now = self._clock()
        busy = max(now - self._resumed_at, 0.0)
        self.busy_seconds += busy
        self._owed_seconds += busy * (1.0 - self.level) / self.level

        slept = 0.0
        if self._owed_seconds >= self.min_sleep_seconds:
            self._sleep(self._owed_seconds)
            slept = self._owed_seconds
            self._owed_seconds = 0.0

        # The measured idle time (not the requested one) counts, since sleep may overshoot.
        self._resumed_at = self._clock()
        self.idle_seconds += max(self._resumed_at - now, 0.0)
        return slept

    @property
    def duty_cycle(self) -> float:
        """Share of the measured time spent working so far; 1.0 before any step."""
        total = self.busy_seconds + self.idle_seconds
        return 1.0 if total == 0 else self.busy_seconds / total


@dataclass(frozen=True)
class ThrottleContext:
    """The throttle a task runs at, where it came from, and the settings it implies.

    - ``level``: share of full speed, in (0, 1].
    - ``thermal_state``: the state (0-3) the level was decided at, ``None`` if unknown.
    - ``source``: ``clearance <task id>`` or ``live decision``.
    - ``clearance``: the sensor's XCom value, or the live decision's, as a plain dict.
    """

    level: float
    thermal_state: int | None
    source: str
    clearance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_level(self.level)

    @classmethod
    def from_clearance(cls, clearance: Mapping[str, Any], source: str) -> ThrottleContext:
        """Build from a clearance value as the sensor returns it; raise ``ValueError`` if it has no level."""
        if not isinstance(clearance, Mapping) or "throttle_level" not in clearance:
            raise ValueError(
                f"invalid clearance value from {source}: {clearance!r} has no throttle_level; "
                "expected the XCom value of a ThermalClearanceSensor"
            )
        return cls(
            level=float(clearance["throttle_level"]),
            thermal_state=clearance.get("thermal_state"),
            source=source,
            clearance=dict(clearance),
        )

    def batch_size(self, base: int) -> int:
        return scaled_batch_size(base, self.level)

    def workers(self, base: int) -> int:
        return scaled_workers(base, self.level)

    def pacer(self, **kwargs: Any) -> DutyCyclePacer:
        """A :class:`DutyCyclePacer` at this level; keyword arguments go to its constructor."""
        return DutyCyclePacer(self.level, **kwargs)

    def suggest(self, profile: str | None = None, *, batch_size: int | None = None, workers: int | None = None) -> dict[str, int]:
        """Return the scaled ``batch_size`` and ``workers`` for a profile's sizes or the ones given.

        Sizes given as arguments win over the profile's. Raises ``ValueError`` for an unknown
        profile or when neither a profile nor both sizes are given.
        """
        sizes: dict[str, Any] = {}
        if profile is not None:
            if profile not in PROFILES:
                raise ValueError(f"unknown profile {profile!r}: valid profiles are {', '.join(sorted(PROFILES))}")
            sizes.update({name: PROFILES[profile][name] for name in ("batch_size", "workers") if name in PROFILES[profile]})
        if batch_size is not None:
            sizes["batch_size"] = batch_size
        if workers is not None:
            sizes["workers"] = workers
        missing = [name for name in ("batch_size", "workers") if name not in sizes]
        if missing:
            raise ValueError(f"missing base size(s) {', '.join(missing)}: pass a profile or batch_size and workers")
        return {"batch_size": self.batch_size(sizes["batch_size"]), "workers": self.workers(sizes["workers"])}

    def to_dict(self) -> dict[str, Any]:
        return {"throttle_level": self.level, "thermal_state": self.thermal_state, "source": self.source}


def _task_instance(context_or_ti: Any) -> Any:
    if isinstance(context_or_ti, Mapping):
        ti = context_or_ti.get("ti") or context_or_ti.get("task_instance")
        if ti is None:
            raise ValueError("invalid context: it has no 'ti'; pass the task's context or its task instance")
        return ti
    if not hasattr(context_or_ti, "xcom_pull"):
        raise ValueError(
            f"invalid context_or_ti {type(context_or_ti).__name__}: pass the task's context or its task instance"
        )
    return context_or_ti


def _upstream_clearance_task_id(ti: Any) -> str | None:
    """Return the task id of the clearance sensor directly upstream of ``ti``'s task, if exactly one."""
    # Imported here: the sensor module imports Airflow's sensor base, which plain helpers don't need.
    from thermal_pools.sensors.clearance import ThermalClearanceSensor

    task = getattr(ti, "task", None)
    upstream = getattr(task, "upstream_list", None) or []
    sensors = sorted(t.task_id for t in upstream if isinstance(t, ThermalClearanceSensor))
    if len(sensors) > 1:
        log.warning(
            "task %s has %d clearance sensors upstream (%s); using %s, pass upstream_task_id to choose",
            ti.task_id,
            len(sensors),
            ", ".join(sensors),
            sensors[0],
        )
    return sensors[0] if sensors else None


def _live_throttle(ti: Any) -> ThrottleContext:
    """Decide on the host the task runs on now, with the task's own threshold and priority if it has them."""
    from thermal_pools.sensors.clearance_trigger import ClearanceCheck, clearance_payload

    task = getattr(ti, "task", None)
    threshold = getattr(task, "thermal_threshold", 3)
    priority = getattr(task, "priority", "normal")
    check = ClearanceCheck(
        ti.task_id,
        thermal_threshold=threshold if isinstance(threshold, int) else 3,
        priority=priority if isinstance(priority, str) else "normal",
    )
    payload = clearance_payload(check.decide())
    return ThrottleContext.from_clearance(payload, "live decision")


def throttle_for(context_or_ti: Any, upstream_task_id: str | None = None) -> ThrottleContext:
    """Return the throttle a task should run at.

    The level comes from the XCom value of the clearance sensor ``upstream_task_id``, by default
    the one :class:`~thermal_pools.sensors.ThermalClearanceSensor` directly upstream. Without
    such a value it comes from a live decision on this host, using the task's
    ``thermal_threshold`` and ``priority`` attributes when it has them. The live decision's
    level applies even when the decision is to hold, because the task is already running.
    """
    ti = _task_instance(context_or_ti)
    task_id = upstream_task_id or _upstream_clearance_task_id(ti)
    if task_id is not None:
        clearance = ti.xcom_pull(task_ids=task_id)
        if clearance:
            throttle = ThrottleContext.from_clearance(clearance, f"clearance {task_id}")
            log.info("task %s runs at throttle %g from %s", ti.task_id, throttle.level, throttle.source)
            return throttle
        log.warning("task %s found no clearance value from %s; deciding on this host now", ti.task_id, task_id)

    throttle = _live_throttle(ti)
    log.info("task %s runs at throttle %g from a live decision", ti.task_id, throttle.level)
    return throttle

