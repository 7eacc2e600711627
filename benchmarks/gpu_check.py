"""The prepared GPU check: every task's CUDA path, fractional workers, and GPU figures.

    bash benchmarks/gpu_check.sh [--dry-run]      (the shell script bounds it to 8 minutes)

1. sweep: a small unit (or a few) of every registered task — train with `amp` (bfloat16
   autocast) included — on the Ray executor: four workers of `num_gpus: 0.25` on one GPU.
   Checks every unit finished and every row ran on the device; prints per task its units,
   rows, device and, where the rows have one, the `precision` column; and in how many worker
   processes the (sleeping) noop units ran.
2. corruption throughput: `harness.corruptions.corrupt` on 2,048 32×32 images, per kind,
   GPU against CPU (images/s).
3. HVP over gradient on the GPU: one Hessian-vector product (retained graph, steady state)
   against one forward + backward of the same objective, medians of synchronised repetitions.
4. bf16 training: seconds per AdamW step of a ResNet-18 under bfloat16 autocast against
   float32, and that the bf16 loss is finite.
`--dry-run`: the same steps on the CPU, smaller (two workers without GPUs), so CI checks that
the script runs end to end; its figures are CPU figures. Last line: `gpu_check=ok device=...`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

SMALL = {"model": "resnet18", "model_args": {"width": 8, "layers": [1, 1, 1, 1]},
         "dataset": "digits"}
EVAL = {**SMALL, "max_samples": 64, "batch_size": 32}
VIT = {"model": "vit_ti", "model_args": {"embed_dim": 48, "depth": 2, "num_heads": 3,
                                         "patch_size": 4}}


def sweep_doc(dry: bool) -> dict[str, Any]:
    """One small block per task; the executor's GPU share set by the caller."""
    return {"name": "gpu_check", "tasks": {
        "noop": {"index": list(range(8)), "sleep_s": 1.0},  # spread over the workers
        "evaluate": {**EVAL, "seed": [0, 1]},
        "train": {**SMALL, "epochs": 1, "warmup_epochs": 0, "batch_size": 64, "amp": True,
                  "data_size": 128 if dry else 512, "eval_batch_size": 256},
        "landscape": {**SMALL, "num_samples": 32, "batch_size": 32, "a_points": 3, "b_points": 3,
                      "chunk_size": 9},
        "hessian": {**SMALL, "num_samples": 32, "batch_size": 32, "max_iter": 20, "top_k": 2,
                    "penalty": "half_sq"},  # a fresh model: the l2 penalty has no Hessian at 0
        "corruption": {**EVAL, "corruption": ["gaussian_noise", "fog"], "severity": 3},
        "freqnoise": {**EVAL, "frequency": [0.0, 0.5]},
        "fourier": EVAL,
        "featvar": EVAL,
        "lesion": {**EVAL, **VIT, "block": 1}}}


def run_sweep(dry: bool, root: str) -> str:
    import harness
    from harness.engine.executor import RunConfig, run_units
    from harness.engine.registry import load_tasks
    from harness.engine.spec import validate

    doc = sweep_doc(dry)
    missing = sorted(set(load_tasks()) - set(doc["tasks"]))
    if missing:
        raise SystemExit(f"gpu_check: no block for task(s) {missing}: add them to sweep_doc")
    units = validate(doc).units()
    config = RunConfig(kind="ray", workers=2 if dry else 4, num_gpus=0.0 if dry else 0.25)
    started = time.perf_counter()
    summary = run_units(units, root, config)
    print(f"sweep: {summary.done}/{len(units)} units of {len(doc['tasks'])} tasks on "
          f"{config.workers} workers (num_gpus {config.num_gpus} each) in "
          f"{time.perf_counter() - started:.1f} s; failed {summary.failed}")
    if summary.failed or summary.done != len(units):
        raise SystemExit("gpu_check: units failed: " + "; ".join(summary.errors[:5]))
    device = "cpu" if dry else "cuda"
    for task in doc["tasks"]:
        df = harness.load(root, task=task, sweep="gpu_check")
        devices = sorted(set(df["device"].astype(str)))
        precision = sorted(set(df["precision"].astype(str))) if "precision" in df else "-"
        print(f"  {task:<11} units {df['unit_id'].nunique():>2}  rows {len(df):>5}  "
              f"device {','.join(devices)}  precision {precision}")
        if any(not d.startswith(device) for d in devices):
            raise SystemExit(f"gpu_check: {task} rows ran on {devices}, expected {device}")
    pids = harness.load(root, task="noop", sweep="gpu_check")["pid"].nunique()
    print(f"  noop units ran in {pids} of the {config.workers} worker processes")
    return device


