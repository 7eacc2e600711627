"""Evaluating a model on perturbed copies of its data: what the corruption and freqnoise tasks share.

Each batch is perturbed on the model's device just before the forward pass
(`predict_logits(..., perturb)`), so only the clean data and a seed need to exist
in memory; the perturbation is keyed by sample position, so it does not depend
on the batch size.

Perturbations act on pixels in [0, 1]: `to_pixels` undoes the dataset's
normalization (x · std + mean), `from_pixels` redoes it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from harness.data.datasets import Dataset, ImageFiles

__all__ = ["Perturb", "from_pixels", "predict_logits", "to_pixels"]

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


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device,
                   perturb: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
                   ) -> torch.Tensor:
    """Logits of `model` on `x` in batches, gathered on the CPU; an `ImageFiles` `x` (imagefolder)
    is streamed from disk, so memory holds a few batches, not the split.

    perturb(batch, ids), when given, changes each batch on the device just before the forward
    pass; ids are the samples' positions in `x` (0 … N−1), so a perturbation keyed by them
    is the same whatever the batch size.
    """
    out = []
    if isinstance(x, ImageFiles):  # streamed from disk by DataLoader workers
        batches = x.batches(batch_size, device)
    else:
        batches = (x[i:i + batch_size].to(device, non_blocking=True)
                   for i in range(0, len(x), batch_size))
    start = 0
    for batch in batches:
        if perturb is not None:
            ids = torch.arange(start, start + len(batch), dtype=torch.int64, device=device)
            batch = perturb(batch, ids)
        start += len(batch)
        out.append(model(batch).float().cpu())
    return torch.cat(out) if out else torch.empty(0)
