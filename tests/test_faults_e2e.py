"""Faults against a real Airflow: the api-server going away, a broken readings database and
maintenance steps racing each other.

Tests that break a component use their own Airflow (``outage_airflow``), so the session's
Airflow stays healthy for every other module. That deployment reaches the pools API through a
TCP relay on 127.0.0.1 (:class:`Relay`), because stopping the real api-server also stops
Airflow's Execution API, and then no task can run, fail or retry at all. Cutting only the relay
leaves task execution working while every pools request fails the way it does against a
stopped server.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from tests.airflow_helpers import pool_slots, run_once, task_states, trigger, unpause, wait_for, wait_for_dag, wait_for_run, write_trace
from thermal_pools.config import ThermalSchedulingConfig
from thermal_pools.local_airflow import ADMIN_USER, DAGS_FOLDER, SERVICE_USER, VIEWER_USER, LocalAirflow, free_port
from thermal_pools.maintenance import StepFailed, run_step
from thermal_pools.monitor import ReplayMonitor
from thermal_pools.pools_api import PoolsApiClient
from thermal_pools.reading import MemoryPressure, Reading, ThermalState, utc_now
from thermal_pools.store import ReadingStore

pytestmark = pytest.mark.airflow

MAINTENANCE_DAG = "thermal_pool_maintenance"
MAINTENANCE_TASK = "resize_tier_pools"
PROBE_DAG = "fault_probe"
CLI = str(Path(sys.executable).with_name("thermal-pools"))

# Sizes by the documented rules with base slots 10/10/10/4 and throttle 1.0/0.9/0.7/0.5.
SIZES = {
    ThermalState.NOMINAL: (10, 10, 10, 4),
    ThermalState.FAIR: (0, 9, 9, 3),
    ThermalState.SERIOUS: (0, 0, 7, 2),
    ThermalState.CRITICAL: (0, 0, 0, 2),
}

PROBE_DAG_SOURCE = '''
"""A one-task DAG that shows the scheduler still runs other work."""
from datetime import datetime

from airflow.sdk import dag, task


@dag(dag_id="fault_probe", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def fault_probe():
    @task
    def ping() -> str:
        return "pong"

    ping()


fault_probe()
'''


# A DAG file whose sensor argument is invalid: parsing it must fail with the argument's message.
BAD_SENSOR_DAG_SOURCE = '''
from datetime import datetime

from airflow.sdk import DAG

from thermal_pools.sensors.clearance import ThermalClearanceSensor

with DAG("bad_sensor_argument", schedule=None, start_date=datetime(2026, 1, 1)):
    ThermalClearanceSensor(task_id="wait_for_cool_host", thermal_threshold="scorching")
'''


def expected(prefix: str, state: ThermalState) -> dict[str, int]:
    return {f"{prefix}{tier.label}": slots for tier, slots in zip(ThermalState, SIZES[state])}


def make_reading(state: ThermalState, *, host: str = "fault-host", seconds: float = 0.0, **raw: object) -> Reading:
    return Reading(
        host=host,
        taken_at=utc_now() + timedelta(seconds=seconds),
        thermal_state=state,
        memory_used_percent=40.0,
        memory_available_gib=20.0,
        memory_pressure=MemoryPressure.NORMAL,
        cpu_load=0.2,
        raw=dict(raw),
    )


class FixedMonitor:
    """A monitor that returns one given reading, because the unit under test is the step, not the sensor."""

    def __init__(self, reading: Reading) -> None:
        self.reading = reading

    def read(self) -> Reading:
        return self.reading


def service_client(airflow: LocalAirflow) -> PoolsApiClient:
    return PoolsApiClient(airflow.base_url, SERVICE_USER, airflow.passwords[SERVICE_USER], conn_id="test")


def config_for(prefix: str) -> ThermalSchedulingConfig:
    return ThermalSchedulingConfig(pool_prefix=prefix, stabilization_window_seconds=0, sensor_grace_period_seconds=0)


def database_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "thermal_pools.maintenance" and record.getMessage().startswith("readings database ")
    ]


# -- readings database locked, full or missing -----------------------------------------------


def test_locked_database_still_applies(airflow, tmp_path, caplog):
    path = tmp_path / "readings.db"
    url = f"sqlite:///{path}"
    # A 0.2 s busy timeout instead of the store's 30 s keeps each failing query short.
    store = ReadingStore(url, engine=sa.create_engine(url, connect_args={"timeout": 0.2}))
    store.count()

    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        with caplog.at_level(logging.INFO), service_client(airflow) as client:
            result = run_step(config_for("dblock_"), FixedMonitor(make_reading(ThermalState.SERIOUS)), store, client)
    finally:
        locker.execute("ROLLBACK")
        locker.close()

    assert result.outcome == "applied"
    assert result.row_id is None
    with airflow.api() as api:
        assert pool_slots(api, "dblock_") == expected("dblock_", ThermalState.SERIOUS)
    warnings = database_warnings(caplog)
    assert any("failed to record the reading" in message for message in warnings)
    assert all("database is locked" in message for message in warnings)


def test_full_database_still_applies(airflow, tmp_path, caplog):
    path = tmp_path / "readings.db"
    url = f"sqlite:///{path}"
    store = ReadingStore(url)
    store.count()
    pages = sqlite3.connect(path).execute("PRAGMA page_count").fetchone()[0]

    @sa.event.listens_for(store.engine, "connect")
    def cap_size(connection, record) -> None:
        # No page beyond the ones the empty table uses: any row needing overflow pages fails.
        connection.execute(f"PRAGMA max_page_count = {pages}")

    store.engine.dispose()
    # 20 KB of raw sensor output needs overflow pages, so recording it fills the database.
    big = make_reading(ThermalState.CRITICAL, powermetrics="x" * 20_000)
    with caplog.at_level(logging.INFO), service_client(airflow) as client:
        result = run_step(config_for("dbfull_"), FixedMonitor(big), store, client)

    assert result.outcome == "applied"
    assert result.row_id is None
    assert store.count() == 0
    with airflow.api() as api:
        assert pool_slots(api, "dbfull_") == expected("dbfull_", ThermalState.CRITICAL)
    assert any("failed to record the reading" in m and "database or disk is full" in m for m in database_warnings(caplog))


def test_missing_database_still_applies(airflow, tmp_path, caplog):
    # The parent of the database path is a regular file, so SQLite cannot create it.
    (tmp_path / "not-a-folder").write_text("")
    store = ReadingStore(f"sqlite:///{tmp_path / 'not-a-folder' / 'readings.db'}")
    with caplog.at_level(logging.INFO), service_client(airflow) as client:
        result = run_step(config_for("dbgone_"), FixedMonitor(make_reading(ThermalState.FAIR)), store, client)

    assert result.outcome == "applied"
    with airflow.api() as api:
        assert pool_slots(api, "dbgone_") == expected("dbgone_", ThermalState.FAIR)
    warnings = database_warnings(caplog)
    assert any("failed to record the reading" in message for message in warnings)
    assert all("unable to open database file" in message for message in warnings)


def test_cli_sync_unwritable_database(airflow, tmp_path):
    (tmp_path / "not-a-folder").write_text("")
    trace = write_trace(tmp_path / "hot.jsonl", [2], host="cli-host")
    env = airflow.env()
    env["AIRFLOW__THERMAL_POOLS__READINGS_URL"] = f"sqlite:///{tmp_path / 'not-a-folder' / 'readings.db'}"
    env["AIRFLOW__THERMAL_POOLS__POOL_PREFIX"] = "clidb_"
    result = subprocess.run(
        [CLI, "sync", "--json", "--replay", str(trace)], capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL
    )

    assert result.returncode == 0, result.stderr
    assert "failed to record the reading" in result.stderr
    assert "unable to open database file" in result.stderr
    assert "Traceback" not in result.stderr
    # Log lines go to stderr, so stdout stays one JSON document.
    assert json.loads(result.stdout)["outcome"] == "applied"
    with airflow.api() as api:
        assert pool_slots(api, "clidb_") == expected("clidb_", ThermalState.SERIOUS)


# -- maintenance steps at the same time --------------------------------------------------------


def test_concurrent_steps_keep_newest(airflow, tmp_path):
    store = ReadingStore(f"sqlite:///{tmp_path / 'readings.db'}")
    config = config_for("race_")
    order = [ThermalState.CRITICAL, ThermalState.NOMINAL, ThermalState.SERIOUS, ThermalState.FAIR]
    rounds, threads_per_round = 4, 6

    with service_client(airflow) as client:
        for round_index in range(rounds):
            # Later threads carry later readings, and the newest one's state changes every round.
            readings = [
                make_reading(order[(round_index + i) % len(order)], seconds=round_index * 100 + i)
                for i in range(threads_per_round)
            ]
            barrier = threading.Barrier(threads_per_round)
            errors: list[BaseException] = []

            def step(reading: Reading) -> None:
                barrier.wait()
                try:
                    run_step(config, FixedMonitor(reading), store, client)
                except BaseException as error:  # noqa: BLE001 - reported by the assert below
                    errors.append(error)

            workers = [threading.Thread(target=step, args=(reading,)) for reading in reversed(readings)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(60)

            newest = readings[-1]
            assert errors == [], f"round {round_index}"
            assert store.count() == (round_index + 1) * threads_per_round, f"round {round_index}"
            with airflow.api() as api:
                assert pool_slots(api, "race_") == expected("race_", newest.thermal_state), f"round {round_index}"


def test_cli_sync_beside_dag_run(airflow, airflow_trace):
    store = ReadingStore(airflow.env()["AIRFLOW__THERMAL_POOLS__READINGS_URL"])
    before = store.count()
    cursor = ReplayMonitor(airflow_trace).cursor
    ReplayMonitor(airflow_trace).seek(1)
    try:
        with airflow.api() as api:
            run_id = trigger(api, MAINTENANCE_DAG)
            # The CLI step starts while the triggered run is queued or running.
            sync = subprocess.run(
                [CLI, "sync", "--json"], capture_output=True, text=True, env=airflow.env(), timeout=120, stdin=subprocess.DEVNULL
            )
            state = wait_for_run(api, MAINTENANCE_DAG, run_id)
            assert state == "success", task_states(api, MAINTENANCE_DAG, run_id)
            assert sync.returncode == 0, sync.stderr
            # Scheduled runs may add rows too, so the count is a lower bound.
            assert store.count() >= before + 2
            newest = store.latest("replayed-host")
            assert newest.planned_state == ThermalState.SERIOUS
            assert pool_slots(api) == newest.pools
    finally:
        ReplayMonitor(airflow_trace).seek(cursor)


# -- the api-server going away -----------------------------------------------------------------


class Relay:
    """A TCP relay from a fixed 127.0.0.1 port to the api-server, which a test can cut and restore."""

    def __init__(self, port: int, upstream_port: int) -> None:
        self.port = port
        self.upstream_port = upstream_port
        self.listener: socket.socket | None = None
        self.sockets: set[socket.socket] = set()
        self.lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Close the port and every open connection, as a stopped server would."""
        listener, self.listener = self.listener, None
        if listener is not None:
            # On Linux, close() alone does not wake a thread blocked in accept(), so that thread
            # would relay one more connection. shutdown() makes the accept fail at once.
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self.lock:
            for sock in self.sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self.sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self.listener is not listener:
                # Cut while this connection was being accepted.
                client.close()
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets.update((client, upstream))
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture(scope="module")
def relay() -> Iterator[Relay]:
    relay = Relay(free_port(), upstream_port=0)
    yield relay
    relay.stop()


