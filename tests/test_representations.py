"""Per-depth representation analyses: Fourier profiles, feature-map variance, lesions.

The numerics are checked against inputs whose answer is known by hand; the
three tasks are then run end to end through the local executor on a small ViT
and a small ResNet from the zoo.
"""

from __future__ import annotations

import math

import pytest
import torch

import harness
from harness.models.blocks import Block, blocks
from harness.engine.executor import RunConfig, run_units
from harness.analysis.features import (FeatureVariance, FourierProfile, feature_variance, fourier_profile,
                              to_spatial)
from harness.models.registry import build_model
from harness.engine.spec import SpecError, validate

from conftest import SMALL_RESNET, SMALL_VIT

SMALL_PREACT = {"model": "preact_resnet18", "model_args": {"width": 8, "layers": [2, 1, 1, 1]}}
EPS = 1e-6


# --------------------------------------------------------------------------- to_spatial


def test_to_spatial_handles_each_layout():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    nchw = Block("a", "conv", torch.nn.Identity(), "nchw")
    nhwc = Block("b", "conv", torch.nn.Identity(), "nhwc")
    tokens = Block("c", "msa", torch.nn.Identity(), "tokens", prefix_tokens=1)
    flat = Block("d", "head", torch.nn.Identity(), "flat")
    assert torch.equal(to_spatial(x, nchw), x)
    assert torch.equal(to_spatial(x.permute(0, 2, 3, 1), nhwc), x)
    # tokens as timm's patch embedding makes them: (B, C, H, W) -> flatten(2) -> (B, HW, C)
    tok = x.flatten(2).transpose(1, 2)
    with_cls = torch.cat([torch.full((2, 1, 3), 99.0), tok], dim=1)
    assert torch.equal(to_spatial(with_cls, tokens), x)  # class token dropped, row-major grid
    assert to_spatial(x.mean(dim=(2, 3)), flat) is None
    assert to_spatial(torch.zeros(2, 1, 3), tokens) is None  # only the class token left
    with pytest.raises(ValueError, match="square"):
        to_spatial(torch.zeros(2, 1 + 6, 3), tokens)


# --------------------------------------------------------------------------- Fourier


def test_constant_map_has_no_amplitude_above_frequency_zero():
    # FFT2 of a constant c on an 8x8 map: 64c at (0, 0), exactly 0 elsewhere. With
    # logA = log(|F| + 1e-6): logA(0) = log(64c + 1e-6), logA(f > 0) = log(1e-6) up to float64
    # rounding, so Δ(f > 0) = log(1e-6 / 64c) = -13.82 - 4.16 = -17.97 for c = 1.
    fmap = torch.ones(3, 5, 8, 8)
    freqs, delta = fourier_profile(fmap)
    assert freqs.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]  # 0 .. π in units of π
    assert delta[0] == 0.0
    expected = math.log(EPS) - math.log(64.0 + EPS)
    assert torch.allclose(delta[1:], torch.full((4,), expected, dtype=torch.float64), atol=1e-6)
    assert (delta[1:] < -17.0).all()


def test_checkerboard_has_its_energy_at_pi():
    # (-1)^(h+w) on 8x8: FFT2 is 64 at (4, 4) = (π, π) and 0 elsewhere, so Δ(π) = log(64/1e-6)
    # = +17.97 and Δ = 0 at every frequency strictly between 0 and π.
    h = torch.arange(8)
    board = ((-1.0) ** (h[:, None] + h[None, :])).expand(2, 4, 8, 8)
    freqs, delta = fourier_profile(board)
    assert freqs[-1] == 1.0 and int(delta.argmax()) == len(delta) - 1
    assert delta[-1] == pytest.approx(math.log(64.0 + EPS) - math.log(EPS), abs=1e-6)
    assert torch.allclose(delta[:-1], torch.zeros(4, dtype=torch.float64), atol=1e-6)
    # The original notebook's reading (fftshift, diag()[s//2:]) stops at 0.75π: it never sees it.
    freqs_o, delta_o = fourier_profile(board, diagonal="original")
    assert freqs_o.tolist() == [0.0, 0.25, 0.5, 0.75]
    assert delta_o.abs().max() < 1e-6


