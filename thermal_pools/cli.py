"""The ``thermal-pools`` command: look at the host and the pool plan, or run one maintenance step.

    thermal-pools status [--json]     the current reading and the pool plan it implies
    thermal-pools sync [--json]       one maintenance step outside Airflow (records and applies)
    thermal-pools check-trace FILE    validate a recorded trace file

Settings come from the ``[thermal_pools]`` section of the Airflow configuration (or
``AIRFLOW__THERMAL_POOLS__*`` variables). ``--replay FILE`` plays back a trace instead of reading
the host. Expected failures (bad settings, bad traces, an unreachable API) print one line
starting with ``error:`` and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from thermal_pools.config import ConfigError, ThermalSchedulingConfig, load_config
from thermal_pools.reading import Reading

EXIT_ERROR = 2


def _format_reading(reading: Reading) -> list[tuple[str, str]]:
    def value(figure: object, unit: str = "", digits: int = 1) -> str:
        if figure is None:
            return "unknown"
        if isinstance(figure, bool):
            return "yes" if figure else "no"
        if isinstance(figure, float):
            return f"{figure:.{digits}f}{unit}"
        return f"{figure}{unit}"

    state = "unknown" if reading.thermal_state is None else f"{int(reading.thermal_state)} {reading.thermal_state.label}"
    if reading.thermal_reason:
        state += f" ({reading.thermal_reason})"
    return [
        ("host", reading.host),
        ("taken at", reading.taken_at.strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("thermal state", state),
        ("memory used", value(reading.memory_used_percent, " %")),
        ("memory available", value(reading.memory_available_gib, " GiB", 2)),
        ("memory pressure", "unknown" if reading.memory_pressure is None else reading.memory_pressure.label),
        ("CPU load", value(reading.cpu_load, " per core", 2)),
        ("low-power mode", value(reading.low_power_mode)),
        ("on battery", value(reading.on_battery)),
    ]


def _print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(label) for label, _ in rows)
    for label, text in rows:
        print(f"  {label:<{width}}  {text}")


def _config(args: argparse.Namespace) -> ThermalSchedulingConfig:
    config = load_config()
    # Importing Airflow (in load_config) installs a root handler on stdout at INFO, which would
    # mix log lines into --json output, so it is replaced again here.
    _configure_logging(args.verbose)
    if args.replay:
        # A stepped replay (no start time) shows the trace row at the trace's cursor.
        config = config.replace(monitor="replay", replay_trace=str(args.replay), replay_started_at=0.0)
    return config


def _open_store(config: ThermalSchedulingConfig):
    from sqlalchemy.exc import SQLAlchemyError

    from thermal_pools.store import store_from_config

    try:
        return store_from_config(config)
    except (SQLAlchemyError, ValueError) as error:
        logging.getLogger(__name__).warning("readings database unavailable: %s", error)
        return None


def command_status(args: argparse.Namespace) -> int:
    from thermal_pools.maintenance import plan_step
    from thermal_pools.monitor import create_monitor

    config = _config(args)
    observation, plan, health = plan_step(config, create_monitor(config), _open_store(config))
    if args.json:
        # States are integers on Apple's 0-3 scale; the *_label keys give their names.
        summary = {
            "reading": observation.reading.to_dict(),
            "observed_state": int(observation.state),
            "observed_state_label": observation.state.label,
            "basis": observation.basis,
            "planned_state": int(plan.state),
            "planned_state_label": plan.state.label,
            "throttle": plan.throttle,
            "health_score": health,
            "pools": plan.slots_by_name(),
        }
        print(json.dumps(summary, indent=2, default=str))
        return 0

    print("Reading")
    _print_table(_format_reading(observation.reading))
    print("\nPlan")
    _print_table(
        [
            ("acting on", f"{observation.state.label} ({observation.basis})"),
            ("planned state", plan.state.label),
            ("throttle", f"{plan.throttle:.0%}"),
            ("slot factor", f"{plan.slot_factor:.2f}"),
            ("health score", f"{health:.0f} / 100"),
        ]
    )
    print("\nTier pools")
    _print_table([(pool.name, f"{pool.slots} slots (base {config.base_slots(pool.tier)})") for pool in plan.pools])
    return 0


def command_sync(args: argparse.Namespace) -> int:
    from thermal_pools.maintenance import run_step
    from thermal_pools.monitor import create_monitor
    from thermal_pools.pools_api import client_from_connection

    config = _config(args)
    with client_from_connection(config.api_conn_id) as client:
        result = run_step(config, create_monitor(config), _open_store(config), client)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        summary = result.applied.summary() if result.applied else result.outcome
        print(f"{result.observation.reading.host}: planned {result.plan.state.label}, pools {result.plan.slots_by_name()}: {summary}")
    return 0


def command_check_trace(args: argparse.Namespace) -> int:
    from thermal_pools.monitor import load_trace

    rows = load_trace(args.file)
    print(f"{args.file}: {len(rows)} rows, valid")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thermal-pools",
        description="Show the host's thermal reading and the tier pool plan, or run one maintenance step.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)

    status = commands.add_parser("status", help="show the current reading and the pool plan it implies")
    sync = commands.add_parser("sync", help="run one maintenance step: record the reading and resize the pools")
    for sub in (status, sync):
        sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
        sub.add_argument(
            "--replay",
            type=Path,
            metavar="FILE",
            help="read the trace row at FILE's cursor (row 0 unless the cursor was moved) instead of the host",
        )
    status.set_defaults(handler=command_status)
    sync.set_defaults(handler=command_sync)

    check = commands.add_parser("check-trace", help="validate a recorded trace file")
    check.add_argument("file", type=Path, help="trace file (.csv, .jsonl or .ndjson)")
    check.set_defaults(handler=command_check_trace)
    return parser


class _DropReportedErrors(logging.Filter):
    """Drop the maintenance step's ERROR line, which the CLI prints itself as ``error: ...``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "thermal_pools.maintenance" and record.levelno >= logging.ERROR)


def _configure_logging(verbose: bool) -> None:
    """Log to stderr at WARNING (INFO with --verbose), so stdout carries only the command's output."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_DropReportedErrors())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)

    from thermal_pools.maintenance import StepFailed
    from thermal_pools.monitor import TraceError
    from thermal_pools.pools_api import PoolsApiError

    try:
        return args.handler(args)
    except (ConfigError, TraceError, PoolsApiError, StepFailed) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except FileNotFoundError as error:
        print(f"error: file not found: {error.filename}: check the path", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
