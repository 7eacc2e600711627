"""Overhead of the Ray executor against a plain in-process loop doing the same work.

    python benchmarks/bench_engine.py [--units 200] [--workers 2]

Work
----
`--units` units of the real `evaluate` task: ``resnet18`` shrunk to
``model_args: {width: 8}`` (~44k parameters), on the bundled ``digits`` test
split, ``max_samples: 192`` (one batch; the default ``batch_size`` is 256).
Units differ only by ``seed``, so every unit misses the worker cache and builds
and initialises its own model, as a real seed sweep does; the dataset is
shared through the worker cache, as in the harness.

Why these params: on the 2-core reference machine with one torch thread, width
8 costs ~20 ms at 64 samples, ~30 ms at 128 and ~70 ms at 256; 192 samples
lands near the ~50 ms a unit should take for this benchmark (short enough
that per-unit executor overhead would show, long enough to be real model
work). Width 16 costs ~2x more per sample and would leave fewer samples per
unit. The calibration step at start measures and prints the actual cost on
the machine at hand; use ``--max-samples`` to move it.

Sides
-----
* plain loop: what a researcher writes without the harness. One process
  (this one), call ``tasks.evaluate.run(unit, ctx)`` per unit with one
  ``WorkerCache``, keep the rows in a list and write ONE parquet file at the
  end (timed). Measured twice: with torch's default intra-op thread count
  (the honest baseline, and the denominator of ``overhead_ratio``) and with
  ``torch.set_num_threads(1)`` for context.
* ray: ``harness.executor.run_units(..., RunConfig(kind="ray", workers=N))``
  into a fresh results directory: N actors, one torch thread each (the
  executor sets ``num_cpus=1`` threads per actor), one parquet file per unit.
  Ray itself is started first with ``harness.ray_pool.ensure_ray`` and timed
  separately ("ray start"); the ray wall time therefore EXCLUDES cluster
  start but INCLUDES actor start-up (process, imports, first dataset load in
  each actor), which is part of what the executor costs per run.

Both sides run in this process after the calibration has warmed it (torch
imported, digits loaded and cached), so the plain loop pays no cold start
while every Ray actor does; the cold first-unit cost is printed so the
reader can see how much of the difference that is.

The script checks that the Ray run wrote exactly one result file per unit, no
failures, and the same acc/nll/ece per unit id as the plain loop (to 1e-5),
and exits 1 otherwise. The LAST line is ``overhead_ratio=<ray wall / plain
wall (default threads)>``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from harness.context import UnitContext, WorkerCache
from harness.executor import RunConfig, run_units
from harness.registry import get_task
from harness.schema import FAILURES_TABLE
from harness.spec import validate
from harness.store import Store, load
from harness.units import WorkUnit

SWEEP = "bench_engine"
METRICS = ("acc", "nll", "ece")
TOLERANCE = 1e-5


def make_units(n: int, max_samples: int, width: int, seed_offset: int = 0) -> list[WorkUnit]:
    document = {
        "name": SWEEP,
        "description": "executor overhead benchmark",
        "tasks": {"evaluate": {
            "model": "resnet18",
            "model_args": {"width": width},
            "dataset": "digits",
            "split": "test",
            "max_samples": max_samples,
            "seed": list(range(seed_offset, seed_offset + n)),
        }},
    }
    return validate(document).units()


def plain_loop(units: list[WorkUnit], out_dir: str) -> tuple[float, dict[str, dict[str, Any]]]:
    """The no-harness baseline: run every unit in this process, one parquet at the end."""
    task = get_task("evaluate")
    cache = WorkerCache()
    device = torch.device("cpu")
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for unit in units:
        ctx = UnitContext(device=device, cache=cache, seed=int(unit.params.get("seed", 0)),
                          unit_id=unit.unit_id)
        for row in task.run(unit, ctx):
            rows.append({"unit_id": unit.unit_id, "seed": unit.params["seed"], **row})
    pq.write_table(pa.Table.from_pylist(rows), os.path.join(out_dir, "plain.parquet"))
    wall = time.perf_counter() - started
    return wall, {r["unit_id"]: r for r in rows}


def calibrate(n: int, max_samples: int, width: int) -> tuple[float, float]:
    """(cold first-unit seconds, median warm per-unit seconds) with one torch thread."""
    task = get_task("evaluate")
    cache = WorkerCache()
    device = torch.device("cpu")
    units = make_units(n + 1, max_samples, width, seed_offset=10_000)
    times = []
    for unit in units:
        ctx = UnitContext(device=device, cache=cache, seed=unit.params["seed"],
                          unit_id=unit.unit_id)
        t = time.perf_counter()
        task.run(unit, ctx)
        times.append(time.perf_counter() - t)
    return times[0], statistics.median(times[1:])


class ForeignCpu:
    """CPU seconds used by processes outside this one and its descendants (Ray included).

    The benchmark is only meaningful on an otherwise idle machine; this flags runs
    that shared the 2 cores with something else (e.g. a test suite). Needs psutil.
    """

    def __init__(self) -> None:
        try:
            import psutil
        except ImportError:  # the measurement is optional
            psutil = None
        self.psutil = psutil
        self.start = self._snapshot()

    def _snapshot(self) -> dict[int, float]:
        if self.psutil is None:
            return {}
        me = self.psutil.Process()
        mine = {me.pid} | {c.pid for c in me.children(recursive=True)}
        out = {}
        for proc in self.psutil.process_iter():
            if proc.pid in mine:
                continue
            try:
                t = proc.cpu_times()
                out[proc.pid] = t.user + t.system
            except (self.psutil.NoSuchProcess, self.psutil.AccessDenied):
                pass
        return out

    def seconds(self) -> float | None:
        """Foreign CPU seconds since construction (None without psutil)."""
        if self.psutil is None:
            return None
        end = self._snapshot()
        return sum(max(0.0, t - self.start.get(pid, 0.0)) for pid, t in end.items())


def busy_note(foreign: ForeignCpu, wall: float) -> str:
    used = foreign.seconds()
    if used is None:
        return ""
    note = f"; other processes used {used:.2f} CPU-s meanwhile"
    if used > 0.05 * wall * (os.cpu_count() or 1):
        note += " (MACHINE NOT IDLE: timings are contaminated)"
    return note


def fail(message: str) -> None:
    print(f"FAIL: {message}", flush=True)
    sys.exit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-samples", type=int, default=192,
                    help="samples evaluated per unit (sets the per-unit cost)")
    ap.add_argument("--width", type=int, default=8, help="resnet18 width")
    ap.add_argument("--max-inflight", type=int, default=2, help="RunConfig.max_inflight")
    ap.add_argument("--calibration-units", type=int, default=5)
    args = ap.parse_args()

    default_threads = torch.get_num_threads()
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"torch default threads={default_threads}", flush=True)

    # -- calibration (also warms this process: imports, digits load) ----------------
    torch.set_num_threads(1)
    cold, per_unit = calibrate(args.calibration_units, args.max_samples, args.width)
    print(f"calibration: resnet18 width={args.width}, digits test, max_samples="
          f"{args.max_samples}: {per_unit * 1000:.1f} ms/unit (1 thread, median of "
          f"{args.calibration_units}); cold first unit {cold:.2f} s (imports + dataset load)",
          flush=True)

    units = make_units(args.units, args.max_samples, args.width)
    assert len({u.unit_id for u in units}) == len(units) == args.units

    with tempfile.TemporaryDirectory(prefix="bench_engine_") as tmp:
        # -- plain loop, torch default threads (the baseline) ----------------------
        torch.set_num_threads(default_threads)
        foreign = ForeignCpu()
        plain_wall, plain_rows = plain_loop(units, tmp)
        print(f"plain loop ({default_threads} threads): {plain_wall:.2f} s"
              f"{busy_note(foreign, plain_wall)}", flush=True)

        # -- plain loop, 1 thread (context) ----------------------------------------
        torch.set_num_threads(1)
        foreign = ForeignCpu()
        plain1_wall, plain1_rows = plain_loop(units, tmp)
        print(f"plain loop (1 thread): {plain1_wall:.2f} s"
              f"{busy_note(foreign, plain1_wall)}", flush=True)
        torch.set_num_threads(default_threads)

        # -- ray ----------------------------------------------------------------------
        import ray

        from harness.ray_pool import ensure_ray

        config = RunConfig(kind="ray", workers=args.workers, max_inflight=args.max_inflight)
        results = os.path.join(tmp, "ray_results")
        t = time.perf_counter()
        ensure_ray(config)
        ray_start = time.perf_counter() - t
        print(f"ray start: {ray_start:.2f} s", flush=True)
        try:
            foreign = ForeignCpu()
            t0_wall = time.time()
            t = time.perf_counter()
            summary = run_units(units, results, config, progress=None)
            ray_wall = time.perf_counter() - t
            note = busy_note(foreign, ray_wall)
        finally:
            ray.shutdown()
        print(f"ray ({args.workers} actors x 1 thread): {ray_wall:.2f} s "
              f"(done={summary.done}, failed={summary.failed}){note}", flush=True)

        # -- checks ------------------------------------------------------------------
        if summary.failed or summary.done != len(units) or summary.interrupted:
            fail(f"ray run: done={summary.done} failed={summary.failed} "
                 f"interrupted={summary.interrupted}; errors: {summary.errors[:3]}")
        store = Store(results)
        files = store.files(SWEEP, "evaluate")
        failures = store.files(SWEEP, FAILURES_TABLE)
        if len(files) != len(units) or failures:
            fail(f"ray run wrote {len(files)} result files for {len(units)} units "
                 f"and {len(failures)} failure files")
        df = load(results, "evaluate", sweep=SWEEP)
        if sorted(df["unit_id"]) != sorted(plain_rows):
            fail("ray results and plain loop cover different unit ids")
        max_diff = 0.0
        max_diff_1t = 0.0
        for rec in df.to_dict("records"):
            for m in METRICS:
                max_diff = max(max_diff, abs(rec[m] - plain_rows[rec["unit_id"]][m]))
                max_diff_1t = max(max_diff_1t, abs(rec[m] - plain1_rows[rec["unit_id"]][m]))
        print(f"max |ray - plain| over {', '.join(METRICS)}: {max_diff:.3g} "
              f"(vs 1-thread plain loop: {max_diff_1t:.3g})", flush=True)
        if not max_diff <= TOLERANCE or not max_diff_1t <= TOLERANCE:
            fail(f"metric values differ by more than {TOLERANCE}")

        # -- where the ray time went (from the result files' own columns) --------------
        # duration_s is measured inside the actor around task.run (UnitRunner._meta is
        # taken before the table is built and written), finished_at just after it.
        timeline = sorted((ts.timestamp() - t0_wall - d, d) for ts, d in
                          zip(df["finished_at"], df["duration_s"]))

    k = min(args.workers, len(timeline))
    cold = timeline[:k]                      # each actor's first unit: imports + digits load
    warm = timeline[k:]
    startup = max(start for start, _ in cold)
    cold_end = max(start + d for start, d in cold)
    last_end = max(start + d for start, d in timeline)
    print()
    print("ray breakdown (seconds since run_units was called):")
    print(f"  actor start-up (process + imports until each actor's first unit starts): "
          f"{', '.join(f'{s_:.2f}' for s_, _ in cold)}")
    print(f"  first unit of each actor (cold: sklearn import + digits load + model): "
          f"{', '.join(f'{d:.2f}' for _, d in cold)} s; all actors warm at {cold_end:.2f}")
    if warm:
        warm_wall = last_end - cold_end
        med = statistics.median(d for _, d in warm)
        print(f"  steady state: {len(warm)} units in {warm_wall:.2f} s = "
              f"{warm_wall / len(warm) * 1000:.1f} ms/unit wall with {args.workers} actors "
              f"(in-actor median {med * 1000:.1f} ms/unit; plain loop "
              f"{plain_wall / len(units) * 1000:.1f} ms/unit at {default_threads} threads, "
              f"{plain1_wall / len(units) * 1000:.1f} at 1)")
        print(f"  steady-state-only ratio (info): {warm_wall / len(warm) * len(units) / plain_wall:.3f}")
    print(f"  after the last unit finished: {ray_wall - last_end:.2f} s "
          f"(file write, result collection, actor kill)")

    rows = [
        ("units", f"{len(units)}", ""),
        ("per-unit s (calibrated, 1 thread)", f"{per_unit:.4f}", ""),
        (f"plain wall, default threads ({default_threads})", f"{plain_wall:.2f}",
         f"{plain_wall / len(units) * 1000:.1f} ms/unit"),
        ("plain wall, 1 thread", f"{plain1_wall:.2f}",
         f"{plain1_wall / len(units) * 1000:.1f} ms/unit"),
        (f"ray wall ({args.workers} actors x 1 thread, incl. actor start)", f"{ray_wall:.2f}",
         f"{ray_wall / len(units) * 1000:.1f} ms/unit"),
        ("ray start time (excluded above)", f"{ray_start:.2f}", ""),
    ]
    print()
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>8}  {note}")
    print(f"overhead_ratio={ray_wall / plain_wall:.3f}")


if __name__ == "__main__":
    main()
