"""The 15 CIFAR-10-C corruptions x 5 severities as batched torch ops.

`corrupt(images, kind, severity)` corrupts a whole (N, 3, H, W) batch on its own
device in one pass (no per-image Python loop), with the severity constants of
`make_cifar_c.py` (`constants="cifar"`) or of the `imagecorruptions` package
(`constants="imagenet"`); the constants live in `tables.py`. Randomness is a
counter-based hash of (seed, kind, severity, image id, element), so an image's
corruption does not depend on how the data set is batched, nor on the device.
Where the original needs a library (ImageMagick's motion blur, PIL's JPEG
codec) an equivalent is built here; each difference is documented in the
kind's module. Frost uses the original's photos where `imagecorruptions` is
installed (the `frost` extra), a procedural texture otherwise
(`frost_texture`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from harness.data.corruptions import blur, digital, noise, weather
from harness.data.corruptions.rng import ImageRNG
from harness.data.corruptions.tables import CIFAR_C, CORRUPTIONS, FIELDS, IMAGENET_C, TABLES
from harness.data.corruptions.weather import FROST_TEXTURES, frost_texture

__all__ = ["CIFAR_C", "CORRUPTIONS", "FIELDS", "FROST_TEXTURES", "IMAGENET_C", "SEVERITIES", "TABLES",
           "corrupt", "corruption_params", "frost_texture"]

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

Kernel = Callable[[torch.Tensor, tuple, ImageRNG], torch.Tensor]

_KERNELS: dict[str, Kernel] = {
    "gaussian_noise": noise.gaussian_noise,
    "shot_noise": noise.shot_noise,
    "impulse_noise": noise.impulse_noise,
    "defocus_blur": blur.defocus_blur,
    "glass_blur": blur.glass_blur,
    "motion_blur": blur.motion_blur,
    "zoom_blur": blur.zoom_blur,
    "snow": weather.snow,
    "frost": weather.frost,
    "fog": weather.fog,
    "brightness": digital.brightness,
    "contrast": digital.contrast,
    "elastic_transform": digital.elastic_transform,
    "pixelate": digital.pixelate,
    "jpeg_compression": digital.jpeg_compression,
}


def corruption_params(kind: str, severity: int, constants: str = "cifar") -> tuple:
    """The parameter tuple of (kind, severity) in a constants table (fields: `FIELDS[kind]`)."""
    if constants not in TABLES:
        raise ValueError(f"constants={constants!r}: expected one of {sorted(TABLES)}")
    if kind not in CORRUPTIONS:
        raise ValueError(f"corruption kind {kind!r} unknown: expected one of {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise ValueError(f"severity={severity!r}: expected an int in {list(SEVERITIES)}")
    return TABLES[constants][kind][severity - 1]


def corrupt(
    images: torch.Tensor,
    kind: str,
    severity: int,
    *,
    image_ids: torch.Tensor | None = None,
    seed: int = 0,
    constants: str = "cifar",
    quantize: bool = True,
    frost_texture: str = "auto",
) -> torch.Tensor:
    """Corrupt a batch of RGB images in [0, 1].

    images: (N, 3, H, W) float in [0, 1], any device. image_ids: (N,) int64, the
    images' indices in their data set (default arange(N)); they, with `seed`,
    kind and severity, key each image's random numbers. quantize: round down to
    the 1/255 grid at the end as the originals do (they store `np.uint8(...)`).
    frost_texture (frost only): auto (the photos where installed), photos or procedural.
    Returns a tensor of the same shape, dtype and device, in [0, 1].
    """
    params = corruption_params(kind, severity, constants)
    if frost_texture not in FROST_TEXTURES:
        raise ValueError(f"frost_texture={frost_texture!r}: expected one of {', '.join(FROST_TEXTURES)}")
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise ValueError("images must be a floating-point torch.Tensor of shape (N, 3, H, W) in [0, 1]")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W); got {tuple(images.shape)}")
    n, _, h, w = images.shape
    if h < 8 or w < 8:
        raise ValueError(f"images must be at least 8x8 pixels; got {h}x{w}")
    if n:
        lo, hi = (float(v) for v in torch.aminmax(images))  # NaN propagates into both
        if not (lo >= 0.0 and hi <= 1.0):
            raise ValueError(
                f"images must lie in [0, 1] (un-normalize first: x * std + mean); got range [{lo:.4g}, {hi:.4g}]"
            )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int; got {seed!r}")
    if image_ids is None:
        image_ids = torch.arange(n, dtype=torch.int64, device=images.device)
    else:
        if not isinstance(image_ids, torch.Tensor) or image_ids.shape != (n,) or image_ids.is_floating_point():
            raise ValueError(f"image_ids must be an integer tensor of shape ({n},), one id per image")
        image_ids = image_ids.to(device=images.device, dtype=torch.int64)
    if n == 0:
        return images.clone()
    work = images if images.dtype in (torch.float32, torch.float64) else images.float()
    rng = ImageRNG(seed, CORRUPTIONS.index(kind), severity, image_ids)
    if kind == "frost":
        out = weather.frost(work, params, rng, frost_texture)
    else:
        out = _KERNELS[kind](work, params, rng)
    if out is images:
        out = out.clone()
    out.clamp_(0.0, 1.0)
    if quantize:  # in place: these passes cost as much as the fastest kernels
        out.mul_(255.0).add_(1e-4).floor_().div_(255.0)
    return out.to(images.dtype)
