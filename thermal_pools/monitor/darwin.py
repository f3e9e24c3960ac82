"""Readings of a macOS host, from libSystem, the Objective-C runtime and psutil.

| field | unit | source |
|---|---|---|
| ``thermal_state`` | 0-3 | the hotter of the notify key ``com.apple.system.thermalpressurelevel`` and ``NSProcessInfo.processInfo.thermalState`` |
| ``memory_pressure`` | normal/warning/critical | sysctl ``kern.memorystatus_vm_pressure_level`` (1, 2, 4) |
| ``low_power_mode`` | bool | ``NSProcessInfo.isLowPowerModeEnabled`` and the ``LowPowerMode``/``powermode`` keys of ``/Library/Preferences/com.apple.PowerManagement.plist`` |
| ``memory_used_percent``, ``memory_available_gib``, ``cpu_load``, ``on_battery`` | see base | psutil, ``os.getloadavg`` |

The thermal pressure level has five values: 0 nominal, 1 moderate, 2 heavy, 3 trapping and
4 sleeping. They map to Apple's 0-3 thermal scale as nominal, fair, serious, critical and
critical. ``raw`` keeps both thermal inputs, the sysctl code and the power preferences read.

Every call into macOS goes through :class:`SystemCalls`, so tests can pass fakes. The real
table loads libSystem, libobjc and Foundation on the first read, never at import. Foundation
is not fork-safe: a child forked from a process that loaded it (as Airflow forks each task)
may crash when it uses Objective-C, so a process that never reads must never load it.
"""

from __future__ import annotations

import ctypes
import plistlib
import socket
import xml.parsers.expat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thermal_pools.monitor.base import ReadingBuilder, add_battery, add_cpu_load, add_memory
from thermal_pools.reading import MemoryPressure, Reading, ThermalState, utc_now

THERMAL_PRESSURE_KEY = "com.apple.system.thermalpressurelevel"
MEMORY_PRESSURE_SYSCTL = "kern.memorystatus_vm_pressure_level"
POWER_PREFERENCES = Path("/Library/Preferences/com.apple.PowerManagement.plist")

# Notify thermal pressure level (0 nominal .. 4 sleeping) to the 0-3 thermal scale.
PRESSURE_LEVEL_STATES = {
    0: ThermalState.NOMINAL,
    1: ThermalState.FAIR,
    2: ThermalState.SERIOUS,
    3: ThermalState.CRITICAL,
    4: ThermalState.CRITICAL,
}

# sysctl kern.memorystatus_vm_pressure_level codes.
MEMORY_PRESSURE_CODES = {
    1: MemoryPressure.NORMAL,
    2: MemoryPressure.WARNING,
    4: MemoryPressure.CRITICAL,
}

# In the power preferences, LowPowerMode is 0 or 1, and powermode is 0 automatic, 1 low power
# or 2 high power (Macs that offer High Power Mode).
LOW_POWER_MODE_VALUE = 1


@dataclass(frozen=True)
class SystemCalls:
    """The macOS calls a read makes. Each raises ``OSError`` when its library or call fails."""

    thermal_pressure_level: Callable[[], int]
    process_thermal_state: Callable[[], int]
    low_power_mode_enabled: Callable[[], bool]
    sysctl_int: Callable[[str], int]
    power_preferences: Callable[[], Mapping[str, Any]]


# -- mapping ---------------------------------------------------------------------------------


def state_from_pressure_level(level: int) -> ThermalState:
    try:
        return PRESSURE_LEVEL_STATES[level]
    except KeyError:
        raise ValueError(f"unexpected thermal pressure level {level!r}: expected 0-4") from None


def state_from_process_info(value: int) -> ThermalState:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 3:
        raise ValueError(f"unexpected NSProcessInfo thermalState {value!r}: expected 0-3")
    return ThermalState(value)


def memory_pressure_from_code(code: int) -> MemoryPressure:
    try:
        return MEMORY_PRESSURE_CODES[code]
    except KeyError:
        raise ValueError(f"unexpected {MEMORY_PRESSURE_SYSCTL} {code!r}: expected 1, 2 or 4") from None


def low_power_from_preferences(preferences: Mapping[str, Any], on_battery: bool | None) -> bool | None:
    """Return whether the active power profile enables low-power mode, or ``None`` if it has no such key.

    The active profile is "Battery Power" on battery and "AC Power" otherwise.
    """
    profile = preferences.get("Battery Power" if on_battery else "AC Power")
    if not isinstance(profile, Mapping):
        return None
    values = [profile.get(key) for key in ("LowPowerMode", "powermode")]
    known = [value for value in values if isinstance(value, int)]
    if not known:
        return None
    return LOW_POWER_MODE_VALUE in known


