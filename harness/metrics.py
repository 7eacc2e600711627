"""Classification metrics for the `evaluate` task: accuracy, NLL, calibration.

Everything is vectorized over samples (one pass of bincount for the binning),
so a whole test set's logits can be passed at once. There is exactly one
binning implementation (`reliability_bins`); the ECE is computed from it, so
the reliability diagram and the ECE can never disagree.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["classification_metrics", "expected_calibration_error", "reliability_bins", "bin_index"]


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


def expected_calibration_error(confidences: Any, correct: Any, n_bins: int = 10) -> float:
    """ECE = sum_b (n_b / N) * |acc_b - conf_b| over equal-width bins.

    `confidences` is the max softmax probability per sample, `correct` whether
    the prediction was right (bool or 0/1). Bins: (b/n, (b+1)/n], with 0 in the
    first bin (Guo et al. 2017); empty bins contribute nothing.
    """
    bins = reliability_bins(confidences, correct, n_bins)
    total = sum(b["count"] for b in bins)
    if total == 0:
        raise ValueError("expected_calibration_error of zero samples")
    return float(
        sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"])
    )


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 10) -> dict[str, float]:
    """Accuracy, mean NLL and ECE of `logits` (N, C) against integer `labels` (N,).

    NLL is computed from log_softmax in float64 so that near-certain wrong
    predictions of a float32/bf16 model do not round to inf or lose digits.
    """
    if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"expected logits (N, C) and labels (N,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    if logits.shape[0] == 0:
        raise ValueError("classification_metrics of zero samples")
    logp = torch.log_softmax(logits.detach().to("cpu", torch.float64), dim=1)
    labels = labels.detach().to("cpu", torch.long)
    nll = -logp.gather(1, labels[:, None]).mean()
    log_conf, pred = logp.max(dim=1)
    correct = pred == labels
    return {
        "acc": float(correct.to(torch.float64).mean()),
        "nll": float(nll),
        "ece": expected_calibration_error(log_conf.exp(), correct, n_bins),
    }
