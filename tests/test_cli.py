"""The thermal-pools command on this host, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.airflow_helpers import write_trace

CLI = str(Path(sys.executable).with_name("thermal-pools"))


def run(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {"PATH": "/usr/bin:/bin", "AIRFLOW_HOME": str(home), **env}
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=environment, stdin=subprocess.DEVNULL)


def test_status_table_on_this_host(tmp_path):
    result = run("status", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "thermal_critical" in result.stdout
    assert "memory available" in result.stdout


def test_status_json_replay(tmp_path):
    trace = write_trace(tmp_path / "t.jsonl", [3])
    result = run("status", "--json", "--replay", str(trace), home=tmp_path)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["planned_state"] == 3
    assert body["pools"] == {"thermal_nominal": 0, "thermal_fair": 0, "thermal_serious": 0, "thermal_critical": 2}


def test_check_trace_reports_rows(tmp_path):
    trace = write_trace(tmp_path / "t.jsonl", [0, 1, 2])
    result = run("check-trace", str(trace), home=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip().endswith("3 rows, valid")


def test_sync_without_connection_fails_cleanly(tmp_path):
    result = run("sync", home=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: Airflow connection 'thermal_pools_api'")
    assert "Traceback" not in result.stderr


def test_bad_setting_fails_cleanly(tmp_path):
    result = run("status", home=tmp_path, AIRFLOW__THERMAL_POOLS__SAFE_STATE="hot")
    assert result.returncode == 2
    assert "invalid [thermal_pools] safe_state 'hot'" in result.stderr
    assert "Traceback" not in result.stderr