@pytest.fixture(scope="module")
def outage_airflow(tmp_path_factory: pytest.TempPathFactory, relay: Relay) -> Iterator[LocalAirflow]:
    """Start a second Airflow with the maintenance DAG and a probe DAG, its pools API behind ``relay``."""
    dags = tmp_path_factory.mktemp("outage-dags")
    shutil.copy(DAGS_FOLDER / f"{MAINTENANCE_DAG}.py", dags)
    (dags / "fault_probe.py").write_text(PROBE_DAG_SOURCE)
    (dags / "bad_sensor_argument.py").write_text(BAD_SENSOR_DAG_SOURCE)
    trace = write_trace(tmp_path_factory.mktemp("outage-trace") / "host.jsonl", [2], host="outage-host")

    # The passwords file is written up front so the relayed connection can carry the password.
    home = tmp_path_factory.mktemp("outage-home")
    passwords = {ADMIN_USER: secrets.token_urlsafe(12), SERVICE_USER: secrets.token_urlsafe(18), VIEWER_USER: secrets.token_urlsafe(12)}
    (home / "passwords.json").write_text(json.dumps(passwords))
    connection = {"conn_type": "http", "host": "127.0.0.1", "port": relay.port, "login": SERVICE_USER, "password": passwords[SERVICE_USER]}

    local = LocalAirflow(
        home,
        dags_folder=dags,
        thermal_settings={
            "monitor": "replay",
            "replay_trace": str(trace),
            "stabilization_window_seconds": "0",
            "sensor_grace_period_seconds": "0",
        },
        extra_env={"AIRFLOW_CONN_THERMAL_POOLS_API": json.dumps(connection)},
    )
    relay.upstream_port = local.port
    relay.start()
    try:
        local.start()
        with local.api() as api:
            wait_for_dag(api, MAINTENANCE_DAG)
            wait_for_dag(api, PROBE_DAG)
            unpause(api, PROBE_DAG)
        yield local
    finally:
        local.stop()


