"""ThermalClearanceSensor: argument checks, pool rule, poke decisions, deferral and timeouts."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow.sdk import DAG, PokeReturnValue, TaskGroup
from airflow.sdk.exceptions import AirflowRescheduleException, AirflowSensorTimeout, AirflowSkipException, TaskDeferred
from tests.airflow_helpers import CLEARANCE_KEYS, CRITICAL, FAILED, FAIR, NOMINAL, SERIOUS
from thermal_pools.monitor import ReplayMonitor
from thermal_pools.sensors import ThermalClearanceSensor, ThermalClearanceTrigger


@pytest.fixture
def replay(replay: ReplayMonitor, monkeypatch: pytest.MonkeyPatch) -> ReplayMonitor:
    """The shared stepped trace, with a 7 s check interval and a 120 s clearance timeout."""
    monkeypatch.setenv("AIRFLOW__THERMAL_POOLS__CHECK_INTERVAL_SECONDS", "7")
    monkeypatch.setenv("AIRFLOW__THERMAL_POOLS__CLEARANCE_TIMEOUT_SECONDS", "120")
    return replay


class RescheduleTaskInstance:
    """What BaseSensorOperator.execute asks of a task instance in reschedule mode."""

    def __init__(self, first_poke: datetime | None) -> None:
        self.first_poke = first_poke

    def get_first_reschedule_date(self, context: Any) -> datetime | None:
        return self.first_poke


# -- construction -------------------------------------------------------------------------------


def test_deferred_checks_use_check_interval(replay: ReplayMonitor) -> None:
    assert ThermalClearanceSensor(task_id="gate", deferrable=True).poke_interval == 7
    assert ThermalClearanceSensor(task_id="gate", mode="poke").poke_interval == 7


def test_sensor_defaults(replay: ReplayMonitor) -> None:
    sensor = ThermalClearanceSensor(task_id="gate")

    assert sensor.mode == "reschedule"
    assert sensor.pool == "default_pool"
    # Reschedule-mode checks take a worker slot each, so they default to Airflow's 60 s.
    assert sensor.poke_interval == 60
    assert sensor.timeout == 120
    assert sensor.deferrable is False
    assert set(sensor.template_fields) == {"thermal_threshold", "memory_required_gb", "priority", "target_host"}


@pytest.mark.parametrize("pool", ["thermal_nominal", "thermal_fair", "thermal_serious"])
def test_sensor_rejects_throttled_pool(replay: ReplayMonitor, pool: str) -> None:
    with pytest.raises(ValueError) as error:
        ThermalClearanceSensor(task_id="gate", pool=pool)

    message = str(error.value)
    assert message.startswith(f"task 'gate': invalid pool '{pool}': ")
    assert "gets 0 slots" in message
    assert "could never poke again" in message
    assert message.endswith("Use default_pool (the default) or thermal_critical, which always keeps a slot.")


def test_sensor_accepts_critical_pool(replay: ReplayMonitor) -> None:
    sensor = ThermalClearanceSensor(task_id="gate", pool="thermal_critical")

    assert sensor.pool == "thermal_critical"


def test_sensor_rejects_pool_with_custom_prefix(replay: ReplayMonitor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__THERMAL_POOLS__POOL_PREFIX", "gpu_")

    with pytest.raises(ValueError) as error:
        ThermalClearanceSensor(task_id="gate", pool="gpu_serious")

    assert "invalid pool 'gpu_serious'" in str(error.value)
    assert "or gpu_critical, which always keeps a slot" in str(error.value)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"thermal_threshold": 4}, "invalid thermal_threshold 4"),
        ({"thermal_threshold": True}, "invalid thermal_threshold True"),
        ({"thermal_threshold": 1.0}, "invalid thermal_threshold 1.0"),
        ({"thermal_threshold": "hot"}, "invalid thermal_threshold 'hot'"),
        ({"priority": "urgent"}, "invalid priority 'urgent': expected one of low, normal, high, critical"),
        ({"memory_required_gb": -1}, "invalid memory_required_gb -1"),
        ({"memory_required_gb": float("nan")}, "invalid memory_required_gb nan"),
        ({"memory_required_gb": "lots"}, "invalid memory_required_gb 'lots'"),
        ({"target_host": ""}, "invalid target_host ''"),
        ({"deferrable": "yes"}, "invalid deferrable 'yes'"),
    ],
)
def test_sensor_rejects_invalid_args(replay: ReplayMonitor, arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^task 'gate': {message}"):
        ThermalClearanceSensor(task_id="gate", **arguments)


def test_sensor_error_names_grouped_task(replay: ReplayMonitor) -> None:
    with DAG("grouped", schedule=None, start_date=datetime(2026, 1, 1)), TaskGroup("train"):
        with pytest.raises(ValueError) as error:
            ThermalClearanceSensor(task_id="thermal_clearance", thermal_threshold=5)

    assert str(error.value).startswith("task 'train.thermal_clearance': invalid thermal_threshold 5: ")


def test_sensor_accepts_tier_name(replay: ReplayMonitor) -> None:
    replay.seek(FAIR)
    sensor = ThermalClearanceSensor(task_id="gate", thermal_threshold="fair")

    assert sensor.poke({}).is_done


def test_sensor_checks_rendered_template(replay: ReplayMonitor) -> None:
    sensor = ThermalClearanceSensor(task_id="gate", thermal_threshold="{{ params.threshold }}")
    sensor.thermal_threshold = "7"  # as Jinja would render it

    with pytest.raises(ValueError, match="^task 'gate': invalid thermal_threshold '7'"):
        sensor.poke({})


# -- pokes --------------------------------------------------------------------------------------


def test_poke_holds_when_hot(replay: ReplayMonitor) -> None:
    replay.seek(SERIOUS)
    sensor = ThermalClearanceSensor(task_id="gate", thermal_threshold=1)

    result = sensor.poke({})

    assert isinstance(result, PokeReturnValue)
    assert result.is_done is False
    assert result.xcom_value is None


def test_poke_clears_with_xcom(replay: ReplayMonitor) -> None:
    replay.seek(FAIR)
    sensor = ThermalClearanceSensor(task_id="gate", thermal_threshold=1, memory_required_gb=4)

    result = sensor.poke({})

    assert result.is_done is True
    value = result.xcom_value
    assert set(value) == CLEARANCE_KEYS
    assert json.loads(json.dumps(value)) == value
    assert value["thermal_state"] == 1
    assert value["throttle_level"] == 0.9
    assert value["host"] == "replayed-host"
    assert value["memory_available_gib"] == 20.0
    assert 0 <= value["health_score"] <= 100
    assert datetime.fromisoformat(value["taken_at"]).tzinfo is not None


def test_poke_holds_for_memory(replay: ReplayMonitor) -> None:
    replay.seek(NOMINAL)
    sensor = ThermalClearanceSensor(task_id="gate", thermal_threshold=3, memory_required_gb=19)

    assert sensor.poke({}).is_done is False


def test_poke_critical_bypasses_threshold(replay: ReplayMonitor) -> None:
    replay.seek(CRITICAL)
    sensor = ThermalClearanceSensor(task_id="gate", thermal_threshold=0, priority="critical")

    result = sensor.poke({})

    assert result.is_done is True
    assert result.xcom_value["throttle_level"] == 0.5


def test_poke_failed_sensor_holds(replay: ReplayMonitor) -> None:
    replay.seek(FAILED)
    sensor = ThermalClearanceSensor(task_id="gate", thermal_threshold=1)

    assert sensor.poke({}).is_done is False


def test_poke_read_error_retried(replay: ReplayMonitor) -> None:
    sensor = ThermalClearanceSensor(task_id="gate", thermal_threshold=1)
    replay.cursor_path.write_text("not a row index\n")

    held = sensor.poke({})
    replay.seek(NOMINAL)
    cleared = sensor.poke({})

    assert held.is_done is False
    assert cleared.is_done is True


# -- reschedule mode, as BaseSensorOperator.execute runs it -------------------------------------


def test_execute_reschedules_while_hot(replay: ReplayMonitor) -> None:
    replay.seek(SERIOUS)
    sensor = ThermalClearanceSensor(task_id="gate", thermal_threshold=1, timeout=60, poke_interval=7)

    with pytest.raises(AirflowRescheduleException) as raised:
        sensor.execute({"ti": RescheduleTaskInstance(first_poke=None)})

    wait = (raised.value.reschedule_date - datetime.now(timezone.utc)).total_seconds()
    assert 0 < wait <= 7


def test_execute_times_out(replay: ReplayMonitor) -> None:
    replay.seek(SERIOUS)
    sensor = ThermalClearanceSensor(task_id="gate", thermal_threshold=1, timeout=60)
    started = datetime.now(timezone.utc) - timedelta(seconds=61)

    with pytest.raises(AirflowSensorTimeout):
        sensor.execute({"ti": RescheduleTaskInstance(first_poke=started)})


def test_execute_soft_fail_skips(replay: ReplayMonitor) -> None:
    replay.seek(SERIOUS)
    sensor = ThermalClearanceSensor(task_id="gate", thermal_threshold=1, timeout=60, soft_fail=True)
    started = datetime.now(timezone.utc) - timedelta(seconds=61)

    with pytest.raises(AirflowSkipException):
        sensor.execute({"ti": RescheduleTaskInstance(first_poke=started)})


def test_execute_returns_clearance(replay: ReplayMonitor) -> None:
    replay.seek(NOMINAL)
    sensor = ThermalClearanceSensor(task_id="gate", thermal_threshold=1)

    value = sensor.execute({"ti": RescheduleTaskInstance(first_poke=None)})

    assert set(value) == CLEARANCE_KEYS
    assert value["throttle_level"] == 1.0


# -- deferrable mode ----------------------------------------------------------------------------


def test_deferrable_defers_when_hot(replay: ReplayMonitor) -> None:
    replay.seek(SERIOUS)
    sensor = ThermalClearanceSensor(task_id="gate", thermal_threshold=1, deferrable=True, timeout=30, poke_interval=2)

    with pytest.raises(TaskDeferred) as raised:
        sensor.execute({})

    deferral = raised.value
    trigger = deferral.trigger
    assert isinstance(trigger, ThermalClearanceTrigger)
    assert deferral.method_name == "execute_complete"
    assert deferral.timeout > timedelta(seconds=30)
    classpath, kwargs = trigger.serialize()
    assert classpath == "thermal_pools.sensors.clearance_trigger.ThermalClearanceTrigger"
    assert kwargs["thermal_threshold"] == 1
    assert kwargs["poll_interval"] == 2
    assert kwargs["end_task_on_clearance"] is True
    assert 0 < kwargs["deadline"] - datetime.now(timezone.utc).timestamp() <= 30


def test_deferrable_clear_host_skips_deferral(replay: ReplayMonitor) -> None:
    replay.seek(NOMINAL)
    sensor = ThermalClearanceSensor(task_id="gate", thermal_threshold=1, deferrable=True)

    value = sensor.execute({})

    assert set(value) == CLEARANCE_KEYS


def test_resume_cleared_returns_clearance(replay: ReplayMonitor) -> None:
    # The event of a trigger deferred before the trigger ended cleared sensors itself.
    sensor = ThermalClearanceSensor(task_id="gate", deferrable=True)
    clearance = {"thermal_state": 1, "throttle_level": 0.9}

    value = sensor.resume_execution("execute_complete", {"event": {"status": "cleared", "clearance": clearance}}, {})

    assert value == clearance


def test_resume_timeout_fails(replay: ReplayMonitor) -> None:
    sensor = ThermalClearanceSensor(task_id="gate", deferrable=True)
    event = {"status": "timeout", "message": "gate was not cleared", "reason": "hot"}

    with pytest.raises(AirflowSensorTimeout, match="gate was not cleared"):
        sensor.resume_execution("execute_complete", {"event": event}, {})


def test_resume_timeout_soft_fail_skips(replay: ReplayMonitor) -> None:
    sensor = ThermalClearanceSensor(task_id="gate", deferrable=True, soft_fail=True)
    event = {"status": "timeout", "message": "gate was not cleared", "reason": "hot"}

    with pytest.raises(AirflowSkipException):
        sensor.resume_execution("execute_complete", {"event": event}, {})


@pytest.mark.parametrize(("soft_fail", "expected"), [(False, AirflowSensorTimeout), (True, AirflowSkipException)])
def test_resume_deferral_timeout(replay: ReplayMonitor, soft_fail: bool, expected: type[Exception]) -> None:
    sensor = ThermalClearanceSensor(task_id="gate", deferrable=True, soft_fail=soft_fail)

    # Airflow's own deferral timeout, raised when the trigger never fired.
    with pytest.raises(expected):
        sensor.resume_execution("__fail__", {"error": "Trigger timeout"}, {})
