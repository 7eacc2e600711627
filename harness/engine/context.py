"""What a task sees while it runs a unit: device, per-worker cache, seeded RNG, logger."""

from __future__ import annotations

import logging
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TypeVar

import numpy as np
import torch

from harness.engine.params import Param, canonical_json

T = TypeVar("T")

#: Float32 matmul / convolution precision of a unit on CUDA. fp32: full IEEE float32;
#: tf32: TensorFloat-32 allowed (Ampere and later; ≈1e-3 relative error, the size of
#: the Lanczos tolerance). No effect on CPU.
PRECISIONS = ("fp32", "tf32")
PRECISION_PARAM = Param("precision", str, "fp32", "float32 matmuls and convolutions on CUDA: "
                        "fp32 = full float32 (TF32 off, whatever the process default); "
                        "tf32 = TensorFloat-32 (≈1e-3 relative error, faster)",
                        choices=PRECISIONS)


def _tf32_switches() -> list[tuple[Any, str]]:
    """(object, attribute) of every TF32 switch: the per-backend API where torch has it.

    torch >= 2.9 refuses to read a mix of its legacy (`allow_tf32`) and new
    (`fp32_precision`) switches, so only one family is ever written.
    """
    b = torch.backends
    if hasattr(b.cuda.matmul, "fp32_precision"):
        return [(b.cuda.matmul, "fp32_precision"), (b.cudnn.conv, "fp32_precision"),
                (b.cudnn.rnn, "fp32_precision")]
    return [(b.cuda.matmul, "allow_tf32"), (b.cudnn, "allow_tf32")]


def set_float32_precision(precision: str) -> list[Any]:
    """Switch TF32 off (fp32) or on (tf32) for CUDA matmuls and cuDNN; returns the old state."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: unknown {precision!r}; allowed: {', '.join(PRECISIONS)}")
    switches = _tf32_switches()
    saved = [getattr(obj, name) for obj, name in switches]
    tf32 = precision == "tf32"
    for obj, name in switches:
        setattr(obj, name, ("tf32" if tf32 else "ieee") if name == "fp32_precision" else tf32)
    return saved


def restore_float32_precision(saved: list[Any]) -> None:
    """Put back the state `set_float32_precision` returned."""
    for (obj, name), value in zip(_tf32_switches(), saved):
        setattr(obj, name, value)


@contextmanager
def float32_precision(precision: str) -> Iterator[None]:
    """`set_float32_precision` for the block, the previous state restored after (also on error)."""
    saved = set_float32_precision(precision)
    try:
        yield
    finally:
        restore_float32_precision(saved)


#: The file under a unit's artifact directory where a long unit reports how far it got
#: (`harness status` shows it for units not yet done).
PROGRESS_FILE = "progress.json"


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
    results_root: the results root; a row names an artifact by `stored_path`.
    """

    device: torch.device
    cache: WorkerCache
    seed: int
    unit_id: str
    artifact_dir: str = ""
    results_root: str = ""
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

    def stored_path(self, path: str) -> str:
        """How a row names a file this unit wrote: relative to the results root, so the tree
        can move (path params resolve such paths against the root where a unit runs)."""
        from harness.fileio import relative_to_root

        return relative_to_root(self.results_root, path) if self.results_root else path

    def report_progress(self, **fields: Any) -> None:
        """Record how far the unit got (e.g. epoch=3, epochs=300), with the time, for
        `harness status`; written atomically, so a reader never sees half a report."""
        import json
        import time

        from harness.fileio import write_bytes

        report = {**fields, "unit_id": self.unit_id, "updated": time.time()}
        write_bytes(self.artifact(PROGRESS_FILE), json.dumps(report, sort_keys=True).encode())

    def torch_generator(self, offset: int = 0) -> torch.Generator:
        """A CPU torch generator seeded from the unit's seed param (plus `offset`)."""
        g = torch.Generator()
        g.manual_seed(self.seed + offset)
        return g
