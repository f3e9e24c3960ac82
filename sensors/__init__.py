"""Airflow sensors and triggers of thermal-pools, installed as ``thermal_pools.sensors``."""

from thermal_pools.sensors.clearance import ThermalClearanceSensor
from thermal_pools.sensors.clearance_trigger import ThermalClearanceTrigger

__all__ = ["ThermalClearanceSensor", "ThermalClearanceTrigger"]
