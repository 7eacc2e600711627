"""Severity constants: kind -> five parameter tuples (severity 1..5).

`CIFAR_C` are the constants of Hendrycks & Dietterich's `make_cifar_c.py`
(github.com/hendrycks/robustness, ImageNet-C/create_c); `IMAGENET_C` those of
the `imagecorruptions` package 1.1.2 (ImageNet-C severities, its variants of
elastic transform and pixelate). Each tuple's fields are named in `FIELDS`;
sizes given as fractions are multiplied by the image side at run time.
"""

from __future__ import annotations

__all__ = ["CIFAR_C", "CORRUPTIONS", "FIELDS", "FROST_PHOTOS", "FROST_STYLES", "IMAGENET_C", "TABLES"]

#: The 15 corruptions in CIFAR-10-C order.
CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)

#: What each parameter of a kind means.
FIELDS: dict[str, tuple[str, ...]] = {
    "gaussian_noise": ("std",),
    "shot_noise": ("photons_per_unit",),
    "impulse_noise": ("amount",),
    "defocus_blur": ("radius", "alias_blur"),
    "glass_blur": ("sigma", "max_delta", "iterations"),
    "motion_blur": ("radius", "sigma"),
    "zoom_blur": ("zoom_start", "zoom_stop", "zoom_step"),
    "snow": ("loc", "scale", "zoom", "threshold", "blur_radius", "blur_sigma", "image_weight"),
    "frost": ("image_weight", "frost_weight", "photo_px_per_px"),
    "fog": ("strength", "wibble_decay"),
    "brightness": ("value_shift",),
    "contrast": ("factor",),
    # displacement = gaussian_filter(U(-1, 1), sigma) * amplitude, plus a random
    # affine moving three points by up to `affine` (all as fractions of the side)
    "elastic_transform": ("amplitude", "sigma", "affine"),
    "pixelate": ("scale", "upsample"),
    "jpeg_compression": ("quality",),
}

_S = 32.0  # make_cifar_c.py's IMSIZE, to write its elastic constants as fractions

CIFAR_C: dict[str, tuple[tuple, ...]] = {
    "gaussian_noise": ((0.04,), (0.06,), (0.08,), (0.09,), (0.10,)),
    "shot_noise": ((500,), (250,), (100,), (75,), (50,)),
    "impulse_noise": ((0.01,), (0.02,), (0.03,), (0.05,), (0.07,)),
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    "zoom_blur": ((1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01), (1, 1.26, 0.01)),
    "snow": (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
    # make_cifar_c shrinks the frost photos 5x before cropping
    "frost": ((1, 0.2, 5.0), (1, 0.3, 5.0), (0.9, 0.4, 5.0), (0.85, 0.4, 5.0), (0.75, 0.45, 5.0)),
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    "brightness": ((0.05,), (0.1,), (0.15,), (0.2,), (0.3,)),
    "contrast": ((0.75,), (0.5,), (0.4,), (0.3,), (0.15,)),
    "elastic_transform": tuple(
        (a / _S, s / _S, f / _S)
        for a, s, f in (
            (_S * 0, _S * 0, _S * 0.08),
            (_S * 0.05, _S * 0.2, _S * 0.07),
            (_S * 0.08, _S * 0.06, _S * 0.06),
            (_S * 0.1, _S * 0.04, _S * 0.05),
            (_S * 0.1, _S * 0.03, _S * 0.03),
        )
    ),
    "pixelate": ((0.95, "box"), (0.9, "box"), (0.85, "box"), (0.75, "box"), (0.65, "box")),
    "jpeg_compression": ((80,), (65,), (58,), (50,), (40,)),
}

IMAGENET_C: dict[str, tuple[tuple, ...]] = {
    "gaussian_noise": ((0.08,), (0.12,), (0.18,), (0.26,), (0.38,)),
    "shot_noise": ((60,), (25,), (12,), (5,), (3,)),
    "impulse_noise": ((0.03,), (0.06,), (0.09,), (0.17,), (0.27,)),
    "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
    "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    "zoom_blur": ((1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03)),
    "snow": (
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    ),
    # imagecorruptions enlarges the photos 1.1x (for images smaller than them)
    "frost": tuple((a, b, 1 / 1.1) for a, b in ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))),
    "fog": ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)),
    "brightness": ((0.1,), (0.2,), (0.3,), (0.4,), (0.5,)),
    "contrast": ((0.4,), (0.3,), (0.2,), (0.1,), (0.05,)),
    # imagecorruptions: sigma = 0.01 * side, alpha = 250 * (0.05 .. 0.12),
    # uniform noise of half-width 0.005 * side, no affine step
    "elastic_transform": tuple((250 * a * 0.005, 0.01, 0.0) for a in (0.05, 0.065, 0.085, 0.1, 0.12)),
    "pixelate": ((0.6, "nearest"), (0.5, "nearest"), (0.4, "nearest"), (0.3, "nearest"), (0.25, "nearest")),
    "jpeg_compression": ((25,), (18,), (15,), (10,), (7,)),
}

TABLES: dict[str, dict[str, tuple[tuple, ...]]] = {"cifar": CIFAR_C, "imagenet": IMAGENET_C}

#: The frost photos the originals pick from (`np.random.randint(5)`: frost6 never), in the
#: `imagecorruptions` package's `frost/` folder.
FROST_PHOTOS: tuple[str, ...] = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")

#: Per-channel RGB mean and std (0..255) of the frost photos the originals
#: blend in (frost1.png .. frost5.jpg of ImageNet-C; `np.random.randint(5)`
#: never picks frost6, and frost2 and frost3 are the same picture), measured
#: here on the copies shipped with imagecorruptions 1.1.2. The procedural frost
#: layer (used where the photos are not installed) draws one style per image and
#: matches these moments.
FROST_STYLES: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...] = (
    ((77.7, 149.1, 165.7), (26.9, 16.5, 15.3)),
    ((200.8, 205.4, 214.5), (21.4, 22.1, 22.6)),
    ((200.8, 205.4, 214.5), (21.4, 22.1, 22.6)),
    ((137.6, 152.8, 165.2), (28.5, 28.5, 29.9)),
    ((112.4, 123.4, 134.8), (44.4, 43.3, 41.7)),
)
