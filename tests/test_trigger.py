"""ThermalClearanceTrigger and ClearanceCheck: serialization, events, remote hosts, last good value."""

from __future__ import annotations

import asyncio
import importlib
import json
import socket
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import TypeAdapter

from airflow.sdk.execution_time import task_runner
from airflow.sdk.execution_time.comms import SetXCom
from airflow.triggers.base import DiscrimatedTriggerEvent, TaskSuccessEvent, TriggerEvent
from airflow.utils.state import TaskInstanceState
from tests.airflow_helpers import CLEARANCE_KEYS, CRITICAL, FAILED, FAIR, NOMINAL, SERIOUS
from thermal_pools.config import load_config
from thermal_pools.monitor import ReplayMonitor
from thermal_pools.reading import MemoryPressure, Reading, ThermalState, utc_now
from thermal_pools.sensors.clearance_trigger import ClearanceCheck, ThermalClearanceTrigger
from thermal_pools.store import ReadingStore


@pytest.fixture
def store(tmp_path: Path, replay: ReplayMonitor) -> ReadingStore:
    return ReadingStore(f"sqlite:///{tmp_path / 'readings.db'}")


def record(store: ReadingStore, host: str, state: ThermalState | None, age_seconds: float) -> Reading:
    """Record a maintenance step of ``host`` whose reading is ``age_seconds`` old."""
    reading = Reading(
        host=host,
        taken_at=utc_now() - timedelta(seconds=age_seconds),
        thermal_state=state,
        thermal_reason="" if state is not None else "sensor failed: test",
        memory_used_percent=30.0,
        memory_available_gib=12.0,
        memory_pressure=MemoryPressure.NORMAL,
        cpu_load=0.1,
    )
    observed = state if state is not None else ThermalState.SERIOUS
    store.record(reading, observed_state=observed, planned_state=observed, basis="sensor", throttle=1.0, health_score=90.0, pools={})
    return reading


class SupervisorComms:
    """Records what a trigger sends to the triggerer, which runs only under a real triggerer."""

    def __init__(self) -> None:
        self.sent: list[object] = []

    async def asend(self, message: object) -> None:
        self.sent.append(message)


@pytest.fixture
def comms(monkeypatch: pytest.MonkeyPatch) -> SupervisorComms:
    recorder = SupervisorComms()
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", recorder, raising=False)
    return recorder


def ending_trigger(**changes: object) -> ThermalClearanceTrigger:
    """A trigger that ends its task, attached to a task instance as the triggerer attaches it."""
    trigger = make_trigger(end_task_on_clearance=True, **changes)
    trigger.task_instance = SimpleNamespace(dag_id="training", task_id="gate", run_id="manual__1", map_index=-1)
    return trigger


def make_trigger(**changes: object) -> ThermalClearanceTrigger:
    arguments: dict[str, object] = {
        "task_id": "gate",
        "thermal_threshold": 1,
        "memory_required_gb": 2.0,
        "priority": "normal",
        "target_host": socket.gethostname(),
        "deadline": time.time() + 60,
        "poll_interval": 0.05,
    }
    arguments.update(changes)
    return ThermalClearanceTrigger(**arguments)


async def next_event(trigger: ThermalClearanceTrigger, timeout: float = 20) -> TriggerEvent:
    events = trigger.run()
    try:
        return await asyncio.wait_for(anext(events), timeout)
    finally:
        await events.aclose()


async def first_event(trigger: ThermalClearanceTrigger, timeout: float = 20) -> dict:
    return (await next_event(trigger, timeout)).payload


# -- serialization ------------------------------------------------------------------------------


@pytest.mark.parametrize("end_task", [False, True])
def test_trigger_serialize_round_trip(end_task: bool) -> None:
    trigger = make_trigger(exponential_backoff=True, max_poll_interval=30.0, end_task_on_clearance=end_task)

    classpath, kwargs = trigger.serialize()
    module_name, class_name = classpath.rsplit(".", 1)
    rebuilt = getattr(importlib.import_module(module_name), class_name)(**json.loads(json.dumps(kwargs)))

    assert rebuilt.serialize() == (classpath, kwargs)
    assert class_name == "ThermalClearanceTrigger"
    assert kwargs["end_task_on_clearance"] is end_task


def test_trigger_end_task_defaults_off() -> None:
    # Operators leave the flag off and a trigger serialized before it existed has no such kwarg:
    # both must resume the task on a worker.
    _, kwargs = make_trigger().serialize()

    assert kwargs["end_task_on_clearance"] is False


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"poll_interval": 0}, "invalid poll_interval 0"),
        ({"deadline": float("inf")}, "invalid deadline inf"),
        ({"end_task_on_clearance": "yes"}, "invalid end_task_on_clearance 'yes'"),
    ],
)
def test_trigger_rejects_invalid_args(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_trigger(**change)


def test_trigger_backoff_interval() -> None:
    trigger = make_trigger(poll_interval=5, exponential_backoff=True, max_poll_interval=12)

    intervals = [5.0]
    for _ in range(3):
        intervals.append(trigger._next_interval(intervals[-1]))

    assert intervals == [5.0, 10.0, 12.0, 12.0]


# -- events -------------------------------------------------------------------------------------


def test_trigger_clears_after_cooling(replay: ReplayMonitor) -> None:
    replay.seek(SERIOUS)

    async def scenario() -> tuple[bool, dict]:
        events = make_trigger().run()
        waiting = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0.5)
        still_waiting = not waiting.done()
        replay.seek(FAIR)
        event = await asyncio.wait_for(waiting, 20)
        await events.aclose()
        return still_waiting, event.payload

    still_waiting, payload = asyncio.run(scenario())

    assert still_waiting
    assert payload["status"] == "cleared"
    assert payload["checks"] > 1
    assert payload["clearance"]["thermal_state"] == 1
    assert payload["clearance"]["throttle_level"] == 0.9
    assert payload["clearance"]["host"] == "replayed-host"


