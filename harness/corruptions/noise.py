"""Noise corruptions: gaussian, shot (Poisson), impulse (salt and pepper)."""

from __future__ import annotations

import torch

from harness.corruptions.rng import ImageRNG

__all__ = ["gaussian_noise", "impulse_noise", "shot_noise"]


def gaussian_noise(x: torch.Tensor, params: tuple, rng: ImageRNG) -> torch.Tensor:
    """x + N(0, std^2) per pixel and channel (as the original)."""
    (std,) = params
    return x + std * rng.normal(0, tuple(x.shape[1:]), x.dtype)


def shot_noise(x: torch.Tensor, params: tuple, rng: ImageRNG) -> torch.Tensor:
    raise NotImplementedError("shot_noise: not implemented yet")


def impulse_noise(x: torch.Tensor, params: tuple, rng: ImageRNG) -> torch.Tensor:
    raise NotImplementedError("impulse_noise: not implemented yet")
