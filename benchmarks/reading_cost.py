"""Reading cost: ``HostMonitor().read()`` against a reader that runs system commands.

The baseline gathers the same figures the way a shell script would, one subprocess per source.
On Linux it runs ``cat /proc/meminfo``, ``cat /proc/loadavg``, ``cat /proc/pressure/memory``,
and ``sh -c 'cat ...'`` for the thermal zones' ``temp`` files and the ACPI platform profile. On
macOS it runs ``vm_stat``, ``sysctl`` (memory size, load average, memory pressure level),
``pmset -g therm`` and ``pmset -g batt``. It parses the output into a
:class:`~thermal_pools.reading.Reading`, so both sides do comparable work.

Reads alternate between the readers in rounds, so a change in machine load hits them alike.
Target: the monitor is at least 20 times cheaper than the baseline (median) and a read takes
under 1 ms (99th percentile).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable

from benchmarks.runner import Figure, median, percentile
from thermal_pools.monitor import GuardedMonitor, HostMonitor
from thermal_pools.reading import NO_SENSOR, MemoryPressure, Reading, ThermalState, utc_now

NAME = "reading"
TITLE = "reading cost: HostMonitor against system commands in subprocesses"

log = logging.getLogger(__name__)

GIB = 2**30

LINUX_COMMANDS = {
    "meminfo": ["cat", "/proc/meminfo"],
    "loadavg": ["cat", "/proc/loadavg"],
    "memory_psi": ["cat", "/proc/pressure/memory"],
    "zones": ["sh", "-c", "cat /sys/class/thermal/thermal_zone*/temp 2>/dev/null; true"],
    "platform_profile": ["sh", "-c", "cat /sys/firmware/acpi/platform_profile 2>/dev/null; true"],
}

DARWIN_COMMANDS = {
    "vm_stat": ["vm_stat"],
    "sysctl": ["sysctl", "-n", "hw.memsize", "vm.loadavg", "kern.memorystatus_vm_pressure_level"],
    "therm": ["pmset", "-g", "therm"],
    "batt": ["pmset", "-g", "batt"],
}


def _run(command: list[str]) -> str:
    return subprocess.run(command, capture_output=True, text=True, timeout=10, check=False).stdout


class SubprocessReader:
    """The baseline: the monitor's figures from system commands, one subprocess per source."""

    def __init__(self) -> None:
        self.cpus = os.cpu_count() or 1
        if sys.platform.startswith("linux"):
            self.read = self._read_linux
        elif sys.platform == "darwin":
            self.read = self._read_darwin
        else:
            raise RuntimeError(f"no subprocess baseline for platform {sys.platform!r}: only Linux and macOS")

    def _read_linux(self) -> Reading:
        outputs = {name: _run(command) for name, command in LINUX_COMMANDS.items()}

        meminfo = {}
        for line in outputs["meminfo"].splitlines():
            key, _, rest = line.partition(":")
            meminfo[key] = int(rest.split()[0]) * 1024
        total, available = meminfo["MemTotal"], meminfo["MemAvailable"]
        load_1m = float(outputs["loadavg"].split()[0])

        pressure = None
        for line in outputs["memory_psi"].splitlines():
            kind, *fields = line.split()
            avg10 = float(dict(field.split("=") for field in fields)["avg10"])
            if kind == "full" and avg10 >= 10:
                pressure = MemoryPressure.CRITICAL
            elif kind == "some":
                pressure = MemoryPressure.WARNING if avg10 >= 10 else MemoryPressure.NORMAL

        temperatures = [int(text) / 1000 for text in outputs["zones"].split()]
        # Without trip points a shell script can only guess; 80 °C is the usual passive trip.
        state = max((ThermalState.SERIOUS if t >= 80 else ThermalState.NOMINAL for t in temperatures), default=None)
        return Reading(
            host="baseline",
            taken_at=utc_now(),
            thermal_state=state,
            thermal_reason="" if state is not None else NO_SENSOR,
            memory_used_percent=100 * (total - available) / total,
            memory_available_gib=available / GIB,
            memory_pressure=pressure,
            cpu_load=load_1m / self.cpus,
            low_power_mode=outputs["platform_profile"].strip() == "low-power" if outputs["platform_profile"] else None,
        )

    def _read_darwin(self) -> Reading:
        outputs = {name: _run(command) for name, command in DARWIN_COMMANDS.items()}

        page_size = 16384
        pages = {}
        for line in outputs["vm_stat"].splitlines():
            if "page size of" in line:
                page_size = int(line.split("page size of")[1].split()[0])
            key, _, value = line.partition(":")
            if value.strip().rstrip(".").isdigit():
                pages[key.strip()] = int(value.strip().rstrip("."))
        sysctl = outputs["sysctl"].split("\n")
        total = int(sysctl[0])
        load_1m = float(sysctl[1].strip("{} ").split()[0])
        level = int(sysctl[2])
        available = (pages.get("Pages free", 0) + pages.get("Pages inactive", 0)) * page_size

        therm = outputs["therm"]
        state = ThermalState.NOMINAL if "No thermal warning level" in therm or not therm else ThermalState.SERIOUS
        return Reading(
            host="baseline",
            taken_at=utc_now(),
            thermal_state=state,
            memory_used_percent=100 * (total - available) / total,
            memory_available_gib=available / GIB,
            memory_pressure={1: MemoryPressure.NORMAL, 2: MemoryPressure.WARNING, 4: MemoryPressure.CRITICAL}.get(level),
            cpu_load=load_1m / self.cpus,
            on_battery="Battery Power" in outputs["batt"],
        )


