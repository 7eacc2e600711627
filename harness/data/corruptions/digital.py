"""Digital corruptions: brightness, contrast, elastic transform, pixelate, JPEG (batched)."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from harness.data.corruptions import ops
from harness.data.corruptions.rng import ImageRNG

__all__ = ["brightness", "contrast", "elastic_transform", "jpeg_compression", "pil_resize_matrix", "pixelate"]


def brightness(x: torch.Tensor, params: tuple, rng: ImageRNG) -> torch.Tensor:
    """HSV value + shift, clipped (the original's rgb2hsv / hsv2rgb round trip).

    With hue and saturation fixed, RGB scales linearly with V = max(R, G, B),
    so the round trip is x * V' / V (and V' gray where V = 0, where skimage
    sets S = 0) — exact, without the HSV detour.
    """
    (shift,) = params
    v = x.amax(dim=1, keepdim=True)
    v_new = (v + shift).clamp(0, 1)
    return torch.where(v > 0, x * (v_new / v.clamp_min(1e-12)), v_new.expand_as(x))


def contrast(x: torch.Tensor, params: tuple, rng: ImageRNG) -> torch.Tensor:
    """(x - mean) * factor + mean, the mean per image and channel."""
    (factor,) = params
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean) * factor + mean


def _sample(x: torch.Tensor, px: torch.Tensor, py: torch.Tensor, mirror_at_centers: bool) -> torch.Tensor:
    """Bilinear x at pixel coordinates (px, py) (N, H, W), reflecting outside.

    mirror_at_centers: OpenCV BORDER_REFLECT_101 (grid_sample, align_corners=True);
    else scipy 'reflect' about the outer pixel edges (align_corners=False).
    """
    h, w = x.shape[-2:]
    if mirror_at_centers:
        gx, gy = 2 * px / max(w - 1, 1) - 1, 2 * py / max(h - 1, 1) - 1
    else:
        gx, gy = (2 * px + 1) / w - 1, (2 * py + 1) / h - 1
    grid = torch.stack([gx, gy], dim=-1).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=mirror_at_centers)


def elastic_transform(x: torch.Tensor, params: tuple, rng: ImageRNG) -> torch.Tensor:
    """Random affine (three points moved by U(-affine, affine)), then a smooth random displacement.

    As the original: cv2.getAffineTransform + warpAffine (bilinear, REFLECT_101),
    then map_coordinates(order=1, mode='reflect') at (row + dy, col + dx) with
    dx, dy = gaussian_filter(U(-1, 1), sigma, mode='reflect', truncate=3) *
    amplitude. Sizes are fractions of the image side (of H; the originals
    assume square images). cv2's 1/32-pixel fixed-point warp is not modelled.
    """
    amplitude, sigma, affine = (float(p) * x.shape[-2] for p in params)
    n, _, h, w = x.shape
    dev, f64 = x.device, torch.float64
    ys = torch.arange(h, device=dev, dtype=x.dtype).view(1, h, 1).expand(n, h, w)
    xs = torch.arange(w, device=dev, dtype=x.dtype).view(1, 1, w).expand(n, h, w)
    if affine > 0:
        cx, cy, size = float(w // 2), float(h // 2), float(min(h, w) // 3)
        p1 = torch.tensor([[cx + size, cy + size], [cx + size, cy - size], [cx - size, cy - size]], dtype=f64, device=dev)
        p2 = p1 + (2 * rng.uniform(2, (3, 2), f64) - 1) * affine  # (N, 3, 2) as (x, y)
        # inverse map: source = A @ [x_dst, y_dst, 1], from the three dst -> src pairs
        dst = torch.cat([p2, torch.ones(n, 3, 1, dtype=f64, device=dev)], dim=2)
        inv = torch.linalg.solve(dst, p1.expand(n, 3, 2)).to(x.dtype)  # (N, 3, 2)
        sx = xs * inv[:, 0, 0].view(n, 1, 1) + ys * inv[:, 1, 0].view(n, 1, 1) + inv[:, 2, 0].view(n, 1, 1)
        sy = xs * inv[:, 0, 1].view(n, 1, 1) + ys * inv[:, 1, 1].view(n, 1, 1) + inv[:, 2, 1].view(n, 1, 1)
        x = _sample(x, sx, sy, mirror_at_centers=True)
    if amplitude > 0:
        noise = 2 * rng.uniform(0, (2, h, w), x.dtype) - 1
        d = ops.gaussian_filter(noise, sigma, mode="reflect", truncate=3.0) * amplitude
        x = _sample(x, xs + d[:, 0], ys + d[:, 1], mirror_at_centers=False)
    return x


@functools.lru_cache(maxsize=64)
def _pil_resize_np(n_in: int, n_out: int, method: str) -> np.ndarray:
    m = np.zeros((n_out, n_in))
    scale = n_in / n_out
    if method == "nearest":
        for i in range(n_out):
            m[i, min(int((i + 0.5) * scale), n_in - 1)] = 1.0
        return m
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    for i in range(n_out):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        for j in range(lo, hi):
            t = (j - center + 0.5) / filterscale
            m[i, j] = 1.0 if -0.5 < t <= 0.5 else 0.0
        m[i] /= m[i].sum()
    return m


def pil_resize_matrix(n_in: int, n_out: int, method: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(n_out, n_in) matrix of PIL's resize along one axis: 'box' (Pillow's resample
    coefficients for its box filter) or 'nearest'."""
    if method not in ("box", "nearest"):
        raise ValueError(f"pil resize method {method!r}: expected 'box' or 'nearest'")
    return torch.as_tensor(_pil_resize_np(n_in, n_out, method), device=device, dtype=dtype)


