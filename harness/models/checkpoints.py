"""Checkpoints: safetensors weights plus a JSON sidecar that says what they are.

The sidecar (architecture, model args, class count, dataset, data fraction,
seed, training recipe incl. weight decay, epoch, metrics) is what later tasks
read to rebuild the model and to form the paper's objective (NLL + weight
decay × L2). It is written after the weights, so a checkpoint whose sidecar
exists is complete. Foreign checkpoints (`.pt`/`.pth` state dicts) load only
with `torch.load(weights_only=True)` — never a bare pickle.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pyarrow.fs as pafs
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from harness import __version__
from harness.models.registry import build_model
from harness.fileio import FileReadError, read_bytes, resolve_root, write_bytes

WEIGHTS_SUFFIX = ".safetensors"
SIDECAR_SUFFIX = ".json"
FOREIGN_SUFFIXES = (".pt", ".pth", ".bin")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message says which file and why."""


def _read(uri: str) -> bytes:
    try:
        return read_bytes(uri)
    except FileReadError as exc:
        raise CheckpointError(f"checkpoint file {exc}") from None


def sidecar_path(weights: str) -> str:
    return weights[: -len(WEIGHTS_SUFFIX)] + SIDECAR_SUFFIX


def save_checkpoint(weights: str, model: nn.Module, meta: dict[str, Any]) -> str:
    """Write `<weights>` (safetensors) and its sidecar; returns the weights path.

    `meta` must name `model` (registry name), `model_args` and `num_classes`.
    """
    if not weights.endswith(WEIGHTS_SUFFIX):
        raise CheckpointError(f"checkpoint path {weights!r} must end with {WEIGHTS_SUFFIX}")
    missing = [k for k in ("model", "model_args", "num_classes") if k not in meta]
    if missing:
        raise CheckpointError(f"checkpoint metadata lacks {missing}")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_bytes(weights, save_safetensors(state))
    sidecar = {**meta, "harness_version": __version__, "format": "safetensors"}
    write_bytes(sidecar_path(weights), json.dumps(sidecar, indent=2, sort_keys=True,
                                                   default=str).encode())
    return weights


def read_sidecar(weights: str) -> dict[str, Any]:
    """The metadata of a harness checkpoint."""
    if not weights.endswith(WEIGHTS_SUFFIX):
        raise CheckpointError(f"{weights!r}: a harness checkpoint ends with {WEIGHTS_SUFFIX}")
    try:
        return json.loads(_read(sidecar_path(weights)).decode())
    except CheckpointError:
        raise CheckpointError(f"checkpoint {weights!r} has no sidecar {sidecar_path(weights)!r}; "
                              "it was not written completely, or is not a harness checkpoint "
                              "(then name its architecture with `model`)") from None


def load_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Weights of a safetensors file or of a foreign state dict (weights_only)."""
    data = _read(path)
    if path.endswith(WEIGHTS_SUFFIX):
        return load_safetensors(data)
    if path.endswith(FOREIGN_SUFFIXES):
        try:
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - the unpickler's refusal, explained
            raise CheckpointError(f"{path!r}: torch.load(weights_only=True) refused it "
                                  f"({type(exc).__name__}: {exc}); only plain state dicts load")
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CheckpointError(f"{path!r}: expected a state dict of tensors")
        return {k.removeprefix("module."): v for k, v in obj.items()}
    raise CheckpointError(f"{path!r}: unknown checkpoint format; expected {WEIGHTS_SUFFIX} or "
                          f"{', '.join(FOREIGN_SUFFIXES)}")


def load_checkpoint(path: str, model: str = "", model_args: dict[str, Any] | None = None,
                    num_classes: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint and load its weights (strictly).

    A harness checkpoint describes itself; a foreign one needs `model`,
    `model_args` and `num_classes` from the caller.
    """
    if path.endswith(WEIGHTS_SUFFIX):
        meta = read_sidecar(path)
        if model and (model, model_args or {}) != (meta["model"], meta["model_args"]):
            raise CheckpointError(f"{path!r} holds {meta['model']} {meta['model_args']}, "
                                  f"not {model} {model_args or {}}")
    else:
        if not model or num_classes is None:
            raise CheckpointError(f"{path!r}: a foreign checkpoint needs `model` (architecture) "
                                  "and the class count")
        meta = {"model": model, "model_args": model_args or {}, "num_classes": num_classes}
    net = build_model(meta["model"], int(meta["num_classes"]), **meta["model_args"])
    try:
        net.load_state_dict(load_state_dict(path), strict=True)
    except RuntimeError as exc:  # missing / unexpected keys, shape mismatches
        first = "; ".join(str(exc).splitlines()[1:4]).strip()
        raise CheckpointError(f"{path!r} does not fit {meta['model']} {meta['model_args']}: "
                              f"{first}") from None
    return net, meta


# --------------------------------------------------------------------------- resume states


def save_state(uri: str, state: dict[str, Any]) -> None:
    """Write a training state (plain containers of tensors) atomically: a kill mid-write leaves
    the previous state in place."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes(uri, buffer.getvalue())


def load_state(uri: str) -> dict[str, Any] | None:
    """A state written by `save_state`, or None when there is none; loads with
    `torch.load(weights_only=True)` (no code runs), CheckpointError naming the fix otherwise."""
    fs, path = resolve_root(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    try:
        return torch.load(io.BytesIO(read_bytes(uri)), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable state, explained
        raise CheckpointError(f"resume state {uri!r} cannot be read ({type(exc).__name__}: {exc}); "
                              "delete it to start the unit from scratch") from None


def remove_file(uri: str) -> None:
    """Delete a file if it exists."""
    fs, path = resolve_root(uri)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_file(path)