def _time_reads(read: Callable[[], Reading], count: int, into: list[float]) -> None:
    for _ in range(count):
        began = time.perf_counter_ns()
        read()
        into.append((time.perf_counter_ns() - began) / 1e6)


def run(quick: bool = False) -> list[Figure]:
    rounds = 5
    host_reads, baseline_reads = (200, 20) if quick else (2000, 100)

    host = HostMonitor()
    guarded = GuardedMonitor(HostMonitor())
    baseline = SubprocessReader()
    readers = {"host": host.read, "guarded": guarded.read, "baseline": baseline.read}

    # Warm-up: imports, file handles and psutil's first calls are not part of a steady read.
    for read in readers.values():
        for _ in range(5):
            read()

    samples: dict[str, list[float]] = {name: [] for name in readers}
    for round_number in range(rounds):
        _time_reads(host.read, host_reads // rounds, samples["host"])
        _time_reads(guarded.read, host_reads // rounds, samples["guarded"])
        _time_reads(baseline.read, baseline_reads // rounds, samples["baseline"])
        log.info("round %d of %d done", round_number + 1, rounds)

    base_median = median(samples["baseline"])
    base_p99 = percentile(samples["baseline"], 0.99)
    commands = len(LINUX_COMMANDS if sys.platform.startswith("linux") else DARWIN_COMMANDS)
    baseline_name = f"{commands} system commands in subprocesses"
    figures = []
    for key, label in (("host", "HostMonitor().read()"), ("guarded", "GuardedMonitor(HostMonitor()).read()")):
        value_median = median(samples[key])
        value_p99 = percentile(samples[key], 0.99)
        counts = {"reads": len(samples[key]), "baseline_reads": len(samples["baseline"])}
        figures.append(
            Figure(
                NAME,
                f"{label} median",
                value_median,
                "ms",
                baseline=baseline_name,
                baseline_value=base_median,
                target=">= 20x cheaper than the baseline",
                met=base_median / value_median >= 20,
                details=counts,
            )
        )
        figures.append(
            Figure(
                NAME,
                f"{label} p99",
                value_p99,
                "ms",
                baseline=baseline_name,
                baseline_value=base_p99,
                target="< 1 ms",
                met=value_p99 < 1.0,
                details=counts,
            )
        )
    return figures
