"""Weather corruptions: snow, frost, fog."""

from __future__ import annotations

import torch

from harness.corruptions.rng import ImageRNG

__all__ = ["fog", "frost", "snow"]


def _todo(name: str) -> None:
    raise NotImplementedError(f"{name}: not implemented yet")


def snow(x: torch.Tensor, params: tuple, rng: ImageRNG) -> torch.Tensor:
    _todo("snow")


def frost(x: torch.Tensor, params: tuple, rng: ImageRNG) -> torch.Tensor:
    _todo("frost")


def fog(x: torch.Tensor, params: tuple, rng: ImageRNG) -> torch.Tensor:
    _todo("fog")
