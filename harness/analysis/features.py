"""Numerics of the per-depth representation analyses: Fourier profiles and feature-map variance.

The `fourier`, `featvar` and `lesion` tasks, later plotting code and the tests
all use these functions, so a number in a Parquet file and a number in a plot
are computed by the same code. The first part is pure (tensors in, numbers
out); the second part is the plumbing the three tasks share (params, loading,
per-block columns).

Feature maps
------------
`to_spatial(output, block)` turns a block's output into a (B, C, H, W) map:
"nchw" as is, "nhwc" permuted, "tokens" with the block's `prefix_tokens`
(class / distillation / register tokens) dropped and the rest reshaped
row-major to a square grid (token t sits at row t // s, column t % s, as timm's
patch embedding flattens them). "flat" outputs (pooled features, logits) and
token outputs with no grid token left (PiT's class-token pooling) have no
spatial map: None.

Fourier profile (Park & Kim Fig. 2a, 8)
---------------------------------------
For a square map x of size s×s, per sample b and channel c::

    logA_bc(u, v) = log(|FFT2(x_bc)(u, v)| + eps),   eps = 1e-6 (as the original)
    logA(u, v)    = mean over b, c of logA_bc(u, v)
    profile(k)    = logA(k, k)          (the half-diagonal, u = v = k)
    Δ(k)          = profile(k) − profile(0)
    frequency(k)  = 2k / s              (in units of π, per axis)

With `diagonal="nyquist"` (default) k = 0 … ⌊s/2⌋: from the DC term to (π, π)
inclusive for even s. In the fftshift-ed picture (zero frequency in the
centre) this is the diagonal read from the centre towards the *upper-left*
corner; for a real map |F(−k, −k)| = |F(k, k)|, so it equals the amplitude at
+k. `diagonal="original"` reproduces xxxnell/how-do-vits-work
`fourier_analysis.ipynb`: roll by s/2 (fftshift), then `diag()[s//2:]`, i.e.
k = 0 … ⌈s/2⌉ − 1 towards the lower-right corner — for even s it stops one bin
short of π (0.75π on a 8×8 map, 0.875π on 16×16), although the notebook plots
those points at `linspace(0, 1)` and calls the last one 1.0π. Frequencies here
are always the true 2k/s. The depth plot (Fig. 8) uses Δ at the highest
frequency read (`is_max_frequency` rows of the task).

Feature-map variance (Fig. 9)
-----------------------------
`definition="spatial"` (default; what the original `featuremap_variance.ipynb`
computes — `latent.var(dim=[-1, -2]).mean(dim=[0, 1])` — and what the paper's
text describes)::

    V_spatial = mean_{b, c} [ 1/(HW − 1) · Σ_{h, w} (x_bchw − mean_{h,w} x_bc)² ]

the unbiased variance over the H×W positions of each (sample, channel) map,
averaged over samples and channels. `definition="samples"` is the definition
the author agreed to in issue #6 ("variance of each element of the flattened
representation over all the samples, then the mean of the D variances")::

    V_samples = mean_{c, h, w} [ 1/(N − 1) · Σ_b (x_bchw − mean_b x_chw)² ]

the unbiased variance over the N samples of each feature element, averaged
over elements. Both ignore the class token. The two differ in general (see
the tests for a hand-computed example).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import torch

from harness.models.blocks import Block, forward_blocks


__all__ = [
    "DIAGONALS",
    "VARIANCE_DEFINITIONS",
    "to_spatial",
    "fourier_frequencies",
    "diagonal_log_amplitude",
    "fourier_profile",
    "feature_variance",
    "FeatureVariance",
    "FourierProfile",
    "iter_block_outputs",
    "accumulate_block_maps",
]

#: How the half-diagonal of the Fourier map is read (see the module docstring).
DIAGONALS = ("nyquist", "original")
#: Feature-map variance definitions (see the module docstring).
VARIANCE_DEFINITIONS = ("spatial", "samples")
#: eps added to |FFT| before the log, as in the original notebook.
FOURIER_EPS = 1e-6


# --------------------------------------------------------------------------- feature maps


def to_spatial(output: torch.Tensor, block: Block) -> torch.Tensor | None:
    """A block's output as a (B, C, H, W) feature map, or None when it has no spatial grid.

    Per-depth analyses need the grid; the block's `layout` says where it is.
    Raises ValueError for a token count that is not a square (the grid
    cannot be recovered without knowing its shape) or a tensor whose rank
    does not fit the layout.
    """
    layout = block.layout
    if layout == "flat":
        return None
    if layout in ("nchw", "nhwc"):
        if output.ndim != 4:
            raise ValueError(f"block {block.name}: layout {layout} expects a 4-d output, "
                             f"got shape {tuple(output.shape)}")
        return output if layout == "nchw" else output.permute(0, 3, 1, 2)
    if layout == "tokens":
        if output.ndim != 3:
            raise ValueError(f"block {block.name}: layout tokens expects (B, N, C), got shape "
                             f"{tuple(output.shape)}")
        grid = output[:, block.prefix_tokens:]
        b, n, c = grid.shape
        if n == 0:
            return None
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"block {block.name}: {n} grid tokens (after dropping "
                             f"{block.prefix_tokens} prefix tokens) do not form a square grid")
        return grid.transpose(1, 2).reshape(b, c, side, side)
    raise ValueError(f"block {block.name}: unknown layout {layout!r}")


def _check_map(fmap: torch.Tensor) -> None:
    if fmap.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) feature map, got shape {tuple(fmap.shape)}")


# --------------------------------------------------------------------------- Fourier


def fourier_frequencies(size: int, diagonal: str = "nyquist") -> torch.Tensor:
    """Frequencies (units of π, per axis) of the half-diagonal points of an size×size map."""
    if diagonal not in DIAGONALS:
        raise ValueError(f"diagonal {diagonal!r}; allowed: {', '.join(DIAGONALS)}")
    count = size // 2 + 1 if diagonal == "nyquist" else size - size // 2
    return torch.arange(count, dtype=torch.float64) * 2.0 / size


def diagonal_log_amplitude(fmap: torch.Tensor, diagonal: str = "nyquist",
                           eps: float = FOURIER_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """(frequencies in units of π, mean over batch and channels of log(|FFT2|+eps) on the half-diagonal).

    The mean of log amplitudes is linear in the samples, so per-batch results
    weighted by batch size average to the whole set's (what the tasks do).
    Computed in float64 so a constant map's zero frequencies stay at ~eps.
    """
    _check_map(fmap)
    b, c, h, w = fmap.shape
    if h != w:
        raise ValueError(f"Fourier profile needs a square map, got {h}x{w}")
    freqs = fourier_frequencies(h, diagonal)
    log_amp = (torch.fft.fft2(fmap.detach().to(torch.float64)).abs() + eps).log()
    log_amp = log_amp.mean(dim=(0, 1))
    if diagonal == "nyquist":
        k = torch.arange(len(freqs), device=log_amp.device)
        profile = log_amp[k, k]
    else:  # the original notebook: fftshift by roll, then the diagonal from the centre on
        shifted = torch.roll(log_amp, shifts=(h // 2, w // 2), dims=(0, 1))
        profile = shifted.diag()[h // 2:]
    return freqs, profile.cpu()


def fourier_profile(fmap: torch.Tensor, diagonal: str = "nyquist",
                    eps: float = FOURIER_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """(frequencies in units of π, Δ log amplitude = logA(f) − logA(0)) of a (B, C, H, W) map.

    The relative log amplitude of Park & Kim Fig. 2a; Δ at the last frequency
    is the point of Fig. 8. Negative Δ: high frequencies weaker than the DC term.
    """
    freqs, profile = diagonal_log_amplitude(fmap, diagonal, eps)
    return freqs, profile - profile[0]


class FourierProfile:
    """Accumulates the batch-and-channel mean log amplitude of one block over batches."""

    def __init__(self, diagonal: str = "nyquist", eps: float = FOURIER_EPS) -> None:
        self.diagonal = diagonal
        self.eps = eps
        self.count = 0
        self.total: torch.Tensor | None = None
        self.freqs: torch.Tensor | None = None

    def update(self, fmap: torch.Tensor) -> None:
        """Add one batch (B, C, H, W)."""
        freqs, profile = diagonal_log_amplitude(fmap, self.diagonal, self.eps)
        if self.freqs is not None and len(freqs) != len(self.freqs):
            raise ValueError("feature maps of one block changed size between batches")
        weight = fmap.shape[0]
        self.freqs = freqs
        self.total = profile * weight if self.total is None else self.total + profile * weight
        self.count += weight

    def value(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(frequencies, log amplitude, Δ log amplitude)."""
        if self.total is None or self.freqs is None:
            raise ValueError("no feature maps were added")
        log_amp = self.total / self.count
        return self.freqs, log_amp, log_amp - log_amp[0]


