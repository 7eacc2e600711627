"""Checkpoints: safetensors + sidecar round trip, foreign state dicts, clear refusals."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from harness.models.checkpoints import CheckpointError, load_checkpoint, read_sidecar, save_checkpoint
from harness.models.registry import build_model

from conftest import SMALL_RESNET, SMALL_VIT


@pytest.mark.parametrize("spec", [SMALL_RESNET, SMALL_VIT], ids=["resnet", "vit"])
def test_round_trip_gives_identical_outputs(tmp_path, spec):
    torch.manual_seed(3)
    model = build_model(spec["model"], 10, **spec["model_args"]).eval()
    with torch.no_grad():  # move BN statistics away from their init so buffers matter
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    path = save_checkpoint(str(tmp_path / "ck" / "final.safetensors"), model,
                           {**spec, "num_classes": 10, "recipe": {"weight_decay": 0.05},
                            "epoch": 7})
    loaded, meta = load_checkpoint(path)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded.eval()(x))
    assert meta["epoch"] == 7 and meta["recipe"]["weight_decay"] == 0.05
    assert read_sidecar(path)["model"] == spec["model"]
    assert not list((tmp_path / "ck").glob(".*"))  # no temp files left


def test_foreign_state_dict_loads_with_weights_only(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet18", 10, **SMALL_RESNET["model_args"]).eval()
    path = tmp_path / "foreign.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    loaded, _ = load_checkpoint(str(path), "resnet18", SMALL_RESNET["model_args"], 10)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded.eval()(x))
    with pytest.raises(CheckpointError, match="needs `model`"):
        load_checkpoint(str(path))


class Payload:
    def __reduce__(self):
        return (print, ("pickle code ran",))


def test_arbitrary_pickle_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"weight": Payload()}))
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(str(path), "resnet18", {"width": 8}, 10)
    assert "pickle code ran" not in capsys.readouterr().out


def test_missing_sidecar_and_wrong_architecture_are_clear(tmp_path):
    model = build_model("resnet18", 10, **SMALL_RESNET["model_args"])
    path = save_checkpoint(str(tmp_path / "a.safetensors"), model, {**SMALL_RESNET,
                                                                    "num_classes": 10})
    with pytest.raises(CheckpointError, match="holds resnet18"):
        load_checkpoint(path, "vit_ti", SMALL_VIT["model_args"], 10)
    (tmp_path / "a.json").unlink()
    with pytest.raises(CheckpointError, match="has no sidecar"):
        load_checkpoint(path)
    sidecar = json.dumps({"model": "resnet18", "model_args": {"width": 16}, "num_classes": 10})
    (tmp_path / "a.json").write_text(sidecar)
    with pytest.raises(CheckpointError, match="does not fit resnet18"):
        load_checkpoint(path)


def test_artifact_writes_use_unique_temps_and_clean_up(tmp_path, monkeypatch):
    """A second writer of the same artifact (a retry beside its timed-out first attempt)
    finishes while the first is between write and rename: neither sees the other's bytes."""
    from harness import fileio as store
    from harness.fileio import read_bytes, write_bytes

    target = str(tmp_path / "art" / "eigenvectors.safetensors")
    temps: list[str] = []
    real = store.fsync_path

    def second_writer_meanwhile(fs, path):
        real(fs, path)
        if path.endswith(".tmp"):
            temps.append(path)
            if len(temps) == 1:
                write_bytes(target, b"B" * 1000)

    monkeypatch.setattr(store, "fsync_path", second_writer_meanwhile)
    write_bytes(target, b"A" * 10)
    assert read_bytes(target) == b"A" * 10  # whole, from the last rename
    assert len(set(temps)) == 2
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == ["eigenvectors.safetensors"]

    with pytest.raises(TypeError):
        write_bytes(str(tmp_path / "art" / "x.bin"), "not bytes")  # type: ignore[arg-type]
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == ["eigenvectors.safetensors"]


def test_foreign_checkpoint_models_are_cached_per_architecture(monkeypatch):
    """Two units naming one .pt with different model_args get their own model."""
    from harness.engine.context import UnitContext, WorkerCache
    from harness.models import checkpoints
    from tasks._workload import cached_model

    built = []

    def fake_load(path, model, model_args, num_classes):
        built.append(dict(model_args))
        net = torch.nn.Linear(1, 1)
        net.args = dict(model_args)
        return net, {"num_classes": num_classes}

    monkeypatch.setattr(checkpoints, "load_checkpoint", fake_load)
    ctx = UnitContext(device=torch.device("cpu"), cache=WorkerCache(8), seed=0, unit_id="ab")
    a = cached_model(ctx, "vit_tiny", 10, 0, {"depth": 2}, checkpoint="/w.pt")
    b = cached_model(ctx, "vit_tiny", 10, 0, {"depth": 4}, checkpoint="/w.pt")
    again = cached_model(ctx, "vit_tiny", 10, 1, {"depth": 2}, checkpoint="/w.pt")
    assert (a.args, b.args) == ({"depth": 2}, {"depth": 4})
    assert again is a and built == [{"depth": 2}, {"depth": 4}]
