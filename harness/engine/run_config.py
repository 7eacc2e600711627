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
