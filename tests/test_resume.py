"""Train units resume from their last saved state: bit-identical weights, epoch in `status`."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import harness
import harness.analysis.training
from harness import cli
from harness.models.checkpoints import CheckpointError, load_state, save_state
from harness.engine.executor import RunConfig, run_units
from harness.engine.spec import validate
from harness.fileio import resolve_in_root
from harness.analysis.training import _rng_state, _set_rng_state

from conftest import comparable, write_sweep

# A ViT with drop-path draws from torch's global RNG too, and the "paper" augmentation
# from the unit's generator and NumPy: a resume that missed any RNG would diverge.
MODEL = {"model": "vit_ti", "model_args": {"embed_dim": 32, "depth": 2, "num_heads": 2,
                                           "patch_size": 8, "drop_path": 0.1}}
RECIPE = {"dataset": "digits", "data_fraction": 0.15, "epochs": 3, "warmup_epochs": 1,
          "batch_size": 32, "lr": 0.002, "augment": "paper", "amp": False}
TOTAL = 4


def train_units(name: str) -> list:
    return validate({"name": name, "tasks": {"train": {**MODEL, **RECIPE}}}).units()


class Stop(RuntimeError):
    """Stands for whatever kills a unit (lost node, timeout, preemption)."""


def stop_at(monkeypatch, epoch: int) -> list[int]:
    """Make the `epoch`-th call of train_epoch (counting from 1) raise once; returns the call log."""
    real, calls = harness.analysis.training.train_epoch, []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == epoch:
            raise Stop(f"stopped in epoch {epoch}")
        return real(*args, **kwargs)

    monkeypatch.setattr("tasks.train.train_epoch", wrapped)
    return calls


def final_weights(root: Path) -> dict[str, torch.Tensor]:
    df = harness.load(str(root), task="train")
    return load_file(resolve_in_root(str(root), df[df["epoch"] == TOTAL].iloc[0]["checkpoint"]))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("whole")
    summary = run_units(train_units("rs"), str(root), RunConfig(kind="local", device="cpu"))
    assert (summary.done, summary.failed) == (1, 0), summary.errors
    return root


def test_a_retried_unit_resumes_with_bit_identical_weights(uninterrupted, tmp_path, monkeypatch):
    calls = stop_at(monkeypatch, 3)
    summary = run_units(train_units("rs"), str(tmp_path),
                        RunConfig(kind="local", device="cpu", retry_failures=1))
    assert (summary.done, summary.failed, summary.retried) == (1, 0, 1), summary.errors
    assert len(calls) == TOTAL + 1  # epochs 1, 2, the stopped 3, then only 3 and 4 again
    whole, resumed = final_weights(uninterrupted), final_weights(tmp_path)
    assert whole.keys() == resumed.keys()
    for k in whole:
        assert torch.equal(whole[k], resumed[k]), k
    drop = ["epoch_seconds", "images_per_s", "checkpoint"]
    a, b = (comparable(harness.load(str(r), task="train"), "epoch").drop(columns=drop)
            for r in (uninterrupted, tmp_path))
    pd.testing.assert_frame_equal(a, b)
    unit = train_units("rs")[0]
    artifacts = tmp_path / "rs" / "_artifacts" / "train" / unit.unit_id
    assert not (artifacts / "resume.pt").exists()  # removed once the unit finished


def test_a_rerun_sweep_resumes_and_status_shows_the_epoch(uninterrupted, tmp_path, monkeypatch,
                                                         capsys):
    sweep = write_sweep(tmp_path / "rs.yaml", {"name": "rs", "tasks": {"train": {**MODEL, **RECIPE}}})
    results = str(tmp_path / "results")
    calls = stop_at(monkeypatch, 3)
    assert cli.main(["run", str(sweep), "--results", results, "--executor", "local"]) == 1
    capsys.readouterr()
    assert cli.main(["status", str(sweep), "--results", results]) == 0
    out = capsys.readouterr().out
    unit = train_units("rs")[0]
    assert f"{unit.unit_id}  epoch 2/{TOTAL}" in out, out
    assert cli.main(["run", str(sweep), "--results", results, "--executor", "local"]) == 0
    assert len(calls) == TOTAL + 1
    whole, resumed = final_weights(uninterrupted), final_weights(Path(results))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert cli.main(["status", str(sweep), "--results", results]) == 0
    assert "epoch" not in capsys.readouterr().out  # done units report nothing


def test_every_rng_is_saved_and_restored():
    gen = torch.Generator().manual_seed(3)
    state = _rng_state(gen)
    first = (torch.rand(3, generator=gen), torch.rand(3), np.random.rand(3), random.random())
    _set_rng_state(state, gen)
    again = (torch.rand(3, generator=gen), torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert np.array_equal(first[2], again[2]) and first[3] == again[3]


def test_states_load_weights_only_and_a_bad_one_names_the_fix(tmp_path):
    assert load_state(str(tmp_path / "none.pt")) is None
    path = str(tmp_path / "s.pt")
    save_state(path, {"epoch": 2, "rows": [{"a": 1.0, "b": None}], "w": torch.ones(2)})
    assert load_state(path)["rows"] == [{"a": 1.0, "b": None}]
    torch.save({"evil": Stop("x")}, path)  # an arbitrary object: refused, not unpickled
    with pytest.raises(CheckpointError, match="delete it to start the unit from scratch"):
        load_state(path)
