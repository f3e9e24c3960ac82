"""Secrets: the service user's credentials come only from an Airflow Connection or a secrets
backend, and neither its password nor any token issued to it shows up in logs, XComs, pool
descriptions, the readings table or error messages after an end-to-end flow.

The Thermal page's refusal of unauthenticated requests is tested in test_ui_api.py
(``test_route_without_token_is_401``), and that the service user needs no more than the ``op``
role in test_pools_api_e2e.py (``test_viewer_role_forbidden``).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.airflow_helpers import run_once, task_states, write_trace
from thermal_pools.config import ThermalSchedulingConfig
from thermal_pools.local_airflow import SERVICE_USER
from thermal_pools.maintenance import StepFailed, run_step
from thermal_pools.monitor import ReplayMonitor
from thermal_pools.pools_api import PoolsApiClient
from thermal_pools.store import ReadingStore

pytestmark = pytest.mark.airflow

DAG_ID = "thermal_pool_maintenance"
TASK_ID = "resize_tier_pools"
CLI = str(Path(sys.executable).with_name("thermal-pools"))
JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# Files in the home that hold credentials by design: the simple auth manager's passwords and
# LocalAirflow's signing keys. Everything else there must be free of them.
CREDENTIAL_FILES = {"passwords.json", "secrets.json"}


def jwt_subject(token: str) -> str | None:
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims.get("sub")


def secrets_in(text: str, password: str, token: str) -> list[str]:
    """The secrets of the service user found in ``text``: its password, the token, any token issued to it."""
    found = []
    if password in text:
        found.append("password")
    if token in text:
        found.append("fresh token")
    found += [f"token for {SERVICE_USER}" for candidate in JWT.findall(text) if jwt_subject(candidate) == SERVICE_USER]
    return found


@pytest.fixture(scope="module")
def flow(airflow, airflow_trace, tmp_path_factory) -> dict[str, str]:
    """Run the maintenance DAG, ``thermal-pools sync`` and a failing step, and return their outputs."""
    folder = tmp_path_factory.mktemp("security")
    outputs: dict[str, str] = {}

    cursor = ReplayMonitor(airflow_trace).cursor
    try:
        with airflow.api() as api:
            run_id, state = run_once(airflow, api, DAG_ID)
            assert state == "success", task_states(api, DAG_ID, run_id)
            outputs["run_id"] = run_id
    finally:
        ReplayMonitor(airflow_trace).seek(cursor)

    sync = subprocess.run(
        [CLI, "-v", "sync", "--json"], capture_output=True, text=True, env=airflow.env(), stdin=subprocess.DEVNULL, timeout=120
    )
    assert sync.returncode == 0, sync.stderr
    outputs["cli sync"] = sync.stdout + sync.stderr

    # A step whose login fails: its error must not echo the password it sent.
    trace = write_trace(folder / "t.jsonl", [1], host="security-host")
    store = ReadingStore(f"sqlite:///{folder / 'readings.db'}")
    with PoolsApiClient(airflow.base_url, SERVICE_USER, "not-" + airflow.passwords[SERVICE_USER]) as client:
        with pytest.raises(StepFailed) as caught:
            run_step(ThermalSchedulingConfig(pool_prefix="secfail_"), ReplayMonitor(trace), store, client)
    outputs["failed step"] = str(caught.value) + repr(client)
    outputs["failed step row"] = json.dumps([step.to_dict() for step in store.history("security-host")])
    return outputs


@pytest.fixture(scope="module")
def fresh_token(airflow) -> str:
    token = airflow.token(SERVICE_USER)
    # The search below recognizes the service user's tokens by their subject claim.
    assert jwt_subject(token) == SERVICE_USER
    return token


def test_no_secret_in_airflow_logs(airflow, flow, fresh_token):
    password = airflow.passwords[SERVICE_USER]
    files = [path for path in airflow.home.rglob("*") if path.is_file() and path.suffix in (".log", ".json", ".txt")]
    files = [path for path in files if path.name not in CREDENTIAL_FILES]
    assert any(path.parent.name == "component-logs" for path in files)
    assert any("logs" in path.parts and TASK_ID in str(path) for path in files)
    for path in files:
        assert secrets_in(path.read_text(errors="replace"), password, fresh_token) == [], path


def test_no_secret_in_outputs(airflow, flow, fresh_token):
    password = airflow.passwords[SERVICE_USER]
    for name in ("cli sync", "failed step", "failed step row"):
        assert secrets_in(flow[name], password, fresh_token) == [], name
    assert "not-" + password not in flow["failed step"]


def test_no_secret_in_xcoms(airflow, flow, fresh_token):
    password = airflow.passwords[SERVICE_USER]
    with airflow.api() as api:
        # The session's Airflow runs this DAG every minute, so ask for every entry in one page
        # (the local Airflow allows 1000) rather than the default 100.
        entries = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/~/taskInstances/~/xcomEntries", params={"limit": 1000}).json()
        assert entries["total_entries"] == len(entries["xcom_entries"])
        values = [
            api.get(
                f"/api/v2/dags/{DAG_ID}/dagRuns/{entry['run_id']}/taskInstances/{entry['task_id']}/xcomEntries/{entry['key']}",
                params={"deserialize": True},
            ).text
            for entry in entries["xcom_entries"]
        ]
    assert any(flow["run_id"] in entry["run_id"] for entry in entries["xcom_entries"])
    for value in values:
        assert secrets_in(value, password, fresh_token) == []


def test_no_secret_in_pools_or_readings(airflow, flow, fresh_token):
    password = airflow.passwords[SERVICE_USER]
    with airflow.api() as api:
        pools = api.get("/api/v2/pools", params={"limit": 1000}).text
    readings = ReadingStore(airflow.env()["AIRFLOW__THERMAL_POOLS__READINGS_URL"]).history("replayed-host", limit=1000)
    assert secrets_in(pools, password, fresh_token) == []
    assert secrets_in(json.dumps([step.to_dict() for step in readings], default=str), password, fresh_token) == []


def test_credentials_from_secrets_backend(airflow, tmp_path):
    # No AIRFLOW_CONN_* variable: the connection comes from Airflow's local-file secrets backend.
    env = airflow.env()
    connection = json.loads(env.pop("AIRFLOW_CONN_THERMAL_POOLS_API"))
    connections = tmp_path / "connections.json"
    connections.write_text(json.dumps({"thermal_pools_api": connection}))
    connections.chmod(0o600)
    env["AIRFLOW__SECRETS__BACKEND"] = "airflow.secrets.local_filesystem.LocalFilesystemBackend"
    env["AIRFLOW__SECRETS__BACKEND_KWARGS"] = json.dumps({"connections_file_path": str(connections)})
    env["AIRFLOW__THERMAL_POOLS__POOL_PREFIX"] = "secrets_"
    trace = write_trace(tmp_path / "t.jsonl", [0], host="secrets-host")

    result = subprocess.run(
        [CLI, "sync", "--json", "--replay", str(trace)], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outcome"] == "applied"
    assert airflow.passwords[SERVICE_USER] not in result.stdout + result.stderr


def test_forged_token_rejected(airflow):
    # A token signed with another key must not reach the pools API or the Thermal page.
    header = base64.urlsafe_b64encode(b'{"alg":"HS512","typ":"JWT"}').rstrip(b"=").decode()
    claims = base64.urlsafe_b64encode(json.dumps({"sub": SERVICE_USER, "role": "op"}).encode()).rstrip(b"=").decode()
    forged = f"{header}.{claims}.c2lnbmF0dXJl"
    for route in ("/api/v2/pools", "/thermal/api/state"):
        response = httpx.get(f"{airflow.base_url}{route}", headers={"Authorization": f"Bearer {forged}"}, timeout=30)
        # Airflow 3.3 answers a bad signature with 403 on /api/v2/pools (measured); either code rejects.
        assert response.status_code in (401, 403), route
        assert "pools" not in response.json(), route
