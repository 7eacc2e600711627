"""Evaluating a model at grid points w0 + a·d1 + b·d2 of a loss landscape.

A grid is hundreds of full evaluations of the same model; what makes a point
cheap is that nothing but the perturbed weights changes between points:

- `Plane` keeps w0 and the directions as tensors on the model's device, built
  once per (checkpoint, directions) and cached by the worker; it holds no
  reference to the model, so a cached plane survives the model being rebuilt.
- `Plane.bound(model)` writes a point with three in-place multi-tensor ops
  (`torch._foreach_copy_` of w0, then `_foreach_add_` of a·d1 and b·d2):
  every point is computed from the saved w0, never from the previous point,
  so there is no drift, and on leaving (also on an error) w0 is copied back,
  bit-identical. No state dict is built, no module is copied.
- Each point is then measured on the fixed batches with `harness.analysis.objective`
  (the same NLL as the Hessian task) in eval mode; the logits are picked up
  by a forward hook for the ECE, so there is one forward pass per batch.

Norm layers use their running statistics; `bn_recompute` re-estimates them
at every point on the same batches (only the BatchNorm modules switch to
training mode, with a cumulative average), and the original statistics are
restored at the end. NaN or inf losses are recorded, never raised.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from harness.analysis.directions import Direction, describe
from harness.analysis.metrics import classification_metrics
from harness.analysis.objective import measure, norm_terms

Batches = list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


class Plane:
    """w0 and the direction tensors of one landscape, aligned for multi-tensor ops."""

    def __init__(self, model: nn.Module, axes: list[Direction],
                 info: dict[str, Any] | None = None) -> None:
        params = dict(model.named_parameters())
        unknown = [n for d in axes for n in d if n not in params]
        if unknown:
            raise ValueError(f"directions name parameters the model lacks: {unknown[:3]}")
        self.names = [n for n in params if any(n in d for d in axes)]
        self.w0 = [params[n].detach().clone() for n in self.names]
        position = {n: i for i, n in enumerate(self.names)}
        self.axis_index = [[position[n] for n in self.names if n in d] for d in axes]
        self.axis_dirs = [[d[n].to(params[n].device, params[n].dtype) for n in self.names if n in d]
                          for d in axes]
        self.info = {**describe(axes), **(info or {})}

    @property
    def dims(self) -> int:
        return len(self.axis_dirs)

    def distance(self, coords: Sequence[float]) -> float:
        """‖Σ c_k d_k‖ in weight space (from the stored norms and ⟨d1, d2⟩)."""
        norms = self.info["norms"]
        sq = sum((c * n) ** 2 for c, n in zip(coords, norms))
        if len(coords) == 2:
            sq += 2 * coords[0] * coords[1] * self.info["dot"]
        return math.sqrt(max(sq, 0.0))

    def matches(self, model: nn.Module) -> bool:
        """Whether `model` currently holds exactly this plane's w0."""
        named = dict(model.named_parameters())
        return all(n in named and torch.equal(named[n], w) for n, w in zip(self.names, self.w0))

    @contextmanager
    def bound(self, model: nn.Module) -> Iterator[Callable[[Sequence[float]], None]]:
        """A setter `set(coords)` writing w0 + Σ c_k d_k into `model`; w0 is back on exit.

        Refuses a model whose weights are not w0 (a plane built for other
        weights would silently measure the wrong surface).
        """
        if not self.matches(model):
            raise RuntimeError("the model's weights differ from the plane's w0: the plane "
                               "belongs to other weights")
        named = dict(model.named_parameters())
        params = [named[n] for n in self.names]
        groups = [[params[i] for i in index] for index in self.axis_index]

        @torch.no_grad()
        def set_point(coords: Sequence[float]) -> None:
            if len(coords) != self.dims:
                raise ValueError(f"{len(coords)} coordinates for a {self.dims}-D plane")
            torch._foreach_copy_(params, self.w0)
            for c, group, dirs in zip(coords, groups, self.axis_dirs):
                if c != 0.0:
                    torch._foreach_add_(group, dirs, alpha=float(c))

        try:
            yield set_point
        finally:
            with torch.no_grad():
                torch._foreach_copy_(params, self.w0)


