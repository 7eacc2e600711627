"""Parquet store: one file per finished unit, `<root>/<sweep>/<task>/<unit_id>.parquet`.

A unit is done if and only if its rows are stored: files are written under a
hidden temp name (leading dot) and renamed when complete, so a crash leaves at
most a temp file that no reader ever lists. Re-running a unit overwrites its
own path, so a repeat never duplicates rows. The root is a local path or any
pyarrow filesystem URI (`file:///…`, `s3://bucket/prefix`, `gs://…`).

Every file is fsynced, and its folder after the rename, before it counts as
written (local disks), so "done" means durable: a power loss cannot leave an
empty file that looks finished.

`harness compact` (harness/compact.py) later merges a task's unit files into a
few parts, `<task>/compacted/part-*.parquet` (a plain folder name, so pandas,
pyarrow datasets, DuckDB and polars read a task folder whole), each carrying
the ids and row counts of its units in its footer. Readers take a unit from
the parts when it is there and from its own file otherwise, so a unit present
in both (a compaction stopped between writing a part and deleting the files)
is read once by `load`. Parts of older versions in `_compacted/` are still read.
"""

from __future__ import annotations

import datetime as dt
import json
import posixpath
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from harness.engine.schema import FAILURES_TABLE
from harness.fileio import resolve_root, write_file_atomic

MANIFEST = "_sweep.json"
#: One JSON record per run of a sweep (`<UTC time>-<random>.json`); `_sweep.json` is the latest.
RUNS = "_runs"
ARTIFACTS = "_artifacts"
COMPACTED = "compacted"
#: Where parts lived before: still read, moved to COMPACTED by the next compaction.
LEGACY_COMPACTED = "_compacted"
COMPACTED_DIRS = (COMPACTED, LEGACY_COMPACTED)
CORRUPT = "_corrupt"
SUFFIX = ".parquet"
#: Footer key of a compacted part: the JSON list of the unit ids it holds.
PART_IDS_KEY = b"harness.unit_ids"
#: Footer key of a compacted part: the JSON list of each unit's row count (PART_IDS_KEY order).
PART_ROWS_KEY = b"harness.unit_rows"
#: Attempts of a read whose files vanish under it (a compaction deleting merged files).
READ_ATTEMPTS = 3


