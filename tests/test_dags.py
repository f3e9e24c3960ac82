"""The DAG folder: parses cleanly, and the maintenance DAG is set up as documented."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parent.parent / "dags"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_dag_folder_has_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_maintenance_dag_schedule(dagbag):
    dag = dagbag.dags["thermal_pool_maintenance"]
    assert dag.timetable.expression == "* * * * *"
    assert dag.catchup is False
    assert dag.max_active_runs == 1


def test_maintenance_task_settings(dagbag):
    task = dagbag.dags["thermal_pool_maintenance"].get_task("resize_tier_pools")
    assert task.pool == "default_pool"
    assert task.retries == 2
    assert task.execution_timeout == timedelta(seconds=45)


def test_parse_reads_nothing():
    # Parsing must not read the host, open the readings database or import the HTTP client.
    probe = (
        "import importlib.util, json, sys;"
        f"spec = importlib.util.spec_from_file_location('m', {str(DAGS / 'thermal_pool_maintenance.py')!r});"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module);"
        "print(json.dumps(sorted(name for name in sys.modules if name.startswith('thermal_pools'))))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert "thermal_pools.monitor" not in loaded
    assert "thermal_pools.maintenance" not in loaded
    assert "thermal_pools.store" not in loaded
