"""Sweep files: validation messages, exit code 2 with nothing written, expansion, stable ids."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness import cli
from harness.engine.spec import SpecError, apply_overrides, load_spec, load_yaml, validate
from harness.engine.units import unit_id_for

from conftest import tiny_eval_doc, write_sweep

GOOD = {"name": "s", "tasks": {"evaluate": {"model": "resnet18"}}}


def with_eval(**params):
    return {"name": "s", "tasks": {"evaluate": {"model": "resnet18", **params}}}


BAD_SPECS = [
    ({"name": "s", "tasks": {"evaluat": {"model": "resnet18"}}},
     ["tasks.evaluat: unknown task; allowed: ", "evaluate", "noop"]),
    (with_eval(model="resnet19"),
     ["tasks.evaluate.model: unknown model 'resnet19'; allowed: ", "resnet18", "vit_ti"]),
    (with_eval(model="timm:resnt18"),
     ["tasks.evaluate.model: unknown timm model 'resnt18'; close matches: resnet18"]),
    (with_eval(dataset="cifar11"),
     ["tasks.evaluate.dataset: unknown value 'cifar11'", "allowed: cifar10, cifar100, digits"]),
    (with_eval(batch_size="big"),
     ["tasks.evaluate.batch_size: expected int, got str 'big'"]),
    (with_eval(seed=[0, "one"]),
     ["tasks.evaluate.seed[1]: expected int, got str 'one'"]),
    (with_eval(data_fraction=1.5),
     ["tasks.evaluate.data_fraction: 1.5 out of range (0.0, 1.0]"]),
    (with_eval(batch_size=0),
     ["tasks.evaluate.batch_size: 0 out of range [1, inf]"]),
    (with_eval(modle="vit_ti"),
     ["tasks.evaluate.modle: unknown param of task evaluate; allowed: model, model_args"]),
    (with_eval(model_args={"widht": 8}),
     ["tasks.evaluate: model_args:", "widht", "width"]),
    (with_eval(seed=[]),
     ["tasks.evaluate.seed: empty list"]),
    ({"name": "s", "taks": {}, "tasks": {"evaluate": {"model": "resnet18"}}},
     ["taks: unknown key; allowed: name, description, defaults, executor, tasks"]),
    ({"name": "bad name!", "tasks": {"evaluate": {"model": "resnet18"}}},
     ["name: expected a sweep name"]),
    ({"name": "s", "tasks": {"evaluate": {}}},
     ["tasks.evaluate: model: name an architecture (or a `checkpoint`)"]),
    ({"name": "s", "executor": {"workers": -1}, "tasks": {"evaluate": {"model": "resnet18"}}},
     ["executor.workers: -1 out of range [0, inf]"]),
    ({"name": "s", "defaults": {"sleep_s": 1}, "tasks": {"evaluate": {"model": "resnet18"}}},
     ["defaults.sleep_s: no task of this sweep has this param"]),
]


@pytest.mark.parametrize("doc, messages", BAD_SPECS, ids=[m[0].split(":")[0] for _, m in BAD_SPECS])
def test_bad_spec_exits_2_names_field_and_writes_nothing(in_tmp, capsys, doc, messages):
    path = write_sweep(in_tmp / "sweep.yaml", doc)
    code = cli.main(["run", str(path), "--results", str(in_tmp / "res"), "--executor", "local"])
    err = capsys.readouterr().err
    assert code == 2
    for m in messages:
        assert m in err
    assert not (in_tmp / "res").exists() and not (in_tmp / "results").exists()


@pytest.mark.parametrize("argv, message", [
    (["tasks.evaluate.seed"], "expected key.sub=value"),
    (["tasks.evaluate.seed=abc"], "tasks.evaluate.seed: expected int, got str 'abc'"),
    (["tasks.evaluate.data_fraction=0"], "0.0 out of range (0.0, 1.0]"),
    (["--workers", "-2"], "--workers: -2 out of range [0, inf]"),
    (["--num-cpus", "0"], "--num-cpus: 0.0 out of range (0.0, inf]"),
    (["tasks.evaluate.data_fraction=.nan"], "tasks.evaluate.data_fraction: nan is not a finite"),
    (["tasks.evaluate.data_fraction=[0.5, .NaN]"], "tasks.evaluate.data_fraction[1]: nan is not"),
    (["tasks.evaluate.model_args={width: .inf}"], "tasks.evaluate.model_args: contains NaN or an "
                                                  "infinity"),
    (["executor.unit_timeout=.inf"], "executor.unit_timeout: inf is not a finite number"),
    (["--unit-timeout", "inf"], "--unit-timeout: inf is not a finite number"),
    (["--num-gpus", "nan"], "--num-gpus: nan is not a finite number"),
])
def test_bad_override_or_flag_exits_2(in_tmp, capsys, argv, message):
    path = write_sweep(in_tmp / "sweep.yaml", GOOD)
    code = cli.main(["run", str(path), "--results", str(in_tmp / "res"), "--executor", "local",
                     *argv])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (in_tmp / "res").exists()


@pytest.mark.parametrize("text, value", [
    ("1e-4", 1e-4), ("1E5", 1e5), ("1.5e-3", 1.5e-3), ("+2.5E+2", 250.0), (".5", 0.5),
    (".5e3", 500.0), ("1.e-2", 0.01), ("3", 3.0), ("'1e-4'", 1e-4), ("'1_000.5'", 1000.5),
])
def test_float_forms_of_yaml_1_2_and_python_are_floats(text, value):
    """`harness run demo_train tasks.train.0.lr=1e-4` (YAML 1.1 reads 1e-4 as a string)."""
    spec = load_spec("demo_train", [f"tasks.train.0.lr={text}", f"tasks.train.1.lr=[{text}, 0.1]"])
    lrs = {(u.params["model"], u.params["lr"]) for u in spec.units()}
    assert lrs == {("preact_resnet18", value), ("vit_ti", value), ("vit_ti", 0.1)}
    assert all(isinstance(lr, float) for _, lr in lrs)


def test_yaml_1_2_floats_inside_files_and_lists():
    assert load_yaml("a: [1e-4, 1E5, -2e+3, -1.5e-3]\nb: 1e-4x\nc: 123\nd: 0x1f") == {
        "a": [1e-4, 1e5, -2e3, -1.5e-3], "b": "1e-4x", "c": 123, "d": 31}


def test_missing_sweep_file_says_where_it_looked(in_tmp, capsys):
    assert cli.main(["run", "no_such_sweep", "--results", "res"]) == 2
    err = capsys.readouterr().err
    assert "no_such_sweep" in err and "sweeps" in err
    assert not (in_tmp / "res").exists()


def test_sweep_name_resolves_outside_the_checkout(in_tmp):
    """`harness run demo` from any directory finds the shipped sweeps/ (not only from the repo)."""
    from harness.engine.spec import resolve_sweep_path

    found = resolve_sweep_path("demo")
    assert found == (Path(__file__).resolve().parent.parent / "sweeps" / "demo.yaml")
    assert not (in_tmp / "sweeps").exists()


def test_yaml_is_loaded_safely(in_tmp, capsys):
    (in_tmp / "evil.yaml").write_text("!!python/object/apply:os.system ['touch pwned']\n")
    assert cli.main(["run", str(in_tmp / "evil.yaml"), "--results", "res"]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert not (in_tmp / "pwned").exists()


def test_timm_models_validate_by_name():
    units = validate(with_eval(model="timm:resnet18", model_args={"pretrained": False})).units()
    assert units[0].params["model"] == "timm:resnet18"


def test_lists_expand_as_cartesian_product():
    doc = {"name": "s", "tasks": {"evaluate": {"model": ["resnet18", "vit_ti"], "seed": [0, 1, 2],
                                               "split": ["train", "test"]}}}
    units = validate(doc).units()
    assert len(units) == 12
    combos = {(u.params["model"], u.params["seed"], u.params["split"]) for u in units}
    assert len(combos) == 12
    assert all(u.params["batch_size"] == 256 for u in units)  # defaults filled in


def test_blocks_union_and_dict_axis():
    doc = tiny_eval_doc("s", seeds=[0, 1, 2])
    assert len(validate(doc).units()) == 6
    axis = {"name": "s", "tasks": {"evaluate": {"model": "resnet18",
                                                "model_args": [{"width": 8}, {"width": 16}]}}}
    assert [u.params["model_args"] for u in validate(axis).units()] == [{"width": 8}, {"width": 16}]


def test_list_typed_param_flat_list_is_one_value():
    doc = {"name": "s", "tasks": {"evaluate": {"model": "resnet18",
                                               "model_args": {"layers": [1, 1, 1, 1]}}}}
    units = validate(doc).units()
    assert len(units) == 1 and units[0].params["model_args"] == {"layers": [1, 1, 1, 1]}


def test_canonical_values_give_equal_ids():
    a = validate(with_eval(data_fraction=1, seed=3)).units()[0]
    b = validate({"tasks": {"evaluate": {"seed": 3, "data_fraction": 1.0, "model": "resnet18",
                                         "batch_size": 256}}, "name": "s"}).units()[0]
    assert a.unit_id == b.unit_id
    assert a.unit_id != validate(with_eval(seed=4)).units()[0].unit_id


def test_duplicate_units_are_dropped():
    doc = {"name": "s", "tasks": {"evaluate": [{"model": "resnet18"}, {"model": "resnet18"}]}}
    assert len(validate(doc).units()) == 1


def test_overrides_and_defaults():
    doc = apply_overrides(GOOD, ["tasks.evaluate.seed=[0,1,2]", "defaults.dataset=synthetic",
                                 "tasks.evaluate.model_args.width=16"])
    units = validate(doc).units()
    assert len(units) == 3
    assert {u.params["dataset"] for u in units} == {"synthetic"}
    assert units[0].params["model_args"] == {"width": 16}
    assert GOOD["tasks"]["evaluate"] == {"model": "resnet18"}  # the original is untouched


def test_all_errors_reported_at_once():
    with pytest.raises(SpecError) as info:
        validate(with_eval(batch_size=0, data_fraction=2.0, split="val"))
    assert len(info.value.errors) == 3


ID_SCRIPT = """
import json, sys
from harness.engine.spec import validate
doc = json.loads(sys.argv[1])
print(json.dumps([u.unit_id for u in validate(doc).units()]))
"""


def test_unit_ids_stable_across_processes_and_hash_seeds():
    doc = tiny_eval_doc("s", seeds=[0, 1, 2])
    ids = []
    for hash_seed in ("1", "12345"):
        out = subprocess.run([sys.executable, "-c", ID_SCRIPT, json.dumps(doc)], check=True,
                             capture_output=True, text=True,
                             env={"PYTHONHASHSEED": hash_seed, "PATH": "/usr/bin:/bin"})
        ids.append(json.loads(out.stdout))
    assert ids[0] == ids[1] == [u.unit_id for u in validate(doc).units()]
    assert len(set(ids[0])) == 6


def test_unit_id_is_sha256_of_canonical_json():
    import hashlib

    params = {"b": 1.0, "a": [1, 2], "c": {"y": 1, "x": "z"}}
    text = '{"params":{"a":[1,2],"b":1.0,"c":{"x":"z","y":1}},"task":"t"}'
    assert unit_id_for("t", params) == hashlib.sha256(text.encode()).hexdigest()[:20]


def test_every_shipped_sweep_file_validates():
    from pathlib import Path

    import yaml

    files = sorted((Path(__file__).parent.parent / "sweeps").glob("*.yaml"))
    assert len(files) >= 3
    for path in files:
        doc = yaml.safe_load(path.read_text())
        if path.stem == "demo":  # names the checkpoints of demo_train, resolved at run time
            doc["tasks"]["evaluate"]["checkpoint"] = ""
            doc["tasks"]["evaluate"]["model"] = "resnet18"
        lesion = doc["tasks"].get("lesion")
        if isinstance(lesion, dict) and str(lesion.get("checkpoint")).startswith("sweep:"):
            lesion["block"] = 1  # block -1 expands over the resolved model's residual blocks
        assert validate(doc).units(), path
