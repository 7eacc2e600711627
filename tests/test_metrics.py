"""Metrics against hand-computed and independent references."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.metrics import (
    bin_index,
    classification_metrics,
    expected_calibration_error,
    reliability_bins,
)

# Six samples, three classes. Logits are log-probabilities plus an arbitrary
# per-row shift (softmax ignores it), so the softmax is exactly these rows.
PROBS = [
    [0.70, 0.20, 0.10],  # label 0: correct, conf 0.70
    [0.10, 0.65, 0.25],  # label 2: wrong,   conf 0.65
    [0.90, 0.05, 0.05],  # label 0: correct, conf 0.90
    [0.30, 0.45, 0.25],  # label 1: correct, conf 0.45
    [0.50, 0.30, 0.20],  # label 1: wrong,   conf 0.50
    [0.05, 0.10, 0.85],  # label 2: correct, conf 0.85
]
LABELS = [0, 2, 0, 1, 1, 2]


def _hand_logits() -> torch.Tensor:
    shifts = torch.tensor([[0.0], [3.0], [-2.0], [10.0], [0.5], [-7.0]], dtype=torch.float64)
    return torch.log(torch.tensor(PROBS, dtype=torch.float64)) + shifts


def test_hand_example_acc_nll_ece():
    m = classification_metrics(_hand_logits(), torch.tensor(LABELS), n_bins=5)
    # correct: samples 1, 3, 4, 6
    assert m["acc"] == pytest.approx(4 / 6)
    # NLL: -mean log p(label)
    hand_nll = -(math.log(0.70) + math.log(0.25) + math.log(0.90)
                 + math.log(0.45) + math.log(0.30) + math.log(0.85)) / 6
    assert m["nll"] == pytest.approx(hand_nll, rel=1e-12)
    # 5 bins: (0,.2] (.2,.4] (.4,.6] (.6,.8] (.8,1]
    # bin (.4,.6]: conf .45 (correct), .50 (wrong): acc .5, conf .475 -> |.5-.475| = .025
    # bin (.6,.8]: conf .70 (correct), .65 (wrong): acc .5, conf .675 -> .175
    # bin (.8,1]:  conf .90 (correct), .85 (correct): acc 1, conf .875 -> .125
    hand_ece = 2 / 6 * 0.025 + 2 / 6 * 0.175 + 2 / 6 * 0.125  # = 0.108333...
    assert m["ece"] == pytest.approx(hand_ece, abs=1e-12)
    assert hand_ece == pytest.approx(0.325 / 3)


def test_hand_example_reliability_bins():
    conf = torch.tensor([max(p) for p in PROBS], dtype=torch.float64)
    correct = torch.tensor([1, 0, 1, 1, 0, 1], dtype=torch.bool)
    bins = reliability_bins(conf, correct, n_bins=5)
    assert [b["count"] for b in bins] == [0, 0, 2, 2, 2]
    assert [b["lower"] for b in bins] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert [b["upper"] for b in bins] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert math.isnan(bins[0]["accuracy"]) and math.isnan(bins[0]["confidence"])
    assert bins[2]["accuracy"] == pytest.approx(0.5)
    assert bins[2]["confidence"] == pytest.approx(0.475)
    assert bins[4]["accuracy"] == pytest.approx(1.0)
    assert bins[4]["confidence"] == pytest.approx(0.875)


def test_nll_matches_torch_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(1000, 7, generator=g)
    labels = torch.randint(0, 7, (1000,), generator=g)
    m = classification_metrics(logits, labels)
    ref = F.cross_entropy(logits.double(), labels).item()
    assert m["nll"] == pytest.approx(ref, rel=1e-12)
    assert m["acc"] == pytest.approx((logits.argmax(1) == labels).double().mean().item())


def test_nll_float64_does_not_overflow():
    # A confidently wrong float32 prediction: loss 1000, finite.
    logits = torch.tensor([[1000.0, 0.0]], dtype=torch.float32)
    m = classification_metrics(logits, torch.tensor([1]))
    assert m["nll"] == pytest.approx(1000.0)
    assert m["acc"] == 0.0
    assert m["ece"] == pytest.approx(1.0)


def test_perfect_confident_and_correct_has_zero_ece():
    assert expected_calibration_error(torch.ones(50), torch.ones(50, dtype=torch.bool)) == 0.0
    logits = torch.tensor([[200.0, 0.0, 0.0], [0.0, 200.0, 0.0], [0.0, 0.0, 200.0]])
    m = classification_metrics(logits, torch.tensor([0, 1, 2]))
    assert m == {"acc": 1.0, "nll": pytest.approx(0.0, abs=1e-80), "ece": pytest.approx(0.0, abs=1e-80)}


def test_bin_boundary_convention():
    # 4 bins with edges 0, .25, .5, .75, 1 (all exactly representable).
    # Convention: bin b = (b/4, (b+1)/4]; an edge goes to the bin BELOW; 0 goes to bin 0.
    conf = torch.tensor([0.5, 0.25, 0.0, 1.0, 0.75])
    assert bin_index(conf, 4).tolist() == [1, 0, 0, 3, 2]
    correct = torch.tensor([1, 0, 1, 1, 0])
    bins = reliability_bins(conf, correct, 4)
    assert [b["count"] for b in bins] == [2, 1, 1, 1]
    # bin0 {.25 wrong, 0 right}: acc .5, conf .125 -> .375 * 2/5
    # bin1 {.5 right}:           |1 - .5|  = .5   * 1/5
    # bin2 {.75 wrong}:          |0 - .75| = .75  * 1/5
    # bin3 {1.0 right}:          0
    hand = 0.375 * 2 / 5 + 0.5 / 5 + 0.75 / 5
    assert expected_calibration_error(conf, correct, 4) == pytest.approx(hand, abs=1e-15)
    # The other convention, [b/4, (b+1)/4), would give a different number:
    # bins {0 right}, {.25 wrong}, {.5 right}, {.75 wrong, 1.0 right (clamped into the last bin)}
    other = 1.0 / 5 + 0.25 / 5 + 0.5 / 5 + abs(0.5 - 0.875) * 2 / 5
    assert hand != pytest.approx(other)


def test_ece_matches_independent_loop_reference_on_large_input():
    rng = np.random.default_rng(1)
    conf = rng.uniform(0.0, 1.0, 200_000)
    correct = rng.uniform(size=conf.size) < conf ** 0.8
    edges = np.linspace(0.0, 1.0, 16)
    ref = 0.0
    for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        mask = (conf > lo) & (conf <= hi) if b else (conf >= lo) & (conf <= hi)
        if mask.any():
            ref += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    assert expected_calibration_error(conf, correct, 15) == pytest.approx(ref, rel=1e-9)
    assert expected_calibration_error(torch.from_numpy(conf).float(), torch.from_numpy(correct), 15) == pytest.approx(ref, abs=1e-4)


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        classification_metrics(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError):
        reliability_bins(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError):
        bin_index(torch.zeros(3), 0)
