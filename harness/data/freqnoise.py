"""Random noise restricted to a band of the 2D Fourier domain (Park & Kim 2022, Fig. 2b).

The paper measures the accuracy drop under "frequency-based random noise":
random noise whose spectrum is kept only on a ring around frequency f. The
code was never released; the original repository's `ops/adversarial.py`
(`FreqAttack._fourier_mask`, lines 124-175) shows the recipe: FFT of a random
perturbation, keep a *square* annulus of the fftshift-ed spectrum (the
difference of two centred squares of sides ≈ (f ± s)·h/π), inverse FFT.

Here, for an h×w image (any h, w):

    f_u = 2·fftfreq(h)[u], f_v = 2·fftfreq(w)[v]   (units of π per axis, in [−1, 1))
    radius(u, v) = max(|f_u|, |f_v|)
    band = { (u, v) : |radius(u, v) − frequency| ≤ bandwidth }     (closed, 1e-9 slack)
    noise = ifft2(mask_band · fft2(z)),   z ~ N(0, 1) per (image, channel, pixel)
    noise ← noise · noise_norm / ‖noise‖₂   (per image, over all channels and pixels)

The radius is the per-axis frequency of `harness.analysis.features` (its half-diagonal
point (k, k) of an s×s map is frequency 2k/s, and so is its radius here), and
the max-norm makes the ring the original's square annulus. The mask is
symmetric under (u, v) → (−u, −v), so the filtered noise is real (we take the
real part of a result whose imaginary part is round-off) and *all* its energy
lies in the band; the original's squares are one bin asymmetric at even sizes
and it keeps `.real` of a non-Hermitian product, which leaks a little energy.
The original scales ±eps sign noise before masking, so its norm changes with f;
here the norm is fixed (PAPER.md: "at a fixed norm"), so curves at different f
compare the same perturbation energy.

Randomness: z comes from the corruption library's counter-based `ImageRNG`
keyed by (seed, image id), so an image's noise does not depend on batching or
device, and the *same* z is filtered at every frequency (common random
numbers: the accuracy-vs-frequency curve is not jittered by fresh draws).
"""

from __future__ import annotations

import torch

from harness.data.corruptions.rng import ImageRNG

__all__ = ["DEFAULT_GRID", "band_mask", "frequency_noise", "frequency_radius"]

#: The grid `frequency: -1` expands to (units of π).
DEFAULT_GRID: tuple[float, ...] = tuple(round(0.1 * i, 10) for i in range(11))
#: Key of the frequency-noise streams in ImageRNG (distinct from the corruption kinds 0..14).
_RNG_KIND = 0x46524551  # "FREQ"
_SLACK = 1e-9


def frequency_radius(h: int, w: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(h, w) float64: max(|f_u|, |f_v|) in units of π, unshifted FFT layout (DC at [0, 0])."""
    fu = 2.0 * torch.fft.fftfreq(h, dtype=torch.float64, device=device).abs()
    fv = 2.0 * torch.fft.fftfreq(w, dtype=torch.float64, device=device).abs()
    return torch.maximum(fu[:, None], fv[None, :])


def band_mask(h: int, w: int, frequency: float, bandwidth: float,
              device: torch.device | str = "cpu") -> torch.Tensor:
    """(h, w) bool: the FFT bins whose radius lies within frequency ± bandwidth (units of π).

    Raises ValueError when no bin of an h×w image lies in the band (bins are
    multiples of 2/h π per axis), naming the nearest frequencies there are.
    """
    if not 0.0 <= frequency <= 1.0 or bandwidth < 0.0:
        raise ValueError(f"frequency must lie in [0, 1] (units of π) and bandwidth be >= 0; got "
                         f"frequency={frequency}, bandwidth={bandwidth}")
    radius = frequency_radius(h, w, device)
    mask = (radius - frequency).abs() <= bandwidth + _SLACK
    if not mask.any():
        levels = sorted({round(float(r), 6) for r in radius.unique()})
        raise ValueError(f"no Fourier bin of a {h}x{w} image lies within {frequency} ± {bandwidth}π; "
                         f"the radii present are {levels}: widen `bandwidth`")
    return mask


def frequency_noise(shape: tuple[int, int, int, int], frequency: float, bandwidth: float,
                    noise_norm: float, *, image_ids: torch.Tensor | None = None, seed: int = 0,
                    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
                    ) -> torch.Tensor:
    """Band-limited noise of shape (N, C, H, W), L2 norm `noise_norm` per image (module docstring).

    image_ids: (N,) int64 ids of the images in their data set (default arange(N));
    with `seed` they determine each image's noise, whatever the batch.
    Computed in float64, returned as `dtype` on `device`.
    """
    n, c, h, w = shape
    if noise_norm < 0:
        raise ValueError(f"noise_norm must be >= 0, got {noise_norm}")
    if image_ids is None:
        image_ids = torch.arange(n, dtype=torch.int64, device=device)
    elif image_ids.shape != (n,):
        raise ValueError(f"image_ids must have shape ({n},), got {tuple(image_ids.shape)}")
    mask = band_mask(h, w, frequency, bandwidth, device)
    z = ImageRNG(seed, _RNG_KIND, 0, image_ids.to(device, torch.int64)).normal(
        0, (c, h, w), torch.float64)
    noise = torch.fft.ifft2(torch.fft.fft2(z) * mask).real
    norm = noise.flatten(1).norm(dim=1).clamp_min(torch.finfo(torch.float64).tiny)
    return (noise * (noise_norm / norm).view(n, 1, 1, 1)).to(dtype)

