"""Batched image operators shared by the corruptions (filters, resampling, color).

Each mirrors the library call of the originals it replaces (scipy/skimage
gaussian filters, OpenCV filter2D, scipy zoom, PIL resize, ImageMagick motion
blur) with the same border handling, so the constants of the tables mean the
same thing here.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "border_index",
    "correlate2d_lowrank",
    "correlation_matrix",
    "filter_separable",
    "gaussian_filter",
    "gaussian_kernel1d",
    "motion_blur",
    "rgb_to_gray",
    "zoom_matrix",
]


def border_index(n: int, lo: int, hi: int, mode: str, device: torch.device) -> torch.Tensor:
    """Indices of positions -lo .. n-1+hi mapped into [0, n) by a border mode.

    mode: 'nearest' (edge replicate), 'reflect' (scipy: d c b a | a b c d),
    'mirror' (scipy mirror = OpenCV REFLECT_101: d c b | a b c d).
    """
    i = torch.arange(-lo, n + hi, device=device)
    if mode == "nearest":
        return i.clamp(0, n - 1)
    if n == 1:
        return torch.zeros_like(i)
    if mode == "reflect":
        period = 2 * n
        i = torch.remainder(i, period)
        return torch.where(i >= n, period - 1 - i, i)
    if mode == "mirror":
        period = 2 * n - 2
        i = torch.remainder(i, period)
        return torch.where(i >= n, period - i, i)
    raise ValueError(f"border mode {mode!r}: expected 'nearest', 'reflect' or 'mirror'")


#: Kernels up to this many taps are applied as shifted multiply-adds: a one-channel
#: conv2d (oneDNN on CPU) is ~10x slower than a few in-place passes for them.
_SHIFT_ADD_TAPS = 9


def _correlate_axis(y: torch.Tensor, k: torch.Tensor, dim: int, mode: str) -> torch.Tensor:
    """Correlate (B, 1, H, W) along dim 2 or 3 with the odd-length taps k, borders by `mode`."""
    n, r = y.shape[dim], (k.numel() - 1) // 2
    yp = y.index_select(dim, border_index(n, r, r, mode, y.device))
    if k.numel() > _SHIFT_ADD_TAPS:
        return F.conv2d(yp, k.to(y.dtype).view((1, 1, -1, 1) if dim == 2 else (1, 1, 1, -1)))
    taps = k.tolist()
    out = yp.narrow(dim, 0, n) * taps[0]
    for j in range(1, len(taps)):
        out.add_(yp.narrow(dim, j, n), alpha=taps[j])
    return out


def filter_separable(x: torch.Tensor, kh: torch.Tensor, kw: torch.Tensor, mode: str) -> torch.Tensor:
    """Correlate the last two dims of x (..., H, W) with kh (rows) then kw (columns)."""
    shape = x.shape
    h, w = shape[-2:]
    y = x.reshape(-1, 1, h, w)
    if kh.numel() > 1:
        y = _correlate_axis(y, kh, 2, mode)
    if kw.numel() > 1:
        y = _correlate_axis(y, kw, 3, mode)
    return y.reshape(shape)


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """scipy.ndimage's gaussian weights: radius int(truncate * sigma + 0.5), normalized."""
    radius = int(truncate * float(sigma) + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_filter(x: torch.Tensor, sigma: float, *, mode: str = "nearest", truncate: float = 4.0) -> torch.Tensor:
    """scipy.ndimage.gaussian_filter over the last two dims (skimage.filters.gaussian's defaults)."""
    if sigma <= 0:
        return x
    k = gaussian_kernel1d(sigma, truncate).to(x.device)
    return filter_separable(x, k, k, mode)


def correlation_matrix(n: int, taps: torch.Tensor, mode: str) -> torch.Tensor:
    """(n, n) matrix C with C @ v = 1-D correlation of v with `taps` (odd length), borders by `mode`."""
    r = (taps.numel() - 1) // 2
    src = border_index(n, r, r, mode, taps.device)  # padded position -> source index
    c = torch.zeros(n, n, dtype=taps.dtype, device=taps.device)
    rows = torch.arange(n, device=taps.device).view(-1, 1).expand(n, taps.numel())
    cols = src[rows + torch.arange(taps.numel(), device=taps.device).view(1, -1)]
    c.index_put_((rows.reshape(-1), cols.reshape(-1)), taps.repeat(n), accumulate=True)
    return c


def correlate2d_lowrank(x: torch.Tensor, kernel: torch.Tensor, mode: str, tol: float = 1e-9) -> torch.Tensor:
    """2-D correlation of (..., H, W) with a square kernel as sum_r A_r X B_r^T (its SVD).

    Disk kernels have low rank (5 for radius 6), so this is one GEMM against
    the (W, rank * W) matrix [B_1^T .. B_R^T] and one batched product with the
    shared (H, H * rank) matrix of the A_r, both holding the border mode and
    ordered so that no intermediate is permuted: far fewer operations than a
    dense 17x17 conv on CPU.
    """
    h, w = x.shape[-2:]
    u, s, vh = torch.linalg.svd(kernel.to(torch.float64))
    rank = int((s > tol * s[0]).sum())
    a = torch.stack([correlation_matrix(h, u[:, i] * s[i], mode) for i in range(rank)], dim=2)  # [i, k, r] = A_r[i, k]
    b = torch.cat([correlation_matrix(w, vh[i], mode).T for i in range(rank)], dim=1)  # [j, r*W + j'] = B_r[j', j]
    a = a.reshape(h, h * rank).to(device=x.device, dtype=x.dtype)
    b = b.to(device=x.device, dtype=x.dtype)
    lead = x.shape[:-2]
    y = (x.reshape(-1, w) @ b).view(-1, h * rank, w)  # row k * R + r of image i: (X B_r^T)[k]
    return torch.matmul(a, y).reshape(*lead, h, w)  # sum over (k, r) of A_r[i, k] (X B_r^T)[k, j]


@functools.lru_cache(maxsize=64)
def _zoom_matrix_np(n: int, zoom: float, centered: bool) -> np.ndarray:
    ch = math.ceil(n / zoom)
    top = (n - ch) // 2
    out = round(ch * zoom)
    trim = (out - n) // 2 if centered else 0
    a = np.zeros((n, n))
    for i in range(n):
        j = i + trim
        src = top + (j * (ch - 1) / (out - 1) if out > 1 else 0.0)
        f = math.floor(src)
        frac = src - f
        a[i, min(f, n - 1)] += 1.0 - frac
        if frac > 0:
            a[i, min(f + 1, n - 1)] += frac
    return a


def zoom_matrix(n: int, zoom: float, device: torch.device, dtype: torch.dtype, centered: bool = True) -> torch.Tensor:
    """(n, n) matrix of make_cifar_c's `clipped_zoom` along one axis.

    The central ceil(n / zoom) pixels are zoomed by scipy.ndimage.zoom(order=1)
    (grid_mode=False: output j samples input j * (in - 1) / (out - 1)) and the
    central n kept (imagecorruptions keeps the first n: `centered=False`).
    """
    return torch.as_tensor(_zoom_matrix_np(n, float(zoom), centered), dtype=dtype, device=device)


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """OpenCV COLOR_RGB2GRAY (ITU-R 601 luma): (N, 3, H, W) -> (N, 1, H, W)."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)
    return (x * w.view(1, 3, 1, 1)).sum(1, keepdim=True)


def motion_blur(x: torch.Tensor, radius: float, sigma: float, angle_deg: torch.Tensor) -> torch.Tensor:
    """ImageMagick's MotionBlurImage, batched, one angle per image (imagecorruptions' port).

    Kernel width 2 * ceil(radius) + 1, weights exp(-i^2 / 2 sigma^2) normalized
    over the width; tap i samples the image at offset ceil(i * (cos a, sin a) -
    0.5) (x, y) with edge-replicated borders. Taps whose offset leaves the image
    are dropped without renormalizing (as imagecorruptions does).
    x: (N, C, H, W); angle_deg: (N,).

    Why sorted: with the images ordered by angle, the images that share tap i's
    offset form runs (a few dozen per tap), and each run is one strided
    multiply-add of a window of the padded batch: no per-pixel gather.
    """
    n, _, h, w = x.shape
    width = int(2 * math.ceil(radius) + 1)
    i = torch.arange(width, dtype=torch.float64)
    k = torch.exp(-(i**2) / (2 * sigma * sigma))
    k = (k / k.sum()).tolist()
    a = torch.deg2rad(angle_deg.to(torch.float64).cpu())
    order = torch.argsort(a, stable=True)
    a = a[order]
    oy = torch.ceil(i.unsqueeze(0) * torch.sin(a).unsqueeze(1) - 0.5).to(torch.int64)  # (N, width)
    ox = torch.ceil(i.unsqueeze(0) * torch.cos(a).unsqueeze(1) - 0.5).to(torch.int64)
    valid = (oy.abs() < h) & (ox.abs() < w)
    oyv, oxv = oy[valid], ox[valid]
    top, bottom = max(0, -int(oyv.min())), max(0, int(oyv.max()))
    left, right = max(0, -int(oxv.min())), max(0, int(oxv.max()))
    order_d = order.to(x.device)
    xs = x.index_select(0, order_d)
    xp = F.pad(xs, (left, right, top, bottom), mode="replicate") if top or bottom or left or right else xs
    # run starts per tap: where the (offset, validity) of image j differs from image j - 1
    change = torch.ones(n, width, dtype=torch.bool)
    change[1:] = (oy[1:] != oy[:-1]) | (ox[1:] != ox[:-1]) | (valid[1:] != valid[:-1])
    starts = [torch.nonzero(change[:, t], as_tuple=True)[0].tolist() + [n] for t in range(width)]
    oy_l, ox_l, valid_l = oy.tolist(), ox.tolist(), valid.tolist()
    out = torch.zeros_like(xs)
    for t in range(width):
        st = starts[t]
        for s, e in itertools.pairwise(st):
            if not valid_l[s][t]:
                continue
            y0, x0 = top + oy_l[s][t], left + ox_l[s][t]
            out[s:e].add_(xp[s:e, :, y0 : y0 + h, x0 : x0 + w], alpha=k[t])
    return torch.empty_like(out).index_copy_(0, order_d, out)
