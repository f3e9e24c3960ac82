"""Task profiles and per-task settings: what a task needs from the host before it may start.

A :class:`TaskConfig` stores one task's thermal threshold, memory requirement, priority and retry
behaviour. Profiles are named sets of defaults for common kinds of work:

| profile | thermal_threshold | memory_required_gb | priority | batch_size | workers |
|---|---|---|---|---|---|
| training | 2 (serious) | 16.0 | high | 32 | 4 |
| inference | 1 (fair) | 8.0 | normal | 64 | 2 |
| preprocessing | 1 (fair) | 4.0 | normal | 256 | 8 |
| deployment | 3 (critical) | 2.0 | critical | 1 | 1 |

A task's thermal threshold is the hottest state it may start in, so it also names the tier pool
the task belongs in (:func:`pool_for_threshold`): a threshold-2 task goes in ``thermal_serious``.
Memory figures are GiB (2**30 bytes), the unit of ``Reading.memory_available_gib``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from thermal_pools.config import ThermalSchedulingConfig
from thermal_pools.reading import ThermalState

__all__ = [
    "DEFAULT_THRESHOLD",
    "PRIORITIES",
    "PROFILES",
    "TaskConfig",
    "ThermalSchedulingConfig",
    "create_task_config",
    "pool_for_threshold",
    "prefix_task_errors",
    "register_profile",
    "validate_memory_required",
    "validate_priority",
    "validate_threshold",
]

log = logging.getLogger(__name__)

# Priorities from least to most urgent. Only "critical" bypasses the thermal threshold and the
# health check. The thermal_pools.scheduler docstring lists what each one changes.
PRIORITIES: tuple[str, ...] = ("low", "normal", "high", "critical")

# Maximum memory requirement accepted, in GiB. It is far above any current Mac or workstation and
# only exists to catch unit mistakes such as passing bytes or MiB.
MAX_MEMORY_GIB = 4096.0

# Threshold of a task that sets none: it may start up to the serious state (2).
DEFAULT_THRESHOLD = 2


def validate_threshold(value: Any, name: str = "thermal_threshold") -> int:
    """Return ``value`` as a threshold, or raise ``ValueError`` unless it is an integer 0-3.

    Booleans and floats are rejected even when they equal a whole number, because ``True`` or
    ``2.0`` almost always means a mixed-up argument.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 3:
        raise ValueError(
            f"invalid {name} {value!r}: expected an integer thermal state 0-3 "
            "(0 nominal, 1 fair, 2 serious, 3 critical)"
        )
    return int(value)


def validate_priority(value: Any, name: str = "priority") -> str:
    """Return ``value`` if it is one of :data:`PRIORITIES`, else raise ``ValueError``."""
    if not isinstance(value, str) or value not in PRIORITIES:
        raise ValueError(f"invalid {name} {value!r}: expected one of {', '.join(PRIORITIES)}")
    return value


