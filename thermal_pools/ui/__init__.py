"""The Thermal page of the Airflow UI and its JSON API.

:mod:`thermal_pools.ui.app` is the FastAPI app that :class:`thermal_pools.plugin.ThermalPoolsPlugin`
mounts in the api-server, and :mod:`thermal_pools.ui.chart` draws its history chart as inline SVG.
Import the app only where it is served: it pulls in FastAPI and Airflow's api-server security code.
"""
