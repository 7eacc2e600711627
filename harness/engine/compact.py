"""`harness compact`: merge a sweep's per-unit files into a few large Parquet parts.

A sweep of 10⁵ units leaves 10⁵ small files; listing and opening them dominates
every read. Compaction streams each task's unit files into parts of bounded
size, `<task>/_compacted/part-<n>-<random>.parquet`, with row groups of bounded
size, and records the unit ids of each part in the part's own footer, so the
index and the rows can never disagree.

Exactly-once is kept at every step:
1. a part is written under a temp name, checked (row count and id index read
   back from the file), flushed to disk, then renamed into place;
2. only then are the unit files it holds deleted.
A crash before (2) leaves a unit both in a part and in its file: readers take
the part and skip the file (`Store.scan_groups`), and the next compaction just
deletes the leftover. A crash during (1) leaves a hidden temp file no reader
lists. Units finished after a compaction are ordinary unit files again, and a
later compaction adds a new part for them; `_failures` is never compacted,
because a failure record is deleted when its unit later succeeds.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from harness.engine.store import PART_IDS_KEY, Store, checked_format, known_schema, unit_id_of

#: Defaults: parts of ≤ 512 MiB of unit files, row groups of ≤ 64 MiB in memory.
PART_BYTES = 512 * 2**20
ROW_GROUP_BYTES = 64 * 2**20
#: Unit files read per scan (one multi-threaded pyarrow read each).
READ_FILES = 256


@dataclass
class CompactStats:
    task: str
    files: int = 0            # unit files merged into new parts
    parts: int = 0            # parts written
    rows: int = 0
    leftovers: int = 0        # unit files already in a part (an earlier compaction stopped)


class CompactError(RuntimeError):
    """A part did not read back as written; nothing was deleted."""


def compact_sweep(root: str, sweep: str, part_bytes: int = PART_BYTES,
                  row_group_bytes: int = ROW_GROUP_BYTES) -> list[CompactStats]:
    """Compact every task of a sweep (not `_failures`); returns what was done per task."""
    store = Store(root)
    return [compact_task(store, sweep, task, part_bytes, row_group_bytes)
            for task in store.tasks(sweep)]


def compact_task(store: Store, sweep: str, task: str, part_bytes: int = PART_BYTES,
                 row_group_bytes: int = ROW_GROUP_BYTES) -> CompactStats:
    """Merge one task's unit files into parts, then delete the merged files."""
    stats = CompactStats(task)
    index = store.compacted_index(sweep, task)
    infos = store.file_infos(sweep, task)
    leftovers = [i.path for i in infos if unit_id_of(i.path) in index]
    if leftovers:
        _delete_files(store, leftovers)
        stats.leftovers = len(leftovers)
    fresh = [i for i in infos if unit_id_of(i.path) not in index]
    schema = known_schema(task)
    for chunk in _chunks(fresh, part_bytes):
        paths = [i.path for i in chunk]
        try:
            rows = _write_part(store, sweep, task, paths, schema, row_group_bytes)
        except (OSError, pa.ArrowException) as exc:
            raise CompactError(
                f"compact {sweep}/{task}: a unit file cannot be read ({str(exc).splitlines()[0]});"
                f" nothing was deleted. `harness status {sweep}` names it, `harness run "
                f"{sweep} --repair` re-runs its unit") from exc
        _delete_files(store, paths)
        stats.files += len(paths)
        stats.parts += 1
        stats.rows += rows
    return stats


def _chunks(infos: list[pafs.FileInfo], limit: int) -> Iterator[list[pafs.FileInfo]]:
    chunk: list[pafs.FileInfo] = []
    size = 0
    for info in infos:
        if chunk and size + (info.size or 0) > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append(info)
        size += info.size or 0
    if chunk:
        yield chunk


def _write_part(store: Store, sweep: str, task: str, paths: list[str],
                schema: pa.Schema | None, row_group_bytes: int) -> int:
    """Stream `paths` into one new part; return its row count once it reads back whole."""
    if schema is None:  # a task this install does not know: take the first file's columns
        with store.fs.open_input_file(paths[0]) as f:
            schema = pq.read_schema(f)
    ids = [unit_id_of(p) for p in paths]
    schema = schema.remove_metadata().with_metadata({PART_IDS_KEY: json.dumps(ids).encode()})
    written = [0]

    def row_groups() -> Iterator[pa.Table]:
        pending: list[pa.Table] = []
        size = 0
        for start in range(0, len(paths), READ_FILES):
            table = ds.dataset(paths[start:start + READ_FILES], filesystem=store.fs,
                               format=checked_format(), schema=schema).to_table()
            pending.append(table)
            size += table.nbytes
            if size >= row_group_bytes:
                yield from _row_groups(pending, schema, row_group_bytes, written)
                pending, size = [], 0
        if pending:
            yield from _row_groups(pending, schema, row_group_bytes, written)

    directory = store.compacted_dir(sweep, task)
    name = f"part-{len(store.part_files(sweep, task)):05d}-{uuid.uuid4().hex[:8]}.parquet"
    part = store.write_atomic(directory, name, row_groups(), schema=schema, sync=True)
    with store.fs.open_input_file(part) as f:
        meta = pq.read_metadata(f)
    back = json.loads((meta.schema.to_arrow_schema().metadata or {}).get(PART_IDS_KEY, b"[]"))
    if meta.num_rows != written[0] or back != ids:
        raise CompactError(f"{part}: read back {meta.num_rows} rows / {len(back)} ids, wrote "
                           f"{written[0]} / {len(ids)}; the unit files were kept")
    return written[0]


def _row_groups(tables: list[pa.Table], schema: pa.Schema, limit: int,
                written: list[int]) -> Iterator[pa.Table]:
    """Row groups of about `limit` bytes in memory, with contiguous columns (a table of
    many tiny chunks writes slowly)."""
    table = pa.concat_tables(tables).replace_schema_metadata(schema.metadata).combine_chunks()
    step = max(1, int(table.num_rows * limit / max(table.nbytes, 1)))
    for start in range(0, table.num_rows, step):
        piece = table.slice(start, step)
        written[0] += piece.num_rows
        yield piece


def _delete_files(store: Store, paths: list[str]) -> None:
    """Delete merged unit files (a separate step so tests can stop a compaction here)."""
    for path in paths:
        try:
            store.fs.delete_file(path)
        except FileNotFoundError:
            pass  # another compaction got there first


def describe(stats: list[CompactStats]) -> str:
    lines = []
    for s in stats:
        lines.append(f"{s.task}: {s.files} unit files -> {s.parts} new part(s), {s.rows} rows"
                     + (f"; {s.leftovers} leftover files of an earlier compaction removed"
                        if s.leftovers else ""))
    return "\n".join(lines) or "nothing to compact"