def pixelate(x: torch.Tensor, params: tuple, rng: ImageRNG) -> torch.Tensor:
    """PIL BOX resize to int(side * scale), then back up with BOX (CIFAR-C) or NEAREST.

    PIL resamples 8-bit images one axis at a time with 8-bit intermediates;
    that rounding is reproduced after each pass.
    """
    scale, up = params
    h, w = x.shape[-2:]
    sh, sw = int(h * scale), int(w * scale)
    dh = pil_resize_matrix(h, sh, "box", x.device, x.dtype)
    dw = pil_resize_matrix(w, sw, "box", x.device, x.dtype)
    uh = pil_resize_matrix(sh, h, up, x.device, x.dtype)
    uw = pil_resize_matrix(sw, w, up, x.device, x.dtype)
    # in 8-bit units throughout (the resizes are linear): one scaling each way, and
    # PIL's rounding (half up: its fixed-point sums start at one half) in place
    y = (x * 255.0 @ dw.T).add_(0.5).floor_()
    y = (dh @ y).add_(0.5).floor_()
    y = (y @ uw.T).add_(0.5).floor_()
    return (uh @ y).add_(0.5).floor_().div_(255.0)


# ----- JPEG (baseline, as libjpeg via PIL: 4:2:0, standard tables) -----

_LUMA_Q = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
_CHROMA_Q = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
)


def quant_table(base: tuple[tuple[int, ...], ...], quality: int) -> torch.Tensor:
    """libjpeg's jpeg_set_quality scaling of a base table (baseline: entries in 1..255)."""
    q = min(max(int(quality), 1), 100)
    scale = 5000 // q if q < 50 else 200 - 2 * q
    t = (torch.tensor(base, dtype=torch.int64) * scale + 50) // 100
    return t.clamp(1, 255).to(torch.float64)


@functools.lru_cache(maxsize=4)
def _dct_matrix() -> torch.Tensor:
    k = torch.arange(8, dtype=torch.float64).view(-1, 1)
    i = torch.arange(8, dtype=torch.float64).view(1, -1)
    m = torch.cos((2 * i + 1) * k * math.pi / 16) * math.sqrt(2 / 8)
    m[0] /= math.sqrt(2)
    return m


