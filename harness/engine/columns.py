"""The columns every row carries (DESIGN.md's common columns) and the failure records' schema.

Apart from `schema` (which lays out a task's files and so needs the task type) because the task
registry checks a task's outputs against these names.
"""

from __future__ import annotations

import pyarrow as pa

COMMON_FIELDS: tuple[pa.Field, ...] = (
    pa.field("sweep", pa.string()),
    pa.field("task", pa.string()),
    pa.field("unit_id", pa.string()),
    pa.field("model", pa.string()),
    pa.field("dataset", pa.string()),
    pa.field("data_fraction", pa.float64()),
    pa.field("seed", pa.int64()),
    pa.field("host", pa.string()),
    pa.field("node_id", pa.string()),
    pa.field("device", pa.string()),
    pa.field("attempt", pa.int64()),
    pa.field("duration_s", pa.float64()),
    pa.field("finished_at", pa.timestamp("us", tz="UTC")),
    pa.field("harness_version", pa.string()),
)
COMMON_NAMES = frozenset(f.name for f in COMMON_FIELDS)
#: Common columns whose value comes from the unit's params when the task has them.
PARAM_BACKED = ("model", "dataset", "data_fraction", "seed")

FAILURES_TABLE = "_failures"
FAILURE_SCHEMA = pa.schema(
    list(COMMON_FIELDS)
    + [
        pa.field("failed_task", pa.string()),
        pa.field("params_json", pa.string()),
        pa.field("error_type", pa.string()),
        pa.field("message", pa.string()),
        pa.field("traceback", pa.string()),
    ]
)