def axis_values(value_range: Sequence[float], points: int) -> list[float]:
    """`points` evenly spaced coordinates from lo to hi, both included (numpy's linspace)."""
    lo, hi = float(value_range[0]), float(value_range[1])
    return [float(v) for v in np.linspace(lo, hi, points)]


def grid_points(a: list[float], b: list[float] | None = None
                ) -> list[tuple[int, int, int, tuple[float, ...]]]:
    """(point, ia, ib, coords) in row-major order: b outer, a inner (as the original's meshgrid)."""
    if b is None:
        return [(i, i, 0, (x,)) for i, x in enumerate(a)]
    return [(j * len(a) + i, i, j, (x, y)) for j, y in enumerate(b) for i, x in enumerate(a)]


class BatchNormReestimator:
    """Re-estimates BatchNorm running statistics on the fixed batches; restores the originals."""

    def __init__(self, model: nn.Module) -> None:
        self.modules = [m for m in model.modules()
                        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        self.saved = [{k: v.clone() for k, v in m.named_buffers(recurse=False)}
                      for m in self.modules]
        self.momenta = [m.momentum for m in self.modules]

    @torch.no_grad()
    def __call__(self, model: nn.Module, batches: Batches, device: torch.device) -> None:
        for m in self.modules:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches
            m.train()
        try:
            for x, _, _ in batches:
                model(x.to(device))
        finally:
            for m, momentum in zip(self.modules, self.momenta):
                m.momentum = momentum
                m.eval()

    @torch.no_grad()
    def restore(self) -> None:
        for m, saved in zip(self.modules, self.saved):
            for k, v in m.named_buffers(recurse=False):
                v.copy_(saved[k])


def point_metrics(model: nn.Module, batches: Batches, device: torch.device, weight_decay: float,
                  penalty: str, ece_bins: int, captured: list[torch.Tensor],
                  penalty_names: Sequence[str] | None = None) -> dict[str, Any]:
    """nll, acc (objective.measure), ece, the norm terms and the objective at the current weights.

    `captured` is filled with the logits by a forward hook during `measure`; the
    norm terms cover `penalty_names` (None: every trainable tensor).
    """
    captured.clear()
    m = measure(model, batches, device)
    logits = torch.cat([t.float().cpu() for t in captured])
    labels = torch.cat([y for _, _, y in batches])
    ece = math.nan
    if bool(torch.isfinite(logits).all()):
        ece = classification_metrics(logits, labels, ece_bins)["ece"]
    terms = norm_terms(model, penalty_names)
    objective = m["nll"] + weight_decay * terms[penalty] if weight_decay else m["nll"]
    return {"nll": m["nll"], "acc": m["acc"], "ece": ece, **terms,
            "objective": objective, "finite": math.isfinite(objective),
            "n_samples": len(labels)}


def evaluate_points(model: nn.Module, plane: Plane, coords: Sequence[Sequence[float]],
                    batches: Batches, device: torch.device, weight_decay: float,
                    penalty: str = "l2", ece_bins: int = 10,
                    bn_recompute: bool = False,
                    penalty_names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Metrics at each coordinate tuple; the model leaves with exactly the weights it came with."""
    was_training = model.training
    model.eval()
    captured: list[torch.Tensor] = []
    hook = model.register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
    bn = BatchNormReestimator(model) if bn_recompute else None
    out = []
    try:
        with plane.bound(model) as set_point:
            for c in coords:
                set_point(c)
                if bn is not None:
                    bn(model, batches, device)
                out.append({**point_metrics(model, batches, device, weight_decay, penalty,
                                            ece_bins, captured, penalty_names),
                            "distance": plane.distance(c)})
    finally:
        hook.remove()
        if bn is not None:
            bn.restore()
        model.train(was_training)
    return out
