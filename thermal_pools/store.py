"""The readings table: every maintenance step's reading, observation and pool plan.

The table lives in its own database, reached through SQLAlchemy (default: a SQLite file in
AIRFLOW_HOME), never in Airflow's metadata database, because task code may not touch that one.
It serves three readers: the maintenance step itself (last good value, stabilization window),
the clearance trigger (latest reading of a remote host) and the Thermal page (history).

Times are stored as UTC epoch seconds (``REAL``) so that ordering and range queries behave the
same on every database. Every read returns a bounded number of rows and uses the
``(host, taken_at)`` index.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from thermal_pools.reading import Reading, ThermalState

log = logging.getLogger(__name__)

metadata = sa.MetaData()

readings_table = sa.Table(
    "thermal_readings",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("host", sa.String(255), nullable=False),
    # UTC epoch seconds of the reading.
    sa.Column("taken_at", sa.Float, nullable=False),
    # What the sensor reported (NULL when unknown) and why it was unknown.
    sa.Column("thermal_state", sa.Integer, nullable=True),
    sa.Column("thermal_reason", sa.String(500), nullable=False, default=""),
    # The state acted on after the unknown-state rules, and the state the pools were planned for
    # after the stabilization window.
    sa.Column("observed_state", sa.Integer, nullable=False),
    sa.Column("planned_state", sa.Integer, nullable=False),
    sa.Column("basis", sa.String(500), nullable=False),
    sa.Column("throttle", sa.Float, nullable=False),
    sa.Column("health_score", sa.Float, nullable=True),
    sa.Column("memory_used_percent", sa.Float, nullable=True),
    sa.Column("memory_available_gib", sa.Float, nullable=True),
    sa.Column("memory_pressure", sa.Integer, nullable=True),
    sa.Column("cpu_load", sa.Float, nullable=True),
    sa.Column("low_power_mode", sa.Boolean, nullable=True),
    sa.Column("on_battery", sa.Boolean, nullable=True),
    # Full reading (sources and raw values included) and the pool plan, as JSON text.
    sa.Column("reading_json", sa.Text, nullable=False),
    sa.Column("plan_json", sa.Text, nullable=False),
    # "pending" until applied, then "applied", "unchanged", "superseded" or "failed: <cause>".
    sa.Column("outcome", sa.String(1000), nullable=False, default="pending"),
    sa.Index("ix_thermal_readings_host_taken_at", "host", "taken_at"),
)

# Maximum number of rows any history query returns, whatever window is requested.
MAX_HISTORY_ROWS = 5000


def _epoch(moment: datetime) -> float:
    return moment.astimezone(timezone.utc).timestamp()


def _datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


@dataclass(frozen=True)
class RecordedStep:
    """One row of the readings table, as the UI and the trigger use it."""

    id: int
    host: str
    taken_at: datetime
    thermal_state: int | None
    observed_state: int
    planned_state: int
    basis: str
    throttle: float
    health_score: float | None
    pools: dict[str, int]
    outcome: str
    reading: Reading

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "taken_at": self.taken_at.isoformat(),
            "thermal_state": self.thermal_state,
            "observed_state": self.observed_state,
            "planned_state": self.planned_state,
            "basis": self.basis,
            "throttle": self.throttle,
            "health_score": self.health_score,
            "pools": self.pools,
            "outcome": self.outcome,
            "memory_used_percent": self.reading.memory_used_percent,
            "memory_available_gib": self.reading.memory_available_gib,
            "memory_pressure": None if self.reading.memory_pressure is None else self.reading.memory_pressure.label,
            "cpu_load": self.reading.cpu_load,
            "low_power_mode": self.reading.low_power_mode,
            "on_battery": self.reading.on_battery,
        }


class ReadingStore:
    """Read and write the readings table at a SQLAlchemy URL.

    The table is created on first use. SQLite files get a 30 s busy timeout so that two
    maintenance steps writing at once wait for each other instead of failing.
    """

    def __init__(self, url: str, *, engine: Engine | None = None) -> None:
        # ``url`` is for messages only when ``engine`` is given; it must not carry a password.
        self.url = url
        if engine is None:
            connect_args: dict[str, Any] = {}
            if url.startswith("sqlite"):
                connect_args["timeout"] = 30
            engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True)
        self.engine = engine
        self._ready = False

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        if not self._ready:
            metadata.create_all(self.engine, checkfirst=True)
            self._ready = True
        with self.engine.begin() as connection:
            yield connection

    # -- writes -------------------------------------------------------------------------

    def record(
        self,
        reading: Reading,
        *,
        observed_state: ThermalState,
        planned_state: ThermalState,
        basis: str,
        throttle: float,
        health_score: float | None,
        pools: dict[str, int],
        outcome: str = "pending",
    ) -> int:
        """Append one step and return its row id."""
        row = {
            "host": reading.host,
            "taken_at": _epoch(reading.taken_at),
            "thermal_state": None if reading.thermal_state is None else int(reading.thermal_state),
            "thermal_reason": reading.thermal_reason[:500],
            "observed_state": int(observed_state),
            "planned_state": int(planned_state),
            "basis": basis[:500],
            "throttle": throttle,
            "health_score": health_score,
            "memory_used_percent": reading.memory_used_percent,
            "memory_available_gib": reading.memory_available_gib,
            "memory_pressure": None if reading.memory_pressure is None else int(reading.memory_pressure),
            "cpu_load": reading.cpu_load,
            "low_power_mode": reading.low_power_mode,
            "on_battery": reading.on_battery,
            "reading_json": json.dumps(reading.to_dict(), default=str),
            "plan_json": json.dumps(pools),
            "outcome": outcome[:1000],
        }
        with self._begin() as connection:
            result = connection.execute(readings_table.insert().values(**row))
            return int(result.inserted_primary_key[0])

    def set_outcome(self, row_id: int, outcome: str) -> None:
        with self._begin() as connection:
            connection.execute(
                readings_table.update().where(readings_table.c.id == row_id).values(outcome=outcome[:1000])
            )

    def prune(self, retention_days: float, now: datetime) -> int:
        """Delete rows older than ``retention_days`` before ``now`` and return how many were deleted."""
        cutoff = _epoch(now - timedelta(days=retention_days))
        with self._begin() as connection:
            result = connection.execute(readings_table.delete().where(readings_table.c.taken_at < cutoff))
            return result.rowcount or 0

    # -- reads --------------------------------------------------------------------------

    def last_good(self, host: str, before: datetime) -> Reading | None:
        """Return the newest reading of ``host`` taken at or before ``before`` with a known thermal state."""
        query = (
            sa.select(readings_table.c.reading_json)
            .where(
                readings_table.c.host == host,
                readings_table.c.taken_at <= _epoch(before),
                readings_table.c.thermal_state.is_not(None),
            )
            .order_by(readings_table.c.taken_at.desc())
            .limit(1)
        )
        with self._begin() as connection:
            text = connection.execute(query).scalar()
        return None if text is None else Reading.from_dict(json.loads(text))

    def observed_states(self, host: str, since: datetime) -> list[tuple[datetime, ThermalState]]:
        """Return (time, observed state) of ``host``'s steps since ``since``, oldest first."""
        query = (
            sa.select(readings_table.c.taken_at, readings_table.c.observed_state)
            .where(readings_table.c.host == host, readings_table.c.taken_at >= _epoch(since))
            .order_by(readings_table.c.taken_at)
            .limit(MAX_HISTORY_ROWS)
        )
        with self._begin() as connection:
            rows = connection.execute(query).all()
        return [(_datetime(taken_at), ThermalState(state)) for taken_at, state in rows]

    def planned_since(self, host: str, planned_state: ThermalState, before: datetime) -> datetime | None:
        """Return when ``host``'s current unbroken run of steps planned for ``planned_state`` began.

        Only steps taken at or before ``before`` count. Returns None if the newest of them planned
        for a different state, or if there are none.
        """
        columns = (readings_table.c.taken_at, readings_table.c.planned_state)
        other = (
            sa.select(sa.func.max(readings_table.c.taken_at))
            .where(
                readings_table.c.host == host,
                readings_table.c.taken_at <= _epoch(before),
                readings_table.c.planned_state != int(planned_state),
            )
            .scalar_subquery()
        )
        query = (
            sa.select(*columns)
            .where(
                readings_table.c.host == host,
                readings_table.c.taken_at <= _epoch(before),
                readings_table.c.planned_state == int(planned_state),
                readings_table.c.taken_at > sa.func.coalesce(other, -1.0),
            )
            .order_by(readings_table.c.taken_at)
            .limit(1)
        )
        with self._begin() as connection:
            row = connection.execute(query).first()
        return None if row is None else _datetime(row.taken_at)

    def newer_than(self, host: str, taken_at: datetime) -> bool:
        """Return whether a step of ``host`` with a reading later than ``taken_at`` is recorded."""
        query = (
            sa.select(readings_table.c.id)
            .where(readings_table.c.host == host, readings_table.c.taken_at > _epoch(taken_at))
            .limit(1)
        )
        with self._begin() as connection:
            return connection.execute(query).first() is not None

    def latest(self, host: str) -> RecordedStep | None:
        """Return the newest recorded step of ``host``, or None if it has none."""
        steps = self.history(host, limit=1, newest_first=True)
        return steps[0] if steps else None

    def history(
        self,
        host: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = MAX_HISTORY_ROWS,
        newest_first: bool = False,
    ) -> list[RecordedStep]:
        """Return the recorded steps of ``host`` in a time window, at most ``limit`` (capped at MAX_HISTORY_ROWS)."""
        limit = max(0, min(limit, MAX_HISTORY_ROWS))
        query = sa.select(readings_table).where(readings_table.c.host == host)
        if since is not None:
            query = query.where(readings_table.c.taken_at >= _epoch(since))
        if until is not None:
            query = query.where(readings_table.c.taken_at <= _epoch(until))
        order = readings_table.c.taken_at.desc() if newest_first else readings_table.c.taken_at
        query = query.order_by(order).limit(limit)
        with self._begin() as connection:
            rows = connection.execute(query).all()
        return [_step_from_row(row) for row in rows]

    def hosts(self) -> list[str]:
        query = sa.select(readings_table.c.host).distinct().order_by(readings_table.c.host).limit(1000)
        with self._begin() as connection:
            return [row.host for row in connection.execute(query)]

    def count(self) -> int:
        with self._begin() as connection:
            return int(connection.execute(sa.select(sa.func.count()).select_from(readings_table)).scalar() or 0)


