"""Classification metrics for the `evaluate` task: accuracy, NLL, calibration.

Everything is vectorized over samples (one pass of bincount for the binning),
so a whole test set's logits can be passed at once. There is exactly one
binning implementation (`reliability_bins`); the ECE is computed from it, so
the reliability diagram and the ECE can never disagree.

`calibration_metrics` gives the full set the original code reports
(xxxnell/how-do-vits-work, `ops/tests.py` `test()` and its helpers, cited by
line below): Acc, NLL, top-5, Brier, ECE, signed ECE, Acc-90, Unc-90, Freq-90,
IoU, IoU-90. Where the original's definition is a number it is reproduced;
deliberate differences (all documented on the functions):

- every ratio with an empty denominator is NaN (the original returns 0 via
  `np.divide(..., where=den != 0)` or a `+ 1e-7` in the denominator, so an
  empty subset looks like "0 % accurate"); without empty subsets the `1e-7`
  terms are the only difference, ≤ 1e-7 relative;
- NLL is the mean over samples; the original averages per-batch means
  (`AverageMeter.update` with one scalar per batch, ops/tests.py:70 and
  ops/meters.py:31-42), which weights a short last batch like a full one;
- a bin's mean confidence uses the bin's own samples (b/n, (b+1)/n]; the
  original sums confidences over [b/n, (b+1)/n) (ops/tests.py:81-83) but
  counts and scores samples over (b/n, (b+1)/n] (ops/tests.py:80, 245), so a
  confidence of exactly 1.0 — common for float32 softmax — is counted in the
  last bin without its confidence;
- probabilities and comparisons are float64 (the original: float32 softmax).
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = [
    "CONFIDENT",
    "bin_index",
    "calibration_errors",
    "calibration_metrics",
    "classification_metrics",
    "confusion_matrix",
    "expected_calibration_error",
    "mean_iou",
    "reliability_bins",
]

#: The confidence cutoff of Acc-90 / Unc-90 / Freq-90 / IoU-90 (the original's `cutoffs=(0.0, 0.9)`).
CONFIDENT = 0.9


def _as_f64(values: Any) -> torch.Tensor:
    return torch.as_tensor(values).detach().to("cpu", torch.float64).reshape(-1)


def bin_index(confidences: Any, n_bins: int = 10) -> torch.Tensor:
    """Bin of each confidence for `n_bins` equal-width bins over [0, 1].

    Convention (Guo et al. 2017; how-do-vits-work): bin b holds confidences in
    the half-open interval (b/n, (b+1)/n], i.e. a confidence exactly on an edge
    belongs to the bin *below* it; a confidence of exactly 0 goes to bin 0.
    Edges and confidences are compared in float64.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    conf = _as_f64(confidences)
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64)
    # searchsorted(right=False) gives the first edge >= conf: for conf in (e_b, e_{b+1}] that is b+1
    idx = torch.searchsorted(edges, conf, right=False) - 1
    return idx.clamp_(0, n_bins - 1)


def reliability_bins(confidences: Any, correct: Any, n_bins: int = 10) -> list[dict]:
    """Per-bin count, accuracy and mean confidence (a reliability diagram).

    Returns `n_bins` dicts with keys lower, upper, count, accuracy, confidence
    (accuracy and confidence are NaN for an empty bin). Binning as in
    `bin_index`.
    """
    conf = _as_f64(confidences)
    corr = _as_f64(correct)
    if conf.shape != corr.shape:
        raise ValueError(f"confidences {tuple(conf.shape)} and correct {tuple(corr.shape)} differ in size")
    idx = bin_index(conf, n_bins)
    count = torch.bincount(idx, minlength=n_bins).to(torch.float64)
    sum_corr = torch.bincount(idx, weights=corr, minlength=n_bins)
    sum_conf = torch.bincount(idx, weights=conf, minlength=n_bins)
    bins = []
    for b in range(n_bins):
        n = int(count[b])
        bins.append(
            {
                "lower": b / n_bins,
                "upper": (b + 1) / n_bins,
                "count": n,
                "accuracy": float(sum_corr[b] / n) if n else math.nan,
                "confidence": float(sum_conf[b] / n) if n else math.nan,
            }
        )
    return bins


def calibration_errors(bins: list[dict]) -> tuple[float, float]:
    """(ECE, signed ECE) of `reliability_bins` output.

    ECE = Σ_b (n_b / N) |acc_b − conf_b| (ops/tests.py:313-319) and signed ECE
    = Σ_b (n_b / N) (conf_b − acc_b) (ops/tests.py:322-328; > 0: over-confident).
    Empty bins contribute nothing; zero samples raise.
    """
    total = sum(b["count"] for b in bins)
    if total == 0:
        raise ValueError("calibration error of zero samples")
    full = [b for b in bins if b["count"]]
    ece = sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in full)
    signed = sum(b["count"] / total * (b["confidence"] - b["accuracy"]) for b in full)
    return float(ece), float(signed)


def expected_calibration_error(confidences: Any, correct: Any, n_bins: int = 10) -> float:
    """ECE = sum_b (n_b / N) * |acc_b - conf_b| over equal-width bins.

    `confidences` is the max softmax probability per sample, `correct` whether
    the prediction was right (bool or 0/1). Bins: (b/n, (b+1)/n], with 0 in the
    first bin (Guo et al. 2017); empty bins contribute nothing.
    """
    return calibration_errors(reliability_bins(confidences, correct, n_bins))[0]


