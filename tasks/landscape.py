"""landscape: the loss surface around a model on a 1D or 2D grid (Park & Kim Fig. 1a).

Rows: one per grid point — its coordinates, the NLL / accuracy / ECE of the
fixed batches of `harness.analysis.objective` (augmented training data by default,
as the paper measures), the norm terms l1, l2 (Σ per-tensor ‖w‖₂, the
original's) and half_sq over the penalty set (`penalty_set`: by default the
tensors the checkpoint's training decayed; `all` gives the original's sums over
every tensor), the weight decay used and the objective
NLL + weight_decay · penalty. The terms stay separate columns so either
objective can be formed afterwards.

Directions (`harness.analysis.directions`): `random` (seeded Gaussians,
`normalization` filter / filter_across / layer / none), `interpolate`
(axis a runs from `checkpoint` at 0 to `checkpoint_to` at 1; a second axis,
if any, is random) or `pca` (the top principal directions of a trajectory of
snapshots around `checkpoint`; chunk 0 adds one `kind: trajectory` row per
snapshot with its projected coordinates).

A grid of `a_points` × `b_points` points is split into units of `chunk_size`
points (`chunk: -1` expands to all of them), so a landscape spreads over every
worker and an interrupted one resumes chunk by chunk. Each worker rebuilds the
directions from the seed (nothing is shipped) and caches them per
(checkpoint, directions).
"""

from __future__ import annotations

import math
import posixpath
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import torch
from torch import nn

from harness.data.augment import validate_augment
from harness.models.checkpoints import WEIGHTS_SUFFIX, load_state_dict, read_sidecar
from harness.engine.context import UnitContext
from harness.analysis.directions import (NORMALIZATIONS, interpolation_direction, pca_directions,
                                random_direction)
from harness.analysis.landscape import Plane, axis_values, evaluate_points, grid_points
from tasks._workload import (OBJECTIVE_PARAMS, cached_batches, unit_penalty_set,
                             unit_weight_decay)
from harness.engine.params import Param
from harness.engine.registry import Task, expand_axis, register_task
from harness.fileio import resolve_root
from harness.engine.units import WorkUnit
from tasks._workload import (MODEL_PARAMS, check_model_and_data,
                              unit_model_and_data)

DIRECTIONS = ("random", "interpolate", "pca")
ALL_CHUNKS = -1

PARAMS = MODEL_PARAMS + (
    Param("checkpoint", str, "", "weights at the grid's origin: a .safetensors harness "
          "checkpoint, a .pt/.pth state dict (then `model` is required), or sweep:<name>",
          path=True),
    Param("directions", str, "random", "random: seeded Gaussians; interpolate: towards "
          "`checkpoint_to`; pca: principal directions of `trajectory`", choices=DIRECTIONS),
    Param("normalization", str, "filter", "random directions: filter (Li et al.), "
          "filter_across (the original ViT code: norms over dim 0), layer, none",
          choices=NORMALIZATIONS),
    Param("perturb_bias_norm", bool, False, "also move tensors of < 2 dims (biases, norm "
          "affine parameters); position tables and buffers never move"),
    Param("exclude", list, [], "extra parameter-name fragments that never move"),
    Param("direction_seed", int, 0, "seed of the random directions", min=0),
    Param("checkpoint_to", str, "", "interpolate: the checkpoint at a = 1", path=True),
    Param("trajectory", list, [], "pca: snapshot checkpoints; []: every .safetensors beside "
          "`checkpoint` (a train unit's snapshots), in epoch order", path=True),
    Param("dims", int, 2, "1D curve or 2D surface", choices=(1, 2)),
    Param("a_range", list, [-1.0, 1.0], "[lo, hi] of the first axis"),
    Param("a_points", int, 21, "points on the first axis (lo and hi included)", min=1),
    Param("b_range", list, [-1.0, 1.0], "[lo, hi] of the second axis (dims 2)"),
    Param("b_points", int, 21, "points on the second axis (dims 2)", min=1),
    Param("chunk_size", int, 21, "grid points per unit", min=1),
    Param("chunk", int, ALL_CHUNKS, "which chunk of the grid a unit measures; -1: one unit "
          "per chunk", min=-1),
    Param("bn_recompute", bool, False, "re-estimate BatchNorm statistics at every point on "
          "the same batches (default: the stored running statistics)"),
    Param("ece_bins", int, 10, "equal-width confidence bins for ECE", min=1),
) + OBJECTIVE_PARAMS

