"""Thermal-aware operators: MLX work placed in tier pools and run at the cleared throttle."""

from thermal_pools.operators.mixin import THERMAL_METRICS_KEY, ThermalAwareOperatorMixin, ThermalHoldError
from thermal_pools.operators.mlx import (
    ThermalAwareInferenceOperator,
    ThermalAwareMLXOperator,
    ThermalAwareTrainingOperator,
    create_thermal_aware_task,
)

__all__ = [
    "THERMAL_METRICS_KEY",
    "ThermalAwareInferenceOperator",
    "ThermalAwareMLXOperator",
    "ThermalAwareOperatorMixin",
    "ThermalAwareTrainingOperator",
    "ThermalHoldError",
    "create_thermal_aware_task",
]