def test_bad_sensor_dag_listed_as_import_error(outage_airflow):
    def listed() -> list[dict]:
        with outage_airflow.api() as api:
            errors = api.get("/api/v2/importErrors").json()["import_errors"]
        return [error for error in errors if error["filename"].endswith("bad_sensor_argument.py")]

    errors = wait_for(listed, timeout=120, what="the import error of bad_sensor_argument.py")
    assert len(errors) == 1
    assert "invalid thermal_threshold 'scorching': expected an integer thermal state 0-3" in errors[0]["stack_trace"]
    with outage_airflow.api() as api:
        assert api.get("/api/v2/dags/bad_sensor_argument").status_code == 404


def task_instance(api, run_id: str) -> dict:
    response = api.get(f"/api/v2/dags/{MAINTENANCE_DAG}/dagRuns/{run_id}/taskInstances/{MAINTENANCE_TASK}")
    response.raise_for_status()
    return response.json()


# Runs before the api-server outage below, because a task in flight when the api-server stops
# stays running until its DAG run times out, and max_active_runs=1 would hold this run back.
def test_dag_retries_unreachable_api(outage_airflow, relay):
    local = outage_airflow
    relay.stop()
    try:
        with local.api() as api:
            run_id = trigger(api, MAINTENANCE_DAG)

            def first_try_failed() -> bool:
                ti = task_instance(api, run_id)
                return ti["state"] == "up_for_retry" or ti["try_number"] >= 2

            # Scheduled runs of the same DAG retry against the cut relay too, and max_active_runs=1
            # queues this run behind them, so the wait allows several of their retry cycles.
            wait_for(first_try_failed, timeout=420, what="the maintenance task to fail its first try")
            # Other DAGs still run while the pools API is unreachable.
            probe_run, probe_state = run_once(local, api, PROBE_DAG)
    finally:
        relay.start()

    with local.api() as api:
        state = wait_for_run(api, MAINTENANCE_DAG, run_id, timeout=240)
        ti = task_instance(api, run_id)
        first_try = api.get(
            f"/api/v2/dags/{MAINTENANCE_DAG}/dagRuns/{run_id}/taskInstances/{MAINTENANCE_TASK}/logs/1",
            params={"full_content": True},
            headers={"Accept": "application/json"},
        ).text
        slots = pool_slots(api)

    assert probe_state == "success"
    assert state == "success"
    assert ti["try_number"] >= 2
    assert "pools not resized, previous sizes stay in force" in first_try
    assert "is unreachable" in first_try
    assert slots == expected("thermal_", ThermalState.SERIOUS)


