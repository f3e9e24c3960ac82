"""The Thermal page in a real headless Chromium, logged in through the Airflow UI's login form.

Chromium is Debian's package (``scripts/bootstrap --browser`` installs it) and is driven over the
Chrome DevTools Protocol with the ``websockets`` package that Airflow already depends on. It only
ever opens pages of the local Airflow on 127.0.0.1. Screenshots land in the ``artifacts`` folder.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.airflow_helpers import pool_slots, run_once, task_states, wait_for
from thermal_pools.local_airflow import ADMIN_USER, LocalAirflow
from thermal_pools.monitor import ReplayMonitor
from thermal_pools.reading import Reading, ThermalState
from thermal_pools.store import ReadingStore

pytestmark = pytest.mark.airflow

DAG_ID = "thermal_pool_maintenance"
HOST = "replayed-host"
STALE_HOST = "stale-browser-host"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags that keep Chromium from contacting any host other than the local Airflow the tests open.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--metrics-recording-only",
    "--hide-scrollbars",
    "--window-size=1440,1100",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


class Browser:
    """One headless Chromium tab driven over the DevTools Protocol."""

    def __init__(self, profile: Path) -> None:
        self.process = subprocess.Popen(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        port_file = profile / "DevToolsActivePort"
        wait_for(port_file.exists, timeout=60, interval=0.2, what="Chromium to open its DevTools port")
        port = wait_for(lambda: port_file.read_text().split("\n")[0].strip(), timeout=10, interval=0.2, what="port")
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(target for target in targets if target["type"] == "page")
        self.connection = ExitStack()
        self.socket = self.connection.enter_context(
            connect(page["webSocketDebuggerUrl"], max_size=64 * 2**20, open_timeout=30)
        )
        self.ids = itertools.count(1)
        self.send("Page.enable")
        self.send("Runtime.enable")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and return its result, skipping the events that arrive meanwhile."""
        command_id = next(self.ids)
        self.socket.send(json.dumps({"id": command_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == command_id:
                if "error" in message:
                    raise RuntimeError(f"DevTools command {method} failed: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"script {expression!r} failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        wait_for(lambda: self.evaluate("document.readyState") == "complete", timeout=60, interval=0.3, what=f"{url} to load")

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.connection.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"chromium not found at {CHROMIUM}: run scripts/bootstrap --browser to install Debian's chromium")
    profile = Path(tempfile.mkdtemp(prefix="thermal-pools-chromium-"))
    browser = Browser(profile)
    try:
        yield browser
    finally:
        browser.close()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def recorded(airflow: LocalAirflow, airflow_trace: Path) -> None:
    """Record three readings (serious, critical, nominal) through real maintenance runs."""
    with airflow.api() as api:
        for index in (1, 2, 0):
            ReplayMonitor(airflow_trace).seek(index)
            run_id, state = run_once(airflow, api, DAG_ID)
            assert state == "success", task_states(api, DAG_ID, run_id)


def log_in(browser: Browser, airflow: LocalAirflow) -> None:
    """Fill in and submit the UI's login form, then wait for the UI's home page."""
    browser.open(f"{airflow.base_url}/auth/login")
    wait_for(
        lambda: browser.evaluate("!!document.querySelector('input[name=username]')"),
        timeout=60,
        interval=0.3,
        what="the login form",
    )
    # React tracks input values itself, so set them through the native setter and fire "input".
    fill = """
        (name, value) => {
            const input = document.querySelector(`input[name=${name}]`);
            const setter = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
            setter.call(input, value);
            input.dispatchEvent(new Event('input', {bubbles: true}));
        }
    """
    browser.evaluate(f"({fill})('username', {json.dumps(ADMIN_USER)})")
    browser.evaluate(f"({fill})('password', {json.dumps(airflow.passwords[ADMIN_USER])})")
    browser.evaluate("document.querySelector('button[type=submit]').click()")
    wait_for(
        lambda: "/auth/login" not in browser.evaluate("location.pathname"),
        timeout=60,
        interval=0.3,
        what="the login to leave the login page",
    )


@pytest.fixture(scope="module")
def logged_in(browser: Browser, airflow: LocalAirflow) -> Browser:
    log_in(browser, airflow)
    return browser


def record_old_reading(airflow: LocalAirflow, host: str, age: timedelta) -> None:
    """Record one nominal reading of ``host`` taken ``age`` ago, straight into the readings table."""
    reading = Reading(host=host, taken_at=datetime.now(timezone.utc) - age, thermal_state=ThermalState.NOMINAL)
    ReadingStore(airflow.env()["AIRFLOW__THERMAL_POOLS__READINGS_URL"]).record(
        reading,
        observed_state=ThermalState.NOMINAL,
        planned_state=ThermalState.NOMINAL,
        basis="sensor",
        throttle=1.0,
        health_score=100.0,
        pools={},
        outcome="applied",
    )


def frame_query(script: str) -> str:
    """A script run against the document of the UI's plugin frame."""
    return f"(() => {{ const doc = document.querySelector('iframe')?.contentDocument; return doc && ({script}); }})()"


def test_login_form_reaches_home(logged_in, airflow):
    assert logged_in.evaluate("location.origin") == airflow.base_url
    assert "/auth/login" not in logged_in.evaluate("location.pathname")


def test_nav_entry_opens_page_in_ui(logged_in, airflow, recorded, artifacts):
    logged_in.send("Emulation.setDeviceMetricsOverride", width=1440, height=1100, deviceScaleFactor=1, mobile=False)
    logged_in.open(f"{airflow.base_url}/")
    wait_for(
        lambda: logged_in.evaluate("[...document.querySelectorAll('a')].some(a => a.textContent.trim() === 'Thermal')"),
        timeout=60,
        interval=0.5,
        what="the Thermal nav entry",
    )
    logged_in.evaluate("[...document.querySelectorAll('a')].find(a => a.textContent.trim() === 'Thermal').click()")
    wait_for(
        lambda: logged_in.evaluate(frame_query("doc.querySelectorAll('tr[data-pool]').length === 4")),
        timeout=60,
        interval=0.5,
        what="the Thermal page to load in the UI's frame",
    )
    logged_in.screenshot(artifacts / "thermal-in-airflow-ui.png")

    # The UI appends the frame's own path to the address, so "/plugin/thermal" starts it.
    assert logged_in.evaluate("location.pathname").startswith("/plugin/thermal")
    assert logged_in.evaluate("new URL(document.querySelector('iframe').src).pathname") == "/thermal/"
    assert logged_in.evaluate(frame_query("doc.querySelector('h1').textContent")) == "Thermal"


def test_page_shows_host_pools_and_chart(logged_in, airflow, recorded, artifacts):
    logged_in.open(f"{airflow.base_url}/thermal/?host={HOST}&hours=1")
    height = logged_in.evaluate("document.documentElement.scrollHeight")
    logged_in.send("Emulation.setDeviceMetricsOverride", width=1440, height=height, deviceScaleFactor=1, mobile=False)
    logged_in.screenshot(artifacts / "thermal-page.png")
    with airflow.api() as api:
        slots = pool_slots(api)
        history = api.get("/thermal/api/history", params={"host": HOST, "hours": 1}).json()

    card_state = logged_in.evaluate(f"document.querySelector('.host-card[data-host={json.dumps(HOST)}]').dataset.state")
    page_slots = logged_in.evaluate(
        "Object.fromEntries([...document.querySelectorAll('tr[data-pool]')]"
        ".map(row => [row.dataset.pool, Number(row.querySelector('.slots').textContent)]))"
    )
    points = logged_in.evaluate("document.querySelectorAll('svg.history-chart circle.point').length")
    bands = logged_in.evaluate("document.querySelectorAll('svg.history-chart rect.band').length")
    pool_lines = logged_in.evaluate("document.querySelectorAll('svg.history-chart path.pool-line').length")

    assert card_state in {state.label for state in ThermalState}
    assert page_slots == slots
    # Scheduled runs may record a reading between the page and the API call.
    assert points in (history["count"], history["count"] - 1)
    assert points >= 3
    assert bands == 4
    assert pool_lines >= 4


def test_page_marks_stale_host(logged_in, airflow, recorded):
    record_old_reading(airflow, STALE_HOST, timedelta(hours=2))
    logged_in.open(f"{airflow.base_url}/thermal/?host={STALE_HOST}&hours=1")
    card = f"document.querySelector('.host-card[data-host={json.dumps(STALE_HOST)}]')"

    assert logged_in.evaluate(f"{card}.classList.contains('stale')") is True
    assert logged_in.evaluate(f"{card}.dataset.state") == "unknown"
    assert "stale" in logged_in.evaluate(f"{card}.querySelector('.card-head').textContent")


def test_page_explains_empty_history(logged_in, airflow, recorded):
    record_old_reading(airflow, STALE_HOST, timedelta(hours=2))
    logged_in.open(f"{airflow.base_url}/thermal/?host={STALE_HOST}&hours=1")
    text = logged_in.evaluate("document.querySelector('#no-history')?.textContent ?? ''")

    assert "Unpause the thermal_pool_maintenance DAG" in " ".join(text.split())
    assert logged_in.evaluate("document.querySelector('svg.history-chart')") is None
