"""evaluate: accuracy, NLL and ECE of a model on a dataset split."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from harness.context import UnitContext
from harness.data import dataset_names, validate_dataset_args
from harness.metrics import classification_metrics
from harness.models import count_params, model_names, validate_model_args
from harness.params import Param
from harness.registry import Task, register_task
from harness.units import WorkUnit
from harness.workload import cached_dataset, cached_model, predict_logits

PARAMS = (
    Param("model", str, help="architecture from the model zoo", choices=model_names),
    Param("model_args", dict, {}, "width/depth/patch overrides of the architecture"),
    Param("dataset", str, "digits", "dataset name", choices=dataset_names),
    Param("dataset_args", dict, {}, "dataset-specific options (e.g. synthetic num_samples)"),
    Param("split", str, "test", "which split to evaluate on", choices=("train", "test")),
    Param("data_fraction", float, 1.0, "stratified share of the split", min=0.0,
          max=1.0, min_exclusive=True),
    Param("seed", int, 0, "model initialisation and subset seed", min=0),
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


def check(params: dict[str, Any]) -> list[str]:
    errors = [f"model_args: {e}" for e in validate_model_args(params["model"], params["model_args"])]
    errors += [f"dataset_args: {e}" for e in validate_dataset_args(
        params["dataset"], params["split"], params["data_fraction"], params["dataset_args"])]
    return errors


def run(unit: WorkUnit, ctx: UnitContext) -> list[dict[str, Any]]:
    p = unit.params
    data = cached_dataset(ctx, p["dataset"], p["split"], p["data_fraction"], p["seed"],
                          p["dataset_args"])
    model = cached_model(ctx, p["model"], data.num_classes, p["seed"], p["model_args"])
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
    check=check,
))
