"""The training loop of the `train` task: optimizer, warmup + cosine schedule, one epoch.

Kept apart from the task so the benchmark (`benchmarks/bench_train.py`) times
exactly this code against a hand-written loop. Data live in memory as tensors;
each epoch draws its order and augmentations from one seeded generator, so a
run is deterministic on CPU for a seed.
"""

from __future__ import annotations

import fnmatch
import math
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.data.augment import AugmentConfig, augment_batch, soft_cross_entropy
from harness.data.datasets import Dataset


@dataclass(frozen=True)
class Recipe:
    """How a model is trained; stored in every checkpoint's sidecar.

    Defaults are the paper's CIFAR recipe (../shared/PAPER.md): AdamW, lr
    1.25e-4, weight decay 0.05, batch 96, 300 epochs after 5 warmup epochs,
    cosine schedule, gradient clipping at 5. Weight decay applies to weights
    in `decay_set` (`decay_names`): by default timm's convention, as timm's
    optimizer factory applies it (no biases, norm parameters, position
    embeddings, class tokens or relative-position tables).
    """

    epochs: int = 300
    warmup_epochs: int = 5
    batch_size: int = 96
    lr: float = 1.25e-4
    min_lr: float = 0.0
    weight_decay: float = 0.05
    optimizer: str = "adamw"
    momentum: float = 0.9
    schedule: str = "cosine"
    grad_clip: float = 5.0
    amp: bool = True
    decay_set: str = "timm"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Rules for the tensors weight decay covers. timm: timm's `param_groups_weight_decay`
#: (no tensor of <= 1 dim, no `.bias`, nothing the model's `no_weight_decay()` names);
#: ndim2: every tensor of >= 2 dims (this harness's rule before the recorded sets);
#: all: every trainable tensor.
DECAY_SETS = ("timm", "ndim2", "all")
#: The rule of a checkpoint whose recipe records none (trained before `decay_set` existed).
LEGACY_DECAY_SET = "ndim2"


def no_weight_decay_patterns(model: nn.Module) -> set[str]:
    """Names (fnmatch patterns) that a model's `no_weight_decay()` excludes from decay.

    timm asks the top module; a model nested in a wrapper is asked too, its names
    prefixed with its path, so a wrapped timm model keeps its exclusions.
    """
    patterns: set[str] = set()
    for prefix, module in model.named_modules():
        fn = getattr(module, "no_weight_decay", None)
        if callable(fn):
            patterns |= {f"{prefix}.{n}" if prefix else n for n in fn()}
    return patterns


def decay_names(model: nn.Module, rule: str) -> list[str]:
    """Trainable parameter names that weight decay covers under `rule` (see DECAY_SETS)."""
    if rule not in DECAY_SETS:
        raise ValueError(f"decay_set: unknown rule {rule!r}; allowed: {', '.join(DECAY_SETS)}")
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if rule == "all":
        return [n for n, _ in params]
    if rule == "ndim2":
        return [n for n, p in params if p.ndim >= 2]
    excluded = no_weight_decay_patterns(model)
    return [n for n, p in params if p.ndim > 1 and not n.endswith(".bias")
            and not any(fnmatch.fnmatch(n, pat) for pat in excluded)]


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimizer; weight decay only on `decay_names(model, recipe.decay_set)`."""
    chosen = set(decay_names(model, recipe.decay_set))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in named if n in chosen]
    no_decay = [p for n, p in named if n not in chosen]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=True)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; allowed: adamw, sgd")


def lr_at(step: int, steps_per_epoch: int, recipe: Recipe) -> float:
    """Linear warmup from 0, then cosine (or constant) decay to `min_lr`, per step."""
    warmup = recipe.warmup_epochs * steps_per_epoch
    total = (recipe.warmup_epochs + recipe.epochs) * steps_per_epoch
    if step < warmup:
        return recipe.lr * (step + 1) / warmup
    if recipe.schedule == "constant":
        return recipe.lr
    progress = (step - warmup) / max(1, total - warmup)
    return recipe.min_lr + 0.5 * (recipe.lr - recipe.min_lr) * (1 + math.cos(math.pi * progress))


def train_epoch(model: nn.Module, data: Dataset, optimizer: torch.optim.Optimizer,
                recipe: Recipe, augment: AugmentConfig, generator: torch.Generator,
                device: torch.device, step: int) -> dict[str, float]:
    """One pass over `data` in a seeded random order; returns loss, acc, lr, seconds, steps."""
    started = time.perf_counter()
    model.train()
    n = len(data)
    steps_per_epoch = math.ceil(n / recipe.batch_size)
    order = torch.randperm(n, generator=generator)
    use_amp = recipe.amp and device.type == "cuda"
    total_loss, correct, seen = 0.0, 0, 0
    lr = 0.0
    for i in range(steps_per_epoch):
        idx = order[i * recipe.batch_size:(i + 1) * recipe.batch_size]
        x = data.x[idx].to(device, non_blocking=True)
        y = data.y[idx].to(device, non_blocking=True)
        x, target = augment_batch(x, y, augment, data.num_classes, data.mean, data.std, generator)
        lr = lr_at(step, steps_per_epoch, recipe)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = model(x)
        loss = soft_cross_entropy(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if recipe.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        optimizer.step()
        step += 1
        total_loss += float(loss.detach()) * len(idx)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(idx)
    model.eval()
    return {"train_loss": total_loss / seen, "train_acc": correct / seen, "lr": lr,
            "seconds": time.perf_counter() - started, "steps": steps_per_epoch}


# --------------------------------------------------------------------------- resume state

#: Bumped when the layout of a resume state changes (an older state is then ignored).
RESUME_FORMAT = 1


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every RNG a training step can draw from: the unit's generator (order, augmentation), torch's
    global CPU and CUDA generators (dropout, drop-path), NumPy's and Python's global ones."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"generator": generator.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": random.getstate()}


def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])


def training_state(model: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator,
                   epoch: int, step: int, rows: list[dict[str, Any]], key: str,
                   scaler: torch.amp.GradScaler | None = None) -> dict[str, Any]:
    """All a run needs to continue after `epoch` exactly as if it had never stopped.

    Plain containers of tensors and numbers only, so it loads with
    `torch.load(weights_only=True)`. The learning rate is a function of `step`
    (`lr_at`), so the step is the schedule's state. `key` names the run (its
    unit id): a state with another key is not this run's.
    """
    return {"format": RESUME_FORMAT, "key": key, "epoch": epoch, "step": step,
            "rows": [dict(r) for r in rows],
            "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": _rng_state(generator)}


def restore_training_state(state: dict[str, Any], model: nn.Module,
                           optimizer: torch.optim.Optimizer, generator: torch.Generator,
                           scaler: torch.amp.GradScaler | None = None
                           ) -> tuple[int, int, list[dict[str, Any]]]:
    """Load a `training_state` into the run's objects; returns (epoch done, step, rows so far)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    _set_rng_state(state["rng"], generator)
    return int(state["epoch"]), int(state["step"]), [dict(r) for r in state["rows"]]
