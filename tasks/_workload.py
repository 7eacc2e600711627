"""Glue shared by the tasks: the params they share, and model, data, fixed batches and clean
metrics as units get them — built once per worker, reused across units.

Every measurement task needs "this model, initialised with this seed, on this
data split": the cache keys live here so that two tasks (or two units) asking
for the same thing share one copy in a worker. The numerics these call live in
`harness.models`, `harness.data` and `harness.analysis`, which know no units.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from harness.analysis.metrics import classification_metrics
from harness.analysis.objective import (DEFAULT_WEIGHT_DECAY, PENALTIES, PENALTY_SETS, PenaltySet,
                                        fixed_batches, penalty_set, resolve_weight_decay)
from harness.analysis.perturb import predict_logits
from harness.data.augment import PRESETS
from harness.data.datasets import Dataset, dataset_names, load_dataset, validate_dataset_args
from harness.engine.context import PRECISION_PARAM, UnitContext
from harness.engine.params import Param
from harness.models.registry import build_model, validate_model_args


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
    "state dict (then `model` is required), or sweep:<name> for every checkpoint of a train sweep; "
    "a relative path is relative to the results root", path=True)

#: What every task that scores a model on a split takes (evaluate, corruption, freqnoise).
EVAL_PARAMS: tuple[Param, ...] = (
    CHECKPOINT_PARAM,
    Param("split", str, "test", "which split the model is scored on", choices=("train", "test")),
    Param("max_samples", int, 0, "use only the first N samples (0: all)", min=0),
    Param("batch_size", int, 256, "evaluation batch size", min=1),
    Param("ece_bins", int, 10, "equal-width confidence bins for ECE and the reliability rows",
          min=1),
    PRECISION_PARAM,
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
    from harness.models.checkpoints import load_checkpoint

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

    # A foreign checkpoint is rebuilt from the unit's architecture: the key holds it too.
    key = (("checkpoint", checkpoint, name, num_classes, args) if checkpoint
           else ("model", name, num_classes, seed, args))
    return ctx.cache.get(key, build)


def unit_model_and_data(ctx: UnitContext, p: dict[str, Any]) -> tuple[nn.Module, Dataset]:
    """The model (eval mode) and data split named by a unit's MODEL_PARAMS, `checkpoint` and
    `split` (default "test"), both from the worker cache."""
    data = cached_dataset(ctx, p["dataset"], p.get("split", "test"), p["data_fraction"],
                          p["seed"], p["dataset_args"], p["data_size"])
    model = cached_model(ctx, p["model"], data.num_classes, p["seed"], p["model_args"],
                         p.get("checkpoint", ""))
    return model.eval(), data


def checkpoint_meta(ctx: UnitContext, checkpoint: str) -> dict[str, Any] | None:
    """The sidecar of a harness checkpoint (recipe, weight decay, data fraction…), or None."""
    from harness.models.checkpoints import WEIGHTS_SUFFIX, read_sidecar

    if not checkpoint.endswith(WEIGHTS_SUFFIX):
        return None
    return ctx.cache.get(("sidecar", checkpoint), lambda: read_sidecar(checkpoint))


# -- the measured objective (landscape, hessian) ----------------------------------------

OBJECTIVE_PARAMS: tuple[Param, ...] = (
    Param("split", str, "train", "data the objective is measured on", choices=("train", "test")),
    Param("augment", str, "paper", "augmentation preset applied once to the fixed batches "
          "(the paper measures on augmented training data)", choices=tuple(PRESETS)),
    Param("augment_args", dict, {}, "overrides of the preset's fields"),
    Param("num_samples", int, 1024, "size of the fixed seeded subset", min=1),
    Param("batch_size", int, 256, "batch size of the fixed batches", min=1),
    Param("weight_decay", float, -1.0, "penalty coefficient; -1: the checkpoint's recipe "
          f"(or {DEFAULT_WEIGHT_DECAY} for a fresh model)", min=-1.0),
    Param("penalty", str, "l2", "l2: Σ‖w‖₂ per tensor (the original's); half_sq: ½Σw²",
          choices=PENALTIES),
    Param("penalty_set", str, "trained", "tensors the penalty covers: trained = those the "
          "checkpoint's training decayed (recorded in its sidecar); timm / ndim2 / all: by rule "
          "(see the train task's decay_set)", choices=PENALTY_SETS),
    PRECISION_PARAM,
)


def cached_batches(ctx: UnitContext, data: Dataset, params: dict[str, Any]
                   ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """`fixed_batches` for a unit's params, built once per worker."""
    key = ("batches", params["dataset"], params["dataset_args"], params["split"],
           params["data_fraction"], params["data_size"], params["seed"], params["augment"],
           params["augment_args"], params["num_samples"], params["batch_size"])
    return ctx.cache.get(key, lambda: fixed_batches(
        data, params["num_samples"], params["batch_size"], params["augment"],
        params["augment_args"], params["seed"]))


def unit_weight_decay(ctx: UnitContext, params: dict[str, Any]) -> float:
    """`resolve_weight_decay` for a unit: its param, else its checkpoint's recipe (cached)."""
    return resolve_weight_decay(params, checkpoint_meta(ctx, params.get("checkpoint", "")))


def unit_penalty_set(ctx: UnitContext, params: dict[str, Any], model: nn.Module) -> PenaltySet:
    """`penalty_set` for a unit: its param, resolved against its checkpoint's sidecar."""
    return penalty_set(model, params["penalty_set"],
                       checkpoint_meta(ctx, params.get("checkpoint", "")))


# -- perturbed evaluation (corruption, freqnoise) ----------------------------------------

def unit_samples(ctx: UnitContext, p: dict[str, Any]) -> tuple[nn.Module, Dataset, int]:
    """The unit's model (eval mode), its clean split and how many samples (`max_samples`) to use."""
    model, data = unit_model_and_data(ctx, p)
    n = len(data) if p["max_samples"] == 0 else min(p["max_samples"], len(data))
    if n == 0:
        raise ValueError("no samples: the split is empty or max_samples selects none")
    return model, data, n


def cached_clean_metrics(ctx: UnitContext, p: dict[str, Any], model: nn.Module, data: Dataset,
                         n: int, varying: tuple[str, ...]) -> dict[str, float]:
    """acc, nll, ece of the unperturbed first `n` samples, once per worker for every unit whose
    params differ only in `varying` (the perturbation's own params)."""
    key = ("clean-metrics", {k: v for k, v in p.items() if k not in varying + ("batch_size",)})
    return ctx.cache.get(key, lambda: classification_metrics(
        predict_logits(model, data.x[:n], p["batch_size"], ctx.device), data.y[:n],
        p["ece_bins"]))
