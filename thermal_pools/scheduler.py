"""Scheduling decisions: may a task start on this host now, and how hard may it run?

:func:`decide` is the policy. It is a pure function of an observation, the task's needs and the
settings, so the sensor, the operators and anything else that has the same reading reach the
same decision. :class:`ThermalAwareScheduler` takes the reading from a monitor and keeps the last
good thermal value for :func:`thermal_pools.tiers.resolve_state`.

Decision rules. Every rule that holds a task is named in the reason, not only the first:

1. State: the thermal state to act on is ``resolve_state(reading, last_good, config).state``. It
   is the sensor's value, else ``no_sensor_state`` on a host without a sensor, else the last good
   value for ``sensor_grace_period_seconds``, else ``safe_state``. That fallback sizes the pools
   and the throttle, but a failed read clears no task: every priority but critical is held until
   a good reading arrives, and critical work runs at ``throttle_critical``.
2. Memory, for every priority: a task with ``memory_required_gb`` > 0 needs that many GiB
   *safely available*, where
   ``safely available = memory_available_gib * memory_threshold_percent / 100``.
   The rest (15 % at the default 85) is headroom for the operating system, the file cache and the
   task's own growth. Too little memory, or an unknown figure, holds the task. With
   ``allow_memory_overcommit`` on, a critical task starts anyway and the reason says so.
3. Critical priority skips the rules below. If the threshold or health rule would have held it,
   it runs at ``min(throttle_critical, throttle(state))`` (0.5 by default) and the reason names
   what it bypassed.
4. Thermal threshold: a state above ``thermal_threshold`` holds the task.
5. Tier pool: a task whose tier pool has 0 slots (``base_slots_<tier>`` = 0) is held.
6. Health: a health score (see :mod:`thermal_pools.health`) below ``min_health_score`` holds it.
7. Low priority also waits while memory is loaded: use above ``memory_threshold_percent`` or
   memory pressure warning or critical.
8. Otherwise the task runs at ``throttle(state)``: 1.0 / 0.9 / 0.7 / 0.5 by default.

Retry delay, in seconds, grows as the health score falls, so it reflects both heat and load:

    badness = (100 - health_score) / 100
    delay = min_retry_delay_seconds + (max_retry_delay_seconds - min_retry_delay_seconds) * badness ** 2
    delay = clamp(delay * factor, min_retry_delay_seconds, max_retry_delay_seconds)

with ``factor`` 1.5 for low, 1.0 for normal and 0.5 for high and critical priority. The square
keeps the delay short while the host is only a little warm. A decision to run still carries the
delay, for a task that fails for thermal reasons and retries.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import socket
from dataclasses import dataclass
from datetime import timezone
from typing import TYPE_CHECKING, Any

from thermal_pools.config import ThermalSchedulingConfig, load_config
from thermal_pools.health import health_score
from thermal_pools.profiles import (
    DEFAULT_THRESHOLD,
    PRIORITIES,
    TaskConfig,
    create_task_config,
    pool_for_threshold,
    validate_memory_required,
    validate_priority,
    validate_threshold,
)
from thermal_pools.reading import MemoryPressure, Reading, ThermalState, utc_now
from thermal_pools.tiers import Observation, resolve_state, slot_factor, tier_slots

if TYPE_CHECKING:
    from thermal_pools.monitor.base import Monitor

__all__ = [
    "SchedulingDecision",
    "ThermalAwareScheduler",
    "decide",
    "recommendations",
    "retry_delay",
    "safely_available_gib",
    "suggest_configuration",
]

log = logging.getLogger(__name__)

RETRY_DELAY_FACTOR = {"low": 1.5, "normal": 1.0, "high": 0.5, "critical": 0.5}

# Added before rounding down scaled sizes, so 10 * 0.7 does not floor to 6 through float error.
EPSILON = 1e-9


@dataclass(frozen=True)
class SchedulingDecision:
    """Decision on whether a task may start now, with the reason and how hard it may run.

    - ``throttle_level``: share of full speed the task should use, in (0, 1].
    - ``health_score``: the host's health, 0-100, at the time of the decision.
    - ``retry_delay_seconds``: how long to wait before asking again, s.
    - ``observation_basis``: why the state is believed, as in ``Observation.basis``.
    """

    task_id: str
    should_run: bool
    reason: str
    throttle_level: float
    thermal_state: ThermalState
    health_score: float
    retry_delay_seconds: float
    reading: Reading
    observation_basis: str

    def to_xcom(self) -> dict[str, Any]:
        """Return a plain JSON-ready dict for XCom: state as an integer, time as ISO 8601 UTC."""
        return {
            "task_id": self.task_id,
            "should_run": self.should_run,
            "reason": self.reason,
            "thermal_state": int(self.thermal_state),
            "throttle_level": self.throttle_level,
            "health_score": round(self.health_score, 1),
            "retry_delay_seconds": round(self.retry_delay_seconds, 1),
            "memory_available_gib": self.reading.memory_available_gib,
            "host": self.reading.host,
            "taken_at": self.reading.taken_at.astimezone(timezone.utc).isoformat(),
            "observation_basis": self.observation_basis,
        }


# -- the policy ----------------------------------------------------------------------------------


def retry_delay(health: float, priority: str, config: ThermalSchedulingConfig) -> float:
    """Return the suggested retry delay in seconds (formula in the module docstring)."""
    low, high = config.min_retry_delay_seconds, config.max_retry_delay_seconds
    badness = min(max((100.0 - health) / 100.0, 0.0), 1.0)
    delay = (low + (high - low) * badness**2) * RETRY_DELAY_FACTOR[priority]
    return min(max(delay, low), high)


def safely_available_gib(reading: Reading, config: ThermalSchedulingConfig) -> float | None:
    """Return the memory in GiB that a new task may use, leaving headroom, or ``None`` when unknown."""
    if reading.memory_available_gib is None:
        return None
    return reading.memory_available_gib * config.memory_threshold_percent / 100.0


def _state_phrase(observation: Observation) -> str:
    state = observation.state
    return f"thermal state {state.label} ({int(state)}, {observation.basis})"


def _threshold_phrase(threshold: int) -> str:
    return f"{ThermalState(threshold).label} ({threshold})"


def _load_phrase(reading: Reading) -> str:
    """Describe the figures behind a health score for a reason, naming unknown figures as such."""
    parts = []
    if reading.memory_used_percent is None:
        parts.append("memory use unknown")
    else:
        parts.append(f"memory {reading.memory_used_percent:.0f}% used")
    if reading.memory_pressure is None:
        parts.append("pressure unknown")
    else:
        parts.append(f"pressure {reading.memory_pressure.label}")
    if reading.cpu_load is None:
        parts.append("CPU load unknown")
    else:
        parts.append(f"CPU load {reading.cpu_load:.2f} per core")
    if reading.low_power_mode:
        parts.append("low-power mode")
    if reading.on_battery:
        parts.append("on battery")
    return ", ".join(parts)


def _memory_shortfall(reading: Reading, required: float, config: ThermalSchedulingConfig) -> str | None:
    """Return a clause describing the unmet memory requirement, or ``None`` when it is met."""
    if required <= 0:
        return None
    safe = safely_available_gib(reading, config)
    if safe is None:
        return f"it needs {required:.1f} GiB, but available memory on {reading.host} is unknown"
    if required > safe:
        return (
            f"it needs {required:.1f} GiB, but only {safe:.1f} GiB of the {reading.memory_available_gib:.1f} GiB "
            f"available is safe to use with memory_threshold_percent {config.memory_threshold_percent:g}"
        )
    return None


def _memory_loaded(reading: Reading, config: ThermalSchedulingConfig) -> str | None:
    """Return why a low-priority task yields to a host whose memory is loaded, or ``None``."""
    used = reading.memory_used_percent
    if used is not None and used > config.memory_threshold_percent:
        return (
            f"Memory use {used:.0f}% is above memory_threshold_percent {config.memory_threshold_percent:g}, "
            "and low-priority work waits while memory is loaded."
        )
    if reading.memory_pressure is not None and reading.memory_pressure >= MemoryPressure.WARNING:
        return (
            f"Memory pressure is {reading.memory_pressure.label}, "
            "and low-priority work waits while memory is loaded."
        )
    return None


def decide(
    task_id: str,
    observation: Observation,
    config: ThermalSchedulingConfig,
    *,
    thermal_threshold: int = DEFAULT_THRESHOLD,
    memory_required_gb: float = 0.0,
    priority: str = "normal",
) -> SchedulingDecision:
    """Decide whether a task may start, by the rules in the module docstring.

    Arguments must already be valid. :meth:`ThermalAwareScheduler.should_run_task` checks them.
    """
    state = observation.state
    reading = observation.reading
    health = health_score(reading, state, config)
    delay = retry_delay(health, priority, config)
    throttle = config.throttle(state)

    # Each entry of hold_reasons and notes is one sentence of the reason, naming the values involved.
    hold_reasons: list[str] = []
    notes: list[str] = []
    bypassed: list[str] = []

    shortfall = _memory_shortfall(reading, memory_required_gb, config)
    if shortfall and priority == "critical" and config.allow_memory_overcommit:
        notes.append(f"The memory check was skipped because allow_memory_overcommit is on: {shortfall}.")
    elif shortfall:
        fix = "fix the monitor" if reading.memory_available_gib is None else "free memory"
        hold_reasons.append(f"{shortfall[0].upper()}{shortfall[1:]} ({fix}, or lower memory_required_gb).")

    above_threshold = state > thermal_threshold
    unhealthy = health < config.min_health_score

    if observation.failed_read:
        # The pools fall back to the last good value or the safe state, but a clearance needs a
        # real measurement. Only critical work starts on a failed read, heavily throttled.
        if priority == "critical":
            throttle = min(config.throttle_critical, throttle)
            notes.append(
                f"The thermal sensor read failed ({reading.thermal_reason}); critical priority runs anyway "
                f"at throttle {throttle:g}."
            )
        else:
            hold_reasons.append(
                f"The thermal sensor read failed ({reading.thermal_reason}), so no task is cleared until a "
                "good reading arrives (check the monitor)."
            )

    if priority == "critical":
        if above_threshold:
            bypassed.append(f"the threshold {_threshold_phrase(thermal_threshold)}")
        if unhealthy:
            bypassed.append(f"the health check ({health:.1f} < min_health_score {config.min_health_score:g})")
        if bypassed:
            throttle = min(config.throttle_critical, throttle)
            notes.append(f"Critical priority bypassed {' and '.join(bypassed)}, so it runs at throttle {throttle:g}.")
    else:
        if above_threshold:
            hold_reasons.append(
                f"{_state_phrase(observation).capitalize()} is above the task's threshold "
                f"{_threshold_phrase(thermal_threshold)}, so it waits for the host to cool or a higher thermal_threshold."
            )
        else:
            tier = ThermalState(thermal_threshold)
            if tier_slots(tier, state, slot_factor(state, reading, config), config) == 0:
                hold_reasons.append(
                    f"Tier pool {pool_for_threshold(thermal_threshold, config)} has 0 slots "
                    f"because base_slots_{tier.label} is {config.base_slots(tier)}."
                )
        if unhealthy:
            hold_reasons.append(
                f"Health score {health:.1f} is below min_health_score {config.min_health_score:g} "
                f"({_load_phrase(reading)})."
            )
        if priority == "low":
            loaded = _memory_loaded(reading, config)
            if loaded:
                hold_reasons.append(loaded)

    should_run = not hold_reasons
    if should_run:
        sentences = [
            f"Run {task_id} ({priority} priority) on {reading.host}: {_state_phrase(observation)}, "
            f"threshold {_threshold_phrase(thermal_threshold)}, health {health:.1f}, throttle {throttle:g}."
        ]
    else:
        sentences = [f"Hold {task_id} ({priority} priority) on {reading.host}.", *hold_reasons, f"Retry in {delay:.0f} s."]
    reason = " ".join([*sentences, *notes])

    log.info(
        "task %s on %s: %s (state %d via %s, health %.1f, throttle %g, retry %.0f s)",
        task_id,
        reading.host,
        "run" if should_run else "hold",
        state,
        observation.basis,
        health,
        throttle,
        delay,
    )
    return SchedulingDecision(
        task_id=task_id,
        should_run=should_run,
        reason=reason,
        throttle_level=throttle,
        thermal_state=state,
        health_score=health,
        retry_delay_seconds=delay,
        reading=reading,
        observation_basis=observation.basis,
    )


def suggest_configuration(
    task: TaskConfig, observation: Observation, config: ThermalSchedulingConfig
) -> dict[str, Any]:
    """Scale a task's batch size, workers and memory budget for the observed state.

    Each is multiplied by the tier pools' slot factor (throttle x memory factor x power factor,
    see :func:`thermal_pools.tiers.slot_factor`) and rounded down, keeping batch size and
    workers at 1 or more.
    """
    state = observation.state
    factor = slot_factor(state, observation.reading, config)
    return {
        "config": {
            "batch_size": max(1, math.floor(task.batch_size * factor + EPSILON)),
            "workers": max(1, math.floor(task.workers * factor + EPSILON)),
            # NOTE: an estimate that assumes memory grows with batch size. Model weights do not
            # shrink, so a task dominated by them still needs its full memory_required_gb.
            "memory_gb": round(task.memory_required_gb * factor, 2),
        },
        "throttle_level": config.throttle(state),
        "scale": factor,
        "thermal_state": int(state),
        "observation_basis": observation.basis,
    }


def recommendations(observation: Observation, health: float, config: ThermalSchedulingConfig) -> list[str]:
    """Return plain sentences on what limits scheduling on this host and what to do about it."""
    state = observation.state
    reading = observation.reading
    advice: list[str] = []

    if observation.basis.startswith("safe state"):
        advice.append(
            f"The thermal sensor failed ({reading.thermal_reason}), so the host is treated as "
            f"{state.label} ({int(state)}) until it reads again; check the monitor's logs."
        )
    if state >= ThermalState.SERIOUS:
        advice.append(
            f"The host is {state.label} ({int(state)}): only tasks with thermal_threshold >= {int(state)} "
            f"start, at throttle {config.throttle(state):g}; improve cooling or move heavy work to a cooler time."
        )
    if reading.memory_used_percent is not None and reading.memory_used_percent > config.memory_threshold_percent:
        advice.append(
            f"Memory use {reading.memory_used_percent:.0f}% is above memory_threshold_percent "
            f"{config.memory_threshold_percent:g}; lower batch sizes or run fewer memory-heavy tasks at once."
        )
    if reading.memory_pressure is not None and reading.memory_pressure >= MemoryPressure.WARNING:
        advice.append(
            f"Memory pressure is {reading.memory_pressure.label}; pools shrink until it eases, "
            "so free memory or lower batch sizes."
        )
    if reading.memory_available_gib is None:
        advice.append("Available memory is unknown, so tasks that set memory_required_gb are held; check the monitor.")
    if reading.cpu_load is not None and reading.cpu_load > 1.0:
        advice.append(f"CPU load is {reading.cpu_load:.2f} per core; run fewer tasks at once.")
    if reading.low_power_mode or reading.on_battery:
        mode = "Low-power mode is on" if reading.low_power_mode else "The host runs on battery"
        advice.append(
            f"{mode}, so pools run at low_power_factor {config.low_power_factor:g}; "
            "plug in or turn low-power mode off for full speed."
        )
    if health < config.min_health_score:
        advice.append(
            f"Health score {health:.1f} is below min_health_score {config.min_health_score:g}, "
            "so only critical tasks start."
        )
    if not advice:
        advice.append(f"No action needed: the host is {state.label} with health score {health:.1f}.")
    return advice


# -- the scheduler -------------------------------------------------------------------------------


class ThermalAwareScheduler:
    """Scheduling decisions for tasks on this host, based on a monitor's readings.

    :param config: settings; default :func:`thermal_pools.config.load_config`.
    :param monitor: object with ``read() -> Reading``; default
        ``thermal_pools.monitor.create_monitor(config)``.
    :param last_good: the most recent reading with a known thermal state, if any, so that a
        failing sensor keeps it for ``sensor_grace_period_seconds``.
    """

    def __init__(
        self,
        config: ThermalSchedulingConfig | None = None,
        monitor: Monitor | None = None,
        *,
        last_good: Reading | None = None,
    ) -> None:
        self.config = config if config is not None else load_config()
        if monitor is None:
            # Imported here because the platform monitors pull in system libraries that a
            # caller who passes its own monitor does not need.
            from thermal_pools.monitor import create_monitor

            monitor = create_monitor(self.config)
        self.monitor = monitor
        if last_good is not None and last_good.thermal_state is None:
            raise ValueError(
                f"invalid last_good reading from {last_good.host} at {last_good.taken_at.isoformat()}: "
                "its thermal state is unknown; pass a reading with a thermal state or None"
            )
        self.last_good = last_good
        # Failure causes already logged, so a monitor that keeps failing logs once, not per read.
        self._logged_causes: set[str] = set()

    def read(self) -> Reading:
        """Take a reading from the monitor.

        A monitor that raises or returns something other than a valid reading yields a reading
        with an unknown thermal state, so the decision falls back to the last good value or the
        safe state instead of failing the task. Each distinct cause is logged once until the next
        good read.
        """
        # Imported here for the same reason as create_monitor in __init__.
        from thermal_pools.monitor.guard import _validate

        error: Exception | None = None
        try:
            reading, changes, cause = _validate(self.monitor.read())
        except Exception as raised:  # any monitor failure must still lead to a safe decision
            error, cause = raised, str(raised)
        if cause is None:
            self._logged_causes.clear()
            return dataclasses.replace(reading, **changes) if changes else reading

        if cause not in self._logged_causes:
            self._logged_causes.add(cause)
            log.warning("monitor %r failed to read: %s", self.monitor, cause, exc_info=error)
        return Reading(host=socket.gethostname(), taken_at=utc_now(), thermal_reason=f"monitor read failed: {cause}")

    def observe(self, reading: Reading | None = None) -> Observation:
        """Resolve the state to act on for ``reading`` (default: a new reading), then remember it."""
        if reading is None:
            reading = self.read()
        observation = resolve_state(reading, self.last_good, self.config)
        if reading.thermal_state is not None and (
            self.last_good is None or reading.taken_at >= self.last_good.taken_at
        ):
            self.last_good = reading
        return observation

    def should_run_task(
        self,
        task_id: str,
        thermal_threshold: int = DEFAULT_THRESHOLD,
        memory_required_gb: float = 0.0,
        priority: str = "normal",
        *,
        reading: Reading | None = None,
    ) -> SchedulingDecision:
        """Decide whether ``task_id`` may start now, by the rules in the module docstring.

        ``thermal_threshold`` is the hottest state (0-3) the task may start in,
        ``memory_required_gb`` the GiB it needs and ``priority`` one of low, normal, high,
        critical. ``reading`` replaces a new reading from the monitor. Raises ``ValueError``
        naming any invalid argument.
        """
        if not isinstance(task_id, str) or not task_id.strip():
            raise ValueError(f"invalid task_id {task_id!r}: expected a non-empty string")
        threshold = validate_threshold(thermal_threshold)
        memory = validate_memory_required(memory_required_gb)
        priority = validate_priority(priority)

        return decide(
            task_id,
            self.observe(reading),
            self.config,
            thermal_threshold=threshold,
            memory_required_gb=memory,
            priority=priority,
        )

    def suggest_task_configuration(self, profile: str) -> dict[str, Any]:
        """Suggest batch size, workers and memory for a profile at the current state.

        Returns ``{"config": {"batch_size", "workers", "memory_gb"}, "throttle_level",
        "scale", "thermal_state", "observation_basis", "profile"}``. Raises ``ValueError``
        for an unknown profile, naming the valid ones.
        """
        task = create_task_config(f"{profile} suggestion", profile)
        suggestion = suggest_configuration(task, self.observe(), self.config)
        suggestion["profile"] = profile
        return suggestion

    def get_scheduling_stats(self) -> dict[str, Any]:
        """Summarize the host for dashboards and troubleshooting, from one new reading.

        ``can_schedule_<priority>`` is whether a task with the default threshold (2) and no
        memory requirement would start now. ``memory_utilization`` is percent used, or ``None``.
        """
        observation = self.observe()
        reading = observation.reading
        state = observation.state
        health = health_score(reading, state, self.config)

        stats: dict[str, Any] = {
            "host": reading.host,
            "taken_at": reading.taken_at.astimezone(timezone.utc).isoformat(),
            "thermal_state": int(state),
            "thermal_state_label": state.label,
            "observation_basis": observation.basis,
            "health_score": round(health, 1),
            "throttle_level": self.config.throttle(state),
            "memory_utilization": reading.memory_used_percent,
            "memory_available_gib": reading.memory_available_gib,
            "memory_pressure": None if reading.memory_pressure is None else reading.memory_pressure.label,
            "cpu_load": reading.cpu_load,
        }
        for priority in PRIORITIES:
            decision = decide("scheduling stats", observation, self.config, priority=priority)
            stats[f"can_schedule_{priority}"] = decision.should_run
        stats["recommendations"] = recommendations(observation, health, self.config)
        return stats
