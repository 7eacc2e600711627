"""benchmarks/gpu_check.sh: no GPU here, so CI checks its syntax, its sweep, and a CPU dry run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import harness_env

from harness.engine.registry import load_tasks
from harness.engine.spec import validate

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402


def test_script_parses_and_its_sweep_covers_every_task():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    doc = gpu_check.sweep_doc(dry=False)
    assert set(doc["tasks"]) == set(load_tasks())
    units = validate(doc).units()
    assert {u.task for u in units} == set(load_tasks())
    assert len(units) <= 20  # small: the whole check fits 8 minutes on one GPU
    assert any(u.task == "train" and u.params["amp"] for u in units)  # the bf16 path


@pytest.mark.slow
def test_dry_run_on_the_cpu_runs_every_step():
    env = {**harness_env(), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(["bash", str(SCRIPT), "--dry-run"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    out = run.stdout
    assert "sweep: 20/20 units of 10 tasks" in out
    for line in ("corruption fog", "hvp resnet18", "hvp vit_ti", "train resnet18 batch 8"):
        assert line in out
    assert out.strip().splitlines()[-1] == "gpu_check=ok device=cpu (dry run)"