# --------------------------------------------------------------------------- variance


class FeatureVariance:
    """Streaming feature-map variance of one block (see the module docstring for the formulas).

    Batches are combined exactly: "spatial" averages per-(sample, channel)
    variances; "samples" merges per-element means and sums of squared
    deviations (Chan et al.'s parallel update), in float64.
    """

    def __init__(self, definition: str = "spatial") -> None:
        if definition not in VARIANCE_DEFINITIONS:
            raise ValueError(f"definition {definition!r}; allowed: {', '.join(VARIANCE_DEFINITIONS)}")
        self.definition = definition
        self.n = 0
        self.sum_var = 0.0  # spatial: Σ over (b, c) of the per-map variance
        self.mean: torch.Tensor | None = None  # samples: per-element running mean
        self.m2: torch.Tensor | None = None  # samples: per-element Σ squared deviations

    def update(self, fmap: torch.Tensor) -> None:
        """Add one batch (B, C, H, W)."""
        _check_map(fmap)
        x = fmap.detach().to(torch.float64)
        nb = x.shape[0]
        if nb == 0:
            return
        if self.definition == "spatial":
            b, c, h, w = x.shape
            if h * w < 2:
                self.sum_var = math.nan
            else:
                self.sum_var += float(x.var(dim=(2, 3), correction=1).sum())
            self.n += b * c
            return
        mean_b = x.mean(dim=0)
        m2_b = ((x - mean_b) ** 2).sum(dim=0)
        if self.mean is None or self.m2 is None:
            self.mean, self.m2, self.n = mean_b, m2_b, nb
            return
        if mean_b.shape != self.mean.shape:
            raise ValueError("feature maps of one block changed shape between batches")
        total = self.n + nb
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (nb / total)
        self.m2 = self.m2 + m2_b + delta ** 2 * (self.n * nb / total)
        self.n = total

    def value(self) -> float:
        """The variance; NaN when undefined (one position, or one sample for "samples")."""
        if self.n == 0:
            raise ValueError("no feature maps were added")
        if self.definition == "spatial":
            return self.sum_var / self.n
        if self.n < 2 or self.m2 is None:
            return math.nan
        return float((self.m2 / (self.n - 1)).mean())


