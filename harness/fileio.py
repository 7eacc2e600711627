"""Files on any pyarrow filesystem (local paths, file://, s3://, gs://): where results,
checkpoints and artifacts live. Shared by the engine's store and the models' checkpoints, so it
belongs to neither."""

from __future__ import annotations

import os
import posixpath
import uuid
from collections.abc import Callable
from typing import Any

import pyarrow.fs as pafs


class FileReadError(OSError):
    """A file that cannot be read; the message names it and why."""


def resolve_root(root: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, base path) for a local path or a filesystem URI."""
    if "://" in root:
        return pafs.FileSystem.from_uri(root)
    return pafs.LocalFileSystem(), os.path.abspath(root)


def _root_prefix(root: str) -> str:
    """How paths under the results root begin (a URI keeps its scheme), ending in '/'."""
    return (root if "://" in root else os.path.abspath(root)).rstrip("/") + "/"


def relative_to_root(root: str, path: str) -> str:
    """`path` relative to the results root when it lies under it, else unchanged.

    Rows store artifact paths this way, so a results tree can be moved or copied
    (NFS to a laptop, local to s3) and unit ids that hash them do not change.
    """
    prefix = _root_prefix(root)
    return path[len(prefix):] if path.startswith(prefix) else path


def resolve_in_root(root: str, path: str) -> str:
    """A path param or a stored artifact path as a file to open: a relative one is joined to
    the results root; absolute paths and URIs are used as they are; "" stays ""."""
    if not path or "://" in path or path.startswith("/"):
        return path
    return _root_prefix(root) + path


def fsync_path(fs: pafs.FileSystem, path: str) -> None:
    """Flush a file or folder to disk on a local filesystem.

    Object stores (s3, gcs) are durable once a write returns; on NFS the
    client commits a file to the server on fsync/close and a rename is a
    synchronous server operation, so the same sequence holds there.
    """
    if isinstance(fs, pafs.LocalFileSystem):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temp_name(path: str) -> str:
    """A hidden temp path beside `path`, unique per writer (process and call), so two
    writers of one file never mix bytes; readers never list it."""
    directory, name = posixpath.split(path)
    return posixpath.join(directory, f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def write_file_atomic(fs: pafs.FileSystem, path: str, write: Callable[[Any], None],
                      check: Callable[[str], None] | None = None) -> str:
    """Write `path` through a unique temp file: write(stream), fsync, check(temp), rename,
    fsync the folder. On any error (check's included) the temp file is removed and
    `path` is untouched."""
    tmp = temp_name(path)
    try:
        with fs.open_output_stream(tmp) as out:
            write(out)
        fsync_path(fs, tmp)
        if check is not None:
            check(tmp)
        fs.move(tmp, path)
        fsync_path(fs, posixpath.dirname(path))
    except BaseException:
        try:
            fs.delete_file(tmp)
        except OSError:
            pass
        raise
    return path


def write_bytes(uri: str, data: bytes) -> None:
    """Write a file atomically on any pyarrow filesystem: a temp name unique to this writer
    (two writers of one artifact, e.g. a timed-out actor beside its retry, never mix bytes),
    fsync, rename, fsync the folder; the temp file is removed on error."""
    fs, path = resolve_root(uri)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    write_file_atomic(fs, path, lambda out: out.write(data))


def read_bytes(uri: str) -> bytes:
    fs, path = resolve_root(uri)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except (FileNotFoundError, OSError) as exc:
        raise FileReadError(f"{uri!r} cannot be read: {exc}") from None
