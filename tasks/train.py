"""train: train one architecture on one dataset / data fraction / seed / recipe.

Rows: one per epoch (loss, accuracy, learning rate, seconds); epochs listed in
`checkpoint_at` and the last one also carry test metrics and the path of the
checkpoint written there (safetensors + JSON sidecar, under the unit's
artifact directory). Later tasks name these checkpoints, or all checkpoints of
a train sweep with `checkpoint: sweep:<name>`. The sidecar records the recipe
and the names of the tensors weight decay covered (`decayed_params`): the
landscape and Hessian tasks penalize exactly those by default.

Resume: after every epoch the unit writes its whole training state (weights,
optimizer, step = schedule position, every RNG, rows so far) to `resume.pt`
in its artifact directory, atomically, and reports its epoch (`harness
status`). A unit that was stopped (lost node, killed driver, unit timeout,
preemption) continues from that state when it is retried or its sweep re-run;
its rows and final weights are those of an uninterrupted run (bit-identical on
CPU). The state is deleted once the unit has finished.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pyarrow as pa
import torch

from harness.data.augment import PRESETS, augment_config, validate_augment
from harness.models.checkpoints import load_state, remove_file, save_checkpoint, save_state
from harness.engine.context import UnitContext
from harness.analysis.metrics import classification_metrics
from harness.models.registry import build_model, count_params
from harness.engine.params import Param
from harness.engine.registry import Task, register_task
from harness.analysis.training import (DECAY_SETS, RESUME_FORMAT, Recipe, decay_names,
                                       make_optimizer, restore_training_state, train_epoch,
                                       training_state)
from harness.engine.units import WorkUnit
from tasks._workload import MODEL_PARAMS, cached_dataset, check_model_and_data
from harness.analysis.perturb import predict_logits

_R = Recipe()
PARAMS = MODEL_PARAMS + (
    Param("epochs", int, _R.epochs, "epochs after warmup", min=0),
    Param("warmup_epochs", int, _R.warmup_epochs, "linear warmup epochs", min=0),
    Param("batch_size", int, _R.batch_size, "training batch size", min=1),
    Param("lr", float, _R.lr, "peak learning rate", min=0.0, min_exclusive=True),
    Param("min_lr", float, _R.min_lr, "learning rate at the end of the cosine", min=0.0),
    Param("weight_decay", float, _R.weight_decay, "decoupled (AdamW) / L2 (SGD) decay", min=0.0),
    Param("decay_set", str, _R.decay_set, "tensors weight decay covers: timm (timm's convention: "
          "no biases, norm parameters, position embeddings, class tokens, relative-position "
          "tables), ndim2 (every tensor of >= 2 dims), all", choices=DECAY_SETS),
    Param("optimizer", str, _R.optimizer, "optimizer", choices=("adamw", "sgd")),
    Param("momentum", float, _R.momentum, "SGD momentum", min=0.0, max=1.0),
    Param("schedule", str, _R.schedule, "after warmup", choices=("cosine", "constant")),
    Param("grad_clip", float, _R.grad_clip, "max gradient norm (0: off)", min=0.0),
    Param("amp", bool, _R.amp, "bfloat16 autocast on CUDA (ignored on CPU)"),
    Param("augment", str, "paper", "augmentation preset", choices=tuple(PRESETS)),
    Param("augment_args", dict, {}, "overrides of the preset's fields"),
    Param("checkpoint_at", list, [], "extra epochs (counting warmup) to checkpoint and evaluate "
          "at, e.g. [5] = end of warmup"),
    Param("snapshots", bool, False, "checkpoint every epoch (training trajectories)"),
    Param("eval_batch_size", int, 512, "batch size of the test evaluations", min=1),
)
RECIPE_KEYS = tuple(Recipe.__dataclass_fields__)

OUTPUT = pa.schema([
    pa.field("epoch", pa.int64()),
    pa.field("train_loss", pa.float64()),
    pa.field("train_acc", pa.float64()),
    pa.field("lr_end", pa.float64()),
    pa.field("epoch_seconds", pa.float64()),
    pa.field("images_per_s", pa.float64()),
    pa.field("test_acc", pa.float64()),
    pa.field("test_nll", pa.float64()),
    pa.field("test_ece", pa.float64()),
    pa.field("checkpoint", pa.string()),
    pa.field("num_params", pa.int64()),
])

#: The unit's training state after its last finished epoch (see the module docstring).
RESUME_FILE = "resume.pt"


def check(p: dict[str, Any]) -> list[str]:
    errors = check_model_and_data(p)
    errors += [f"augment_args: {e}" for e in validate_augment({"preset": p["augment"],
                                                               **p["augment_args"]})]
    total = p["warmup_epochs"] + p["epochs"]
    if total < 1:
        errors.append("warmup_epochs + epochs must be at least 1")
    bad = [e for e in p["checkpoint_at"] if not isinstance(e, int) or not 1 <= e <= total]
    if bad:
        errors.append(f"checkpoint_at: epochs must be ints in [1, {total}], got {bad}")
    return errors


def run(unit: WorkUnit, ctx: UnitContext) -> list[dict[str, Any]]:
    p = unit.params
    recipe = Recipe(**{k: p[k] for k in RECIPE_KEYS})
    augment = augment_config({"preset": p["augment"], **p["augment_args"]})
    train = cached_dataset(ctx, p["dataset"], "train", p["data_fraction"], p["seed"],
                           p["dataset_args"], p["data_size"])
    test = cached_dataset(ctx, p["dataset"], "test", 1.0, 0, p["dataset_args"])
    torch.manual_seed(p["seed"])
    model = build_model(p["model"], train.num_classes, **p["model_args"]).to(ctx.device)
    optimizer = make_optimizer(model, recipe)
    generator = ctx.torch_generator(offset=1)
    total = recipe.warmup_epochs + recipe.epochs
    save_at = set(p["checkpoint_at"]) | {total}
    meta = {"model": p["model"], "model_args": p["model_args"], "num_classes": train.num_classes,
            "dataset": p["dataset"], "dataset_args": p["dataset_args"],
            "data_fraction": p["data_fraction"], "data_size": p["data_size"], "seed": p["seed"],
            "recipe": recipe.to_dict(),
            "decayed_params": decay_names(model, recipe.decay_set),
            "augment": asdict(augment),
            "train_unit": unit.unit_id, "sweep": unit.sweep}
    resume = ctx.artifact(RESUME_FILE)
    rows, step, done = [], 0, 0
    state = load_state(resume)
    if state is not None and (state.get("format"), state.get("key")) == (RESUME_FORMAT,
                                                                        unit.unit_id):
        done, step, rows = restore_training_state(state, model, optimizer, generator)
        ctx.log.info("unit %s resumes after epoch %d of %d", unit.unit_id, done, total)
    del state
    for epoch in range(done + 1, total + 1):
        stats = train_epoch(model, train, optimizer, recipe, augment, generator, ctx.device, step)
        step += int(stats["steps"])
        row = {"epoch": epoch, "train_loss": stats["train_loss"], "train_acc": stats["train_acc"],
               "lr_end": stats["lr"], "epoch_seconds": stats["seconds"],
               "images_per_s": len(train) / stats["seconds"], "test_acc": None,
               "test_nll": None, "test_ece": None, "checkpoint": None,
               "num_params": count_params(model)}
        if epoch in save_at or p["snapshots"]:
            logits = predict_logits(model, test.x, p["eval_batch_size"], ctx.device)
            metrics = classification_metrics(logits, test.y)
            row.update(test_acc=metrics["acc"], test_nll=metrics["nll"], test_ece=metrics["ece"])
            name = "final" if epoch == total else f"epoch{epoch:04d}"
            row["checkpoint"] = ctx.stored_path(save_checkpoint(
                ctx.artifact(f"{name}.safetensors"), model,
                {**meta, "epoch": epoch, "final": epoch == total, "metrics": metrics}))
        rows.append(row)
        if epoch < total:
            save_state(resume, training_state(model, optimizer, generator, epoch, step, rows,
                                              unit.unit_id))
        ctx.report_progress(epoch=epoch, epochs=total)
    remove_file(resume)
    return rows


register_task(Task(
    name="train",
    description="train an architecture (the paper's recipe by default); per-epoch rows, checkpoints",
    params=PARAMS,
    output_schema=OUTPUT,
    run=run,
    check=check,
))
