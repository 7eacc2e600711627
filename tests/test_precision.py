"""Hessian, landscape and evaluation units run in full float32 unless their `precision` asks for TF32."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from harness.engine.context import (PRECISION_PARAM, PRECISIONS, float32_precision,
                             restore_float32_precision, set_float32_precision)
from harness.engine import registry
from harness.engine.params import Param
from harness.engine.registry import Task, get_task
from harness.engine.runner import UnitRunner
from harness.engine.units import WorkUnit


def tf32_state() -> dict[str, Any]:
    """Every TF32 switch torch has, read through the API that `set_float32_precision` writes."""
    b = torch.backends
    if hasattr(b.cuda.matmul, "fp32_precision"):
        return {"matmul": b.cuda.matmul.fp32_precision, "conv": b.cudnn.conv.fp32_precision,
                "rnn": b.cudnn.rnn.fp32_precision}
    return {"matmul": b.cuda.matmul.allow_tf32, "conv": b.cudnn.allow_tf32}


def expected(precision: str) -> dict[str, Any]:
    on = precision == "tf32"
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        word = "tf32" if on else "ieee"
        return {"matmul": word, "conv": word, "rnn": word}
    return {"matmul": on, "conv": on}


SEEN: list[dict[str, Any]] = []


def _record(unit: WorkUnit, ctx: Any) -> list[dict[str, Any]]:
    SEEN.append(tf32_state())
    if unit.params["fail"]:
        raise RuntimeError("boom")
    return [{"value": 1.0}]


@pytest.fixture
def probe_task(monkeypatch):
    """A task that records the TF32 switches while it runs (registered for one test only)."""
    monkeypatch.setitem(registry._TASKS, "_precision_probe", Task(
        name="_precision_probe",
        description="test task: records the TF32 switches while it runs",
        params=(PRECISION_PARAM, Param("fail", bool, False, "raise")),
        output_schema=pa.schema([pa.field("value", pa.float64())]),
        run=_record,
    ))


@pytest.fixture
def tf32_everywhere():
    """A process whose default is TF32 on (what a user or a library may have set)."""
    saved = set_float32_precision("tf32")
    yield
    restore_float32_precision(saved)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("fail", [False, True])
def test_the_unit_runs_under_its_precision_and_the_process_state_comes_back(
        tmp_path, probe_task, tf32_everywhere, precision, fail):
    before = tf32_state()
    SEEN.clear()
    runner = UnitRunner(str(tmp_path))
    unit = WorkUnit("s", "_precision_probe", {"precision": precision, "fail": fail})
    outcome = runner.run(unit)
    assert outcome.ok == (not fail)
    assert SEEN == [expected(precision)]  # during the unit
    assert tf32_state() == before == expected("tf32")  # after it, even after an error
    if not fail:
        table = pq.read_table(outcome.path)
        assert table.column("precision").to_pylist() == [precision]  # the row says which


def test_measurement_tasks_default_to_full_float32():
    for name in ("hessian", "landscape", "evaluate", "corruption", "freqnoise"):
        params = {p.name: p for p in get_task(name).params}
        assert params["precision"].default == "fp32", name
    assert "precision" not in {p.name for p in get_task("train").params}


def test_float32_precision_rejects_unknown_names_and_nests():
    with pytest.raises(ValueError, match="precision: unknown 'bf16'; allowed: fp32, tf32"):
        set_float32_precision("bf16")
    with float32_precision("fp32"):
        with float32_precision("tf32"):
            assert tf32_state() == expected("tf32")
        assert tf32_state() == expected("fp32")