def feature_variance(fmap: torch.Tensor, definition: str = "spatial") -> float:
    """Feature-map variance of a (B, C, H, W) map ("spatial" or "samples", see the module docstring)."""
    acc = FeatureVariance(definition)
    acc.update(fmap)
    return acc.value()


@torch.no_grad()
def iter_block_outputs(parts: list[Block], x: torch.Tensor, batch_size: int,
                       device: torch.device) -> Iterator[list[torch.Tensor]]:
    """Every block's output, one batch at a time (one forward pass per batch)."""
    for i in range(0, len(x), batch_size):
        yield forward_blocks(parts, x[i:i + batch_size].to(device, non_blocking=True), keep=True)


def accumulate_block_maps(parts: list[Block], x: torch.Tensor, batch_size: int,
                          device: torch.device, make_accumulator: Callable[[], Any]
                          ) -> list[tuple[int, Any, tuple[int, int, int]]]:
    """Run `x` through the blocks once, feeding every block's spatial feature map to its own
    accumulator (one from `make_accumulator`, with `update(fmap)`).

    Returns (block index, accumulator, (C, H, W)) for each block that has a spatial map.
    """
    accumulators: dict[int, Any] = {}
    shapes: dict[int, tuple[int, int, int]] = {}
    for outputs in iter_block_outputs(parts, x, batch_size, device):
        for i, (block, out) in enumerate(zip(parts, outputs)):
            fmap = to_spatial(out, block)
            if fmap is not None:
                accumulators.setdefault(i, make_accumulator()).update(fmap)
                shapes[i] = tuple(fmap.shape[1:])
    return [(i, accumulators[i], shapes[i]) for i in sorted(accumulators)]
