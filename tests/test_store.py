"""The readings table on a real SQLite database."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from thermal_pools.reading import Reading, ThermalState
from thermal_pools.store import ReadingStore

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def store(tmp_path) -> ReadingStore:
    return ReadingStore(f"sqlite:///{tmp_path / 'readings.db'}")


def add(store: ReadingStore, minute: int, state: int | None, planned: int | None = None, host: str = "studio") -> int:
    reading = Reading(
        host=host,
        taken_at=T0 + timedelta(minutes=minute),
        thermal_state=None if state is None else ThermalState(state),
        thermal_reason="" if state is not None else "sensor failed: test",
        memory_used_percent=50.0,
    )
    observed = ThermalState(state if state is not None else 2)
    return store.record(
        reading,
        observed_state=observed,
        planned_state=ThermalState(planned if planned is not None else observed),
        basis="sensor",
        throttle=0.7,
        health_score=80.0,
        pools={"thermal_nominal": 10},
    )


def test_record_and_latest(store):
    add(store, 0, 1)
    row_id = add(store, 1, 2)
    store.set_outcome(row_id, "applied")
    latest = store.latest("studio")
    assert latest.id == row_id
    assert latest.thermal_state == 2
    assert latest.outcome == "applied"
    assert latest.reading.memory_used_percent == 50.0


def test_last_good_skips_failed_reads(store):
    add(store, 0, 1)
    add(store, 1, None)
    last = store.last_good("studio", T0 + timedelta(minutes=2))
    assert last.thermal_state == ThermalState.FAIR
    assert last.taken_at == T0


def test_planned_since_finds_run_start(store):
    add(store, 0, 0, planned=0)
    add(store, 1, 2, planned=2)
    add(store, 2, 2, planned=2)
    assert store.planned_since("studio", ThermalState.SERIOUS, T0 + timedelta(minutes=3)) == T0 + timedelta(minutes=1)
    assert store.planned_since("studio", ThermalState.NOMINAL, T0 + timedelta(minutes=3)) is None


def test_history_window_and_hosts(store):
    for minute in range(10):
        add(store, minute, minute % 4)
    add(store, 0, 0, host="mini")
    window = store.history("studio", since=T0 + timedelta(minutes=3), until=T0 + timedelta(minutes=5))
    assert [step.taken_at.minute for step in window] == [3, 4, 5]
    assert store.hosts() == ["mini", "studio"]


def test_prune_keeps_retention(store):
    for minute in range(5):
        add(store, minute * 60 * 24, 0)  # one row a day
    removed = store.prune(2.0, T0 + timedelta(days=4))
    assert removed == 2
    assert store.count() == 3


def test_newer_than(store):
    add(store, 5, 0)
    assert store.newer_than("studio", T0)
    assert not store.newer_than("studio", T0 + timedelta(minutes=5))


def test_store_from_airflow_connection(tmp_path, monkeypatch):
    from thermal_pools.config import ThermalSchedulingConfig
    from thermal_pools.store import store_from_config

    database = tmp_path / "via-connection.db"
    monkeypatch.setenv("AIRFLOW_CONN_READINGS_DB", f"sqlite:///{database}")
    store = store_from_config(ThermalSchedulingConfig(readings_conn_id="readings_db"))
    add(store, 0, 1)
    assert store.count() == 1
    assert database.exists()


def test_store_rejects_non_sql_connection(monkeypatch):
    from thermal_pools.config import ThermalSchedulingConfig
    from thermal_pools.store import store_from_config

    monkeypatch.setenv("AIRFLOW_CONN_NOT_SQL", "http://user:secret@127.0.0.1:9")
    with pytest.raises(ValueError, match="not a SQL database") as caught:
        store_from_config(ThermalSchedulingConfig(readings_conn_id="not_sql"))
    assert "secret" not in str(caught.value)
