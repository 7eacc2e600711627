"""Fault injection: every way a sweep can be hurt ends with each unit stored exactly once.

Covered here: a worker actor SIGKILLed; the driver interrupted and re-run; a
leftover temp file; two drivers on one sweep at once; a unit that raises or runs
out of memory (retry policy); a unit past its timeout; a corrupt result file
(found by `harness status`, re-run by `harness run --repair`); disjoint shards;
the fractional-GPU memory cap. A lost node is in tests/test_multinode.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from conftest import comparable, harness_env, write_sweep

import harness
from harness import cli
from harness.engine.api import in_shard
from harness.engine.executor import RunConfig, run_units
from harness.engine.ray_pool import TARGET_BATCH_S, batch_size, cap_gpu_memory
from harness.engine.runner import UnitRunner
from harness.engine.spec import validate
from harness.engine.store import CorruptResultError, Store


def _noop(name: str, *blocks: dict) -> dict:
    return {"name": name, "tasks": {"noop": list(blocks) if len(blocks) > 1 else blocks[0]}}


def _index(failures: pd.DataFrame) -> list[int]:
    """The noop `index` of each `_failures` row (params are stored as JSON there)."""
    return [json.loads(p)["index"] for p in failures["params_json"]]


def _wait_for_files(directory: Path, count: int, timeout: float = 120.0) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = list(directory.glob("*.parquet")) if directory.exists() else []
        if len(files) >= count:
            return files
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} result files in {directory} after {timeout}s")


def _exactly_once(root: str, sweep: str, indices: list[int]) -> pd.DataFrame:
    df = harness.load(root, task="noop", sweep=sweep)
    assert df["unit_id"].is_unique, "a unit was stored twice"
    assert sorted(df["index"]) == sorted(indices)
    return df


# -- workers and drivers ------------------------------------------------------------------
def test_sigkilled_worker_units_rerun_exactly_once(tmp_path, ray_session):
    n = 40
    units = validate(_noop("kill", {"index": list(range(n)), "sleep_s": 0.25})).units()
    result = {}
    runner = threading.Thread(target=lambda: result.setdefault(
        "summary", run_units(units, str(tmp_path), RunConfig(kind="ray", workers=2))))
    runner.start()
    first = _wait_for_files(tmp_path / "kill" / "noop", 3)
    victim = int(pd.read_parquet(first[0])["pid"][0])
    os.kill(victim, signal.SIGKILL)
    done_at_kill = len(list((tmp_path / "kill" / "noop").glob("*.parquet")))
    runner.join(timeout=180)
    assert not runner.is_alive()
    assert done_at_kill < n - 4, "the sweep had (nearly) finished before the kill"
    summary = result["summary"]
    assert (summary.done, summary.failed) == (n, 0)
    df = _exactly_once(str(tmp_path), "kill", list(range(n)))
    assert df["pid"].nunique() >= 3  # the killed actor was replaced by a new process
    assert victim in set(df["pid"])
    assert df["attempt"].max() == 2  # the unit it was running ran again, once
    assert summary.retried >= 1


@pytest.mark.slow
def test_interrupted_driver_resumes_to_the_uninterrupted_table(tmp_path):
    doc = _noop("intr", {"index": list(range(16)), "sleep_s": 0.4, "work_iters": 5})
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

    again = subprocess.run(cmd, stderr=subprocess.PIPE, text=True, env=harness_env(), timeout=300,
                           check=False)
    assert again.returncode == 0, again.stderr
    assert f"{done_before} done, {16 - done_before} to run" in again.stderr
    assert f"ran {16 - done_before} of {16 - done_before} units" in again.stderr

    units = validate(doc).units()
    run_units(units, str(tmp_path / "ref"), RunConfig(kind="local"))
    resumed = comparable(harness.load(str(tmp_path / "res"), task="noop"))
    reference = comparable(harness.load(str(tmp_path / "ref"), task="noop"))
    pd.testing.assert_frame_equal(resumed, reference)


def test_leftover_temp_file_does_not_mark_a_unit_done(tmp_path):
    units = validate(_noop("st", {"index": [0, 1]})).units()
    store = Store(str(tmp_path))
    (tmp_path / "st" / "noop").mkdir(parents=True)
    (tmp_path / "st" / "noop" / f".{units[0].unit_id}.parquet.1.abcd.tmp").write_bytes(b"PAR1")
    assert store.unit_ids("st", "noop") == set()
    assert harness.load(str(tmp_path), task="noop").empty
    run_units(units[:1], str(tmp_path), RunConfig(kind="local"))
    assert store.unit_ids("st", "noop") == {units[0].unit_id}
    assert len(harness.load(str(tmp_path), task="noop")) == 1
    assert store.verify("st", "noop") == []


@pytest.mark.slow
def test_two_drivers_on_the_same_sweep_at_once(tmp_path):
    """Both drivers plan every unit and race on each; the store keeps one copy of each."""
    n = 30
    path = write_sweep(tmp_path / "two.yaml", _noop("two", {"index": list(range(n)),
                                                          "sleep_s": 0.05}))
    cmd = [sys.executable, "-m", "harness.cli", "run", str(path), "--executor", "local",
           "--results", str(tmp_path / "res")]
    procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=harness_env())
             for _ in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert all(f"0 done, {n} to run" in e for e in errs)  # both really ran the whole sweep
    root = str(tmp_path / "res")
    _exactly_once(root, "two", list(range(n)))
    store = Store(root)
    assert store.verify("two", "noop") == []
    assert not [p for p in (tmp_path / "res" / "two" / "noop").iterdir() if p.name.startswith(".")]


def test_shards_split_a_sweep_into_disjoint_parts(in_tmp, capsys):
    n = 12
    path = write_sweep(in_tmp / "sh.yaml", _noop("sh", {"index": list(range(n))}))
    ran = []
    for i in range(2):
        assert cli.main(["run", str(path), "--executor", "local", "--shard", f"{i}/2"]) == 0
        err = capsys.readouterr().err
        assert f"(shard {i}/2)" in err
        ran.append(int(err.split("(noop: ")[1].split(")")[0]))
    assert sum(ran) == n and min(ran) > 0
    ids = {u.unit_id for u in validate(_noop("sh", {"index": list(range(n))})).units()}
    assert sum(in_shard(u, (0, 2)) for u in ids) == ran[0]
    _exactly_once("results", "sh", list(range(n)))
    assert cli.main(["run", str(path), "--executor", "local", "--shard", "2/2"]) == 2
    assert "need 0 <= I < N" in capsys.readouterr().err


# -- units that fail ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["local", "ray"])
def test_raising_units_are_retried_per_policy_and_isolated(tmp_path, kind, request):
    if kind == "ray":
        request.getfixturevalue("ray_session")
    doc = _noop("r", {"index": list(range(20))}, {"index": [100, 101], "fail": True})
    units = validate(doc).units()
    config = RunConfig(kind=kind, workers=2, retry_failures=2)
    summary = run_units(units, str(tmp_path), config)
    assert (summary.done, summary.failed, summary.retried) == (20, 2, 4)
    _exactly_once(str(tmp_path), "r", list(range(20)))
    failures = harness.load(str(tmp_path), task="_failures")
    assert sorted(_index(failures)) == [100, 101]
    assert len(failures) == 2 and failures["unit_id"].is_unique
    assert failures["attempt"].tolist() == [3, 3]  # 1 run + retry_failures re-runs
    assert failures["error_type"].eq("RuntimeError").all()
    # the default policy does not re-run a raising unit within the run
    again = run_units(units[-2:], str(tmp_path / "default"), RunConfig(kind=kind, workers=2))
    assert (again.failed, again.retried) == (2, 0)
    assert harness.load(str(tmp_path / "default"), task="_failures")["attempt"].eq(1).all()


@pytest.mark.parametrize("error", ["MemoryError", "OutOfMemoryError"])
def test_out_of_memory_is_recorded_and_releases_the_worker_cache(tmp_path, error):
    runner = UnitRunner(str(tmp_path))
    runner.cache.get("model", lambda: "a big model")
    cache = runner.cache
    unit = validate(_noop("oom", {"index": 0, "fail": True, "error": error})).units()[0]
    outcome = runner.run(unit)
    assert (outcome.ok, outcome.error_type) == (False, error)
    assert runner.cache is not cache and len(runner.cache) == 0
    failures = harness.load(str(tmp_path), task="_failures")
    assert failures["error_type"].tolist() == [error]
    assert "asked to fail" in failures["message"][0]
    # through the executor: retried per retry_failures like any exception
    summary = run_units([unit], str(tmp_path / "x"), RunConfig(kind="local", retry_failures=1))
    assert (summary.failed, summary.retried) == (1, 1)
    assert harness.load(str(tmp_path / "x"), task="_failures")["attempt"].tolist() == [2]


def test_local_unit_timeout_stops_a_sleeping_unit(tmp_path):
    doc = _noop("t", {"index": [0, 1]}, {"index": 9, "sleep_s": 30.0})
    started = time.monotonic()
    summary = run_units(validate(doc).units(), str(tmp_path),
                        RunConfig(kind="local", unit_timeout=0.5, retry_failures=1))
    assert time.monotonic() - started < 10
    assert (summary.done, summary.failed, summary.retried) == (2, 1, 1)
    failures = harness.load(str(tmp_path), task="_failures")
    assert _index(failures) == [9]
    assert failures[["error_type", "attempt"]].values.tolist() == [["UnitTimeout", 2]]


@pytest.mark.slow
def test_ray_unit_timeout_replaces_the_worker(tmp_path, ray_session):
    doc = _noop("tr", {"index": list(range(8)), "sleep_s": 0.1}, {"index": 99, "sleep_s": 60.0})
    started = time.monotonic()
    summary = run_units(validate(doc).units(), str(tmp_path),
                        RunConfig(kind="ray", workers=2, unit_timeout=2.0))
    assert time.monotonic() - started < 50  # far less than the straggler's 60 s
    assert (summary.done, summary.failed, summary.retried) == (8, 1, 0)
    df = _exactly_once(str(tmp_path), "tr", list(range(8)))
    failures = harness.load(str(tmp_path), task="_failures")
    assert _index(failures) == [99]
    assert failures[["error_type", "attempt"]].values.tolist() == [["UnitTimeout", 1]]
    assert df["duration_s"].max() < 2.0
    assert df["pid"].nunique() <= 3


# -- corrupt files ----------------------------------------------------------------------------
def test_corrupt_result_files_are_named_by_status_and_rerun_by_repair(in_tmp, capsys):
    n = 6
    path = write_sweep(in_tmp / "c.yaml", _noop("c", {"index": list(range(n))}))
    assert cli.main(["run", str(path), "--executor", "local"]) == 0
    store = Store("results")
    truncated, garbled = store.files("c", "noop")[:2]
    with open(truncated, "r+b") as f:
        f.truncate(os.path.getsize(truncated) // 2)
    data = bytearray(Path(garbled).read_bytes())
    data[4:24] = bytes(b ^ 0xFF for b in data[4:24])  # the first page header and data
    Path(garbled).write_bytes(bytes(data))
    capsys.readouterr()

    assert cli.main(["status", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"corrupt {truncated}" in err and f"corrupt {garbled}" in err and "--repair" in err
    with pytest.raises(CorruptResultError, match="--repair"):
        harness.load("results", task="noop")

    assert cli.main(["run", str(path), "--executor", "local", "--repair"]) == 0
    err = capsys.readouterr().err
    assert err.count("repair: ") == 2 and f"{n - 2} done, 2 to run" in err
    moved = sorted(p.name.split(".")[0] for p in (in_tmp / "results/c/noop/_corrupt").iterdir())
    assert moved == sorted(Path(p).stem for p in (truncated, garbled))
    assert cli.main(["status", str(path)]) == 0
    _exactly_once("results", "c", list(range(n)))


# -- batching and memory ------------------------------------------------------------------
def test_batch_size_follows_unit_time_and_spreads_the_tail():
    assert batch_size(None, 64, 1000, 4) == 1            # unknown unit time: one at a time
    assert batch_size(0.001, 64, 1000, 4) == 64          # 1 ms units: capped at max_batch
    assert batch_size(TARGET_BATCH_S / 10, 64, 1000, 4) == 10
    assert batch_size(5.0, 64, 1000, 4) == 1             # long units go one by one
    assert batch_size(0.001, 64, 40, 4) == 10            # tail: an even share per place
    assert batch_size(0.001, 1, 1000, 4) == 1            # batching off


def test_gpu_memory_cap_for_fractional_workers():
    """With a fake torch.cuda (no GPU here): the cap is applied per visible device for a
    fraction, and not at all for whole GPUs, no GPUs, or when CUDA is unavailable.
    Untested on a real GPU in this suite."""
    calls = []

    def fake(available=True, count=2):
        return SimpleNamespace(is_available=lambda: available, device_count=lambda: count,
                               set_per_process_memory_fraction=lambda f, d: calls.append((f, d)))

    assert cap_gpu_memory(0.25, fake()) == 0.25
    assert calls == [(0.25, 0), (0.25, 1)]
    calls.clear()
    assert [cap_gpu_memory(g, fake()) for g in (0.0, 1.0, 2.0)] == [None, None, None]
    assert cap_gpu_memory(0.5, fake(available=False)) is None
    assert calls == []


@pytest.mark.parametrize("where", ["inside", "outside"])
def test_a_timeout_after_the_write_does_not_fail_the_unit(tmp_path, monkeypatch, where):
    """The alarm fires after the unit's file is stored: inside the runner (clearing an old
    failure) or outside it (returning the outcome). The unit is done, not failed."""
    from harness.engine import runner as runner_module
    from harness.engine.store import Store

    if where == "inside":
        monkeypatch.setattr(Store, "clear_failure", lambda *a: time.sleep(5))
    else:
        real = runner_module.UnitRunner.run

        def slow_return(self, unit, attempt=1):
            outcome = real(self, unit, attempt)
            time.sleep(5)
            return outcome

        monkeypatch.setattr(runner_module.UnitRunner, "run", slow_return)
    summary = run_units(validate(_noop("w", {"index": [0]})).units(), str(tmp_path),
                        RunConfig(kind="local", unit_timeout=0.5))
    assert (summary.done, summary.failed) == (1, 0)
    assert harness.load(str(tmp_path), task="_failures").empty
    assert len(harness.load(str(tmp_path), task="noop")) == 1


def test_ray_pool_gives_up_when_no_worker_can_start(tmp_path, ray_session):
    """Workers asking for GPUs the cluster lacks: a bounded wait, then what was asked and had."""
    from harness.engine.executor import ExecutorError

    started = time.monotonic()
    with pytest.raises(ExecutorError) as err:
        run_units(validate(_noop("ns", {"index": [0, 1]})).units(), str(tmp_path),
                  RunConfig(kind="ray", workers=2, num_gpus=1, start_timeout=3.0))
    assert time.monotonic() - started < 60
    message = str(err.value)
    assert "start_timeout=3s" in message
    assert "2 worker(s) of num_cpus=1, num_gpus=1 each" in message
    cpus = ray_session.cluster_resources()["CPU"]
    assert f"the cluster has CPU {cpus:g}, GPU 0" in message
    assert not list(tmp_path.rglob("*.parquet"))


@pytest.mark.parametrize("stored", [True, False])
def test_ray_timeout_of_a_unit_whose_file_is_stored_is_a_success(tmp_path, monkeypatch, stored):
    """The driver's timeout check for an actor that stalled after writing the unit's file
    (the pool's state built by hand: no Ray needed)."""
    from collections import deque

    from harness.engine import ray_pool
    from harness.engine.run_config import RunSummary

    (unit,) = validate(_noop("rt", {"index": [0]})).units()
    if stored:
        UnitRunner(str(tmp_path)).run(unit)
    pool = ray_pool._Pool.__new__(ray_pool._Pool)
    outcomes = []
    pool.config = RunConfig(kind="ray", unit_timeout=1.0)
    pool.store, pool.queues, pool.summary = Store(str(tmp_path)), {}, RunSummary()
    pool.resources = {"noop": pool.config.for_task("noop")}
    pool.on_outcome = outcomes.append
    stalled = ray_pool._Batch([(unit, 1)], stream=object(), started=time.perf_counter() - 5)
    pool.slots = [ray_pool._Slot(actor=None, ready=None, shape=(1.0, 0.0),
                                 batches=deque([stalled]))]
    restarted = []
    monkeypatch.setattr(pool, "_restart", restarted.append, raising=False)
    monkeypatch.setattr(ray_pool.ray, "wait", lambda refs, timeout=0: ([], refs))
    pool._check_timeouts()
    assert restarted == pool.slots  # the stalled actor is replaced either way
    assert [(o.unit_id, o.ok) for o in outcomes] == [(unit.unit_id, stored)]
    failures = harness.load(str(tmp_path), task="_failures")
    assert list(failures.get("error_type", [])) == ([] if stored else ["UnitTimeout"])
