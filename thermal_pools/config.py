"""Settings of thermal-pools, with their defaults, units and validation.

Every setting lives in the ``[thermal_pools]`` section of the Airflow configuration, so it can be
set in ``airflow.cfg`` or as ``AIRFLOW__THERMAL_POOLS__<NAME>`` environment variables. A setting
that is absent takes the default below. :func:`load_config` reads them. An invalid value raises
:class:`ConfigError` naming the setting, the value and the allowed range.

| setting | unit | default | meaning |
|---|---|---|---|
| pool_prefix | text | ``thermal_`` | prefix of the four tier pool names |
| base_slots_nominal .. base_slots_critical | slots | 10, 10, 10, 4 | size of each tier pool at nominal state |
| throttle_nominal .. throttle_critical | factor (0, 1] | 1.0, 0.9, 0.7, 0.5 | share of slots and of work kept at that state |
| memory_warning_factor | factor (0, 1] | 0.75 | extra slot factor under memory pressure "warning" |
| memory_critical_factor | factor (0, 1] | 0.5 | extra slot factor under memory pressure "critical" |
| low_power_factor | factor (0, 1] | 0.75 | extra slot factor in low-power mode or on battery |
| no_sensor_state | state 0-3 | 0 (nominal) | state assumed on a host that has no thermal sensor |
| safe_state | state 0-3 | 2 (serious) | state assumed once a failing sensor's grace period ends |
| sensor_grace_period_seconds | s | 300 | how long a failing sensor's last good value stays in force |
| stabilization_window_seconds | s | 300 | how long a hotter state must be absent before pools grow again |
| stale_after_seconds | s | 180 | age after which a recorded reading counts as unknown |
| thermal_threshold_nominal .. _critical | state 0-3 | 0, 1, 2, 3 | named thresholds, for code that refers to a tier by name |
| memory_threshold_percent | % | 85.0 | memory use above which the host counts as loaded |
| min_health_score | score 0-100 | 40.0 | tasks below this health score wait unless critical |
| allow_memory_overcommit | bool | False | let critical tasks start without enough free memory |
| clearance_timeout_seconds | s | 300 | default time a task waits for clearance |
| check_interval_seconds | s | 10 | default time between clearance checks |
| min_retry_delay_seconds / max_retry_delay_seconds | s | 30 / 900 | bounds of the suggested retry delay |
| api_conn_id | id | ``thermal_pools_api`` | Airflow Connection of the REST API service user |
| readings_url | SQLAlchemy URL | SQLite file in AIRFLOW_HOME | where readings are recorded |
| readings_conn_id | id | empty | Airflow SQL connection used instead of readings_url |
| retention_days | days | 7.0 | readings older than this are deleted |
| monitor | ``host`` or ``replay`` | ``host`` | where readings come from |
| replay_trace | path | empty | trace file played back when monitor is ``replay`` |
| replay_started_at | epoch s | 0 | wall-clock start of a real-time replay (0 = stepped) |
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thermal_pools.reading import ThermalState

SECTION = "thermal_pools"

# Airflow pool names allow more, but these characters are safe in URLs, logs and the UI.
POOL_PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]*$")

# Maximum value of any duration setting: one year, in seconds.
MAX_SECONDS = 365 * 24 * 3600


class ConfigError(ValueError):
    """Invalid setting. The message names the setting, the value and the allowed range."""


def _check_factor(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(f"invalid {name} {value!r}: expected a factor in (0, 1], for example 0.7")


def _check_state(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 3:
        raise ConfigError(
            f"invalid {name} {value!r}: expected an integer thermal state 0-3 "
            "(0 nominal, 1 fair, 2 serious, 3 critical)"
        )


def _check_seconds(name: str, value: Any, *, allow_zero: bool = False) -> None:
    low_ok = value >= 0 if allow_zero else value > 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low_ok or value > MAX_SECONDS:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"invalid {name} {value!r}: expected a number of seconds {bound} and <= {MAX_SECONDS}")


@dataclass(frozen=True)
class ThermalSchedulingConfig:
    """All thermal-pools settings. The module docstring gives their units and defaults."""

    pool_prefix: str = "thermal_"
    base_slots_nominal: int = 10
    base_slots_fair: int = 10
    base_slots_serious: int = 10
    base_slots_critical: int = 4
    throttle_nominal: float = 1.0
    throttle_fair: float = 0.9
    throttle_serious: float = 0.7
    throttle_critical: float = 0.5
    memory_warning_factor: float = 0.75
    memory_critical_factor: float = 0.5
    low_power_factor: float = 0.75
    no_sensor_state: int = 0
    safe_state: int = 2
    sensor_grace_period_seconds: float = 300.0
    stabilization_window_seconds: float = 300.0
    stale_after_seconds: float = 180.0
    thermal_threshold_nominal: int = 0
    thermal_threshold_fair: int = 1
    thermal_threshold_serious: int = 2
    thermal_threshold_critical: int = 3
    memory_threshold_percent: float = 85.0
    min_health_score: float = 40.0
    allow_memory_overcommit: bool = False
    clearance_timeout_seconds: float = 300.0
    check_interval_seconds: float = 10.0
    min_retry_delay_seconds: float = 30.0
    max_retry_delay_seconds: float = 900.0
    api_conn_id: str = "thermal_pools_api"
    readings_url: str = ""
    readings_conn_id: str = ""
    retention_days: float = 7.0
    monitor: str = "host"
    replay_trace: str = ""
    replay_started_at: float = 0.0
    extra: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.pool_prefix, str) or not POOL_PREFIX_PATTERN.match(self.pool_prefix):
            raise ConfigError(
                f"invalid pool_prefix {self.pool_prefix!r}: use only letters, digits, '_', '.' and '-'"
            )

        for tier in ThermalState:
            slots = self.base_slots(tier)
            if isinstance(slots, bool) or not isinstance(slots, int) or slots < 0:
                raise ConfigError(
                    f"invalid base_slots_{tier.label} {slots!r}: expected a whole number of slots >= 0"
                )
            _check_factor(f"throttle_{tier.label}", self.throttle(tier))

        for name in ("memory_warning_factor", "memory_critical_factor", "low_power_factor"):
            _check_factor(name, getattr(self, name))

        for name in (
            "no_sensor_state",
            "safe_state",
            "thermal_threshold_nominal",
            "thermal_threshold_fair",
            "thermal_threshold_serious",
            "thermal_threshold_critical",
        ):
            _check_state(name, getattr(self, name))

        for name in ("sensor_grace_period_seconds", "stabilization_window_seconds"):
            _check_seconds(name, getattr(self, name), allow_zero=True)
        for name in (
            "stale_after_seconds",
            "clearance_timeout_seconds",
            "check_interval_seconds",
            "min_retry_delay_seconds",
            "max_retry_delay_seconds",
        ):
            _check_seconds(name, getattr(self, name))

        if self.min_retry_delay_seconds > self.max_retry_delay_seconds:
            raise ConfigError(
                f"invalid retry delay bounds: min_retry_delay_seconds {self.min_retry_delay_seconds!r} "
                f"exceeds max_retry_delay_seconds {self.max_retry_delay_seconds!r}"
            )

        if not 0 < self.memory_threshold_percent <= 100:
            raise ConfigError(
                f"invalid memory_threshold_percent {self.memory_threshold_percent!r}: expected a percent in (0, 100]"
            )
        if not 0 <= self.min_health_score <= 100:
            raise ConfigError(f"invalid min_health_score {self.min_health_score!r}: expected a score in [0, 100]")
        if not 0 < self.retention_days <= 3650:
            raise ConfigError(f"invalid retention_days {self.retention_days!r}: expected days in (0, 3650]")

        if self.monitor not in ("host", "replay"):
            raise ConfigError(f"invalid monitor {self.monitor!r}: use 'host' or 'replay'")
        if self.monitor == "replay" and not self.replay_trace:
            raise ConfigError("monitor is 'replay' but replay_trace is empty: set replay_trace to a trace file")
        if self.replay_started_at < 0:
            raise ConfigError(
                f"invalid replay_started_at {self.replay_started_at!r}: expected epoch seconds, or 0 for stepped replay"
            )
        if not self.api_conn_id:
            raise ConfigError("api_conn_id is empty: set it to the id of the Airflow Connection for the REST API")

    # -- per-tier lookups ------------------------------------------------------------------

    def base_slots(self, tier: ThermalState) -> int:
        return getattr(self, f"base_slots_{tier.label}")

    def throttle(self, state: ThermalState) -> float:
        return getattr(self, f"throttle_{state.label}")

    def pool_name(self, tier: ThermalState) -> str:
        """Return the name of the tier pool, for example ``thermal_serious``."""
        return f"{self.pool_prefix}{tier.label}"

    def pool_names(self) -> list[str]:
        return [self.pool_name(tier) for tier in ThermalState]

    def readings_database_url(self) -> str:
        """Return the SQLAlchemy URL of the readings table: ``readings_url``, else a SQLite file in AIRFLOW_HOME."""
        if self.readings_url:
            return self.readings_url
        home = Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow"))
        return f"sqlite:///{home / 'thermal_pools_readings.db'}"

    def replace(self, **changes: Any) -> ThermalSchedulingConfig:
        """Return a copy with some settings changed, validated like the original."""
        unknown = sorted(set(changes) - setting_names())
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)}: valid names are {', '.join(sorted(setting_names()))}")
        return dataclasses.replace(self, **changes)


def setting_names() -> set[str]:
    return {f.name for f in dataclasses.fields(ThermalSchedulingConfig) if f.name != "extra"}


def _convert(name: str, raw: str, default: Any) -> Any:
    """Convert a configuration string to the type of the setting's default."""
    text = raw.strip()
    try:
        if isinstance(default, bool):
            lowered = text.lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError(text)
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        kind = "true or false" if isinstance(default, bool) else type(default).__name__
        raise ConfigError(f"invalid [{SECTION}] {name} {raw!r}: expected {kind}") from None
    return text


