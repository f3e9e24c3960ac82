"""Bad input: each is rejected at the earliest point with a message naming the value and the fix.

Settings fail when they are loaded, sensor and operator arguments when the DAG file is parsed,
traces when they are loaded, and the ``thermal-pools`` command turns every one of them into a
single ``error:`` line and exit status 2, without a traceback. The DAG-file case, shown through
the real Airflow's ``GET /api/v2/importErrors``, is ``test_bad_sensor_dag_listed_as_import_error``
in test_faults_e2e.py, which owns the Airflow whose DAG folder holds that file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from thermal_pools.config import ConfigError, config_from_mapping
from thermal_pools.monitor import TraceError, load_trace

CLI = str(Path(sys.executable).with_name("thermal-pools"))

# Setting, bad value, and a part of the message that names the value and what is accepted.
BAD_SETTINGS = [
    ("throttle_fair", "1.5", "invalid throttle_fair 1.5: expected a factor in (0, 1]"),
    ("throttle_serious", "fast", "invalid [thermal_pools] throttle_serious 'fast': expected float"),
    ("safe_state", "7", "invalid safe_state 7: expected an integer thermal state 0-3"),
    ("no_sensor_state", "-1", "invalid no_sensor_state -1: expected an integer thermal state 0-3"),
    ("thermal_threshold_fair", "hot", "invalid [thermal_pools] thermal_threshold_fair 'hot': expected int"),
    ("memory_threshold_percent", "120", "invalid memory_threshold_percent 120.0: expected a percent in (0, 100]"),
    ("min_health_score", "-5", "invalid min_health_score -5.0: expected a score in [0, 100]"),
    ("sensor_grace_period_seconds", "-30", "invalid sensor_grace_period_seconds -30.0: expected a number of seconds >= 0"),
    ("clearance_timeout_seconds", "0", "invalid clearance_timeout_seconds 0.0: expected a number of seconds > 0"),
    ("check_interval_seconds", "nan", "invalid check_interval_seconds nan: expected a number of seconds > 0"),
    ("base_slots_nominal", "-2", "invalid base_slots_nominal -2: expected a whole number of slots >= 0"),
    ("base_slots_fair", "2.5", "invalid [thermal_pools] base_slots_fair '2.5': expected int"),
    ("pool_prefix", "thermal pools", "invalid pool_prefix 'thermal pools': use only letters, digits"),
    ("pool_prefix", "team/thermal_", "invalid pool_prefix 'team/thermal_': use only letters, digits"),
    ("retention_days", "0", "invalid retention_days 0.0: expected days in (0, 3650]"),
    ("monitor", "psutil", "invalid monitor 'psutil': use 'host' or 'replay'"),
    ("allow_memory_overcommit", "maybe", "invalid [thermal_pools] allow_memory_overcommit 'maybe': expected true or false"),
    ("api_conn_id", "", "api_conn_id is empty: set it to the id of the Airflow Connection"),
    ("throttle_hot", "0.5", "unknown [thermal_pools] setting(s) throttle_hot: valid names are"),
]


@pytest.mark.parametrize(("name", "value", "message"), BAD_SETTINGS)
def test_bad_setting_rejected(name, value, message):
    with pytest.raises(ConfigError) as caught:
        config_from_mapping({name: value})
    assert message in str(caught.value)


def test_retry_bounds_crossed():
    with pytest.raises(ConfigError) as caught:
        config_from_mapping({"min_retry_delay_seconds": "600", "max_retry_delay_seconds": "60"})
    assert "min_retry_delay_seconds 600.0 exceeds max_retry_delay_seconds 60.0" in str(caught.value)


def test_replay_without_trace():
    with pytest.raises(ConfigError) as caught:
        config_from_mapping({"monitor": "replay"})
    assert "replay_trace is empty: set replay_trace to a trace file" in str(caught.value)


# -- sensor and operator arguments, at DAG parse time ------------------------------------------

BAD_SENSOR_ARGUMENTS = [
    ({"thermal_threshold": 5}, "invalid thermal_threshold 5"),
    ({"thermal_threshold": "scorching"}, "invalid thermal_threshold 'scorching': expected an integer thermal state 0-3"),
    ({"memory_required_gb": -4}, "invalid memory_required_gb -4"),
    ({"memory_required_gb": "lots"}, "invalid memory_required_gb 'lots': expected a number of GiB"),
    ({"priority": "urgent"}, "invalid priority 'urgent': expected one of low, normal, high, critical"),
    ({"target_host": ""}, "invalid target_host '': expected a host name, or None for this host"),
    ({"deferrable": "yes"}, "invalid deferrable 'yes': expected True or False"),
    ({"pool": "thermal_nominal"}, "invalid pool 'thermal_nominal': this tier pool gets 0 slots while the host is hotter"),
    ({"pool": "thermal_serious"}, "Use default_pool (the default) or thermal_critical, which always keeps a slot."),
]


@pytest.mark.parametrize(("arguments", "message"), BAD_SENSOR_ARGUMENTS)
def test_bad_sensor_argument_at_parse(arguments: dict[str, Any], message: str):
    from airflow.sdk import DAG

    from thermal_pools.sensors.clearance import ThermalClearanceSensor

    with DAG("bad_sensor", schedule=None, start_date=datetime(2026, 1, 1)), pytest.raises(ValueError) as caught:
        ThermalClearanceSensor(task_id="check", **arguments)
    assert str(caught.value).startswith("task 'check': ")
    assert message in str(caught.value)


BAD_OPERATOR_ARGUMENTS = [
    ({"thermal_threshold": 4}, "invalid thermal_threshold 4"),
    ({"priority": "asap"}, "invalid priority 'asap'"),
    ({"memory_required_gb": -1.0}, "invalid memory_required_gb -1.0"),
    ({"clearance_timeout_seconds": -10}, "invalid clearance_timeout_seconds -10"),
    ({"profile": "giant"}, "unknown profile 'giant': valid profiles are"),
    ({"thermal_threshold": 2, "pool": "thermal_nominal"}, "runs in tier pool 'thermal_serious', which throttles it. Leave pool unset"),
]


def work(throttle: float = 1.0) -> float:
    return throttle


@pytest.mark.parametrize(("arguments", "message"), BAD_OPERATOR_ARGUMENTS)
def test_bad_operator_argument_at_parse(arguments: dict[str, Any], message: str):
    from airflow.sdk import DAG

    from thermal_pools.operators import ThermalAwareMLXOperator

    with DAG("bad_operator", schedule=None, start_date=datetime(2026, 1, 1)), pytest.raises(ValueError) as caught:
        ThermalAwareMLXOperator(task_id="train", python_callable=work, **arguments)
    assert str(caught.value).startswith("task 'train': ")
    assert message in str(caught.value)


BAD_TRAINING_CONFIGS = [
    ({"epochs": -1}, "invalid training_config['epochs'] -1: expected a whole number >= 1"),
    ({"epoch": 3}, "unknown training_config setting(s) epoch: valid names are batch_size, epochs, hidden_size"),
    ({"learning_rate": 0}, "invalid training_config['learning_rate'] 0: expected a finite number > 0"),
    ({"loss": "huber"}, "invalid training_config['loss'] 'huber': expected one of mse, cross_entropy"),
]


@pytest.mark.parametrize(("training_config", "message"), BAD_TRAINING_CONFIGS)
def test_bad_training_config_at_parse(training_config: dict[str, Any], message: str):
    from airflow.sdk import DAG

    from thermal_pools.operators import ThermalAwareTrainingOperator

    with DAG("bad_training", schedule=None, start_date=datetime(2026, 1, 1)), pytest.raises(ValueError) as caught:
        ThermalAwareTrainingOperator(task_id="train", model_name="mlp", dataset_path="train.jsonl", training_config=training_config)
    assert str(caught.value).startswith("task 'train': ")
    assert message in str(caught.value)


# -- trace files -----------------------------------------------------------------------------

BAD_TRACES = [
    ("empty.jsonl", "", "trace has no rows: add at least one row with offset_seconds"),
    ("header-only.csv", "offset_seconds,thermal_state\n", "trace has no rows"),
    ("truncated.jsonl", '{"offset_seconds": 0, "thermal_state": 1}\n{"offset_seconds": 60, "therm', "line 2: invalid JSON"),
    ("unknown.csv", "offset_seconds,thermal_state,gpu_temp\n0,1,70\n", "unknown column(s) 'gpu_temp': valid columns are"),
    ("state.jsonl", '{"offset_seconds": 0, "thermal_state": 9}\n', "line 1: invalid thermal_state 9"),
    ("memory.csv", "offset_seconds,memory_available_gib\n0,-3\n", "line 2: invalid memory_available_gib '-3': expected GiB"),
    ("offset.csv", "thermal_state\n1\n", "missing required column offset_seconds: add it to the header"),
    ("trace.txt", "offset_seconds\n0\n", "name it *.csv for CSV or *.jsonl / *.ndjson for JSON Lines"),
]


@pytest.mark.parametrize(("name", "text", "message"), BAD_TRACES)
def test_bad_trace_rejected(tmp_path: Path, name: str, text: str, message: str):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(TraceError) as caught:
        load_trace(path)
    assert message in str(caught.value)
    assert name in str(caught.value)


# -- the command line --------------------------------------------------------------------------


def run_cli(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {"PATH": "/usr/bin:/bin", "AIRFLOW_HOME": str(home), **env}
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=environment, stdin=subprocess.DEVNULL, timeout=120)


def assert_clean_error(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    # Log lines may come first (a failed sync logs its cause), but the last line is the error.
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: ")
    assert message in last_line


@pytest.mark.parametrize(("name", "text", "message"), BAD_TRACES[:4])
def test_cli_bad_trace(tmp_path: Path, name: str, text: str, message: str):
    path = tmp_path / name
    path.write_text(text)
    assert_clean_error(run_cli("check-trace", str(path), home=tmp_path), message)


def test_cli_missing_trace(tmp_path: Path):
    result = run_cli("check-trace", str(tmp_path / "absent.jsonl"), home=tmp_path)
    assert_clean_error(result, "absent.jsonl")


def test_cli_bad_prefix_setting(tmp_path: Path):
    result = run_cli("status", home=tmp_path, AIRFLOW__THERMAL_POOLS__POOL_PREFIX="team/thermal_")
    assert_clean_error(result, "invalid pool_prefix 'team/thermal_'")


def test_cli_replay_bad_trace(tmp_path: Path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"offset_seconds": 0, "thermal_state": 9}\n')
    assert_clean_error(run_cli("status", "--replay", str(path), home=tmp_path), "invalid thermal_state 9")


def test_cli_connection_without_password(tmp_path: Path):
    connection = json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": 8080, "login": "thermal_pools"})
    result = run_cli("sync", home=tmp_path, AIRFLOW_CONN_THERMAL_POOLS_API=connection)
    assert_clean_error(result, "connection 'thermal_pools_api' has no login or password: set them to a user with the 'op' role")


def test_cli_connection_wrong_conn_id(tmp_path: Path):
    result = run_cli("sync", home=tmp_path, AIRFLOW__THERMAL_POOLS__API_CONN_ID="no_such_connection")
    assert_clean_error(result, "Airflow connection 'no_such_connection' for the pools API was not found")


@pytest.mark.airflow
def test_cli_wrong_credentials(airflow, tmp_path: Path):
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"offset_seconds": 0, "thermal_state": 0}\n')
    env = airflow.env()
    connection = json.loads(env["AIRFLOW_CONN_THERMAL_POOLS_API"])
    connection["password"] = "wrong-password-1234"
    env["AIRFLOW_CONN_THERMAL_POOLS_API"] = json.dumps(connection)
    env["AIRFLOW__THERMAL_POOLS__POOL_PREFIX"] = "badcred_"
    result = subprocess.run(
        [CLI, "sync", "--replay", str(trace)], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120
    )

    assert_clean_error(result, "rejected the credentials of user 'thermal_pools' (HTTP 401): fix the connection's login and password")
    assert "wrong-password-1234" not in result.stderr + result.stdout
    assert airflow.passwords["thermal_pools"] not in result.stderr + result.stdout


@pytest.mark.airflow
def test_cli_connection_not_airflow(airflow, tmp_path: Path):
    # An address that answers HTTP but is not an api-server root: the Airflow UI under a sub-path.
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"offset_seconds": 0, "thermal_state": 0}\n')
    env = airflow.env()
    connection = json.loads(env["AIRFLOW_CONN_THERMAL_POOLS_API"])
    connection["host"] = f"{airflow.base_url}/no-such-prefix"
    env["AIRFLOW_CONN_THERMAL_POOLS_API"] = json.dumps(connection)
    result = subprocess.run(
        [CLI, "sync", "--replay", str(trace)], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120
    )
    assert_clean_error(result, "has no /auth/token endpoint")
