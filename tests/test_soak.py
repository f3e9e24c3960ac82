"""Soak: 360 maintenance steps, six simulated hours, against the real api-server.

The readings advance 60 s per step on an injected clock over a trace with flicker, one-step
spikes, sensor dropouts shorter and longer than the grace period, and memory pressure. Every
step's pool sizes are compared with an independent model of the documented rules, so a resize
the stabilization rules do not allow, or a missing one, fails the test. The readings table
must stay within its retention limit throughout.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone

import pytest

from tests.airflow_helpers import pool_slots
from thermal_pools.config import ThermalSchedulingConfig
from thermal_pools.local_airflow import SERVICE_USER
from thermal_pools.maintenance import run_step
from thermal_pools.monitor import GuardedMonitor
from thermal_pools.pools_api import PoolsApiClient
from thermal_pools.reading import MemoryPressure, Reading, ThermalState
from thermal_pools.store import ReadingStore

pytestmark = pytest.mark.airflow

STEPS = 360
STEP_SECONDS = 60
PREFIX = "soak_"
START = datetime(2026, 6, 1, 8, 0, tzinfo=timezone.utc)
# 0.1 day = 8640 s = 144 steps of history, so pruning starts a third of the way in.
RETENTION_DAYS = 0.1

# The documented defaults, written out here so the model does not reuse the code under test.
BASE = (10, 10, 10, 4)
THROTTLE = (1.0, 0.9, 0.7, 0.5)
MEMORY_FACTOR = {MemoryPressure.NORMAL: 1.0, MemoryPressure.WARNING: 0.75, MemoryPressure.CRITICAL: 0.5}
GRACE_SECONDS = 300
WINDOW_SECONDS = 300
SAFE_STATE = 2


def soak_trace() -> list[tuple[int | None, MemoryPressure]]:
    """Thermal state (None for a dropout) and memory pressure per step."""
    rng = random.Random(20260601)
    trace: list[tuple[int | None, MemoryPressure]] = []
    while len(trace) < STEPS:
        episode = rng.choice(["calm", "flicker", "spike", "dropout", "hot", "memory"])
        if episode == "calm":
            trace += [(0, MemoryPressure.NORMAL)] * rng.randint(3, 12)
        elif episode == "flicker":
            trace += [(step % 2, MemoryPressure.NORMAL) for step in range(rng.randint(6, 16))]
        elif episode == "spike":
            trace += [(0, MemoryPressure.NORMAL), (3, MemoryPressure.NORMAL), (0, MemoryPressure.NORMAL)]
        elif episode == "dropout":
            # 1-10 steps of 60 s: some within the 300 s grace period, some past it.
            trace += [(None, MemoryPressure.NORMAL)] * rng.randint(1, 10)
        elif episode == "hot":
            trace += [(rng.choice([1, 2, 3]), MemoryPressure.NORMAL) for _ in range(rng.randint(2, 8))]
        else:
            pressure = rng.choice([MemoryPressure.WARNING, MemoryPressure.CRITICAL])
            trace += [(rng.choice([0, 1]), pressure) for _ in range(rng.randint(2, 6))]
    return trace[:STEPS]


class TraceSource:
    """Plays the soak trace one row per read, with taken_at on the simulated clock."""

    host = "soak-host"

    def __init__(self, trace: list[tuple[int | None, MemoryPressure]]) -> None:
        self.trace = trace
        self.index = -1

    def read(self) -> Reading:
        self.index += 1
        state, pressure = self.trace[self.index]
        return Reading(
            host=self.host,
            taken_at=START + timedelta(seconds=self.index * STEP_SECONDS),
            thermal_state=None if state is None else ThermalState(state),
            thermal_reason="sensor failed: replayed dropout" if state is None else "",
            memory_used_percent=50.0,
            memory_available_gib=16.0,
            memory_pressure=pressure,
            cpu_load=0.3,
            low_power_mode=False,
            on_battery=False,
        )


def model_sizes(trace: list[tuple[int | None, MemoryPressure]]) -> tuple[list[tuple[int, ...]], dict[str, int]]:
    """Pool sizes per step by the rules in thermal_pools.tiers, and how often each rule fired."""
    sizes: list[tuple[int, ...]] = []
    observed: list[tuple[int, int]] = []
    last_good: tuple[int, int] | None = None
    fired = {"last good": 0, "safe state": 0, "held": 0}

    for index, (state, pressure) in enumerate(trace):
        now = index * STEP_SECONDS
        if state is not None:
            current = state
            last_good = (now, state)
        elif last_good is not None and now - last_good[0] <= GRACE_SECONDS:
            current = last_good[1]
            fired["last good"] += 1
        else:
            current = SAFE_STATE
            fired["safe state"] += 1
        observed.append((now, current))

        planned = max(value for taken_at, value in observed if now - WINDOW_SECONDS <= taken_at <= now)
        if planned > current:
            fired["held"] += 1
        factor = THROTTLE[planned] * MEMORY_FACTOR[pressure]
        step_sizes = []
        for tier in range(4):
            slots = 0 if tier < planned else max(math.floor(BASE[tier] * factor + 1e-9), 1)
            step_sizes.append(slots)
        sizes.append(tuple(step_sizes))
    return sizes, fired


def resizes(sizes: list[tuple[int, ...]]) -> int:
    return sum(1 for before, after in zip(sizes, sizes[1:]) if before != after)


def test_soak_matches_rules(airflow, tmp_path):
    trace = soak_trace()
    config = ThermalSchedulingConfig(pool_prefix=PREFIX, retention_days=RETENTION_DAYS)
    store = ReadingStore(f"sqlite:///{tmp_path / 'readings.db'}")
    monitor = GuardedMonitor(TraceSource(trace))
    names = config.pool_names()

    actual: list[tuple[int, ...]] = []
    outcomes: list[str] = []
    row_counts: list[int] = []
    # 360 steps against one api-server: a 60 s request timeout rides out a machine busy with
    # other test runs, which the default 10 s did not once.
    with PoolsApiClient(airflow.base_url, SERVICE_USER, airflow.passwords[SERVICE_USER], timeout=60) as client:
        for _ in range(STEPS):
            result = run_step(config, monitor, store, client)
            planned = result.plan.slots_by_name()
            actual.append(tuple(planned[name] for name in names))
            outcomes.append(result.outcome)
            row_counts.append(store.count())

    expected, fired = model_sizes(trace)
    first_difference = next((i for i, (a, e) in enumerate(zip(actual, expected)) if a != e), None)
    assert first_difference is None, f"step {first_difference}: {trace[first_difference]} gave {actual[first_difference]}"
    assert resizes(actual) == resizes(expected)

    # A resize must reach Airflow: every step whose sizes changed wrote to it.
    for index in range(1, STEPS):
        if actual[index] != actual[index - 1]:
            assert outcomes[index] == "applied", f"step {index}"
    assert set(outcomes) <= {"applied", "unchanged"}
    with airflow.api() as api:
        assert pool_slots(api, PREFIX) == dict(zip(names, expected[-1]))

    # Rows older than the retention limit are pruned: 144 steps back, plus the current one.
    retained = int(RETENTION_DAYS * 86400 / STEP_SECONDS) + 1
    assert max(row_counts) == retained
    assert row_counts[-1] == retained

    # The trace exercised every fallback and the stabilization hold.
    assert fired["last good"] > 0
    assert fired["safe state"] > 0
    assert fired["held"] > 0