class Captured(logging.Handler):
    """Keeps the records of the thermal_pools loggers for a module-scoped scenario."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def outage(outage_airflow: LocalAirflow, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Stop the api-server between two maintenance steps, restart it, then step again.

    The steps call run_step with a real client aimed straight at the api-server (not the relay)
    and pools under their own prefix, so the maintenance DAG's scheduled runs do not interfere.
    """
    local = outage_airflow
    store = ReadingStore(f"sqlite:///{tmp_path_factory.mktemp('outage-readings') / 'readings.db'}")
    config = config_for("outage_")
    captured = Captured()
    logger = logging.getLogger("thermal_pools")
    logger.addHandler(captured)
    level = logger.level
    logger.setLevel(logging.INFO)
    failure: StepFailed | None = None
    try:
        with service_client(local) as client:
            run_step(config, FixedMonitor(make_reading(ThermalState.NOMINAL, host="outage-host")), store, client)

            local.stop_component("api-server")
            try:
                run_step(config, FixedMonitor(make_reading(ThermalState.CRITICAL, host="outage-host")), store, client)
            except StepFailed as error:
                failure = error
            scheduler_alive = local.processes["scheduler"].poll() is None
            failed_row = store.latest("outage-host")

            local.restart("api-server")
            local.wait_until_healthy(180)
            with local.api() as api:
                kept = pool_slots(api, "outage_")
            after = run_step(config, FixedMonitor(make_reading(ThermalState.CRITICAL, host="outage-host")), store, client)
            with local.api() as api:
                converged = pool_slots(api, "outage_")
                probe_run, probe_state = run_once(local, api, PROBE_DAG)
    finally:
        logger.removeHandler(captured)
        logger.setLevel(level)

    return SimpleNamespace(
        failure=failure,
        records=captured.records,
        scheduler_alive=scheduler_alive,
        failed_row=failed_row,
        kept=kept,
        after=after,
        converged=converged,
        probe_state=probe_state,
    )


def test_api_down_step_fails(outage):
    assert isinstance(outage.failure, StepFailed)
    assert "is unreachable" in str(outage.failure)
    assert "start the api-server" in str(outage.failure)


def test_api_down_logged_with_cause(outage):
    errors = [r.getMessage() for r in outage.records if r.levelno == logging.ERROR and r.name == "thermal_pools.maintenance"]
    assert len(errors) == 1
    assert "host outage-host: pools not resized, previous sizes stay in force" in errors[0]
    assert "is unreachable" in errors[0]


def test_api_down_outcome_recorded(outage):
    assert outage.failed_row.thermal_state == ThermalState.CRITICAL
    assert outage.failed_row.outcome.startswith("failed: ")
    assert "is unreachable" in outage.failed_row.outcome


def test_api_down_pools_keep_sizes(outage):
    assert outage.kept == expected("outage_", ThermalState.NOMINAL)


def test_api_back_first_step_converges(outage):
    assert outage.after.outcome == "applied"
    assert outage.converged == expected("outage_", ThermalState.CRITICAL)


def test_api_down_scheduler_unaffected(outage):
    assert outage.scheduler_alive is True
    assert outage.probe_state == "success"
