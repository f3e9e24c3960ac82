"""Play back a recorded trace of readings, for demos and tests. docs/traces.md describes the format.

A trace is a CSV file (``.csv``) or JSON Lines file (``.jsonl``, ``.ndjson``), one row per
reading, with these columns. Every column but ``offset_seconds`` may be empty (CSV) or null
(JSON), which means unknown.

| column | values |
|---|---|
| ``offset_seconds`` | required; seconds since the trace start, >= 0, non-decreasing |
| ``thermal_state`` | 0-3 or nominal/fair/serious/critical |
| ``thermal_reason`` | why the state is unknown; ``no sensor`` plays a host without a sensor |
| ``memory_used_percent`` | percent 0-100 |
| ``memory_available_gib`` | GiB >= 0 |
| ``memory_pressure`` | normal/warning/critical or 0/1/2 |
| ``cpu_load`` | 1-minute load average per logical CPU, >= 0 |
| ``low_power_mode``, ``on_battery`` | true/false, yes/no or 1/0 |
| ``host`` | host name of the row |

A row with an unknown thermal state and no reason gets the reason ``unknown in trace``.
"""

from __future__ import annotations

import bisect
import csv
import json
import math
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from thermal_pools.reading import MemoryPressure, Reading, ThermalState

UNKNOWN_IN_TRACE = "unknown in trace"

CSV_SUFFIXES = (".csv",)
JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")

COLUMNS = (
    "offset_seconds",
    "thermal_state",
    "thermal_reason",
    "memory_used_percent",
    "memory_available_gib",
    "memory_pressure",
    "cpu_load",
    "low_power_mode",
    "on_battery",
    "host",
)

# Reading fields that a trace row sets, in the order of COLUMNS.
FIGURES = COLUMNS[1:-1]


class TraceError(ValueError):
    """A trace that cannot be played; the message names the file, line, column and fix."""


@dataclass(frozen=True)
class TraceRow:
    """One row of a trace; ``line`` is its line number in the file."""

    offset_seconds: float
    thermal_state: ThermalState | None = None
    thermal_reason: str = ""
    memory_used_percent: float | None = None
    memory_available_gib: float | None = None
    memory_pressure: MemoryPressure | None = None
    cpu_load: float | None = None
    low_power_mode: bool | None = None
    on_battery: bool | None = None
    host: str | None = None
    line: int = field(default=0, compare=False)


# -- parsing ---------------------------------------------------------------------------------


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _number(value: Any, *, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool):
        raise ValueError
    number = float(value.strip() if isinstance(value, str) else value)
    if not math.isfinite(number) or not low <= number <= high:
        raise ValueError
    return number


def _thermal_state(value: Any) -> ThermalState:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return ThermalState.parse(value)


def _memory_pressure(value: Any) -> MemoryPressure:
    if isinstance(value, bool):
        raise ValueError
    text = str(int(value) if isinstance(value, float) and value.is_integer() else value).strip().lower()
    if text.isdigit():
        return MemoryPressure(int(text))
    return MemoryPressure[text.upper()]


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    raise ValueError


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError
    return value.strip()


# Per column: the parser and the accepted values, for the error message.
PARSERS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "offset_seconds": (lambda v: _number(v, low=0), "seconds since the trace start, a number >= 0"),
    "thermal_state": (_thermal_state, "0-3, a tier name (nominal, fair, serious, critical) or empty for unknown"),
    "thermal_reason": (_text, "text"),
    "memory_used_percent": (lambda v: _number(v, low=0, high=100), "a percent 0-100 or empty"),
    "memory_available_gib": (lambda v: _number(v, low=0), "GiB, a number >= 0, or empty"),
    "memory_pressure": (_memory_pressure, "normal, warning, critical, 0, 1, 2 or empty"),
    "cpu_load": (lambda v: _number(v, low=0), "load per CPU, a number >= 0, or empty"),
    "low_power_mode": (_boolean, "true/false, yes/no, 1/0 or empty"),
    "on_battery": (_boolean, "true/false, yes/no, 1/0 or empty"),
    "host": (_text, "a host name or empty"),
}


