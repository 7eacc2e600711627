"""Growing the worker pool with the cluster, and resources per task.

The sizing rules are plain functions checked against hand counts; the embedded
Ray takes Ray's own CPU detection; a mixed sweep gives each task actors of its
own shape; and a sweep on Ray's fake autoscaling cluster (the `fake_multinode`
provider that `ray.cluster_utils.AutoscalingCluster` drives) starts with a
head that has no CPU for work and ends with its units on several nodes the
autoscaler started because the pool asked for them.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time

import pandas as pd
import pytest
from conftest import harness_env, write_sweep

import harness
from harness.engine.executor import RunConfig, run_units
from harness.engine.ray_pool import bundles, embedded_cpus, ensure_ray, fit_workers, plan_workers
from harness.engine.spec import SpecError, validate

CPU, GPU_QUARTER, GPU_ONE = (1.0, 0.0), (1.0, 0.25), (4.0, 1.0)


# -- sizing rules ------------------------------------------------------------------------------
def test_plan_workers_bounds_the_pool_and_gives_every_shape_one_first():
    demand = {CPU: 10, GPU_QUARTER: 3, GPU_ONE: 0}
    # one each first (2), then the other 6 in shape order: all to CPU (9 more wanted)
    assert plan_workers(demand, 0, 8) == {CPU: 7, GPU_QUARTER: 1, GPU_ONE: 0}
    assert plan_workers({CPU: 3, GPU_QUARTER: 9}, 0, 8) == {CPU: 3, GPU_QUARTER: 5}
    assert plan_workers(demand, 0, 1) == {CPU: 1, GPU_QUARTER: 1, GPU_ONE: 0}
    assert plan_workers(demand, 0, 0) == {CPU: 10, GPU_QUARTER: 3, GPU_ONE: 0}  # no bound
    assert plan_workers(demand, 2, 0) == {CPU: 2, GPU_QUARTER: 2, GPU_ONE: 0}   # fixed, per shape


def test_fit_workers_keeps_held_actors_and_adds_what_the_cluster_holds():
    want = {GPU_QUARTER: 6, GPU_ONE: 2}
    # 2 GPUs, 16 CPUs: 1 GPU-actor held (1 GPU, 4 CPUs left 1 GPU, 12 CPUs): 4 quarter-actors
    assert fit_workers(want, {GPU_ONE: 1}, {"CPU": 16, "GPU": 2}) == {GPU_QUARTER: 4, GPU_ONE: 1}
    # a head without CPUs for work: one pending actor per shape waits for a node
    assert fit_workers(want, {}, {"CPU": 0}) == {GPU_QUARTER: 1, GPU_ONE: 1}
    assert fit_workers({CPU: 0}, {CPU: 3}, {"CPU": 8}) == {CPU: 0}  # drained: let go
    assert bundles({GPU_QUARTER: 2, CPU: 1, GPU_ONE: 0}) == [
        {"CPU": 1.0, "GPU": 0.25}, {"CPU": 1.0, "GPU": 0.25}, {"CPU": 1.0}]


def test_embedded_ray_uses_rays_cpu_detection(monkeypatch):
    import os

    import ray

    import harness.engine.ray_pool as pool

    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # the host; a container allows 3
    monkeypatch.setattr(pool, "detected_cpus", lambda: 3.0)
    assert embedded_cpus(RunConfig()) is None
    assert embedded_cpus(RunConfig(workers=2, num_cpus=1.5)) is None        # 3 fit
    assert embedded_cpus(RunConfig(workers=2, num_cpus=2.0)) == 4           # asked for more
    assert embedded_cpus(RunConfig(num_cpus=1, tasks={"train": {"num_cpus": 5}})) == 5
    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ensure_ray(RunConfig()) is True
    assert seen["address"] == "local" and seen["num_cpus"] is None


# -- resources per task ------------------------------------------------------------------------
def _mixed(executor: dict) -> dict:
    return {"name": "mixed", "executor": executor, "tasks": {
        "evaluate": {"model": "resnet18", "model_args": {"width": 8, "layers": [1, 1, 1, 1]},
                     "dataset": "digits", "max_samples": 32},
        "noop": {"index": list(range(6)), "sleep_s": 0.5}}}


def test_executor_tasks_override_the_sweep_and_name_bad_fields():
    spec = validate(_mixed({"num_gpus": 0.25, "unit_timeout": 60,
                            "tasks": {"evaluate": {"num_gpus": 1, "num_cpus": 2}}}))
    config = RunConfig(**spec.executor)
    assert config.for_task("evaluate").shape == (2.0, 1.0)
    assert config.for_task("evaluate").unit_timeout == 60.0   # falls back to the sweep's
    assert config.for_task("noop").shape == (1.0, 0.25)
    with pytest.raises(SpecError) as bad:
        validate(_mixed({"tasks": {"train": {"num_gpus": 1},
                                   "noop": {"workers": 2, "num_gpus": -1}}}))
    assert bad.value.errors == [
        "executor.tasks.train: this sweep has no task 'train'; its tasks: evaluate, noop",
        "executor.tasks.noop.workers: not settable per task; allowed: num_cpus, num_gpus, "
        "unit_timeout",
        "executor.tasks.noop.num_gpus: -1.0 out of range [0.0, inf]"]
    with pytest.raises(SpecError, match=r"executor.tasks: expected a mapping"):
        validate(_mixed({"tasks": ["noop"]}))


def test_local_unit_timeout_per_task(tmp_path):
    doc = {"name": "t", "executor": {"tasks": {"noop": {"unit_timeout": 0.5}}},
           "tasks": {"noop": [{"index": 0}, {"index": 1, "sleep_s": 30.0}]}}
    spec = validate(doc)
    started = time.monotonic()
    summary = run_units(spec.units(), str(tmp_path), RunConfig(**{**spec.executor,
                                                                   "kind": "local"}))
    assert time.monotonic() - started < 10
    assert (summary.done, summary.failed) == (1, 1)
    assert harness.load(str(tmp_path), task="_failures")["error_type"].tolist() == ["UnitTimeout"]


@pytest.mark.slow
def test_each_task_runs_on_actors_of_its_own_shape(tmp_path, ray_session):
    # 2 CPUs: the 2-CPU evaluate actor and the 1-CPU noop actors can never run at once (with
    # one shape, a second actor would run noop units beside the evaluate unit).
    spec = validate(_mixed({"tasks": {"evaluate": {"num_cpus": 2}}}))
    assert ray_session.cluster_resources()["CPU"] == 2
    summary = run_units(spec.units(), str(tmp_path), RunConfig(**spec.executor))
    assert (summary.done, summary.failed) == (7, 0), summary.errors
    noop = harness.load(str(tmp_path), task="noop")
    evaluate = harness.load(str(tmp_path), task="evaluate", quantity="metrics")
    assert noop["pid"].nunique() <= 2

    def span(df):
        end = df["finished_at"]
        return end - pd.to_timedelta(df["duration_s"], unit="s"), end

    (e_start,), (e_end,) = (x.tolist() for x in span(evaluate))
    n_start, n_end = span(noop)
    assert ((n_end <= e_start) | (n_start >= e_end)).all()


# -- an autoscaling cluster --------------------------------------------------------------------
def fake_autoscaling_config(port: int, max_nodes: int) -> dict:
    """Ray's fake_multinode provider: worker nodes of 1 CPU started by the autoscaler on this
    machine, talking to the head over loopback. (`AutoscalingCluster.start` runs `ray stop
    --force`, which would stop every Ray on the machine, so the head is started here.)"""
    return {
        "cluster_name": "fake-autoscaling", "max_workers": max_nodes, "upscaling_speed": 1.0,
        "idle_timeout_minutes": 0.1,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True,
                     "gcs_address": f"127.0.0.1:{port}"},
        "available_node_types": {
            "ray.head.default": {"resources": {}, "node_config": {}, "max_workers": 0},
            "ray.worker.cpu": {"resources": {"CPU": 1, "object_store_memory": 100_000_000},
                               "node_config": {}, "min_workers": 0, "max_workers": max_nodes}},
        "head_node_type": "ray.head.default", "auth": {"ssh_user": "ubuntu"}, "docker": {},
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": []}


@pytest.mark.slow
def test_a_sweep_on_an_autoscaling_cluster_grows_onto_new_nodes(tmp_path):
    from test_multinode import HARNESS, RayNode, free_port

    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = harness_env()
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), RAY_FAKE_CLUSTER="1",
               AUTOSCALER_UPDATE_INTERVAL_S="1")
    env.pop("RAY_AUTH_TOKEN", None)
    port = free_port()
    config = tmp_path / "autoscaling.json"
    config.write_text(json.dumps(fake_autoscaling_config(port, max_nodes=3)))
    # the head has no CPU for work, as on clusters/aws-gpu.yaml: every unit needs a new node
    head = RayNode(["--head", f"--port={port}", f"--autoscaling-config={config}",
                    "--include-dashboard=false", f"--dashboard-agent-listen-port={free_port()}",
                    f"--ray-client-server-port={free_port()}"], env, num_cpus=0)
    try:
        head.wait_started()
        n = 24
        sweep = write_sweep(tmp_path / "grow.yaml", {
            "name": "grow", "executor": {"max_workers": 3},
            "tasks": {"noop": {"index": list(range(n)), "sleep_s": 1.0}}})
        run = subprocess.run(
            [HARNESS, "run", str(sweep), "--address", f"127.0.0.1:{port}",
             "--results", str(tmp_path / "results")],
            env=env, capture_output=True, text=True, timeout=400)
        assert run.returncode == 0, run.stderr[-3000:]
        df = harness.load(str(tmp_path / "results"), task="noop", sweep="grow")
        assert sorted(df["index"]) == list(range(n))
        assert df["node_id"].nunique() > 1, df["node_id"].value_counts()
    finally:
        head.remove()


# -- gang-scheduled Hessian shards --------------------------------------------------------------
@pytest.mark.slow
def test_shard_actors_start_all_together_or_hold_nothing(ray_session):
    import functools
    import threading

    from ray.util import placement_group_table

    from harness.analysis.hessian_parallel import ShardedHessian
    from tasks.hessian import shard_objective

    doc = {"name": "hs", "tasks": {"hessian": {
        "model": "resnet18", "model_args": {"width": 8, "layers": [1, 1, 1, 1]},
        "dataset": "digits", "scope": "full", "num_samples": 48, "batch_size": 16}}}
    (unit,) = validate(doc).units()
    builder = functools.partial(shard_objective, unit.params)
    assert ray_session.available_resources()["CPU"] == 2
    first = ShardedHessian(builder, 2, num_cpus=0.5)            # holds 1 of the 2 CPUs
    second: dict = {}
    waiting = threading.Thread(target=lambda: second.setdefault(
        "op", ShardedHessian(builder, 3, num_cpus=0.5, start_timeout=120)))  # needs 1.5
    waiting.start()
    try:
        deadline = time.monotonic() + 60
        while not any(g["state"] == "PENDING" for g in placement_group_table().values()):
            assert time.monotonic() < deadline, "the second operator asked for nothing"
            time.sleep(0.2)
        for _ in range(10):  # while it waits, it holds none of its shards' resources
            assert ray_session.available_resources().get("CPU", 0) == pytest.approx(1.0)
            time.sleep(0.2)
    finally:
        first.close()
        waiting.join(timeout=180)
    op = second["op"]
    try:
        assert (op.n, op.num_samples) == (first.n, 48)
    finally:
        op.close()
    assert all(g["state"] == "REMOVED" for g in placement_group_table().values())
