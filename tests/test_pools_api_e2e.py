"""The pools client against the real api-server: requests made and every error case."""

from __future__ import annotations

import pytest

from thermal_pools.config import ThermalSchedulingConfig
from thermal_pools.local_airflow import SERVICE_USER, VIEWER_USER, free_port
from thermal_pools.pools_api import PoolsApiClient, PoolsApiError
from thermal_pools.reading import ThermalState
from thermal_pools.tiers import PoolTarget

pytestmark = pytest.mark.airflow


def targets(prefix: str, slots: int, description: str = "test") -> list[PoolTarget]:
    config = ThermalSchedulingConfig(pool_prefix=prefix)
    return [PoolTarget(config.pool_name(tier), tier, slots, description) for tier in ThermalState]


def client(airflow, user: str = SERVICE_USER, password: str | None = None) -> PoolsApiClient:
    return PoolsApiClient(airflow.base_url, user, password or airflow.passwords[user], conn_id="test_conn")


def test_apply_creates_then_noop(airflow):
    with client(airflow) as pools:
        first = pools.apply(targets("apitest_", 3))
        second = pools.apply(targets("apitest_", 3))
    assert sorted(first.created) == ["apitest_critical", "apitest_fair", "apitest_nominal", "apitest_serious"]
    assert (first.read_requests, first.write_requests) == (1, 1)
    assert not second.changed
    assert (second.read_requests, second.write_requests) == (1, 0)


def test_apply_updates_only_changed(airflow):
    with client(airflow) as pools:
        pools.apply(targets("apitest2_", 3))
        wanted = targets("apitest2_", 3)
        wanted[1] = PoolTarget(wanted[1].name, wanted[1].tier, 1, "test")
        result = pools.apply(wanted)
    assert result.updated == ["apitest2_fair"]
    assert result.previous == {"apitest2_fair": 3}
    assert result.write_requests == 1


def test_wrong_password_rejected(airflow):
    with client(airflow, password="not-the-password") as pools, pytest.raises(PoolsApiError) as caught:
        pools.apply(targets("apitest3_", 1))
    assert caught.value.status_code == 401
    assert "rejected the credentials of user 'thermal_pools'" in str(caught.value)
    assert "not-the-password" not in str(caught.value)


def test_viewer_role_forbidden(airflow):
    with client(airflow, user=VIEWER_USER) as pools, pytest.raises(PoolsApiError) as caught:
        pools.apply(targets("apitest4_", 1))
    assert caught.value.status_code == 403
    assert "give it the 'op' role" in str(caught.value)


def test_unreachable_server(airflow):
    port = free_port()
    with PoolsApiClient(f"http://127.0.0.1:{port}", "u", "p", conn_id="c") as pools, pytest.raises(PoolsApiError) as caught:
        pools.apply(targets("apitest5_", 1))
    assert "is unreachable" in str(caught.value)
    assert f"127.0.0.1:{port}" in str(caught.value)


def test_wrong_path_not_found(airflow):
    with PoolsApiClient(airflow.base_url + "/no-such-prefix", SERVICE_USER, "x") as pools, pytest.raises(PoolsApiError) as caught:
        pools.apply(targets("apitest6_", 1))
    # Airflow's UI answers a POST to an unknown path with 405.
    assert caught.value.status_code in (404, 405)
    assert "no /auth/token endpoint" in str(caught.value)


def test_invalid_pool_rejected_by_airflow(airflow):
    too_long = [PoolTarget("x" * 300, ThermalState.NOMINAL, 1, "test")]
    with client(airflow) as pools, pytest.raises(PoolsApiError) as caught:
        pools.apply(too_long)
    assert caught.value.status_code == 422
    assert "check the pool names and slot numbers" in str(caught.value)


def test_invalid_base_url():
    with pytest.raises(PoolsApiError, match="invalid Airflow API address 'localhost:8080'"):
        PoolsApiClient("localhost:8080", "u", "p")