class DarwinMonitor:
    """Monitor of a macOS host. ``calls`` replaces the real system calls, for tests."""

    def __init__(self, *, host: str | None = None, calls: SystemCalls | None = None) -> None:
        self.host = host or socket.gethostname()
        self.calls = calls or system_calls()

    def read(self) -> Reading:
        builder = ReadingBuilder(host=self.host, taken_at=utc_now())
        reason = self._add_thermal_state(builder)
        self._add_memory_pressure(builder)
        add_memory(builder)
        add_cpu_load(builder)
        add_battery(builder)
        self._add_low_power_mode(builder)
        return builder.build(thermal_reason=reason)

    def _add_thermal_state(self, builder: ReadingBuilder) -> str:
        """Set the hotter of the two thermal inputs and return the reason when both fail."""
        states: dict[str, ThermalState] = {}
        errors: list[str] = []

        try:
            level = self.calls.thermal_pressure_level()
            builder.raw["thermal_pressure_level"] = level
            states[f"notify:{THERMAL_PRESSURE_KEY}"] = state_from_pressure_level(level)
        except (OSError, ValueError) as error:
            errors.append(f"thermal pressure level: {error}")

        try:
            value = self.calls.process_thermal_state()
            builder.raw["process_thermal_state"] = value
            states["NSProcessInfo.thermalState"] = state_from_process_info(value)
        except (OSError, ValueError) as error:
            errors.append(f"NSProcessInfo thermalState: {error}")

        if errors:
            builder.raw["thermal_errors"] = errors
        if not states:
            return "; ".join(errors)

        hottest = max(states.values())
        sources = [source for source, state in states.items() if state == hottest]
        builder.set("thermal_state", hottest, ", ".join(sources))
        return ""

    def _add_memory_pressure(self, builder: ReadingBuilder) -> None:
        try:
            code = self.calls.sysctl_int(MEMORY_PRESSURE_SYSCTL)
            builder.raw["memory_pressure_code"] = code
            pressure = memory_pressure_from_code(code)
        except (OSError, ValueError) as error:
            builder.raw["memory_pressure_error"] = str(error)
            return
        builder.set("memory_pressure", pressure, f"sysctl {MEMORY_PRESSURE_SYSCTL}")

    def _add_low_power_mode(self, builder: ReadingBuilder) -> None:
        """Set low-power mode: on if either source reports it, off if a source was read and neither did."""
        reports: dict[str, bool] = {}

        try:
            enabled = bool(self.calls.low_power_mode_enabled())
            builder.raw["lowpowermode"] = enabled
            reports["NSProcessInfo.isLowPowerModeEnabled"] = enabled
        except OSError as error:
            builder.raw["lowpowermode_error"] = str(error)

        try:
            preferences = self.calls.power_preferences()
        except OSError as error:
            builder.raw["power_preferences_error"] = str(error)
        else:
            from_preferences = low_power_from_preferences(preferences, builder.values.get("on_battery"))
            builder.raw["power_preferences_low_power"] = from_preferences
            if from_preferences is not None:
                reports[str(POWER_PREFERENCES)] = from_preferences

        if not reports:
            return
        enabled = any(reports.values())
        sources = [source for source, value in reports.items() if value == enabled]
        builder.set("low_power_mode", enabled, ", ".join(sources))


# -- the real calls --------------------------------------------------------------------------
#
# NOTE: the tests run these calls only on Linux, where loading libSystem fails, and test the
# mapping against fakes. Their success path on macOS has not run in this repository's tests.

LIBSYSTEM = "/usr/lib/libSystem.B.dylib"
LIBOBJC = "/usr/lib/libobjc.A.dylib"
FOUNDATION = "/System/Library/Frameworks/Foundation.framework/Foundation"
NOTIFY_STATUS_OK = 0


