"""A results tree can move: rows name artifacts relative to the results root, so the unit ids of
a sweep that consumes another's checkpoints (`checkpoint: sweep:X`) do not change."""

from __future__ import annotations

import shutil

import pytest
from conftest import write_sweep

import harness
from harness import cli
from harness.fileio import resolve_in_root
from harness.models.checkpoints import read_sidecar

TRAIN = {"name": "tt", "tasks": {"train": {
    "model": "resnet18", "model_args": {"width": 4, "layers": [1, 1, 1, 1]}, "dataset": "digits",
    "data_size": 96, "epochs": 1, "warmup_epochs": 0, "batch_size": 32, "augment": "none"}}}
EVAL = {"name": "ee", "tasks": {"evaluate": {"checkpoint": "sweep:tt", "dataset": "digits",
                                             "max_samples": 32}}}


@pytest.mark.slow
def test_a_moved_results_tree_reruns_nothing(in_tmp, capsys):
    train, evaluate = write_sweep(in_tmp / "t.yaml", TRAIN), write_sweep(in_tmp / "e.yaml", EVAL)
    first = in_tmp / "nfs" / "results"
    for sweep in (train, evaluate):
        assert cli.main(["run", str(sweep), "--executor", "local", "--results", str(first)]) == 0
    trained = harness.load(str(first), task="train")
    (ckpt,) = trained["checkpoint"].dropna()
    assert ckpt == f"tt/_artifacts/train/{trained['unit_id'][0]}/final.safetensors"
    assert read_sidecar(resolve_in_root(str(first), ckpt))["epoch"] == 1
    before = harness.load(str(first), task="evaluate")
    assert set(before["checkpoint"]) == {ckpt}

    moved = in_tmp / "laptop" / "copy"
    moved.parent.mkdir()
    shutil.move(str(first), str(moved))
    capsys.readouterr()
    for sweep, units in ((train, 1), (evaluate, 1)):
        assert cli.main(["run", str(sweep), "--executor", "local", "--results", str(moved)]) == 0
        assert f"{units} done, 0 to run" in capsys.readouterr().err
    # and a unit that runs in the moved tree finds the checkpoint there
    shutil.rmtree(moved / "ee")
    assert cli.main(["run", str(evaluate), "--executor", "local", "--results", str(moved)]) == 0
    after = harness.load(str(moved), task="evaluate")
    assert list(after["unit_id"].unique()) == list(before["unit_id"].unique())
    assert set(after["checkpoint"]) == {ckpt}
    metrics = after[after["quantity"] == "metrics"]["acc"].tolist()
    assert metrics == before[before["quantity"] == "metrics"]["acc"].tolist()
