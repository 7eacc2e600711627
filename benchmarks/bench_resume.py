"""A train unit whose driver is killed at 60% of its run, then re-run, against one uninterrupted run.

    python benchmarks/bench_resume.py [--epochs 40] [--kill-at 0.6]

Both sides are the real `harness run <sweep> --executor local` command in a
subprocess (imports and data loading included), on one train unit: a narrow
ResNet on 40% of digits, `augment: paper`. First the uninterrupted run is timed (T).
Then a fresh results root: the run is started, its whole process group killed
with SIGKILL at `kill_at` × T (no cleanup runs: as a lost node or a killed
driver), and the command run again until it finishes; its time is R. The final
checkpoints of both are compared tensor by tensor.

The last line is `resume_ratio=<R / T> equal_weights=<bool> ...`; goal ≤ 0.7 with equal weights.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

HARNESS = [sys.executable, "-m", "harness.cli"]


def sweep(path: Path, epochs: int) -> Path:
    doc = {"name": "resume_bench", "tasks": {"train": {
        "model": "resnet18", "model_args": {"width": 16, "layers": [1, 1, 1, 1]},
        "dataset": "digits", "data_fraction": 0.4, "epochs": epochs - 1, "warmup_epochs": 1,
        "batch_size": 64, "lr": 0.002, "augment": "paper"}}}
    path.write_text(yaml.safe_dump(doc))
    return path


def run(spec: Path, results: Path, kill_after: float | None = None) -> tuple[float, int]:
    """Seconds the command ran and its exit code (-9 when killed)."""
    started = time.perf_counter()
    proc = subprocess.Popen([*HARNESS, "run", str(spec), "--results", str(results),
                             "--executor", "local", "--device", "cpu"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        rc = proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait()
    return time.perf_counter() - started, rc


def final_weights(results: Path) -> dict[str, torch.Tensor]:
    (path,) = results.glob("resume_bench/_artifacts/train/*/final.safetensors")
    return load_file(str(path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=40, help="epochs in all (one of them warmup)")
    ap.add_argument("--kill-at", type=float, default=0.6, help="share of the uninterrupted time")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = sweep(tmp / "resume_bench.yaml", args.epochs)
        whole, rc = run(spec, tmp / "whole")
        assert rc == 0, f"the uninterrupted run failed (exit {rc})"
        print(f"uninterrupted: {whole:.1f}s")
        killed, rc = run(spec, tmp / "killed", kill_after=args.kill_at * whole)
        assert rc != 0, "the run finished before it was killed; raise --epochs"
        states = list((tmp / "killed").glob("resume_bench/_artifacts/train/*/progress.json"))
        epoch = json.loads(states[0].read_text())["epoch"] if states else 0
        print(f"killed after {killed:.1f}s, at epoch {epoch}/{args.epochs}")
        rerun, rc = run(spec, tmp / "killed")
        assert rc == 0, f"the re-run failed (exit {rc})"
        print(f"re-run: {rerun:.1f}s")
        a, b = final_weights(tmp / "whole"), final_weights(tmp / "killed")
        equal = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        print(f"resume_ratio={rerun / whole:.3f} equal_weights={equal} "
              f"uninterrupted_s={whole:.1f} rerun_s={rerun:.1f} killed_at_epoch={epoch}")


if __name__ == "__main__":
    main()