def validate_memory_required(value: Any, name: str = "memory_required_gb") -> float:
    """Return ``value`` as GiB, or raise ``ValueError`` unless it is finite and 0-4096."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 <= value <= MAX_MEMORY_GIB
    ):
        raise ValueError(
            f"invalid {name} {value!r}: expected a finite number of GiB from 0 to {MAX_MEMORY_GIB:g}"
        )
    return float(value)


@contextmanager
def prefix_task_errors(task_id: str, kind: str = "task") -> Iterator[None]:
    """Prefix each ``ValueError`` raised inside with ``<kind> '<task_id>': `` (``task`` by default).

    Sensors and operators check their arguments where the DAG file builds them, and Airflow
    shows only the message as the import error, so the message must name the task.
    """
    prefix = f"{kind} {task_id!r}: "
    try:
        yield
    except ValueError as error:
        message = str(error)
        if message.startswith(prefix):
            raise
        raise ValueError(prefix + message) from None


def _validate_whole(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"invalid {name} {value!r}: expected a whole number >= {low}")


def _validate_seconds(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"invalid {name} {value!r}: expected a finite number of seconds > 0")


def _validate_flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"invalid {name} {value!r}: expected True or False")


@dataclass(frozen=True)
class TaskConfig:
    """One task's scheduling settings.

    - ``thermal_threshold``: hottest thermal state (0-3) the task may start in.
    - ``memory_required_gb``: memory the task needs, GiB. 0 skips the memory check.
    - ``priority``: one of :data:`PRIORITIES`.
    - ``retry_on_thermal``: retry the task when it is held, rather than fail it.
    - ``wait_for_clearance``: poll until the host clears, up to ``clearance_timeout_seconds``.
    - ``max_retries``: retries after a hold or a thermal failure.
    - ``retry_delay_seconds``: fallback delay between retries, s, when no decision suggests one.
    - ``clearance_timeout_seconds``: maximum wait for clearance, s.
    - ``batch_size``, ``workers``: sizes at nominal state, scaled down by suggestions when hot.
    """

    task_id: str
    thermal_threshold: int = DEFAULT_THRESHOLD
    memory_required_gb: float = 0.0
    priority: str = "normal"
    retry_on_thermal: bool = True
    wait_for_clearance: bool = True
    max_retries: int = 3
    retry_delay_seconds: float = 60
    clearance_timeout_seconds: float = 300
    batch_size: int = 32
    workers: int = 4

    def __post_init__(self) -> None:
        if not isinstance(self.task_id, str) or not self.task_id.strip():
            raise ValueError(f"invalid task_id {self.task_id!r}: expected a non-empty string")
        validate_threshold(self.thermal_threshold)
        validate_memory_required(self.memory_required_gb)
        validate_priority(self.priority)
        _validate_flag("retry_on_thermal", self.retry_on_thermal)
        _validate_flag("wait_for_clearance", self.wait_for_clearance)
        _validate_whole("max_retries", self.max_retries, 0)
        _validate_seconds("retry_delay_seconds", self.retry_delay_seconds)
        _validate_seconds("clearance_timeout_seconds", self.clearance_timeout_seconds)
        _validate_whole("batch_size", self.batch_size, 1)
        _validate_whole("workers", self.workers, 1)

    def to_dict(self) -> dict[str, Any]:
        """Return a plain JSON-ready dict, for XCom or logs."""
        return dataclasses.asdict(self)


def _setting_names() -> list[str]:
    """Return the names a profile or an override may set: every TaskConfig field but ``task_id``."""
    return [f.name for f in dataclasses.fields(TaskConfig) if f.name != "task_id"]


BUILTIN_PROFILES: dict[str, dict[str, Any]] = {
    "training": {
        "thermal_threshold": 2,
        "memory_required_gb": 16.0,
        "priority": "high",
        "batch_size": 32,
        "workers": 4,
    },
    "inference": {
        "thermal_threshold": 1,
        "memory_required_gb": 8.0,
        "priority": "normal",
        "batch_size": 64,
        "workers": 2,
    },
    "preprocessing": {
        "thermal_threshold": 1,
        "memory_required_gb": 4.0,
        "priority": "normal",
        "batch_size": 256,
        "workers": 8,
    },
    "deployment": {
        "thermal_threshold": 3,
        "memory_required_gb": 2.0,
        "priority": "critical",
        "batch_size": 1,
        "workers": 1,
    },
}

# Registry of profile name -> defaults. Built-in profiles come first and cannot be replaced, so
# "training" means the same thing in every DAG.
PROFILES: dict[str, dict[str, Any]] = {name: dict(values) for name, values in BUILTIN_PROFILES.items()}


def _check_setting_names(names: set[str], kind: str) -> None:
    valid = _setting_names()
    unknown = sorted(names - set(valid))
    if unknown:
        raise ValueError(f"unknown {kind} {', '.join(unknown)}: valid names are {', '.join(valid)}")


def register_profile(name: str, **defaults: Any) -> None:
    """Add or replace a named profile of TaskConfig defaults.

    Settings left out take the TaskConfig defaults. Registering a name again replaces its
    defaults, so a DAG file that registers a profile can be parsed any number of times. The
    built-in profiles cannot be replaced. Raises ``ValueError`` for an invalid name, a misspelled
    setting or an invalid value.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"invalid profile name {name!r}: expected a non-empty string")
    if name in BUILTIN_PROFILES:
        raise ValueError(
            f"profile {name!r} is built in and cannot be replaced: register it under another name"
        )
    _check_setting_names(set(defaults), "profile setting(s)")

    # Validate the values now, so a bad profile fails where it is defined rather than in a task.
    TaskConfig(task_id=f"profile {name}", **defaults)

    previous = PROFILES.get(name)
    PROFILES[name] = dict(defaults)
    if previous is not None and previous != defaults:
        log.info("profile %s replaced: %s -> %s", name, previous, defaults)


def create_task_config(task_id: str, profile: str | None = None, **overrides: Any) -> TaskConfig:
    """Build a TaskConfig from a profile's defaults and per-task overrides.

    Without a profile, the TaskConfig defaults apply. Raises ``ValueError`` naming the valid
    profiles for an unknown profile, and the valid settings for a misspelled override.
    """
    values: dict[str, Any] = {}
    if profile is not None:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}: valid profiles are {', '.join(sorted(PROFILES))}")
        values.update(PROFILES[profile])

    _check_setting_names(set(overrides), "TaskConfig setting(s)")
    values.update(overrides)
    return TaskConfig(task_id=task_id, **values)


def pool_for_threshold(threshold: int, config: ThermalSchedulingConfig) -> str:
    """Return the tier pool a task with this thermal threshold belongs in, e.g. ``thermal_fair``."""
    return config.pool_name(ThermalState(validate_threshold(threshold)))
