"""Parts of the Thermal page that need no Airflow: the chart, the window check and store errors."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from fastapi import HTTPException

from thermal_pools.reading import Reading, ThermalState
from thermal_pools.store import ReadingStore, RecordedStep
from thermal_pools.ui.app import (
    ReadingsUnavailable,
    format_age,
    format_window,
    parse_hours,
    query_store,
    safe_url,
)
from thermal_pools.ui.chart import MAX_POINTS, render_history_svg

POOL_NAMES = {tier: f"thermal_{tier.label}" for tier in ThermalState}
UNTIL = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
SINCE = UNTIL - timedelta(hours=1)


def step(minutes_ago: float, state: int | None, *, observed: int | None = None) -> RecordedStep:
    taken_at = UNTIL - timedelta(minutes=minutes_ago)
    reason = "" if state is not None else "sensor failed: test"
    reading = Reading(host="h", taken_at=taken_at, thermal_state=None if state is None else ThermalState(state),
                      thermal_reason=reason)
    acted = observed if observed is not None else state
    return RecordedStep(
        id=int(minutes_ago * 10), host="h", taken_at=taken_at, thermal_state=state, observed_state=acted,
        planned_state=acted, basis="sensor", throttle=1.0, health_score=90.0,
        pools={name: 10 - acted for name in POOL_NAMES.values()}, outcome="applied", reading=reading,
    )


def render(steps: list[RecordedStep], gap_seconds: float = 180) -> str:
    return render_history_svg(steps, since=SINCE, until=UNTIL, pool_names=POOL_NAMES, gap_seconds=gap_seconds)


def test_chart_point_per_reading():
    svg = render([step(30, 0), step(20, 2), step(10, 3)])
    assert svg.count('<circle class="point') == 3


def test_chart_colours_points_by_state():
    svg = render([step(30, 0), step(20, 2), step(10, 3)])
    assert 'class="point point-nominal"' in svg
    assert 'class="point point-serious"' in svg
    assert 'class="point point-critical"' in svg


def test_chart_has_four_bands():
    svg = render([step(5, 1)])
    assert len(re.findall(r'<rect class="band band-', svg)) == 4


def test_chart_hollow_point_for_failed_sensor():
    svg = render([step(10, None, observed=2)])
    assert 'data-sensor="sensor failed"' in svg
    assert 'fill="#ffffff"' in svg


def test_chart_breaks_line_at_gap():
    # Readings 1 min apart, then a 30 min hole, then two more.
    steps = [step(50, 0), step(49, 0), step(19, 1), step(18, 1)]
    svg = render(steps, gap_seconds=180)
    assert svg.count('class="state-line"') == 2


def test_chart_one_line_without_gap():
    svg = render([step(minutes, 0) for minutes in range(30, 0, -1)], gap_seconds=180)
    assert svg.count('class="state-line"') == 1


def test_chart_one_pool_line_per_tier():
    svg = render([step(10, 0), step(9, 1)])
    for tier in ThermalState:
        assert svg.count(f'pool-line pool-{tier.label}"') == 1


def test_chart_leaves_out_points_above_cap():
    steps = [step(60 - index * 60 / (MAX_POINTS + 1), 0) for index in range(MAX_POINTS + 1)]
    svg = render(steps)
    assert "<circle" not in svg
    assert 'class="state-line"' in svg


def test_chart_escapes_basis():
    bad = step(5, 1)
    bad = RecordedStep(**{**bad.__dict__, "basis": "<script>alert(1)</script>"})
    svg = render([bad])
    assert "<script>" not in svg


def test_chart_rejects_empty_window():
    with pytest.raises(ValueError, match="since must be before until"):
        render_history_svg([], since=UNTIL, until=UNTIL, pool_names=POOL_NAMES, gap_seconds=180)


@pytest.mark.parametrize("raw, expected", [(None, 6.0), ("", 6.0), ("1", 1.0), ("0.5", 0.5), ("168", 168.0)])
def test_parse_hours_valid(raw, expected):
    assert parse_hours(raw) == expected


@pytest.mark.parametrize("raw", ["0", "-3", "168.01", "x", "nan", "inf", "-inf"])
def test_parse_hours_invalid(raw):
    with pytest.raises(HTTPException) as caught:
        parse_hours(raw)
    assert caught.value.status_code == 400
    assert repr(raw) in caught.value.detail
    assert "0 < hours <= 168" in caught.value.detail


@pytest.mark.parametrize("seconds, text", [(5, "5 s"), (119, "119 s"), (600, "10 min"), (3600, "1 h"),
                                           (3900, "1 h 5 min"), (49 * 3600, "2 d 1 h"), (-3, "0 s")])
def test_format_age(seconds, text):
    assert format_age(seconds) == text


@pytest.mark.parametrize("hours, text", [(0.5, "30 min"), (1, "1 h"), (6, "6 h"), (24, "24 h"), (72, "3 d"), (168, "7 d")])
def test_format_window(hours, text):
    assert format_window(hours) == text


def test_query_store_reports_missing_database(tmp_path):
    store = ReadingStore(f"sqlite:///{tmp_path / 'missing-folder' / 'readings.db'}")
    with pytest.raises(ReadingsUnavailable) as caught:
        query_store(store, "list hosts", store.hosts)
    message = str(caught.value)
    assert "could not list hosts" in message
    assert "unable to open database file" in message
    assert "readings_url" in message


def test_safe_url_hides_password():
    assert "s3cret" not in safe_url("postgresql://reader:s3cret@127.0.0.1:5432/readings")
    assert "reader" in safe_url("postgresql://reader:s3cret@127.0.0.1:5432/readings")
