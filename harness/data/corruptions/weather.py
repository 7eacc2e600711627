"""Weather corruptions: snow, frost, fog (batched over the images)."""

from __future__ import annotations

import math

import torch

from harness.data.corruptions import ops
from harness.data.corruptions.rng import ImageRNG
from harness.data.corruptions.tables import FROST_STYLES

__all__ = ["fog", "frost", "frost_layer", "plasma_fractal", "snow"]

# Frost texture spectrum: power ~ 1 / (k^2 + k0^2) in cycles per photo pixel
# (a 1/f^2 "natural image" spectrum flattened below the photos' ~400 px scale).
_FROST_K0 = 1.0 / 400.0


def snow(x: torch.Tensor, params: tuple, rng: ImageRNG) -> torch.Tensor:
    """The original's snow: a thresholded, zoomed normal layer, motion-blurred, added twice.

    Layer ~ N(loc, scale) per pixel, center-zoomed by `zoom` (clipped_zoom),
    zeroed below `threshold`, clipped to [0, 1], motion-blurred (ImageMagick
    kernel, angle uniform in [-135, -45)) and rounded to 8 bits; the image is
    brightened toward max(x, 1.5 gray + 0.5) and the layer and its 180-degree
    rotation are added.
    """
    loc, scale, zoom, threshold, radius, sigma, weight = params
    h, w = x.shape[-2:]
    layer = loc + scale * rng.normal(0, (1, h, w), x.dtype)
    layer = ops.zoom_matrix(h, zoom, x.device, x.dtype) @ layer @ ops.zoom_matrix(w, zoom, x.device, x.dtype).T
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer).clamp(0, 1)
    angle = rng.uniform(1, (1,), torch.float64)[:, 0] * 90.0 - 135.0
    layer = ops.motion_blur(layer, float(radius), float(sigma), angle)
    layer = torch.round(layer * 255.0) / 255.0
    x = weight * x + (1 - weight) * torch.maximum(x, ops.rgb_to_gray(x) * 1.5 + 0.5)
    return x + layer + torch.flip(layer, dims=(-2, -1))


def frost_layer(n: int, h: int, w: int, px_per_px: float, rng: ImageRNG, dtype: torch.dtype) -> torch.Tensor:
    """(N, 3, H, W) procedural frost in [0, 1]: one of `FROST_STYLES` per image.

    A Gaussian random field with power ~ 1 / (k^2 + k0^2) (k in cycles per
    photo pixel, `px_per_px` photo pixels per image pixel) stands in for a
    random crop of a frost photo: the frequencies the crop resolves come from
    an FFT-filtered white noise, the lower ones (the crop's mean) from one
    normal offset with their integrated power. Unit total variance, then the
    style's per-channel mean and std, clipped to [0, 255].
    """
    dev = rng.device
    fy = torch.fft.fftfreq(h, device=dev, dtype=torch.float64) / px_per_px
    fx = torch.fft.fftfreq(w, device=dev, dtype=torch.float64) / px_per_px
    k2 = fy.view(-1, 1) ** 2 + fx.view(1, -1) ** 2
    power = 1.0 / (k2 + _FROST_K0**2)
    power[0, 0] = 0.0
    cell = 1.0 / (h * w * px_per_px**2)  # frequency-plane area per FFT cell
    var_within = float(power.sum()) * cell
    # the zero-frequency cell as a disk of the same area, radius k_dc
    k_dc2 = cell / math.pi
    var_between = math.pi * math.log1p(k_dc2 / _FROST_K0**2)
    white = rng.normal(0, (h, w), torch.float64)
    field = torch.fft.ifft2(torch.fft.fft2(white) * torch.sqrt(power * cell * h * w)).real
    field = field + math.sqrt(var_between) * rng.normal(1, (1,), torch.float64).view(n, 1, 1)
    field = field / math.sqrt(var_within + var_between)
    style = rng.randint(2, (1,), 0, len(FROST_STYLES))[:, 0]
    mean = torch.tensor([s[0] for s in FROST_STYLES], dtype=torch.float64, device=dev)[style]
    std = torch.tensor([s[1] for s in FROST_STYLES], dtype=torch.float64, device=dev)[style]
    layer = mean.view(n, 3, 1, 1) + std.view(n, 3, 1, 1) * field.unsqueeze(1)
    return (layer.clamp(0, 255) / 255.0).to(dtype)


def frost(x: torch.Tensor, params: tuple, rng: ImageRNG) -> torch.Tensor:
    """image_weight * x + frost_weight * frost texture (the original blends a random photo crop).

    The photos are replaced by `frost_layer`, a texture with the same
    per-channel moments; the texture is smooth noise, not ice crystals.
    """
    a, b, px_per_px = params
    n, _, h, w = x.shape
    return a * x + b * frost_layer(n, h, w, float(px_per_px), rng, x.dtype)


def plasma_fractal(n: int, mapsize: int, wibbledecay: float, rng: ImageRNG, dtype: torch.dtype) -> torch.Tensor:
    """The originals' diamond-square plasma fractal, for N images at once: (N, M, M) in [0, 1]."""
    if mapsize & (mapsize - 1):
        raise ValueError(f"plasma_fractal: mapsize must be a power of two, got {mapsize}")
    m = torch.zeros(n, mapsize, mapsize, dtype=torch.float64, device=rng.device)
    step, wibble, stream = mapsize, 100.0, 0

    def wibbled(total: torch.Tensor) -> torch.Tensor:
        nonlocal stream
        u = rng.uniform(stream, tuple(total.shape[1:]), torch.float64)
        stream += 1
        return total / 4 + wibble * (2 * wibble * u - wibble)

    while step >= 2:
        half = step // 2
        corner = m[:, 0::step, 0::step]
        sq = corner + torch.roll(corner, -1, dims=1)
        sq = sq + torch.roll(sq, -1, dims=2)
        m[:, half::step, half::step] = wibbled(sq)
        dr = m[:, half::step, half::step]
        ul = m[:, 0::step, 0::step]
        lt = dr + torch.roll(dr, 1, dims=1) + ul + torch.roll(ul, -1, dims=2)
        m[:, 0::step, half::step] = wibbled(lt)
        tt = dr + torch.roll(dr, 1, dims=2) + ul + torch.roll(ul, -1, dims=1)
        m[:, half::step, 0::step] = wibbled(tt)
        step = half
        wibble /= wibbledecay
    m = m - m.amin(dim=(1, 2), keepdim=True)
    return (m / m.amax(dim=(1, 2), keepdim=True)).to(dtype)


def fog(x: torch.Tensor, params: tuple, rng: ImageRNG) -> torch.Tensor:
    """(x + strength * plasma) * max / (max + strength), plasma of side next_pow2(max(H, W))."""
    strength, decay = params
    n, _, h, w = x.shape
    size = 1 << (max(h, w) - 1).bit_length()
    plasma = plasma_fractal(n, size, float(decay), rng, x.dtype)[:, :h, :w].unsqueeze(1)
    max_val = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + strength * plasma) * max_val / (max_val + strength)
