"""Monitors: where thermal-pools gets its readings of a host.

:class:`HostMonitor` reads the machine it runs on (macOS or Linux), :class:`ReplayMonitor`
plays back a recorded trace, and :class:`GuardedMonitor` wraps either so that a failing sensor
yields an unknown reading instead of an exception. :func:`create_monitor` builds the one that
the configuration selects.
"""

from __future__ import annotations

import socket
import sys

from thermal_pools.config import ThermalSchedulingConfig
from thermal_pools.monitor.base import Monitor, ReadingBuilder, add_battery, add_cpu_load, add_memory
from thermal_pools.monitor.guard import GuardedMonitor
from thermal_pools.monitor.replay import ReplayMonitor, TraceError, TraceRow, load_trace
from thermal_pools.reading import Reading, utc_now

__all__ = [
    "GuardedMonitor",
    "HostMonitor",
    "Monitor",
    "ReplayMonitor",
    "TraceError",
    "TraceRow",
    "create_monitor",
    "load_trace",
]


class HostMonitor:
    """Monitor of this host that delegates to the monitor for its operating system.

    macOS uses :class:`~thermal_pools.monitor.darwin.DarwinMonitor` and Linux uses
    :class:`~thermal_pools.monitor.linux.LinuxMonitor`. On any other system the thermal state
    is unknown, with a reason naming the platform, and only the psutil figures are read. That
    reason is not ``no sensor``, so it counts as a failed sensor and the safe state applies.
    """

    def __init__(self, host: str | None = None) -> None:
        self.host = host or socket.gethostname()
        self.platform = sys.platform
        self.platform_monitor: Monitor | None
        if self.platform == "darwin":
            from thermal_pools.monitor.darwin import DarwinMonitor

            self.platform_monitor = DarwinMonitor(host=self.host)
        elif self.platform.startswith("linux"):
            from thermal_pools.monitor.linux import LinuxMonitor

            self.platform_monitor = LinuxMonitor(host=self.host)
        else:
            self.platform_monitor = None

    def read(self) -> Reading:
        if self.platform_monitor is not None:
            return self.platform_monitor.read()

        builder = ReadingBuilder(host=self.host, taken_at=utc_now())
        add_memory(builder)
        add_cpu_load(builder)
        add_battery(builder)
        return builder.build(thermal_reason=f"no thermal monitor for platform {self.platform!r}: only macOS and Linux are supported")


def create_monitor(config: ThermalSchedulingConfig) -> Monitor:
    """Build the guarded monitor that ``config.monitor`` names: ``host`` or ``replay``."""
    if config.monitor == "host":
        return GuardedMonitor(HostMonitor())
    if config.monitor == "replay":
        started_at = config.replay_started_at or None
        return GuardedMonitor(ReplayMonitor(config.replay_trace, started_at=started_at))
    raise ValueError(f"invalid monitor {config.monitor!r}: use 'host' or 'replay'")
