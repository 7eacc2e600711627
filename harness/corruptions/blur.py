"""Blur corruptions: defocus, glass, motion, zoom."""

from __future__ import annotations

import torch

from harness.corruptions.rng import ImageRNG

__all__ = ["defocus_blur", "glass_blur", "motion_blur", "zoom_blur"]


def _todo(name: str) -> None:
    raise NotImplementedError(f"{name}: not implemented yet")


def defocus_blur(x: torch.Tensor, params: tuple, rng: ImageRNG) -> torch.Tensor:
    _todo("defocus_blur")


def glass_blur(x: torch.Tensor, params: tuple, rng: ImageRNG) -> torch.Tensor:
    _todo("glass_blur")


def motion_blur(x: torch.Tensor, params: tuple, rng: ImageRNG) -> torch.Tensor:
    _todo("motion_blur")


def zoom_blur(x: torch.Tensor, params: tuple, rng: ImageRNG) -> torch.Tensor:
    _todo("zoom_blur")
