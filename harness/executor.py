"""Executors: run pending units in-process (`local`) or on a pool of Ray actors (`ray`).

Both report each unit's Outcome to the same bookkeeping and progress bar, and
both leave the store as the only record of what finished: resuming a sweep
never depends on executor state.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import torch

from harness.progress import Progress
from harness.runner import Outcome, UnitRunner
from harness.units import WorkUnit


@dataclass
class RunConfig:
    """How to run a sweep; the executor section of a spec, overridden by CLI flags."""

    kind: str = "ray"
    workers: int = 0
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    max_retries: int = 2
    max_inflight: int = 2
    device: str = "auto"
    address: str | None = None


@dataclass
class RunSummary:
    total: int = 0
    done: int = 0
    failed: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    nodes: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


class ExecutorError(RuntimeError):
    """The executor itself cannot go on (e.g. every worker dies at start)."""


def local_device(choice: str) -> str:
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ExecutorError("device=cuda requested but torch sees no CUDA device; use device=cpu")
    return choice


def run_units(units: list[WorkUnit], results_root: str, config: RunConfig,
              progress: Progress | None = None) -> RunSummary:
    """Run `units` (already filtered to the pending ones) and write their results.

    Ctrl-C stops cleanly: finished units are on disk, the summary says
    `interrupted`, and a re-run picks up the rest.
    """
    summary = RunSummary(total=len(units))
    started = time.perf_counter()

    def on_outcome(outcome: Outcome) -> None:
        if outcome.ok:
            summary.done += 1
        else:
            summary.failed += 1
            summary.errors.append(f"{outcome.unit_id}: {outcome.error}")
        summary.nodes[outcome.node_id] += 1
        if progress is not None:
            progress.update(done=int(outcome.ok), failed=int(not outcome.ok))

    try:
        if config.kind == "local":
            _run_local(units, results_root, config, on_outcome)
        elif config.kind == "ray":
            from harness.ray_pool import run_on_ray

            run_on_ray(units, results_root, config, on_outcome)
        else:
            raise ExecutorError(f"unknown executor {config.kind!r}; allowed: local, ray")
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        summary.seconds = time.perf_counter() - started
        if progress is not None:
            progress.close()
    return summary


def _run_local(units: list[WorkUnit], results_root: str, config: RunConfig,
               on_outcome: Callable[[Outcome], None]) -> None:
    runner = UnitRunner(results_root, device=local_device(config.device),
                        node_id=f"local:{os.uname().nodename}")
    for unit in units:
        on_outcome(runner.run(unit))
