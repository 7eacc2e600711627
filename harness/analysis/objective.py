"""The training objective as the paper measures it: "NLL + L2 on augmented data".

Loss landscapes and Hessian spectra must be taken on the objective the model
was trained on, not on the clean test loss (Park & Kim §2): the NLL of a
fixed, seeded set of *augmented* training batches plus the weight-decay term.
Both the landscape and the Hessian tasks use this module, so "the loss" means
the same thing in every table.

The data: `fixed_batches` draws a seeded subset of a split and augments it once
with a generator seeded per batch, so every grid point, every Lanczos
iteration and every worker sees exactly the same augmented images.

The penalty (users of the original code pointed out that the L2 term dominates
and that AdamW's decoupled decay is not an L2 penalty, so the terms are kept
apart and the form is a choice):
- `l2` — Σ over parameter tensors of ‖w‖₂ (not squared), what the original
  code records and plots as NLL + weight_decay · l2;
- `half_sq` — ½ Σ w², the penalty whose gradient is weight_decay · w;
- `l1` — Σ |w|, recorded for completeness.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from harness.data.augment import augment_batch, augment_config, soft_cross_entropy
from harness.data.datasets import Dataset

PENALTIES = ("l2", "half_sq")
#: The weight decay assumed for a model that has no checkpoint recipe (the paper's).
DEFAULT_WEIGHT_DECAY = 0.05

def fixed_batches(data: Dataset, num_samples: int, batch_size: int, augment: str,
                  augment_args: dict[str, Any], seed: int
                  ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(images, soft targets, labels) batches on the CPU: a seeded subset, augmented once.

    Batch k is augmented with a generator seeded from (seed, k), so the same
    params give the same batches in any process, in any order.
    """
    cfg = augment_config({"preset": augment, **augment_args})
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    chosen = order[:min(num_samples, len(data))]
    out = []
    for k, start in enumerate(range(0, len(chosen), batch_size)):
        idx = chosen[start:start + batch_size]
        gen = torch.Generator().manual_seed(seed * 1_000_003 + k)
        x, soft = augment_batch(data.x[idx], data.y[idx], cfg, data.num_classes, data.mean,
                                data.std, gen)
        out.append((x, soft, data.y[idx]))
    return out


def norm_terms(model: nn.Module) -> dict[str, float]:
    """l1 = Σ|w|, l2 = Σ_tensors ‖w‖₂, half_sq = ½Σw² over trainable parameters (float64)."""
    l1 = l2 = sq = 0.0
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                w = p.detach().double()
                l1 += float(w.abs().sum())
                n = float(w.norm())
                l2 += n
                sq += n * n
    return {"l1": l1, "l2": l2, "half_sq": 0.5 * sq}


def penalty_tensor(model: nn.Module, penalty: str) -> torch.Tensor:
    """The differentiable penalty term (for gradients and Hessian-vector products)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if penalty == "l2":
        return sum(p.norm() for p in params)
    if penalty == "half_sq":
        return 0.5 * sum((p * p).sum() for p in params)
    raise ValueError(f"unknown penalty {penalty!r}; allowed: {', '.join(PENALTIES)}")


def resolve_weight_decay(params: dict[str, Any], checkpoint_meta: dict[str, Any] | None) -> float:
    """The param if set (≥ 0), else the checkpoint recipe's weight decay, else the paper's."""
    if params["weight_decay"] >= 0:
        return float(params["weight_decay"])
    recipe = (checkpoint_meta or {}).get("recipe") or {}
    return float(recipe.get("weight_decay", DEFAULT_WEIGHT_DECAY))


def batch_objective(model: nn.Module, x: torch.Tensor, soft: torch.Tensor, weight_decay: float,
                    penalty: str) -> torch.Tensor:
    """NLL (soft-target cross-entropy, batch mean) + weight_decay · penalty, differentiable."""
    loss = soft_cross_entropy(model(x), soft)
    if weight_decay:
        loss = loss + weight_decay * penalty_tensor(model, penalty)
    return loss


@torch.no_grad()
def measure(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
            device: torch.device) -> dict[str, float]:
    """NLL (weighted by batch size) and accuracy of `model` on the fixed batches."""
    total, nll, correct = 0, 0.0, 0
    for x, soft, y in batches:
        logits = model(x.to(device)).float()
        nll += float(soft_cross_entropy(logits, soft.to(device))) * len(y)
        correct += int((logits.argmax(1).cpu() == y).sum())
        total += len(y)
    return {"nll": nll / total, "acc": correct / total}