def test_fourier_profile_reads_single_frequencies_and_accumulates_exactly():
    # cos(2π·2h/8)·cos(2π·2w/8) has energy at (±2, ±2): frequency 0.5π on the diagonal.
    h = torch.arange(8, dtype=torch.float64)
    wave = torch.cos(math.pi * h / 2)[:, None] * torch.cos(math.pi * h / 2)[None, :]
    _, delta = fourier_profile(wave.expand(1, 1, 8, 8))
    assert int(delta.argmax()) == 2
    # batches combined = one pass over all samples
    torch.manual_seed(0)
    x = torch.randn(10, 3, 8, 8)
    acc = FourierProfile()
    acc.update(x[:7])
    acc.update(x[7:])
    _, _, delta_acc = acc.value()
    assert torch.allclose(delta_acc, fourier_profile(x)[1], atol=1e-12)


# --------------------------------------------------------------------------- variance


def test_variance_matches_hand_computation():
    # two samples, one channel, 2x2 maps: [[1, 2], [3, 4]] and [[0, 0], [0, 4]]
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[0.0, 0.0], [0.0, 4.0]]]])
    # spatial (unbiased over the 4 positions of each map, then mean over samples x channels):
    #   map 1: mean 2.5, squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, / 3 = 5/3
    #   map 2: mean 1,   squared deviations 1 + 1 + 1 + 9 = 12, / 3 = 4
    #   (5/3 + 4) / 2 = 17/6
    assert feature_variance(x, "spatial") == pytest.approx(17 / 6, abs=1e-12)
    # samples (unbiased over the 2 samples of each element, then mean over elements):
    #   (1, 0): 0.5   (2, 0): 2   (3, 0): 4.5   (4, 4): 0   -> 7 / 4
    assert feature_variance(x, "samples") == pytest.approx(7 / 4, abs=1e-12)


@pytest.mark.parametrize("definition", ["spatial", "samples"])
def test_variance_accumulates_batches_exactly(definition):
    torch.manual_seed(1)
    x = torch.randn(11, 4, 5, 5) * 3 + 2
    acc = FeatureVariance(definition)
    for chunk in x.split(4):
        acc.update(chunk)
    assert acc.value() == pytest.approx(feature_variance(x, definition), rel=1e-12)
    assert feature_variance(torch.full((3, 2, 4, 4), 7.0), definition) == 0.0


# --------------------------------------------------------------------------- lesion numerics


def _zero_last_layer(branch: torch.nn.Module) -> None:
    last = [m for m in branch.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))][-1]
    torch.nn.init.zeros_(last.weight)
    if last.bias is not None:
        torch.nn.init.zeros_(last.bias)


@pytest.mark.parametrize("spec", [SMALL_VIT, SMALL_PREACT], ids=["vit", "preact_resnet"])
def test_lesion_of_a_zero_branch_changes_nothing(spec):
    from tasks.lesion import lesion_metrics

    torch.manual_seed(0)
    model = build_model(spec["model"], 10, **spec["model_args"]).eval()
    parts = blocks(model)
    i = next(k for k, b in enumerate(parts) if b.residual)
    x, y = torch.randn(24, 3, 32, 32), torch.arange(24) % 10
    cpu = torch.device("cpu")
    intact = lesion_metrics(model, parts, x, y, None, 8, cpu)
    changed = lesion_metrics(model, parts, x, y, i, 8, cpu)
    assert changed["nll"] != intact["nll"]  # a random branch matters ...
    _zero_last_layer(parts[i].branch)
    zeroed = lesion_metrics(model, parts, x, y, None, 8, cpu)
    lesioned = lesion_metrics(model, parts, x, y, i, 8, cpu)
    assert zeroed == pytest.approx(lesioned, abs=1e-12)  # ... a zero branch does not


# --------------------------------------------------------------------------- tasks end to end


def _run(tmp_path, tasks: dict) -> None:
    units = validate({"name": "rep", "tasks": tasks}).units()
    summary = run_units(units, str(tmp_path), RunConfig(kind="local", device="cpu"))
    assert summary.failed == 0, harness.load(str(tmp_path), task="_failures")["traceback"].iloc[0]