class _NativeCalls:
    """ctypes implementation of :class:`SystemCalls`. Each library is loaded on first use."""

    def __init__(self) -> None:
        self._libsystem: ctypes.CDLL | None = None
        self._process_info: tuple[ctypes.CDLL, int] | None = None

    def libsystem(self) -> ctypes.CDLL:
        if self._libsystem is None:
            lib = ctypes.CDLL(LIBSYSTEM, use_errno=True)
            lib.notify_register_check.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
            lib.notify_register_check.restype = ctypes.c_uint32
            lib.notify_get_state.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_uint64)]
            lib.notify_get_state.restype = ctypes.c_uint32
            lib.notify_cancel.argtypes = [ctypes.c_int]
            lib.notify_cancel.restype = ctypes.c_uint32
            lib.sysctlbyname.argtypes = [
                ctypes.c_char_p,
                ctypes.c_void_p,
                ctypes.POINTER(ctypes.c_size_t),
                ctypes.c_void_p,
                ctypes.c_size_t,
            ]
            lib.sysctlbyname.restype = ctypes.c_int
            self._libsystem = lib
        return self._libsystem

    def thermal_pressure_level(self) -> int:
        lib = self.libsystem()
        token = ctypes.c_int()
        status = lib.notify_register_check(THERMAL_PRESSURE_KEY.encode(), ctypes.byref(token))
        if status != NOTIFY_STATUS_OK:
            raise OSError(f"notify_register_check({THERMAL_PRESSURE_KEY}) returned status {status}")
        try:
            state = ctypes.c_uint64()
            status = lib.notify_get_state(token, ctypes.byref(state))
            if status != NOTIFY_STATUS_OK:
                raise OSError(f"notify_get_state({THERMAL_PRESSURE_KEY}) returned status {status}")
            return int(state.value)
        finally:
            lib.notify_cancel(token)

    def sysctl_int(self, name: str) -> int:
        lib = self.libsystem()
        value = ctypes.c_int()
        size = ctypes.c_size_t(ctypes.sizeof(value))
        if lib.sysctlbyname(name.encode(), ctypes.byref(value), ctypes.byref(size), None, 0) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"sysctlbyname({name}) failed")
        return int(value.value)

    def _send(self, selector: str, restype: Any) -> Any:
        """Send a no-argument message to ``NSProcessInfo.processInfo``, if it responds to it."""
        if self._process_info is None:
            # Foundation registers NSProcessInfo with the runtime; libobjc alone does not.
            objc = ctypes.CDLL(LIBOBJC)
            ctypes.CDLL(FOUNDATION)
            objc.objc_getClass.argtypes = [ctypes.c_char_p]
            objc.objc_getClass.restype = ctypes.c_void_p
            objc.sel_registerName.argtypes = [ctypes.c_char_p]
            objc.sel_registerName.restype = ctypes.c_void_p

            send_id = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(("objc_msgSend", objc))
            process_info_class = objc.objc_getClass(b"NSProcessInfo")
            if not process_info_class:
                raise OSError("Objective-C class NSProcessInfo not found after loading Foundation")
            process_info = send_id(process_info_class, objc.sel_registerName(b"processInfo"))
            if not process_info:
                raise OSError("[NSProcessInfo processInfo] returned nil")
            self._process_info = (objc, process_info)

        objc, process_info = self._process_info
        selector_id = objc.sel_registerName(selector.encode())

        # An unknown selector raises an Objective-C exception, which would abort the process.
        responds = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(
            ("objc_msgSend", objc)
        )
        if not responds(process_info, objc.sel_registerName(b"respondsToSelector:"), selector_id):
            raise OSError(f"NSProcessInfo does not respond to {selector} on this macOS version")
        send = ctypes.CFUNCTYPE(restype, ctypes.c_void_p, ctypes.c_void_p)(("objc_msgSend", objc))
        return send(process_info, selector_id)

    def process_thermal_state(self) -> int:
        return int(self._send("thermalState", ctypes.c_long))

    def low_power_mode_enabled(self) -> bool:
        return bool(self._send("isLowPowerModeEnabled", ctypes.c_bool))

    def power_preferences(self) -> Mapping[str, Any]:
        try:
            with POWER_PREFERENCES.open("rb") as file:
                preferences = plistlib.load(file)
        except (ValueError, xml.parsers.expat.ExpatError) as error:
            raise OSError(f"unreadable property list {POWER_PREFERENCES}: {error}") from error
        if not isinstance(preferences, Mapping):
            raise OSError(f"unexpected top level {type(preferences).__name__} in {POWER_PREFERENCES}")
        return preferences


def _wrap_errors(call: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a missing symbol (``AttributeError``) into the ``OSError`` the table promises."""

    def wrapped(*args: Any) -> Any:
        try:
            return call(*args)
        except AttributeError as error:
            raise OSError(f"macOS symbol not available: {error}") from error

    return wrapped


def system_calls() -> SystemCalls:
    """Build the table of real calls; nothing is loaded until one of them runs."""
    native = _NativeCalls()
    return SystemCalls(
        thermal_pressure_level=_wrap_errors(native.thermal_pressure_level),
        process_thermal_state=_wrap_errors(native.process_thermal_state),
        low_power_mode_enabled=_wrap_errors(native.low_power_mode_enabled),
        sysctl_int=_wrap_errors(native.sysctl_int),
        power_preferences=_wrap_errors(native.power_preferences),
    )
