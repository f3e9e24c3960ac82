"""A complete local Airflow for demos and end-to-end tests, bound to 127.0.0.1.

:class:`LocalAirflow` prepares a fresh AIRFLOW_HOME and then starts the api-server, scheduler,
dag-processor and triggerer as child processes. The home gets a SQLite metadata database and
LocalExecutor. Its simple auth manager has an ``admin`` user, a ``thermal_pools`` service user
of role ``op`` and a read-only ``viewer`` user. The ``thermal_pools_api`` connection is set as an
environment variable. Every setting is passed as an environment variable (``AIRFLOW__*`` and
``AIRFLOW_CONN_*``), so nothing outside the home folder changes.

The api-server listens on 127.0.0.1 at a free port. The scheduler and triggerer start with
``--skip-serve-logs`` because Airflow's log server would listen on every interface. The
api-server reads task logs from the shared home folder instead.

Run ``python -m thermal_pools.local_airflow`` to start one in the foreground (Ctrl-C stops it).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DAGS_FOLDER = REPO_ROOT / "dags"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
# prctl(2) option that sets the signal a process gets when its parent dies (Linux only).
PR_SET_PDEATHSIG = 1
SERVICE_USER = "thermal_pools"
ADMIN_USER = "admin"
# A read-only user, so tests can show what a user without the op role gets.
VIEWER_USER = "viewer"


def _stop_with_parent() -> None:
    """Ask Linux to send SIGTERM to this child when its parent dies (runs in the child before exec).

    Components run in their own session so that Ctrl-C reaches only the parent, which then stops
    them in order. Without this, a parent killed outright (a test run cut short) would leave a
    whole Airflow running.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalAirflow:
    """Local Airflow 3 deployment in ``home``. Use it as a context manager or call start/stop."""

    def __init__(
        self,
        home: Path | str | None = None,
        *,
        dags_folder: Path | str = DAGS_FOLDER,
        port: int | None = None,
        thermal_settings: Mapping[str, str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        airflow_bin: str | None = None,
    ) -> None:
        self.home = Path(home or tempfile.mkdtemp(prefix="thermal-pools-airflow-")).resolve()
        self.dags_folder = Path(dags_folder).resolve()
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.thermal_settings = dict(thermal_settings or {})
        self.extra_env = dict(extra_env or {})
        self.airflow_bin = airflow_bin or str(Path(sys.executable).with_name("airflow"))
        self.processes: dict[str, subprocess.Popen] = {}
        self.passwords: dict[str, str] = {}

    # -- environment --------------------------------------------------------------------

    @property
    def log_folder(self) -> Path:
        return self.home / "component-logs"

    def _load_or_create_passwords(self) -> None:
        path = self.home / "passwords.json"
        if path.exists():
            self.passwords = json.loads(path.read_text())
        else:
            self.passwords = {
                ADMIN_USER: secrets.token_urlsafe(12),
                SERVICE_USER: secrets.token_urlsafe(18),
                VIEWER_USER: secrets.token_urlsafe(12),
            }
            path.write_text(json.dumps(self.passwords) + "\n")
            path.chmod(0o600)

    def env(self) -> dict[str, str]:
        """Return the environment for every Airflow process and CLI call of this deployment.

        Creates the JWT, API and Fernet keys in ``secrets.json`` on first use.
        """
        secrets_file = self.home / "secrets.json"
        if secrets_file.exists():
            keys = json.loads(secrets_file.read_text())
        else:
            keys = {"jwt": secrets.token_urlsafe(32), "api": secrets.token_urlsafe(32), "fernet": _fernet_key()}
            secrets_file.write_text(json.dumps(keys))
            secrets_file.chmod(0o600)
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_"))
        }
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "16",
                "AIRFLOW__CORE__FERNET_KEY": keys["fernet"],
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin,{SERVICE_USER}:op,{VIEWER_USER}:viewer",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                # SQLite's default 5 s lock wait was too short for four components writing at once
                # on a 2-core machine. A request that waits longer fails with "database is locked".
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}?timeout=30",
                "AIRFLOW__API__BASE_URL": self.base_url,
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__SECRET_KEY": keys["api"],
                "AIRFLOW__API__MAXIMUM_PAGE_LIMIT": "1000",
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt"],
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
                "AIRFLOW__THERMAL_POOLS__READINGS_URL": f"sqlite:///{self.home / 'thermal_pools_readings.db'}",
                "AIRFLOW_CONN_THERMAL_POOLS_API": json.dumps(
                    {
                        "conn_type": "http",
                        "host": "127.0.0.1",
                        "port": self.port,
                        "schema": "http",
                        "login": SERVICE_USER,
                        "password": self.passwords[SERVICE_USER],
                    }
                ),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update({f"AIRFLOW__THERMAL_POOLS__{name.upper()}": value for name, value in self.thermal_settings.items()})
        env.update(self.extra_env)
        return env

    def airflow(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        """Run an ``airflow`` CLI command against this deployment."""
        return subprocess.run(
            [self.airflow_bin, *args],
            env=self.env(),
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            stdin=subprocess.DEVNULL,
        )

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, *, wait_seconds: float = 240) -> LocalAirflow:
        """Migrate the database, start the four components and wait until they report healthy."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_folder.mkdir(exist_ok=True)
        self._load_or_create_passwords()

        log.info("migrating the metadata database in %s", self.home)
        self.airflow("db", "migrate")
        self._use_write_ahead_log()

        for name in COMPONENTS:
            self._spawn(name)
        self.wait_until_healthy(wait_seconds)
        return self

    def _use_write_ahead_log(self) -> None:
        """Switch the SQLite metadata database to WAL journaling (a setting stored in the file).

        In SQLite's default rollback-journal mode a reader blocks a writer's commit, and four
        components reading and writing at once on 2 cores then made API requests wait out the
        30 s lock timeout. With WAL, readers and the one writer no longer block each other.
        """
        import sqlite3

        with sqlite3.connect(self.home / "airflow.db") as database:
            mode = database.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        log.info("metadata database journal mode: %s", mode)

    def _command(self, name: str) -> list[str]:
        """Return the arguments of the ``airflow`` command that runs one component."""
        return {
            "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(self.port)],
            "scheduler": ["scheduler", "--skip-serve-logs"],
            "dag-processor": ["dag-processor"],
            "triggerer": ["triggerer", "--skip-serve-logs"],
        }[name]

    def _spawn(self, name: str) -> None:
        args = self._command(name)
        output = open(self.log_folder / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self.processes[name] = subprocess.Popen(
            [self.airflow_bin, *args],
            env=self.env(),
            cwd=self.home,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_stop_with_parent if sys.platform == "linux" else None,
        )
        log.info("started %s (pid %d), output in %s", name, self.processes[name].pid, output.name)

    def restart(self, name: str) -> None:
        """Stop and start one component, for fault tests."""
        self.stop_component(name)
        self._spawn(name)

    def stop_component(self, name: str, timeout: float = 30) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        for name in reversed(COMPONENTS):
            self.stop_component(name)

    def __enter__(self) -> LocalAirflow:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait_until_healthy(self, wait_seconds: float) -> None:
        """Wait until the API responds and the scheduler, dag-processor and triggerer report healthy."""
        deadline = time.monotonic() + wait_seconds
        last = "no response yet"
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(
                        f"Airflow {name} exited with code {process.returncode}; see {self.log_folder / (name + '.log')}"
                    )
            try:
                health = httpx.get(f"{self.base_url}/api/v2/monitor/health", timeout=5).json()
                states = {part: health.get(part, {}).get("status") for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")}
                if all(status == "healthy" for status in states.values()):
                    return
                last = str(states)
            except (httpx.HTTPError, ValueError) as error:
                last = f"{type(error).__name__}: {error}"
            time.sleep(1)
        raise TimeoutError(f"Airflow at {self.base_url} not healthy after {wait_seconds:.0f} s: {last}")

    # -- REST API -----------------------------------------------------------------------

    def token(self, user: str = ADMIN_USER) -> str:
        response = httpx.post(
            f"{self.base_url}/auth/token", json={"username": user, "password": self.passwords[user]}, timeout=30
        )
        response.raise_for_status()
        return response.json()["access_token"]

    def api(self, user: str = ADMIN_USER) -> httpx.Client:
        """Open an HTTP client for the REST API, logged in as ``user``."""
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.token(user)}"}, timeout=30
        )

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m thermal_pools.local_airflow",
        description="Start a local Airflow on 127.0.0.1 with the thermal pool maintenance DAG.",
    )
    parser.add_argument("--home", type=Path, help="AIRFLOW_HOME to use (default: a new temporary folder)")
    parser.add_argument("--port", type=int, help="api-server port on 127.0.0.1 (default: a free port)")
    parser.add_argument("--replay", type=Path, help="play back this trace file instead of reading the host")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    offsets: list[float] = []
    if args.replay:
        trace = args.replay.resolve()
        if not trace.is_file():
            parser.error(f"trace file {str(trace)!r} not found: pass the path of a .csv or .jsonl trace")
        from thermal_pools.monitor import ReplayMonitor, TraceError, load_trace

        try:
            offsets = [row.offset_seconds for row in load_trace(trace)]
        except TraceError as error:
            parser.error(str(error))

    # LocalExecutor starts one worker process per parallelism slot (about 140 MB each), so the
    # demo keeps 8 rather than the 16 its tests use.
    airflow = LocalAirflow(args.home, port=args.port, extra_env={"AIRFLOW__CORE__PARALLELISM": "8"})
    if offsets:
        # Stepped replay of a copy in the Airflow home, with the cursor file beside it. This
        # process moves the cursor in real time once Airflow is up, so the trace starts when the
        # first maintenance run can see it, not during start-up.
        copy = airflow.home / "replay" / trace.name
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(trace, copy)
        airflow.thermal_settings = {"monitor": "replay", "replay_trace": str(copy), "replay_started_at": "0"}
        replay = ReplayMonitor(copy)
        replay.seek(0)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        airflow.start()
        if offsets:
            # The stabilization window (300 s by default) delays the return to full size.
            source = (
                f"trace {args.replay}: {offsets[-1] / 60:.1f} min of readings, pools back to full size "
                "about one stabilization window later"
            )
        else:
            source = "this host"
        print(
            f"\nAirflow is up at {airflow.base_url}  (home {airflow.home})\n"
            f"  log in as {ADMIN_USER} / {airflow.passwords[ADMIN_USER]}\n"
            f"  pools dashboard: {airflow.base_url}/pools\n"
            f"  thermal page: {airflow.base_url}/plugin/thermal\n"
            f"  source: {source}\n"
            "Press Ctrl-C to stop.\n",
            flush=True,
        )
        replay_started = time.monotonic()
        cursor = 0
        while not stopping:
            for name, process in airflow.processes.items():
                if process.poll() is not None:
                    print(f"Airflow {name} exited with code {process.returncode}; stopping.", file=sys.stderr)
                    stopping = True
            elapsed = time.monotonic() - replay_started
            due = max((index for index, offset in enumerate(offsets) if offset <= elapsed), default=0)
            if offsets and due != cursor:
                cursor = due
                replay.seek(cursor)
            time.sleep(1)
    finally:
        print("stopping Airflow ...", flush=True)
        airflow.stop()
        print("Airflow stopped.", flush=True)
    return 0

if __name__ == "__main__":
    sys.exit(main())
