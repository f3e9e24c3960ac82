"""What makes an operator thermal-aware: tier pool placement, clearance, throttle and metrics.

An operator built on :class:`ThermalAwareOperatorMixin`:

1. is placed in the tier pool of its thermal threshold (``thermal_serious`` for threshold 2),
   so Airflow starts it only while the tier pools allow that tier;
2. before its work, obtains clearance, in this order:

   - the XCom value of the clearance sensor ``clearance_task_id``, when one ran upstream;
   - else a decision on this host now; when that holds the task and ``wait_for_clearance`` is
     set, the task defers to :class:`~thermal_pools.sensors.ThermalClearanceTrigger` (no worker
     slot is held) for up to ``clearance_timeout_seconds``, then fails so that its retries apply;
     without ``wait_for_clearance`` it fails at once with the reason;

3. runs :meth:`~ThermalAwareOperatorMixin.execute_work` with the
   :class:`~thermal_pools.throttle.ThrottleContext` of that clearance;
4. pushes its thermal metrics to the XCom key ``thermal_metrics``.
"""

from __future__ import annotations

import inspect
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowException

from thermal_pools.config import load_config
from thermal_pools.profiles import TaskConfig, create_task_config, pool_for_threshold, prefix_task_errors
from thermal_pools.sensors.clearance_trigger import (
    ClearanceCheck,
    ThermalClearanceTrigger,
    clearance_payload,
    describe_reading,
)
from thermal_pools.throttle import ThrottleContext

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["THERMAL_METRICS_KEY", "ThermalAwareOperatorMixin", "ThermalHoldError", "accepts_keyword"]

THERMAL_METRICS_KEY = "thermal_metrics"

# Extra seconds Airflow waits past the trigger's deadline before failing the deferral itself,
# which only happens when the triggerer stopped running the trigger.
DEFERRAL_GRACE_SECONDS = 60.0


class ThermalHoldError(AirflowException):
    """The host was not clear for the task; the message gives the policy's reason."""


