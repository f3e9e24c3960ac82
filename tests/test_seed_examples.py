"""The documented usage examples of the scheduler and its configuration, run as written.

Only the import paths differ, and each scheduler gets a fake monitor, because the macOS thermal
sensor cannot be read here.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from thermal_pools.reading import MemoryPressure, Reading, ThermalState

TAKEN_AT = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


class FakeMonitor:
    def __init__(self, reading: Reading) -> None:
        self.reading = reading

    def read(self) -> Reading:
        return self.reading


def printed_lines(capsys) -> list[str]:
    """Lines the example printed. Airflow's log handler, once configured, also writes to stdout."""
    return capsys.readouterr().out.splitlines()


def host_reading(state: ThermalState, available_gib: float = 48.0) -> Reading:
    return Reading(
        host="mac-studio",
        taken_at=TAKEN_AT,
        thermal_state=state,
        memory_used_percent=40.0,
        memory_available_gib=available_gib,
        memory_pressure=MemoryPressure.NORMAL,
        cpu_load=0.3,
        low_power_mode=False,
        on_battery=False,
    )


def test_basic_usage_runs(capsys):
    from thermal_pools import ThermalAwareScheduler

    monitor = FakeMonitor(host_reading(ThermalState.FAIR))

    # Create scheduler
    scheduler = ThermalAwareScheduler(monitor=monitor)

    # Check if task should run
    decision = scheduler.should_run_task(
        task_id="train_model",
        thermal_threshold=2,  # Max serious
        memory_required_gb=16.0,
        priority="high",
    )

    if decision.should_run:
        print(f"Running with throttle: {decision.throttle_level}")
    else:
        print(f"Delayed: {decision.reason}")

    assert "Running with throttle: 0.9" in printed_lines(capsys)


def test_basic_usage_delayed(capsys):
    from thermal_pools import ThermalAwareScheduler

    scheduler = ThermalAwareScheduler(monitor=FakeMonitor(host_reading(ThermalState.CRITICAL)))

    decision = scheduler.should_run_task(
        task_id="train_model",
        thermal_threshold=2,  # Max serious
        memory_required_gb=16.0,
        priority="high",
    )

    if decision.should_run:
        print(f"Running with throttle: {decision.throttle_level}")
    else:
        print(f"Delayed: {decision.reason}")

    [output] = [line for line in printed_lines(capsys) if line.startswith("Delayed:")]
    assert output.startswith("Delayed: Hold train_model (high priority) on mac-studio.")
    assert "thermal state critical (3, sensor)" in output.lower()


def test_task_profiles():
    from thermal_pools.profiles import create_task_config

    # Training profile
    config = create_task_config("train_task", profile="training")
    # thermal_threshold=2, memory=16GB, priority=high
    assert (config.thermal_threshold, config.memory_required_gb, config.priority) == (2, 16.0, "high")

    # Inference profile
    config = create_task_config("inference_task", profile="inference")
    # thermal_threshold=1, memory=8GB, priority=normal
    assert (config.thermal_threshold, config.memory_required_gb, config.priority) == (1, 8.0, "normal")

    # Preprocessing profile
    config = create_task_config("prep_task", profile="preprocessing")
    # thermal_threshold=1, memory=4GB, priority=normal
    assert (config.thermal_threshold, config.memory_required_gb, config.priority) == (1, 4.0, "normal")

    # Deployment profile
    config = create_task_config("deploy_task", profile="deployment")
    # thermal_threshold=3, memory=2GB, priority=critical
    assert (config.thermal_threshold, config.memory_required_gb, config.priority) == (3, 2.0, "critical")


def test_custom_configuration():
    from thermal_pools.profiles import create_task_config

    config = create_task_config(
        "custom_task",
        profile="training",  # Start with training profile
        thermal_threshold=1,  # Override to lower threshold
        memory_required_gb=32.0,  # Override memory
    )

    assert config.task_id == "custom_task"
    assert config.thermal_threshold == 1
    assert config.memory_required_gb == 32.0
    assert config.priority == "high"


