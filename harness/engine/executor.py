"""Executors: run pending units in-process (`local`) or on a pool of Ray actors (`ray`).

Both report each unit's Outcome to the same bookkeeping and progress bar, and
both leave the store as the only record of what finished: resuming a sweep
never depends on executor state.

Retry policy, the same in both executors (`attempt` counts every run of a unit):
* a unit that raises (out-of-memory errors included) or runs past
  `unit_timeout` is re-run up to `retry_failures` times (default 0: errors are
  usually deterministic, and re-running the sweep retries them anyway);
* a unit whose worker died (Ray only) is re-run up to `max_retries` times.
Every failed attempt overwrites the unit's `_failures` record; success deletes it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from harness.engine.progress import Progress
from harness.engine.runner import (
    Outcome,
    UnitRunner,
    UnitTimeout,
    driver_meta,
    record_failure,
    stored_outcome,
)
from harness.engine.errors import ExecutorError
from harness.engine.run_config import RunConfig, RunSummary, retry_failed
from harness.engine.units import WorkUnit

__all__ = ["ExecutorError", "RunConfig", "RunSummary", "local_device", "run_units"]


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
            _run_local(units, results_root, config, on_outcome, summary)
        elif config.kind == "ray":
            from harness.engine.ray_pool import run_on_ray

            run_on_ray(units, results_root, config, on_outcome, summary)
        else:
            raise ExecutorError(f"unknown executor {config.kind!r}; allowed: local, ray")
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        summary.seconds = time.perf_counter() - started
        if progress is not None:
            progress.close()
    return summary


@contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """Raise UnitTimeout in this (main) thread after `seconds`; 0 means no limit."""
    if seconds <= 0:
        yield
        return
    if threading.current_thread() is not threading.main_thread():
        raise ExecutorError("unit_timeout with the local executor needs the main thread; "
                            "use the ray executor")

    def expire(signum: int, frame: object) -> None:
        raise UnitTimeout(f"unit ran past unit_timeout={seconds:g}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _run_local(units: list[WorkUnit], results_root: str, config: RunConfig,
               on_outcome: Callable[[Outcome], None], summary: RunSummary) -> None:
    """In-process loop; a timeout interrupts the unit's Python code (C calls finish first)."""
    runner = UnitRunner(results_root, device=local_device(config.device),
                        node_id=f"local:{os.uname().nodename}")
    queue = deque((u, 1) for u in units)
    while queue:
        unit, attempt = queue.popleft()
        try:
            with _alarm(config.for_task(unit.task).unit_timeout):
                outcome = runner.run(unit, attempt)
        except UnitTimeout as exc:  # fired outside the unit's own try block
            outcome = stored_outcome(runner.store, unit, runner.node_id) or Outcome(
                unit.unit_id, False, error=str(exc), node_id=runner.node_id,
                error_type="UnitTimeout")
            if not outcome.ok:
                record_failure(runner.store, unit, exc, "", driver_meta(attempt))
        if retry_failed(outcome, attempt, config):
            summary.retried += 1
            queue.append((unit, attempt + 1))
            continue
        on_outcome(outcome)
