"""The sweep machinery: spec and params, unit ids, the task registry, the executors (local and
the Ray pool), the per-unit runner, the Parquet store and compaction. It knows the measurements
only through the task registry (`tasks/` registers them)."""
