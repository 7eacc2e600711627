"""Tasks from another installed package (entry-point group `harness.tasks`), local and on Ray."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import harness
from harness.engine import registry

from conftest import harness_env, write_sweep

PLUGIN = '''
import os
import pyarrow as pa
from harness.engine.params import Param
from harness.engine.registry import Task, register_task

def run(unit, ctx):
    return [{"square": unit.params["x"] ** 2, "worker_pid": os.getpid()}]

register_task(Task(name="plugin_square", description="x squared, from a plugin",
                   params=(Param("x", int, 0, "the number"),),
                   output_schema=pa.schema([("square", pa.int64()), ("worker_pid", pa.int64())]),
                   run=run))
'''


def make_plugin(root: Path, broken: bool = False) -> Path:
    """A package `harness_square` with a dist-info declaring its entry point, as pip leaves it."""
    (root / "harness_square").mkdir(parents=True)
    (root / "harness_square" / "__init__.py").write_text(PLUGIN)
    info = root / "harness_square-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: harness-square\nVersion: 0.1\n")
    lines = ["[harness.tasks]", "square = harness_square"]
    if broken:
        lines.append("missing = harness_square_missing")
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def fresh_registry(monkeypatch):
    """Load tasks again (entry points included) and restore the registry afterwards."""
    monkeypatch.setattr(registry, "_TASKS", dict(registry._TASKS))
    monkeypatch.setattr(registry, "_loaded", False)
    yield
    sys.modules.pop("harness_square", None)


def test_entry_point_task_runs_locally_and_a_broken_one_is_skipped(in_tmp, monkeypatch,
                                                                   fresh_registry, caplog):
    monkeypatch.syspath_prepend(str(make_plugin(in_tmp / "site", broken=True)))
    tasks = registry.load_tasks()
    assert "plugin_square" in tasks and "evaluate" in tasks
    assert "task entry point missing = harness_square_missing" in caplog.text
    doc = {"name": "plug", "tasks": {"plugin_square": {"x": [2, 3]}}}
    assert harness.run(doc, results="res", kind="local").done == 2
    assert sorted(harness.load("res", task="plugin_square")["square"]) == [4, 9]


@pytest.mark.slow
def test_entry_point_task_runs_on_ray_workers(in_tmp):
    site = make_plugin(in_tmp / "site")
    path = write_sweep(in_tmp / "plug.yaml", {"name": "plug", "tasks": {"plugin_square": {
        "x": [2, 3, 4]}}})
    env = harness_env()
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(path), "--executor",
                           "ray", "--workers", "1", "--results", "res"], env=env, text=True,
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = harness.load("res", task="plugin_square")
    assert sorted(rows["square"]) == [4, 9, 16]
    assert not any(n.startswith("local:") for n in rows["node_id"])  # ran in a Ray actor
    assert len(rows["node_id"].iloc[0]) == 56  # a Ray node id