def test_fourier_and_featvar_tasks_on_a_vit_and_a_resnet(tmp_path):
    common = {"dataset": "digits", "max_samples": 40, "batch_size": 16}
    _run(tmp_path, {
        "fourier": [{**SMALL_VIT, **common}, {**SMALL_RESNET, **common}],
        "featvar": [{**SMALL_VIT, **common, "definition": ["spatial", "samples"]},
                    {**SMALL_RESNET, **common}],
    })
    fourier = harness.load(str(tmp_path), task="fourier")
    vit = fourier[fourier["model"] == "vit_ti"]
    # stem + 2 x (msa, mlp) + norm have an 8x8 token grid (32 / patch 4): 6 blocks x 5 frequencies
    assert vit["block_index"].nunique() == 6 and len(vit) == 6 * 5
    assert set(vit["block_kind"]) == {"stem", "msa", "mlp", "norm"}
    assert sorted(vit["frequency"].unique()) == [0.0, 0.25, 0.5, 0.75, 1.0]
    res = fourier[fourier["model"] == "resnet18"]
    # stem + 4 stages of one block: maps 32, 32, 16, 8, 4 -> 17 + 17 + 9 + 5 + 3 frequencies
    assert res.groupby("block_index").size().tolist() == [17, 17, 9, 5, 3]
    assert set(res["block_kind"]) == {"stem", "conv"}
    for df in (vit, res):
        assert (df.loc[df["frequency"] == 0, "delta_log_amplitude"] == 0).all()
        assert df["delta_log_amplitude"].between(-30, 30).all() and df["depth"].between(0, 1).all()
        assert (df.groupby("block_index")["is_max_frequency"].sum() == 1).all()
        assert (df["n_samples"] == 40).all()
    featvar = harness.load(str(tmp_path), task="featvar")
    assert len(featvar) == 6 * 2 + 5
    assert (featvar["variance"] > 0).all() and featvar["variance"].notna().all()
    spatial = featvar[(featvar["model"] == "vit_ti") & (featvar["definition"] == "spatial")]
    samples = featvar[(featvar["model"] == "vit_ti") & (featvar["definition"] == "samples")]
    assert not (spatial["variance"].to_numpy() == samples["variance"].to_numpy()).all()


def test_lesion_task_expands_to_every_residual_block(tmp_path):
    common = {"dataset": "digits", "max_samples": 64}
    doc = {"lesion": [{**SMALL_VIT, **common}, {**SMALL_PREACT, **common}]}
    units = validate({"name": "rep", "tasks": doc}).units()
    assert sorted(u.params["block"] for u in units) == [1, 1, 2, 2, 3, 4]  # vit 1-4, preact 1-2
    _run(tmp_path, doc)
    df = harness.load(str(tmp_path), task="lesion")
    assert len(df) == 6 and (df["block_index"] == df["block"]).all()
    vit = df[df["model"] == "vit_ti"]
    assert list(vit.sort_values("block")["block_kind"]) == ["msa", "mlp", "msa", "mlp"]
    # the intact metrics are the model's own, the same in every row of one model
    for _, rows in df.groupby("model"):
        assert rows["intact_nll"].nunique() == 1 and rows["intact_acc"].nunique() == 1
    assert (df["acc_drop"] == df["intact_acc"] - df["acc"]).all()
    assert ((df["nll"] - df["intact_nll"]).abs() > 1e-9).all()  # random branches are not zero
    assert df["nll"].between(0.5, 10).all() and (df["n_samples"] == 64).all()


def test_lesion_spec_errors_name_the_residual_blocks():
    with pytest.raises(SpecError, match="no residual block to lesion"):
        validate({"name": "x", "tasks": {"lesion": {**SMALL_RESNET}}})
    with pytest.raises(SpecError, match="residual blocks: 1, 2, 3, 4"):
        validate({"name": "x", "tasks": {"lesion": {**SMALL_VIT, "block": 0}}})
    units = validate({"name": "x", "tasks": {"lesion": {**SMALL_VIT, "block": 2}}}).units()
    assert [u.params["block"] for u in units] == [2]
