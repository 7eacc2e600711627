"""Cost of a loss-landscape grid point against a plain forward pass, and against the original code.

    python benchmarks/bench_landscape.py [--model resnet18|vit_ti] [--points 25] [--rounds 5]
                                         [--samples 256] [--batch-size 256] [--threads 0]

Three sides, on the same zoo model (same seed, so the same weights) and the same
fixed augmented digits batches (`harness.analysis.objective.fixed_batches`, what the
landscape task measures on):

- plain: N times `model(x)` over the batches, eval mode, no_grad — the floor.
- harness: an N-point grid through `harness.analysis.landscape` exactly as the task runs
  it: the plane (w0 + two filter-normalized directions) is built, then every
  point is written in place from w0 and measured (NLL, accuracy, ECE, norm terms).
- original: how-do-vits-work's `get_loss_landscape`: deep-copy the model, and
  per point deep-copy the saved state dict, add r·basis to every entry, then
  `load_state_dict` — with the same measurement per point, so the difference
  is only how the weights get there.

Rounds alternate the order of the sides; the median round of each is compared.
The weight update alone (no measurement) is also timed for both approaches: on
a CPU the forward passes dominate a point, so the whole-grid speedup over the
original is modest there and grows with the model's size relative to the
evaluated batch (and on a GPU, where the forward is cheap).
Prints `speedup_vs_original=<original / harness>` and, last,
`landscape_efficiency=<plain / harness>` (goal ≥ 0.9).
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import time

import torch

MODELS = {
    "resnet18": {"width": 16, "layers": [1, 1, 1, 1]},
    "vit_ti": {"embed_dim": 64, "depth": 4, "num_heads": 4, "patch_size": 4},
}
CPU = torch.device("cpu")


def grid_coords(points: int) -> list[tuple[float, float]]:
    """`points` coordinates of a square-ish grid over [-1, 1]², row-major."""
    side = math.ceil(math.sqrt(points))
    axis = [-1 + 2 * i / max(side - 1, 1) for i in range(side)]
    return [(a, b) for b in axis for a in axis][:points]


@torch.no_grad()
def plain(model: torch.nn.Module, batches: list, points: int) -> float:
    """Seconds of `points` plain forward passes over the batches."""
    model.eval()
    started = time.perf_counter()
    for _ in range(points):
        for x, _, _ in batches:
            model(x)
    return time.perf_counter() - started


def harness_grid(model: torch.nn.Module, batches: list, coords: list) -> tuple[float, list]:
    """Seconds of the harness's grid (plane built, then every point), and its rows."""
    from harness.analysis.directions import random_direction
    from harness.analysis.landscape import Plane, evaluate_points

    started = time.perf_counter()
    plane = Plane(model, [random_direction(model, 0, k) for k in range(2)])
    rows = evaluate_points(model, plane, coords, batches, CPU, weight_decay=0.05)
    return time.perf_counter() - started, rows


def original_grid(model: torch.nn.Module, batches: list, coords: list) -> tuple[float, list]:
    """Seconds of the original code's approach (deep copies, load_state_dict per point)."""
    from harness.analysis.directions import random_direction
    from harness.analysis.landscape import point_metrics

    started = time.perf_counter()
    model = copy.deepcopy(model)
    ws0 = copy.deepcopy(model.state_dict())
    dirs = [random_direction(model, 0, k) for k in range(2)]
    # bases over the whole state dict, zero where the harness does not move (as ignore_bn does)
    bases = [{k: d.get(k, torch.zeros_like(v)) for k, v in ws0.items()} for d in dirs]
    captured: list = []
    hook = model.register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
    rows = []
    for ratio in coords:
        ws = copy.deepcopy(ws0)
        gs = [{k: r * bs[k] for k in bs} for r, bs in zip(ratio, bases)]
        gs = {k: torch.sum(torch.stack([g[k] for g in gs]), dim=0) + ws[k] for k in gs[0]}
        model.load_state_dict(gs)
        model.eval()
        rows.append(point_metrics(model, batches, CPU, 0.05, "l2", 10, captured))
    hook.remove()
    return time.perf_counter() - started, rows


