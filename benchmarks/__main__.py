"""Command line of the benchmark suite: ``python -m benchmarks [NAME ...] [--quick]``."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.runner import Figure, format_figure, machine, record

# Benchmark modules in the order a full run takes them: the short ones first.
MODULES = {
    "reading": "benchmarks.reading_cost",
    "pool-sync": "benchmarks.pool_sync",
    "overhead": "benchmarks.scheduler_overhead",
    "reaction": "benchmarks.reaction_time",
    "clearance": "benchmarks.clearance_wait",
}

log = logging.getLogger("benchmarks")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run thermal-pools benchmarks against their baselines and record the figures.",
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run, from: {', '.join(MODULES)} (default: all, in that order)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer samples and shorter waits, for a smoke run")
    parser.add_argument(
        "--output", type=Path, help="JSON file for the results (default: benchmarks/results/<UTC start time>.json)"
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in MODULES]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}: choose from {', '.join(MODULES)}")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # One line per HTTP request would drown the benchmarks' own progress lines.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    started_at = datetime.now(timezone.utc)
    command = ["scripts/bench", *argv]
    print(f"machine: {machine()}", flush=True)

    figures: list[Figure] = []
    failed: list[str] = []
    output = args.output
    for name in args.names or list(MODULES):
        module = importlib.import_module(MODULES[name])
        print(f"\n== {name}: {module.TITLE}{' (quick)' if args.quick else ''}", flush=True)
        began = time.monotonic()
        load_before = os.getloadavg()[0]
        try:
            new = module.run(quick=args.quick)
        except Exception:  # noqa: BLE001 - one broken benchmark must not lose the others' figures
            failed.append(name)
            log.error("benchmark %s failed after %.0f s:\n%s", name, time.monotonic() - began, traceback.format_exc())
            continue
        seconds = time.monotonic() - began
        log.info("benchmark %s took %.0f s", name, seconds)
        # Other work on the machine skews every figure; the load average shows how much there was.
        load = {"load_average_1m_before": load_before, "load_average_1m_after": os.getloadavg()[0], "benchmark_seconds": seconds}
        for figure in new:
            figure.details.update(load)
            print(format_figure(figure), flush=True)
        figures.extend(new)
        output = record(figures, argv=command, started_at=started_at, output=output)

    if figures:
        print(f"\nresults written to {output}")
    if failed:
        print(f"benchmark(s) failed to run: {', '.join(failed)}; see the errors above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
