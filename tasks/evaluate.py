"""evaluate: accuracy, NLL, calibration and a reliability diagram of a model on a dataset split.

The metrics are the original code's (`harness.analysis.metrics.calibration_metrics`:
Acc, NLL, top-5, Brier, ECE, signed ECE, Acc-90, Unc-90, Freq-90, IoU,
IoU-90). A unit writes 1 + `ece_bins` rows, told apart by `quantity`:

- "metrics": every metric column, `bin*` columns null;
- "reliability": one row per confidence bin (bin, bin_lower, bin_upper,
  bin_count, bin_accuracy, bin_confidence — the bins the ECE is computed
  from), metric columns null; bin_accuracy / bin_confidence are NaN for an
  empty bin. The bin counts sum to n_samples.

n_samples and num_params are filled on every row. Read the metrics with
`harness.load(root, task="evaluate", quantity="metrics")`.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from harness.engine.context import UnitContext
from harness.analysis.metrics import calibration_metrics
from harness.models.registry import count_params
from harness.engine.registry import Task, register_task
from harness.engine.units import WorkUnit
from tasks._workload import EVAL_PARAMS, MODEL_PARAMS, check_model_and_data, unit_model_and_data
from harness.analysis.perturb import predict_logits

PARAMS = MODEL_PARAMS + EVAL_PARAMS

#: Columns of the "metrics" row (null in the reliability rows).
METRIC_COLUMNS = ("acc", "nll", "ece", "signed_ece", "brier", "top5_acc", "acc_90", "unc_90",
                  "freq_90", "iou", "iou_90")
#: Columns of the "reliability" rows (null in the metrics row), from `reliability_bins` keys.
BIN_COLUMNS = {"bin_lower": "lower", "bin_upper": "upper", "bin_count": "count",
               "bin_accuracy": "accuracy", "bin_confidence": "confidence"}

OUTPUT = pa.schema(
    [pa.field("quantity", pa.string())]
    + [pa.field(c, pa.float64()) for c in METRIC_COLUMNS]
    + [pa.field("n_samples", pa.int64()), pa.field("num_params", pa.int64()),
       pa.field("bin", pa.int64()), pa.field("bin_lower", pa.float64()),
       pa.field("bin_upper", pa.float64()), pa.field("bin_count", pa.int64()),
       pa.field("bin_accuracy", pa.float64()), pa.field("bin_confidence", pa.float64())])


def metric_rows(metrics: dict[str, float], bins: list[dict], facts: dict[str, Any]) -> list[dict]:
    """The metrics row and one reliability row per bin, each with the unit `facts` columns."""
    no_bin = {"bin": None, **dict.fromkeys(BIN_COLUMNS)}
    no_metrics = dict.fromkeys(METRIC_COLUMNS)
    rows = [{"quantity": "metrics", **{c: metrics[c] for c in METRIC_COLUMNS}, **facts, **no_bin}]
    for i, b in enumerate(bins):
        rows.append({"quantity": "reliability", **no_metrics, **facts, "bin": i,
                     **{col: b[key] for col, key in BIN_COLUMNS.items()}})
    return rows


def run(unit: WorkUnit, ctx: UnitContext) -> list[dict[str, Any]]:
    p = unit.params
    model, data = unit_model_and_data(ctx, p)
    n = len(data) if p["max_samples"] == 0 else min(p["max_samples"], len(data))
    logits = predict_logits(model, data.x[:n], p["batch_size"], ctx.device)
    metrics, bins = calibration_metrics(logits, data.y[:n], p["ece_bins"])
    return metric_rows(metrics, bins, {"n_samples": n, "num_params": count_params(model)})


register_task(Task(
    name="evaluate",
    description="accuracy, NLL and ECE of a model on a dataset split, with the original's "
                "calibration metrics (Brier, top-5, Acc/Unc/Freq-90, IoU) and reliability bins",
    params=PARAMS,
    output_schema=OUTPUT,
    run=run,
    check=check_model_and_data,
))