def accepts_keyword(function: Callable[..., Any], name: str) -> bool:
    """Return whether ``function`` takes a keyword argument ``name``, by name or through ``**kwargs``."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _qualified_task_id(operator: Any, kwargs: dict[str, Any]) -> str:
    """Return the task id ``BaseOperator.__init__`` will set: ``group.task`` inside a task group.

    The mixin checks its arguments before ``BaseOperator.__init__`` runs, so it builds the id the
    same way for its messages. Airflow's metaclass has already put the current ``task_group``
    into ``kwargs``, and an operator expanded from a mapped one has the prefix already.
    """
    task_id = str(kwargs.get("task_id"))
    task_group = kwargs.get("task_group")
    if task_group is None or getattr(operator, "_BaseOperator__from_mapped", False):
        return task_id
    return task_group.child_id(task_id)


def given_settings(**settings: Any) -> dict[str, Any]:
    """Return the task settings a caller passed, leaving out those left at None (profile default)."""
    return {name: value for name, value in settings.items() if value is not None}


class ThermalAwareOperatorMixin:
    """Mix in before ``BaseOperator``; subclasses implement :meth:`execute_work`.

    :param thermal_threshold: hottest thermal state (0-3) the task may start in; it also picks
        the tier pool. Default from the class's ``profile``.
    :param priority: low, normal, high or critical.
    :param memory_required_gb: GiB the task needs; 0 skips the memory check.
    :param wait_for_clearance: wait (deferred) for clearance instead of failing when held.
    :param clearance_timeout_seconds: longest wait for clearance, s.
    :param clearance_task_id: task id of an upstream clearance sensor whose XCom value clears
        this task, as :func:`~thermal_pools.operators.create_thermal_aware_task` sets it.
    :param profile: name of a task profile whose defaults apply; default the class's.

    A ``pool`` other than the tier pool is rejected, because the tier pools are what throttle
    the task.
    """

    # Profile whose defaults apply when the caller passes none (see thermal_pools.profiles).
    profile: str | None = None

    def __init__(
        self,
        *,
        thermal_threshold: int | None = None,
        priority: str | None = None,
        memory_required_gb: float | None = None,
        wait_for_clearance: bool | None = None,
        clearance_timeout_seconds: float | None = None,
        clearance_task_id: str | None = None,
        profile: str | None = None,
        **kwargs: Any,
    ) -> None:
        config = load_config()
        task_id = _qualified_task_id(self, kwargs)
        overrides = given_settings(
            thermal_threshold=thermal_threshold,
            priority=priority,
            memory_required_gb=memory_required_gb,
            wait_for_clearance=wait_for_clearance,
            clearance_timeout_seconds=clearance_timeout_seconds,
        )
        profile = profile if profile is not None else self.profile

        with prefix_task_errors(task_id):
            task_config = create_task_config(task_id, profile, **overrides)
            tier_pool = pool_for_threshold(task_config.thermal_threshold, config)
            pool = kwargs.pop("pool", None)
            if pool is not None and pool != tier_pool:
                raise ValueError(
                    f"invalid pool {pool!r}: a thermal-aware task with thermal_threshold "
                    f"{task_config.thermal_threshold} runs in tier pool {tier_pool!r}, which throttles it. "
                    "Leave pool unset, or change thermal_threshold to move the task to another tier."
                )
        super().__init__(pool=tier_pool, **kwargs)

        self.task_config: TaskConfig = task_config
        self.thermal_threshold = task_config.thermal_threshold
        self.priority = task_config.priority
        self.memory_required_gb = task_config.memory_required_gb
        self.wait_for_clearance = task_config.wait_for_clearance
        self.clearance_timeout_seconds = task_config.clearance_timeout_seconds
        self.clearance_task_id = clearance_task_id

    # -- subclass hook ------------------------------------------------------------------------

    def execute_work(self, context: Context, throttle: ThrottleContext) -> Any:
        """Do the task's work at ``throttle``; return its XCom value. Subclasses override this."""
        raise NotImplementedError(f"{type(self).__name__} must implement execute_work(context, throttle)")

    # -- clearance ----------------------------------------------------------------------------

    def _check(self) -> ClearanceCheck:
        return ClearanceCheck(
            self.task_id,
            thermal_threshold=self.thermal_threshold,
            memory_required_gb=self.memory_required_gb,
            priority=self.priority,
        )

    def execute(self, context: Context) -> Any:
        if self.clearance_task_id:
            clearance = context["ti"].xcom_pull(task_ids=self.clearance_task_id)
            if clearance:
                self.log.info("Cleared by %s: %s", self.clearance_task_id, clearance.get("reason"))
                return self._run(context, ThrottleContext.from_clearance(clearance, f"clearance {self.clearance_task_id}"))
            self.log.warning("No clearance value from %s; deciding on this host now", self.clearance_task_id)

        decision = self._check().decide()
        self.log.info("Reading: %s", describe_reading(decision.reading))
        if decision.should_run:
            self.log.info("Cleared: %s", decision.reason)
            return self._run(context, ThrottleContext.from_clearance(clearance_payload(decision), "live decision"))
        if not self.wait_for_clearance:
            raise ThermalHoldError(f"{decision.reason} Set wait_for_clearance=True to wait instead of failing.")

        self.log.info("Waiting: %s Deferring for up to %.0f s.", decision.reason, self.clearance_timeout_seconds)
        self.defer(
            trigger=ThermalClearanceTrigger(
                task_id=self.task_id,
                thermal_threshold=self.thermal_threshold,
                memory_required_gb=self.memory_required_gb,
                priority=self.priority,
                target_host=socket.gethostname(),
                deadline=time.time() + self.clearance_timeout_seconds,
                poll_interval=load_config().check_interval_seconds,
            ),
            method_name="execute_cleared",
            timeout=timedelta(seconds=self.clearance_timeout_seconds + DEFERRAL_GRACE_SECONDS),
        )

    def execute_cleared(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Resume after the trigger fired: run the work when cleared, else fail so retries apply."""
        status = (event or {}).get("status")
        if status == "cleared":
            self.log.info("Cleared in the triggerer after %s check(s)", event.get("checks"))
            return self._run(context, ThrottleContext.from_clearance(event["clearance"], "clearance trigger"))
        if status == "timeout":
            raise ThermalHoldError(
                f"{event.get('message')} Raise clearance_timeout_seconds or thermal_threshold, or let retries try later."
            )
        raise AirflowException(f"invalid event from ThermalClearanceTrigger for {self.task_id}: {event!r}")

    # -- work and metrics ---------------------------------------------------------------------

    def _run(self, context: Context, throttle: ThrottleContext) -> Any:
        self._work_metrics: dict[str, Any] = {}
        started = time.monotonic()
        result = self.execute_work(context, throttle)
        duration = time.monotonic() - started

        after = self._check().decide()
        metrics = {
            "task_id": self.task_id,
            "host": after.reading.host,
            "thermal_threshold": self.thermal_threshold,
            "priority": self.priority,
            "throttle_level": throttle.level,
            "throttle_source": throttle.source,
            "thermal_state_before": throttle.thermal_state,
            "health_score_before": throttle.clearance.get("health_score"),
            "thermal_state": int(after.thermal_state),
            "health_score": round(after.health_score, 1),
            "memory_available_gib": after.reading.memory_available_gib,
            "duration_seconds": round(duration, 3),
            **self._work_metrics,
        }
        context["ti"].xcom_push(key=THERMAL_METRICS_KEY, value=metrics)
        self.log.info("Thermal metrics: %s", metrics)
        return result

    def record_work_metrics(self, **metrics: Any) -> None:
        """Add plain-JSON figures (effective batch size, idle seconds, ...) to ``thermal_metrics``."""
        self._work_metrics.update(metrics)