def config_from_mapping(values: dict[str, str]) -> ThermalSchedulingConfig:
    """Build a config from string settings, as found in a configuration file section.

    A misspelled setting name is rejected rather than ignored, because a silent typo would leave
    a hot host running with the default.
    """
    defaults = ThermalSchedulingConfig()
    known = setting_names()
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown [{SECTION}] setting(s) {', '.join(unknown)}: valid names are {', '.join(sorted(known))}"
        )
    converted = {name: _convert(name, raw, getattr(defaults, name)) for name, raw in values.items()}
    return ThermalSchedulingConfig(**converted)


def load_config() -> ThermalSchedulingConfig:
    """Read the ``[thermal_pools]`` section of the Airflow configuration.

    Without Airflow installed, only ``AIRFLOW__THERMAL_POOLS__*`` environment variables apply.
    """
    values: dict[str, str] = {}
    try:
        from airflow.configuration import conf
    except ImportError:
        conf = None
    if conf is not None and conf.has_section(SECTION):
        values.update({k: str(v) for k, v in conf.getsection(SECTION).items()})
    prefix = f"AIRFLOW__{SECTION.upper()}__"
    for key, value in os.environ.items():
        if key.startswith(prefix):
            values[key[len(prefix):].lower()] = value
    return config_from_mapping(values)
