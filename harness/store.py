"""Parquet store: one file per finished unit, `<root>/<sweep>/<task>/<unit_id>.parquet`.

A unit is done if and only if its file exists: files are written under a
hidden temp name (leading dot) and renamed when complete, so a crash leaves at
most a temp file that no reader ever lists. Re-running a unit overwrites its
own path, so a repeat never duplicates rows. The root is a local path or any
pyarrow filesystem URI (`file:///…`, `s3://bucket/prefix`, `gs://…`).
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from harness.schema import FAILURES_TABLE

MANIFEST = "_sweep.json"
ARTIFACTS = "_artifacts"
SUFFIX = ".parquet"


def resolve_root(root: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, base path) for a local path or a filesystem URI."""
    if "://" in root:
        return pafs.FileSystem.from_uri(root)
    return pafs.LocalFileSystem(), os.path.abspath(root)


def _is_result_file(name: str) -> bool:
    return name.endswith(SUFFIX) and not name.startswith((".", "_"))


class Store:
    """Reads and writes one results root."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.fs, self.base = resolve_root(root)

    # -- paths -------------------------------------------------------------
    def dir(self, sweep: str, task: str) -> str:
        return posixpath.join(self.base, sweep, task)

    def unit_path(self, sweep: str, task: str, unit_id: str) -> str:
        return posixpath.join(self.dir(sweep, task), unit_id + SUFFIX)

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

    def files(self, sweep: str, task: str) -> list[str]:
        """Paths of finished unit files (temp files and hidden names excluded)."""
        return sorted(i.path for i in self._list(self.dir(sweep, task))
                      if i.type == pafs.FileType.File and _is_result_file(i.base_name))

    def unit_ids(self, sweep: str, task: str) -> set[str]:
        return {posixpath.basename(p)[: -len(SUFFIX)] for p in self.files(sweep, task)}

    def sweeps(self) -> list[str]:
        return sorted(i.base_name for i in self._list(self.base)
                      if i.type == pafs.FileType.Directory and not i.base_name.startswith((".", "_")))

    def tasks(self, sweep: str) -> list[str]:
        """Task directories of a sweep (not `_failures` or `_artifacts`)."""
        return sorted(i.base_name for i in self._list(posixpath.join(self.base, sweep))
                      if i.type == pafs.FileType.Directory and not i.base_name.startswith((".", "_")))

    # -- writing -----------------------------------------------------------
    def write_table(self, sweep: str, task: str, unit_id: str, table: pa.Table) -> str:
        """Write atomically: temp name in the same directory, then rename."""
        directory = self.dir(sweep, task)
        self.fs.create_dir(directory, recursive=True)
        final = posixpath.join(directory, unit_id + SUFFIX)
        tmp = posixpath.join(directory, f".{unit_id}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with self.fs.open_output_stream(tmp) as out:
                pq.write_table(table, out)
            self.fs.move(tmp, final)
        except BaseException:
            try:
                self.fs.delete_file(tmp)
            except (OSError, FileNotFoundError):
                pass
            raise
        return final

    def write_failure(self, sweep: str, unit_id: str, table: pa.Table) -> str:
        return self.write_table(sweep, FAILURES_TABLE, unit_id, table)

    def clear_failure(self, sweep: str, unit_id: str) -> None:
        """Forget an earlier failure of a unit that has now succeeded."""
        path = self.unit_path(sweep, FAILURES_TABLE, unit_id)
        if self.fs.get_file_info(path).type == pafs.FileType.File:
            self.fs.delete_file(path)

    def write_manifest(self, sweep: str, manifest: dict[str, Any]) -> None:
        """The resolved spec and provenance of the latest run of a sweep."""
        directory = posixpath.join(self.base, sweep)
        self.fs.create_dir(directory, recursive=True)
        tmp = posixpath.join(directory, f".{MANIFEST}.{uuid.uuid4().hex[:8]}.tmp")
        with self.fs.open_output_stream(tmp) as out:
            out.write(json.dumps(manifest, indent=2, sort_keys=True, default=str).encode())
        self.fs.move(tmp, posixpath.join(directory, MANIFEST))

    def read_manifest(self, sweep: str) -> dict[str, Any] | None:
        path = posixpath.join(self.base, sweep, MANIFEST)
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(path) as f:
            return json.loads(f.read().decode())

    # -- reading -----------------------------------------------------------
    def dataset(self, task: str, sweep: str | list[str] | None = None,
                schema: pa.Schema | None = None) -> ds.Dataset | None:
        """A pyarrow dataset over the unit files of one task (None if there are none)."""
        sweeps = self.sweeps() if sweep is None else ([sweep] if isinstance(sweep, str) else sweep)
        files = [f for s in sweeps for f in self.files(s, task)]
        if not files:
            return None
        return ds.dataset(files, filesystem=self.fs, format="parquet", schema=schema)


def load(root: str, task: str | None = None, sweep: str | list[str] | None = None,
         columns: list[str] | None = None, **filters: Any):
    """Read results as a pandas DataFrame — the public read API.

    `task` names the task (or "_failures"); it may be left out when the root
    holds a single task. Each keyword filter is `column=value` or
    `column=[values…]`; filters are pushed down to the Parquet scan.
    """
    import pandas as pd
    import pyarrow.compute as pc

    store = Store(root)
    if task is None:
        sweeps = store.sweeps() if sweep is None else ([sweep] if isinstance(sweep, str) else sweep)
        found = sorted({t for s in sweeps for t in store.tasks(s)})
        if len(found) != 1:
            raise ValueError(f"load(): name a task; results under {root!r} hold "
                             f"{', '.join(found) or 'no tasks'}")
        task = found[0]
    dataset = store.dataset(task, sweep, schema=_known_schema(task))
    if dataset is None:
        return pd.DataFrame(columns=columns or [])
    unknown = sorted(set(filters) - set(dataset.schema.names))
    if unknown:
        raise ValueError(f"load(): unknown filter column(s) {unknown}; columns of task "
                         f"{task!r}: {', '.join(dataset.schema.names)}")
    expr = None
    for name, value in filters.items():
        term = (pc.field(name).isin(list(value)) if isinstance(value, (list, tuple, set))
                else pc.field(name) == value)
        expr = term if expr is None else expr & term
    table = dataset.to_table(columns=columns, filter=expr)
    return table.to_pandas()


def _known_schema(task: str) -> pa.Schema | None:
    """The registered full schema of a task, so every file is read with one schema."""
    from harness.registry import load_tasks
    from harness.schema import FAILURE_SCHEMA, result_schema

    if task == FAILURES_TABLE:
        return FAILURE_SCHEMA
    registered = load_tasks().get(task)
    return result_schema(registered) if registered is not None else None
