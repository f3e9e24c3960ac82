"""One maintenance step: read the host, record the reading, resize the tier pools.

The maintenance DAG runs :func:`run_step` every minute; ``thermal-pools sync`` runs it once from
a shell. A step:

1. reads the monitor (a failed read is a reading with an unknown state, never an exception);
2. resolves the state to act on (:func:`thermal_pools.tiers.resolve_state`) and keeps a hotter
   recent state through the stabilization window (:func:`thermal_pools.tiers.stabilize`);
3. records the reading and the plan in the readings table;
4. applies the plan through the REST API, unless a newer step has been recorded meanwhile;
5. records the outcome and prunes rows past the retention limit.

Steps 3-4 and the outcome record run under a per-host file lock, so concurrent steps (the DAG
beside ``thermal-pools sync``) leave the pools at the plan of the newest reading. Pruning runs
after the lock is released.

Faults degrade safely. A readings database that is locked, full or missing is logged and the
plan is still applied (without the history it lacks the stabilization window and the last good
value). An API failure raises :class:`StepFailed` after recording it, so Airflow retries the
task, and the pools keep their previous sizes until a later step succeeds.
"""

from __future__ import annotations

import fcntl
import logging
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError

from thermal_pools.config import ThermalSchedulingConfig
from thermal_pools.health import health_score
from thermal_pools.monitor import Monitor
from thermal_pools.pools_api import ApplyResult, PoolsApiClient, PoolsApiError
from thermal_pools.store import ReadingStore
from thermal_pools.tiers import Observation, PoolPlan, plan_pools, resolve_state, stabilize

log = logging.getLogger(__name__)

T = TypeVar("T")

# Maximum wait in seconds for another step of the same host to finish. After it, the step goes
# ahead without the lock.
STEP_LOCK_TIMEOUT_SECONDS = 30.0


class StepFailed(RuntimeError):
    """Failure to apply the plan. The previous pool sizes stay in force."""


@dataclass(frozen=True)
class StepResult:
    """Observation, plan, health score and outcome of one maintenance step."""

    observation: Observation
    plan: PoolPlan
    health_score: float
    outcome: str
    applied: ApplyResult | None
    row_id: int | None

    def to_dict(self) -> dict:
        """Plain JSON summary, small enough for an XCom value."""
        reading = self.observation.reading
        return {
            "host": reading.host,
            "taken_at": reading.taken_at.isoformat(),
            "thermal_state": None if reading.thermal_state is None else int(reading.thermal_state),
            "observed_state": int(self.observation.state),
            "planned_state": int(self.plan.state),
            "basis": self.observation.basis,
            "throttle": self.plan.throttle,
            "health_score": round(self.health_score, 1),
            "pools": self.plan.slots_by_name(),
            "outcome": self.outcome,
        }


def _guarded(store: ReadingStore | None, action: str, call: Callable[[ReadingStore], T]) -> T | None:
    """Run ``call(store)``, or return None when there is no store or the database fails (logged)."""
    if store is None:
        return None
    try:
        return call(store)
    except SQLAlchemyError as error:
        log.warning("readings database %s failed to %s: %s", store.url, action, error)
        return None


def _record_outcome(store: ReadingStore | None, row_id: int | None, outcome: str) -> None:
    if row_id is not None:
        _guarded(store, "record the outcome", lambda s: s.set_outcome(row_id, outcome))


@contextmanager
def _host_step_lock(host: str) -> Iterator[None]:
    """Hold an exclusive file lock for ``host`` so that its steps record and apply one at a time.

    Without it, an older step that found no newer step just before a newer one was recorded
    could write its pools after the newer step did, leaving the older plan in force. The lock is
    an ``flock`` on a file in the temporary folder, so it covers the threads and processes of
    one machine, which is where a host's steps run. A lock that cannot be taken is logged and the
    step goes ahead unserialized.
    """
    path = Path(tempfile.gettempdir()) / f"thermal-pools-step-{re.sub(r'[^A-Za-z0-9_.-]', '_', host)}.lock"
    try:
        file = open(path, "a")  # noqa: SIM115 - closed below
    except OSError as error:
        log.warning("host %s: cannot open step lock %s, steps are not serialized: %s", host, path, error)
        yield
        return

    with file:
        deadline = time.monotonic() + STEP_LOCK_TIMEOUT_SECONDS
        locked = False
        while not locked:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.05)
        if not locked:
            log.warning(
                "host %s: another step held %s for %.0f s, going ahead unserialized", host, path, STEP_LOCK_TIMEOUT_SECONDS
            )
        try:
            yield
        finally:
            if locked:
                fcntl.flock(file, fcntl.LOCK_UN)


