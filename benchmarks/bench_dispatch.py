"""The driver's dispatch ceiling: no-op units per second through the Ray executor.

    python benchmarks/bench_dispatch.py [--units 10000] [--workers 2] [--compare 2000]

Every unit takes the real path: sent to an actor, run by the `noop` task (which
does nothing), its Parquet file written under a temp name and renamed, its
Outcome streamed back, counted by the driver. So the rate bounds how many GPUs
one driver keeps busy: GPUs ≤ rate × seconds per unit.

`dispatch_rate` is the steady rate: units between the 10% and the 90% marks
over the time between them, so neither Ray's and the actors' start (torch and
the task imports, several seconds) nor the tail counts. The end-to-end rate is
printed beside it, and the driver's own CPU time per unit (what bounds it when the actors
run on other machines). `--compare N` also runs N units with batching off
(`max_batch=1`, one actor call per unit) for the side-by-side figure. The
script checks that every unit's file exists exactly once and nothing failed,
and exits 1 otherwise. Last line: `dispatch_rate=<units/s>` (goal ≥ 500 on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

SWEEP = "bench_dispatch"


class Marks:
    """A stand-in progress bar that records when each unit finished."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def update(self, done: int = 0, failed: int = 0) -> None:
        self.times.extend([time.perf_counter()] * (done + failed))

    def close(self) -> None:
        pass

    def steady_rate(self) -> float:
        n = len(self.times)
        lo, hi = n // 10, (9 * n) // 10
        return (hi - lo) / (self.times[hi - 1] - self.times[lo - 1])


def run(n_units: int, workers: int, max_batch: int, out_dir: str) -> dict[str, float]:
    from harness.engine.executor import RunConfig, run_units
    from harness.engine.spec import validate
    from harness.engine.store import Store

    units = validate({"name": SWEEP, "tasks": {"noop": {"index": list(range(n_units))}}}).units()
    marks = Marks()
    started, cpu = time.perf_counter(), time.process_time()
    summary = run_units(units, out_dir, RunConfig(kind="ray", workers=workers,
                                                  max_batch=max_batch), marks)  # type: ignore[arg-type]
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    stored = Store(out_dir).unit_ids(SWEEP, "noop")
    if summary.failed or summary.done != n_units or stored != {u.unit_id for u in units}:
        sys.exit(f"FAIL: done={summary.done} failed={summary.failed} stored={len(stored)} "
                 f"of {n_units}: {summary.errors[:3]}")
    return {"wall": wall, "ready": summary.ready_s, "steady": marks.steady_rate(),
            "end_to_end": n_units / wall, "driver_cpu_us": 1e6 * cpu / n_units}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--compare", type=int, default=2000,
                    help="units for the one-call-per-unit run (0: skip it)")
    args = ap.parse_args()

    import ray

    from harness.engine.executor import RunConfig
    from harness.engine.ray_pool import ensure_ray

    t = time.perf_counter()
    ensure_ray(RunConfig(kind="ray", workers=args.workers))
    start_s = time.perf_counter() - t
    try:
        with tempfile.TemporaryDirectory(prefix="bench_dispatch_") as tmp:
            batched = run(args.units, args.workers, 64, os.path.join(tmp, "batched"))
            single = (run(args.compare, args.workers, 1, os.path.join(tmp, "single"))
                      if args.compare else None)
    finally:
        ray.shutdown()

    print(f"no-op units through the ray executor, {args.workers} actors, {os.cpu_count()} CPUs; "
          f"ray start {start_s:.1f} s (not included)")
    rows = [(f"batched (max_batch 64), {args.units} units", batched)]
    if single:
        rows.append((f"one unit per actor call (max_batch 1), {args.compare} units", single))
    for name, r in rows:
        print(f"{name:<58} wall {r['wall']:6.1f} s (actors up after {r['ready']:4.1f} s)  "
              f"end-to-end {r['end_to_end']:7.1f}/s  steady {r['steady']:7.1f}/s  "
              f"driver CPU {r['driver_cpu_us']:5.0f} us/unit")
    print(f"driver alone (its CPU per unit, actors elsewhere): about "
          f"{1e6 / batched['driver_cpu_us']:.0f} units/s (info)")
    if single:
        print(f"batched / one-per-call steady rate: {batched['steady'] / single['steady']:.2f}")
    print(f"dispatch_rate={batched['steady']:.0f}")


if __name__ == "__main__":
    main()
