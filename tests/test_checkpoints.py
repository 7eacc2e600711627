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
