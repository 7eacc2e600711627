"""A non-editable install (a wheel) carries the sweep files, its version and its dependencies."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import harness
from harness.engine.spec import resolve_sweep_path, shipped_sweeps_dir

REPO = Path(__file__).resolve().parent.parent


def test_the_checkout_finds_shipped_sweeps_from_any_directory(in_tmp):
    assert shipped_sweeps_dir().samefile(REPO / "sweeps")
    assert resolve_sweep_path("demo").samefile(REPO / "sweeps" / "demo.yaml")


@pytest.mark.slow
def test_wheel_ships_sweeps_and_runs_demo_train_from_a_target_install(tmp_path):
    src = tmp_path / "src"  # a copy: the build leaves build/ and *.egg-info beside its sources
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("harness", "tasks", "sweeps"):
        shutil.copytree(REPO / name, src / name, symlinks=True, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist")], check=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("*.whl"))
    assert wheel.name == f"vit_geometry_harness-{harness.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = z.read(f"vit_geometry_harness-{harness.__version__}.dist-info/METADATA")
    shipped = {f"harness/sweeps/{p.name}" for p in (REPO / "sweeps").glob("*.yaml")}
    assert shipped and shipped <= names
    assert b"Requires-Dist: scipy" in metadata
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp_path / "site"), str(wheel)],
                   check=True, timeout=300)
    (tmp_path / "elsewhere").mkdir()
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-c", "import harness, sys; print(harness.__file__); "
         "from harness.cli import main; sys.exit(main(['run', 'demo_train', '--dry-run']))"],
        cwd=tmp_path / "elsewhere", env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(str(tmp_path / "site" / "harness"))
    assert "train: 4 units, 0 done, 4 to run" in lines
    assert not (tmp_path / "elsewhere" / "results").exists()
