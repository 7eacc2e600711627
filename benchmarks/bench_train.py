"""Training throughput of the `train` task against a hand-written PyTorch loop.

    python benchmarks/bench_train.py [--epochs 4] [--model resnet18|vit_ti]

Both sides train the same zoo model (same seed, so the same initial weights) on
the same digits train split with the same batch size, AdamW (decay on timm's
decay set: no biases, norm parameters, position tables), warmup + cosine
learning rate per step and gradient clipping at 5 — the recipe, minus augmentation (`augment: none`), so both do
the same arithmetic. The plain side is the loop a researcher writes by hand:
`randperm`, slice, forward, cross-entropy, backward, clip, step. The harness
side is the real task run through the local executor (its per-epoch
`images_per_s` rows, which time only the training pass). Epochs alternate
between the two sides and the first epoch of each (warm-up) is dropped; the
median over the rest is compared.

The last line is `train_ratio=<harness images/s / plain images/s>`; goal ≥ 0.95.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

MODELS = {
    "resnet18": {"width": 16, "layers": [1, 1, 1, 1]},
    "vit_ti": {"embed_dim": 64, "depth": 4, "num_heads": 4, "patch_size": 4},
}
BATCH, LR, WD, WARMUP = 64, 2e-3, 0.05, 1


def plain_epochs(model_name: str, epochs: int) -> list[float]:
    """Images/s of each epoch of a hand-written loop."""
    from harness.data.datasets import load_dataset
    from harness.models.registry import build_model

    data = load_dataset("digits", "train")
    torch.manual_seed(0)
    model = build_model(model_name, 10, **MODELS[model_name])
    import timm.optim

    # timm's own optimizer groups: the decay set the train task uses (decay_set: timm)
    groups = timm.optim.create_optimizer_v2(model, "adamw", lr=LR, weight_decay=WD).param_groups
    decay = [p for g in groups if g["weight_decay"] > 0 for p in g["params"]]
    other = [p for g in groups if g["weight_decay"] == 0 for p in g["params"]]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD},
                             {"params": other, "weight_decay": 0.0}], lr=LR)
    steps_per_epoch = math.ceil(len(data) / BATCH)
    total, warm = (epochs + WARMUP) * steps_per_epoch, WARMUP * steps_per_epoch
    gen = torch.Generator().manual_seed(1)
    rates, step = [], 0
    for _ in range(epochs + WARMUP):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(data), generator=gen)
        for i in range(steps_per_epoch):
            idx = order[i * BATCH:(i + 1) * BATCH]
            lr = LR * (step + 1) / warm if step < warm else \
                0.5 * LR * (1 + math.cos(math.pi * (step - warm) / (total - warm)))
            for g in opt.param_groups:
                g["lr"] = lr
            loss = F.cross_entropy(model(data.x[idx]), data.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            step += 1
        rates.append(len(data) / (time.perf_counter() - started))
    return rates


def harness_epochs(model_name: str, epochs: int) -> list[float]:
    """Images/s of each epoch of the train task, from its own rows."""
    import harness
    from harness.engine.executor import RunConfig, run_units
    from harness.engine.spec import validate

    doc = {"name": "bench_train", "tasks": {"train": {
        "model": model_name, "model_args": MODELS[model_name], "dataset": "digits",
        "epochs": epochs, "warmup_epochs": WARMUP, "batch_size": BATCH, "lr": LR,
        "weight_decay": WD, "augment": "none"}}}
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_units(validate(doc).units(), tmp, RunConfig(kind="local", device="cpu"))
        if summary.failed:
            raise SystemExit(f"FAIL: {summary.errors}")
        df = harness.load(tmp, task="train").sort_values("epoch")
        return list(df["images_per_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4, help="epochs after the warmup epoch")
    ap.add_argument("--model", choices=sorted(MODELS), default="resnet18")
    ap.add_argument("--rounds", type=int, default=2, help="alternating runs of each side")
    args = ap.parse_args()
    plain, ours = [], []
    for _ in range(args.rounds):
        plain += plain_epochs(args.model, args.epochs)[1:]
        ours += harness_epochs(args.model, args.epochs)[1:]
    p, h = statistics.median(plain), statistics.median(ours)
    print(f"{args.model} {MODELS[args.model]} on digits train (1347 images), batch {BATCH}, "
          f"{torch.get_num_threads()} torch threads, {len(plain)} timed epochs per side")
    print(f"plain hand-written loop: {p:8.1f} images/s (min {min(plain):.1f}, max {max(plain):.1f})")
    print(f"harness train task:      {h:8.1f} images/s (min {min(ours):.1f}, max {max(ours):.1f})")
    print(f"train_ratio={h / p:.3f}")


if __name__ == "__main__":
    main()