OUTPUT = pa.schema([
    pa.field("kind", pa.string()),  # grid | trajectory
    pa.field("point", pa.int64()),  # grid: row-major index (b outer); trajectory: snapshot index
    pa.field("ia", pa.int64()),
    pa.field("ib", pa.int64()),
    pa.field("a", pa.float64()),
    pa.field("b", pa.float64()),
    pa.field("distance", pa.float64()),  # ‖a·d1 + b·d2‖
    pa.field("nll", pa.float64()),
    pa.field("acc", pa.float64()),
    pa.field("ece", pa.float64()),
    pa.field("l1", pa.float64()),
    pa.field("l2", pa.float64()),
    pa.field("half_sq", pa.float64()),
    pa.field("weight_decay_used", pa.float64()),
    pa.field("objective", pa.float64()),  # nll + weight_decay_used * <penalty column>
    pa.field("penalty_set_used", pa.string()),  # the rule that chose the penalized tensors
    pa.field("penalty_numel", pa.int64()),  # scalars the penalty (and the norm terms) cover
    pa.field("finite", pa.bool_()),
    pa.field("n_samples", pa.int64()),
    pa.field("d1_norm", pa.float64()),
    pa.field("d2_norm", pa.float64()),
    pa.field("var_ratio_1", pa.float64()),  # pca: explained variance ratios
    pa.field("var_ratio_2", pa.float64()),
    pa.field("snapshot", pa.string()),  # trajectory rows: the snapshot checkpoint
    pa.field("residual", pa.float64()),  # trajectory rows: share of the step outside the plane
])


def grid(params: dict[str, Any]) -> list[tuple[int, int, int, tuple[float, ...]]]:
    """Every point of the unit's grid: (point, ia, ib, coords)."""
    a = axis_values(params["a_range"], params["a_points"])
    b = axis_values(params["b_range"], params["b_points"]) if params["dims"] == 2 else None
    return grid_points(a, b)


def num_chunks(params: dict[str, Any]) -> int:
    """Units a whole grid expands into."""
    points = params["a_points"] * (params["b_points"] if params["dims"] == 2 else 1)
    return math.ceil(points / params["chunk_size"])


def trajectory_paths(params: dict[str, Any]) -> list[str]:
    """PCA snapshots: `trajectory`, else every checkpoint beside `checkpoint`, by epoch."""
    if params["trajectory"]:
        return list(params["trajectory"])
    checkpoint = params["checkpoint"]
    fs, path = resolve_root(checkpoint)
    prefix = checkpoint.split("://")[0] + "://" if "://" in checkpoint else ""
    infos = fs.get_file_info(pafs.FileSelector(posixpath.dirname(path)))
    found = [prefix + i.path for i in infos
             if i.type == pafs.FileType.File and i.path.endswith(WEIGHTS_SUFFIX)
             and not posixpath.basename(i.path).startswith(".")]
    return sorted(found, key=lambda p: (read_sidecar(p).get("epoch", 0), p))


def build_plane(params: dict[str, Any], model: nn.Module) -> Plane:
    """w0 (the model's weights) and the unit's directions."""
    p = params

    def rand(axis: int) -> dict[str, torch.Tensor]:
        return random_direction(model, p["direction_seed"], axis, p["normalization"],
                                p["perturb_bias_norm"], p["exclude"])

    if p["directions"] == "random":
        return Plane(model, [rand(k) for k in range(p["dims"])])
    if p["directions"] == "interpolate":
        axes = [interpolation_direction(model, load_state_dict(p["checkpoint_to"]))]
        return Plane(model, axes + ([rand(1)] if p["dims"] == 2 else []))
    snapshots = ((path, load_state_dict(path)) for path in trajectory_paths(p))
    found = pca_directions(model, snapshots, p["dims"], p["perturb_bias_norm"], p["exclude"])
    return Plane(model, found.axes, found.info)


def _plane_key(p: dict[str, Any], num_classes: int) -> tuple:
    weights = (p["checkpoint"],) if p["checkpoint"] else (p["model"], p["model_args"], p["seed"],
                                                          num_classes)
    return ("landscape-plane", weights, p["directions"], p["normalization"],
            p["perturb_bias_norm"], p["exclude"], p["direction_seed"], p["dims"],
            p["checkpoint_to"], p["trajectory"])


