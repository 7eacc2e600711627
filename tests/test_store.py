"""The Parquet store: atomic unit files, hidden temp files, the load() read API."""

from __future__ import annotations

import pytest

import harness
from harness.engine.executor import RunConfig, run_units
from harness.engine.spec import validate
from harness.engine.store import Store

NOOP = {"name": "st", "tasks": {"noop": {"index": [0, 1, 2, 3], "work_iters": [0, 2]}}}


@pytest.fixture
def noop_results(tmp_path):
    units = validate(NOOP).units()
    summary = run_units(units, str(tmp_path), RunConfig(kind="local"))
    assert (summary.done, summary.failed) == (8, 0)
    return tmp_path, units


def test_one_file_per_unit_and_common_columns(noop_results):
    root, units = noop_results
    files = sorted(p.name for p in (root / "st" / "noop").iterdir())
    assert files == sorted(f"{u.unit_id}.parquet" for u in units)
    df = harness.load(str(root), task="noop", sweep="st")
    assert len(df) == 8 and df["unit_id"].is_unique
    for col in ["sweep", "task", "unit_id", "model", "dataset", "data_fraction", "seed", "host",
                "node_id", "device", "duration_s", "finished_at", "harness_version"]:
        assert col in df.columns
    assert set(df["sweep"]) == {"st"} and set(df["task"]) == {"noop"}
    assert df["finished_at"].dt.tz is not None
    assert (df["duration_s"] >= 0).all()
    # param columns are typed, not strings
    assert df["index"].dtype.kind == "i" and df["work_iters"].dtype.kind == "i"


def test_filters_are_applied(noop_results):
    root, _ = noop_results
    df = harness.load(str(root), task="noop", index=2)
    assert sorted(df["work_iters"]) == [0, 2]
    df = harness.load(str(root), task="noop", index=[0, 3], work_iters=2)
    assert sorted(df["index"]) == [0, 3]
    assert list(harness.load(str(root), columns=["index"], index=1).columns) == ["index"]


def test_unknown_filter_column_is_a_clear_error(noop_results):
    root, _ = noop_results
    with pytest.raises(ValueError, match="unknown filter column.*indx"):
        harness.load(str(root), task="noop", indx=1)


def test_file_uri_root(noop_results):
    root, _ = noop_results
    df = harness.load(f"file://{root}", task="noop", sweep="st")
    assert len(df) == 8


def test_load_of_nothing_is_empty(tmp_path):
    assert harness.load(str(tmp_path), task="noop").empty


def test_temp_files_are_never_read(noop_results):
    root, units = noop_results
    task_dir = root / "st" / "noop"
    (task_dir / f".{units[0].unit_id}.999.dead.tmp").write_bytes(b"PAR1 truncated")
    (task_dir / ".other.tmp").write_bytes(b"")
    assert len(harness.load(str(root), task="noop")) == 8
    assert Store(str(root)).unit_ids("st", "noop") == {u.unit_id for u in units}


def test_atomic_write_leaves_no_temp_on_error(tmp_path):
    store = Store(str(tmp_path))

    with pytest.raises(TypeError):
        store.write_table("s", "t", "u1", "not a table")  # type: ignore[arg-type]
    assert list((tmp_path / "s" / "t").iterdir()) == []


def test_a_unit_file_is_durable_before_it_counts_as_done(tmp_path, monkeypatch):
    """fsync of the file under its temp name, then rename, then fsync of the folder."""
    import os

    import pyarrow as pa

    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    store = Store(str(tmp_path))
    path = store.write_table("s", "t", "u1", pa.table({"unit_id": ["u1"]}))
    folder = str(tmp_path / "s" / "t")
    assert len(synced) == 2
    assert os.path.dirname(synced[0]) == folder and synced[0].endswith(".tmp")
    assert synced[1] == folder and os.listdir(folder) == ["u1.parquet"] == [os.path.basename(path)]


def test_a_file_that_vanishes_during_load_is_not_corrupt(noop_results, monkeypatch):
    """A compaction merges and deletes unit files between load's listing and its read."""
    from harness.engine import compact

    root, units = noop_results
    real = Store.scan_groups
    calls = []

    def listing_then_compaction(self, sweep, task):
        groups = real(self, sweep, task)
        if not calls:
            compact.compact_sweep(str(root), "st")
        calls.append(len(groups))
        return groups

    monkeypatch.setattr(Store, "scan_groups", listing_then_compaction)
    df = harness.load(str(root), task="noop", sweep="st")
    assert sorted(df["unit_id"]) == sorted(u.unit_id for u in units)
    assert len(calls) == 2  # listed again once, after the first read found files gone