def test_configuration_suggestions(capsys):
    from thermal_pools import ThermalAwareScheduler

    scheduler = ThermalAwareScheduler(monitor=FakeMonitor(host_reading(ThermalState.SERIOUS)))
    suggestion = scheduler.suggest_task_configuration("training")

    print(f"Batch size: {suggestion['config']['batch_size']}")
    print(f"Workers: {suggestion['config']['workers']}")
    print(f"Memory: {suggestion['config']['memory_gb']}GB")
    print(f"Throttle: {suggestion['throttle_level']}")

    # Training runs at batch 32 with 4 workers and 16 GiB; serious state scales them by 0.7.
    lines = printed_lines(capsys)
    assert "Batch size: 22" in lines
    assert "Workers: 2" in lines
    assert "Memory: 11.2GB" in lines
    assert "Throttle: 0.7" in lines


def test_monitoring_and_stats(capsys):
    from thermal_pools import ThermalAwareScheduler

    scheduler = ThermalAwareScheduler(monitor=FakeMonitor(host_reading(ThermalState.NOMINAL)))
    stats = scheduler.get_scheduling_stats()

    print(f"Thermal state: {stats['thermal_state']}")
    print(f"Health score: {stats['health_score']}")
    print(f"Memory utilization: {stats['memory_utilization']}%")
    print(f"Can schedule normal: {stats['can_schedule_normal']}")
    print(f"Recommendations: {stats['recommendations']}")

    lines = printed_lines(capsys)
    assert "Thermal state: 0" in lines
    assert "Health score: 95.3" in lines  # 100 - 10 * 40 / 85, rounded
    assert "Memory utilization: 40.0%" in lines
    assert "Can schedule normal: True" in lines
    assert "Recommendations: ['No action needed: the host is nominal with health score 95.3.']" in lines


def test_thermal_scheduling_config():
    from thermal_pools.config import ThermalSchedulingConfig

    config = ThermalSchedulingConfig(
        thermal_threshold_nominal=0,  # Nominal threshold
        thermal_threshold_fair=1,  # Fair threshold
        thermal_threshold_serious=2,  # Serious threshold
        thermal_threshold_critical=3,  # Critical threshold
        memory_threshold_percent=85.0,  # Memory pressure threshold
        min_health_score=40.0,  # Minimum health to run
        clearance_timeout_seconds=300,  # Default clearance timeout
        check_interval_seconds=10,  # Thermal check interval
    )

    assert config.memory_threshold_percent == 85.0
    assert config.min_health_score == 40.0
    assert config.clearance_timeout_seconds == 300
    assert config.check_interval_seconds == 10


def test_thermal_scheduling_config_from_profiles():
    from thermal_pools.config import ThermalSchedulingConfig as FromConfig
    from thermal_pools.profiles import ThermalSchedulingConfig

    assert ThermalSchedulingConfig is FromConfig


def test_task_config():
    from thermal_pools.profiles import TaskConfig

    config = TaskConfig(
        task_id="my_task",
        thermal_threshold=2,  # Max thermal state
        memory_required_gb=16.0,  # Memory requirement
        priority="high",  # Task priority
        retry_on_thermal=True,  # Retry on thermal throttle
        wait_for_clearance=True,  # Wait for clearance
        max_retries=3,  # Max retry attempts
        retry_delay_seconds=60,  # Retry delay
    )

    assert config.task_id == "my_task"
    assert config.priority == "high"
    assert config.max_retries == 3
    assert config.retry_delay_seconds == 60


def test_task_config_top_level_import():
    from thermal_pools import TaskConfig, create_task_config, register_profile

    assert create_task_config("t", profile="inference") == TaskConfig(
        task_id="t", thermal_threshold=1, memory_required_gb=8.0, priority="normal", batch_size=64, workers=2
    )
    assert callable(register_profile)


@pytest.mark.parametrize("state", list(ThermalState))
def test_xcom_metrics_example(state, capsys):
    from thermal_pools import ThermalAwareScheduler

    scheduler = ThermalAwareScheduler(monitor=FakeMonitor(host_reading(state)))
    thermal_metrics = scheduler.should_run_task("previous_task").to_xcom()

    print(f"Previous task thermal: {thermal_metrics['thermal_state']}")

    assert f"Previous task thermal: {int(state)}" in printed_lines(capsys)
