"""fourier: relative log amplitude of the 2D Fourier-transformed feature map of every block.

Park & Kim (2022) Fig. 2a / 8: MSAs act as low-pass filters, Convs as
high-pass ones. For each block with a spatial output (class tokens dropped,
tokens reshaped to their grid; pooled features and the head are skipped),
log(|FFT2| + 1e-6) averaged over samples and channels, read along the
half-diagonal from frequency 0 to π, and Δ log amplitude = logA(f) − logA(0).
Formulas and the `diagonal` option (the original notebook's reading, which
stops one bin short of π) are in `harness.analysis.features`. Eval mode throughout.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from harness.engine.context import UnitContext
from harness.analysis.features import DIAGONALS, FourierProfile
from tasks._blocks import (BLOCK_FIELDS, accumulate_spatial, check_decomposable, map_columns, representation_params)
from harness.engine.params import Param
from harness.engine.registry import Task, register_task
from harness.engine.units import WorkUnit
from tasks._workload import check_model_and_data

PARAMS = representation_params() + (
    Param("diagonal", str, "nyquist", "half-diagonal read: nyquist (0..π inclusive) or "
          "original (the notebook's, stops one bin short of π)", choices=DIAGONALS),
)

OUTPUT = pa.schema(list(BLOCK_FIELDS) + [
    pa.field("height", pa.int64()),
    pa.field("width", pa.int64()),
    pa.field("channels", pa.int64()),
    pa.field("frequency", pa.float64()),  # units of π, per axis
    pa.field("log_amplitude", pa.float64()),
    pa.field("delta_log_amplitude", pa.float64()),
    pa.field("is_max_frequency", pa.bool_()),
    pa.field("n_samples", pa.int64()),
])


def run(unit: WorkUnit, ctx: UnitContext) -> list[dict[str, Any]]:
    diagonal = unit.params["diagonal"]
    parts, n, maps = accumulate_spatial(unit, ctx, lambda: FourierProfile(diagonal))
    rows = []
    for i, acc, shape in maps:
        freqs, log_amp, delta = acc.value()
        columns = map_columns(parts, i, shape, n)
        for k in range(len(freqs)):
            rows.append({**columns, "frequency": float(freqs[k]),
                         "log_amplitude": float(log_amp[k]),
                         "delta_log_amplitude": float(delta[k]),
                         "is_max_frequency": k == len(freqs) - 1})
    return rows


def check(params: dict[str, Any]) -> list[str]:
    return check_model_and_data(params) or check_decomposable(params)


register_task(Task(
    name="fourier",
    description="Δ log amplitude of Fourier-transformed feature maps, per block and frequency",
    params=PARAMS,
    output_schema=OUTPUT,
    run=run,
    check=check,
))
