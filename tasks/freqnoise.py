"""freqnoise: accuracy under random noise of one spatial frequency band (Park & Kim 2022, Fig. 2b).

The paper's finding: ViT loses ≈15 % accuracy to noise at 0.3π but ≈4.5 % at
0.8π, ResNet ≈15 % at 0.9π — MSAs are low-pass filters, robust to
high-frequency noise. The noise (`harness.data.freqnoise`): Gaussian noise kept on
the square ring max(|f_u|, |f_v|) ∈ [frequency − bandwidth, frequency +
bandwidth] (units of π, the `fourier` task's frequency convention), scaled to
L2 norm `noise_norm` per image, seeded per (noise_seed, sample id).

`space: pixel` (default) adds the noise to the image in pixel units ([0, 1]
scale) — "noise added to the input image", comparable across datasets — i.e.
x_normalized + noise / std; `space: normalized` adds it to the normalized
tensor as the original's `FreqAttack` does with its normalized batches. The
result is not clipped to [0, 1] (clipping would put energy outside the band).

One unit per (model or checkpoint, frequency); `frequency: -1` (default)
expands to one unit per point of 0.0, 0.1, …, 1.0 (a list works as any sweep
axis). Every row carries the clean metrics (once per worker) and acc_drop =
clean_acc − acc.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import torch

from harness.engine.context import UnitContext
from harness.data.freqnoise import DEFAULT_GRID, frequency_noise
from harness.analysis.metrics import classification_metrics
from harness.engine.params import Param
from tasks._workload import cached_clean_metrics, unit_samples
from harness.engine.registry import Task, expand_axis, register_task
from harness.engine.units import WorkUnit
from tasks._workload import EVAL_PARAMS, MODEL_PARAMS, check_model_and_data
from harness.analysis.perturb import predict_logits

ALL_FREQUENCIES = -1.0
SPACES = ("pixel", "normalized")
#: The params a unit's noise depends on: units differing only here share the clean metrics.
NOISE_PARAMS = ("frequency", "bandwidth", "noise_norm", "noise_seed", "space")

PARAMS = MODEL_PARAMS + EVAL_PARAMS + (
    Param("frequency", float, ALL_FREQUENCIES, "centre of the noise band in units of π "
          "(0: DC, 1: Nyquist, per axis); -1: one unit per 0.0, 0.1, …, 1.0", min=-1.0, max=1.0),
    Param("bandwidth", float, 0.2, "half-width of the band in units of π (the paper's ±0.2)",
          min=0.0),
    Param("noise_norm", float, 5.0, "L2 norm of each image's noise over all channels and "
          "pixels (5.0 on 3x32x32: RMS 0.09 in pixel units)", min=0.0),
    Param("noise_seed", int, 0, "seed of the noise (with each sample's index)", min=0),
    Param("space", str, "pixel", "add the noise to pixels ([0, 1] scale) or to the normalized "
          "input", choices=SPACES),
)

OUTPUT = pa.schema([
    pa.field("acc", pa.float64()),
    pa.field("nll", pa.float64()),
    pa.field("clean_acc", pa.float64()),
    pa.field("clean_nll", pa.float64()),
    pa.field("acc_drop", pa.float64()),  # clean_acc - acc
    pa.field("n_samples", pa.int64()),
])


def run(unit: WorkUnit, ctx: UnitContext) -> list[dict[str, Any]]:
    p = unit.params
    if p["frequency"] < 0:
        raise ValueError("frequency -1 is expanded into one unit per grid point; a unit needs "
                         "a frequency in [0, 1]")
    model, data, n = unit_samples(ctx, p)
    clean = cached_clean_metrics(ctx, p, model, data, n, NOISE_PARAMS)
    scale = 1.0 / torch.tensor(data.std, dtype=torch.float32, device=ctx.device).view(1, -1, 1, 1)
    if p["space"] == "normalized":
        scale = torch.ones_like(scale)

    def add_noise(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        noise = frequency_noise(tuple(x.shape), p["frequency"], p["bandwidth"], p["noise_norm"],
                                image_ids=ids, seed=p["noise_seed"], device=x.device,
                                dtype=x.dtype)
        return x + noise * scale

    logits = predict_logits(model, data.x[:n], p["batch_size"], ctx.device, add_noise)
    noisy = classification_metrics(logits, data.y[:n], p["ece_bins"])
    return [{"acc": noisy["acc"], "nll": noisy["nll"], "clean_acc": clean["acc"],
             "clean_nll": clean["nll"], "acc_drop": clean["acc"] - noisy["acc"],
             "n_samples": n}]


def check(params: dict[str, Any]) -> list[str]:
    errors = check_model_and_data(params)
    f = params["frequency"]
    if f != ALL_FREQUENCIES and f < 0:
        errors.append(f"frequency: {f} is not in [0, 1] (units of π); -1 expands to the grid "
                      f"{', '.join(map(str, DEFAULT_GRID))}")
    return errors


def expand(combo: dict[str, Any]) -> list[dict[str, Any]]:
    """frequency -1 -> one unit per DEFAULT_GRID point; a frequency -> that unit."""
    return expand_axis(combo, "frequency", ALL_FREQUENCIES, DEFAULT_GRID)


register_task(Task(
    name="freqnoise",
    description="accuracy drop under random noise restricted to a band of spatial frequencies",
    params=PARAMS,
    output_schema=OUTPUT,
    run=run,
    expand=expand,
    check=check,
))
