"""Files on any pyarrow filesystem (local paths, file://, s3://, gs://): where results,
checkpoints and artifacts live. Shared by the engine's store and the models' checkpoints, so it
belongs to neither."""

from __future__ import annotations

import os
import posixpath

import pyarrow.fs as pafs


class FileReadError(OSError):
    """A file that cannot be read; the message names it and why."""


def resolve_root(root: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, base path) for a local path or a filesystem URI."""
    if "://" in root:
        return pafs.FileSystem.from_uri(root)
    return pafs.LocalFileSystem(), os.path.abspath(root)


def write_bytes(uri: str, data: bytes) -> None:
    """Write a file atomically (temp name, then rename) on any pyarrow filesystem."""
    fs, path = resolve_root(uri)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    tmp = posixpath.join(posixpath.dirname(path), "." + posixpath.basename(path) + ".tmp")
    with fs.open_output_stream(tmp) as out:
        out.write(data)
    fs.move(tmp, path)


def read_bytes(uri: str) -> bytes:
    fs, path = resolve_root(uri)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except (FileNotFoundError, OSError) as exc:
        raise FileReadError(f"{uri!r} cannot be read: {exc}") from None