def run(unit: WorkUnit, ctx: UnitContext) -> list[dict[str, Any]]:
    """The rows of one chunk (plus, in chunk 0 of a PCA plane, the trajectory's)."""
    p = unit.params
    if p["chunk"] < 0:
        raise ValueError("chunk -1 is expanded into one unit per chunk; a unit needs a chunk index")
    model, data = unit_model_and_data(ctx, p)
    batches = cached_batches(ctx, data, p)
    plane = ctx.cache.get(_plane_key(p, data.num_classes), lambda: build_plane(p, model))
    if not plane.matches(model):  # the model was evicted and rebuilt with other weights
        plane = build_plane(p, model)
    weight_decay = unit_weight_decay(ctx, p)
    covered = unit_penalty_set(ctx, p, model)
    points = grid(p)[p["chunk"] * p["chunk_size"]:(p["chunk"] + 1) * p["chunk_size"]]
    trajectory = plane.info.get("trajectory", []) if p["chunk"] == 0 else []
    coords = [c for *_, c in points] + [tuple(t["coords"]) for t in trajectory]
    metrics = evaluate_points(model, plane, coords, batches, ctx.device, weight_decay,
                              p["penalty"], p["ece_bins"], p["bn_recompute"], covered.names)
    norms = plane.info["norms"]
    var_ratio = plane.info.get("var_ratio", [None, None]) + [None]
    common = {"weight_decay_used": weight_decay, "penalty_set_used": covered.rule,
              "penalty_numel": covered.numel(model), "d1_norm": norms[0],
              "d2_norm": norms[1] if len(norms) > 1 else None,
              "var_ratio_1": var_ratio[0], "var_ratio_2": var_ratio[1]}
    two = p["dims"] == 2
    rows = []
    for (point, ia, ib, c), m in zip(points, metrics):
        rows.append({**m, **common, "kind": "grid", "point": point, "ia": ia,
                     "ib": ib if two else None, "a": c[0], "b": c[1] if two else None,
                     "snapshot": None, "residual": None})
    for t, (snap, m) in enumerate(zip(trajectory, metrics[len(points):])):
        c = snap["coords"]
        rows.append({**m, **common, "kind": "trajectory", "point": t, "ia": None, "ib": None,
                     "a": c[0], "b": c[1] if two else None,
                     "snapshot": ctx.stored_path(snap["snapshot"]), "residual": snap["residual"]})
    return rows


def _range_errors(name: str, value: list[Any]) -> list[str]:
    ok = (len(value) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                  and math.isfinite(v) for v in value))
    if not ok:
        return [f"{name}: expected [lo, hi] (two finite numbers), got {value!r}"]
    if value[0] > value[1]:
        return [f"{name}: lo {value[0]} > hi {value[1]}"]
    return []


def check(p: dict[str, Any]) -> list[str]:
    """Cross-field errors of one combination, reported before anything runs."""
    errors = check_model_and_data(p)
    errors += [f"augment_args: {e}" for e in validate_augment({"preset": p["augment"],
                                                               **p["augment_args"]})]
    errors += _range_errors("a_range", p["a_range"])
    if p["dims"] == 2:
        errors += _range_errors("b_range", p["b_range"])
    if not all(isinstance(k, str) and k for k in p["exclude"]):
        errors.append(f"exclude: expected a list of non-empty name fragments, got {p['exclude']!r}")
    if p["chunk"] != ALL_CHUNKS and p["chunk"] >= num_chunks(p):
        errors.append(f"chunk: {p['chunk']} out of range; the grid has {num_chunks(p)} chunks "
                      f"of {p['chunk_size']} points (0 … {num_chunks(p) - 1}, or -1 for all)")
    if p["directions"] == "interpolate" and not (p["checkpoint"] and p["checkpoint_to"]):
        errors.append("directions interpolate: name both `checkpoint` (a = 0) and "
                      "`checkpoint_to` (a = 1)")
    if p["directions"] == "pca":
        if not all(isinstance(t, str) and t for t in p["trajectory"]):
            errors.append(f"trajectory: expected a list of checkpoint paths, got "
                          f"{p['trajectory']!r}")
        elif not p["trajectory"] and not p["checkpoint"].endswith(WEIGHTS_SUFFIX) and \
                not p["checkpoint"].startswith("sweep:"):
            errors.append("directions pca: name the snapshots in `trajectory`, or a harness "
                          f"`checkpoint` ({WEIGHTS_SUFFIX}) whose folder holds them "
                          "(train with `snapshots: true`)")
        elif p["trajectory"] and len(p["trajectory"]) <= p["dims"]:
            errors.append(f"trajectory: PCA of {p['dims']} directions needs at least "
                          f"{p['dims'] + 1} snapshots")
    return errors


def expand(combo: dict[str, Any]) -> list[dict[str, Any]]:
    """chunk -1 -> one unit per chunk of `chunk_size` points; an explicit chunk -> that unit."""
    return expand_axis(combo, "chunk", ALL_CHUNKS, lambda: range(num_chunks(combo)))


register_task(Task(
    name="landscape",
    description="loss landscape: NLL / acc / norm terms / objective on a 1D or 2D grid of "
                "w0 + a·d1 + b·d2, chunked into units",
    params=PARAMS,
    output_schema=OUTPUT,
    run=run,
    expand=expand,
    check=check,
))
