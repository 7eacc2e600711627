"""Digital corruptions: brightness, contrast, elastic transform, pixelate, JPEG."""

from __future__ import annotations

import torch

from harness.corruptions.rng import ImageRNG

__all__ = ["brightness", "contrast", "elastic_transform", "jpeg_compression", "pixelate"]


def _todo(name: str) -> None:
    raise NotImplementedError(f"{name}: not implemented yet")


def brightness(x: torch.Tensor, params: tuple, rng: ImageRNG) -> torch.Tensor:
    _todo("brightness")


def contrast(x: torch.Tensor, params: tuple, rng: ImageRNG) -> torch.Tensor:
    _todo("contrast")


def elastic_transform(x: torch.Tensor, params: tuple, rng: ImageRNG) -> torch.Tensor:
    _todo("elastic_transform")


def pixelate(x: torch.Tensor, params: tuple, rng: ImageRNG) -> torch.Tensor:
    _todo("pixelate")


def jpeg_compression(x: torch.Tensor, params: tuple, rng: ImageRNG) -> torch.Tensor:
    _todo("jpeg_compression")
