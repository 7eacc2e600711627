"""The report's "paper's claims": verdicts computed from synthetic result frames where each
claim holds, where it does not, and where its rows are missing."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from harness.report.claims import (
    CHECKS,
    NOT_MEASURED,
    NOT_SUPPORTED,
    SUPPORTED,
    block_changes,
    check_claims,
    claims_table,
    family,
    stage_of,
)

VIT_BLOCKS = [("stem", "stem"), ("blocks.0.attn", "msa"), ("blocks.0.mlp", "mlp"),
              ("blocks.1.attn", "msa"), ("blocks.1.mlp", "mlp")]
CNN_BLOCKS = [("stem", "stem"), ("stages.0.blocks.0", "conv"), ("stages.0.blocks.1", "conv"),
              ("stages.0.blocks.2", "conv")]


def _run(model: str, fraction: float, epoch: int) -> dict:
    """The columns `with_training` adds, for one checkpoint of one training run."""
    return {"model": model, "train_fraction": fraction, "epoch": epoch,
            "train_unit": f"{model}-{fraction}", "checkpoint": f"{model}-{fraction}-{epoch}"}


def _per_block(model: str, blocks: list, values: list, column: str, **extra) -> list[dict]:
    return [{**_run(model, 1.0, 13), "block_index": i, "block_name": name, "block_kind": kind,
             column: v, **extra} for i, ((name, kind), v) in enumerate(zip(blocks, values))]


def synthetic(holds: bool) -> dict[str, pd.DataFrame]:
    """Result frames of a ViT and a ResNet in which every claim holds (or every one fails)."""
    s = 1.0 if holds else -1.0
    vit, cnn = ("vit_ti", "preact_resnet18") if holds else ("preact_resnet18", "vit_ti")

    # Hessian at the end of warmup (epoch 1): ViT half negative, ResNet large positive; on
    # 25% data ViT is more negative still. Final epochs (13) say the opposite: never used.
    # Flipped: ViT less negative on less data, ResNet more negative and less sharp.
    warmup = ([("vit_ti", 1.0, [-5, -3, 2, 4]), ("vit_ti", 0.25, [-5, -3, -2, 4]),
               ("preact_resnet18", 1.0, [10, 20, 30, -1]),
               ("preact_resnet18", 0.25, [10, 20, 30, -1])] if holds else
              [("vit_ti", 1.0, [-5, -3, -2, 4]), ("vit_ti", 0.25, [-5, 2, 3, 4]),
               ("preact_resnet18", 1.0, [-1, -2, -3, -4, 1]),
               ("preact_resnet18", 0.25, [-1, -2, -3, -4, 1])])
    hess = []
    for model, frac, values in warmup:
        hess += [{**_run(model, frac, 1), "quantity": "eigenvalue", "value": float(v)}
                 for v in values]
        final = [-9, -9, -9, 1] if (model == "vit_ti") != holds else [50, 60, 70, 80]
        hess += [{**_run(model, frac, 13), "quantity": "eigenvalue", "value": float(v)}
                 for v in final]

    # 2D landscapes: objective k(a² + b²), ViT flatter (k = 1) than ResNet (k = 4).
    land = []
    for model, k in [(vit, 1.0), (cnn, 4.0)]:
        for (ia, a), (ib, b) in itertools.product(enumerate(np.linspace(-1, 1, 5)), repeat=2):
            land.append({**_run(model, 1.0, 13), "kind": "grid", "directions": "random",
                         "dims": 2, "a": a, "b": b, "objective": k * (a * a + b * b),
                         "nll": k * (a * a + b * b), "acc": 0.9})

    # Fourier at π: MSAs lower Δ log amplitude, Convs raise it (flipped: the reverse).
    fourier = (_per_block("vit_ti", VIT_BLOCKS, [-2, -2 - s, -2.2 - s, -2.2 - 2 * s,
                                                  -2.1 - 2 * s], "delta_log_amplitude",
                          is_max_frequency=True)
               + _per_block("preact_resnet18", CNN_BLOCKS, [-6, -6 + 2 * s, -6 + 3 * s,
                                                            -6 + 4 * s], "delta_log_amplitude",
                            is_max_frequency=True))
    # Feature-map variance: MSAs divide it by 2, Convs multiply it by 2, MLPs by 1.5 and 4/3.
    f = 2.0 if holds else 0.5
    featvar = (_per_block("vit_ti", VIT_BLOCKS, [1, 1 / f, 1.5 / f, 1.5 / f ** 2, 2 / f ** 2],
                          "variance", definition="spatial")
               + _per_block("preact_resnet18", CNN_BLOCKS, [1, f, f ** 2, f ** 3], "variance",
                            definition="spatial"))
    # Lesions: the last MSA and the first Conv of the stage cost the most (flipped: reverse).
    msa_drops = [0.01, 0.1] if holds else [0.1, 0.01]
    conv_drops = [0.2, 0.05, 0.01] if holds else [0.01, 0.05, 0.2]
    lesion = ([r for r in _per_block("vit_ti", VIT_BLOCKS[1:], [msa_drops[0], 0.0,
                                                                msa_drops[1], 0.0], "acc_drop")]
              + _per_block("preact_resnet18", CNN_BLOCKS[1:], conv_drops, "acc_drop"))
    # Frequency noise: ViT loses 15% at low and 4% at high frequencies, ResNet the reverse.
    freq = []
    for f_pi in np.round(np.arange(0.0, 1.01, 0.1), 1):
        low = 0.1 <= f_pi <= 0.5
        freq.append({**_run(vit, 1.0, 13), "frequency": f_pi, "acc_drop": 0.15 if low else 0.04})
        freq.append({**_run(cnn, 1.0, 13), "frequency": f_pi, "acc_drop": 0.02 if low else 0.15})
    # Corruptions: ResNet 65%, ViT 52%. Evaluate: ViT loses 30 points on 25% data, ResNet 5.
    corr = [{**_run(cnn, 1.0, 13), "acc": 0.65}, {**_run(vit, 1.0, 13), "acc": 0.52}]
    ev = [{**_run(vit, 1.0, 13), "quantity": "metrics", "acc": 0.9},
          {**_run(vit, 0.25, 13), "quantity": "metrics", "acc": 0.6},
          {**_run(cnn, 1.0, 13), "quantity": "metrics", "acc": 0.95},
          {**_run(cnn, 0.25, 13), "quantity": "metrics", "acc": 0.9},
          {**_run(cnn, 0.25, 1), "quantity": "metrics", "acc": 0.1}]  # not final: ignored
    frames = {"hessian": hess, "landscape": land, "fourier": fourier, "featvar": featvar,
              "lesion": lesion, "freqnoise": freq, "corruption": corr, "evaluate": ev}
    return {k: pd.DataFrame(v) for k, v in frames.items()}


def test_every_claim_is_supported_where_the_numbers_go_the_papers_way():
    verdicts = check_claims(synthetic(holds=True))
    assert len(verdicts) == len(CHECKS) >= 14
    wrong = [(v.claim, v.evidence) for v in verdicts if v.verdict != SUPPORTED]
    assert not wrong


def test_every_claim_is_not_supported_where_the_numbers_go_the_other_way():
    wrong = [(v.claim, v.evidence) for v in check_claims(synthetic(holds=False))
             if v.verdict != NOT_SUPPORTED]
    assert not wrong


def test_evidence_carries_the_numbers_computed_from_the_rows():
    table = claims_table(synthetic(holds=True)).set_index("claim")
    ev = table["evidence"]
    nep = ev[ev.index.str.startswith("ViTs have negative")].iloc[0]
    # end of warmup, 100% data: ViT [-5, -3, 2, 4] -> 0.5; ResNet [10, 20, 30, -1] -> 0.25
    assert nep == "NEP ViT 0.5 vs ResNet 0.25 (100% data)"
    ape = ev[ev.index.str.startswith("ResNets are sharper")].iloc[0]
    assert ape == "APE ViT 3 vs ResNet 20 (100% data)"
    data = ev[ev.index.str.startswith("Large data")].iloc[0]
    assert data == "ViT NEP 0.75 on 25% data vs 0.5 on 100%"
    needs = ev[ev.index.str.startswith("ViTs need more data")].iloc[0]
    assert needs == "accuracy lost from 100% to 25% data: ViT 30.0% vs ResNet 5.0%"
    corr = ev[ev.index.str.startswith("On CIFAR-scale")].iloc[0]
    assert corr == ("robustness (mean accuracy over corruptions): ViT 52.0% vs ResNet 65.0% "
                    "(100% data)")
    msa = ev[ev.index.str.startswith("MSAs are low-pass")].iloc[0]
    assert msa.startswith("an MSA block changes Δ log amplitude at π by -1 on average (2 blocks)")
    var = ev[ev.index.str.startswith("MSAs reduce")].iloc[0]
    assert "by 0.500 on average (2 blocks)" in var
    up = ev[ev.index.str.startswith("Convs and MLPs")].iloc[0]
    assert up == ("feature-map variance: a Conv block × 2.000 (3 blocks); "
                  "an MLP block × 1.414 (2 blocks)")  # MLPs: √(1.5 · 4/3)
    lesion = ev[ev.index.str.startswith("MSAs at the end")].iloc[0]
    assert lesion.startswith("the last msa block of its stage hurts most in 1 of 1 stages")
    assert "vit_ti blocks.1.attn −10.0%" in lesion
    # landscape k(a²+b²) on a 5-point grid: points within radius 0.5 are (0,0), (±.5,0), (0,±.5)
    rise = ev[ev.index.str.startswith("ViT's loss landscape")].iloc[0]
    assert rise == "mean rise of the loss within radius 0.5: ViT 0.2 vs ResNet 0.8 (100% data)"


def test_missing_rows_say_not_measured_and_name_the_sweep():
    verdicts = check_claims({})
    assert all(v.verdict == NOT_MEASURED for v in verdicts)
    hess = verdicts[0]
    assert hess.evidence == ("no hessian rows; measure with demo_hessian (digits) or "
                             "paper_hessian (CIFAR-100)")


def test_one_family_or_one_data_size_is_not_measured():
    frames = synthetic(holds=True)
    only_vit = {k: v[v["model"] == "vit_ti"] for k, v in frames.items()}
    by_claim = {v.claim: v for v in check_claims(only_vit)}
    nep = next(v for c, v in by_claim.items() if c.startswith("ViTs have negative"))
    assert nep.verdict == NOT_MEASURED and nep.evidence.startswith("no ResNet rows")
    full_data = {k: v[v["train_fraction"] == 1.0] for k, v in frames.items()}
    data = next(v for v in check_claims(full_data) if v.claim.startswith("Large data"))
    assert data.verdict == NOT_MEASURED
    assert data.evidence.startswith("ViT rows of one training-data size only")


def test_hessian_claims_use_the_end_of_warmup_not_the_final_checkpoint():
    frames = synthetic(holds=True)
    warmup_dropped = dict(frames, hessian=frames["hessian"][frames["hessian"]["epoch"] == 13])
    nep = check_claims(warmup_dropped)[0]
    # only epoch 13 left: ViT all positive, ResNet mostly negative -> the other way
    assert nep.verdict == NOT_SUPPORTED and nep.evidence.startswith("NEP ViT 0 vs ResNet 0.75")


def test_family_and_stage_names():
    assert [family(m) for m in ("vit_ti", "pit_ti", "swin_ti", "timm:deit_tiny_patch16_224",
                                "resnet50", "preact_resnet18", "wrn28_10", "vgg16",
                                "alternet", "mixer")] == [
        "ViT", None, None, "ViT", "ResNet", "ResNet", "ResNet", None, None, None]
    assert stage_of("layer1.0") == "layer1"
    assert stage_of("stages.2.blocks.1") == "stages.2.blocks"
    assert stage_of("blocks.3.attn") == "blocks"
    assert stage_of("stem") == "stem"


def test_block_changes_are_differences_to_the_previous_block_per_model():
    df = pd.DataFrame(_per_block("vit_ti", VIT_BLOCKS, [1.0, 3.0, 2.0, 6.0, 6.5], "v")
                      + _per_block("preact_resnet18", CNN_BLOCKS, [10.0, 5.0, 5.0, 0.0], "v"))
    out = block_changes(df, "v")
    assert out.sort_values(["model", "block_index"])["change"].tolist() == pytest.approx(
        [-5.0, 0.0, -5.0, 2.0, -1.0, 4.0, 0.5])
    logs = block_changes(df[df["model"] == "vit_ti"], "v", log=True)
    assert logs["change"].tolist() == pytest.approx(np.diff(np.log([1, 3, 2, 6, 6.5])))


def test_every_figure_of_the_report_has_a_line_on_how_to_read_it():
    import re
    from pathlib import Path

    import harness.report.html as page
    from harness.report.guide import how_to_read

    source = Path(page.__file__).read_text()
    names = re.findall(r'report\.figure\(sec, f?"(\w+?)(?:_\{i\})?"', source)
    assert len(names) >= 15
    assert all(how_to_read(n) for n in names)
    assert how_to_read("landscape_contour_3") == how_to_read("landscape_contour")
    with pytest.raises(KeyError):
        how_to_read("a_figure_nobody_explained")
