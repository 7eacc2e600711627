"""Model and data as tasks get them: built once per worker, reused across units.

Every measurement task needs "this model, initialised with this seed, on this
data split": the cache keys live here so that two tasks (or two units) asking
for the same thing share one copy in a worker.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from harness.context import UnitContext
from harness.data import Dataset, load_dataset
from harness.models import build_model


def cached_dataset(ctx: UnitContext, name: str, split: str, data_fraction: float, seed: int,
                   dataset_args: dict[str, Any] | None = None) -> Dataset:
    """A dataset split (CPU tensors), shared by all units of the worker that use it."""
    args = dict(dataset_args or {})
    key = ("dataset", name, split, data_fraction, seed if data_fraction < 1 else None, args)
    return ctx.cache.get(key, lambda: load_dataset(name, split, data_fraction, seed, **args))


def cached_model(ctx: UnitContext, name: str, num_classes: int, seed: int,
                 model_args: dict[str, Any] | None = None) -> nn.Module:
    """A freshly initialised model (seeded by `seed`) on the unit's device, in eval mode."""
    args = dict(model_args or {})

    def build() -> nn.Module:
        torch.manual_seed(seed)
        return build_model(name, num_classes, **args).to(ctx.device).eval()

    return ctx.cache.get(("model", name, num_classes, seed, args), build)


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int,
                   device: torch.device) -> torch.Tensor:
    """Logits of `model` on `x` in batches, gathered on the CPU."""
    out = [model(x[i:i + batch_size].to(device, non_blocking=True)).float().cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0)
