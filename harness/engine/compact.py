"""`harness compact`: merge a sweep's per-unit files into a few large Parquet parts.

A sweep of 10⁵ units leaves 10⁵ small files; listing and opening them dominates
every read. Compaction streams each task's unit files into parts of bounded
size, `<task>/_compacted/part-<n>-<random>.parquet`, with row groups of bounded
size, and records the unit ids of each part in the part's own footer, so the
index and the rows can never disagree.

Parts live in `<task>/compacted/`, a plain folder: pandas, pyarrow datasets,
DuckDB (`<task>/**/*.parquet`) and polars read a task folder whole.

Exactly-once is kept at every step:
1. a part is written under a hidden temp name, fsynced, and read back whole
   (page checksums, rows per unit against the rows read from the unit files)
   before it is renamed into place; a part that fails is removed, nothing else;
2. only then are the unit files it holds deleted, and a unit file left beside a
   part by an earlier compaction only when the part holds as many of its rows.
A crash before (2) leaves a unit both in a part and in its file: `load` takes
the part and skips the file (`Store.scan_groups`), and the next compaction
deletes the leftover; until then a plain reader of the folder (pandas, DuckDB)
sees those units twice, so compact again after a crash. A crash during (1)
leaves a hidden temp file no reader lists. Units finished after a compaction
are ordinary unit files again, and a later compaction adds a new part for
them; `_failures` is never compacted, because a failure record is deleted when
its unit later succeeds. Columns of older unit files that today's schema no
longer has are kept in the part (the part's schema is the union).
"""

from __future__ import annotations

import json
import posixpath
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from harness.engine.store import (
    LEGACY_COMPACTED,
    PART_IDS_KEY,
    PART_ROWS_KEY,
    Store,
    checked_format,
    known_schema,
    part_problem,
    row_counts,
    unit_id_of,
)

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
    kept: int = 0             # unit files beside a part that holds a different row count


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
    _move_legacy_parts(store, sweep, task)
    index = store.compacted_index(sweep, task)
    infos = store.file_infos(sweep, task)
    leftovers = [i.path for i in infos if unit_id_of(i.path) in index]
    if leftovers:
        same = _same_rows_as_part(store, leftovers, index)
        _delete_files(store, same)
        stats.leftovers, stats.kept = len(same), len(leftovers) - len(same)
    fresh = [i for i in infos if unit_id_of(i.path) not in index]
    if not fresh:
        return stats
    try:
        footers = dict(zip((i.path for i in fresh), _footers(store, [i.path for i in fresh])))
        schema = _union_schema(list(footers.values()), known_schema(task))
    except (OSError, pa.ArrowException) as exc:
        raise _unreadable(sweep, task, exc) from exc
    for chunk in _chunks(fresh, part_bytes):
        paths = [i.path for i in chunk]
        expected = {unit_id_of(p): footers[p].num_rows for p in paths}
        try:
            rows = _write_part(store, sweep, task, expected, paths, schema, row_group_bytes)
        except (OSError, pa.ArrowException) as exc:
            raise _unreadable(sweep, task, exc) from exc
        _delete_files(store, paths)
        stats.files += len(paths)
        stats.parts += 1
        stats.rows += rows
    return stats


def _unreadable(sweep: str, task: str, exc: BaseException) -> CompactError:
    return CompactError(
        f"compact {sweep}/{task}: a unit file cannot be read or merged "
        f"({str(exc).splitlines()[0]}); nothing was deleted of this part. `harness status "
        f"{sweep}` names a corrupt file, `harness run {sweep} --repair` re-runs its unit")


