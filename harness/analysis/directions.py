"""Directions in weight space for loss landscapes: random, interpolation, PCA of a trajectory.

A direction is a dict `parameter name -> tensor` over the parameters it moves;
a parameter it leaves out does not move. Buffers (BN statistics, attention
masks, relative-position indices) are never part of a direction, and neither
are position embeddings and relative-position bias tables (`FIXED_KEYWORDS`):
moving them measures the token layout, not the loss surface of the weights.

Random directions (Li et al. 2018, "Visualizing the loss landscape of neural
nets") are Gaussian and rescaled against the weights w they start from, so
that a step of 1 changes every part of the network by as much as it weighs:

- `filter` (Li et al.): every filter (output channel, dim 0) of d gets the
  norm of the same filter of w: d[o] ← d[o] · ‖w[o]‖ / ‖d[o]‖.
- `filter_across` (what the original ViT code, how-do-vits-work, computes):
  the norm is taken *across* filters, over dim 0, for every input position
  (i, kh, kw): d[:, i] ← d[:, i] · ‖w[:, i]‖ / ‖d[:, i]‖. The tensor's total
  norm is ‖w‖ either way; but a filter with small weights gets as large a step
  as its neighbours, which is what filter normalization was meant to prevent.
- `layer`: the whole tensor: d ← d · ‖w‖ / ‖d‖.
- `none`: the raw Gaussian.

Tensors with fewer than two dims (biases, norm-layer affine parameters, layer
scales) get no direction unless `include_bias_norm` (then every entry is its
own filter: d_i = ±|w_i| under `filter`). The Gaussians are drawn for every
trainable tensor in `named_parameters()` order from a CPU generator seeded by
(seed, axis), whether the tensor is moved or not: every worker regenerates
the same directions from the seed and the model alone, and switching a tensor
group on or off leaves the others' directions unchanged.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch
from torch import nn

NORMALIZATIONS = ("filter", "filter_across", "layer", "none")
#: Parameter-name fragments that no random or PCA direction ever moves.
FIXED_KEYWORDS = ("pos_embed", "position_embedding", "relative_position", "rel_pos")
#: Added to ‖d‖ in the rescaling (as Li et al.), so an all-zero filter stays zero.
NORM_EPS = 1e-10

Direction = dict[str, torch.Tensor]


@dataclass
class DirectionSet:
    """The directions of one landscape (one per grid axis) and what describes them.

    info holds per-axis `norms` (‖d_k‖ over all tensors), `dot` (⟨d1, d2⟩),
    and for PCA `var_ratio` and the `trajectory` (snapshot path, epoch,
    coordinates, residual) projected on the plane.
    """

    axes: list[Direction]
    info: dict[str, Any] = field(default_factory=dict)


def direction_seed(seed: int, axis: int) -> int:
    """A 63-bit generator seed for (seed, axis), the same in every process."""
    digest = hashlib.sha256(f"landscape-direction:{seed}:{axis}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def is_fixed(name: str, exclude: Sequence[str] = ()) -> bool:
    """Whether a parameter is never perturbed (position tables, user exclusions)."""
    return any(k in name for k in (*FIXED_KEYWORDS, *exclude))


def perturbed_names(model: nn.Module, include_bias_norm: bool = False,
                    exclude: Sequence[str] = ()) -> list[str]:
    """Trainable parameters a random or PCA direction moves, in model order."""
    return [name for name, p in model.named_parameters()
            if p.requires_grad and not is_fixed(name, exclude)
            and (p.dim() >= 2 or include_bias_norm)]


def _as_filters(t: torch.Tensor) -> torch.Tensor:
    """(filters, rest) view: dim 0 indexes output channels; a 0-/1-dim tensor has one per entry."""
    return t.reshape(t.shape[0], -1) if t.dim() >= 1 else t.reshape(1, 1)


def normalize_direction(d: torch.Tensor, w: torch.Tensor, how: str) -> torch.Tensor:
    """d rescaled against w (see the module docstring); a new tensor, float32 math."""
    if how == "none":
        return d.clone()
    df, wf = _as_filters(d.float()), _as_filters(w.detach().float())
    if how == "filter":
        dims: tuple[int, ...] = (1,)
    elif how == "filter_across":
        dims = (0,)
    elif how == "layer":
        dims = (0, 1)
    else:
        raise ValueError(f"unknown normalization {how!r}; allowed: {', '.join(NORMALIZATIONS)}")
    scale = (torch.linalg.vector_norm(wf, dim=dims, keepdim=True)
             / (torch.linalg.vector_norm(df, dim=dims, keepdim=True) + NORM_EPS))
    return (df * scale).reshape(d.shape).to(d.dtype)


def random_direction(model: nn.Module, seed: int, axis: int, normalization: str = "filter",
                     include_bias_norm: bool = False, exclude: Sequence[str] = ()) -> Direction:
    """A seeded Gaussian direction over `perturbed_names`, normalized against the weights.

    Drawn on the CPU in float32 (identical on every machine), then cast to
    each parameter's dtype and device.
    """
    gen = torch.Generator().manual_seed(direction_seed(seed, axis))
    moved = set(perturbed_names(model, include_bias_norm, exclude))
    out: Direction = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        d = torch.randn(p.shape, generator=gen, dtype=torch.float32)
        if name in moved:
            out[name] = normalize_direction(d, p.detach().cpu(), normalization).to(p.device,
                                                                                   p.dtype)
    return out


def interpolation_direction(model: nn.Module, target: dict[str, torch.Tensor]) -> Direction:
    """w_target − w_model over every trainable parameter: a = 0 is the model, a = 1 the target.

    The straight line between two checkpoints moves everything trainable
    (position tables and biases included, or a = 1 would not reach the
    target); buffers stay those of the model.
    """
    out: Direction = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name not in target:
            raise ValueError(f"interpolation target lacks parameter {name!r}")
        t = target[name].detach()
        if tuple(t.shape) != tuple(p.shape):
            raise ValueError(f"interpolation target {name!r} has shape {tuple(t.shape)}, "
                             f"the model {tuple(p.shape)}")
        out[name] = (t.to(p.device, torch.float64) - p.detach().double()).to(p.dtype)
    return out


def pca_directions(model: nn.Module, snapshots: Iterable[tuple[str, dict[str, torch.Tensor]]],
                   count: int = 2, include_bias_norm: bool = False,
                   exclude: Sequence[str] = ()) -> DirectionSet:
    """The top `count` principal directions of a training trajectory around the model's weights.

    As Li et al. (2018, §7): x_t = w_t − w0 for every snapshot t, PCA of the
    centered x_t (float64, via the T×T Gram matrix: memory is T × #weights
    doubles), components u_k. Each direction is d_k = s_k · u_k with
    s_k = max_t |⟨x_t, u_k⟩|, so a grid over [-1, 1] spans the trajectory;
    the sign makes the snapshot farthest along u_k positive. `info` gets the
    explained variance ratios and every snapshot's coordinates ⟨x_t, u_k⟩ / s_k
    with the residual ‖x_t − projection‖ / ‖x_t‖ (0: the snapshot lies in the plane).
    """
    params = dict(model.named_parameters())
    names = perturbed_names(model, include_bias_norm, exclude)
    w0 = torch.cat([params[n].detach().double().cpu().reshape(-1) for n in names])
    labels, rows = [], []
    for label, state in snapshots:
        missing = [n for n in names if n not in state]
        if missing:
            raise ValueError(f"trajectory snapshot {label!r} lacks parameters {missing[:3]}")
        bad = [n for n in names if tuple(state[n].shape) != tuple(params[n].shape)]
        if bad:
            raise ValueError(f"trajectory snapshot {label!r}: shapes of {bad[:3]} differ")
        rows.append(torch.cat([state[n].double().reshape(-1) for n in names]) - w0)
        labels.append(label)
    if len(rows) < count + 1:
        raise ValueError(f"PCA of {count} directions needs at least {count + 1} snapshots, "
                         f"got {len(rows)}")
    x = torch.stack(rows)
    centered = x - x.mean(0, keepdim=True)
    evals, evecs = torch.linalg.eigh(centered @ centered.T)
    evals, evecs = evals.flip(0).clamp_min(0.0), evecs.flip(1)
    total = float(evals.sum())
    if total <= 0 or float(evals[count - 1]) <= 1e-12 * float(evals[0]):
        raise ValueError(f"the trajectory spans fewer than {count} dimensions: the snapshots "
                         "coincide or lie on a line")
    axes, coords, scales = [], [], []
    for k in range(count):
        u = centered.T @ evecs[:, k] / math.sqrt(float(evals[k]))
        c = x @ u
        if c[c.abs().argmax()] < 0:
            u, c = -u, -c
        s = float(c.abs().max())
        axes.append(u * s)
        coords.append(c / s)
        scales.append(s)
    plane = torch.stack([a / s for a, s in zip(axes, scales)])  # orthonormal rows
    residual = x - (x @ plane.T) @ plane
    rnorm = residual.norm(dim=1) / x.norm(dim=1).clamp_min(1e-300)
    trajectory = [{"snapshot": labels[t], "coords": [float(c[t]) for c in coords],
                   "residual": float(rnorm[t])} for t in range(len(rows))]
    out_axes = [_unflatten(a, names, params) for a in axes]
    return DirectionSet(out_axes, {"var_ratio": [float(evals[k]) / total for k in range(count)],
                                   "trajectory": trajectory})


def _unflatten(flat: torch.Tensor, names: list[str],
               params: dict[str, nn.Parameter]) -> Direction:
    out: Direction = {}
    offset = 0
    for n in names:
        p = params[n]
        out[n] = flat[offset:offset + p.numel()].reshape(p.shape).to(p.device, p.dtype)
        offset += p.numel()
    return out


def describe(axes: list[Direction]) -> dict[str, Any]:
    """‖d_k‖ of each axis and ⟨d1, d2⟩ (float64), for distances in weight space."""
    norms = [math.sqrt(sum(float(t.double().pow(2).sum()) for t in d.values())) for d in axes]
    dot = 0.0
    if len(axes) == 2:
        dot = sum(float((axes[0][n].double() * axes[1][n].double()).sum())
                  for n in axes[0] if n in axes[1])
    return {"norms": norms, "dot": dot}
