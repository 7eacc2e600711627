"""A pool of long-lived Ray worker actors driven by one `ray.wait` loop.

Why not `ray.util.ActorPool`: it loses track of which unit a dead actor was
running and shrinks as actors die. Here every pending ObjectRef maps to its
unit, a unit whose actor died is re-queued (up to `max_retries`) on a fresh
actor that replaces the dead one, and each actor has at most `max_inflight`
units queued so that work spreads evenly and a lost actor loses little.
"""

from __future__ import annotations

import logging
import math
import os
from collections import deque
from dataclasses import asdict
from typing import Any, Callable

import ray
from ray.exceptions import RayActorError, RayTaskError

from harness.executor import ExecutorError, RunConfig
from harness.runner import Outcome, driver_meta, record_failure
from harness.store import Store
from harness.units import WorkUnit

log = logging.getLogger("harness.ray")


class SecurityError(ExecutorError):
    """Refusing to run Ray without token authentication."""


class Worker:
    """One actor: one device (or a fraction of a GPU), one cache, one thread of units."""

    def __init__(self, results_root: str, num_gpus: float, num_cpus: float) -> None:
        if num_gpus == 0:
            # Actors without GPUs otherwise see every GPU of the node.
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        import torch

        from harness.registry import load_tasks
        from harness.runner import UnitRunner

        torch.set_num_threads(max(1, int(num_cpus)))
        use_cuda = num_gpus > 0 and torch.cuda.is_available()
        if use_cuda and num_gpus < 1:
            # A fractional GPU is only a scheduling label in Ray: cap memory here.
            torch.cuda.set_per_process_memory_fraction(num_gpus)
        load_tasks()
        node_id = ray.get_runtime_context().get_node_id()
        self.runner = UnitRunner(results_root, device="cuda" if use_cuda else "cpu",
                                 node_id=node_id)

    def pid(self) -> int:
        return os.getpid()

    def run(self, unit: dict[str, Any], attempt: int) -> dict[str, Any]:
        return asdict(self.runner.run(WorkUnit.from_dict(unit), attempt))


def ensure_ray(config: RunConfig) -> bool:
    """Join `config.address` (or $RAY_ADDRESS), else start an embedded local Ray.

    Returns True when this call connected, so the caller disconnects at the end.
    """
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        raise SecurityError("RAY_AUTH_MODE=disabled: the harness keeps Ray token authentication "
                            "on; unset RAY_AUTH_MODE (a token is created in ~/.ray/auth_token)")
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                               "configure_logging": True}
    address = config.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **options)
    else:
        # "local" starts a new instance even when a `ray start` cluster exists
        # on this machine (plain ray.init() would silently join that one).
        needed = math.ceil(max(config.workers, 1) * config.num_cpus)
        ray.init(address="local", num_cpus=max(os.cpu_count() or 1, needed), **options)
    return True


def default_workers(config: RunConfig) -> int:
    """One worker per GPU share when GPUs are asked for, else one per CPU share."""
    resources = ray.cluster_resources()
    if config.num_gpus > 0:
        return max(1, int(resources.get("GPU", 0) / config.num_gpus))
    return max(1, int(resources.get("CPU", 1) / config.num_cpus))


def run_on_ray(units: list[WorkUnit], results_root: str, config: RunConfig,
               on_outcome: Callable[[Outcome], None]) -> None:
    """Run units on a pool of actors; returns when every unit has an outcome."""
    started_here = ensure_ray(config)
    store = Store(results_root)
    n_workers = config.workers or default_workers(config)
    remote_worker = ray.remote(Worker).options(
        num_cpus=config.num_cpus, num_gpus=config.num_gpus, max_concurrency=1,
        max_restarts=0, max_task_retries=0)

    def spawn() -> Any:
        return remote_worker.remote(results_root, config.num_gpus, config.num_cpus)

    slots = [spawn() for _ in range(min(n_workers, max(len(units), 1)))]
    queue: deque[tuple[WorkUnit, int]] = deque((u, 1) for u in units)
    inflight: dict[Any, tuple[WorkUnit, int, int, Any]] = {}
    load = [0] * len(slots)
    deaths_since_success = 0
    try:
        while queue or inflight:
            for i, actor in enumerate(slots):
                while queue and load[i] < config.max_inflight:
                    unit, attempt = queue.popleft()
                    ref = actor.run.remote(unit.to_dict(), attempt)
                    inflight[ref] = (unit, attempt, i, actor)
                    load[i] += 1
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            for ref in ready:
                unit, attempt, slot, actor = inflight.pop(ref)
                load[slot] -= 1
                try:
                    result = Outcome(**ray.get(ref))
                except RayActorError as exc:
                    deaths_since_success += 1
                    if deaths_since_success > 2 * len(slots) + 2 * config.max_retries + 2:
                        raise ExecutorError(
                            f"worker actors keep dying without finishing a unit (last: {exc}); "
                            "see the Ray logs under /tmp/ray/session_latest/logs") from exc
                    if slots[slot] is actor:
                        log.warning("worker %d died (%s); replacing it", slot, type(exc).__name__)
                        slots[slot] = spawn()
                    if attempt <= config.max_retries:
                        queue.appendleft((unit, attempt + 1))
                        continue
                    message = f"worker died on each of {attempt} attempts: {exc}"
                    record_failure(store, unit, message, "", driver_meta(attempt))
                    result = Outcome(unit.unit_id, False, error=message)
                except RayTaskError as exc:  # an error outside the unit's own try block
                    record_failure(store, unit, exc, str(exc), driver_meta(attempt))
                    result = Outcome(unit.unit_id, False, error=str(exc).splitlines()[0])
                else:
                    deaths_since_success = 0
                on_outcome(result)
    finally:
        for actor in slots:
            ray.kill(actor)
        if started_here:
            ray.shutdown()
