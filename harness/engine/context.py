"""What a task sees while it runs a unit: device, per-worker cache, seeded RNG, logger."""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import numpy as np
import torch

from harness.engine.params import canonical_json

T = TypeVar("T")


class WorkerCache:
    """A small LRU cache that lives as long as a worker (actor or local run).

    Units that share a model or a dataset key reuse what an earlier unit built
    instead of rebuilding it; `max_entries` bounds memory on long sweeps.
    """

    def __init__(self, max_entries: int = 8) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[str, Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: Any, build: Callable[[], T]) -> T:
        """Return the cached value for `key` (any JSON-able value), building it once."""
        k = canonical_json(key)
        if k in self._items:
            self.hits += 1
            self._items.move_to_end(k)
            return self._items[k]
        self.misses += 1
        value = build()
        self._items[k] = value
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class UnitContext:
    """Per-unit services.

    seed: the unit's `seed` param (0 if it has none).
    artifact_dir: where the unit may write files beside its rows (checkpoints),
        `<results>/<sweep>/_artifacts/<task>/<unit_id>`; a re-run overwrites them.
    """

    device: torch.device
    cache: WorkerCache
    seed: int
    unit_id: str
    artifact_dir: str = ""
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("harness.task"))

    @property
    def rng(self) -> np.random.Generator:
        """A NumPy generator seeded from the unit id: the same for every run of the unit."""
        return np.random.default_rng(int(self.unit_id, 16))

    def artifact(self, name: str) -> str:
        """Path (or URI) of an artifact file of this unit."""
        if not self.artifact_dir:
            raise RuntimeError("this context has no artifact directory")
        return f"{self.artifact_dir}/{name}"

    def torch_generator(self, offset: int = 0) -> torch.Generator:
        """A CPU torch generator seeded from the unit's seed param (plus `offset`)."""
        g = torch.Generator()
        g.manual_seed(self.seed + offset)
        return g
