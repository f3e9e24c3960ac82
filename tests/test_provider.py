"""Registration with Airflow: the provider in `airflow providers list`, the plugin in `airflow plugins`."""

from __future__ import annotations

import json

import pytest

from thermal_pools.provider import get_provider_info


def test_provider_info_matches_schema():
    from airflow.providers_manager import _create_provider_info_schema_validator

    info = get_provider_info()
    _create_provider_info_schema_validator().validate(info)
    assert info["package-name"] == "thermal-pools"


def test_provider_info_version_matches_package():
    from importlib.metadata import version

    assert get_provider_info()["versions"] == [version("thermal-pools")]


@pytest.mark.airflow
def test_providers_list_shows_provider(airflow):
    result = airflow.airflow("providers", "list", "--output", "json")
    providers = {entry["package_name"]: entry for entry in json.loads(result.stdout)}

    assert "thermal-pools" in providers
    assert providers["thermal-pools"]["version"] == get_provider_info()["versions"][0]
    assert "Traceback" not in result.stderr


@pytest.mark.airflow
def test_plugins_lists_plugin(airflow):
    result = airflow.airflow("plugins", "--output", "json")
    plugins = {entry["name"]: entry for entry in json.loads(result.stdout)}

    assert "thermal_pools" in plugins
    assert "/thermal" in json.dumps(plugins["thermal_pools"]["fastapi_apps"])
    assert "Traceback" not in result.stderr
