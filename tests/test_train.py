"""The train task learns for real on bundled data, is deterministic, and checkpoints."""

from __future__ import annotations


import pandas as pd
import pytest

import harness
from harness.models.checkpoints import load_checkpoint, read_sidecar
from harness.engine.executor import RunConfig, run_units
from harness.engine.spec import SpecError, validate
from harness.engine.checkpoint_refs import resolve_checkpoint_refs
from harness.analysis.training import decay_names
from harness.fileio import resolve_in_root

from conftest import comparable

NARROW_RESNET = {"model": "resnet18", "model_args": {"width": 16, "layers": [1, 1, 1, 1]}}
SMALL_VIT = {"model": "vit_ti", "model_args": {"embed_dim": 64, "depth": 4, "num_heads": 4,
                                               "patch_size": 4}}
DIGITS_RECIPE = {"dataset": "digits", "epochs": 12, "warmup_epochs": 1, "batch_size": 64,
                 "lr": 0.002, "weight_decay": 0.05, "augment": "basic"}


def train_doc(name: str, model: dict, **extra) -> dict:
    return {"name": name, "tasks": {"train": {**model, **DIGITS_RECIPE, **extra}}}


@pytest.fixture(scope="module")
def trained_resnet(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    units = validate(train_doc("tr", NARROW_RESNET, checkpoint_at=[1])).units()
    summary = run_units(units, str(root), RunConfig(kind="local", device="cpu"))
    assert (summary.done, summary.failed) == (1, 0), summary.errors
    return root


def test_narrow_resnet_learns_digits_on_cpu(trained_resnet):
    root = trained_resnet
    df = harness.load(str(root), task="train").sort_values("epoch")
    assert list(df["epoch"]) == list(range(1, 14))
    final = df.iloc[-1]
    assert final["test_acc"] >= 0.90, final["test_acc"]
    assert df["train_loss"].iloc[-1] < df["train_loss"].iloc[0]
    assert df["lr_end"].iloc[-1] < 1e-4 < df["lr_end"].max()  # warmup then cosine to ~0
    assert df["test_acc"].notna().sum() == 2  # end of warmup and final


def test_checkpoints_have_sidecars_and_reload_to_the_same_metrics(trained_resnet):
    root = trained_resnet
    df = harness.load(str(root), task="train")
    final = df[df["epoch"] == df["epoch"].max()].iloc[0]
    weights = resolve_in_root(str(root), final["checkpoint"])
    meta = read_sidecar(weights)
    assert meta["recipe"]["weight_decay"] == 0.05 and meta["epoch"] == 13
    model, _ = load_checkpoint(weights)
    assert meta["recipe"]["decay_set"] == "timm"  # the decayed tensors are recorded by name
    assert meta["decayed_params"] == decay_names(model, "timm")
    assert "fc.bias" not in meta["decayed_params"] and "fc.weight" in meta["decayed_params"]
    assert meta["data_fraction"] == 1.0 and meta["seed"] == 0 and meta["final"]
    doc = resolve_checkpoint_refs(
        {"name": "ev", "tasks": {"evaluate": {"checkpoint": "sweep:tr", "dataset": "digits"}}},
        str(root))
    units = validate(doc).units()
    assert len(units) == 2 and {u.params["model"] for u in units} == {"resnet18"}
    run_units(units, str(root), RunConfig(kind="local", device="cpu"))
    ev = harness.load(str(root), task="evaluate", sweep="ev", quantity="metrics")
    by_ckpt = ev.set_index("checkpoint")["acc"]
    assert by_ckpt[final["checkpoint"]] == pytest.approx(final["test_acc"], abs=1e-12)
    assert sum(p.numel() for p in model.parameters()) == final["num_params"]


def test_unknown_checkpoint_sweep_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="no checkpoints of sweep 'nope'"):
        resolve_checkpoint_refs({"name": "e", "tasks": {"evaluate": {"checkpoint": "sweep:nope"}}},
                                str(tmp_path))


def test_small_vit_learns_well_above_chance(tmp_path):
    # ViTs need more data or epochs than a ResNet (the paper's point); a lower lr
    # and no augmentation make 12 CPU epochs on 1347 digits enough to learn.
    units = validate(train_doc("vit", SMALL_VIT, lr=1e-3, augment="none")).units()
    summary = run_units(units, str(tmp_path), RunConfig(kind="local", device="cpu"))
    assert summary.done == 1, summary.errors
    final = harness.load(str(tmp_path), task="train").sort_values("epoch").iloc[-1]
    assert final["test_acc"] >= 0.5  # chance is 0.1


@pytest.mark.parametrize("model", ["resnet", "vit"])
def test_training_is_deterministic_on_cpu(tmp_path, model):
    """The same unit twice gives the same rows (the ViT too: a demo run once seemed not to be;
    two demo_train runs now give bit-identical checkpoints)."""
    doc = train_doc("det", NARROW_RESNET if model == "resnet" else SMALL_VIT, epochs=1,
                    warmup_epochs=1, data_fraction=0.2, augment="paper")
    units = validate(doc).units()
    for out in ("a", "b"):
        run_units(units, str(tmp_path / out), RunConfig(kind="local", device="cpu"))
    a, b = (comparable(harness.load(str(tmp_path / o), task="train")) for o in ("a", "b"))
    drop = ["epoch_seconds", "images_per_s", "checkpoint"]
    pd.testing.assert_frame_equal(a.drop(columns=drop), b.drop(columns=drop))


def test_bad_recipe_values_are_rejected_before_running():
    with pytest.raises(SpecError) as info:
        validate(train_doc("bad", NARROW_RESNET, augment="fancy", lr=0))
    text = str(info.value)
    assert "augment: unknown value 'fancy'" in text
    assert "lr: 0.0 out of range (0.0, inf]" in text
    # cross-field checks run once every field is valid on its own
    with pytest.raises(SpecError, match=r"checkpoint_at: epochs must be ints in \[1, 13\]"):
        validate(train_doc("bad", NARROW_RESNET, checkpoint_at=[99]))
    with pytest.raises(SpecError, match="augment_args: .*unknown"):
        validate(train_doc("bad", NARROW_RESNET, augment_args={"mixp": 1.0}))
