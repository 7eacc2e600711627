"""Overhead of the Ray executor against a plain in-process loop doing the same work.

    python benchmarks/bench_engine.py [--units 200] [--workers 2] [--max-samples 192]

Work: `--units` units of the real `evaluate` task — resnet18 at width 8 (176k
parameters) on the bundled digits test split, `max_samples` images per unit
(192 ≈ 45 ms on one core here). Units differ by `seed`, so each builds and
initialises its own model, as a seed sweep does; the dataset is shared through
the worker cache on both sides.

Sides, each starting cold (nothing imported, no data loaded), as a user runs them:
* plain: a fresh Python process that imports the stack and loops over the units
  calling the task's `run` with torch's default thread count, keeping the rows in
  memory and writing one Parquet file at the end — the script a researcher would
  write without the harness. Its whole wall time is the baseline.
* ray: `run_units` with a `ray` executor of `--workers` actors (one torch thread
  each), one Parquet file per unit. Its wall time includes creating the actors
  and their imports; starting Ray itself is timed and printed separately.

Also printed, for context: the plain loop's own time (after `import torch` and
the harness; it still pays the lazy timm/scikit-learn imports and the digits load
in its first unit) and the ratio against it. The script checks that Ray wrote one file per unit with
no failure and the plain loop's acc/nll/ece (to 1e-5), and exits 1 otherwise.
The last line is `overhead_ratio=<ray wall / plain wall>`; the goal on a 2-core
machine is ≤ 1.3.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

SWEEP = "bench_engine"
METRICS = ("acc", "nll", "ece")
TOLERANCE = 1e-5


def sweep_document(n_units: int, max_samples: int) -> dict:
    return {"name": SWEEP, "tasks": {"evaluate": {
        "model": "resnet18", "model_args": {"width": 8}, "dataset": "digits",
        "split": "test", "max_samples": max_samples, "seed": list(range(n_units))}}}


def plain_loop(n_units: int, max_samples: int, out_dir: str) -> None:
    """The baseline, run as its own process: prints its loop time and metrics as JSON."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from harness.engine.context import UnitContext, WorkerCache
    from harness.engine.registry import get_task
    from harness.engine.spec import validate

    units = validate(sweep_document(n_units, max_samples)).units()
    task, cache, device = get_task("evaluate"), WorkerCache(), torch.device("cpu")
    started = time.perf_counter()
    rows = []
    for unit in units:
        ctx = UnitContext(device=device, cache=cache, seed=unit.params["seed"],
                          unit_id=unit.unit_id)
        rows += [{"unit_id": unit.unit_id, **r} for r in task.run(unit, ctx)]
    pq.write_table(pa.Table.from_pylist(rows), os.path.join(out_dir, "plain.parquet"))
    loop_s = time.perf_counter() - started
    print(json.dumps({"loop_s": loop_s, "threads": torch.get_num_threads(),
                      "metrics": {r["unit_id"]: [r[m] for m in METRICS] for r in rows
                                  if r["quantity"] == "metrics"}}))


def ray_run(n_units: int, max_samples: int, workers: int, out_dir: str) -> dict:
    import ray

    from harness.engine.executor import RunConfig, run_units
    from harness.engine.ray_pool import ensure_ray
    from harness.engine.spec import validate
    from harness.engine.store import Store, load

    units = validate(sweep_document(n_units, max_samples)).units()
    config = RunConfig(kind="ray", workers=workers)
    t = time.perf_counter()
    ensure_ray(config)
    start_s = time.perf_counter() - t
    try:
        t = time.perf_counter()
        summary = run_units(units, out_dir, config)
        wall_s = time.perf_counter() - t
    finally:
        ray.shutdown()
    files = Store(out_dir).files(SWEEP, "evaluate")
    if summary.failed or summary.done != n_units or len(files) != n_units:
        sys.exit(f"FAIL: ray run done={summary.done} failed={summary.failed} "
                 f"files={len(files)} of {n_units}: {summary.errors[:3]}")
    df = load(out_dir, task="evaluate", sweep=SWEEP, quantity="metrics")
    return {"start_s": start_s, "wall_s": wall_s,
            "metrics": {r["unit_id"]: [r[m] for m in METRICS] for r in df.to_dict("records")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-samples", type=int, default=192, help="images per unit (its cost)")
    ap.add_argument("--plain-child", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.plain_child:
        plain_loop(args.units, args.max_samples, args.plain_child)
        return

    with tempfile.TemporaryDirectory(prefix="bench_engine_") as tmp:
        t = time.perf_counter()
        child = subprocess.run(
            [sys.executable, __file__, "--units", str(args.units), "--max-samples",
             str(args.max_samples), "--plain-child", tmp],
            check=True, capture_output=True, text=True)
        plain_s = time.perf_counter() - t
        plain = json.loads(child.stdout.strip().splitlines()[-1])
        ray = ray_run(args.units, args.max_samples, args.workers, os.path.join(tmp, "ray"))

    if set(plain["metrics"]) != set(ray["metrics"]):
        sys.exit("FAIL: the two sides ran different units")
    diff = max(abs(a - b) for uid, vals in plain["metrics"].items()
               for a, b in zip(vals, ray["metrics"][uid]))
    if diff > TOLERANCE:
        sys.exit(f"FAIL: metrics differ by {diff:.3g} > {TOLERANCE}")

    n = args.units
    rows = [
        (f"plain process ({plain['threads']} torch threads, imports included)", plain_s),
        ("  of which the unit loop (after `import torch` and the harness)", plain["loop_s"]),
        (f"ray executor ({args.workers} actors x 1 thread, actor start included)", ray["wall_s"]),
        ("ray start (not included above)", ray["start_s"]),
    ]
    print(f"{n} evaluate units, {args.max_samples} digits images each, resnet18 width 8; "
          f"{os.cpu_count()} CPUs")
    for name, seconds in rows:
        print(f"{name:<66}{seconds:8.2f} s {1000 * seconds / n:8.1f} ms/unit")
    print(f"max |ray - plain| over {', '.join(METRICS)}: {diff:.3g}")
    print(f"ratio against the unit loop alone (info): {ray['wall_s'] / plain['loop_s']:.3f}")
    print(f"overhead_ratio={ray['wall_s'] / plain_s:.3f}")


if __name__ == "__main__":
    main()
