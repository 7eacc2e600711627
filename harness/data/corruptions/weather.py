"""Weather corruptions: snow, frost, fog (batched over the images).

Frost blends in a crop of one of the five frost photos of ImageNet-C where they
are installed (the `imagecorruptions` package ships them: `pip install
harness[frost]`), else a procedural texture with the photos' per-channel
moments (`frost_layer`); `frost_texture()` says which a run uses.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from harness.data.corruptions import ops
from harness.data.corruptions.rng import ImageRNG
from harness.data.corruptions.tables import FROST_PHOTOS, FROST_STYLES

__all__ = ["FROST_TEXTURES", "fog", "frost", "frost_layer", "frost_photo_dir", "frost_photo_layer",
           "frost_texture", "plasma_fractal", "snow"]

#: frost's texture choices: auto = photos where installed, else procedural.
FROST_TEXTURES = ("auto", "photos", "procedural")

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


def frost_photo_dir() -> Path | None:
    """The folder of the frost photos shipped with `imagecorruptions`, or None when the package
    (or a photo) is missing. Finds the package without importing it."""
    try:
        spec = importlib.util.find_spec("imagecorruptions")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        folder = Path(root) / "frost"
        if all((folder / name).is_file() for name in FROST_PHOTOS):
            return folder
    return None


def frost_texture(choice: str = "auto") -> str:
    """What frost blends in under `choice` (one of FROST_TEXTURES): "photos" or "procedural".
    ValueError when photos are asked for and not installed."""
    if choice not in FROST_TEXTURES:
        raise ValueError(f"frost_texture={choice!r}: expected one of {', '.join(FROST_TEXTURES)}")
    if choice == "procedural":
        return "procedural"
    if frost_photo_dir() is None:
        if choice == "photos":
            raise ValueError("frost_texture='photos': the ImageNet-C frost photos are not "
                             "installed; pip install 'harness[frost]' (imagecorruptions), or "
                             "use frost_texture: auto / procedural")
        return "procedural"
    return "photos"


@functools.lru_cache(maxsize=None)
def _photo(index: int) -> torch.Tensor:
    """Frost photo `index` as (3, H, W) float64 RGB in 0..255 (alpha dropped, as cv2.imread)."""
    import numpy as np
    from PIL import Image

    folder = frost_photo_dir()
    if folder is None:
        raise ValueError("the frost photos are not installed (pip install 'harness[frost]')")
    with Image.open(folder / FROST_PHOTOS[index]) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float64)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def _linear_matrix(n_in: int, n_out: int, inv_scale: float) -> torch.Tensor:
    """(n_out, n_in) float64 weights of cv2's INTER_LINEAR resize along one axis: source
    position (i + 0.5)·inv_scale − 0.5, clamped to the edges as cv2 does (no antialiasing)."""
    pos = (torch.arange(n_out, dtype=torch.float64) + 0.5) * inv_scale - 0.5
    lo = pos.floor()
    frac = pos - lo
    frac = torch.where((lo < 0) | (lo >= n_in - 1), torch.zeros_like(frac), frac)
    lo = lo.clamp(0, n_in - 1).long()
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    m[rows, lo] += 1 - frac
    m[rows, (lo + 1).clamp(max=n_in - 1)] += frac
    return m


@functools.lru_cache(maxsize=32)
def _scaled_photo(index: int, h: int, w: int, px_per_px: float, device: torch.device) -> torch.Tensor:
    """Photo `index` resized as the originals do before cropping an h × w patch: (3, H', W')
    float in 0..255.

    make_cifar_c (px_per_px 5): cv2.resize(fx=fy=0.2), bilinear, size rounded. imagecorruptions
    (px_per_px 1/1.1): scale max(1, h/H, w/W) · 1.1 — so that the photo covers the image —,
    size rounded up, bicubic. Generally the scale is max(1, h/H, w/W) / px_per_px, at least
    (side + 1) / photo side so that a crop exists.
    """
    photo = _photo(index)
    ph, pw = photo.shape[-2:]
    scale = max(1.0, h / ph, w / pw) / px_per_px
    if scale > 1 or scale * min(ph / (h + 1), pw / (w + 1)) < 1:
        scale = max(scale, (h + 1) / ph, (w + 1) / pw)
        size = (math.ceil(ph * scale), math.ceil(pw * scale))
        out = F.interpolate(photo.unsqueeze(0), size=size, mode="bicubic", align_corners=False)[0]
    else:  # shrinking as make_cifar_c: cv2 maps with 1/scale, rounds the size
        my = _linear_matrix(ph, round(ph * scale), 1 / scale)
        mx = _linear_matrix(pw, round(pw * scale), 1 / scale)
        out = my @ photo @ mx.T
    return out.clamp(0, 255).to(device)


def frost_photo_layer(n: int, h: int, w: int, px_per_px: float, rng: ImageRNG,
                      dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, 3, H, W) crops of the frost photos in [0, 1], and per image the photo index (one
    of the first five, as the originals' randint(5); same stream as `frost_layer`'s style)
    and the crop's top-left corner (uniform over [0, side − crop), as their randint)."""
    dev = rng.device
    style = rng.randint(2, (1,), 0, len(FROST_PHOTOS))[:, 0]
    u = rng.uniform(3, (2,), torch.float64)
    top = torch.zeros(n, dtype=torch.int64, device=dev)
    left = torch.zeros_like(top)
    layer = torch.empty(n, 3, h, w, dtype=torch.float64, device=dev)
    rows, cols = torch.arange(h, device=dev), torch.arange(w, device=dev)
    for k in range(len(FROST_PHOTOS)):
        sel = (style == k).nonzero().flatten()
        if not len(sel):
            continue
        photo = _scaled_photo(k, h, w, float(px_per_px), dev)
        ph, pw = photo.shape[-2:]
        t = (u[sel, 0] * (ph - h)).long().clamp_(max=ph - h - 1)
        lft = (u[sel, 1] * (pw - w)).long().clamp_(max=pw - w - 1)
        top[sel], left[sel] = t, lft
        r = (t.view(-1, 1) + rows).view(-1, h, 1)
        c = (lft.view(-1, 1) + cols).view(-1, 1, w)
        layer[sel] = photo[:, r, c].permute(1, 0, 2, 3)
    return (layer / 255.0).to(dtype), style, top, left


def frost(x: torch.Tensor, params: tuple, rng: ImageRNG, texture: str = "auto") -> torch.Tensor:
    """image_weight * x + frost_weight * a crop of a frost photo, as the originals — or, where
    the photos are not installed (or texture="procedural"), `frost_layer`: a texture with
    the photos' per-channel moments that is smooth noise, not ice crystals."""
    a, b, px_per_px = params
    n, _, h, w = x.shape
    if frost_texture(texture) == "photos":
        layer = frost_photo_layer(n, h, w, float(px_per_px), rng, x.dtype)[0]
    else:
        layer = frost_layer(n, h, w, float(px_per_px), rng, x.dtype)
    return a * x + b * layer


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
