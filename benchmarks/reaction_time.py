"""Reaction time: from a change in the replayed state to the new pool sizes in the REST API.

A real local Airflow runs the maintenance DAG (``dags/``) on its own every-minute schedule and
replays a trace in real time. The trace changes state every 73 s, so the changes fall at 10
different phases of the minute. The benchmark polls ``GET /api/v2/pools`` every 0.5 s and notes
when the four tier pools first show the sizes planned for each new state.

The stabilization window is 0 s here. With the default 300 s, pools wait 5 minutes before
growing again by design, so the figure would measure the window instead of the pipeline.

Target: the worst reaction within one schedule interval (60 s) plus the task start-up, taken
as the median time from a scheduled run's tick (``run_after``) to the end of its task.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

from benchmarks.local import local_airflow, parse_time, task_instances
from benchmarks.runner import Figure, median
from tests.airflow_helpers import pool_slots, unpause, wait_for, wait_for_dag
from thermal_pools.config import ThermalSchedulingConfig
from thermal_pools.local_airflow import DAGS_FOLDER
from thermal_pools.reading import MemoryPressure, Reading, ThermalState, utc_now
from thermal_pools.tiers import Observation, plan_pools

NAME = "reaction"
TITLE = "reaction time: replayed state change to new pool sizes in the REST API"

log = logging.getLogger(__name__)

DAG_ID = "thermal_pool_maintenance"
SCHEDULE_SECONDS = 60.0
# Seconds between state changes. Not a multiple of 60, so changes land at varied phases of the
# schedule, and above 60 s plus task start-up jitter, so every change is read by some run.
CHANGE_SPACING_SECONDS = 73.0
# The first change comes this long after the trace starts, time enough for Airflow to start,
# parse the maintenance DAG and run it once.
FIRST_CHANGE_SECONDS = 180.0
# Each change's state differs from the previous one's in every tier pool's size.
STATE_CYCLE = (ThermalState.SERIOUS, ThermalState.FAIR, ThermalState.CRITICAL, ThermalState.NOMINAL)
FIGURES = {"memory_used_percent": 40.0, "memory_available_gib": 20.0, "memory_pressure": "normal", "cpu_load": 0.2,
           "low_power_mode": False, "on_battery": False}
POLL_SECONDS = 0.5


def write_trace(path: Path, changes: int) -> list[tuple[float, ThermalState]]:
    """Write the trace: nominal, then ``changes`` state changes; return (offset, state) per change."""
    schedule = [(0.0, ThermalState.NOMINAL)]
    schedule += [
        (FIRST_CHANGE_SECONDS + index * CHANGE_SPACING_SECONDS, STATE_CYCLE[index % len(STATE_CYCLE)])
        for index in range(changes)
    ]
    with path.open("w") as trace:
        for offset, state in schedule:
            trace.write(json.dumps({"offset_seconds": offset, "thermal_state": int(state), **FIGURES}) + "\n")
    return schedule[1:]


def expected_slots(state: ThermalState, config: ThermalSchedulingConfig) -> dict[str, int]:
    reading = Reading(
        host="bench",
        taken_at=utc_now(),
        thermal_state=state,
        memory_used_percent=40.0,
        memory_available_gib=20.0,
        memory_pressure=MemoryPressure.NORMAL,
        cpu_load=0.2,
        low_power_mode=False,
        on_battery=False,
    )
    return plan_pools(Observation(state, "sensor", reading), config).slots_by_name()


def startup_seconds(api, since: float) -> list[float]:
    """Seconds from each successful scheduled run's tick to the end of its task, for ticks after ``since``.

    Earlier runs are left out, because the first one is created late, while Airflow starts.
    """
    runs = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns", params={"run_type": "scheduled", "limit": 1000}).json()["dag_runs"]
    delays = []
    for run in runs:
        if run["state"] != "success" or parse_time(run["run_after"]) < since:
            continue
        ended = [parse_time(ti["end_date"]) for ti in task_instances(api, DAG_ID, run["dag_run_id"])]
        delays.append(max(ended) - parse_time(run["run_after"]))
    return delays


def run(quick: bool = False) -> list[Figure]:
    changes = 3 if quick else 10
    config = ThermalSchedulingConfig(stabilization_window_seconds=0)
    with tempfile.TemporaryDirectory(prefix="thermal-pools-bench-trace-") as folder:
        trace = Path(folder) / "reaction.jsonl"
        schedule = write_trace(trace, changes)
        started_at = time.time()
        settings = {
            "monitor": "replay",
            "replay_trace": str(trace),
            "replay_started_at": f"{started_at:.3f}",
            "stabilization_window_seconds": "0",
        }
        with local_airflow(NAME, DAGS_FOLDER, settings) as airflow, airflow.api() as api:
            wait_for_dag(api, DAG_ID)
            unpause(api, DAG_ID)
            nominal = expected_slots(ThermalState.NOMINAL, config)
            wait_for(lambda: pool_slots(api) == nominal, timeout=FIRST_CHANGE_SECONDS, what="the first maintenance run")

            reactions: list[dict] = []
            for index, (offset, state) in enumerate(schedule):
                changed_at = started_at + offset
                next_change = started_at + schedule[index + 1][0] if index + 1 < len(schedule) else changed_at + 300
                if time.time() > changed_at:
                    raise RuntimeError(
                        f"change {index} at offset {offset:.0f} s passed before the benchmark was ready for it; "
                        "raise FIRST_CHANGE_SECONDS for this machine"
                    )
                expected = expected_slots(state, config)
                time.sleep(max(0.0, changed_at - time.time()))
                seen_at = None
                while time.time() < next_change:
                    if pool_slots(api) == expected:
                        seen_at = time.time()
                        break
                    time.sleep(POLL_SECONDS)
                reaction = None if seen_at is None else seen_at - changed_at
                reactions.append({"change": index, "state": state.label, "phase_seconds": changed_at % 60, "reaction_seconds": reaction})
                log.info("change %d to %s: pools %s", index, state.label, f"after {reaction:.1f} s" if reaction is not None else "never showed it")

            startups = startup_seconds(api, started_at + schedule[0][0] - SCHEDULE_SECONDS)

    seen = [entry["reaction_seconds"] for entry in reactions if entry["reaction_seconds"] is not None]
    missed = len(reactions) - len(seen)
    startup = median(startups)
    bound = SCHEDULE_SECONDS + startup
    worst = max(seen) if seen else float("inf")
    note = f"{missed} of {len(reactions)} change(s) never showed in the pools before the next change" if missed else ""
    details = {"reactions": reactions, "startup_seconds": startups, "spacing_seconds": CHANGE_SPACING_SECONDS}
    return [
        Figure(NAME, f"median reaction over {len(reactions)} changes", median(seen), "s",
               baseline="one schedule interval + median task start-up", baseline_value=bound, note=note, details=details),
        Figure(NAME, f"worst reaction over {len(reactions)} changes", worst, "s",
               baseline="one schedule interval + median task start-up", baseline_value=bound,
               target=f"<= 60 s + task start-up ({startup:.1f} s median, {max(startups):.1f} s max)",
               met=missed == 0 and worst <= bound, note=note),
    ]