def test_trigger_ends_task_on_clearance(replay: ReplayMonitor, comms: SupervisorComms) -> None:
    replay.seek(FAIR)

    event = asyncio.run(next_event(ending_trigger()))

    assert isinstance(event, TaskSuccessEvent)
    assert event.task_instance_state == TaskInstanceState.SUCCESS
    assert event.xcoms is None


def test_trigger_end_task_pushes_clearance(replay: ReplayMonitor, comms: SupervisorComms) -> None:
    replay.seek(FAIR)

    asyncio.run(next_event(ending_trigger()))

    assert len(comms.sent) == 1
    message = comms.sent[0]
    assert isinstance(message, SetXCom)
    assert message.key == "return_value"
    assert (message.dag_id, message.task_id, message.run_id, message.map_index) == ("training", "gate", "manual__1", -1)
    clearance = message.value
    assert set(clearance) == CLEARANCE_KEYS
    assert clearance["thermal_state"] == 1
    assert clearance["throttle_level"] == 0.9
    assert clearance["host"] == "replayed-host"


def test_trigger_end_event_round_trip(replay: ReplayMonitor, comms: SupervisorComms) -> None:
    # The trigger runner sends each event to the triggerer process as JSON, rebuilt through
    # Airflow's discriminated event union, which must still end the task successfully.
    replay.seek(NOMINAL)
    event = asyncio.run(next_event(ending_trigger()))

    rebuilt = TypeAdapter(DiscrimatedTriggerEvent).validate_json(json.dumps(event.model_dump()))

    assert isinstance(rebuilt, TaskSuccessEvent)
    assert rebuilt.task_instance_state == TaskInstanceState.SUCCESS


def test_trigger_end_task_timeout_resumes(replay: ReplayMonitor, comms: SupervisorComms) -> None:
    replay.seek(SERIOUS)

    event = asyncio.run(next_event(ending_trigger(deadline=time.time() + 0.2)))

    assert not isinstance(event, TaskSuccessEvent)
    assert event.payload["status"] == "timeout"
    assert comms.sent == []


def test_trigger_times_out(replay: ReplayMonitor) -> None:
    replay.seek(SERIOUS)

    payload = asyncio.run(first_event(make_trigger(deadline=time.time() + 0.3)))

    assert payload["status"] == "timeout"
    assert "not cleared" in payload["message"]
    assert "serious" in payload["reason"]


def test_trigger_failed_sensor_times_out(replay: ReplayMonitor) -> None:
    replay.seek(FAILED)

    payload = asyncio.run(first_event(make_trigger(deadline=time.time() + 0.2)))

    assert payload["status"] == "timeout"
    assert "safe state" in payload["reason"]


def test_trigger_remote_host_fresh(store: ReadingStore) -> None:
    record(store, "studio-mac", ThermalState.NOMINAL, age_seconds=10)

    payload = asyncio.run(first_event(make_trigger(target_host="studio-mac")))

    assert payload["status"] == "cleared"
    assert payload["clearance"]["host"] == "studio-mac"
    assert payload["clearance"]["memory_available_gib"] == 12.0


def test_trigger_remote_host_stale(store: ReadingStore) -> None:
    record(store, "studio-mac", ThermalState.NOMINAL, age_seconds=load_config().stale_after_seconds + 60)

    payload = asyncio.run(first_event(make_trigger(target_host="studio-mac", deadline=time.time() + 0.2)))

    assert payload["status"] == "timeout"
    assert "older than stale_after_seconds" in payload["reason"]


def test_trigger_remote_host_unrecorded(store: ReadingStore) -> None:
    payload = asyncio.run(first_event(make_trigger(target_host="never-seen", deadline=time.time() + 0.2)))

    assert payload["status"] == "timeout"
    assert "no reading of host never-seen recorded" in payload["reason"]


# -- ClearanceCheck -----------------------------------------------------------------------------


def test_check_local_host_reads_monitor(replay: ReplayMonitor) -> None:
    replay.seek(CRITICAL)
    check = ClearanceCheck("gate", thermal_threshold=3)

    decision = check.decide()

    assert check.local
    assert decision.should_run
    assert decision.thermal_state == ThermalState.CRITICAL


def test_check_recalls_last_good(replay: ReplayMonitor, store: ReadingStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__THERMAL_POOLS__SENSOR_GRACE_PERIOD_SECONDS", "300")
    record(store, "replayed-host", ThermalState.NOMINAL, age_seconds=30)
    replay.seek(FAILED)

    decision = ClearanceCheck("gate", thermal_threshold=1).decide()

    # The last good value is what the decision reports, but a failed read clears nothing.
    assert decision.observation_basis.startswith("last good value")
    assert not decision.should_run
    assert "sensor read failed" in decision.reason


def test_check_stale_remote_ignores_last_good(store: ReadingStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__THERMAL_POOLS__SENSOR_GRACE_PERIOD_SECONDS", "300")
    record(store, "studio-mac", ThermalState.NOMINAL, age_seconds=load_config().stale_after_seconds + 30)

    decision = ClearanceCheck("gate", thermal_threshold=1, target_host="studio-mac").decide()

    assert not decision.should_run
    assert decision.observation_basis.startswith("safe state")
