"""The landscape task: normalized directions, the origin, the closed-form curve, chunks, resume."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import harness
from harness import cli
from harness.models.checkpoints import load_checkpoint, load_state_dict, save_checkpoint
from harness.engine.checkpoint_refs import resolve_checkpoint_refs
from harness.engine.context import UnitContext, WorkerCache
from harness.data.datasets import load_dataset
from harness.analysis.directions import (interpolation_direction, pca_directions, perturbed_names,
                                random_direction)
from harness.engine.executor import RunConfig, run_units
from harness.analysis.landscape import Plane, evaluate_points
from harness.models.registry import build_model
from harness.analysis.objective import fixed_batches, measure, norm_terms
from harness.analysis.training import decay_names
from harness.engine.spec import SpecError, validate
from harness.engine.units import WorkUnit

from conftest import SMALL_RESNET, SMALL_VIT, comparable, write_sweep

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    """Torch on one thread, as a 1-CPU Ray worker: exact local/Ray comparisons, and no
    thread oversubscription on a shared machine (it slows these small passes tenfold)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def grid_doc(name: str, **params) -> dict:
    block = {**SMALL_RESNET, "num_samples": 48, "batch_size": 48, "a_points": 3, "b_points": 3,
             "chunk_size": 3, **params}
    return {"name": name, "tasks": {"landscape": block}}


def fresh(spec: dict, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(spec["model"], 10, **spec["model_args"]).eval()


def filter_norms(t: torch.Tensor, across: bool = False) -> torch.Tensor:
    flat = t.detach().reshape(t.shape[0], -1)
    return flat.norm(dim=0) if across else flat.norm(dim=1)


@pytest.mark.parametrize("spec", [SMALL_RESNET, SMALL_VIT], ids=["resnet", "vit"])
def test_every_filter_of_a_normalized_direction_has_its_weight_filters_norm(spec):
    model = fresh(spec)
    params = dict(model.named_parameters())
    d = random_direction(model, seed=3, axis=0, normalization="filter")
    # weights of >= 2 dims only, never position embeddings; biases and norm affine zeroed
    assert set(d) == {n for n, p in params.items() if p.dim() >= 2 and "pos_embed" not in n}
    assert len(d) > 5
    for name, t in d.items():
        torch.testing.assert_close(filter_norms(t), filter_norms(params[name]), rtol=1e-5, atol=0)
        assert not torch.equal(t, params[name])  # a random direction, not the weights
    across = random_direction(model, seed=3, axis=0, normalization="filter_across")
    for name, t in across.items():  # the original ViT code: norms over dim 0
        torch.testing.assert_close(filter_norms(t, across=True),
                                   filter_norms(params[name], across=True), rtol=1e-5, atol=0)
    layer = random_direction(model, seed=3, axis=0, normalization="layer")
    for name, t in layer.items():
        assert float(t.norm()) == pytest.approx(float(params[name].detach().norm()), rel=1e-5)
    # regenerated identically from the seed; another axis or seed is another direction
    again = random_direction(model, seed=3, axis=0, normalization="filter")
    assert all(torch.equal(d[n], again[n]) for n in d)
    other = random_direction(model, seed=3, axis=1, normalization="filter")
    assert not any(torch.equal(d[n], other[n]) for n in d)
    # biases and norm parameters on request: each entry its own filter, |d_i| = |w_i|
    with_bias = random_direction(model, seed=3, axis=0, include_bias_norm=True)
    one_dim = [n for n in with_bias if params[n].dim() == 1]
    assert one_dim and all(torch.allclose(with_bias[n].abs(), params[n].abs(), rtol=1e-5)
                           for n in one_dim)
    # the >= 2-dim directions do not change when the 1-dim ones are switched on
    assert all(torch.equal(d[n], with_bias[n]) for n in d)


def test_position_tables_and_buffers_are_never_perturbed():
    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 4)
            self.relative_position_bias_table = nn.Parameter(torch.randn(9, 2))
            self.pos_embed = nn.Parameter(torch.randn(1, 5, 4))
            self.register_buffer("attn_mask", torch.randn(4, 4))

        def forward(self, x):
            return self.proj(x)

    model = Toy()
    assert perturbed_names(model, include_bias_norm=True) == ["proj.weight", "proj.bias"]
    assert perturbed_names(model, exclude=["proj"]) == []
    plane = Plane(model, [random_direction(model, 0, 0, include_bias_norm=True)])
    mask = model.attn_mask.clone()
    table = model.relative_position_bias_table.detach().clone()
    with plane.bound(model) as set_point:
        set_point((0.7,))
        assert torch.equal(model.attn_mask, mask)
        assert torch.equal(model.relative_position_bias_table, table)
        assert not torch.equal(model.proj.weight, plane.w0[0])


