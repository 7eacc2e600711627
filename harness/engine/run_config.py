"""How a sweep runs and how it went: the executor's settings, its summary and its retry rule.

Shared by the local executor and the Ray pool (kept apart from both so neither imports the other's
module for its types).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from harness.engine.runner import Outcome


@dataclass
class RunConfig:
    """How to run a sweep; the executor section of a spec, overridden by CLI flags.

    unit_timeout: seconds a unit may run before it is stopped (0: no limit).
    max_batch: most units sent to an actor in one call; batches shrink to one
        unit when units are long, so long units still spread over the workers.
    start_timeout: seconds the Ray pool waits with no worker started (none yet, or
        every one lost and none of the replacements up) before it gives up.
    max_workers: with `workers` 0, the most actors at once, and what the pool
        asks the cluster's autoscaler for (0: ask nothing, use what is there).
    tasks: per-task overrides of num_cpus / num_gpus / unit_timeout (TASK_KEYS).
    """

    kind: str = "ray"
    workers: int = 0
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    max_retries: int = 2
    max_inflight: int = 2
    device: str = "auto"
    retry_failures: int = 0
    unit_timeout: float = 0.0
    max_batch: int = 64
    start_timeout: float = 600.0
    address: str | None = None
    max_workers: int = 64
    tasks: dict[str, dict[str, float]] = field(default_factory=dict)

    def for_task(self, task: str) -> TaskResources:
        """What a unit of `task` runs with: its `tasks` entry, else the sweep's values."""
        own = self.tasks.get(task, {})
        return TaskResources(float(own.get("num_cpus", self.num_cpus)),
                             float(own.get("num_gpus", self.num_gpus)),
                             float(own.get("unit_timeout", self.unit_timeout)))


#: The executor settings a sweep may set per task (`executor.tasks.<task>.<key>`).
TASK_KEYS = ("num_cpus", "num_gpus", "unit_timeout")


@dataclass(frozen=True)
class TaskResources:
    """One task's worker shape (units of one shape share actors) and its unit timeout."""

    num_cpus: float
    num_gpus: float
    unit_timeout: float

    @property
    def shape(self) -> tuple[float, float]:
        return (self.num_cpus, self.num_gpus)


@dataclass
class RunSummary:
    total: int = 0
    done: int = 0
    failed: int = 0
    retried: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    #: seconds until every worker was up (Ray) — what a dispatch rate should exclude
    ready_s: float = 0.0
    nodes: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


def retry_failed(outcome: Outcome, attempt: int, config: RunConfig) -> bool:
    """Whether a unit that raised or timed out on `attempt` runs again."""
    return not outcome.ok and attempt <= config.retry_failures