def _move_legacy_parts(store: Store, sweep: str, task: str) -> None:
    """Parts of older versions (`_compacted/`, which pandas and pyarrow skip) into `compacted/`:
    one rename each, ids in the part's own footer, so a crash between renames loses nothing."""
    legacy = store.compacted_dir(sweep, task, LEGACY_COMPACTED)
    parts = [p for p in store.part_files(sweep, task) if posixpath.dirname(p) == legacy]
    if not parts:
        return
    store.make_dir(store.compacted_dir(sweep, task))
    for part in parts:
        store.fs.move(part, posixpath.join(store.compacted_dir(sweep, task),
                                           posixpath.basename(part)))
    store.fs.delete_dir(legacy)


def _same_rows_as_part(store: Store, paths: list[str], index: dict[str, str]) -> list[str]:
    """The leftover unit files whose part holds exactly their row count (safe to delete)."""
    rows: dict[str, dict[str, int] | None] = {}
    same = []
    for path in paths:
        part = index[unit_id_of(path)]
        if part not in rows:
            rows[part] = store.part_rows(part)
        with store.fs.open_input_file(path) as f:
            count = pq.read_metadata(f).num_rows
        in_part = rows[part]
        if in_part is None or in_part.get(unit_id_of(path)) == count:
            same.append(path)  # an older part without counts: ids only, as before
    return same


def _footers(store: Store, paths: list[str]) -> list[pq.FileMetaData]:
    """The Parquet footers of unit files (schema and row count; no data read)."""
    def read(path: str) -> pq.FileMetaData:
        with store.fs.open_input_file(path) as f:
            return pq.read_metadata(f)

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(read, paths))


def _union_schema(footers: list[pq.FileMetaData], known: pa.Schema | None) -> pa.Schema:
    """Today's schema of the task plus every column an older unit file has beyond it."""
    schemas = list(dict.fromkeys(m.schema.to_arrow_schema().remove_metadata() for m in footers))
    head = [known.remove_metadata()] if known is not None else []
    return pa.unify_schemas(head + schemas, promote_options="permissive")


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


def _write_part(store: Store, sweep: str, task: str, expected: dict[str, int],
                paths: list[str], schema: pa.Schema, row_group_bytes: int) -> int:
    """Stream `paths` into one new part; return its row count. The part records the rows per
    unit of the unit files' footers (`expected`) and becomes visible only after it read back
    whole holding exactly those."""
    footer = schema.with_metadata({PART_IDS_KEY: json.dumps(list(expected)).encode(),
                                   PART_ROWS_KEY: json.dumps(list(expected.values())).encode()})
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
                yield from _row_groups(pending, footer, row_group_bytes, written)
                pending, size = [], 0
        if pending:
            yield from _row_groups(pending, footer, row_group_bytes, written)

    def check(tmp: str) -> None:
        back: Counter[str] = Counter()
        with store.fs.open_input_file(tmp) as f:
            reader = pq.ParquetFile(f, page_checksum_verification=True)
            for batch in reader.iter_batches():
                back.update(row_counts(batch.column("unit_id")))
            problem = part_problem(reader.schema_arrow.metadata or {}, dict(back))
        if problem:
            raise CompactError(f"compact {sweep}/{task}: the new part did not read back as "
                               f"the unit files hold ({problem}); it was removed and the unit "
                               "files kept")

    directory = store.compacted_dir(sweep, task)
    name = f"part-{len(store.part_files(sweep, task)):05d}-{uuid.uuid4().hex[:8]}.parquet"
    store.write_atomic(directory, name, row_groups(), schema=footer, check=check)
    return written[0]


def _row_groups(tables: list[pa.Table], schema: pa.Schema, limit: int,
                written: list[int]) -> Iterator[pa.Table]:
    """Row groups of about `limit` bytes in memory, with contiguous columns (a table of
    many tiny chunks writes slowly)."""
    table = pa.concat_tables(tables).replace_schema_metadata(schema.metadata).combine_chunks()
    table = table.cast(schema) if table.schema != schema else table
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
                        if s.leftovers else "")
                     + (f"; {s.kept} unit files kept beside a part holding other rows of their "
                        "unit" if s.kept else ""))
    return "\n".join(lines) or "nothing to compact"