def test_origin_equals_the_evaluate_task_and_objective_measure(tmp_path):
    common = {**SMALL_RESNET, "dataset": "digits", "seed": 0}
    doc = {"name": "origin", "tasks": {
        # clean test split, every sample: the evaluate task's data, in another order
        "landscape": [{**common, "a_range": [-0.5, 0.5], "a_points": 3, "b_range": [-0.5, 0.5],
                       "b_points": 3, "chunk_size": 9, "split": "test", "augment": "none",
                       "num_samples": 10_000, "batch_size": 128},
                      # the objective's default data: augmented training batches
                      {**common, "dims": 1, "a_range": [0.0, 0.0], "a_points": 1,
                       "num_samples": 64, "batch_size": 32}],
        "evaluate": {**common, "split": "test"}}}
    summary = run_units(validate(doc).units(), str(tmp_path), RunConfig(kind="local", device="cpu"))
    assert (summary.done, summary.failed) == (3, 0)
    ls = harness.load(str(tmp_path), task="landscape")
    ev = harness.load(str(tmp_path), task="evaluate", quantity="metrics").iloc[0]
    clean = ls[(ls["augment"] == "none") & (ls["a"] == 0.0) & (ls["b"] == 0.0)].iloc[0]
    assert clean["n_samples"] == ev["n_samples"] == 450
    assert clean["nll"] == pytest.approx(ev["nll"], rel=1e-5)
    assert clean["acc"] == ev["acc"] and clean["ece"] == pytest.approx(ev["ece"], abs=1e-6)
    assert ls.loc[ls["augment"] == "none", "nll"].max() > clean["nll"]  # the curve moves
    # the same numbers computed independently with harness.analysis.objective, bit for bit
    model = fresh(SMALL_RESNET)
    augmented = ls[ls["augment"] == "paper"].iloc[0]
    batches = fixed_batches(load_dataset("digits", "train"), 64, 32, "paper", {}, seed=0)
    expected = measure(model, batches, CPU)
    terms = norm_terms(model, decay_names(model, "timm"))  # a fresh model: timm's decay set
    assert augmented["penalty_set_used"] == "timm"
    assert augmented["penalty_numel"] == sum(p.numel() for n, p in model.named_parameters()
                                             if n in decay_names(model, "timm"))
    assert (augmented["nll"], augmented["acc"]) == (expected["nll"], expected["acc"])
    assert (augmented["l1"], augmented["l2"], augmented["half_sq"]) == \
        (terms["l1"], terms["l2"], terms["half_sq"])
    assert augmented["weight_decay_used"] == 0.05  # a fresh model: the paper's decay
    assert augmented["objective"] == pytest.approx(expected["nll"] + 0.05 * terms["l2"], rel=1e-12)
    assert augmented["distance"] == 0.0 and bool(augmented["finite"])