def row_counts(unit_ids: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    """Rows per unit id of a `unit_id` column."""
    counts = pc.value_counts(unit_ids)
    return {str(v): int(c) for v, c in zip(counts.field(0).to_pylist(),
                                            counts.field(1).to_pylist())}


def _is_result_file(name: str) -> bool:
    return name.endswith(SUFFIX) and not name.startswith((".", "_"))


def unit_id_of(path: str) -> str:
    return posixpath.basename(path)[: -len(SUFFIX)]


def checked_format() -> ds.ParquetFileFormat:
    """Parquet reads that verify page checksums, so a garbled page is an error, not data."""
    return ds.ParquetFileFormat(default_fragment_scan_options=ds.ParquetFragmentScanOptions(
        page_checksum_verification=True))


def part_problem(footer: dict[bytes, bytes], counts: dict[str, int]) -> str | None:
    """Why a part whose rows count `counts` per unit disagrees with its footer index, or None."""
    if PART_IDS_KEY not in footer:
        return "compacted part without its unit-id index"
    ids = json.loads(footer[PART_IDS_KEY])
    if PART_ROWS_KEY not in footer:  # an older part: ids only (a zero-row unit has none)
        return None if set(counts) <= set(ids) else "unit ids differ from its index"
    expected = {u: n for u, n in zip(ids, json.loads(footer[PART_ROWS_KEY])) if n}
    if counts != expected:
        wrong = sorted(u for u in set(counts) | set(expected) if counts.get(u) != expected.get(u))
        return (f"rows per unit differ from its index for {len(wrong)} unit(s), e.g. {wrong[0]}: "
                f"{counts.get(wrong[0], 0)} stored, {expected.get(wrong[0], 0)} indexed")
    return None


class CorruptResultError(OSError):
    """A stored result file does not read back (truncated, garbled)."""


@dataclass(frozen=True)
class ScanGroup:
    """Files read together, less the unit ids another source already provides."""

    paths: list[str]
    exclude: frozenset[str] = frozenset()


class Store:
    """Reads and writes one results root."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.fs, self.base = resolve_root(root)
        self._made_dirs: set[str] = set()

    # -- paths -------------------------------------------------------------
    def dir(self, sweep: str, task: str) -> str:
        return posixpath.join(self.base, sweep, task)

    def unit_path(self, sweep: str, task: str, unit_id: str) -> str:
        return posixpath.join(self.dir(sweep, task), unit_id + SUFFIX)

    def unit_rows(self, sweep: str, task: str, unit_id: str) -> int | None:
        """Rows of a unit's own file, None when it has none (footer only, no data read)."""
        try:
            with self.fs.open_input_file(self.unit_path(sweep, task, unit_id)) as f:
                return pq.read_metadata(f).num_rows
        except FileNotFoundError:
            return None

    def compacted_dir(self, sweep: str, task: str, name: str = COMPACTED) -> str:
        return posixpath.join(self.dir(sweep, task), name)

    def artifact_dir(self, sweep: str, task: str, unit_id: str) -> str:
        """Where a unit keeps its files (checkpoints), as a path or URI like the root."""
        path = posixpath.join(self.base, sweep, ARTIFACTS, task, unit_id)
        return path if "://" not in self.root else self.root.split("://")[0] + "://" + path

    # -- listing -----------------------------------------------------------
    def _list(self, directory: str) -> list[pafs.FileInfo]:
        info = self.fs.get_file_info(directory)
        if info.type != pafs.FileType.Directory:
            return []
        return self.fs.get_file_info(pafs.FileSelector(directory, recursive=False))

    def file_infos(self, sweep: str, task: str) -> list[pafs.FileInfo]:
        """Finished unit files with their sizes (temp files and hidden names excluded)."""
        return sorted((i for i in self._list(self.dir(sweep, task))
                       if i.type == pafs.FileType.File and _is_result_file(i.base_name)),
                      key=lambda i: i.path)

    def files(self, sweep: str, task: str) -> list[str]:
        """Paths of finished per-unit files (not the compacted parts)."""
        return [i.path for i in self.file_infos(sweep, task)]

    def part_files(self, sweep: str, task: str) -> list[str]:
        """Compacted parts of a task (legacy `_compacted/` ones included), by path."""
        return sorted(i.path for d in COMPACTED_DIRS
                      for i in self._list(self.compacted_dir(sweep, task, d))
                      if i.type == pafs.FileType.File and _is_result_file(i.base_name))

    def part_ids(self, path: str) -> list[str]:
        """The unit ids a compacted part holds, from its footer (no data read)."""
        with self.fs.open_input_file(path) as f:
            meta = pq.read_schema(f).metadata or {}
        if PART_IDS_KEY not in meta:
            raise ValueError(f"{path}: compacted part without its unit-id index "
                             f"(footer key {PART_IDS_KEY.decode()})")
        return json.loads(meta[PART_IDS_KEY])

    def part_rows(self, path: str) -> dict[str, int] | None:
        """unit id -> row count of a compacted part, from its footer (None: an older part
        that recorded ids only)."""
        with self.fs.open_input_file(path) as f:
            meta = pq.read_schema(f).metadata or {}
        if PART_ROWS_KEY not in meta:
            return None
        return dict(zip(json.loads(meta[PART_IDS_KEY]), json.loads(meta[PART_ROWS_KEY])))

    def compacted_index(self, sweep: str, task: str) -> dict[str, str]:
        """unit id -> the first part (by name) that holds it."""
        index: dict[str, str] = {}
        for part in self.part_files(sweep, task):
            for uid in self.part_ids(part):
                index.setdefault(uid, part)
        return index

    def unit_ids(self, sweep: str, task: str) -> set[str]:
        """Every stored unit of a task: unit files and compacted parts."""
        ids = {unit_id_of(p) for p in self.files(sweep, task)}
        if task != FAILURES_TABLE:
            ids |= set(self.compacted_index(sweep, task))
        return ids

    def scan_groups(self, sweep: str, task: str) -> list[ScanGroup]:
        """What a reader scans so that every unit is read exactly once.

        A unit in a part is read from the first part holding it; its own file,
        if one is left over, is skipped.
        """
        index = self.compacted_index(sweep, task) if task != FAILURES_TABLE else {}
        singles = [p for p in self.files(sweep, task) if unit_id_of(p) not in index]
        groups = [ScanGroup(singles)] if singles else []
        clean: list[str] = []
        for part in sorted(set(index.values()) | set(self.part_files(sweep, task))):
            ids = self.part_ids(part)
            elsewhere = frozenset(u for u in ids if index.get(u) != part)
            if elsewhere:
                groups.append(ScanGroup([part], elsewhere))
            else:
                clean.append(part)
        if clean:
            groups.append(ScanGroup(clean))
        return groups

    def sweeps(self) -> list[str]:
        return sorted(i.base_name for i in self._list(self.base)
                      if i.type == pafs.FileType.Directory and not i.base_name.startswith((".", "_")))

    def tasks(self, sweep: str) -> list[str]:
        """Task directories of a sweep (not `_failures` or `_artifacts`)."""
        return sorted(i.base_name for i in self._list(posixpath.join(self.base, sweep))
                      if i.type == pafs.FileType.Directory and not i.base_name.startswith((".", "_")))

    # -- writing -----------------------------------------------------------
    def make_dir(self, directory: str) -> None:
        if directory not in self._made_dirs:
            self.fs.create_dir(directory, recursive=True)
            self._made_dirs.add(directory)

    def write_table(self, sweep: str, task: str, unit_id: str, table: pa.Table) -> str:
        """Write atomically: temp name in the same directory, then rename."""
        return self.write_atomic(self.dir(sweep, task), unit_id + SUFFIX, table)

    def write_atomic(self, directory: str, name: str, table: pa.Table | Iterable[pa.Table],
                     schema: pa.Schema | None = None,
                     check: Callable[[str], None] | None = None) -> str:
        """Write one Parquet file (with page checksums) under a unique temp name, fsync it,
        run `check(temp path)` if given (it raises to refuse the file), rename, fsync the folder.

        `table` may be an iterable of tables, each written as its own row group(s).
        """
        self.make_dir(directory)

        def write(out: Any) -> None:
            if isinstance(table, pa.Table):
                pq.write_table(table, out, write_page_checksum=True)
            else:
                with pq.ParquetWriter(out, schema, write_page_checksum=True) as writer:
                    for piece in table:
                        writer.write_table(piece)

        return write_file_atomic(self.fs, posixpath.join(directory, name), write, check)

    def write_failure(self, sweep: str, unit_id: str, table: pa.Table) -> str:
        return self.write_table(sweep, FAILURES_TABLE, unit_id, table)

    def clear_failure(self, sweep: str, unit_id: str) -> None:
        """Forget an earlier failure of a unit that has now succeeded."""
        path = self.unit_path(sweep, FAILURES_TABLE, unit_id)
        if self.fs.get_file_info(path).type == pafs.FileType.File:
            self.fs.delete_file(path)

    def write_manifest(self, sweep: str, manifest: dict[str, Any]) -> str:
        """Record one run of a sweep: a new file under `_runs/` (earlier runs are kept), and
        `_sweep.json`, the resolved spec of the latest run that status and report read.
        Returns the run record's path."""
        directory = posixpath.join(self.base, sweep)
        text = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        record = posixpath.join(directory, RUNS, f"{stamp}-{uuid.uuid4().hex[:8]}.json")
        for path in (record, posixpath.join(directory, MANIFEST)):
            self.fs.create_dir(posixpath.dirname(path), recursive=True)
            write_file_atomic(self.fs, path, lambda out: out.write(text))
        return record

    def read_runs(self, sweep: str) -> list[dict[str, Any]]:
        """Every recorded run of a sweep, oldest first."""
        infos = self._list(posixpath.join(self.base, sweep, RUNS))
        runs = []
        for info in sorted((i for i in infos if i.base_name.endswith(".json")),
                           key=lambda i: i.base_name):
            with self.fs.open_input_stream(info.path) as f:
                runs.append(json.loads(f.read().decode()))
        return runs

    def read_manifest(self, sweep: str) -> dict[str, Any] | None:
        path = posixpath.join(self.base, sweep, MANIFEST)
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(path) as f:
            return json.loads(f.read().decode())

    # -- integrity ---------------------------------------------------------
    def check_file(self, path: str) -> str | None:
        """Why a stored file cannot be trusted, or None when it reads back whole.

        A unit file must parse, pass its page checksums and hold only its own
        unit id; a part must parse, pass its checksums and hold exactly the
        rows per unit its footer index records (a unit of zero rows included).
        """
        try:
            with self.fs.open_input_file(path) as f:
                table = pq.read_table(f, page_checksum_verification=True)
        except (OSError, pa.ArrowException, ValueError) as exc:
            return f"unreadable: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        if "unit_id" not in table.column_names:
            return "no unit_id column"
        if posixpath.basename(posixpath.dirname(path)) in COMPACTED_DIRS:
            return part_problem(table.schema.metadata or {}, row_counts(table.column("unit_id")))
        stored = set(table.column("unit_id").unique().to_pylist())
        return None if stored <= {unit_id_of(path)} else f"holds rows of units {sorted(stored)}"

    def verify(self, sweep: str, task: str, threads: int = 8) -> list[tuple[str, str]]:
        """(path, reason) for every unit file or part of a task that fails `check_file`."""
        paths = self.files(sweep, task) + (self.part_files(sweep, task)
                                           if task != FAILURES_TABLE else [])
        with ThreadPoolExecutor(max_workers=threads) as pool:
            reasons = list(pool.map(self.check_file, paths))
        return [(p, r) for p, r in zip(paths, reasons) if r is not None]

    def quarantine(self, path: str) -> str:
        """Move a bad file to `<task>/_corrupt/` (kept for inspection); its units become pending."""
        directory = posixpath.dirname(path)
        if posixpath.basename(directory) in COMPACTED_DIRS:
            directory = posixpath.dirname(directory)
        target_dir = posixpath.join(directory, CORRUPT)
        self.fs.create_dir(target_dir, recursive=True)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
        target = posixpath.join(target_dir, f"{posixpath.basename(path)}.{stamp}")
        self.fs.move(path, target)
        return target

    # -- reading -----------------------------------------------------------
    def read(self, task: str, sweep: str | list[str] | None = None,
             schema: pa.Schema | None = None, columns: list[str] | None = None,
             filters: dict[str, Any] | None = None) -> pa.Table | None:
        """Every stored row of a task (each unit once); None if there are none.

        Each filter is `column=value` or `column=[values…]`, pushed down to the scan.
        A file that vanishes between listing and reading (a compaction merged it into a
        part) is not an error: the listing is taken again, up to READ_ATTEMPTS times.
        """
        sweeps = self.sweeps() if sweep is None else ([sweep] if isinstance(sweep, str) else sweep)
        for attempt in range(1, READ_ATTEMPTS + 1):
            groups = [g for s in sweeps for g in self.scan_groups(s, task)]
            try:
                return self._read_groups(groups, task, schema, columns, filters)
            except (OSError, pa.ArrowException):
                vanished = any(self.fs.get_file_info(p).type == pafs.FileType.NotFound
                               for g in groups for p in g.paths)
                if not vanished or attempt == READ_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def _read_groups(self, groups: list[ScanGroup], task: str, schema: pa.Schema | None,
                     columns: list[str] | None, filters: dict[str, Any] | None
                     ) -> pa.Table | None:
        if not groups:
            return None
        datasets = [ds.dataset(g.paths, filesystem=self.fs, format=checked_format(),
                               schema=schema) for g in groups]
        names = (schema or datasets[0].schema).names
        unknown = sorted(set(filters or {}) - set(names))
        if unknown:
            raise ValueError(f"load(): unknown filter column(s) {unknown}; columns of task "
                             f"{task!r}: {', '.join(names)}")
        expr = None
        for name, value in (filters or {}).items():
            term = (pc.field(name).isin(list(value)) if isinstance(value, (list, tuple, set))
                    else pc.field(name) == value)
            expr = term if expr is None else expr & term
        tables = []
        for group, dataset in zip(groups, datasets):
            scan = expr
            if group.exclude:
                keep = ~pc.field("unit_id").isin(sorted(group.exclude))
                scan = keep if scan is None else scan & keep
            tables.append(dataset.to_table(columns=columns, filter=scan))
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")


def load(root: str, task: str | None = None, sweep: str | list[str] | None = None,
         columns: list[str] | None = None, **filters: Any):
    """Read results as a pandas DataFrame — the public read API.

    `task` names the task (or "_failures"); it may be left out when the root
    holds a single task. Each keyword filter is `column=value` or
    `column=[values…]`; filters are pushed down to the Parquet scan. Unit files
    and compacted parts are read alike, each unit once.
    """
    import pandas as pd

    store = Store(root)
    if task is None:
        sweeps = store.sweeps() if sweep is None else ([sweep] if isinstance(sweep, str) else sweep)
        found = sorted({t for s in sweeps for t in store.tasks(s)})
        if len(found) != 1:
            raise ValueError(f"load(): name a task; results under {root!r} hold "
                             f"{', '.join(found) or 'no tasks'}")
        task = found[0]
    try:
        table = store.read(task, sweep, schema=known_schema(task), columns=columns,
                           filters=filters)
    except (OSError, pa.ArrowException) as exc:
        raise CorruptResultError(f"load(): a stored file of task {task!r} under {root!r} cannot be read "
                      f"({str(exc).splitlines()[0]}); `harness status <sweep> --results {root}` "
                      "names it and `harness run <sweep> --repair` moves it aside and re-runs "
                      "its units") from exc
    if table is None:
        return pd.DataFrame(columns=columns or [])
    return table.to_pandas()


def known_schema(task: str) -> pa.Schema | None:
    """The registered full schema of a task, so every file is read with one schema."""
    from harness.engine.registry import load_tasks
    from harness.engine.schema import FAILURE_SCHEMA, result_schema

    if task == FAILURES_TABLE:
        return FAILURE_SCHEMA
    registered = load_tasks().get(task)
    return result_schema(registered) if registered is not None else None
