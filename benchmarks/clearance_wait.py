"""Waiting for clearance without holding workers: blocking loop, reschedule sensor, deferrable sensor.

A real local Airflow replays a hot spell in real time: serious from the start, nominal from
``cool_offset`` on. Four DAGs (``benchmarks/dags/clearance``), triggered together, each have
``HEAVY_TASKS`` heavy tasks that may start at fair or cooler, so they all wait out the spell:

- blocking baseline: each heavy task polls ``ThermalAwareScheduler.should_run_task`` every
  10 s in a sleep loop on its worker, as a hand-written ``wait_for_clearance`` would;
- ``ThermalClearanceSensor`` in reschedule mode before each heavy task, poking every 10 s
  (the default ``check_interval_seconds``), and again poking every 60 s;
- the same sensor, deferrable, polling every 10 s in the triggerer.

Worker-slot-seconds held while waiting come from the REST API's event log: each ``running``
event of a waiting task opens a worker interval that its next ``up_for_reschedule``,
``deferred`` or final state event closes. For the blocking baseline the interval ends when the
heavy work starts. The start delay is the time from the trace's cooling to the heavy work's
start; every heavy task returns the time its work started.

Targets: the reschedule sensor uses at most 1/50 of the baseline's slot-seconds, and the
deferrable one at most 1/200. A sensor's start delay is at most one poke interval plus the
scheduler latency, measured in the same run from the reading that cleared the sensor to its
heavy work's start.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

from benchmarks.local import DAGS, event_log, local_airflow, parse_time, task_instances
from benchmarks.runner import Figure, median
from tests.airflow_helpers import trigger, unpause, wait_for_dag, wait_for_run

NAME = "clearance"
TITLE = "waiting for clearance: blocking loop against the reschedule and deferrable sensor"

log = logging.getLogger(__name__)

# The same values as in benchmarks/dags/clearance/clearance.py, which this module does not import
# because loading a DAG file reads the Airflow configuration of the calling process.
HEAVY_TASKS = 4
CHECK_INTERVAL_SECONDS = 10

BLOCKING = "bench_wait_blocking"
# Sensor DAG id: (label, poke interval in s, target factor of the baseline's slot-seconds).
SENSOR_DAGS = {
    "bench_wait_reschedule": ("reschedule sensor", CHECK_INTERVAL_SECONDS, 50),
    "bench_wait_reschedule_60s": ("reschedule sensor, 60 s pokes", 60, 50),
    "bench_wait_deferrable": ("deferrable sensor", CHECK_INTERVAL_SECONDS, 200),
}
# Events that end a worker interval opened by a "running" event.
CLOSING_EVENTS = {"up_for_reschedule", "deferred", "success", "failed", "up_for_retry", "skipped"}
# Seconds after launch by which Airflow must be up and the runs triggered; 20-40 s on 2 cores.
READY_SECONDS = 100.0
FIGURES = {"memory_used_percent": 40.0, "memory_available_gib": 20.0, "memory_pressure": "normal", "cpu_load": 0.2,
           "low_power_mode": False, "on_battery": False}


def write_trace(path: Path, cool_offset: float) -> None:
    """Serious from the start, nominal from ``cool_offset`` seconds on."""
    with path.open("w") as trace:
        trace.write(json.dumps({"offset_seconds": 0, "thermal_state": "serious", **FIGURES}) + "\n")
        trace.write(json.dumps({"offset_seconds": cool_offset, "thermal_state": "nominal", **FIGURES}) + "\n")


def worker_intervals(events: list[dict], task_id: str) -> list[tuple[float, float | None]]:
    """(start, end) of each worker run of ``task_id``; end is ``None`` if no closing event followed."""
    intervals: list[tuple[float, float | None]] = []
    opened: float | None = None
    for event in events:
        if event["task_id"] != task_id:
            continue
        when = parse_time(event["when"])
        if event["event"] == "running":
            if opened is not None:
                intervals.append((opened, None))
            opened = when
        elif event["event"] in CLOSING_EVENTS and opened is not None:
            intervals.append((opened, when))
            opened = None
    if opened is not None:
        intervals.append((opened, None))
    return intervals


def return_value(api, dag_id: str, run_id: str, task_id: str) -> dict:
    response = api.get(
        f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
        params={"deserialize": True},
    )
    response.raise_for_status()
    return response.json()["value"]


def measure_blocking(api, run_id: str, cooled_at: float) -> dict:
    events = event_log(api, BLOCKING, run_id)
    slot_seconds, delays = 0.0, []
    for index in range(HEAVY_TASKS):
        task_id = f"heavy_{index}"
        started = return_value(api, BLOCKING, run_id, task_id)["heavy_started_at"]
        runs = worker_intervals(events, task_id)
        slot_seconds += started - runs[-1][0]
        delays.append(started - cooled_at)
    return {"slot_seconds": slot_seconds, "delays": delays, "latencies": [], "worker_runs": HEAVY_TASKS}


def measure_sensor(api, dag_id: str, run_id: str, cooled_at: float) -> dict:
    events = event_log(api, dag_id, run_id)
    slot_seconds, delays, latencies, worker_runs = 0.0, [], [], 0
    for index in range(HEAVY_TASKS):
        runs = worker_intervals(events, f"clearance_{index}")
        if any(end is None for _, end in runs):
            raise RuntimeError(f"{dag_id} run {run_id}: clearance_{index} has a worker run without an end event: {runs}")
        slot_seconds += sum(end - start for start, end in runs)
        worker_runs += len(runs)

        heavy_started = return_value(api, dag_id, run_id, f"heavy_{index}")["heavy_started_at"]
        # The sensor returns the reading that cleared it. The time from that check to the heavy
        # work's start is the scheduler's share of the delay, which for the deferrable sensor
        # includes the triggerer's event reaching the scheduler.
        cleared = parse_time(return_value(api, dag_id, run_id, f"clearance_{index}")["taken_at"])
        delays.append(heavy_started - cooled_at)
        latencies.append(heavy_started - cleared)
    return {"slot_seconds": slot_seconds, "delays": delays, "latencies": latencies, "worker_runs": worker_runs}


def run(quick: bool = False) -> list[Figure]:
    # Seconds of hot spell after the runs are triggered, at the latest READY_SECONDS after launch.
    spell = 60.0 if quick else 180.0
    cool_offset = READY_SECONDS + spell
    dag_ids = (BLOCKING, *SENSOR_DAGS)
    with tempfile.TemporaryDirectory(prefix="thermal-pools-bench-trace-") as folder:
        trace = Path(folder) / "hot_spell.jsonl"
        write_trace(trace, cool_offset)
        started_at = time.time()
        cooled_at = started_at + cool_offset
        settings = {"monitor": "replay", "replay_trace": str(trace), "replay_started_at": f"{started_at:.3f}"}
        with local_airflow(NAME, DAGS / "clearance", settings) as airflow, airflow.api() as api:
            for dag_id in dag_ids:
                wait_for_dag(api, dag_id)
                unpause(api, dag_id)
            triggered_at = time.time()
            if triggered_at > started_at + READY_SECONDS:
                raise RuntimeError(
                    f"Airflow took {triggered_at - started_at:.0f} s to get ready, more than {READY_SECONDS:.0f} s; "
                    "raise READY_SECONDS for this machine"
                )
            runs = {dag_id: trigger(api, dag_id) for dag_id in dag_ids}
            log.info("triggered %s; the trace cools %.0f s from now", ", ".join(dag_ids), cooled_at - triggered_at)
            for dag_id, run_id in runs.items():
                state = wait_for_run(api, dag_id, run_id, timeout=cool_offset + 600)
                if state != "success":
                    raise RuntimeError(f"run {run_id} of {dag_id} ended {state}; see the task logs in {airflow.home}")

            results = {BLOCKING: measure_blocking(api, runs[BLOCKING], cooled_at)}
            for dag_id in SENSOR_DAGS:
                results[dag_id] = measure_sensor(api, dag_id, runs[dag_id], cooled_at)
    for dag_id, result in results.items():
        log.info("%s: %.1f slot-seconds in %d worker run(s), start delays %s s", dag_id, result["slot_seconds"],
                 result["worker_runs"], [round(delay, 1) for delay in result["delays"]])

    waited = cooled_at - triggered_at
    baseline = results[BLOCKING]["slot_seconds"]
    figures = []
    for dag_id, (label, _, factor) in SENSOR_DAGS.items():
        slot_seconds = results[dag_id]["slot_seconds"]
        figures.append(
            Figure(
                NAME,
                f"{label}: worker-slot-seconds held while {HEAVY_TASKS} tasks wait {waited:.0f} s",
                slot_seconds,
                "slot-s",
                baseline="blocking poll loop in the task",
                baseline_value=baseline,
                target=f"<= 1/{factor} of the baseline",
                met=slot_seconds * factor <= baseline,
                details={"worker_runs": results[dag_id]["worker_runs"], "baseline_worker_runs": HEAVY_TASKS},
            )
        )
    for dag_id, (label, poke_interval, _) in SENSOR_DAGS.items():
        result = results[dag_id]
        latency = max(result["latencies"])
        bound = poke_interval + latency
        figures.append(
            Figure(
                NAME,
                f"{label}: start delay after cooling (max of {HEAVY_TASKS})",
                max(result["delays"]),
                "s",
                baseline="blocking poll loop in the task",
                baseline_value=max(results[BLOCKING]["delays"]),
                target=f"<= poke interval ({poke_interval} s) + scheduler latency ({latency:.1f} s max)",
                met=max(result["delays"]) <= bound,
                details={"delays": result["delays"], "median_delay": median(result["delays"]),
                         "scheduler_latencies": result["latencies"], "baseline_delays": results[BLOCKING]["delays"]},
            )
        )
    return figures
