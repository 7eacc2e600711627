"""Read the released CIFAR-10-C / CIFAR-100-C `.npy` files from a local root.

Layout of the archives (Hendrycks & Dietterich, zenodo 2535967 / 3555552):
`<root>/CIFAR-10-C/<kind>.npy`, shape (50000, 32, 32, 3) uint8 = severities
1..5 x 10000 test images in order, and `<root>/CIFAR-10-C/labels.npy`; the
same under `CIFAR-100-C`. `root` may also be the `CIFAR-10-C` folder itself.
Files are memory-mapped: only the requested severity's block is read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from harness.data.corruptions import CORRUPTIONS, SEVERITIES

__all__ = ["CIFAR_C_DIRS", "cifar_c_paths", "load_cifar_c"]

CIFAR_C_DIRS: dict[str, str] = {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C"}


def _candidates(root: Path, dataset: str, name: str) -> list[Path]:
    folder = CIFAR_C_DIRS[dataset]
    return [root / folder / name, root / name] if root.name != folder else [root / name]


def cifar_c_paths(root: str | os.PathLike, dataset: str, kind: str) -> tuple[Path, Path]:
    """(images, labels) .npy paths of `kind` under `root`; FileNotFoundError lists what was looked up."""
    if dataset not in CIFAR_C_DIRS:
        raise ValueError(f"dataset={dataset!r}: CIFAR-C exists for {sorted(CIFAR_C_DIRS)}")
    if kind not in CORRUPTIONS:
        raise ValueError(f"corruption kind {kind!r} unknown: expected one of {', '.join(CORRUPTIONS)}")
    root = Path(root).expanduser()
    found = []
    for name in (f"{kind}.npy", "labels.npy"):
        paths = _candidates(root, dataset, name)
        hit = next((p for p in paths if p.is_file()), None)
        if hit is None:
            raise FileNotFoundError(
                f"{CIFAR_C_DIRS[dataset]} file {name} not found; looked up: "
                + ", ".join(str(p) for p in paths)
                + f". Unpack the released {CIFAR_C_DIRS[dataset]}.tar under {root}."
            )
        found.append(hit)
    return found[0], found[1]


def load_cifar_c(
    root: str | os.PathLike, dataset: str, kind: str, severity: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One (kind, severity) set: x float32 (N, 3, 32, 32) in [0, 1], y int64 (N,)."""
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise ValueError(f"severity={severity!r}: expected an int in {list(SEVERITIES)}")
    xp, yp = cifar_c_paths(root, dataset, kind)
    images = np.load(xp, mmap_mode="r")
    labels = np.load(yp, mmap_mode="r")
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"{xp}: expected uint8 images of shape (5 * N, H, W, 3); got {images.dtype} {images.shape}")
    if len(images) % len(SEVERITIES) or len(labels) != len(images):
        raise ValueError(
            f"{xp}: {len(images)} images and {yp}: {len(labels)} labels; expected equal counts, "
            f"a multiple of {len(SEVERITIES)} (severities 1..5 stacked in order)"
        )
    per = len(images) // len(SEVERITIES)
    block = slice((severity - 1) * per, severity * per)
    # np.array copies the memory-mapped slice: torch refuses to wrap a read-only map
    x = torch.from_numpy(np.array(images[block])).permute(0, 3, 1, 2).float().div_(255.0)
    y = torch.from_numpy(np.asarray(labels[block]).astype(np.int64))
    return x.contiguous(), y