def timed(fn: Callable[[], Any], reps: int, device: str) -> float:
    """Median seconds of `fn` over `reps` runs after one warm-up, synchronised on CUDA."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    fn()
    sync()
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def corruption_throughput(device: str, n: int) -> None:
    from harness.data.corruptions import corrupt

    x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for kind in ("gaussian_noise", "defocus_blur", "fog", "jpeg_compression"):
        rates = {}
        for dev in dict.fromkeys(("cpu", device)):
            xd = x.to(dev)
            rates[dev] = n / timed(lambda: corrupt(xd, kind, 3), 3, dev)
        print(f"corruption {kind:<16} " + "  ".join(f"{d} {r:,.0f} img/s" for d, r in rates.items())
              + (f"  gpu/cpu {rates[device] / rates['cpu']:.1f}x" if device != "cpu" else ""))


def hvp_over_gradient(device: str, batch: int) -> None:
    from harness.analysis.hessian import HessianOperator, explicit_attention
    from harness.models import build_model

    torch.manual_seed(0)
    for name, args in (("resnet18", {}), ("vit_ti", {"patch_size": 4})):
        model = build_model(name, 10, **args).to(device).eval()
        x = torch.randn(batch, 3, 32, 32, device=device)
        y = torch.randint(0, 10, (batch,), device=device)

        def loss_fn(m: torch.nn.Module, b: tuple[torch.Tensor, ...]) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(m(b[0]), b[1])

        with explicit_attention(model):
            op = HessianOperator(model, [(x, y)], loss_fn, method="retained")
            # a real forward + backward (the retained operator reads its gradient off its graph)
            plain = HessianOperator(model, [(x, y)], loss_fn, method="double_backward")
            v = torch.randn(op.n, device=device)
            hvp = timed(lambda: op.matvec(v), 5, device)
            grad = timed(plain.gradient, 5, device)
        print(f"hvp {name}: {op.n:,} params, batch {batch}: HVP {hvp * 1e3:.1f} ms, gradient "
              f"{grad * 1e3:.1f} ms, hvp_over_grad {hvp / grad:.2f}")


def bf16_training(device: str, batch: int) -> None:
    from harness.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet18", 10).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    losses: dict[str, float] = {}

    def step(bf16: bool) -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses["bf16" if bf16 else "fp32"] = float(loss.detach())

    fp32 = timed(lambda: step(False), 5, device)
    bf16 = timed(lambda: step(True), 5, device)
    if not torch.isfinite(torch.tensor(losses["bf16"])):
        raise SystemExit(f"gpu_check: bf16 loss is {losses['bf16']}")
    print(f"train resnet18 batch {batch}: fp32 {fp32 * 1e3:.1f} ms/step, bf16 autocast "
          f"{bf16 * 1e3:.1f} ms/step ({fp32 / bf16:.2f}x), bf16 loss {losses['bf16']:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="run every step on the CPU, small")
    args = ap.parse_args()
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        sys.exit("gpu_check: torch sees no CUDA device (use --dry-run on a CPU machine)")
    card = "cpu (dry run)" if dry else torch.cuda.get_device_name(0)
    print(f"gpu_check on {card}; torch {torch.__version__}")
    with tempfile.TemporaryDirectory(prefix="gpu_check") as root:
        device = run_sweep(dry, root)
    corruption_throughput(device, 256 if dry else 2048)
    hvp_over_gradient(device, 8 if dry else 128)
    bf16_training(device, 8 if dry else 256)
    print(f"gpu_check=ok device={card}")


if __name__ == "__main__":
    main()
