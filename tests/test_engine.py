"""The executors end to end: local vs Ray, resume, failures (faults: tests/test_faults.py)."""

from __future__ import annotations

import pandas as pd
from conftest import comparable, tiny_eval_doc, write_sweep

import harness
from harness import cli
from harness.engine.executor import RunConfig, run_units
from harness.engine.spec import validate


def test_local_evaluate_sweep_gives_real_metrics(tmp_path):
    units = validate(tiny_eval_doc("ev")).units()
    summary = run_units(units, str(tmp_path), RunConfig(kind="local", device="cpu"))
    assert (summary.done, summary.failed) == (4, 0)
    df = harness.load(str(tmp_path), task="evaluate", quantity="metrics")
    assert len(df) == 4 and set(df["model"]) == {"resnet18", "vit_ti"}
    assert (df["n_samples"] == 96).all()
    # fresh models on 10 balanced classes: NLL near ln(10), accuracy near chance
    assert df["nll"].between(1.5, 4.0).all() and df["acc"].between(0.0, 0.5).all()
    assert df["ece"].between(0.0, 1.0).all()


def test_ray_with_two_workers_gives_the_same_rows_as_local(tmp_path, ray_session):
    units = validate(tiny_eval_doc("ev")).units()
    local = run_units(units, str(tmp_path / "local"), RunConfig(kind="local", device="cpu"))
    remote = run_units(units, str(tmp_path / "ray"), RunConfig(kind="ray", workers=2))
    assert (local.done, remote.done, remote.failed) == (4, 4, 0)
    a = comparable(harness.load(str(tmp_path / "local"), task="evaluate", quantity="metrics"))
    b = comparable(harness.load(str(tmp_path / "ray"), task="evaluate", quantity="metrics"))
    metrics = ["acc", "nll", "ece"]
    pd.testing.assert_frame_equal(a.drop(columns=metrics), b.drop(columns=metrics))
    pd.testing.assert_frame_equal(a[metrics], b[metrics], rtol=1e-6, atol=1e-7)
    ray_df = harness.load(str(tmp_path / "ray"), task="evaluate")
    assert ray_df["node_id"].str.len().gt(20).all()  # a real Ray node id, not "local"


def test_second_run_of_a_finished_sweep_runs_nothing(in_tmp, capsys):
    path = write_sweep(in_tmp / "s.yaml", {"name": "again",
                                           "tasks": {"noop": {"index": [0, 1, 2]}}})
    assert cli.main(["run", str(path), "--executor", "local"]) == 0
    first = capsys.readouterr().err
    assert "0 done, 3 to run" in first and "3 done, 0 failed" in first
    mtimes = {p: p.stat().st_mtime_ns for p in (in_tmp / "results/again/noop").iterdir()}
    assert cli.main(["run", str(path), "--executor", "local"]) == 0
    second = capsys.readouterr().err
    assert "3 done, 0 to run" in second and "nothing to run" in second
    assert mtimes == {p: p.stat().st_mtime_ns for p in (in_tmp / "results/again/noop").iterdir()}


def test_failing_unit_lands_in_failures_and_the_rest_completes(in_tmp, capsys):
    doc = {"name": "f", "tasks": {"noop": {"index": [0, 1, 2], "fail": [False, True]}}}
    path = write_sweep(in_tmp / "f.yaml", doc)
    assert cli.main(["run", str(path), "--executor", "local"]) == 1
    err = capsys.readouterr().err
    assert "3 done, 3 failed" in err and "asked to fail" in err
    done = harness.load("results", task="noop", sweep="f")
    assert sorted(done["index"]) == [0, 1, 2] and not done["fail"].any()
    failures = harness.load("results", task="_failures", sweep="f")
    assert len(failures) == 3 and set(failures["failed_task"]) == {"noop"}
    assert failures["traceback"].str.contains("RuntimeError: noop unit . asked to fail").all()
    assert failures["error_type"].eq("RuntimeError").all()
    # status counts them; a re-run retries only the failed units
    assert cli.main(["status", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split() == ["noop", "6", "3", "3", "0"]
    assert cli.main(["run", str(path), "--executor", "local"]) == 1
    assert "3 done, 3 to run" in capsys.readouterr().err


def test_failure_is_cleared_when_the_unit_later_succeeds(tmp_path):
    ok = validate({"name": "c", "tasks": {"noop": {"index": 0}}}).units()[0]
    from harness.engine.runner import UnitRunner
    from harness.engine.units import WorkUnit

    runner = UnitRunner(str(tmp_path))
    bad = WorkUnit("c", "noop", {**ok.params, "fail": True}, unit_id=ok.unit_id)
    assert not runner.run(bad).ok
    assert len(harness.load(str(tmp_path), task="_failures")) == 1
    assert runner.run(ok).ok
    assert harness.load(str(tmp_path), task="_failures").empty


def test_worker_cache_builds_each_model_once(tmp_path, monkeypatch):
    from tasks import _workload as workload

    calls = []
    real = workload.build_model
    monkeypatch.setattr(workload, "build_model",
                        lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    doc = tiny_eval_doc("cache", seeds=[0], split=["train", "test"], max_samples=[32, 64])
    summary = run_units(validate(doc).units(), str(tmp_path), RunConfig(kind="local", device="cpu"))
    assert summary.done == 8
    assert sorted(calls) == ["resnet18", "vit_ti"]


def test_embedded_ray_starts_whether_ray_or_harness_is_imported_first(tmp_path):
    """harness sets RAY_AUTH_MODE=token only when Ray is not imported yet: set later, the
    driver keeps its old mode while the GCS it spawns takes the new one and refuses it."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    for first, second in (("ray", "harness"), ("harness", "ray")):
        code = (f"import {first}, {second}, os\n"
                "print('mode', os.environ.get('RAY_AUTH_MODE'))\n"
                "from harness.engine.executor import RunConfig\n"
                "from harness.engine.ray_pool import ensure_ray\n"
                "ensure_ray(RunConfig(kind='ray', workers=1))\n"
                "print('cpus', ray.cluster_resources()['CPU'])\n"
                "ray.shutdown()\n")
        proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        mode = "None" if first == "ray" else "token"
        assert proc.stdout.split()[:3] == ["mode", mode, "cpus"], proc.stdout