def plan_step(
    config: ThermalSchedulingConfig, monitor: Monitor, store: ReadingStore | None
) -> tuple[Observation, PoolPlan, float]:
    """Read the host and compute the plan (steps 1-2) without changing anything."""
    reading = monitor.read()
    now = reading.taken_at

    host = reading.host
    last_good = _guarded(store, "read the last good value", lambda s: s.last_good(host, now))
    observation = resolve_state(reading, last_good, config)

    window_start = now - timedelta(seconds=config.stabilization_window_seconds)
    recent = _guarded(store, "read recent states", lambda s: s.observed_states(host, window_start))
    planned, hold = stabilize(observation.state, recent or [], now, config)

    since = _guarded(store, "read the plan history", lambda s: s.planned_since(host, planned, now))
    plan = plan_pools(observation, config, planned_state=planned, hold=hold, since=since or now)
    return observation, plan, health_score(reading, observation.state, config)


def run_step(
    config: ThermalSchedulingConfig,
    monitor: Monitor,
    store: ReadingStore | None,
    client: PoolsApiClient,
) -> StepResult:
    """Run one maintenance step and return its result.

    Raises :class:`StepFailed` if the plan could not be applied.
    """
    observation, plan, health = plan_step(config, monitor, store)
    reading = observation.reading
    log.info(
        "host %s: sensor state %s, acting on %s (%s), planned %s, throttle %.2f, pools %s",
        reading.host,
        "unknown" if reading.thermal_state is None else reading.thermal_state.label,
        observation.state.label,
        observation.basis,
        plan.state.label,
        plan.throttle,
        plan.slots_by_name(),
    )

    with _host_step_lock(reading.host):
        row_id = _guarded(
            store,
            "record the reading",
            lambda s: s.record(
                reading,
                observed_state=observation.state,
                planned_state=plan.state,
                basis=observation.basis,
                throttle=plan.throttle,
                health_score=health,
                pools=plan.slots_by_name(),
            ),
        )

        if _guarded(store, "check for newer steps", lambda s: s.newer_than(reading.host, reading.taken_at)):
            # A step that read the host later has been recorded. Its plan wins, so this older
            # step must not overwrite it.
            outcome = "superseded"
            applied = None
            log.info("host %s: a newer maintenance step exists, not applying the plan of %s", reading.host, reading.taken_at)
        else:
            try:
                applied = client.apply(plan.pools)
            except PoolsApiError as error:
                outcome = f"failed: {error}"
                log.error("host %s: pools not resized, previous sizes stay in force: %s", reading.host, error)
                _record_outcome(store, row_id, outcome)
                raise StepFailed(str(error)) from None
            outcome = "applied" if applied.changed else "unchanged"
            if applied.changed:
                changes = {name: f"{applied.previous.get(name, 'new')} -> {plan.slots_by_name()[name]}" for name in applied.created + applied.updated}
                log.info("host %s: pools resized %s", reading.host, changes)
            else:
                log.info("host %s: pools already match the plan, nothing written", reading.host)

        _record_outcome(store, row_id, outcome)
    _guarded(store, "prune old readings", lambda s: s.prune(config.retention_days, reading.taken_at))
    return StepResult(observation, plan, health, outcome, applied, row_id)


def run_from_airflow(config: ThermalSchedulingConfig | None = None) -> dict:
    """Run one step with the Airflow settings, connection and readings store and return its summary."""
    from thermal_pools.config import load_config
    from thermal_pools.monitor import create_monitor
    from thermal_pools.pools_api import client_from_connection
    from thermal_pools.store import store_from_config

    config = config or load_config()
    try:
        store = store_from_config(config)
    except (SQLAlchemyError, ValueError) as error:
        log.warning("readings database unavailable, applying the plan without history: %s", error)
        store = None
    with client_from_connection(config.api_conn_id) as client:
        return run_step(config, create_monitor(config), store, client).to_dict()

