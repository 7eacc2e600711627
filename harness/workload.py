"""Model and data as tasks get them: built once per worker, reused across units.

Every measurement task needs "this model, initialised with this seed, on this
data split": the cache keys live here so that two tasks (or two units) asking
for the same thing share one copy in a worker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from harness.context import UnitContext
from harness.data import Dataset, dataset_names, load_dataset, validate_dataset_args
from harness.models import build_model, validate_model_args
from harness.params import Param


def _known_model(name: str) -> list[str]:
    """Only the unknown-name message (argument problems are checked with model_args)."""
    return [e for e in validate_model_args(name, {}) if e.startswith("unknown ")]


#: The params every task that builds a model on a dataset shares.
MODEL_PARAMS: tuple[Param, ...] = (
    Param("model", str, "", "architecture (`harness list models`); may be left out when "
          "`checkpoint` names a harness checkpoint", check=lambda v: _known_model(v) if v else []),
    Param("model_args", dict, {}, "width/depth/patch overrides of the architecture"),
    Param("dataset", str, "digits", "dataset name", choices=dataset_names),
    Param("dataset_args", dict, {}, "dataset options (e.g. data_root, synthetic num_samples)"),
    Param("data_fraction", float, 1.0, "stratified share of the split", min=0.0,
          max=1.0, min_exclusive=True),
    Param("data_size", int, 0, "absolute number of samples instead of data_fraction (0: off)",
          min=0),
    Param("seed", int, 0, "model initialisation, data order and subset seed", min=0),
)


#: Weights to load, for every task that can take a checkpoint instead of a fresh model.
CHECKPOINT_PARAM = Param(
    "checkpoint", str, "", "weights to load: a .safetensors harness checkpoint, a .pt/.pth "
    "state dict (then `model` is required), or sweep:<name> for every checkpoint of a train sweep")

#: What every task that scores a model on a split takes (evaluate, corruption, freqnoise).
EVAL_PARAMS: tuple[Param, ...] = (
    CHECKPOINT_PARAM,
    Param("split", str, "test", "which split the model is scored on", choices=("train", "test")),
    Param("max_samples", int, 0, "use only the first N samples (0: all)", min=0),
    Param("batch_size", int, 256, "evaluation batch size", min=1),
    Param("ece_bins", int, 10, "equal-width confidence bins for ECE and the reliability rows",
          min=1),
)

def check_model_and_data(params: dict[str, Any], split: str = "train") -> list[str]:
    """Cross-field checks of MODEL_PARAMS, cheap enough to run on every combination."""
    errors = []
    if not params["model"] and not params.get("checkpoint"):
        errors.append("model: name an architecture (or a `checkpoint`)")
    elif params["model"]:
        errors += [f"model_args: {e}" for e in validate_model_args(params["model"],
                                                                   params["model_args"])]
    errors += [f"dataset_args: {e}" for e in validate_dataset_args(
        params["dataset"], params.get("split", split), params["data_fraction"],
        params["dataset_args"], data_size=params["data_size"] or None)]
    return errors


def cached_dataset(ctx: UnitContext, name: str, split: str, data_fraction: float, seed: int,
                   dataset_args: dict[str, Any] | None = None, data_size: int = 0) -> Dataset:
    """A dataset split (CPU tensors), shared by all units of the worker that use it.

    The seed only picks a subset: with the whole split it is left out of the
    key, so units with different seeds share one copy.
    """
    args = dict(dataset_args or {})
    subset = data_fraction < 1 or data_size > 0
    key = ("dataset", name, split, data_fraction, data_size, seed if subset else None, args)
    return ctx.cache.get(key, lambda: load_dataset(name, split, data_fraction, seed,
                                                   data_size=data_size or None, **args))


def cached_model(ctx: UnitContext, name: str, num_classes: int, seed: int,
                 model_args: dict[str, Any] | None = None, checkpoint: str = "") -> nn.Module:
    """The unit's model on its device, in eval mode: loaded from `checkpoint`
    when one is named, else freshly initialised under `torch.manual_seed(seed)`."""
    from harness.checkpoints import load_checkpoint

    args = dict(model_args or {})

    def build() -> nn.Module:
        if checkpoint:
            model, meta = load_checkpoint(checkpoint, name, args, num_classes)
            if int(meta["num_classes"]) != num_classes:
                raise ValueError(f"checkpoint {checkpoint!r} has {meta['num_classes']} classes, "
                                 f"the dataset {num_classes}")
        else:
            torch.manual_seed(seed)
            model = build_model(name, num_classes, **args)
        return model.to(ctx.device).eval()

    key = ("checkpoint", checkpoint) if checkpoint else ("model", name, num_classes, seed, args)
    return ctx.cache.get(key, build)


def unit_model_and_data(ctx: UnitContext, p: dict[str, Any]) -> tuple[nn.Module, Dataset]:
    """The model (eval mode) and data split named by a unit's MODEL_PARAMS, `checkpoint` and
    `split` (default "test"), both from the worker cache."""
    data = cached_dataset(ctx, p["dataset"], p.get("split", "test"), p["data_fraction"],
                          p["seed"], p["dataset_args"], p["data_size"])
    model = cached_model(ctx, p["model"], data.num_classes, p["seed"], p["model_args"],
                         p.get("checkpoint", ""))
    return model.eval(), data


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device,
                   perturb: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
                   ) -> torch.Tensor:
    """Logits of `model` on `x` in batches, gathered on the CPU.

    perturb(batch, ids), when given, changes each batch on the device just before the forward
    pass; ids are the samples' positions in `x` (0 … N−1), so a perturbation keyed by them
    is the same whatever the batch size.
    """
    out = []
    for i in range(0, len(x), batch_size):
        batch = x[i:i + batch_size].to(device, non_blocking=True)
        if perturb is not None:
            ids = torch.arange(i, i + len(batch), dtype=torch.int64, device=device)
            batch = perturb(batch, ids)
        out.append(model(batch).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def checkpoint_meta(ctx: UnitContext, checkpoint: str) -> dict[str, Any] | None:
    """The sidecar of a harness checkpoint (recipe, weight decay, data fraction…), or None."""
    from harness.checkpoints import WEIGHTS_SUFFIX, read_sidecar

    if not checkpoint.endswith(WEIGHTS_SUFFIX):
        return None
    return ctx.cache.get(("sidecar", checkpoint), lambda: read_sidecar(checkpoint))
