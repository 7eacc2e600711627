"""Running sweeps from Python (`harness.run`), dry runs, the run log and provenance."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import harness
from harness import cli
from harness.engine.provenance import code_version, git_state
from harness.engine.spec import SpecError
from harness.engine.store import Store

from conftest import write_sweep

NOOP = {"name": "api", "tasks": {"noop": {"index": [0, 1, 2, 3], "sleep_s": 0.0}}}


def test_run_takes_a_dict_and_returns_the_summary(in_tmp):
    summary = harness.run(NOOP, results=str(in_tmp / "res"), kind="local")
    assert (summary.total, summary.done, summary.failed) == (4, 4, 0)
    assert sorted(harness.load(str(in_tmp / "res"), task="noop")["value"]) == [0.0, 1.0, 2.0, 3.0]
    again = harness.run(NOOP, results=str(in_tmp / "res"), kind="local")  # all done: nothing runs
    assert (again.total, again.done) == (0, 0)


def test_run_takes_a_path_with_overrides_and_executor_options(in_tmp):
    path = write_sweep(in_tmp / "s.yaml", NOOP)
    summary = harness.run(path, results=str(in_tmp / "res"), overrides=["tasks.noop.index=[5]"],
                          kind="local", max_batch=1)
    assert (summary.total, summary.done) == (1, 1)
    assert list(harness.load(str(in_tmp / "res"), task="noop")["index"]) == [5]


@pytest.mark.parametrize("spec, options, message", [
    ({**NOOP, "tasks": {"noop": {"index": -1}}}, {}, "tasks.noop.index: -1 out of range"),
    ({**NOOP, "tasks": {"noop": {"sleep_s": float("nan")}}}, {}, "tasks.noop.sleep_s: nan is not"),
    (NOOP, {"workrs": 2}, "workrs: unknown executor option; allowed: kind, workers"),
    (NOOP, {"unit_timeout": float("inf")}, "unit_timeout: inf is not a finite number"),
    (NOOP, {"kind": "slurm"}, "kind: unknown value 'slurm'; allowed: local, ray"),
    (42, {}, "spec: expected a sweep file path, a sweep name, a dict or a Spec, got int"),
])
def test_run_raises_spec_error_naming_the_field_and_writes_nothing(in_tmp, spec, options, message):
    with pytest.raises(SpecError) as info:
        harness.run(spec, results=str(in_tmp / "res"), **options)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)
    assert not (in_tmp / "res").exists()


def test_import_harness_stays_light():
    code = ("import sys, harness; heavy = [m for m in ('torch', 'ray', 'pandas', "
            "'harness.engine.api') if m in sys.modules]; print(heavy); harness.run; "
            "print('harness.engine.api' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[:2] == ["[]", "True"]


def test_dry_run_prints_units_and_writes_nothing(in_tmp, capsys):
    assert cli.main(["run", "demo_train", "--dry-run", "tasks.train.0.lr=1e-4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "dry run of sweep demo_train: nothing is run or written"
    assert out[1] == "train: 4 units, 0 done, 4 to run"
    assert out[2].startswith("  run ") and "model=preact_resnet18" in out[2] and "lr=0.0001" in out[2]
    assert 'model_args={"layers":[1,1,1,1],"width":16}' in out[2]
    assert "min_lr" not in out[2] and "seed" not in out[2]  # at their defaults: not shown
    assert out[5] == "  ... and 1 more"
    assert not (in_tmp / "results").exists()


def test_dry_run_counts_stored_units_and_still_validates(in_tmp, capsys):
    path = write_sweep(in_tmp / "s.yaml", NOOP)
    assert cli.main(["run", str(path), "--executor", "local", "tasks.noop.index=[0,1]"]) == 0
    before = sorted(p.name for p in (in_tmp / "results").rglob("*"))
    capsys.readouterr()
    assert cli.main(["run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "noop: 4 units, 2 done, 2 to run"
    assert [line.split()[0] for line in out[2:5]] == ["done", "done", "run"]
    assert sorted(p.name for p in (in_tmp / "results").rglob("*")) == before
    assert harness.run(path, dry_run=True).total == 2 and "noop: 4 units" in capsys.readouterr().out
    assert sorted(p.name for p in (in_tmp / "results").rglob("*")) == before
    assert cli.main(["run", str(path), "--dry-run", "tasks.noop.sleep_s=.nan"]) == 2


def test_rerun_recomputes_a_task_on_purpose(in_tmp, capsys):
    res = str(in_tmp / "res")
    harness.run(NOOP, results=res, kind="local")
    first = harness.load(res, task="noop")
    assert harness.run(NOOP, results=res, kind="local").total == 0
    summary = harness.run(NOOP, results=res, kind="local", rerun=["noop"])
    assert (summary.total, summary.done) == (4, 4)
    second = harness.load(res, task="noop")
    assert len(second) == 4 and sorted(second["unit_id"]) == sorted(first["unit_id"])
    assert (second["finished_at"].min() > first["finished_at"].max())
    with pytest.raises(SpecError, match="rerun: evaluate: not a task of sweep api; its tasks: noop"):
        harness.run(NOOP, results=res, kind="local", rerun=["evaluate"])
    assert cli.main(["run", str(write_sweep(in_tmp / "s.yaml", NOOP)), "--results", res,
                     "--executor", "local", "--rerun", "noop"]) == 0
    assert "4 done, 0 failed" in capsys.readouterr().err


def test_every_run_is_recorded_with_provenance(in_tmp):
    res = str(in_tmp / "res")
    harness.run(NOOP, results=res, kind="local", overrides=["tasks.noop.index=[0]"])
    harness.run(NOOP, results=res, kind="local")
    runs = Store(res).read_runs("api")
    assert [r["spec"]["tasks"]["noop"]["index"] for r in runs] == [[0], [0, 1, 2, 3]]
    latest = json.loads((in_tmp / "res" / "api" / "_sweep.json").read_text())
    assert latest == runs[-1]  # status and report read the latest spec
    versions = runs[0]["versions"]
    import numpy, ray, timm, torch

    assert {k: versions[k] for k in ("torch", "timm", "numpy", "ray", "harness")} == {
        "torch": torch.__version__, "timm": timm.__version__, "numpy": numpy.__version__,
        "ray": ray.__version__, "harness": harness.__version__}
    assert versions["cuda"] == torch.version.cuda and "cudnn" in versions
    assert versions["code_version"] == code_version()
    rows = harness.load(res, task="noop")
    assert set(rows["harness_version"]) == {code_version()}
    assert "_runs" not in Store(res).tasks("api")


def test_code_version_names_the_git_commit_and_dirty_flag():
    top = subprocess.run(["git", "-C", harness.__path__[0], "rev-parse", "HEAD"],
                         capture_output=True, text=True, check=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", harness.__path__[0], "status", "--porcelain",
                                 "--untracked-files=no"], capture_output=True, text=True,
                                check=True).stdout.strip())
    assert git_state() == (top, dirty)
    assert code_version() == f"{harness.__version__}+g{top[:12]}" + (".dirty" if dirty else "")
    assert harness.__version__ != "0.1.0"


def test_adding_a_param_marked_added_re_keys_no_stored_unit(in_tmp, monkeypatch):
    """The unit-id policy: a param added to an existing task is hashed only off its default."""
    import dataclasses

    from harness.engine import registry
    from harness.engine.params import Param
    from harness.engine.spec import validate
    from harness.engine.units import unit_id_for

    res = str(in_tmp / "res")
    doc = {"name": "grow", "tasks": {"noop": {"index": [0, 1]}}}
    before = [u.unit_id for u in validate(doc).units()]
    harness.run(doc, results=res, kind="local")
    noop = registry.get_task("noop")
    added = Param("scale", float, 1.0, "a later param", added="0.2.0")
    monkeypatch.setitem(registry._TASKS, "noop", dataclasses.replace(
        noop, params=(*noop.params, added)))
    units = validate(doc).units()
    assert [u.unit_id for u in units] == before and units[0].params["scale"] == 1.0
    assert harness.run(doc, results=res, kind="local").total == 0  # nothing re-runs
    assert len(harness.load(res, task="noop")) == 2
    moved = validate({**doc, "tasks": {"noop": {"index": [0, 1], "scale": 2.0}}}).units()
    assert [u.unit_id for u in moved] == [unit_id_for("noop", u.params) for u in moved]
    assert not set(before) & {u.unit_id for u in moved}
    # unmarked, the same param re-keys every unit: why the mark exists
    monkeypatch.setitem(registry._TASKS, "noop", dataclasses.replace(
        noop, params=(*noop.params, dataclasses.replace(added, added=None))))
    assert not set(before) & {u.unit_id for u in validate(doc).units()}
    with pytest.raises(TypeError, match="needs a default"):
        Param("late", int, help="no default", added="0.2.0")


def test_rerun_is_refused_for_a_compacted_task(in_tmp):
    from harness.engine.compact import compact_sweep

    res = str(in_tmp / "res")
    harness.run(NOOP, results=res, kind="local")
    compact_sweep(res, "api")
    with pytest.raises(SpecError, match="rerun: noop: sweep api has compacted parts"):
        harness.run(NOOP, results=res, kind="local", rerun="noop")
    assert len(harness.load(res, task="noop")) == 4
