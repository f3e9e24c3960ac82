"""Provider metadata, so Airflow lists thermal-pools under Admin -> Providers.

Airflow reads :func:`get_provider_info` through the ``apache_airflow_provider`` entry point and
validates it against ``airflow/provider_info.schema.json``. The plugin is registered through its
own ``airflow.plugins`` entry point and is deliberately not listed here under ``plugins``:
Airflow would load it twice and report the second load as a plugin import error.
"""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    """Return the provider description that Airflow's providers manager validates and lists."""
    from thermal_pools import __version__

    return {
        "package-name": "thermal-pools",
        "name": "Thermal Pools",
        "description": "Throttles heavy work by the host's thermal state, memory pressure and power mode "
        "through four Airflow tier pools, a clearance sensor and thermal-aware operators. "
        "Adds the Thermal page to the Airflow UI.",
        "versions": [__version__],
    }
