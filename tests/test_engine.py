"""The executors end to end: local vs Ray, resume, failures, a killed worker, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

import harness
from harness import cli
from harness.executor import RunConfig, run_units
from harness.spec import validate

from conftest import comparable, harness_env, tiny_eval_doc, write_sweep


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
    from harness.runner import UnitRunner
    from harness.units import WorkUnit

    runner = UnitRunner(str(tmp_path))
    bad = WorkUnit("c", "noop", {**ok.params, "fail": True}, unit_id=ok.unit_id)
    assert not runner.run(bad).ok
    assert len(harness.load(str(tmp_path), task="_failures")) == 1
    assert runner.run(ok).ok
    assert harness.load(str(tmp_path), task="_failures").empty


def test_worker_cache_builds_each_model_once(tmp_path, monkeypatch):
    import harness.workload as workload

    calls = []
    real = workload.build_model
    monkeypatch.setattr(workload, "build_model",
                        lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    doc = tiny_eval_doc("cache", seeds=[0], split=["train", "test"], max_samples=[32, 64])
    summary = run_units(validate(doc).units(), str(tmp_path), RunConfig(kind="local", device="cpu"))
    assert summary.done == 8
    assert sorted(calls) == ["resnet18", "vit_ti"]


def _wait_for_files(directory: Path, count: int, timeout: float = 120.0) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = list(directory.glob("*.parquet")) if directory.exists() else []
        if len(files) >= count:
            return files
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} result files in {directory} after {timeout}s")


def test_sigkilled_worker_units_rerun_exactly_once(tmp_path, ray_session):
    doc = {"name": "kill", "tasks": {"noop": {"index": list(range(24)), "sleep_s": 0.25}}}
    units = validate(doc).units()
    result = {}
    runner = threading.Thread(target=lambda: result.setdefault(
        "summary", run_units(units, str(tmp_path), RunConfig(kind="ray", workers=2))))
    runner.start()
    first = _wait_for_files(tmp_path / "kill" / "noop", 3)
    victim = int(pd.read_parquet(first[0])["pid"][0])
    os.kill(victim, signal.SIGKILL)
    runner.join(timeout=180)
    assert not runner.is_alive()
    summary = result["summary"]
    assert (summary.done, summary.failed) == (24, 0)
    df = harness.load(str(tmp_path), task="noop")
    assert len(df) == 24 and df["unit_id"].is_unique
    assert sorted(df["index"]) == list(range(24))
    assert df["pid"].nunique() >= 3  # the killed actor was replaced by a new process
    assert victim in set(df["pid"])
    assert df["attempt"].max() == 2  # the killed actor's in-flight units ran again


@pytest.mark.slow
def test_interrupted_driver_resumes_to_the_uninterrupted_table(tmp_path):
    doc = {"name": "intr", "tasks": {"noop": {"index": list(range(16)), "sleep_s": 0.4,
                                              "work_iters": 5}}}
    path = write_sweep(tmp_path / "intr.yaml", doc)
    cmd = [sys.executable, "-m", "harness.cli", "run", str(path), "--workers", "2",
           "--results", str(tmp_path / "res")]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=harness_env(),
                            start_new_session=True)
    _wait_for_files(tmp_path / "res" / "intr" / "noop", 3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    done_before = len(list((tmp_path / "res" / "intr" / "noop").glob("*.parquet")))
    assert 3 <= done_before < 16

    again = subprocess.run(cmd, stderr=subprocess.PIPE, text=True, env=harness_env(), timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"{done_before} done, {16 - done_before} to run" in again.stderr
    assert f"ran {16 - done_before} of {16 - done_before} units" in again.stderr

    units = validate(doc).units()
    run_units(units, str(tmp_path / "ref"), RunConfig(kind="local"))
    resumed = comparable(harness.load(str(tmp_path / "res"), task="noop"))
    reference = comparable(harness.load(str(tmp_path / "ref"), task="noop"))
    pd.testing.assert_frame_equal(resumed, reference)
