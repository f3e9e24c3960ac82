"""load_trace validation and ReplayMonitor playback, real time and stepped."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from thermal_pools.config import ThermalSchedulingConfig
from thermal_pools.monitor import GuardedMonitor, ReplayMonitor, TraceError, create_monitor, load_trace
from thermal_pools.monitor.replay import UNKNOWN_IN_TRACE
from thermal_pools.reading import NO_SENSOR, MemoryPressure, ThermalState

REPOSITORY = Path(__file__).resolve().parent.parent
TRACES = Path(__file__).parent / "traces"
SHORT_CSV = TRACES / "short_spell.csv"
SHORT_JSONL = TRACES / "short_spell.jsonl"
DEMO = REPOSITORY / "dags/traces/demo_hot_spell.jsonl"

HEADER = "offset_seconds,thermal_state,memory_used_percent,memory_pressure,low_power_mode"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- loading ---------------------------------------------------------------------------------


def test_load_csv_values() -> None:
    rows = load_trace(SHORT_CSV)

    assert len(rows) == 7
    assert rows[1].offset_seconds == 30.0
    assert rows[1].thermal_state == ThermalState.FAIR
    assert rows[2].memory_pressure == MemoryPressure.WARNING
    assert rows[3].memory_used_percent == 90.5
    assert rows[3].memory_available_gib == 1.4
    assert rows[3].cpu_load == 1.8
    assert rows[3].low_power_mode is True
    assert rows[3].on_battery is True
    assert rows[0].host == "mac-studio"
    assert rows[6].host is None
    assert rows[0].line == 2


def test_load_csv_equals_jsonl() -> None:
    assert load_trace(SHORT_CSV) == load_trace(SHORT_JSONL)


def test_load_jsonl_skips_blank_lines() -> None:
    rows = load_trace(SHORT_JSONL)

    assert rows[5].line == 7


def test_unknown_state_gets_reason() -> None:
    rows = load_trace(SHORT_CSV)

    assert rows[4].thermal_state is None
    assert rows[4].thermal_reason == UNKNOWN_IN_TRACE


def test_unknown_state_keeps_reason() -> None:
    rows = load_trace(SHORT_CSV)

    assert rows[5].thermal_reason == NO_SENSOR


def test_ndjson_suffix(tmp_path: Path) -> None:
    path = write(tmp_path, "t.ndjson", '{"offset_seconds": 0, "thermal_state": 2}\n')

    assert load_trace(path)[0].thermal_state == ThermalState.SERIOUS


@pytest.mark.parametrize(
    ("row", "column", "value"),
    [
        ("x,0,40,normal,false", "offset_seconds", "'x'"),
        ("-1,0,40,normal,false", "offset_seconds", "'-1'"),
        ("nan,0,40,normal,false", "offset_seconds", "'nan'"),
        ("0,hot,40,normal,false", "thermal_state", "'hot'"),
        ("0,4,40,normal,false", "thermal_state", "'4'"),
        ("0,0,140,normal,false", "memory_used_percent", "'140'"),
        ("0,0,-3,normal,false", "memory_used_percent", "'-3'"),
        ("0,0,40,high,false", "memory_pressure", "'high'"),
        ("0,0,40,3,false", "memory_pressure", "'3'"),
        ("0,0,40,normal,maybe", "low_power_mode", "'maybe'"),
    ],
)
def test_csv_bad_value(tmp_path: Path, row: str, column: str, value: str) -> None:
    path = write(tmp_path, "bad.csv", f"{HEADER}\n0,0,40,normal,false\n{row}\n")

    with pytest.raises(TraceError) as raised:
        load_trace(path)

    message = str(raised.value)
    assert str(path) in message
    assert "line 3" in message
    assert f"invalid {column} {value}" in message
    assert "expected" in message


@pytest.mark.parametrize(
    ("record", "column"),
    [
        ({"offset_seconds": 0, "thermal_state": 2.5}, "thermal_state"),
        ({"offset_seconds": 0, "thermal_state": True}, "thermal_state"),
        ({"offset_seconds": 0, "cpu_load": -0.1}, "cpu_load"),
        ({"offset_seconds": 0, "memory_available_gib": "lots"}, "memory_available_gib"),
        ({"offset_seconds": 0, "on_battery": 2}, "on_battery"),
        ({"offset_seconds": 0, "host": 42}, "host"),
        ({"offset_seconds": True}, "offset_seconds"),
    ],
)
def test_jsonl_bad_value(tmp_path: Path, record: dict, column: str) -> None:
    path = write(tmp_path, "bad.jsonl", json.dumps(record) + "\n")

    with pytest.raises(TraceError, match=f"line 1: invalid {column} "):
        load_trace(path)


def test_decreasing_offset(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", f"{HEADER}\n10,0,40,normal,false\n5,0,40,normal,false\n")

    with pytest.raises(TraceError, match="line 3: invalid offset_seconds '5'.*sort the rows"):
        load_trace(path)


def test_equal_offsets_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", f"{HEADER}\n5,0,40,normal,false\n5,1,40,normal,false\n")

    assert [row.thermal_state for row in load_trace(path)] == [ThermalState.NOMINAL, ThermalState.FAIR]


def test_csv_unknown_column(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "offset_seconds,temperature\n0,55\n")

    with pytest.raises(TraceError, match=r"line 1: unknown column\(s\) 'temperature': valid columns are offset_seconds"):
        load_trace(path)


def test_jsonl_unknown_column(tmp_path: Path) -> None:
    path = write(tmp_path, "t.jsonl", '{"offset_seconds": 0}\n{"offset_seconds": 1, "temp": 5}\n')

    with pytest.raises(TraceError, match=r"line 2: unknown column\(s\) 'temp'"):
        load_trace(path)


def test_csv_missing_offset_column(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "thermal_state\n0\n")

    with pytest.raises(TraceError, match="line 1: missing required column offset_seconds"):
        load_trace(path)


def test_jsonl_missing_offset(tmp_path: Path) -> None:
    path = write(tmp_path, "t.jsonl", '{"offset_seconds": 0}\n{"thermal_state": 1}\n')

    with pytest.raises(TraceError, match="line 2: missing offset_seconds"):
        load_trace(path)


def test_csv_empty_offset(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "offset_seconds,thermal_state\n,1\n")

    with pytest.raises(TraceError, match="line 2: missing offset_seconds"):
        load_trace(path)


def test_csv_duplicate_column(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "offset_seconds,cpu_load,cpu_load\n0,1,2\n")

    with pytest.raises(TraceError, match="duplicate column"):
        load_trace(path)


@pytest.mark.parametrize("row", ["0,1,40,normal,false,extra", "0,1"])
def test_csv_wrong_value_count(tmp_path: Path, row: str) -> None:
    path = write(tmp_path, "t.csv", f"{HEADER}\n{row}\n")

    with pytest.raises(TraceError, match="line 2: row has a different number of values"):
        load_trace(path)


@pytest.mark.parametrize(("name", "text"), [("t.csv", ""), ("t.csv", HEADER + "\n"), ("t.jsonl", ""), ("t.jsonl", "\n\n")])
def test_empty_trace(tmp_path: Path, name: str, text: str) -> None:
    path = write(tmp_path, name, text)

    with pytest.raises(TraceError, match="trace has no rows"):
        load_trace(path)


def test_truncated_json_line(tmp_path: Path) -> None:
    path = write(tmp_path, "t.jsonl", '{"offset_seconds": 0}\n{"offset_seconds": 30, "thermal_st\n')

    with pytest.raises(TraceError, match="line 2: invalid JSON .*one complete JSON object"):
        load_trace(path)


def test_json_line_not_object(tmp_path: Path) -> None:
    path = write(tmp_path, "t.jsonl", "[0, 1]\n")

    with pytest.raises(TraceError, match="line 1: expected a JSON object, got list"):
        load_trace(path)


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = write(tmp_path, "t.txt", "offset_seconds\n0\n")

    with pytest.raises(TraceError, match=r"unsupported trace file .*t\.txt"):
        load_trace(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot read trace .*absent.csv"):
        load_trace(tmp_path / "absent.csv")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"offset_seconds,host\n0,\xff\xfe\n")

    with pytest.raises(TraceError, match="not UTF-8"):
        load_trace(path)


def test_demo_trace_hot_spell() -> None:
    rows = load_trace(DEMO)
    states = [row.thermal_state for row in rows]

    assert states[0] == ThermalState.NOMINAL
    assert states[-1] == ThermalState.NOMINAL
    assert states.index(ThermalState.FAIR) < states.index(ThermalState.SERIOUS) < states.index(ThermalState.CRITICAL)
    assert 120 <= rows[-1].offset_seconds <= 600


# -- real-time playback ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("elapsed", "row"),
    [(0, 0), (29.9, 0), (30, 1), (59, 1), (95, 3), (180, 6), (10_000, 6), (-50, 0)],
)
def test_real_time_row(elapsed: float, row: int) -> None:
    clock = FakeClock(1_000_000 + elapsed)
    monitor = ReplayMonitor(SHORT_CSV, started_at=1_000_000, clock=clock)

    reading = monitor.read()

    assert reading.raw["row"] == row
    assert reading.thermal_state == load_trace(SHORT_CSV)[row].thermal_state


def test_real_time_monitors_agree() -> None:
    clock = FakeClock(1_000_065)
    first = ReplayMonitor(SHORT_CSV, started_at=1_000_000, clock=clock)
    second = ReplayMonitor(SHORT_JSONL, started_at=1_000_000, clock=clock)

    assert first.read().thermal_state == ThermalState.SERIOUS
    assert second.read().thermal_state == ThermalState.SERIOUS


def test_reading_fields_from_row() -> None:
    clock = FakeClock(1_700_000_095.5)
    reading = ReplayMonitor(SHORT_CSV, started_at=1_700_000_000, clock=clock).read()

    assert reading.taken_at == datetime.fromtimestamp(1_700_000_095.5, timezone.utc)
    assert reading.thermal_state == ThermalState.CRITICAL
    assert reading.memory_pressure == MemoryPressure.CRITICAL
    assert reading.memory_used_percent == 90.5
    assert reading.low_power_mode is True
    assert reading.sources["thermal_state"] == f"{SHORT_CSV}:5"
    assert reading.raw["elapsed_seconds"] == 95.5


def test_unknown_row_reading() -> None:
    reading = ReplayMonitor(SHORT_CSV, started_at=0, clock=FakeClock(125)).read()

    assert reading.thermal_state is None
    assert reading.thermal_reason == UNKNOWN_IN_TRACE
    assert reading.memory_used_percent is None
    assert "thermal_state" not in reading.sources


def test_host_precedence() -> None:
    from_row = ReplayMonitor(SHORT_CSV, started_at=0, host="given", clock=FakeClock(0)).read()
    from_argument = ReplayMonitor(SHORT_CSV, started_at=0, host="given", clock=FakeClock(200)).read()
    from_machine = ReplayMonitor(SHORT_CSV, started_at=0, clock=FakeClock(200)).read()

    assert from_row.host == "mac-studio"
    assert from_argument.host == "given"
    assert from_machine.host == socket.gethostname()


def test_invalid_started_at() -> None:
    with pytest.raises(ValueError, match="invalid started_at"):
        ReplayMonitor(SHORT_CSV, started_at=float("nan"))


def test_real_time_cannot_step() -> None:
    monitor = ReplayMonitor(SHORT_CSV, started_at=0)

    with pytest.raises(RuntimeError, match="started_at=None"):
        monitor.step()


def test_bad_trace_fails_at_construction(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "offset_seconds\nsoon\n")

    with pytest.raises(TraceError, match="line 2"):
        ReplayMonitor(path)


# -- stepped playback ------------------------------------------------------------------------


@pytest.fixture
def stepped_trace(tmp_path: Path) -> Path:
    path = tmp_path / "trace.csv"
    path.write_text(SHORT_CSV.read_text())
    return path


def test_cursor_defaults_to_zero(stepped_trace: Path) -> None:
    monitor = ReplayMonitor(stepped_trace)

    assert monitor.cursor == 0
    assert monitor.read().thermal_state == ThermalState.NOMINAL
    assert not Path(f"{stepped_trace}.cursor").exists()


def test_step_moves_cursor(stepped_trace: Path) -> None:
    monitor = ReplayMonitor(stepped_trace)

    assert monitor.step() == 1
    assert monitor.step(2) == 3
    assert monitor.cursor == 3
    assert monitor.read().thermal_state == ThermalState.CRITICAL
    assert Path(f"{stepped_trace}.cursor").read_text() == "3\n"


def test_step_stops_at_ends(stepped_trace: Path) -> None:
    monitor = ReplayMonitor(stepped_trace)

    assert monitor.step(100) == 6
    assert monitor.read().raw["row"] == 6
    assert monitor.step(-100) == 0


def test_seek(stepped_trace: Path) -> None:
    monitor = ReplayMonitor(stepped_trace)

    monitor.seek(2)

    assert monitor.read().thermal_state == ThermalState.SERIOUS


@pytest.mark.parametrize("index", [-1, 7, 1.5, True])
def test_seek_out_of_range(stepped_trace: Path, index: object) -> None:
    with pytest.raises(ValueError, match="has 7 rows, use 0-6"):
        ReplayMonitor(stepped_trace).seek(index)


def test_cursor_shared_between_monitors(stepped_trace: Path) -> None:
    writer = ReplayMonitor(stepped_trace)
    reader = ReplayMonitor(stepped_trace)

    writer.seek(3)

    assert reader.read().thermal_state == ThermalState.CRITICAL


def test_cursor_seen_by_other_process(stepped_trace: Path) -> None:
    ReplayMonitor(stepped_trace).seek(2)
    script = (
        "import sys; from thermal_pools.monitor import ReplayMonitor; "
        "print(int(ReplayMonitor(sys.argv[1]).read().thermal_state))"
    )

    result = subprocess.run(
        [sys.executable, "-c", script, str(stepped_trace)],
        cwd=REPOSITORY,
        env={"PYTHONPATH": str(REPOSITORY), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )

    assert result.stdout.strip() == str(int(ThermalState.SERIOUS))


def test_cursor_write_leaves_no_temp_files(stepped_trace: Path) -> None:
    monitor = ReplayMonitor(stepped_trace)

    monitor.step()
    monitor.step()

    assert sorted(path.name for path in stepped_trace.parent.iterdir()) == ["trace.csv", "trace.csv.cursor"]


def test_cursor_clamped_to_trace(stepped_trace: Path) -> None:
    Path(f"{stepped_trace}.cursor").write_text("99\n")

    assert ReplayMonitor(stepped_trace).cursor == 6


def test_cursor_file_malformed(stepped_trace: Path) -> None:
    Path(f"{stepped_trace}.cursor").write_text("three\n")

    with pytest.raises(TraceError, match="invalid replay cursor 'three'.*delete the file"):
        ReplayMonitor(stepped_trace).read()


# -- create_monitor --------------------------------------------------------------------------


def test_create_monitor_replay_stepped(stepped_trace: Path) -> None:
    config = ThermalSchedulingConfig(monitor="replay", replay_trace=str(stepped_trace))

    monitor = create_monitor(config)

    assert isinstance(monitor, GuardedMonitor)
    assert isinstance(monitor.inner, ReplayMonitor)
    assert monitor.inner.started_at is None


def test_create_monitor_replay_real_time(stepped_trace: Path) -> None:
    config = ThermalSchedulingConfig(monitor="replay", replay_trace=str(stepped_trace), replay_started_at=1_700_000_000)

    monitor = create_monitor(config)

    assert monitor.inner.started_at == 1_700_000_000
    assert monitor.read().thermal_state == ThermalState.NOMINAL
