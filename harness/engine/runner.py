"""Running one unit where it lands (in-process or inside a worker actor).

Both executors call `UnitRunner.run`, so a unit behaves the same whether it
runs locally or on a Ray actor: it computes its rows, writes its own file and
returns only small metadata. A unit whose task has a `precision` param runs
with TF32 set accordingly and restored after (`context.float32_precision`).
A unit that raises is recorded in `_failures`
with its traceback and the sweep goes on; after an out-of-memory error the
worker also drops its cache (models, data) and CUDA's cached blocks, so a retry
starts from a clean slate.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import socket
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import torch

from harness.engine.context import UnitContext, WorkerCache, float32_precision
from harness.engine.params import canonical_json
from harness.engine.provenance import code_version
from harness.engine.registry import Task, get_task
from harness.engine.schema import FAILURE_SCHEMA, build_table, common_values
from harness.engine.store import Store
from harness.fileio import resolve_in_root
from harness.engine.units import WorkUnit

#: Exceptions that mean "out of memory" rather than a bug in the unit.
OOM_ERRORS: tuple[type[BaseException], ...] = (MemoryError, torch.cuda.OutOfMemoryError)


class UnitTimeout(Exception):
    """A unit ran past the executor's `unit_timeout` and was stopped."""


@dataclass(frozen=True)
class Outcome:
    """What a worker reports back: never rows, only where they went.

    seconds: the unit's wall time where it ran, writing included (the Ray pool
    sizes its batches from it).
    """

    unit_id: str
    ok: bool
    rows: int = 0
    path: str = ""
    error: str = ""
    node_id: str = ""
    error_type: str = ""
    seconds: float = 0.0


class UnitRunner:
    """Runs units against one store with one long-lived cache and device."""

    def __init__(self, results_root: str, device: str = "cpu", node_id: str = "local",
                 cache_entries: int = 8) -> None:
        self.store = Store(results_root)
        self.device = torch.device(device)
        self.node_id = node_id
        self.host = socket.gethostname()
        self.cache = WorkerCache(cache_entries)

    def _meta(self, started: float, attempt: int) -> dict[str, Any]:
        return run_facts(self.host, self.node_id, str(self.device), attempt,
                         time.perf_counter() - started)

    def run(self, unit: WorkUnit, attempt: int = 1) -> Outcome:
        started = time.perf_counter()
        try:
            task = get_task(unit.task)
            ctx = UnitContext(device=self.device, cache=self.cache,
                              seed=int(unit.params.get("seed", 0)), unit_id=unit.unit_id,
                              artifact_dir=self.store.artifact_dir(unit.sweep, unit.task,
                                                                   unit.unit_id),
                              results_root=self.store.root)
            with unit_precision(unit):
                rows = task.run(resolve_paths(task, unit, self.store.root), ctx)
            table = build_table(task, unit, rows, self._meta(started, attempt))
            path = self.store.write_table(unit.sweep, unit.task, unit.unit_id, table)
            self.store.clear_failure(unit.sweep, unit.unit_id)
            return Outcome(unit.unit_id, True, table.num_rows, path, node_id=self.node_id,
                           seconds=time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001 - every unit error is recorded, none escapes
            done = stored_outcome(self.store, unit, self.node_id, time.perf_counter() - started)
            if done is not None:  # e.g. a timeout while clearing an old failure: rows are stored
                return done
            if isinstance(exc, OOM_ERRORS):
                self.release_memory()
            message = f"{type(exc).__name__}: {exc}"
            record_failure(self.store, unit, exc, traceback.format_exc(),
                           self._meta(started, attempt))
            return Outcome(unit.unit_id, False, error=message, node_id=self.node_id,
                           error_type=type(exc).__name__,
                           seconds=time.perf_counter() - started)

    def release_memory(self) -> None:
        """Forget cached models and data and return CUDA's cached blocks (after an OOM)."""
        self.cache = WorkerCache(self.cache.max_entries)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def unit_precision(unit: WorkUnit) -> Any:
    """The float32 precision a unit asks for (its `precision` param), set around its run.

    A task without the param runs under the process's settings (training keeps
    its own choice: bfloat16 autocast, TF32 as torch defaults).
    """
    precision = unit.params.get("precision")
    return nullcontext() if precision is None else float32_precision(precision)


def resolve_paths(task: Task, unit: WorkUnit, root: str) -> WorkUnit:
    """The unit as its task sees it: relative path params joined to the results root. The
    unit id and the rows keep them relative, so they do not depend on where the tree lives."""
    resolved = dict(unit.params)
    for p in task.params:
        value = resolved.get(p.name)
        if not p.path or not value:
            continue
        resolved[p.name] = ([resolve_in_root(root, v) for v in value] if isinstance(value, list)
                            else resolve_in_root(root, value))
    if resolved == unit.params:
        return unit
    return dataclasses.replace(unit, params=resolved)


def stored_outcome(store: Store, unit: WorkUnit, node_id: str = "", seconds: float = 0.0
                   ) -> Outcome | None:
    """The success of a unit whose file is stored, else None.

    Only pending units run, so a file means this run wrote it: a timeout or
    error that comes after the write (clearing an old failure record, yielding
    the outcome) must not record the unit as failed.
    """
    rows = store.unit_rows(unit.sweep, unit.task, unit.unit_id)
    if rows is None:
        return None
    return Outcome(unit.unit_id, True, rows, store.unit_path(unit.sweep, unit.task, unit.unit_id),
                   node_id=node_id, seconds=seconds)


def record_failure(store: Store, unit: WorkUnit, exc: BaseException | str, tb: str,
                   meta: dict[str, Any]) -> None:
    """Write one `_failures` row for a unit (also used by the driver for lost workers)."""
    values = common_values(unit, meta)
    values.update({
        "task": "_failures",
        "failed_task": unit.task,
        "params_json": canonical_json(unit.params),
        "error_type": type(exc).__name__ if isinstance(exc, BaseException) else "WorkerLost",
        "message": str(exc),
        "traceback": tb,
    })
    table = pa.Table.from_pylist([values], schema=FAILURE_SCHEMA)
    store.write_failure(unit.sweep, unit.unit_id, table)


def run_facts(host: str, node_id: str, device: str, attempt: int, duration_s: float
              ) -> dict[str, Any]:
    """The run-fact columns of a unit's rows (schema.COMMON_FIELDS beyond the params)."""
    return {"host": host, "node_id": node_id, "device": device, "attempt": attempt,
            "duration_s": duration_s, "finished_at": dt.datetime.now(dt.UTC),
            "harness_version": code_version()}


def driver_meta(attempt: int) -> dict[str, Any]:
    """Run facts for a failure the driver records itself (the worker is gone)."""
    return run_facts(socket.gethostname(), "", "", attempt, 0.0)
