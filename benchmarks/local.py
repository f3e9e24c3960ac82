"""A local Airflow for one benchmark, and the REST API reads the benchmarks share."""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path

import httpx

from thermal_pools.local_airflow import LocalAirflow

log = logging.getLogger(__name__)

DAGS = Path(__file__).resolve().parent / "dags"


@contextlib.contextmanager
def local_airflow(
    name: str, dags_folder: Path, thermal_settings: Mapping[str, str] | None = None
) -> Iterator[LocalAirflow]:
    """Start a fresh LocalAirflow in a temporary home; stop it and delete the home afterwards.

    The home is kept when the benchmark raises, so its component logs can be read.
    """
    home = Path(tempfile.mkdtemp(prefix=f"thermal-pools-bench-{name}-"))
    airflow = LocalAirflow(home, dags_folder=dags_folder, thermal_settings=thermal_settings)
    began = time.monotonic()
    try:
        airflow.start()
        log.info("Airflow for %s up at %s after %.0f s (home %s)", name, airflow.base_url, time.monotonic() - began, home)
        yield airflow
    except BaseException:
        log.error("benchmark %s failed; Airflow logs kept in %s", name, airflow.log_folder)
        airflow.stop()
        raise
    airflow.stop()
    shutil.rmtree(home, ignore_errors=True)


def parse_time(text: str | None) -> float | None:
    """Epoch seconds of an ISO 8601 timestamp from the REST API; ``None`` stays ``None``."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def task_instances(api: httpx.Client, dag_id: str, run_id: str) -> list[dict]:
    """Return all task instances of a run, mapped ones included, in one page of up to 1000."""
    response = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})
    response.raise_for_status()
    return response.json()["task_instances"]


def event_log(api: httpx.Client, dag_id: str, run_id: str) -> list[dict]:
    """Event log entries of a run (``running``, ``up_for_reschedule``, ``deferred``, ...), oldest first."""
    entries: list[dict] = []
    while True:
        response = api.get(
            "/api/v2/eventLogs",
            params={"dag_id": dag_id, "run_id": run_id, "order_by": "id", "limit": 1000, "offset": len(entries)},
        )
        response.raise_for_status()
        body = response.json()
        entries.extend(body["event_logs"])
        if not body["event_logs"] or len(entries) >= body["total_entries"]:
            return entries
