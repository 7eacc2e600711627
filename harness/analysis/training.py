"""The training loop of the `train` task: optimizer, warmup + cosine schedule, one epoch.

Kept apart from the task so the benchmark (`benchmarks/bench_train.py`) times
exactly this code against a hand-written loop. Data live in memory as tensors;
each epoch draws its order and augmentations from one seeded generator, so a
run is deterministic on CPU for a seed.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

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
    with two or more dimensions only (not biases or norm parameters), as timm's
    optimizer factory does.
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
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
