"""evaluate: accuracy, NLL and ECE of a model (fresh or from a checkpoint) on a dataset split."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from harness.context import UnitContext
from harness.metrics import classification_metrics
from harness.models import count_params
from harness.params import Param
from harness.registry import Task, register_task
from harness.units import WorkUnit
from harness.workload import (MODEL_PARAMS, check_model_and_data, predict_logits,
                              unit_model_and_data)

PARAMS = MODEL_PARAMS + (
    Param("checkpoint", str, "", "weights to load: a .safetensors harness checkpoint, a "
          ".pt/.pth state dict (then `model` is required), or sweep:<name> for every "
          "checkpoint of a train sweep"),
    Param("split", str, "test", "which split to evaluate on", choices=("train", "test")),
    Param("max_samples", int, 0, "evaluate only the first N samples (0: all)", min=0),
    Param("batch_size", int, 256, "evaluation batch size", min=1),
    Param("ece_bins", int, 10, "equal-width confidence bins for ECE", min=1),
)

OUTPUT = pa.schema([
    pa.field("acc", pa.float64()),
    pa.field("nll", pa.float64()),
    pa.field("ece", pa.float64()),
    pa.field("n_samples", pa.int64()),
    pa.field("num_params", pa.int64()),
])


def run(unit: WorkUnit, ctx: UnitContext) -> list[dict[str, Any]]:
    p = unit.params
    model, data = unit_model_and_data(ctx, p)
    n = len(data) if p["max_samples"] == 0 else min(p["max_samples"], len(data))
    logits = predict_logits(model, data.x[:n], p["batch_size"], ctx.device)
    metrics = classification_metrics(logits, data.y[:n], p["ece_bins"])
    return [{**metrics, "n_samples": n, "num_params": count_params(model)}]


register_task(Task(
    name="evaluate",
    description="accuracy, NLL and ECE of a model on a dataset split",
    params=PARAMS,
    output_schema=OUTPUT,
    run=run,
    check=check_model_and_data,
))