def test_curve_matches_the_closed_form_quadratic_of_a_linear_softmax_model():
    torch.manual_seed(0)
    n, dim, classes, wd = 12, 5, 3, 0.1
    x = torch.randn(n, dim, dtype=torch.float64)
    y = torch.arange(n) % classes
    soft = torch.full((n, classes), 0.05, dtype=torch.float64)
    soft[torch.arange(n), y] = 0.9
    model = nn.Linear(dim, classes).double().eval()
    w0, bias = model.weight.detach().clone(), model.bias.detach().clone()

    def objective(w: torch.Tensor) -> torch.Tensor:  # soft-target NLL + wd · ½‖params‖²
        logp = torch.log_softmax(x @ w.reshape(classes, dim).T + bias, dim=1)
        return -(soft * logp).sum(1).mean() + wd * 0.5 * (w.pow(2).sum() + bias.pow(2).sum())

    flat = w0.reshape(-1)
    hess = torch.autograd.functional.hessian(objective, flat)
    grad = torch.autograd.functional.jacobian(objective, flat)
    direction = random_direction(model, seed=1, axis=0)
    assert list(direction) == ["weight"]  # the bias stays put by default
    d = direction["weight"].reshape(-1)
    curvature, slope = float(d @ hess @ d), float(grad @ d)
    assert curvature > 0.1  # a convex model: a clearly positive curvature to compare against

    coords = [(float(a),) for a in np.linspace(-0.1, 0.1, 9)]
    rows = evaluate_points(model, Plane(model, [direction]), coords, [(x, soft, y)], CPU,
                           weight_decay=wd, penalty="half_sq")
    f = np.array([r["objective"] for r in rows])
    a = np.array([c[0] for c in coords])
    f0 = f[len(a) // 2]
    assert f0 == pytest.approx(float(objective(flat)), rel=1e-6)
    model_curve = slope * a + 0.5 * curvature * a ** 2
    assert np.abs((f - f0) - model_curve).max() <= 0.01 * np.abs(model_curve).max()
    # central differences of the measured curve: the directional curvature and slope
    h = a[-1]
    assert (f[-1] - 2 * f0 + f[0]) / h ** 2 == pytest.approx(curvature, rel=0.01)
    assert (f[-1] - f[0]) / (2 * h) == pytest.approx(slope, rel=0.01, abs=1e-4)


def _unit(doc: dict, index: int = 0) -> WorkUnit:
    return validate(doc).units()[index]


def test_weights_are_bit_identical_after_units_even_failing_ones(monkeypatch):
    ctx = UnitContext(device=CPU, cache=WorkerCache(), seed=0, unit_id="0" * 20)
    from harness.engine.registry import get_task
    from tasks._workload import cached_model

    task = get_task("landscape")
    model = cached_model(ctx, "resnet18", 10, 0, SMALL_RESNET["model_args"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # BN statistics re-estimated at every point, and a point whose weights overflow
    doc = grid_doc("bits", bn_recompute=[True, False], a_range=[[-1, 1], [1e30, 1e30]])
    units = validate(doc).units()
    rows = [{**r, "bn": u.params["bn_recompute"]} for u in units for r in task.run(u, ctx)]
    assert len(rows) == 4 * 9
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in before.items())
    df = pd.DataFrame(rows)
    sane = df[df["a"].abs() <= 1]
    assert sane["finite"].all() and sane["nll"].between(1.0, 5.0).all()
    huge = df[(df["a"] == 1e30) & ~df["bn"]]
    assert len(huge) == 9 and not huge["finite"].any()  # recorded, not raised
    assert not np.isfinite(huge["objective"]).any() and huge["ece"].isna().all()
    # an error in the middle of a chunk still restores w0
    import harness.analysis.landscape as landscape

    calls = []
    real = landscape.measure

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(landscape, "measure", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        task.run(units[0], ctx)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in before.items())


def test_bn_recompute_measures_other_statistics():
    ctx = UnitContext(device=CPU, cache=WorkerCache(), seed=0, unit_id="0" * 20)
    from harness.engine.registry import get_task

    task = get_task("landscape")
    plain, recomputed = (task.run(_unit(grid_doc("bn", bn_recompute=flag)), ctx)
                         for flag in (False, True))
    assert [r["a"] for r in plain] == [r["a"] for r in recomputed]
    assert all(p["nll"] != r["nll"] for p, r in zip(plain, recomputed))


def test_ray_with_two_workers_equals_local_exactly(tmp_path, ray_session):
    doc = grid_doc("ray2d", **SMALL_VIT, a_points=4, b_points=4, chunk_size=4)
    units = validate(doc).units()
    assert len(units) == 4
    assert torch.get_num_threads() == 1  # what a 1-CPU Ray worker runs with
    local = run_units(units, str(tmp_path / "local"), RunConfig(kind="local", device="cpu"))
    remote = run_units(units, str(tmp_path / "ray"), RunConfig(kind="ray", workers=2))
    assert (local.done, remote.done, remote.failed) == (4, 4, 0)
    a = comparable(harness.load(str(tmp_path / "local"), task="landscape"), "point")
    b = comparable(harness.load(str(tmp_path / "ray"), task="landscape"), "point")
    assert len(a) == 16 and sorted(a["point"]) == list(range(16))
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_an_interrupted_grid_resumes_to_the_uninterrupted_table(tmp_path, capsys):
    doc = grid_doc("resume", a_points=5, b_points=3, chunk_size=4)
    units = validate(doc).units()
    assert [u.params["chunk"] for u in units] == [0, 1, 2, 3]  # 15 points in chunks of 4
    run_units(units[:2], str(tmp_path / "res"), RunConfig(kind="local", device="cpu"))
    path = write_sweep(tmp_path / "resume.yaml", doc)
    assert cli.main(["run", str(path), "--executor", "local", "--results",
                     str(tmp_path / "res")]) == 0
    err = capsys.readouterr().err
    assert "2 done, 2 to run" in err and "ran 2 of 2 units" in err
    run_units(units, str(tmp_path / "ref"), RunConfig(kind="local", device="cpu"))
    resumed = comparable(harness.load(str(tmp_path / "res"), task="landscape"), "point")
    reference = comparable(harness.load(str(tmp_path / "ref"), task="landscape"), "point")
    assert sorted(resumed["point"]) == list(range(15))
    pd.testing.assert_frame_equal(resumed, reference, check_exact=True)


def test_grid_expansion_and_spec_errors():
    units = validate(grid_doc("g", a_points=21, b_points=21, chunk_size=21)).units()
    assert len(units) == 21 and len({u.unit_id for u in units}) == 21
    one = validate(grid_doc("g1", dims=1, a_points=7, chunk_size=3)).units()
    assert [u.params["chunk"] for u in one] == [0, 1, 2]
    with pytest.raises(SpecError, match="normalization: unknown value 'sideways'; allowed: "
                       "filter, filter_across, layer, none"):
        validate(grid_doc("bad", normalization="sideways"))
    with pytest.raises(SpecError) as err:
        validate(grid_doc("bad", a_range=[1, -1], chunk=5, directions="interpolate"))
    text = str(err.value)
    assert "a_range: lo 1 > hi -1" in text and "chunk: 5 out of range" in text
    assert "`checkpoint_to` (a = 1)" in text


def _trajectory(tmp_path, spec: dict) -> tuple[nn.Module, list[str]]:
    """Snapshots w0 + t·u + t²·v (a curved path inside a plane) saved as harness checkpoints."""
    model = fresh(spec)
    gen = torch.Generator().manual_seed(5)
    u = {n: torch.randn(p.shape, generator=gen) * 0.05 for n, p in model.named_parameters()}
    v = {n: torch.randn(p.shape, generator=gen) * 0.05 for n, p in model.named_parameters()}
    paths, w0 = [], {n: p.detach().clone() for n, p in model.named_parameters()}
    meta = {**spec, "num_classes": 10, "recipe": {"weight_decay": 0.2}}
    for epoch, t in enumerate([-1.0, -0.5, 0.25, 1.0, 0.0], start=1):
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(w0[n] + t * u[n] + t * t * v[n])
        paths.append(save_checkpoint(str(tmp_path / f"epoch{epoch:04d}.safetensors"), model,
                                     {**meta, "epoch": epoch}))
    return model, paths  # the model is left at t = 0, the last snapshot


def test_pca_plane_holds_a_planar_trajectory_and_interpolation_reaches_its_end(tmp_path):
    model, paths = _trajectory(tmp_path, SMALL_VIT)
    found = pca_directions(model, [(p, load_state_dict(p)) for p in paths])
    assert sum(found.info["var_ratio"]) == pytest.approx(1.0, abs=1e-6)
    traj = found.info["trajectory"]
    assert max(t["residual"] for t in traj) < 1e-4  # every snapshot lies in the plane
    assert max(max(abs(c) for c in t["coords"]) for t in traj) == pytest.approx(1.0)
    assert traj[-1]["coords"] == pytest.approx([0.0, 0.0], abs=1e-6)  # the origin itself
    # through the task: chunk 0 adds a row per snapshot, found beside `checkpoint`
    doc = {"name": "traj", "tasks": {"landscape": [
        {"checkpoint": paths[-1], "directions": "pca", "a_points": 3, "b_points": 3,
         "chunk_size": 9, "num_samples": 32, "batch_size": 32},
        {"checkpoint": paths[0], "checkpoint_to": paths[3], "directions": "interpolate",
         "dims": 1, "a_range": [0.0, 1.0], "a_points": 2, "chunk_size": 2, "augment": "none",
         "num_samples": 32, "batch_size": 32}]}}
    units = validate(resolve_checkpoint_refs(doc, str(tmp_path))).units()
    summary = run_units(units, str(tmp_path / "res"), RunConfig(kind="local", device="cpu"))
    assert (summary.done, summary.failed) == (2, 0), summary.errors
    df = harness.load(str(tmp_path / "res"), task="landscape")
    pca = df[df["directions"] == "pca"]
    rows = pca[pca["kind"] == "trajectory"].sort_values("point")
    assert list(rows["snapshot"]) == paths and len(pca[pca["kind"] == "grid"]) == 9
    assert pca["weight_decay_used"].eq(0.2).all()  # read from the checkpoint's recipe
    # a checkpoint whose recipe names no decay rule was trained by the old one: ndim >= 2
    trained, _ = load_checkpoint(paths[-1])
    decayed = decay_names(trained, "ndim2")
    assert "pos_embed" in decayed and pca["penalty_set_used"].eq("ndim2").all()
    assert pca["penalty_numel"].eq(sum(p.numel() for n, p in trained.named_parameters()
                                       if n in decayed)).all()
    origin = pca[(pca["kind"] == "grid") & (pca["a"] == 0) & (pca["b"] == 0)].iloc[0]
    assert origin["l2"] == pytest.approx(norm_terms(trained, decayed)["l2"], rel=1e-12)
    assert rows["residual"].max() < 1e-4
    assert pca["var_ratio_1"].iloc[0] >= pca["var_ratio_2"].iloc[0] > 0
    # interpolation: a = 1 is the end checkpoint (to float rounding of w0 + (w1 - w0))
    line = df[df["directions"] == "interpolate"].sort_values("a")
    start, _ = load_checkpoint(paths[0])
    end, _ = load_checkpoint(paths[3])
    batches = fixed_batches(load_dataset("digits", "train"), 32, 32, "none", {}, seed=0)
    assert line["nll"].iloc[1] == pytest.approx(measure(end.eval(), batches, CPU)["nll"],
                                                rel=1e-5)
    direction = interpolation_direction(start, dict(end.named_parameters()))
    assert "pos_embed" in direction  # the straight line moves everything trainable
    assert line["d1_norm"].iloc[0] == pytest.approx(
        math.sqrt(sum(float(t.double().pow(2).sum()) for t in direction.values())), rel=1e-5)
