"""Settings: defaults, parsing from the Airflow configuration and rejection of bad values."""

from __future__ import annotations

import pytest

from thermal_pools.config import ConfigError, ThermalSchedulingConfig, config_from_mapping, load_config
from thermal_pools.reading import ThermalState


def test_defaults_match_tier_throttles():
    config = ThermalSchedulingConfig()
    assert [config.throttle(state) for state in ThermalState] == [1.0, 0.9, 0.7, 0.5]


def test_pool_names_use_prefix():
    config = ThermalSchedulingConfig(pool_prefix="mac1.thermal-")
    assert config.pool_names() == ["mac1.thermal-nominal", "mac1.thermal-fair", "mac1.thermal-serious", "mac1.thermal-critical"]


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv("AIRFLOW__THERMAL_POOLS__BASE_SLOTS_SERIOUS", "6")
    monkeypatch.setenv("AIRFLOW__THERMAL_POOLS__SAFE_STATE", "3")
    config = load_config()
    assert config.base_slots_serious == 6
    assert config.safe_state == 3


BAD_SETTINGS = [
    ({"pool_prefix": "thermal pools"}, "pool_prefix"),
    ({"pool_prefix": "thermal/"}, "pool_prefix"),
    ({"base_slots_fair": "-1"}, "base_slots_fair"),
    ({"base_slots_fair": "2.5"}, "base_slots_fair"),
    ({"throttle_serious": "0"}, "throttle_serious"),
    ({"throttle_serious": "1.5"}, "throttle_serious"),
    ({"safe_state": "4"}, "safe_state"),
    ({"no_sensor_state": "-1"}, "no_sensor_state"),
    ({"clearance_timeout_seconds": "0"}, "clearance_timeout_seconds"),
    ({"check_interval_seconds": "-5"}, "check_interval_seconds"),
    ({"memory_threshold_percent": "120"}, "memory_threshold_percent"),
    ({"min_health_score": "101"}, "min_health_score"),
    ({"retention_days": "0"}, "retention_days"),
    ({"monitor": "sysfs"}, "monitor"),
    ({"monitor": "replay"}, "replay_trace"),
    ({"allow_memory_overcommit": "maybe"}, "allow_memory_overcommit"),
    ({"stabilisation_window_seconds": "60"}, "stabilisation_window_seconds"),
    ({"min_retry_delay_seconds": "100", "max_retry_delay_seconds": "10"}, "min_retry_delay_seconds"),
]


@pytest.mark.parametrize(("values", "named"), BAD_SETTINGS)
def test_bad_setting_rejected(values, named):
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(values)
    assert named in str(caught.value)


def test_bad_value_message_names_value():
    with pytest.raises(ConfigError, match=r"invalid throttle_fair 1\.5: expected a factor in \(0, 1\]"):
        config_from_mapping({"throttle_fair": "1.5"})


def test_replace_rejects_unknown_name():
    with pytest.raises(ConfigError, match="unknown setting"):
        ThermalSchedulingConfig().replace(pool_prefx="x")
