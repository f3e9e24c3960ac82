"""thermal-pools: throttle heavy Airflow work by a host's thermal state, memory pressure and power mode."""

from thermal_pools.config import ConfigError, ThermalSchedulingConfig, load_config
from thermal_pools.reading import MemoryPressure, Reading, ThermalState

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "MemoryPressure",
    "Reading",
    "ThermalSchedulingConfig",
    "ThermalState",
    "load_config",
]
