"""Pool sync at fleet scale: one ``PoolsApiClient.apply`` step for 1, 10 and 100 hosts.

Each host has its own four tier pools (prefix ``host007_thermal_``), so the steps cover 4, 40
and 400 pools against a real api-server. A step that changes every pool is timed, and a counting
transport counts its HTTP requests. The baseline makes the same change with one
``PATCH /api/v2/pools/{name}`` per pool (name, slots, description and include_deferred in the
body), as a client without the bulk endpoint does. A step with nothing to change is
timed too, and must write nothing.

Target: one write request per step, and 400 pools in under a second.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import httpx

from benchmarks.local import local_airflow
from benchmarks.runner import Figure, median
from thermal_pools.config import ThermalSchedulingConfig
from thermal_pools.local_airflow import SERVICE_USER
from thermal_pools.pools_api import PoolsApiClient
from thermal_pools.reading import MemoryPressure, Reading, ThermalState
from thermal_pools.tiers import Observation, PoolTarget, plan_pools

NAME = "pool-sync"
TITLE = "pool sync at fleet scale: one bulk step against one PATCH per pool"

log = logging.getLogger(__name__)

HOST_COUNTS = (1, 10, 100)
# States the change steps alternate between; every tier pool differs between the two.
STATES = (ThermalState.NOMINAL, ThermalState.SERIOUS)
# Fixed "since" time, so descriptions change only with the state.
SINCE = datetime(2026, 1, 1, tzinfo=timezone.utc)


class CountingTransport(httpx.HTTPTransport):
    """An HTTP transport that counts requests by method, leaving out logins."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != "/auth/token":
            self.counts[request.method] += 1
        return super().handle_request(request)


def fleet_targets(hosts: int, state: ThermalState) -> list[PoolTarget]:
    """Build the tier pool targets of ``hosts`` hosts, all at ``state``."""
    targets: list[PoolTarget] = []
    for index in range(hosts):
        host = f"host{index:03d}"
        config = ThermalSchedulingConfig(pool_prefix=f"{host}_thermal_")
        reading = Reading(
            host=host,
            taken_at=SINCE,
            thermal_state=state,
            memory_used_percent=40.0,
            memory_available_gib=20.0,
            memory_pressure=MemoryPressure.NORMAL,
            cpu_load=0.2,
        )
        targets.extend(plan_pools(Observation(state, "sensor", reading), config, since=SINCE).pools)
    return targets


def timed_apply(client: PoolsApiClient, transport: CountingTransport, targets: list[PoolTarget]) -> dict:
    transport.counts.clear()
    began = time.perf_counter()
    result = client.apply(targets)
    seconds = time.perf_counter() - began
    return {
        "seconds": seconds,
        "reads": transport.counts["GET"],
        "writes": sum(count for method, count in transport.counts.items() if method != "GET"),
        "changed": len(result.created) + len(result.updated),
    }


def timed_patch_per_pool(api: httpx.Client, targets: list[PoolTarget]) -> dict:
    """Apply ``targets`` with one single-pool PATCH each (the baseline) and time it."""
    began = time.perf_counter()
    for target in targets:
        body = {"name": target.name, "slots": target.slots, "description": target.description, "include_deferred": False}
        response = api.patch(f"/api/v2/pools/{target.name}", json=body)
        response.raise_for_status()
    return {"seconds": time.perf_counter() - began, "reads": 0, "writes": len(targets)}


def run(quick: bool = False) -> list[Figure]:
    repeats = 2 if quick else 6
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="thermal-pools-bench-empty-dags-") as empty, local_airflow(
        NAME, Path(empty)
    ) as airflow:
        transport = CountingTransport()
        with PoolsApiClient(
            airflow.base_url, SERVICE_USER, airflow.passwords[SERVICE_USER], transport=transport, timeout=120
        ) as client, airflow.api(SERVICE_USER) as api:
            api.timeout = httpx.Timeout(120)
            for hosts in HOST_COUNTS:
                pools = 4 * hosts
                created = timed_apply(client, transport, fleet_targets(hosts, STATES[1]))
                log.info("%d pools created in %.3f s with %d read(s), %d write(s)", pools, created["seconds"], created["reads"], created["writes"])

                bulk, per_pool, unchanged = [], [], []
                for repeat in range(repeats):
                    targets = fleet_targets(hosts, STATES[repeat % 2])
                    bulk.append(timed_apply(client, transport, targets))
                    unchanged.append(timed_apply(client, transport, targets))
                    per_pool.append(timed_patch_per_pool(api, fleet_targets(hosts, STATES[(repeat + 1) % 2])))
                    # Put the pools back in line with ``targets`` for the next bulk step's change.
                    client.apply(targets)
                log.info(
                    "%d pools: bulk %s s, unchanged %s s, one PATCH per pool %s s",
                    pools,
                    [round(step["seconds"], 3) for step in bulk],
                    [round(step["seconds"], 3) for step in unchanged],
                    [round(step["seconds"], 3) for step in per_pool],
                )
                if any(step["changed"] != pools for step in bulk):
                    raise RuntimeError(f"a bulk step for {pools} pools did not change every pool: {bulk}")

                bulk_seconds = median([step["seconds"] for step in bulk])
                per_pool_seconds = median([step["seconds"] for step in per_pool])
                bulk_writes = max(step["writes"] for step in bulk)
                bulk_requests = max(step["reads"] + step["writes"] for step in bulk)
                unchanged_writes = max(step["writes"] for step in unchanged)
                details = {"pools": pools, "hosts": hosts, "steps": repeats, "bulk": bulk, "baseline": per_pool, "unchanged": unchanged, "create": created}
                figures.append(
                    Figure(
                        NAME,
                        f"{pools} pools changed: time per step (median)",
                        bulk_seconds,
                        "s",
                        baseline="one PATCH per pool",
                        baseline_value=per_pool_seconds,
                        target="< 1 s for 400 pools" if pools == 400 else "",
                        met=bulk_seconds < 1.0 if pools == 400 else None,
                        details=details,
                    )
                )
                figures.append(
                    Figure(
                        NAME,
                        f"{pools} pools changed: requests per step",
                        bulk_requests,
                        "requests",
                        baseline="one PATCH per pool",
                        baseline_value=pools,
                        target="1 write request per step",
                        met=bulk_writes == 1,
                        note=f"{bulk_writes} write(s) and {bulk_requests - bulk_writes} read(s) per step",
                    )
                )
                figures.append(
                    Figure(
                        NAME,
                        f"{pools} pools unchanged: write requests per step",
                        unchanged_writes,
                        "requests",
                        baseline="one PATCH per pool",
                        baseline_value=pools,
                        target="no write",
                        met=unchanged_writes == 0,
                        note=f"median {median([step['seconds'] for step in unchanged]):.3f} s for the one read",
                    )
                )
    return figures