def _step_from_row(row: Any) -> RecordedStep:
    return RecordedStep(
        id=row.id,
        host=row.host,
        taken_at=_datetime(row.taken_at),
        thermal_state=row.thermal_state,
        observed_state=row.observed_state,
        planned_state=row.planned_state,
        basis=row.basis,
        throttle=row.throttle,
        health_score=row.health_score,
        pools=json.loads(row.plan_json),
        outcome=row.outcome,
        reading=Reading.from_dict(json.loads(row.reading_json)),
    )


def store_from_config(config: Any) -> ReadingStore:
    """Open the readings store named by the settings.

    ``readings_conn_id`` (an Airflow SQL connection, resolved through the common-sql provider's
    hook) takes precedence over ``readings_url``. Without either, the SQLite file in AIRFLOW_HOME
    is used.
    """
    if config.readings_conn_id:
        from airflow.providers.common.sql.hooks.sql import DbApiHook
        from airflow.sdk import BaseHook

        connection = BaseHook.get_connection(config.readings_conn_id)
        try:
            hook = connection.get_hook()
        except Exception:
            # Airflow raises its own exception type for a connection type with no hook installed.
            hook = None
        if not isinstance(hook, DbApiHook):
            raise ValueError(
                f"readings_conn_id {config.readings_conn_id!r} is a {connection.conn_type!r} connection, "
                "not a SQL database with an installed provider: point it at a SQL connection "
                "(for example sqlite or postgres) or set readings_url instead"
            )
        engine = hook.get_sqlalchemy_engine()
        return ReadingStore(engine.url.render_as_string(hide_password=True), engine=engine)
    return ReadingStore(config.readings_database_url())
