"""Evaluating a model on perturbed copies of its data: what the corruption and freqnoise tasks share.

Both tasks run one (model, perturbation) per unit, so a sweep over 75
corruption sets or 11 frequencies runs many units on the same model and data:
the model and the clean split come from the worker cache
(`harness.workload`), the clean metrics are computed once per worker
(`cached_clean_metrics`), and each batch is perturbed on the worker's device
just before the forward pass (`workload.predict_logits(..., perturb)`) —
nothing but the unit's params travels to the worker.

Perturbations act on pixels in [0, 1]: `to_pixels` undoes the dataset's
normalization (x · std + mean), `from_pixels` redoes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from harness.context import UnitContext
from harness.data import Dataset
from harness.metrics import classification_metrics
from harness.workload import predict_logits, unit_model_and_data

__all__ = ["Perturb", "cached_clean_metrics", "from_pixels", "to_pixels", "unit_samples"]

#: (x on the device, its (N,) int64 sample ids on the device) -> perturbed x, same shape.
Perturb = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _stats(data: Dataset, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(data.mean, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
    std = torch.tensor(data.std, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
    return mean, std


def to_pixels(x: torch.Tensor, data: Dataset) -> torch.Tensor:
    """Normalized inputs -> pixels in [0, 1] (clamped: float round-off may step outside)."""
    mean, std = _stats(data, x)
    return (x * std + mean).clamp_(0.0, 1.0)


def from_pixels(pixels: torch.Tensor, data: Dataset) -> torch.Tensor:
    """Pixels -> the normalized inputs the dataset's models expect."""
    mean, std = _stats(data, pixels)
    return (pixels - mean) / std


def unit_samples(ctx: UnitContext, p: dict[str, Any]) -> tuple[nn.Module, Dataset, int]:
    """The unit's model (eval mode), its clean split and how many samples (`max_samples`) to use."""
    model, data = unit_model_and_data(ctx, p)
    n = len(data) if p["max_samples"] == 0 else min(p["max_samples"], len(data))
    if n == 0:
        raise ValueError("no samples: the split is empty or max_samples selects none")
    return model, data, n


def cached_clean_metrics(ctx: UnitContext, p: dict[str, Any], model: nn.Module, data: Dataset,
                         n: int, varying: tuple[str, ...]) -> dict[str, float]:
    """acc, nll, ece of the unperturbed first `n` samples, once per worker for every unit whose
    params differ only in `varying` (the perturbation's own params)."""
    key = ("clean-metrics", {k: v for k, v in p.items() if k not in varying + ("batch_size",)})
    return ctx.cache.get(key, lambda: classification_metrics(
        predict_logits(model, data.x[:n], p["batch_size"], ctx.device), data.y[:n],
        p["ece_bins"]))