def _parse_row(path: Path, line: int, record: dict[str, Any], previous_offset: float) -> TraceRow:
    """Validate one record of column name to raw value; raise TraceError naming the bad column."""
    unknown = [name for name in record if name not in PARSERS]
    if unknown:
        raise TraceError(
            f"{path}, line {line}: unknown column(s) {', '.join(map(repr, unknown))}: "
            f"valid columns are {', '.join(COLUMNS)}"
        )
    if _is_empty(record.get("offset_seconds")):
        raise TraceError(f"{path}, line {line}: missing offset_seconds: every row needs seconds since the trace start")

    values: dict[str, Any] = {}
    for name, raw in record.items():
        if _is_empty(raw):
            continue
        parse, accepted = PARSERS[name]
        try:
            values[name] = parse(raw)
        except (ValueError, KeyError, TypeError):
            raise TraceError(f"{path}, line {line}: invalid {name} {raw!r}: expected {accepted}") from None

    offset = values["offset_seconds"]
    if offset < previous_offset:
        raise TraceError(
            f"{path}, line {line}: invalid offset_seconds {record['offset_seconds']!r}: "
            f"it is before the previous row's {previous_offset:g}; sort the rows by offset_seconds"
        )
    if values.get("thermal_state") is None and not values.get("thermal_reason"):
        values["thermal_reason"] = UNKNOWN_IN_TRACE
    return TraceRow(line=line, **values)


