"""Airflow sensors and triggers of thermal-pools, installed as ``thermal_pools.sensors``."""