def _log_probs(logits: torch.Tensor, labels: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated float64 log-softmax (N, C) on the CPU and int64 labels (N,)."""
    if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"expected logits (N, C) and labels (N,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    if logits.shape[0] == 0:
        raise ValueError(f"{what} of zero samples")
    labels = labels.detach().to("cpu", torch.long)
    num_classes = logits.shape[1]
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]")
    return torch.log_softmax(logits.detach().to("cpu", torch.float64), dim=1), labels


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 10) -> dict[str, float]:
    """Accuracy, mean NLL and ECE of `logits` (N, C) against integer `labels` (N,).

    NLL is computed from log_softmax in float64 so that near-certain wrong
    predictions of a float32/bf16 model do not round to inf or lose digits.
    The cheap subset of `calibration_metrics`, for per-epoch and per-grid-point use.
    """
    logp, labels = _log_probs(logits, labels, "classification_metrics")
    nll = -logp.gather(1, labels[:, None]).mean()
    log_conf, pred = logp.max(dim=1)
    correct = pred == labels
    return {
        "acc": float(correct.to(torch.float64).mean()),
        "nll": float(nll),
        "ece": expected_calibration_error(log_conf.exp(), correct, n_bins),
    }


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int,
                     keep: torch.Tensor | None = None) -> torch.Tensor:
    """(C, C) int64 counts, row = true class, column = predicted class, of the samples in `keep`.

    The original's `cm` (ops/tests.py:231-251): one bincount of C·y + ŷ.
    """
    labels = labels.reshape(-1).to(torch.long)
    predictions = predictions.reshape(-1).to(torch.long)
    if keep is not None:
        labels, predictions = labels[keep], predictions[keep]
    flat = torch.bincount(num_classes * labels + predictions, minlength=num_classes ** 2)
    return flat.reshape(num_classes, num_classes)


def mean_iou(cm: torch.Tensor) -> float:
    """Class-mean intersection over union of a confusion matrix.

    IoU_c = cm_cc / (row_c + col_c − cm_cc) (0 when that is 0), averaged over
    the classes that occur as true labels (row_c > 0) — ops/tests.py:254-273
    (`miou`, `ious`). No true label at all: NaN (the original: 0.0).
    """
    cm = cm.to(torch.float64)
    diag, rows, cols = cm.diagonal(), cm.sum(1), cm.sum(0)
    den = rows + cols - diag
    ious = torch.where(den > 0, diag / den.clamp(min=1), torch.zeros_like(diag))
    present = rows > 0
    return float(ious[present].mean()) if present.any() else math.nan


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def calibration_metrics(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 10,
                        cutoff: float = CONFIDENT) -> tuple[dict[str, float], list[dict]]:
    """The original's test metrics of `logits` (N, C) against `labels` (N,), and the reliability bins.

    Returns ({acc, nll, ece, signed_ece, brier, top5_acc, acc_90, unc_90,
    freq_90, iou, iou_90}, reliability_bins(...)). With p the softmax
    (float64), conf = max_c p, ŷ = argmax p, "confident" = conf > cutoff
    (the original's `cm(filter_min=0.9)`: 0.9 < conf ≤ 1, ops/tests.py:245):

    - acc: P(ŷ = y) — `gacc` of the all-sample matrix (ops/tests.py:88, 276-282)
    - nll: mean −log p_y (ops/tests.py:70; per-sample mean, see module notes)
    - top5_acc: P(y among the min(5, C) most probable classes) (ops/tests.py:225-228)
    - brier: mean Σ_c (onehot(y)_c − p_c)² (ops/tests.py:220-222)
    - ece, signed_ece: `calibration_errors` of `n_bins` equal-width bins
    - acc_90: P(ŷ = y | confident) — `gacc(cm_certain)` at cutoff 0.9
    - unc_90: P(not confident | ŷ ≠ y) — `unconfidence` (ops/tests.py:299-306)
    - freq_90: P(confident) — `frequency` (ops/tests.py:309-310)
    - iou, iou_90: `mean_iou` of all / of the confident predictions' matrix (ops/tests.py:89)

    Empty subsets (no confident prediction, no mistake) give NaN.
    """
    logp, labels = _log_probs(logits, labels, "calibration_metrics")
    n, num_classes = logp.shape
    probs = logp.exp()
    log_conf, pred = logp.max(dim=1)
    conf = log_conf.exp()
    correct = pred == labels
    confident = conf > cutoff
    wrong = ~correct
    top = logp.topk(min(5, num_classes), dim=1).indices
    onehot = torch.nn.functional.one_hot(labels, num_classes).to(torch.float64)
    bins = reliability_bins(conf, correct, n_bins)
    ece, signed_ece = calibration_errors(bins)
    n_wrong = int(wrong.sum())
    metrics = {
        "acc": float(correct.to(torch.float64).mean()),
        "nll": float(-logp.gather(1, labels[:, None]).mean()),
        "ece": ece,
        "signed_ece": signed_ece,
        "brier": float(((onehot - probs) ** 2).sum(dim=1).mean()),
        "top5_acc": float((top == labels[:, None]).any(dim=1).to(torch.float64).mean()),
        "acc_90": _ratio(int((correct & confident).sum()), int(confident.sum())),
        "unc_90": _ratio(int((wrong & ~confident).sum()), n_wrong),
        "freq_90": int(confident.sum()) / n,
        "iou": mean_iou(confusion_matrix(labels, pred, num_classes)),
        "iou_90": mean_iou(confusion_matrix(labels, pred, num_classes, confident)),
    }
    return metrics, bins