def _csv_records(path: Path, file: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(file, restkey="\0extra")
    header = reader.fieldnames
    if header is None:
        return
    header = [name.strip() for name in header]
    reader.fieldnames = header
    unknown = [name for name in header if name not in PARSERS]
    if unknown:
        raise TraceError(
            f"{path}, line 1: unknown column(s) {', '.join(map(repr, unknown))}: valid columns are {', '.join(COLUMNS)}"
        )
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise TraceError(f"{path}, line 1: duplicate column(s) {', '.join(duplicates)}: keep one of each")
    if "offset_seconds" not in header:
        raise TraceError(f"{path}, line 1: missing required column offset_seconds: add it to the header")

    for record in reader:
        if "\0extra" in record or None in record.values():
            raise TraceError(
                f"{path}, line {reader.line_num}: row has a different number of values than the "
                f"{len(header)} header columns: quote values that contain commas"
            )
        yield reader.line_num, record


def _json_lines_records(path: Path, file: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    for line, text in enumerate(file, start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            raise TraceError(
                # Some json messages end in "at" ("Invalid control character at"), so the column
                # follows a comma rather than a second "at".
                f"{path}, line {line}: invalid JSON ({error.msg.removesuffix(' at')}, column {error.colno}): "
                "each line must be one complete JSON object"
            ) from None
        if not isinstance(record, dict):
            raise TraceError(f"{path}, line {line}: expected a JSON object, got {type(record).__name__}")
        yield line, record


def load_trace(path: str | os.PathLike[str]) -> list[TraceRow]:
    """Read and validate a whole trace; raise TraceError on the first problem found."""
    path = Path(path)
    if path.is_dir():
        raise TraceError(f"trace path {path} is a directory: pass a .csv, .jsonl or .ndjson file")
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        records = _csv_records
    elif suffix in JSON_LINES_SUFFIXES:
        records = _json_lines_records
    else:
        raise TraceError(
            f"unsupported trace file {path}: name it *.csv for CSV or *.jsonl / *.ndjson for JSON Lines"
        )

    rows: list[TraceRow] = []
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            for line, record in records(path, file):
                previous = rows[-1].offset_seconds if rows else 0.0
                rows.append(_parse_row(path, line, record, previous))
    except OSError as error:
        raise TraceError(f"cannot read trace {path}: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        raise TraceError(f"cannot read trace {path}: not UTF-8 text ({error.reason})") from None

    if not rows:
        raise TraceError(f"{path}: trace has no rows: add at least one row with offset_seconds")
    return rows


# -- playback --------------------------------------------------------------------------------


class ReplayMonitor:
    """Monitor that plays back a trace, in real time or one row at a time.

    With ``started_at`` (epoch seconds), a read at wall time ``t`` returns the last row whose
    ``offset_seconds <= t - started_at``: the first row before that, the last row after the
    end. This needs no state, so separate processes agree.

    With ``started_at=None``, a read returns the row at the cursor, a row index stored in
    ``<trace>.cursor`` next to the trace (0 when the file is absent). :meth:`step` and
    :meth:`seek` move it for every process that reads the trace.

    ``taken_at`` is the current time from ``clock``. The host is the row's ``host`` column,
    else ``host``, else this machine's host name.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        started_at: float | None = None,
        host: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if started_at is not None and (isinstance(started_at, bool) or not math.isfinite(started_at)):
            raise ValueError(f"invalid started_at {started_at!r}: expected epoch seconds, or None for stepped replay")
        self.path = Path(path)
        self.rows = load_trace(self.path)
        self.started_at = started_at
        self.host = host
        self.clock = clock
        self.cursor_path = self.path.with_name(self.path.name + ".cursor")
        self._offsets = [row.offset_seconds for row in self.rows]

    def read(self) -> Reading:
        now = self.clock()
        raw: dict[str, Any] = {"trace": str(self.path)}
        if self.started_at is None:
            index = self.cursor
        else:
            elapsed = now - self.started_at
            index = max(bisect.bisect_right(self._offsets, elapsed) - 1, 0)
            raw["elapsed_seconds"] = elapsed
        row = self.rows[index]
        raw.update({"row": index, "line": row.line, "offset_seconds": row.offset_seconds})

        figures = {name: getattr(row, name) for name in FIGURES}
        source = f"{self.path}:{row.line}"
        return Reading(
            host=row.host or self.host or socket.gethostname(),
            taken_at=datetime.fromtimestamp(now, timezone.utc),
            sources={name: source for name, value in figures.items() if value is not None and name != "thermal_reason"},
            raw=raw,
            **figures,
        )

    # -- stepped playback -------------------------------------------------------------------

    @property
    def cursor(self) -> int:
        """Row index of the stepped playback, clamped to the trace."""
        try:
            text = self.cursor_path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return 0
        except OSError as error:
            raise TraceError(f"cannot read replay cursor {self.cursor_path}: {error.strerror or error}") from error
        try:
            index = int(text)
        except ValueError:
            raise TraceError(
                f"invalid replay cursor {text!r} in {self.cursor_path}: expected a row index; "
                "delete the file to start from row 0"
            ) from None
        return min(max(index, 0), len(self.rows) - 1)

    def step(self, n: int = 1) -> int:
        """Move the cursor ``n`` rows (back when negative), stopping at either end, and return the new index."""
        index = min(max(self.cursor + n, 0), len(self.rows) - 1)
        self.seek(index)
        return index

    def seek(self, index: int) -> None:
        """Move the cursor to row ``index`` (0-based)."""
        if self.started_at is not None:
            raise RuntimeError(
                f"cannot move the cursor of {self.path}: it replays in real time from {self.started_at}; "
                "create the monitor with started_at=None to step"
            )
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self.rows):
            raise ValueError(
                f"invalid row index {index!r}: {self.path} has {len(self.rows)} rows, use 0-{len(self.rows) - 1}"
            )
        self._write_cursor(index)

    def _write_cursor(self, index: int) -> None:
        """Replace the cursor file atomically, so a concurrent reader gets the old or the new index."""
        descriptor, temporary = tempfile.mkstemp(
            dir=self.cursor_path.parent, prefix=f".{self.cursor_path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(descriptor, "w", encoding="ascii") as file:
                file.write(f"{index}\n")
            os.replace(temporary, self.cursor_path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
