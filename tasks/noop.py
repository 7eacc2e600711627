"""noop: an engine probe that measures nothing — for dispatch benchmarks and fault tests.

A unit optionally sleeps, burns CPU on real matrix products, or raises, so the
executor's overhead, retries and failure bookkeeping can be measured and tested
without a model.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pyarrow as pa
import torch

from harness.engine.context import UnitContext
from harness.engine.params import Param
from harness.engine.registry import Task, register_task
from harness.engine.units import WorkUnit

PARAMS = (
    Param("index", int, 0, "distinguishes units of a sweep", min=0),
    Param("sleep_s", float, 0.0, "seconds to sleep", min=0.0),
    Param("work_iters", int, 0, "128x128 matrix products to compute (deterministic CPU work)",
          min=0),
    Param("fail", bool, False, "raise `error` instead of finishing"),
    Param("error", str, "RuntimeError", "what `fail` raises",
          choices=("RuntimeError", "MemoryError", "OutOfMemoryError")),
    Param("seed", int, 0, "seed of the matrix products", min=0),
)

OUTPUT = pa.schema([
    pa.field("value", pa.float64()),
    pa.field("pid", pa.int64()),
])


def run(unit: WorkUnit, ctx: UnitContext) -> list[dict[str, Any]]:
    p = unit.params
    if p["fail"]:
        error = {"RuntimeError": RuntimeError, "MemoryError": MemoryError,
                 "OutOfMemoryError": torch.cuda.OutOfMemoryError}[p["error"]]
        raise error(f"noop unit {p['index']} asked to fail")
    time.sleep(p["sleep_s"])
    value = float(p["index"])
    if p["work_iters"] > 0:
        a = torch.randn(128, 128, generator=ctx.torch_generator(p["index"])) / 16
        for _ in range(p["work_iters"]):
            a = torch.tanh(a @ a)
        value = float(a.sum())
    return [{"value": value, "pid": os.getpid()}]


register_task(Task(
    name="noop",
    description="engine probe: sleeps, burns CPU or raises on request; measures nothing",
    params=PARAMS,
    output_schema=OUTPUT,
    run=run,
))
