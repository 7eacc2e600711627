"""lesion: accuracy and NLL of a model with one residual block's branch removed.

The lesion study of Park & Kim (2022), never released with their code: remove
one block and measure the accuracy drop ("Convs at the start of a stage and
MSAs at the end of a stage matter most"). A block of the decomposition with
`residual=True` computes x + branch(x); its lesion keeps x and drops the
branch (`forward_blocks(skip=i)`). Blocks that are not pure residuals (timm's
post-activation ResNet blocks act(x + f(x)), projection shortcuts, stems,
heads) cannot be lesioned.

One unit per (model or checkpoint, block): `block: -1` (default) expands into
one unit per residual block, counted on a weightless meta-device copy of the
model. Every row also carries the intact model's metrics (computed once per
worker and cached), so acc_drop and nll_increase need no second task.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import torch
from torch import nn

from harness.models.blocks import Block, forward_blocks
from harness.engine.context import UnitContext
from tasks._blocks import (BLOCK_FIELDS, block_columns, block_table, check_decomposable, load_model_and_data, representation_params, unresolved_checkpoint_ref)
from harness.analysis.metrics import classification_metrics
from harness.engine.params import Param
from harness.engine.registry import Task, expand_axis, register_task
from harness.engine.units import WorkUnit
from tasks._workload import check_model_and_data

ALL_RESIDUAL = -1

PARAMS = representation_params(default_max_samples=0, default_batch_size=256) + (
    Param("block", int, ALL_RESIDUAL, "index (in the block decomposition) of the residual block "
          "to lesion; -1: one unit per residual block", min=-1),
    Param("ece_bins", int, 10, "equal-width confidence bins for ECE", min=1),
)

OUTPUT = pa.schema(list(BLOCK_FIELDS) + [
    pa.field("acc", pa.float64()),
    pa.field("nll", pa.float64()),
    pa.field("ece", pa.float64()),
    pa.field("intact_acc", pa.float64()),
    pa.field("intact_nll", pa.float64()),
    pa.field("intact_ece", pa.float64()),
    pa.field("acc_drop", pa.float64()),  # intact_acc - acc
    pa.field("nll_increase", pa.float64()),  # nll - intact_nll
    pa.field("n_samples", pa.int64()),
])


@torch.no_grad()
def lesion_logits(parts: list[Block], x: torch.Tensor, skip: int | None, batch_size: int,
                  device: torch.device) -> torch.Tensor:
    """Logits (on the CPU) of the blocks applied in order with block `skip`'s branch dropped.

    skip=None gives the intact model (forward_blocks reproduces model(x) exactly).
    """
    out = [forward_blocks(parts, x[i:i + batch_size].to(device, non_blocking=True), skip=skip)
           .float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0)


def lesion_metrics(model: nn.Module, parts: list[Block], x: torch.Tensor, y: torch.Tensor,
                   skip: int | None, batch_size: int, device: torch.device,
                   ece_bins: int = 10) -> dict[str, float]:
    """acc, nll, ece of `model` (eval mode) with residual block `skip` lesioned (None: intact)."""
    model.eval()
    return classification_metrics(lesion_logits(parts, x, skip, batch_size, device), y, ece_bins)


def residual_indices(params: dict[str, Any]) -> list[int]:
    """Indices of the lesionable (residual) blocks of a unit's model, from a meta-device copy."""
    return [i for i, (_, _, _, residual) in enumerate(block_table(params)) if residual]


def run(unit: WorkUnit, ctx: UnitContext) -> list[dict[str, Any]]:
    p = unit.params
    if p["block"] < 0:
        raise ValueError("block -1 is expanded into one unit per residual block; a unit needs "
                         "a block index")
    model, parts, data, n = load_model_and_data(unit, ctx)
    if n == 0:
        raise ValueError("no samples: the split is empty or max_samples selects none")
    if p["block"] >= len(parts) or not parts[p["block"]].residual:
        residual = [i for i, b in enumerate(parts) if b.residual]
        raise ValueError(f"block {p['block']} is not a residual block of {p['model']}; "
                         f"residual blocks: {residual}")
    x, y = data.x[:n], data.y[:n]
    # the intact model's metrics, once per worker for all blocks of the same model and data
    key = ("lesion-intact", {k: v for k, v in p.items() if k not in ("block", "batch_size")})
    intact = ctx.cache.get(key, lambda: lesion_metrics(model, parts, x, y, None, p["batch_size"],
                                                       ctx.device, p["ece_bins"]))
    lesioned = lesion_metrics(model, parts, x, y, p["block"], p["batch_size"], ctx.device,
                              p["ece_bins"])
    return [{**block_columns(parts, p["block"]), **lesioned,
             "intact_acc": intact["acc"], "intact_nll": intact["nll"],
             "intact_ece": intact["ece"], "acc_drop": intact["acc"] - lesioned["acc"],
             "nll_increase": lesioned["nll"] - intact["nll"], "n_samples": n}]


def check(params: dict[str, Any]) -> list[str]:
    errors = check_model_and_data(params) or check_decomposable(params)
    if errors or unresolved_checkpoint_ref(params):
        return errors
    residual = residual_indices(params)
    name = params["model"] or params["checkpoint"]
    if not residual:
        return [f"model: {name} has no residual block to lesion (the decomposition marks none; "
                "e.g. timm's post-activation ResNet blocks compute act(x + f(x)))"]
    if params["block"] != ALL_RESIDUAL and params["block"] not in residual:
        return [f"block: {params['block']} is not a residual block of {name}; residual blocks: "
                f"{', '.join(map(str, residual))} (or -1 for all)"]
    return []


def expand(combo: dict[str, Any]) -> list[dict[str, Any]]:
    """block -1 -> one unit per residual block index; an explicit index -> that unit."""
    if combo["block"] == ALL_RESIDUAL and unresolved_checkpoint_ref(combo):
        raise ValueError(f"checkpoint {combo['checkpoint']!r}: resolve sweep references "
                         "(harness.engine.checkpoint_refs.resolve_checkpoint_refs) before expanding units")
    return expand_axis(combo, "block", ALL_RESIDUAL, lambda: residual_indices(combo))


register_task(Task(
    name="lesion",
    description="accuracy / NLL with one residual block's branch removed, beside the intact model's",
    params=PARAMS,
    output_schema=OUTPUT,
    run=run,
    expand=expand,
    check=check,
))
