"""Blur corruptions: defocus, glass, motion, zoom (batched over the images)."""

from __future__ import annotations

import functools

import numpy as np
import torch

from harness.data.corruptions import ops
from harness.data.corruptions.rng import ImageRNG

__all__ = ["defocus_blur", "disk_kernel", "glass_blur", "glass_schedule", "motion_blur", "zoom_blur"]


def _cv2_gaussian_1d(ksize: int, sigma: float) -> torch.Tensor:
    t = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    k = torch.exp(-(t**2) / (2 * sigma * sigma))
    return k / k.sum()


@functools.lru_cache(maxsize=32)
def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """The originals' `disk`: a normalized aliased disk, smoothed by cv2.GaussianBlur (REFLECT_101)."""
    if radius <= 8:
        r, ksize = 8, 3
    else:
        r, ksize = int(radius), 5
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    d = ((xx**2 + yy**2) <= radius**2).to(torch.float64)
    d /= d.sum()
    g = _cv2_gaussian_1d(ksize, alias_blur)
    return ops.filter_separable(d, g, g, "mirror")


def defocus_blur(x: torch.Tensor, params: tuple, rng: ImageRNG) -> torch.Tensor:
    """Correlate each channel with the anti-aliased disk, borders REFLECT_101 (cv2.filter2D).

    Computed as a sum of separable terms (the kernel's SVD), exact to float rounding.
    """
    radius, alias = params
    return ops.correlate2d_lowrank(x, disk_kernel(float(radius), float(alias)), "mirror")


@functools.lru_cache(maxsize=32)
def glass_schedule(h: int, w: int, delta: int, iterations: int) -> tuple[np.ndarray, ...]:
    """Group the original's sequential pixel moves into conflict-free waves.

    The original visits (row, col) from (h - delta, w - delta) down to
    (delta + 1, delta + 1), `iterations` times, and at each one draws (dx, dy)
    in [-delta, delta) and executes `x[h, w], x[h', w'] = x[h', w'], x[h, w]`.
    On numpy views that line is a copy, not a swap (x[h, w] <- x[h', w'], then
    x[h', w'] <- the new x[h, w], i.e. itself), and that is what produced the
    released data sets, so it is what is reproduced here. A move writes one
    pixel and reads one of the (2 delta)^2 pixels around it. A move goes in the
    first wave after every earlier move that wrote a pixel it may read, and not
    before any earlier move that read or wrote its own pixel; one wave executes
    as one gather (all reads) then one scatter. The result equals the
    sequential loop's for every draw of offsets. Returns, per wave, the flat
    positions (row * w + col) and the step numbers (index of the draw).
    """
    last_write = np.full((h, w), -1, dtype=np.int64)
    last_read = np.full((h, w), -1, dtype=np.int64)
    waves: list[list[tuple[int, int]]] = []
    step = 0
    for _ in range(iterations):
        for r in range(h - delta, delta, -1):
            for c in range(w - delta, delta, -1):
                r0, r1, c0, c1 = r - delta, r + delta, c - delta, c + delta
                wave = max(int(last_write[r0:r1, c0:c1].max()) + 1, int(last_read[r, c]), int(last_write[r, c]) + 1)
                if wave == len(waves):
                    waves.append([])
                waves[wave].append((r * w + c, step))
                np.maximum(last_read[r0:r1, c0:c1], wave, out=last_read[r0:r1, c0:c1])
                last_write[r, c] = wave
                step += 1
    return tuple(np.asarray(wv, dtype=np.int64).T.copy() for wv in waves)


def glass_blur(x: torch.Tensor, params: tuple, rng: ImageRNG) -> torch.Tensor:
    """Gaussian blur, uint8 truncation, local pixel moves, gaussian blur again (as the original).

    The moves are executed exactly (see `glass_schedule`) on a per-image index
    map, batched over the images, so the result is the original's for the same
    offsets; the offsets come from this library's RNG instead of numpy's.
    """
    sigma, delta, iterations = float(params[0]), int(params[1]), int(params[2])
    n, c, h, w = x.shape
    y = torch.floor(ops.gaussian_filter(x, sigma) * 255.0 + 1e-6) / 255.0
    schedule = glass_schedule(h, w, delta, iterations)
    steps = sum(wv.shape[1] for wv in schedule)
    offs = rng.randint(0, (steps, 2), -delta, delta)  # (N, steps, [dx, dy])
    shift = offs[..., 1] * w + offs[..., 0]  # flat offset of the source pixel
    src = torch.arange(h * w, device=x.device).repeat(n, 1)
    for pos, stp in schedule:
        pos_t = torch.as_tensor(pos, device=x.device)
        stp_t = torch.as_tensor(stp, device=x.device)
        read = src.gather(1, pos_t.unsqueeze(0) + shift[:, stp_t])
        src[:, pos_t] = read
    y = y.reshape(n, c, h * w).gather(2, src.unsqueeze(1).expand(n, c, h * w)).reshape(n, c, h, w)
    return ops.gaussian_filter(y, sigma)


def motion_blur(x: torch.Tensor, params: tuple, rng: ImageRNG) -> torch.Tensor:
    """ImageMagick-style motion blur at an angle uniform in [-45, 45) degrees per image.

    make_cifar_c calls Wand's MagickMotionBlurImage on a PNG; `ops.motion_blur`
    is the same kernel and offsets (imagecorruptions' port of it), computed on
    floats (no 8-bit/16-bit quantum rounding inside ImageMagick).
    """
    radius, sigma = params
    angle = rng.uniform(0, (1,), torch.float64)[:, 0] * 90.0 - 45.0
    return ops.motion_blur(x, float(radius), float(sigma), angle)


def zoom_blur(x: torch.Tensor, params: tuple, rng: ImageRNG) -> torch.Tensor:
    """(x + sum of center-zoomed copies) / (count + 1), zooms np.arange(start, stop, step).

    Each clipped zoom is linear and separable, so all of them are one matrix
    sum Z = sum_z A_z (x) A_z applied per channel: one matmul for small images,
    a loop over the (<= 31) zoom factors of two small matmuls otherwise.
    """
    start, stop, step = params
    zooms = np.arange(start, stop, step)
    n, c, h, w = x.shape
    ah = torch.stack([ops.zoom_matrix(h, z, x.device, x.dtype) for z in zooms])
    aw = ah if w == h else torch.stack([ops.zoom_matrix(w, z, x.device, x.dtype) for z in zooms])
    if h * w <= 4096:
        m = torch.einsum("zab,zcd->acbd", ah, aw).reshape(h * w, h * w)
        m = m + torch.eye(h * w, dtype=x.dtype, device=x.device)
        out = (x.reshape(n * c, h * w) @ m.T).reshape(n, c, h, w)
    else:
        out = x.clone()
        for a, b in zip(ah, aw, strict=True):
            out += a @ x @ b.T
    return out / (len(zooms) + 1)
