"""featvar: feature-map variance of every block (Park & Kim 2022, Fig. 9).

MSAs reduce the variance of feature maps, Convs and MLPs increase it. For each
block with a spatial output (class tokens dropped, tokens reshaped to their
grid; pooled features and the head are skipped), one of two definitions
(`harness.analysis.features` has the formulas):

- spatial (default; what the original featuremap_variance.ipynb computes,
  `latent.var(dim=[-1, -2]).mean(dim=[0, 1])`): the unbiased variance over the
  H×W positions of each (sample, channel) map, averaged over samples and channels;
- samples (what the author agreed to in issue #6): the unbiased variance over
  samples of each feature element (c, h, w), averaged over elements.

Eval mode; all `max_samples` samples, exactly combined across batches.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from harness.engine.context import UnitContext
from harness.analysis.features import VARIANCE_DEFINITIONS, FeatureVariance
from tasks._blocks import (BLOCK_FIELDS, accumulate_spatial, check_decomposable, map_columns, representation_params)
from harness.engine.params import Param
from harness.engine.registry import Task, register_task
from harness.engine.units import WorkUnit
from tasks._workload import check_model_and_data

PARAMS = representation_params() + (
    Param("definition", str, "spatial", "spatial: variance over H×W per map, mean over samples "
          "and channels (the original code); samples: variance over samples per element, mean "
          "over elements (issue #6)", choices=VARIANCE_DEFINITIONS),
)

OUTPUT = pa.schema(list(BLOCK_FIELDS) + [
    pa.field("height", pa.int64()),
    pa.field("width", pa.int64()),
    pa.field("channels", pa.int64()),
    pa.field("variance", pa.float64()),
    pa.field("n_samples", pa.int64()),
])


def run(unit: WorkUnit, ctx: UnitContext) -> list[dict[str, Any]]:
    definition = unit.params["definition"]
    parts, n, maps = accumulate_spatial(unit, ctx, lambda: FeatureVariance(definition))
    return [{**map_columns(parts, i, shape, n), "variance": acc.value()}
            for i, acc, shape in maps]


def check(params: dict[str, Any]) -> list[str]:
    errors = check_model_and_data(params) or check_decomposable(params)
    if params["definition"] == "samples" and 0 < params["max_samples"] < 2:
        errors.append("max_samples: the samples definition needs at least 2 samples")
    return errors


register_task(Task(
    name="featvar",
    description="feature-map variance per block (spatial or across-samples definition)",
    params=PARAMS,
    output_schema=OUTPUT,
    run=run,
    check=check,
))
