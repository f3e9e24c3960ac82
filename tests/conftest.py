"""Shared fixtures. The ``airflow`` fixture starts one real local Airflow for the whole session."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Keep Airflow, imported by the tests themselves, away from ~/airflow and from settings of the
# machine: every test process gets an empty AIRFLOW_HOME and no [thermal_pools] overrides.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="thermal-pools-test-home-")
for _name in [name for name in os.environ if name.startswith("AIRFLOW__THERMAL_POOLS__")]:
    del os.environ[_name]

import pytest  # noqa: E402

from tests.airflow_helpers import unpause, wait_for_dag, write_trace  # noqa: E402
from thermal_pools.local_airflow import LocalAirflow  # noqa: E402
from thermal_pools.monitor import ReplayMonitor  # noqa: E402

# Artifacts (screenshots, Airflow logs of failed runs) land here; CI keeps the folder.
ARTIFACTS = Path(os.environ.get("THERMAL_POOLS_TEST_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts"))


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ReplayMonitor:
    """A stepped trace (rows: nominal, fair, serious, critical, failed) that load_config() plays."""
    trace = write_trace(tmp_path / "host.jsonl", [0, 1, 2, 3, None], host="replayed-host")
    monkeypatch.setenv("AIRFLOW__THERMAL_POOLS__MONITOR", "replay")
    monkeypatch.setenv("AIRFLOW__THERMAL_POOLS__REPLAY_TRACE", str(trace))
    monkeypatch.setenv("AIRFLOW__THERMAL_POOLS__READINGS_URL", f"sqlite:///{tmp_path / 'readings.db'}")
    monkeypatch.setenv("AIRFLOW__THERMAL_POOLS__SENSOR_GRACE_PERIOD_SECONDS", "0")
    return ReplayMonitor(trace)


@pytest.fixture(scope="session")
def airflow_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stepped trace the session's Airflow replays; tests move its cursor."""
    folder = tmp_path_factory.mktemp("trace")
    return write_trace(folder / "host.jsonl", [0, 2, 3, 0, 1, None], host="replayed-host")


@pytest.fixture(scope="session")
def airflow(tmp_path_factory: pytest.TempPathFactory, airflow_trace: Path) -> Iterator[LocalAirflow]:
    """A real Airflow 3.3 (api-server, scheduler, dag-processor, triggerer) on 127.0.0.1.

    It replays ``airflow_trace`` in stepped mode with no stabilization window, so a test that
    moves the cursor and triggers the maintenance DAG sees the new sizes at once.
    """
    home = tmp_path_factory.mktemp("airflow-home")
    settings = {
        "monitor": "replay",
        "replay_trace": str(airflow_trace),
        "replay_started_at": "0",
        "stabilization_window_seconds": "0",
        "sensor_grace_period_seconds": "0",
        "check_interval_seconds": "5",
    }
    local = LocalAirflow(home, thermal_settings=settings)
    try:
        local.start()
        with local.api() as api:
            wait_for_dag(api, "thermal_pool_maintenance")
            unpause(api, "thermal_pool_maintenance")
        yield local
    finally:
        local.stop()
        logs = ARTIFACTS / "airflow-logs"
        logs.mkdir(parents=True, exist_ok=True)
        for path in local.log_folder.glob("*.log"):
            (logs / path.name).write_bytes(path.read_bytes()[-200_000:])