def _blocks_roundtrip(p: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Level-shifted plane (N, H, W), H and W multiples of 8 -> quantized and decoded plane.

    The 2-D DCT of every block is one GEMM with the 64x64 matrix D (x) D.
    """
    n, h, w = p.shape
    d = _dct_matrix()
    d2 = torch.kron(d, d).to(device=p.device, dtype=p.dtype)  # vec(D B D^T) = (D (x) D) vec(B)
    b = p.reshape(n, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4).reshape(-1, 64)
    q = table.reshape(64).to(device=p.device, dtype=p.dtype)
    coef = torch.round((b @ d2.T) / q) * q
    b = coef @ d2
    return b.reshape(n, h // 8, w // 8, 8, 8).permute(0, 1, 3, 2, 4).reshape(n, h, w)


def _pad_to(x: torch.Tensor, mh: int, mw: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = (-h) % mh, (-w) % mw
    if not ph and not pw:
        return x
    return F.pad(x.unsqueeze(1), (0, pw, 0, ph), mode="replicate").squeeze(1)


def _fancy_upsample(c: torch.Tensor) -> torch.Tensor:
    """libjpeg's h2v2 'fancy' (triangle) chroma upsampling: 3/4 near + 1/4 far per axis, edges replicated."""
    def up(t: torch.Tensor, dim: int) -> torch.Tensor:
        n = t.shape[dim]
        prev = t.index_select(dim, (torch.arange(n, device=t.device) - 1).clamp(0, n - 1))
        nxt = t.index_select(dim, (torch.arange(n, device=t.device) + 1).clamp(0, n - 1))
        even, odd = 0.75 * t + 0.25 * prev, 0.75 * t + 0.25 * nxt
        return torch.stack([even, odd], dim=dim + 1).flatten(dim, dim + 1)

    return up(up(c, 1), 2)


def jpeg_compression(x: torch.Tensor, params: tuple, rng: ImageRNG) -> torch.Tensor:
    """Baseline JPEG encode + decode at PIL's `quality`, batched in torch.

    As PIL/libjpeg: JFIF RGB -> YCbCr (8-bit), chroma 4:2:0 by 2x2 averaging,
    edge-replicated padding to whole 16x16 MCUs, 8x8 DCT, the standard tables
    scaled by quality, rounding, dequantization, inverse DCT, fancy (triangle)
    chroma upsampling, YCbCr -> RGB (8-bit). libjpeg's integer DCT/IDCT
    (JDCT_ISLOW) and fixed-point color tables are exact float math here, so a
    few values differ from PIL's output by a level or two.
    """
    (quality,) = params
    h, w = x.shape[-2:]
    v = torch.round(x.to(torch.float32) * 255.0)
    r, g, b = v[:, 0], v[:, 1], v[:, 2]
    y = torch.round(0.299 * r + 0.587 * g + 0.114 * b)
    cb = torch.round(-0.168735892 * r - 0.331264108 * g + 0.5 * b + 128)
    cr = torch.round(0.5 * r - 0.418687589 * g - 0.081312411 * b + 128)
    y = _pad_to(y, 16, 16)
    cb, cr = _pad_to(cb, 16, 16), _pad_to(cr, 16, 16)
    cb = F.avg_pool2d(cb.unsqueeze(1), 2).squeeze(1)
    cr = F.avg_pool2d(cr.unsqueeze(1), 2).squeeze(1)
    ql, qc = quant_table(_LUMA_Q, quality), quant_table(_CHROMA_Q, quality)
    y = (_blocks_roundtrip(y - 128, ql) + 128).round().clamp(0, 255)
    cb = (_blocks_roundtrip(cb - 128, qc) + 128).round().clamp(0, 255)
    cr = (_blocks_roundtrip(cr - 128, qc) + 128).round().clamp(0, 255)
    cb, cr = _fancy_upsample(cb) - 128, _fancy_upsample(cr) - 128
    y, cb, cr = y[:, :h, :w], cb[:, :h, :w], cr[:, :h, :w]
    rgb = torch.stack([y + 1.402 * cr, y - 0.344136286 * cb - 0.714136286 * cr, y + 1.772 * cb], dim=1)
    return (torch.round(rgb).clamp(0, 255) / 255.0).to(x.dtype)