def weight_updates(model: torch.nn.Module, coords: list) -> tuple[float, float]:
    """Seconds per point of only moving the weights: in-place writes vs the original's copies."""
    from harness.analysis.directions import random_direction
    from harness.analysis.landscape import Plane

    dirs = [random_direction(model, 0, k) for k in range(2)]
    plane = Plane(model, dirs)
    with plane.bound(model) as set_point:
        started = time.perf_counter()
        for c in coords:
            set_point(c)
        ours = (time.perf_counter() - started) / len(coords)
    copy_model = copy.deepcopy(model)
    ws0 = copy.deepcopy(copy_model.state_dict())
    bases = [{k: d.get(k, torch.zeros_like(v)) for k, v in ws0.items()} for d in dirs]
    started = time.perf_counter()
    for ratio in coords:
        ws = copy.deepcopy(ws0)
        gs = [{k: r * bs[k] for k in bs} for r, bs in zip(ratio, bases)]
        gs = {k: torch.sum(torch.stack([g[k] for g in gs]), dim=0) + ws[k] for k in gs[0]}
        copy_model.load_state_dict(gs)
    return ours, (time.perf_counter() - started) / len(coords)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18", choices=sorted(MODELS))
    ap.add_argument("--points", type=int, default=25)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (0: torch's default); 1 is what a 1-CPU Ray worker runs")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from harness.data.datasets import load_dataset
    from harness.models.registry import build_model
    from harness.analysis.objective import fixed_batches

    torch.manual_seed(0)
    model = build_model(args.model, 10, **MODELS[args.model]).eval()
    batches = fixed_batches(load_dataset("digits", "train"), args.samples, args.batch_size,
                            "paper", {}, seed=0)
    coords = grid_coords(args.points)
    w_before = {k: v.clone() for k, v in model.state_dict().items()}
    print(f"model {args.model} ({sum(p.numel() for p in model.parameters())} params), "
          f"{args.points} points x {args.samples} samples, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, {args.rounds} rounds (+1 warm-up)")
    plain(model, batches, 2)  # warm-up
    harness_grid(model, batches, coords[:2])
    original_grid(model, batches, coords[:2])

    times: dict[str, list[float]] = {"plain": [], "harness": [], "original": []}
    max_diff = 0.0
    for r in range(args.rounds):
        order = ["plain", "harness", "original"]
        order = order[r % 3:] + order[:r % 3]
        rows = {}
        for side in order:
            if side == "plain":
                times[side].append(plain(model, batches, len(coords)))
            elif side == "harness":
                t, rows[side] = harness_grid(model, batches, coords)
                times[side].append(t)
            else:
                t, rows[side] = original_grid(model, batches, coords)
                times[side].append(t)
        max_diff = max(max_diff, max(abs(a["nll"] - b["nll"]) for a, b in
                                     zip(rows["harness"], rows["original"])))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.3f}s" for k, v in times.items()))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in w_before.items()), \
        "weights changed"
    updates = [weight_updates(model, coords) for _ in range(args.rounds)]
    ours_w = statistics.median(u[0] for u in updates)
    orig_w = statistics.median(u[1] for u in updates)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:>9}: median {v:.3f}s  ({1000 * v / len(coords):.1f} ms/point)")
    print(f"weights only: harness {1000 * ours_w:.2f} ms/point, original {1000 * orig_w:.2f} "
          f"ms/point ({orig_w / ours_w:.1f}x)")
    print(f"max |nll harness - nll original| = {max_diff:.2e}; weights after: bit-identical")
    print(f"speedup_vs_original={med['original'] / med['harness']:.3f}")
    print(f"landscape_efficiency={med['plain'] / med['harness']:.3f}")


if __name__ == "__main__":
    main()
