"""Inline SVG chart of one host's history: thermal state over tier bands, and pool slots.

The chart is drawn on the server as plain SVG, so the page loads nothing from another host and
needs no JavaScript. Two panels share the time axis (UTC):

- The upper panel has one coloured band per tier (nominal at the bottom, critical at the top), a
  step line of the state the pools acted on, and one point per reading. A reading whose sensor
  failed is drawn hollow, because its state came from the last good value or the safe state.
- The lower panel has one step line per tier pool with the planned slots, drawn from the widest
  (nominal) to the thinnest (critical) stroke, so lines at the same height stay visible as
  nested stripes.

A line breaks where two readings are further apart than ``gap_seconds``, so a stopped
maintenance DAG shows as a gap instead of a straight line that looks like real data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from html import escape

from thermal_pools.reading import ThermalState
from thermal_pools.store import RecordedStep

# Tier colours: a light fill for the bands and a strong tone for lines, points and badges.
BAND_COLOURS = {
    ThermalState.NOMINAL: "#e3f3e6",
    ThermalState.FAIR: "#fdf6d3",
    ThermalState.SERIOUS: "#fde6cc",
    ThermalState.CRITICAL: "#fadcdb",
}
LINE_COLOURS = {
    ThermalState.NOMINAL: "#2e7d32",
    ThermalState.FAIR: "#b08d00",
    ThermalState.SERIOUS: "#d96c00",
    ThermalState.CRITICAL: "#c62828",
}
# Pool line widths in px, widest first, so equal sizes show as nested stripes.
POOL_STROKE_WIDTHS = {
    ThermalState.NOMINAL: 8.0,
    ThermalState.FAIR: 5.5,
    ThermalState.SERIOUS: 3.0,
    ThermalState.CRITICAL: 1.25,
}

# Above this many readings only the step line is drawn, without points, to keep the page small.
# 1,000 readings render to about 300 kB of SVG (measured with 1,000 test steps).
MAX_POINTS = 1000

WIDTH = 960
LEFT = 78
RIGHT = 20
TOP = 14
STATE_HEIGHT = 160
GAP = 34
SLOTS_HEIGHT = 150
AXIS_HEIGHT = 26
PLOT_WIDTH = WIDTH - LEFT - RIGHT
SLOTS_TOP = TOP + STATE_HEIGHT + GAP
HEIGHT = SLOTS_TOP + SLOTS_HEIGHT + AXIS_HEIGHT

# Tick spacing for the time axis, chosen as the first that gives at most 8 ticks.
TICK_STEPS = [
    timedelta(minutes=5),
    timedelta(minutes=10),
    timedelta(minutes=15),
    timedelta(minutes=30),
    timedelta(hours=1),
    timedelta(hours=2),
    timedelta(hours=3),
    timedelta(hours=6),
    timedelta(hours=12),
    timedelta(days=1),
]


def _time_ticks(since: datetime, until: datetime) -> list[datetime]:
    span = until - since
    step = next((step for step in TICK_STEPS if span / step <= 8), TICK_STEPS[-1])
    seconds = step.total_seconds()
    first = datetime.fromtimestamp((since.timestamp() // seconds + 1) * seconds, tz=timezone.utc)
    ticks = []
    tick = first
    while tick < until:
        ticks.append(tick)
        tick += step
    return ticks


def _tick_label(tick: datetime, span: timedelta) -> str:
    if span > timedelta(days=1):
        return tick.strftime("%b %d %H:%M") if tick.hour or tick.minute else tick.strftime("%b %d")
    return tick.strftime("%H:%M")


def _slot_ceiling(steps: Sequence[RecordedStep]) -> int:
    """Return the top of the slots axis: the largest planned size, rounded up to an even number (at least 2)."""
    largest = max((slots for step in steps for slots in step.pools.values()), default=0)
    return max(2, largest + largest % 2)


def _step_paths(
    series: list[tuple[float, float]], x_of: Callable[[float], float], gap_seconds: float, until: float
) -> list[str]:
    """Return SVG path data of a step line through ``(epoch seconds, y)`` points, oldest first.

    Each value stays in force until the next reading. The line breaks where two readings are more
    than ``gap_seconds`` apart, and the last value of each piece extends for ``gap_seconds`` (the
    time after which a reading counts as stale) or until ``until``, whichever comes first.
    """
    paths = []
    start = 0
    for index in range(1, len(series) + 1):
        if index < len(series) and series[index][0] - series[index - 1][0] <= gap_seconds:
            continue
        piece = series[start:index]
        first_time, first_y = piece[0]
        parts = [f"M{x_of(first_time):.1f},{first_y:.1f}"]
        for time, y in piece[1:]:
            parts.append(f"H{x_of(time):.1f}V{y:.1f}")
        parts.append(f"H{x_of(min(piece[-1][0] + gap_seconds, until)):.1f}")
        paths.append("".join(parts))
        start = index
    return paths


def render_history_svg(
    steps: Sequence[RecordedStep],
    *,
    since: datetime,
    until: datetime,
    pool_names: dict[ThermalState, str],
    gap_seconds: float,
) -> str:
    """Return an ``<svg>`` element charting ``steps`` (oldest first) between ``since`` and ``until``.

    ``pool_names`` maps each tier to its pool name, the key of ``RecordedStep.pools``.
    """
    window = (until - since).total_seconds()
    if window <= 0:
        raise ValueError(f"invalid chart window {since.isoformat()} .. {until.isoformat()}: since must be before until")

    start = since.timestamp()
    end = until.timestamp()

    def x_of(epoch: float) -> float:
        return LEFT + PLOT_WIDTH * min(max((epoch - start) / window, 0.0), 1.0)

    def state_y(state: int) -> float:
        band = STATE_HEIGHT / 4
        return TOP + STATE_HEIGHT - band * (state + 0.5)

    ceiling = _slot_ceiling(steps)

    def slots_y(slots: float) -> float:
        return SLOTS_TOP + SLOTS_HEIGHT - SLOTS_HEIGHT * slots / ceiling

    parts = [
        f'<svg class="history-chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
        f'xmlns="http://www.w3.org/2000/svg" aria-label="Thermal state and tier pool slots from '
        f'{since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC">'
    ]

    # Upper panel: one band per tier, labelled on the left.
    band_height = STATE_HEIGHT / 4
    for state in ThermalState:
        top = TOP + STATE_HEIGHT - band_height * (state + 1)
        parts.append(
            f'<rect class="band band-{state.label}" x="{LEFT}" y="{top:.1f}" width="{PLOT_WIDTH}" '
            f'height="{band_height:.1f}" fill="{BAND_COLOURS[state]}"/>'
        )
        parts.append(
            f'<text x="{LEFT - 8}" y="{state_y(state) + 4:.1f}" text-anchor="end" class="axis-label" '
            f'fill="{LINE_COLOURS[state]}">{state.label}</text>'
        )

    # Lower panel: horizontal grid lines at 0, half and full scale.
    for slots in (0, ceiling // 2, ceiling):
        y = slots_y(slots)
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + PLOT_WIDTH}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end" class="axis-label">{slots}</text>')
    parts.append(
        f'<text x="{LEFT}" y="{SLOTS_TOP - 8}" class="panel-title">pool slots (planned)</text>'
    )

    # Time axis, shared by both panels.
    span = until - since
    for tick in _time_ticks(since, until):
        x = x_of(tick.timestamp())
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{SLOTS_TOP + SLOTS_HEIGHT}" class="tick"/>')
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="middle" class="axis-label">{_tick_label(tick, span)}</text>'
        )
    parts.append(f'<text x="{LEFT - 8}" y="{HEIGHT - 8}" text-anchor="end" class="axis-label">UTC</text>')

    times = [step.taken_at.timestamp() for step in steps]

    # Pool lines, widest first.
    for tier in ThermalState:
        name = pool_names[tier]
        series = [(time, slots_y(step.pools[name])) for time, step in zip(times, steps) if name in step.pools]
        for path in _step_paths(series, x_of, gap_seconds, end):
            parts.append(
                f'<path class="pool-line pool-{tier.label}" d="{path}" fill="none" '
                f'stroke="{LINE_COLOURS[tier]}" stroke-width="{POOL_STROKE_WIDTHS[tier]}" stroke-opacity="0.85"/>'
            )

    # State line and points.
    series = [(time, state_y(step.observed_state)) for time, step in zip(times, steps)]
    for path in _step_paths(series, x_of, gap_seconds, end):
        parts.append(f'<path class="state-line" d="{path}" fill="none" stroke="#1f2937" stroke-width="2"/>')
    if len(steps) <= MAX_POINTS:
        for step, (time, y) in zip(steps, series):
            x = x_of(time)
            state = ThermalState(step.observed_state)
            sensor = "sensor failed" if step.thermal_state is None else "sensor"
            title = (
                f"{step.taken_at:%Y-%m-%d %H:%M:%S} UTC: {state.label} ({step.basis}), "
                f"throttle {step.throttle:.2f}, pools planned for {ThermalState(step.planned_state).label}"
            )
            fill = "#ffffff" if step.thermal_state is None else LINE_COLOURS[state]
            parts.append(
                f'<circle class="point point-{state.label}" data-sensor="{sensor}" cx="{x:.1f}" cy="{y:.1f}" r="4" '
                f'fill="{fill}" stroke="{LINE_COLOURS[state]}" stroke-width="2"><title>{escape(title)}</title></circle>'
            )

    parts.append("</svg>")
    return "".join(parts)
