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

Which tensors the penalty covers (`penalty_set`): by default exactly those the
checkpoint's training decayed (the names its sidecar records; for a checkpoint
trained before they were recorded, its recipe's rule, `ndim2`; for a fresh model
or a foreign state dict, timm's convention). Otherwise a rule of
`harness.analysis.training.DECAY_SETS` by name (`all`: every trainable tensor, what this
harness measured before).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from harness.data.augment import augment_batch, augment_config, soft_cross_entropy
from harness.data.datasets import Dataset
from harness.analysis.training import DECAY_SETS, LEGACY_DECAY_SET, decay_names

PENALTIES = ("l2", "half_sq")
#: `trained`: the set the checkpoint's training decayed; else a rule of DECAY_SETS.
PENALTY_SETS = ("trained",) + DECAY_SETS
#: The weight decay assumed for a model that has no checkpoint recipe (the paper's).
DEFAULT_WEIGHT_DECAY = 0.05

@dataclass(frozen=True)
class PenaltySet:
    """The tensors the penalty covers: the rule that chose them and their names."""

    rule: str
    names: tuple[str, ...]

    def numel(self, model: nn.Module) -> int:
        """Scalars the penalty covers."""
        chosen = set(self.names)
        return sum(p.numel() for n, p in model.named_parameters() if n in chosen)


def penalty_set_rule(requested: str, checkpoint_meta: dict[str, Any] | None) -> str:
    """The rule behind a `penalty_set` param: itself, or for `trained` the checkpoint's.

    `trained` with a recipe that names no rule -> LEGACY_DECAY_SET (what training
    did then); with no recipe (a fresh model, a foreign state dict) -> timm's.
    """
    if requested != "trained":
        return requested
    recipe = (checkpoint_meta or {}).get("recipe")
    return recipe.get("decay_set", LEGACY_DECAY_SET) if recipe else "timm"


def penalty_set(model: nn.Module, requested: str, checkpoint_meta: dict[str, Any] | None
                ) -> PenaltySet:
    """The tensors of `model` the penalty covers (see the module docstring).

    A recorded set naming a tensor the model lacks is an error: the checkpoint
    and the model disagree, and a silently smaller penalty would be a wrong number.
    """
    rule = penalty_set_rule(requested, checkpoint_meta)
    recorded = (checkpoint_meta or {}).get("decayed_params") if requested == "trained" else None
    if recorded is None:
        return PenaltySet(rule, tuple(decay_names(model, rule)))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    missing = [n for n in recorded if n not in trainable]
    if missing:
        raise ValueError(f"penalty_set trained: the checkpoint's decayed_params name tensors the "
                         f"model lacks ({missing[:3]}); pick a rule (penalty_set: "
                         f"{' / '.join(DECAY_SETS)}) or the checkpoint's own model")
    return PenaltySet(rule, tuple(recorded))


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


def _covered(model: nn.Module, names: Sequence[str] | None) -> list[torch.Tensor]:
    """The trainable tensors named in `names` (all trainable ones for None)."""
    chosen = None if names is None else set(names)
    return [p for n, p in model.named_parameters()
            if p.requires_grad and (chosen is None or n in chosen)]


def norm_terms(model: nn.Module, names: Sequence[str] | None = None) -> dict[str, float]:
    """l1 = Σ|w|, l2 = Σ_tensors ‖w‖₂, half_sq = ½Σw² over the named trainable tensors (float64).

    `names`: the penalty set (`PenaltySet.names`); None: every trainable tensor.
    """
    l1 = l2 = sq = 0.0
    with torch.no_grad():
        for p in _covered(model, names):
            w = p.detach().double()
            l1 += float(w.abs().sum())
            n = float(w.norm())
            l2 += n
            sq += n * n
    return {"l1": l1, "l2": l2, "half_sq": 0.5 * sq}


def penalty_tensor(model: nn.Module, penalty: str, names: Sequence[str] | None = None
                   ) -> torch.Tensor:
    """The differentiable penalty term over the named tensors (None: all trainable ones)."""
    params = _covered(model, names)
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
                    penalty: str, names: Sequence[str] | None = None) -> torch.Tensor:
    """NLL (soft-target cross-entropy, batch mean) + weight_decay · penalty over `names`."""
    loss = soft_cross_entropy(model(x), soft)
    if weight_decay:
        loss = loss + weight_decay * penalty_tensor(model, penalty, names)
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
