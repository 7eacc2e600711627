"""`harness compact`: many unit files -> a few parts, with exactly-once bookkeeping kept."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute in a test
import pyarrow.parquet as pq
import pytest
from conftest import write_sweep

import harness
from harness import cli
from harness.engine import compact
from harness.engine.executor import RunConfig, run_units
from harness.engine.spec import validate
from harness.engine.store import Store

N = 150
DOC = {"name": "many", "tasks": {"noop": {"index": list(range(N)), "sleep_s": 0.0}}}


def _everything(root: str) -> pd.DataFrame:
    """Every stored row, run facts included: compaction must copy rows, not re-run units."""
    return harness.load(root, task="noop", sweep="many").sort_values("unit_id").reset_index(
        drop=True)


@pytest.fixture
def finished(in_tmp):
    path = write_sweep(in_tmp / "many.yaml", DOC)
    assert cli.main(["run", str(path), "--executor", "local"]) == 0
    root = str(in_tmp / "results")
    return path, root, _everything(root)


def test_compact_keeps_rows_resume_and_status(finished, capsys):
    path, root, before = finished
    store = Store(root)
    ids = store.unit_ids("many", "noop")
    assert len(store.files("many", "noop")) == N
    # small limits so that the sweep makes several parts of several row groups
    stats = compact.compact_sweep(root, "many", part_bytes=400 * 2**10, row_group_bytes=2000)
    assert [(s.task, s.files, s.rows, s.leftovers) for s in stats] == [("noop", N, N, 0)]
    parts = store.part_files("many", "noop")
    assert len(parts) == stats[0].parts >= 2
    assert store.files("many", "noop") == []
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in parts) == N
    assert max(pq.ParquetFile(p).metadata.num_row_groups for p in parts) >= 2
    assert store.unit_ids("many", "noop") == ids

    pd.testing.assert_frame_equal(_everything(root), before)
    picked = harness.load(root, task="noop", sweep="many", index=[3, 77, 149])
    assert sorted(picked["index"]) == [3, 77, 149]
    assert sorted(picked["value"]) == sorted(before.set_index("index").loc[[3, 77, 149], "value"])

    capsys.readouterr()
    assert cli.main(["run", str(path), "--executor", "local"]) == 0
    assert f"{N} done, 0 to run" in capsys.readouterr().err
    assert cli.main(["status", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split() == ["noop", str(N), str(N), "0", "0"]

    # a second compaction has nothing to do and changes nothing
    again = compact.compact_sweep(root, "many")
    assert (again[0].files, again[0].parts, again[0].leftovers) == (0, 0, 0)
    assert store.part_files("many", "noop") == parts


def test_crash_between_part_and_deletes_loses_and_duplicates_nothing(finished, monkeypatch):
    _, root, before = finished
    store = Store(root)

    def crash(*args, **kwargs):
        raise OSError("simulated crash after the part was written")

    monkeypatch.setattr(compact, "_delete_files", crash)
    with pytest.raises(OSError, match="simulated crash"):
        compact.compact_sweep(root, "many")
    # the part is in place and every unit file is still there: each unit is read once
    assert len(store.part_files("many", "noop")) == 1
    assert len(store.files("many", "noop")) == N
    after = _everything(root)
    assert after["unit_id"].is_unique
    pd.testing.assert_frame_equal(after, before)
    assert len(store.unit_ids("many", "noop")) == N

    monkeypatch.undo()
    stats = compact.compact_sweep(root, "many")
    assert (stats[0].files, stats[0].parts, stats[0].leftovers) == (0, 0, N)
    assert store.files("many", "noop") == []
    pd.testing.assert_frame_equal(_everything(root), before)


def test_unreadable_unit_file_stops_compaction_before_anything_is_deleted(finished):
    _, root, _ = finished
    store = Store(root)
    victim = store.files("many", "noop")[10]
    with open(victim, "r+b") as f:
        f.truncate(100)
    with pytest.raises(compact.CompactError, match="nothing was deleted"):
        compact.compact_sweep(root, "many")
    assert len(store.files("many", "noop")) == N
    assert store.part_files("many", "noop") == []
    leftovers = Path(store.compacted_dir("many", "noop"))
    assert not leftovers.exists() or list(leftovers.iterdir()) == []  # no temp part either


def test_units_after_compaction_and_overlapping_parts(finished, capsys):
    path, root, _ = finished
    store = Store(root)
    capsys.readouterr()
    assert cli.main(["compact", "many"]) == 0
    assert capsys.readouterr().out.strip() == f"noop: {N} unit files -> 1 new part(s), {N} rows"
    # the sweep grows: new units land as unit files beside the part
    grown = write_sweep(path, {"name": "many", "tasks": {"noop": {
        "index": list(range(N + 20)), "sleep_s": 0.0}}})
    capsys.readouterr()
    assert cli.main(["run", str(grown), "--executor", "local"]) == 0
    assert f"{N} done, 20 to run" in capsys.readouterr().err
    mixed = _everything(root)
    assert len(mixed) == N + 20 and mixed["unit_id"].is_unique
    assert sorted(mixed["index"]) == list(range(N + 20))
    stats = compact.compact_sweep(root, "many")
    assert (stats[0].files, stats[0].parts) == (20, 1)
    pd.testing.assert_frame_equal(_everything(root), mixed)

    # two compactions racing could put a unit in two parts: readers still take it once
    first = store.part_files("many", "noop")[0]
    shutil.copy(first, first.replace("part-00000", "part-00009"))
    assert len(store.part_files("many", "noop")) == 3
    pd.testing.assert_frame_equal(_everything(root), mixed)
    assert len(harness.load(root, task="noop", sweep="many", index=[0, 1])) == 2


def test_compact_over_a_file_uri_root(tmp_path):
    units = validate(DOC).units()[:12]
    run_units(units, str(tmp_path), RunConfig(kind="local"))
    uri = f"file://{tmp_path}"
    before = harness.load(uri, task="noop").sort_values("unit_id").reset_index(drop=True)
    assert compact.compact_sweep(uri, "many")[0].files == 12
    assert not list((tmp_path / "many" / "noop").glob("*.parquet"))
    after = harness.load(uri, task="noop").sort_values("unit_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(after, before)


def test_compact_cli_names_an_unknown_sweep(in_tmp, capsys):
    assert cli.main(["compact", "nope"]) == 2
    assert "no sweep 'nope'" in capsys.readouterr().err


@pytest.fixture
def small(tmp_path):
    """12 noop units of sweep `many` under tmp_path/results, and their rows."""
    root = str(tmp_path / "results")
    run_units(validate(DOC).units()[:12], root, RunConfig(kind="local"))
    return root, _everything(root)


def test_plain_readers_read_a_compacted_task_whole_and_once(small):
    import duckdb
    import polars as pl
    import pyarrow.dataset as ds

    root, before = small
    folder = f"{root}/many/noop"
    store = Store(root)
    units = store.files("many", "noop")
    compact.compact_sweep(root, "many", part_bytes=4 * 2**10)  # several parts
    assert len(store.part_files("many", "noop")) >= 2 and store.files("many", "noop") == []
    # units finished after the compaction sit beside the parts; a stale temp file and a
    # quarantined file are never read
    Path(units[0]).parent.joinpath(".x.parquet.1.ab.tmp").write_bytes(b"garbage")
    run_units(validate(DOC).units()[12:15], root, RunConfig(kind="local"))
    store.quarantine(store.files("many", "noop")[0])
    want = sorted(before["index"]) + sorted(harness.load(root, task="noop", sweep="many")
                                            ["index"])[12:]
    assert len(want) == 14

    assert sorted(pd.read_parquet(folder)["index"]) == want
    assert sorted(ds.dataset(folder).to_table()["index"].to_pylist()) == want
    # the queries the README shows
    got = duckdb.sql(f"SELECT index FROM read_parquet('{folder}/**/*.parquet')").fetchall()
    assert sorted(r[0] for r in got) == want
    assert sorted(pl.read_parquet(f"{folder}/**/*.parquet")["index"].to_list()) == want


def test_a_part_that_does_not_read_back_never_goes_live(small, monkeypatch):
    root, before = small
    store = Store(root)
    monkeypatch.setattr(compact, "part_problem", lambda footer, counts: "simulated bad read-back")
    with pytest.raises(compact.CompactError, match="simulated bad read-back"):
        compact.compact_sweep(root, "many")
    assert store.part_files("many", "noop") == []
    assert list(Path(store.compacted_dir("many", "noop")).iterdir()) == []  # no temp left
    assert len(store.files("many", "noop")) == 12
    monkeypatch.undo()
    # the next compaction deletes nothing it was not told it kept
    assert compact.compact_sweep(root, "many")[0].files == 12
    pd.testing.assert_frame_equal(_everything(root), before)


def test_leftovers_are_deleted_only_when_the_part_holds_their_rows(small, monkeypatch):
    root, before = small
    store = Store(root)
    monkeypatch.setattr(compact, "_delete_files", lambda *a: None)  # a crash after the part
    compact.compact_sweep(root, "many")
    monkeypatch.undo()
    # one leftover unit file now holds two rows, the part one: it is not a copy, keep it
    odd = store.files("many", "noop")[3]
    table = pq.read_table(odd)
    store.write_table("many", "noop", Path(odd).stem, pa.concat_tables([table, table]))
    stats = compact.compact_sweep(root, "many")[0]
    assert (stats.leftovers, stats.kept) == (11, 1)
    assert store.files("many", "noop") == [odd]
    assert "1 unit files kept" in compact.describe([stats])


def test_older_columns_and_zero_row_units_survive_compaction(small):
    root, before = small
    store = Store(root)
    files = store.files("many", "noop")
    older = pq.read_table(files[0])
    older = older.append_column("retired_metric", pa.array([2.5], pa.float64()))
    store.write_table("many", "noop", Path(files[0]).stem, older)
    empty = pq.read_table(files[1]).slice(0, 0)
    store.write_table("many", "noop", Path(files[1]).stem, empty)

    stats = compact.compact_sweep(root, "many")[0]
    assert (stats.files, stats.rows) == (12, 11)
    (part,) = store.part_files("many", "noop")
    table = pq.read_table(part)
    assert table.column("retired_metric").to_pylist().count(2.5) == 1
    assert table.column("retired_metric").null_count == 10
    assert store.verify("many", "noop") == []  # the zero-row unit does not make it look corrupt
    assert store.unit_ids("many", "noop") == set(before["unit_id"])
    assert store.part_rows(part)[Path(files[1]).stem] == 0
    # a part whose rows per unit differ from its index is named by verify
    bad = table.filter(pa.compute.field("unit_id") != Path(files[2]).stem)
    pq.write_table(bad.replace_schema_metadata(table.schema.metadata), part)
    assert [r for _, r in store.verify("many", "noop")] == [
        f"rows per unit differ from its index for 1 unit(s), e.g. {Path(files[2]).stem}: "
        "0 stored, 1 indexed"]


def test_parts_of_the_older_layout_are_read_and_moved(small):
    root, before = small
    store = Store(root)
    compact.compact_sweep(root, "many")
    new = Path(store.compacted_dir("many", "noop"))
    new.rename(new.parent / "_compacted")
    pd.testing.assert_frame_equal(_everything(root), before)
    assert compact.compact_sweep(root, "many")[0].files == 0
    assert [Path(p).parent.name for p in store.part_files("many", "noop")] == ["compacted"]
    assert not (new.parent / "_compacted").exists()
    pd.testing.assert_frame_equal(_everything(root), before)
