"""The Airflow plugin: the Thermal page and its JSON API in the api-server, with a nav entry.

Airflow finds the plugin through the ``airflow.plugins`` entry point. It mounts the FastAPI app of
:mod:`thermal_pools.ui.app` at ``/thermal`` and adds a top-level "Thermal" entry to the UI's
navigation, which opens ``/thermal/`` in a frame inside the UI (at ``/plugin/thermal``).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

# The Task SDK base class: task processes have it loaded already, and the core plugins manager
# accepts it too (it matches plugin base classes by name).
from airflow.sdk.plugins_manager import AirflowPlugin

URL_PREFIX = "/thermal"


def _root_path() -> str:
    """Return the path of ``[api] base_url`` without the trailing slash ("" when Airflow is served at /)."""
    from airflow.configuration import conf

    return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


class ThermalPoolsPlugin(AirflowPlugin):
    """Serve the Thermal page and API from the api-server and link it from the UI."""

    name = "thermal_pools"

    @cached_property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        # Every Airflow process loads every plugin, task processes included (for macros), so the
        # FastAPI app and Airflow's api-server security code are imported only where the app is
        # read: in the api-server and in `airflow plugins`.
        from thermal_pools.ui.app import app

        return [{"app": app, "url_prefix": URL_PREFIX, "name": "Thermal"}]

    @cached_property
    def external_views(self) -> list[dict[str, Any]]:  # type: ignore[override]
        root = _root_path()
        return [
            {
                "name": "Thermal",
                "href": f"{root}{URL_PREFIX}/",
                "icon": f"{root}{URL_PREFIX}/static/icon.svg",
                "url_route": "thermal",
                "destination": "nav",
                "nav_top_level": True,
            }
        ]
