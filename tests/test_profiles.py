"""Task profiles, TaskConfig validation and the tier pool of a threshold."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from thermal_pools import config as config_module
from thermal_pools import profiles
from thermal_pools.config import ThermalSchedulingConfig
from thermal_pools.profiles import (
    PRIORITIES,
    TaskConfig,
    create_task_config,
    pool_for_threshold,
    register_profile,
)


@pytest.fixture
def isolated_profiles(monkeypatch):
    """Keep profiles registered by a test out of the module-wide registry."""
    monkeypatch.setattr(profiles, "PROFILES", {name: dict(values) for name, values in profiles.PROFILES.items()})


@pytest.mark.parametrize(
    ("profile", "threshold", "memory", "priority"),
    [
        ("training", 2, 16.0, "high"),
        ("inference", 1, 8.0, "normal"),
        ("preprocessing", 1, 4.0, "normal"),
        ("deployment", 3, 2.0, "critical"),
    ],
)
def test_builtin_profile_values(profile, threshold, memory, priority):
    task = create_task_config("task", profile=profile)
    assert task.thermal_threshold == threshold
    assert task.memory_required_gb == memory
    assert task.priority == priority


def test_profile_overrides_apply():
    task = create_task_config("custom_task", profile="training", thermal_threshold=1, memory_required_gb=32.0)
    assert task.thermal_threshold == 1
    assert task.memory_required_gb == 32.0
    assert task.priority == "high"


def test_no_profile_uses_defaults():
    task = create_task_config("plain")
    assert task == TaskConfig(task_id="plain")


def test_unknown_profile_lists_valid():
    with pytest.raises(ValueError, match="unknown profile 'trainig'") as error:
        create_task_config("task", profile="trainig")
    for name in ("training", "inference", "preprocessing", "deployment"):
        assert name in str(error.value)


def test_misspelled_override_lists_valid():
    with pytest.raises(ValueError, match="unknown TaskConfig setting") as error:
        create_task_config("task", profile="training", memory_required_gib=8.0)
    assert "memory_required_gib" in str(error.value)
    assert "memory_required_gb" in str(error.value)


def test_override_value_validated():
    with pytest.raises(ValueError, match="thermal_threshold 5"):
        create_task_config("task", profile="training", thermal_threshold=5)


def test_task_config_defaults():
    task = TaskConfig(task_id="t")
    assert task.thermal_threshold == 2
    assert task.memory_required_gb == 0.0
    assert task.priority == "normal"
    assert task.retry_on_thermal is True
    assert task.wait_for_clearance is True
    assert task.max_retries == 3
    assert task.retry_delay_seconds == 60
    assert task.clearance_timeout_seconds == 300


def test_task_config_frozen():
    task = TaskConfig(task_id="t")
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.priority = "high"


def test_task_config_to_dict():
    task = TaskConfig(task_id="t", memory_required_gb=4.0)
    data = task.to_dict()
    assert data["task_id"] == "t"
    assert data["memory_required_gb"] == 4.0
    assert set(data) == {f.name for f in dataclasses.fields(TaskConfig)}


@pytest.mark.parametrize(
    ("field_name", "value"),
    [
        ("task_id", ""),
        ("task_id", "   "),
        ("task_id", None),
        ("thermal_threshold", 4),
        ("thermal_threshold", -1),
        ("thermal_threshold", 2.0),
        ("thermal_threshold", True),
        ("thermal_threshold", "2"),
        ("memory_required_gb", -0.5),
        ("memory_required_gb", float("nan")),
        ("memory_required_gb", float("inf")),
        ("memory_required_gb", 4097.0),
        ("memory_required_gb", True),
        ("priority", "urgent"),
        ("priority", "HIGH"),
        ("priority", None),
        ("retry_on_thermal", "yes"),
        ("wait_for_clearance", 1),
        ("max_retries", -1),
        ("max_retries", 1.5),
        ("retry_delay_seconds", 0),
        ("retry_delay_seconds", float("inf")),
        ("clearance_timeout_seconds", -10),
        ("batch_size", 0),
        ("workers", 0),
        ("workers", 2.0),
    ],
)
def test_task_config_invalid(field_name, value):
    values = {"task_id": "t", field_name: value}
    with pytest.raises(ValueError, match=field_name):
        TaskConfig(**values)


def test_memory_limit_accepted():
    assert TaskConfig(task_id="t", memory_required_gb=4096).memory_required_gb == 4096


def test_register_profile_used(isolated_profiles):
    register_profile("embedding", thermal_threshold=1, memory_required_gb=6.0, batch_size=128)
    task = create_task_config("embed", profile="embedding")
    assert task.thermal_threshold == 1
    assert task.memory_required_gb == 6.0
    assert task.batch_size == 128
    assert task.priority == "normal"


def test_register_profile_replaces(isolated_profiles):
    register_profile("embedding", memory_required_gb=6.0)
    register_profile("embedding", memory_required_gb=10.0)
    assert create_task_config("embed", profile="embedding").memory_required_gb == 10.0


def test_register_profile_listed_in_errors(isolated_profiles):
    register_profile("embedding")
    with pytest.raises(ValueError, match="embedding"):
        create_task_config("task", profile="nope")


def test_register_builtin_rejected(isolated_profiles):
    with pytest.raises(ValueError, match="built in"):
        register_profile("training", memory_required_gb=1.0)


def test_register_misspelled_setting_rejected(isolated_profiles):
    with pytest.raises(ValueError, match="threshold") as error:
        register_profile("embedding", threshold=1)
    assert "thermal_threshold" in str(error.value)
    assert "embedding" not in profiles.PROFILES


def test_register_invalid_value_rejected(isolated_profiles):
    with pytest.raises(ValueError, match="priority"):
        register_profile("embedding", priority="asap")
    assert "embedding" not in profiles.PROFILES


@pytest.mark.parametrize("name", ["", "  ", None])
def test_register_invalid_name_rejected(isolated_profiles, name):
    with pytest.raises(ValueError, match="profile name"):
        register_profile(name)


def test_priorities_order():
    assert PRIORITIES == ("low", "normal", "high", "critical")


@pytest.mark.parametrize(
    ("threshold", "pool"),
    [(0, "thermal_nominal"), (1, "thermal_fair"), (2, "thermal_serious"), (3, "thermal_critical")],
)
def test_pool_for_threshold_default_prefix(threshold, pool):
    assert pool_for_threshold(threshold, ThermalSchedulingConfig()) == pool


def test_pool_for_threshold_custom_prefix():
    config = ThermalSchedulingConfig(pool_prefix="gpu_")
    assert pool_for_threshold(2, config) == "gpu_serious"


@pytest.mark.parametrize("threshold", [-1, 4, 2.0, True, "2", None])
def test_pool_for_threshold_invalid(threshold):
    with pytest.raises(ValueError, match="thermal_threshold"):
        pool_for_threshold(threshold, ThermalSchedulingConfig())


def test_config_reexported():
    assert profiles.ThermalSchedulingConfig is config_module.ThermalSchedulingConfig


DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def table_rows(docstring: str) -> list[str]:
    return [line for line in docstring.splitlines() if line.startswith("|")]


@pytest.mark.parametrize("module", [config_module, profiles], ids=["settings", "profiles"])
def test_doc_mirrors_table(module):
    doc_lines = DOC.read_text(encoding="utf-8").splitlines()
    rows = table_rows(module.__doc__)
    assert rows
    for row in rows:
        assert row in doc_lines, f"docs/configuration.md lacks the row {row!r} of {module.__name__}"


def test_doc_names_every_setting():
    text = DOC.read_text(encoding="utf-8")
    for name in config_module.setting_names():
        # Ranges such as "throttle_nominal .. throttle_critical" cover the tiers between.
        tier_range = name.rsplit("_", 1)[0] + "_nominal"
        assert name in text or tier_range in text, name
