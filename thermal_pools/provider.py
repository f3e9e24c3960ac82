"""Provider metadata, so Airflow lists thermal-pools under Admin -> Providers."""

from __future__ import annotations


def get_provider_info() -> dict:
    """Return the provider description that Airflow's providers manager validates and lists."""
    from thermal_pools import __version__

    return {
        "package-name": "thermal-pools",
        "name": "Thermal Pools",
        "description": "Throttles heavy work by the host's thermal state, memory pressure and power mode "
        "through four Airflow tier pools, a clearance sensor and thermal-aware operators.",
        "versions": [__version__],
    }
