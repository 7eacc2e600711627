"""Metrics against hand-computed and independent references."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.analysis.metrics import (
    bin_index,
    calibration_metrics,
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
    for b, (lo, hi) in enumerate(itertools.pairwise(edges)):
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


# --------------------------------------------------------------------------- calibration_metrics

# Eight samples, four classes; no confidence on a bin edge or on the 0.9 cutoff.
CAL_PROBS = [
    [0.95, 0.03, 0.01, 0.01],  # y 0: right, conf .95, confident
    [0.02, 0.96, 0.01, 0.01],  # y 1: right, conf .96, confident
    [0.92, 0.04, 0.02, 0.02],  # y 2: wrong (pred 0), conf .92, confident
    [0.10, 0.62, 0.18, 0.10],  # y 1: right, conf .62
    [0.30, 0.20, 0.42, 0.08],  # y 3: wrong (pred 2), conf .42
    [0.05, 0.05, 0.85, 0.05],  # y 2: right, conf .85
    [0.25, 0.24, 0.19, 0.32],  # y 0: wrong (pred 3), conf .32
    [0.01, 0.01, 0.01, 0.97],  # y 3: right, conf .97, confident
]
CAL_LABELS = [0, 1, 2, 1, 3, 2, 0, 3]


def _logits_of(probs, seed: int = 0) -> torch.Tensor:
    """Logits whose softmax is exactly `probs` (log-probabilities plus a per-row shift)."""
    p = torch.tensor(probs, dtype=torch.float64)
    shift = torch.randn(len(probs), 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return p.log() + 5 * shift


def test_calibration_metrics_hand_example():
    m, bins = calibration_metrics(_logits_of(CAL_PROBS), torch.tensor(CAL_LABELS))
    assert m["acc"] == pytest.approx(5 / 8)
    hand_nll = -sum(math.log(v) for v in [0.95, 0.96, 0.02, 0.62, 0.08, 0.85, 0.25, 0.97]) / 8
    assert m["nll"] == pytest.approx(hand_nll, rel=1e-12)
    # confident = conf > .9: samples 1, 2, 3, 8; right among them: 1, 2, 8
    assert m["acc_90"] == pytest.approx(3 / 4)
    assert m["freq_90"] == pytest.approx(4 / 8)
    # wrong: 3, 5, 7; not confident among them: 5, 7
    assert m["unc_90"] == pytest.approx(2 / 3)
    # 4 classes: top-5 holds every class
    assert m["top5_acc"] == 1.0
    hand_brier = ((0.05 ** 2 + 0.03 ** 2 + 0.01 ** 2 + 0.01 ** 2)
                  + (0.02 ** 2 + 0.04 ** 2 + 0.01 ** 2 + 0.01 ** 2)
                  + (0.92 ** 2 + 0.04 ** 2 + 0.98 ** 2 + 0.02 ** 2)
                  + (0.10 ** 2 + 0.38 ** 2 + 0.18 ** 2 + 0.10 ** 2)
                  + (0.30 ** 2 + 0.20 ** 2 + 0.42 ** 2 + 0.92 ** 2)
                  + (0.05 ** 2 + 0.05 ** 2 + 0.15 ** 2 + 0.05 ** 2)
                  + (0.75 ** 2 + 0.24 ** 2 + 0.19 ** 2 + 0.32 ** 2)
                  + (0.01 ** 2 + 0.01 ** 2 + 0.01 ** 2 + 0.03 ** 2)) / 8
    assert m["brier"] == pytest.approx(hand_brier, rel=1e-12)
    # confusion matrix (row true, column predicted): rows [1,0,0,1] [0,2,0,0] [1,0,1,0] [0,0,1,1];
    # every row and column sums to 2 -> IoU = 1/3, 1, 1/3, 1/3
    assert m["iou"] == pytest.approx((1 / 3 + 1 + 1 / 3 + 1 / 3) / 4)
    # confident only: rows [1,0,0,0] [0,1,0,0] [1,0,0,0] [0,0,0,1]; columns 2, 1, 0, 1
    # IoU = 1/(1+2-1), 1/1, 0/(1+0-0), 1/1
    assert m["iou_90"] == pytest.approx((0.5 + 1 + 0 + 1) / 4)
    # 10 bins: .32 wrong (b3), .42 wrong (b4), .62 right (b6), .85 right (b8),
    # {.95, .96, .97 right, .92 wrong} (b9): acc .75, conf .95
    assert [b["count"] for b in bins] == [0, 0, 0, 1, 1, 0, 1, 0, 1, 4]
    assert bins[9]["accuracy"] == pytest.approx(0.75) and bins[9]["confidence"] == pytest.approx(0.95)
    assert m["ece"] == pytest.approx((0.32 + 0.42 + 0.38 + 0.15 + 4 * 0.20) / 8, abs=1e-12)
    assert m["signed_ece"] == pytest.approx((0.32 + 0.42 - 0.38 - 0.15 + 4 * 0.20) / 8, abs=1e-12)
    # the cheap subset agrees
    cheap = classification_metrics(_logits_of(CAL_PROBS), torch.tensor(CAL_LABELS))
    assert cheap == pytest.approx({k: m[k] for k in ("acc", "nll", "ece")}, rel=1e-12)


def test_top5_hand_example():
    # 7 classes; the label's rank: 1st, 5th, 6th, 7th
    probs = [[0.40, 0.20, 0.15, 0.10, 0.07, 0.05, 0.03],
             [0.40, 0.20, 0.15, 0.10, 0.07, 0.05, 0.03],
             [0.40, 0.20, 0.15, 0.10, 0.07, 0.05, 0.03],
             [0.40, 0.20, 0.15, 0.10, 0.07, 0.05, 0.03]]
    m, _ = calibration_metrics(_logits_of(probs), torch.tensor([0, 4, 5, 6]))
    assert m["top5_acc"] == pytest.approx(2 / 4)
    assert m["acc"] == pytest.approx(1 / 4)


def test_empty_subsets_are_nan_not_a_crash():
    # nothing above .9 and nothing wrong: acc_90, iou_90 and unc_90 have no samples
    probs = [[0.6, 0.4], [0.3, 0.7]]
    m, bins = calibration_metrics(_logits_of(probs), torch.tensor([0, 1]))
    assert math.isnan(m["acc_90"]) and math.isnan(m["iou_90"]) and math.isnan(m["unc_90"])
    assert m["freq_90"] == 0.0 and m["acc"] == 1.0 and m["iou"] == 1.0
    assert sum(b["count"] for b in bins) == 2


def _miscalibrated_logits(num_classes: int, conf: float) -> torch.Tensor:
    """One row of logits whose softmax has max probability `conf` at class 0."""
    row = torch.zeros(num_classes, dtype=torch.float64)
    row[0] = math.log(conf * (num_classes - 1) / (1 - conf))
    return row


def test_known_miscalibrated_predictor_equals_hand_computation():
    # 100 predictions at confidence .95, 70 right; 50 at .55, 40 right (10 classes)
    rows, labels = [], []
    for conf, n, right in [(0.95, 100, 70), (0.55, 50, 40)]:
        rows += [_miscalibrated_logits(10, conf)] * n
        labels += [0] * right + [3] * (n - right)
    m, bins = calibration_metrics(torch.stack(rows), torch.tensor(labels))
    assert bins[9]["confidence"] == pytest.approx(0.95, abs=1e-12)
    # ECE = (100 |.7 - .95| + 50 |.8 - .55|) / 150, signed = (100 (.95 - .7) + 50 (.55 - .8)) / 150
    assert m["ece"] == pytest.approx((100 * 0.25 + 50 * 0.25) / 150, abs=1e-12)
    assert m["signed_ece"] == pytest.approx((100 * 0.25 - 50 * 0.25) / 150, abs=1e-12)
    assert m["acc_90"] == pytest.approx(0.7) and m["freq_90"] == pytest.approx(100 / 150)
    assert m["unc_90"] == pytest.approx(10 / 40)


def test_perfectly_calibrated_predictor_has_ece_near_zero():
    # confidence c ~ U(.1, 1) on 10 classes, right with probability exactly c
    rng = np.random.default_rng(3)
    n, num_classes = 200_000, 10
    conf = rng.uniform(0.1 + 1e-6, 1 - 1e-6, n)
    right = rng.uniform(size=n) < conf
    logits = torch.zeros(n, num_classes, dtype=torch.float64)
    logits[:, 0] = torch.from_numpy(np.log(conf * (num_classes - 1) / (1 - conf)))
    labels = torch.from_numpy(np.where(right, 0, 1 + rng.integers(0, num_classes - 1, n)))
    m, bins = calibration_metrics(logits, labels)
    # Sampling error: in bin b, acc_b - conf_b has standard deviation <= sqrt(.25 / n_b), so
    # E[ECE] <= sqrt(2/pi) * sum_b (n_b/N) sqrt(.25/n_b) (~0.0027 here: 9 bins of
    # ~22k samples); allow 3x that. The signed ECE's standard deviation is only sqrt(.25/N) ~ 0.001.
    tol = 3 * math.sqrt(2 / math.pi) * sum(b["count"] / n * math.sqrt(0.25 / b["count"])
                                           for b in bins if b["count"])
    assert tol < 0.009
    assert m["ece"] < tol and abs(m["signed_ece"]) < tol
    # the same machinery sees a miscalibration of the same size: right with probability c^2
    worse = torch.from_numpy(np.where(rng.uniform(size=n) < conf ** 2, 0, 1))
    assert calibration_metrics(logits, worse)[0]["ece"] > 10 * tol


def _original_test_metrics(probs: np.ndarray, ys: np.ndarray) -> dict[str, float]:
    """xxxnell/how-do-vits-work ops/tests.py test() on one batch, ported line for line (numpy)."""
    def cm(filter_min=0.0, filter_max=1.0):  # ops/tests.py:231-251
        c = probs.shape[1]
        confidence = np.amax(probs, axis=1)
        pred = np.argmax(probs, axis=1)
        k = (ys >= 0) & (ys < c) & (confidence > filter_min) & (confidence <= filter_max)
        return np.bincount(c * ys[k] + pred[k], minlength=c ** 2).reshape(c, c)

    def gacc(m):  # ops/tests.py:276-282
        return np.divide(np.diag(m).sum(), np.sum(m), out=np.zeros(()), where=np.sum(m) != 0).item()

    def miou(m):  # ops/tests.py:254-273
        num, den = np.diag(m), m.sum(1) + m.sum(0) - np.diag(m)
        ious = np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den != 0)
        w = (m.sum(1) > 0).astype(float)
        return np.average(ious, weights=w) if w.sum() > 0 else 0.0

    def inaccurate(m):
        return np.sum(m) - np.diag(m).sum()

    certain, uncertain = cm(filter_min=0.9), cm(filter_max=0.9)
    bins = np.linspace(0.0, 1.0, 11)
    confidence = np.amax(probs, axis=1)
    count_bin, acc_bin, conf_bin = [], [], []
    for start, end in itertools.pairwise(bins):  # ops/tests.py:79-94
        m = cm(filter_min=start, filter_max=end)
        cond = (confidence >= start) & (confidence < end)
        count_bin.append(np.sum(m))
        acc_bin.append(gacc(m))
        conf_bin.append(np.sum(confidence[cond]) / (np.sum(m) + 1e-7))
    count_bin, acc_bin, conf_bin = map(np.array, (count_bin, acc_bin, conf_bin))
    freq = np.nan_to_num(count_bin / (sum(count_bin) + 1e-7))
    onehot = np.eye(probs.shape[1])[ys]
    top = probs.argsort(axis=1)[:, -5:][:, ::-1]
    return {
        "acc": gacc(cm()), "acc_90": gacc(certain),
        "nll": float(np.mean(-np.log(probs[np.arange(len(ys)), ys]))),
        "unc_90": inaccurate(uncertain) / (inaccurate(certain) + inaccurate(uncertain) + 1e-7),
        "freq_90": np.sum(certain) / (np.sum(certain) + np.sum(uncertain) + 1e-7),
        "iou": miou(cm()), "iou_90": miou(certain),
        "top5_acc": float(np.logical_or.reduce(top == ys.reshape(-1, 1), axis=1).mean()),
        "brier": float(np.square(onehot - probs).sum(axis=1).mean()),
        "ece": float(np.sum(np.abs(acc_bin - conf_bin) * freq)),
        "signed_ece": float(np.sum((conf_bin - acc_bin) * freq)),
    }


def test_calibration_metrics_match_a_port_of_the_original_code():
    g = torch.Generator().manual_seed(7)
    n, num_classes = 3000, 12
    labels = torch.randint(0, num_classes, (n,), generator=g)
    # a model that is right often and confident sometimes (all subsets populated)
    logits = torch.randn(n, num_classes, generator=g, dtype=torch.float64) * 1.5
    logits[torch.arange(n), labels] += 8 * torch.rand(n, generator=g, dtype=torch.float64)
    ours, _ = calibration_metrics(logits, labels)
    ref = _original_test_metrics(torch.softmax(logits, 1).numpy(), labels.numpy())
    assert 0.1 < ref["freq_90"] < 0.9 and 0.1 < ref["acc"] < 0.95  # every subset is populated
    assert set(ours) == set(ref)
    for key in ref:  # the original's 1e-7 guards are the only difference
        assert ours[key] == pytest.approx(ref[key], rel=1e-6, abs=1e-6), key
