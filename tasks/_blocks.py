"""Per-block glue shared by the fourier, featvar and lesion tasks: their params, the columns that
name a block, the block table counted on a weightless copy, and the unit's model and data."""

from __future__ import annotations

import functools
import json
from typing import Any, Callable

import pyarrow as pa
import torch
from torch import nn

from harness.analysis.features import accumulate_block_maps
from harness.data.datasets import Dataset
from harness.engine.checkpoint_refs import SWEEP_REF
from harness.engine.context import UnitContext
from harness.engine.params import Param, canonical_json
from harness.engine.units import WorkUnit
from harness.models.blocks import Block, blocks
from harness.models.checkpoints import read_sidecar
from harness.models.registry import TIMM_PREFIX, build_model
from tasks._workload import CHECKPOINT_PARAM, MODEL_PARAMS, unit_model_and_data


#: Columns that name a block in every per-block result (fourier, featvar, lesion).
BLOCK_FIELDS: tuple[pa.Field, ...] = (
    pa.field("block_index", pa.int64()),
    pa.field("block_name", pa.string()),
    pa.field("block_kind", pa.string()),
    pa.field("depth", pa.float64()),
    pa.field("n_blocks", pa.int64()),
)


def block_columns(parts: list[Block], index: int) -> dict[str, Any]:
    """Values of BLOCK_FIELDS: depth = index / (n_blocks − 1) over the whole decomposition.

    The same index and depth in every task, so fourier / featvar / lesion rows
    join on (checkpoint, block_index).
    """
    n = len(parts)
    return {"block_index": index, "block_name": parts[index].name, "block_kind": parts[index].kind,
            "depth": index / (n - 1) if n > 1 else 0.0, "n_blocks": n}


@functools.lru_cache(maxsize=128)
def _block_table(model: str, args_json: str) -> tuple[tuple[str, str, str, bool], ...]:
    args = json.loads(args_json)
    if model.startswith(TIMM_PREFIX):
        args.pop("pretrained", None)  # structure only: never load weights here
    with torch.device("meta"):
        net = build_model(model, 10, **args)
    return tuple((b.name, b.kind, b.layout, b.residual) for b in blocks(net))


def block_table(params: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(name, kind, layout, residual) of each block of a unit's model, without weights.

    Built on the meta device (no memory, no init cost) and cached, so spec
    validation and `expand` can count blocks cheaply. A harness checkpoint
    whose `model` was not filled in by the resolver is read from its sidecar.
    """
    model, args = params.get("model", ""), params.get("model_args", {}) or {}
    checkpoint = params.get("checkpoint", "")
    if not model and checkpoint:
        meta = read_sidecar(checkpoint)
        model, args = meta["model"], meta["model_args"]
    return list(_block_table(model, canonical_json(args)))


def unresolved_checkpoint_ref(params: dict[str, Any]) -> bool:
    """A `checkpoint: sweep:<name>` that nobody resolved yet (the model is unknown until then).

    `harness run` resolves references before validating; only a direct
    `validate()` of a raw document sees one.
    """
    return not params.get("model") and str(params.get("checkpoint", "")).startswith(SWEEP_REF)


def check_decomposable(params: dict[str, Any]) -> list[str]:
    """Spec-time error when the model has no block decomposition."""
    if unresolved_checkpoint_ref(params):
        return []
    try:
        block_table(params)
    except Exception as exc:  # noqa: BLE001  (any failure is reported as a field error)
        return [f"model: {type(exc).__name__}: {exc}"]
    return []


def representation_params(default_max_samples: int = 256,
                          default_batch_size: int = 64) -> tuple[Param, ...]:
    """MODEL_PARAMS + checkpoint, split, max_samples, batch_size: what every per-block task takes."""
    return MODEL_PARAMS + (
        CHECKPOINT_PARAM,
        Param("split", str, "test", "which split the feature maps are computed on",
              choices=("train", "test")),
        Param("max_samples", int, default_max_samples, "use the first N samples (0: all)", min=0),
        Param("batch_size", int, default_batch_size, "samples per forward pass", min=1),
    )


def load_model_and_data(unit: WorkUnit, ctx: UnitContext
                        ) -> tuple[nn.Module, list[Block], Dataset, int]:
    """The unit's model (eval mode, from the worker cache), its blocks, its data and sample count."""
    p = unit.params
    model, data = unit_model_and_data(ctx, p)  # eval mode: the original notebooks forgot it
    n = len(data) if p["max_samples"] == 0 else min(p["max_samples"], len(data))
    return model, blocks(model), data, n


def accumulate_spatial(unit: WorkUnit, ctx: UnitContext, make_accumulator: Callable[[], Any]
                       ) -> tuple[list[Block], int, list[tuple[int, Any, tuple[int, int, int]]]]:
    """The unit's samples through its model's blocks once (`features.accumulate_block_maps`):
    the blocks, the sample count and (block index, accumulator, (C, H, W)) per spatial block —
    what the fourier and featvar tasks turn into rows."""
    p = unit.params
    _, parts, data, n = load_model_and_data(unit, ctx)
    if n == 0:
        raise ValueError("no samples: the split is empty or max_samples selects none")
    return parts, n, accumulate_block_maps(parts, data.x[:n], p["batch_size"], ctx.device,
                                           make_accumulator)


def map_columns(parts: list[Block], index: int, shape: tuple[int, int, int],
                n_samples: int) -> dict[str, Any]:
    """The block columns plus the feature map's size and the sample count."""
    channels, height, width = shape
    return {**block_columns(parts, index), "height": height, "width": width,
            "channels": channels, "n_samples": n_samples}
