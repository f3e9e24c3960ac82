"""The built wheel: layout, entry points, and an import in a fresh virtual environment."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UV = Path(sys.executable).with_name("uv")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([str(UV), "build", "--wheel", "--out-dir", str(out), str(ROOT)], check=True, capture_output=True)
    (built,) = out.glob("thermal_pools-*.whl")
    return built


def test_wheel_has_no_top_level_sensors(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert "thermal_pools" in top_level
    assert "sensors" not in top_level
    assert "thermal_pools/sensors/__init__.py" in names


def test_wheel_declares_entry_points(wheel):
    archive = zipfile.ZipFile(wheel)
    (entry_points,) = [name for name in archive.namelist() if name.endswith("entry_points.txt")]
    text = archive.read(entry_points).decode()
    assert "thermal-pools = thermal_pools.cli:main" in text
    assert "[airflow.plugins]" in text
    assert "[apache_airflow_provider]" in text


def test_wheel_installs_and_imports(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([str(UV), "venv", "--python", sys.executable, str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(UV), "pip", "install", "--python", str(python), "-c", str(ROOT / "constraints.txt"), str(wheel)],
        check=True,
        capture_output=True,
    )
    # Run outside the repository so the checkout's folders cannot satisfy the imports.
    probe = (
        "import thermal_pools, thermal_pools.sensors, importlib.util;"
        "print(thermal_pools.sensors.__file__);"
        "print(importlib.util.find_spec('sensors'))"
    )
    result = subprocess.run(
        [str(python), "-c", probe], cwd=tmp_path, check=True, capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "AIRFLOW_HOME": str(tmp_path / "home")},
    )
    location, sensors_spec = result.stdout.split()
    assert location.startswith(str(venv))
    assert sensors_spec == "None"
    status = subprocess.run(
        [str(venv / "bin" / "thermal-pools"), "status", "--json"], cwd=tmp_path, capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "AIRFLOW_HOME": str(tmp_path / "home")},
    )
    assert status.returncode == 0, status.stderr
    assert '"pools"' in status.stdout
