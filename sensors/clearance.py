"""Wait until the host is cool and free enough for a heavy task, then pass its throttle downstream.

:class:`ThermalClearanceSensor` decides with the same policy as the tier pools
(:meth:`thermal_pools.scheduler.ThermalAwareScheduler.should_run_task`). On clearance it returns
a small plain-JSON dict (see :func:`~thermal_pools.sensors.clearance_trigger.clearance_payload`)
that downstream tasks read with :func:`thermal_pools.throttle.throttle_for` or in a template as
``{{ ti.xcom_pull(task_ids='thermal_clearance')['throttle_level'] }}``.

By default it runs in ``reschedule`` mode, so it frees its worker slot between checks. With
``deferrable=True`` it checks once on a worker and then waits in the triggerer (see
:class:`~thermal_pools.sensors.clearance_trigger.ThermalClearanceTrigger`). On clearance the
trigger ends the task there with the same XCom value, so the task does not return to a worker.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.configuration import conf
from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout

from thermal_pools.config import ThermalSchedulingConfig, load_config
from thermal_pools.profiles import (
    DEFAULT_THRESHOLD,
    prefix_task_errors,
    validate_memory_required,
    validate_priority,
    validate_threshold,
)
from thermal_pools.reading import ThermalState
from thermal_pools.sensors.clearance_trigger import (
    ClearanceCheck,
    ThermalClearanceTrigger,
    clearance_payload,
    describe_reading,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["ThermalClearanceSensor", "check_clearance_pool", "coerce_clearance_args"]

# Extra seconds Airflow waits past the trigger's own deadline before failing the deferral itself.
# The trigger normally fires first with the last hold reason, so this only catches a triggerer
# that stopped running the trigger.
DEFERRAL_GRACE_SECONDS = 60.0


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


def coerce_clearance_args(
    thermal_threshold: Any, memory_required_gb: Any, priority: Any
) -> tuple[int, float, str]:
    """Validate clearance arguments, converting the strings a rendered template yields.

    ``thermal_threshold`` accepts 0-3 or a tier name ("fair"), and ``memory_required_gb`` a
    number or its text. Raises ``ValueError`` naming the value and the accepted forms.
    """
    if isinstance(thermal_threshold, str):
        try:
            thermal_threshold = int(ThermalState.parse(thermal_threshold))
        except ValueError:
            raise ValueError(
                f"invalid thermal_threshold {thermal_threshold!r}: expected an integer thermal state 0-3 "
                "(0 nominal, 1 fair, 2 serious, 3 critical) or a tier name"
            ) from None
    if isinstance(memory_required_gb, str):
        try:
            memory_required_gb = float(memory_required_gb)
        except ValueError:
            raise ValueError(
                f"invalid memory_required_gb {memory_required_gb!r}: expected a number of GiB, for example 8.0"
            ) from None
    if isinstance(priority, str):
        priority = priority.strip()
    return (
        validate_threshold(thermal_threshold),
        validate_memory_required(memory_required_gb),
        validate_priority(priority),
    )


def check_clearance_pool(pool: str, config: ThermalSchedulingConfig) -> None:
    """Raise ``ValueError`` if ``pool`` is a tier pool that can be sized to 0 slots.

    A waiting clearance check must keep running while the host is hot, or it could never see the
    host cool down. The critical tier pool always keeps at least one slot, so it is allowed.
    """
    throttled = {config.pool_name(tier): tier for tier in ThermalState if tier != ThermalState.CRITICAL}
    if pool in throttled:
        raise ValueError(
            f"invalid pool {pool!r}: this tier pool gets 0 slots while the host is hotter than "
            f"{throttled[pool].label}, so a reschedule-mode sensor in it could never poke again. "
            f"Use default_pool (the default) or {config.pool_name(ThermalState.CRITICAL)}, which always keeps a slot."
        )


# Default seconds between checks in reschedule mode: BaseSensorOperator's own default.
RESCHEDULE_POKE_INTERVAL_SECONDS = 60.0


class ThermalClearanceSensor(BaseSensorOperator):
    """Waits until the host is clear for a task with the given needs; returns its throttle.

    :param thermal_threshold: hottest thermal state (0-3, or a tier name) the heavy task may
        start in. Templated.
    :param memory_required_gb: GiB the heavy task needs; 0 skips the memory check. Templated.
    :param priority: low, normal, high or critical; critical bypasses the threshold and the
        health check but runs heavily throttled. Templated.
    :param target_host: host the heavy task will run on; default the host running this sensor.
        For another host the decision uses that host's latest recorded reading. Templated.
    :param poke_interval: seconds between checks. The default is 60 s in reschedule mode,
        Airflow's own sensor default, because each check there takes a worker slot for a moment
        and, on Airflow 3.3, short intervals make a scheduler race more likely that fails
        reschedule-mode sensors. With ``deferrable=True`` or ``mode="poke"`` the default is
        ``check_interval_seconds`` of the ``[thermal_pools]`` settings (10 s), since those
        checks cost no extra worker time.
    :param timeout: seconds to wait before failing (or skipping, with ``soft_fail``); default
        ``clearance_timeout_seconds`` of the ``[thermal_pools]`` settings.
    :param mode: ``reschedule`` (default) frees the worker slot between checks; ``poke`` keeps it.
    :param deferrable: wait in the triggerer instead of on a worker.

    ``soft_fail``, ``exponential_backoff``, ``max_wait`` and the other arguments of
    ``BaseSensorOperator`` apply as usual, in both modes. The sensor runs in ``default_pool``
    unless another pool is given, and rejects a tier pool that can be sized to 0 slots.
    """

    template_fields: Sequence[str] = ("thermal_threshold", "memory_required_gb", "priority", "target_host")
    ui_color = "#fde2c4"

    def __init__(
        self,
        *,
        thermal_threshold: int | str = DEFAULT_THRESHOLD,
        memory_required_gb: float | str = 0.0,
        priority: str = "normal",
        target_host: str | None = None,
        poke_interval: timedelta | float | None = None,
        timeout: timedelta | float | None = None,
        mode: str = "reschedule",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        config = load_config()
        if poke_interval is None:
            rescheduled = mode == "reschedule" and not deferrable
            poke_interval = RESCHEDULE_POKE_INTERVAL_SECONDS if rescheduled else config.check_interval_seconds
        super().__init__(
            poke_interval=poke_interval,
            timeout=config.clearance_timeout_seconds if timeout is None else timeout,
            mode=mode,
            **kwargs,
        )
        with prefix_task_errors(self.task_id):
            check_clearance_pool(self.pool, config)
            if not isinstance(deferrable, bool):
                raise ValueError(f"invalid deferrable {deferrable!r}: expected True or False")
            if target_host is not None and not (isinstance(target_host, str) and target_host.strip()):
                raise ValueError(f"invalid target_host {target_host!r}: expected a host name, or None for this host")

            # Templated values are checked once rendered, in execute().
            if not any(_is_template(v) for v in (thermal_threshold, memory_required_gb, priority)):
                coerce_clearance_args(thermal_threshold, memory_required_gb, priority)
        self.thermal_threshold = thermal_threshold
        self.memory_required_gb = memory_required_gb
        self.priority = priority
        self.target_host = target_host
        self.deferrable = deferrable

    def _check(self) -> ClearanceCheck:
        with prefix_task_errors(self.task_id):
            threshold, memory, priority = coerce_clearance_args(
                self.thermal_threshold, self.memory_required_gb, self.priority
            )
        return ClearanceCheck(
            self.task_id,
            thermal_threshold=threshold,
            memory_required_gb=memory,
            priority=priority,
            target_host=self.target_host,
        )

    def _decide(self, check: ClearanceCheck) -> PokeReturnValue:
        decision = check.decide()
        self.log.info("Reading: %s", describe_reading(decision.reading))
        if decision.should_run:
            self.log.info("Cleared: %s", decision.reason)
            return PokeReturnValue(is_done=True, xcom_value=clearance_payload(decision))
        self.log.info("Waiting: %s", decision.reason)
        return PokeReturnValue(is_done=False)

    def poke(self, context: Context) -> PokeReturnValue:
        return self._decide(self._check())

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)

        # Check once on the worker first, so a host that is already clear costs no deferral.
        check = self._check()
        first = self._decide(check)
        if first.is_done:
            return first.xcom_value

        deadline = time.time() + self.timeout
        trigger = ThermalClearanceTrigger(
            task_id=self.task_id,
            thermal_threshold=check.thermal_threshold,
            memory_required_gb=check.memory_required_gb,
            priority=check.priority,
            target_host=self.target_host or socket.gethostname(),
            deadline=deadline,
            poll_interval=max(self.poke_interval, 1.0),
            exponential_backoff=self.exponential_backoff,
            max_poll_interval=None if self.max_wait is None else self.max_wait.total_seconds(),
            end_task_on_clearance=True,
        )
        self.log.info("Deferring to the triggerer for up to %.0f s", self.timeout)
        self.defer(
            trigger=trigger,
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout + DEFERRAL_GRACE_SECONDS),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Return the clearance from the trigger's event; raise on a timeout.

        The trigger ends a cleared sensor itself, so only a timeout resumes the task here. A
        ``cleared`` event still comes from a trigger deferred by an earlier version of this sensor.
        ``BaseSensorOperator.resume_execution`` turns the raised timeout into a skip when
        ``soft_fail`` is set, as for a sensor that times out in reschedule mode.
        """
        status = (event or {}).get("status")
        if status == "cleared":
            clearance = event["clearance"]
            self.log.info("Cleared in the triggerer after %s check(s): %s", event.get("checks"), clearance.get("reason"))
            return clearance
        if status == "timeout":
            raise AirflowSensorTimeout(f"Sensor has timed out: {event.get('message')}")
        raise AirflowException(f"invalid event from ThermalClearanceTrigger for {self.task_id}: {event!r}")

