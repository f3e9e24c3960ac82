"""thermal-pools: throttle heavy Airflow work by a host's thermal state, memory pressure and power mode."""

from thermal_pools.config import ConfigError, ThermalSchedulingConfig, load_config
from thermal_pools.profiles import TaskConfig, create_task_config, register_profile
from thermal_pools.reading import MemoryPressure, Reading, ThermalState
from thermal_pools.scheduler import SchedulingDecision, ThermalAwareScheduler

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "MemoryPressure",
    "Reading",
    "SchedulingDecision",
    "TaskConfig",
    "ThermalAwareScheduler",
    "ThermalSchedulingConfig",
    "ThermalState",
    "create_task_config",
    "load_config",
    "register_profile",
]
