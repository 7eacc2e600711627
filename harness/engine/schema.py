"""Column layout of a result file: common columns, then params, then the task's outputs.

Every row of every task carries the common columns of DESIGN.md so that results
from different tasks and sweeps can be joined and filtered the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa

from harness.engine.columns import (COMMON_FIELDS, COMMON_NAMES, FAILURE_SCHEMA, FAILURES_TABLE,
                                    PARAM_BACKED)
from harness.engine.params import ARROW_TYPES, column_value

if TYPE_CHECKING:
    from harness.engine.registry import Task
    from harness.engine.units import WorkUnit

__all__ = ["COMMON_FIELDS", "COMMON_NAMES", "FAILURE_SCHEMA", "FAILURES_TABLE", "PARAM_BACKED",
           "build_table", "common_values", "param_fields", "result_schema"]

def param_fields(task: "Task") -> list[pa.Field]:
    return [pa.field(p.name, ARROW_TYPES[p.type]) for p in task.params
            if p.name not in COMMON_NAMES]


def result_schema(task: "Task") -> pa.Schema:
    """The full schema of a task's result files."""
    return pa.schema(list(COMMON_FIELDS) + param_fields(task) + list(task.output_schema))


def common_values(unit: "WorkUnit", meta: dict[str, Any]) -> dict[str, Any]:
    """Values of the common columns for one unit; `meta` gives the run facts."""
    values = {"sweep": unit.sweep, "task": unit.task, "unit_id": unit.unit_id}
    for name in PARAM_BACKED:
        value = unit.params.get(name)
        values[name] = value if value is None or isinstance(value, (str, int, float)) else str(value)
    values.update(meta)
    return values


def build_table(task: "Task", unit: "WorkUnit", rows: list[dict[str, Any]],
                meta: dict[str, Any]) -> pa.Table:
    """Rows of one unit as an Arrow table with the full schema.

    Raises ValueError naming the missing or unexpected columns so that a task
    bug surfaces as a clear unit failure, not as a corrupt file.
    """
    expected = set(task.output_schema.names)
    for i, row in enumerate(rows):
        if set(row) != expected:
            missing = sorted(expected - set(row))
            extra = sorted(set(row) - expected)
            raise ValueError(f"task {task.name} row {i}: missing columns {missing}, "
                             f"unexpected columns {extra}")
    schema = result_schema(task)
    constants = common_values(unit, meta)
    for p in task.params:
        if p.name not in COMMON_NAMES:
            constants[p.name] = column_value(p, unit.params[p.name])
    columns = {}
    for f in schema:
        if f.name in expected:
            columns[f.name] = pa.array([r[f.name] for r in rows], type=f.type)
        else:
            columns[f.name] = pa.array([constants.get(f.name)] * len(rows), type=f.type)
    return pa.table(columns, schema=schema)
