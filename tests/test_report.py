"""The aggregation layer: tables against hand computations, plots and the HTML report from a
tiny real sweep, and the page in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from conftest import SMALL_RESNET, SMALL_VIT

import harness
from harness.engine.checkpoint_refs import resolve_checkpoint_refs
from harness.engine.executor import RunConfig, run_units
from harness.report import (
    data_size_ablation,
    frequency_noise,
    hessian_stats,
    landscape_summary,
    mce,
    model_comparison,
    plots,
    robustness,
    robustness_by_severity,
    style,
    train_final,
    with_training,
    write_report,
)
from harness.report.html import to_markdown
from harness.report.tables import NoData, display
from harness.engine.spec import validate
from harness.engine.store import Store

ARGS_R = json.dumps(SMALL_RESNET["model_args"], sort_keys=True, separators=(",", ":"))


# --------------------------------------------------------------------------- hand-made results


def _rows(n: int, **columns) -> pd.DataFrame:
    base = {"sweep": "s", "task": "t", "unit_id": [f"u{i}" for i in range(n)],
            "dataset": "digits", "data_fraction": 1.0, "seed": 0}
    return pd.DataFrame({**base, **columns})


def test_with_training_joins_checkpoints_to_their_training_runs():
    train = _rows(3, task="train", model="vit_ti", data_fraction=[0.25, 0.25, 1.0],
                  seed=[3, 3, 4], unit_id=["ta", "ta", "tb"], epoch=[1, 5, 5],
                  checkpoint=["/r/a/epoch0001.safetensors", "/r/a/final.safetensors",
                              "/r/b/final.safetensors"])
    ev = _rows(4, model="vit_ti", checkpoint=["/r/a/final.safetensors", "",
                                              "/w/foreign.pt", "/r/b/final.safetensors"],
               data_fraction=1.0)
    out = with_training(ev, train)
    assert out["train_fraction"].tolist()[::3] == [0.25, 1.0]
    assert out["epoch"].tolist()[::3] == [5.0, 5.0]
    assert out["train_seed"].tolist()[::3] == [3.0, 4.0]
    assert out["weights"].tolist() == ["trained", "fresh", "foreign.pt", "trained"]
    assert out.iloc[1:3]["train_fraction"].isna().all()
    assert out["data_fraction"].eq(1.0).all()  # the evaluation's own fraction is kept
    # the train frame itself: its fraction and epoch are the run's
    final = train_final(train.assign(test_acc=[0.5, 0.7, 0.9]))
    assert final.sort_values("unit_id")[["train_fraction", "epoch", "acc"]].values.tolist() == [
        [0.25, 5, 0.7], [1.0, 5, 0.9]]


def _evaluate(with_quantity: bool) -> pd.DataFrame:
    metrics = _rows(4, model=["resnet18", "resnet18", "vit_ti", "vit_ti"], seed=[0, 1, 0, 1],
                    acc=[0.8, 0.9, 0.6, 0.7], nll=[0.5, 0.7, 1.0, 1.2],
                    ece=[0.02, 0.04, 0.10, 0.12], num_params=[100, 100, 50, 50],
                    checkpoint="")
    if not with_quantity:
        return metrics
    metrics["quantity"] = "metrics"
    metrics["acc_90"] = [0.95, 0.97, 0.9, 0.8]
    reliability = _rows(2, model="resnet18", quantity="reliability", acc=np.nan, bin=[0, 1],
                        bin_count=[3, 7], checkpoint="")
    return pd.concat([metrics, reliability], ignore_index=True)


@pytest.mark.parametrize("with_quantity", [True, False])
def test_model_comparison_is_the_mean_over_seeds(with_quantity):
    table = model_comparison(with_training(_evaluate(with_quantity), None))
    assert table["model"].tolist() == ["resnet18", "vit_ti"]
    assert table["acc"].tolist() == pytest.approx([0.85, 0.65])
    assert table["nll"].tolist() == pytest.approx([0.6, 1.1])
    assert table["ece"].tolist() == pytest.approx([0.03, 0.11])
    assert table["num_params"].tolist() == [100, 50] and table["n"].tolist() == [2, 2]
    assert table["acc_std"].tolist() == pytest.approx([0.1 / np.sqrt(2)] * 2)  # |0.8 - 0.9| / √2
    assert ("acc_90" in table) == with_quantity  # only metrics that were measured
    if with_quantity:
        assert table["acc_90"].tolist() == pytest.approx([0.96, 0.85])


def _corruption() -> pd.DataFrame:
    # resnet: gauss s1 .8 s2 .6, blur s1 .9 s2 .7, clean .95; vit: gauss .6 .4, blur .8 .5, clean .9
    rows = []
    for model, clean, accs in (("resnet18", 0.95, [0.8, 0.6, 0.9, 0.7]),
                               ("vit_ti", 0.90, [0.6, 0.4, 0.8, 0.5])):
        for (corr, sev), acc in zip([("gauss", 1), ("gauss", 2), ("blur", 1), ("blur", 2)], accs):
            for seed, jitter in ((0, -0.01), (1, 0.01)):  # two seeds average to `acc`
                rows.append({"model": model, "seed": seed, "corruption": corr, "severity": sev,
                             "acc": acc + jitter, "clean_acc": clean, "source": "generated"})
    return _rows(len(rows)).drop(columns="seed").join(pd.DataFrame(rows))


def test_robustness_is_the_mean_accuracy_over_corruption_severity_sets():
    table = robustness(_corruption()).set_index("model")
    assert table.loc["resnet18", "robustness"] == pytest.approx((0.8 + 0.6 + 0.9 + 0.7) / 4)
    assert table.loc["vit_ti", "robustness"] == pytest.approx((0.6 + 0.4 + 0.8 + 0.5) / 4)
    assert table.loc["vit_ti", "gauss"] == pytest.approx(0.5)
    assert table.loc["resnet18", "blur"] == pytest.approx(0.8)
    assert table["n_sets"].tolist() == [4, 4] and table["clean_acc"].tolist() == [0.95, 0.9]
    sev = robustness_by_severity(_corruption())
    vit = sev[sev.model == "vit_ti"].set_index("severity")["acc"]
    assert vit.tolist() == pytest.approx([(0.6 + 0.8) / 2, (0.4 + 0.5) / 2])


def _seeded_corruption() -> pd.DataFrame:
    """vit_ti with three seeds, two sets each (seed 0 lists its s1 set twice: a re-run), and
    resnet18 with one seed. Per-seed robustness of vit_ti: 0.7, 0.8, 0.95."""
    accs = {0: [0.6, 0.6, 0.8], 1: [0.7, 0.9], 2: [0.9, 1.0]}
    rows = []
    for seed, values in accs.items():
        for sev, acc in zip([1, 1, 2] if len(values) == 3 else [1, 2], values):
            rows.append({"model": "vit_ti", "seed": seed, "corruption": "gauss", "severity": sev,
                         "acc": acc, "clean_acc": 0.9 + 0.02 * seed})
    rows += [{"model": "resnet18", "seed": 0, "corruption": "gauss", "severity": s, "acc": a,
              "clean_acc": 0.95} for s, a in ((1, 0.8), (2, 0.6))]
    return _rows(len(rows)).drop(columns="seed").join(pd.DataFrame(rows))


def _sample_std(values: list[float]) -> float:
    m = sum(values) / len(values)
    return (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def test_robustness_spread_over_seeds_against_a_hand_computation(tmp_path):
    table = robustness(_seeded_corruption()).set_index("model")
    vit = table.loc["vit_ti"]
    assert vit["robustness"] == pytest.approx((0.7 + 0.8 + 0.95) / 3)
    assert vit["robustness_std"] == pytest.approx(_sample_std([0.7, 0.8, 0.95]))
    assert vit["clean_acc_std"] == pytest.approx(_sample_std([0.9, 0.92, 0.94]))
    assert (vit["n"], vit["n_sets"]) == (3, 2)
    assert table.loc["resnet18", "n"] == 1 and np.isnan(table.loc["resnet18", "robustness_std"])
    shown = display(table.reset_index()).set_index("model")
    assert shown.loc["vit_ti", "robustness"] == f"{0.8166667:.4g} ± {_sample_std([0.7, 0.8, 0.95]):.2g}"
    assert shown.loc["resnet18", "robustness"] == "0.7" and "robustness_std" not in shown
    sev = robustness_by_severity(_seeded_corruption()).set_index(["model", "severity"])
    assert sev.loc[("vit_ti", 1), "acc"] == pytest.approx((0.6 + 0.7 + 0.9) / 3)
    assert sev.loc[("vit_ti", 1), "acc_std"] == pytest.approx(_sample_std([0.6, 0.7, 0.9]))
    assert sev.loc[("vit_ti", 2), "n"] == 3
    # the plot: error bars of ± std at clean (severity 0) and each severity for vit_ti only
    fig = plots.plot_robustness(_seeded_corruption())
    ax = fig.axes[0]
    assert len(ax.containers) == 1 and ax.containers[0].get_label() == "vit_ti"
    half = [abs(b[1][1] - b[0][1]) / 2 for b in ax.containers[0].lines[2][0].get_segments()]
    assert half == pytest.approx([_sample_std([0.9, 0.92, 0.94]), _sample_std([0.6, 0.7, 0.9]),
                                  _sample_std([0.8, 0.9, 1.0])])
    _assert_drawn(fig, tmp_path, "robustness_seeds")


def test_mce_against_the_reference_model():
    table = mce(_corruption()).set_index("model")  # default reference: the resnet
    assert (table["reference"] == "resnet18").all()
    # vit: gauss (0.4 + 0.6) / (0.2 + 0.4) = 5/3, blur (0.2 + 0.5) / (0.1 + 0.3) = 7/4
    assert table.loc["vit_ti", "ce_gauss"] == pytest.approx(5 / 3)
    assert table.loc["vit_ti", "ce_blur"] == pytest.approx(7 / 4)
    assert table.loc["vit_ti", "mce"] == pytest.approx((5 / 3 + 7 / 4) / 2)
    assert table.loc["resnet18", "mce"] == pytest.approx(1.0)
    # spread: each seed's mCE against the reference's seed-averaged errors (jitter ∓0.01)
    # vit seed 0: gauss 1.02/0.6, blur 0.72/0.4; seed 1: 0.98/0.6, 0.68/0.4
    vit_runs = [(1.02 / 0.6 + 0.72 / 0.4) / 2, (0.98 / 0.6 + 0.68 / 0.4) / 2]
    assert table.loc["vit_ti", "mce_std"] == pytest.approx(_sample_std(vit_runs))
    res_runs = [(0.62 / 0.6 + 0.42 / 0.4) / 2, (0.58 / 0.6 + 0.38 / 0.4) / 2]
    assert table.loc["resnet18", "mce_std"] == pytest.approx(_sample_std(res_runs))
    assert table["n"].tolist() == [2, 2] and "relative_mce_std" in table
    # relative: vit gauss (0.3 + 0.5) / (0.15 + 0.35), blur (0.1 + 0.4) / (0.05 + 0.25)
    assert table.loc["vit_ti", "relative_mce"] == pytest.approx((0.8 / 0.5 + 0.5 / 0.3) / 2)
    other = mce(_corruption(), reference="vit_ti").set_index("model")
    assert other.loc["resnet18", "ce_gauss"] == pytest.approx(0.6 / 1.0)
    with pytest.raises(ValueError, match="reference 'alexnet' is not among the models"):
        mce(_corruption(), reference="alexnet")


def test_mce_default_reference_is_the_best_trained_resnet():
    """An untrained ResNet (a warmup checkpoint at chance: clean .1, every corruption .1) must
    not become the default reference; where a reference loses nothing to a corruption the
    relative CE is undefined (NaN), not inf."""
    weak = _corruption().query("model == 'resnet18'").assign(
        model="preact_resnet18", acc=0.1, clean_acc=0.1)
    table = mce(pd.concat([weak, _corruption()], ignore_index=True)).set_index("model")
    assert (table["reference"] == "resnet18").all()  # clean .95 beats .1
    assert table.loc["preact_resnet18", "ce_gauss"] == pytest.approx((0.9 + 0.9) / (0.2 + 0.4))
    against_weak = mce(pd.concat([weak, _corruption()], ignore_index=True),
                       reference="preact_resnet18").set_index("model")
    assert against_weak["relative_mce"].isna().all()


def test_hessian_stats_pool_eigenvalues_per_model_and_regime():
    eig = [-2.0, -1.0, 1.0, 3.0, 5.0, 7.0]
    df = pd.concat([
        _rows(6, model="vit_ti", quantity="eigenvalue", value=eig, batch=[0, 0, 0, 1, 1, 1]),
        _rows(2, model="vit_ti", quantity="trace", value=[10.0, 14.0]),
        _rows(3, model="resnet18", quantity="eigenvalue", value=[2.0, 4.0, 9.0]),
        _rows(2, model="vit_ti", quantity="density", value=[0.0, 1.0]),  # not pooled
    ], ignore_index=True)
    table = hessian_stats(df).set_index("model")
    vit = table.loc["vit_ti"]
    assert vit["n_eigenvalues"] == 6 and vit["nep"] == pytest.approx(2 / 6)
    assert vit["ape"] == pytest.approx((1 + 3 + 5 + 7) / 4)
    assert vit["q50"] == pytest.approx(2.0) and vit["q25"] == pytest.approx(-0.5)  # linear
    assert (vit["min"], vit["max"]) == (-2.0, 7.0)
    assert vit["trace"] == pytest.approx(12.0) and vit["n_traces"] == 2
    res = table.loc["resnet18"]
    assert res["nep"] == 0.0 and res["ape"] == pytest.approx(5.0) and np.isnan(res["trace"])
    # a data regime is its own row
    regimes = hessian_stats(df.assign(data_fraction=[0.1] * 3 + [1.0] * 10))
    assert len(regimes) == 3 and "data_fraction" in regimes


def test_trajectory_polar_coords_are_weight_space_distance_and_angle():
    # a = 1 on an axis of norm 3, b = 1 on one of norm 4: the point is (3, 4) in weight space
    traj = pd.DataFrame({"a": [1.0, 0.0, -0.5], "b": [1.0, 0.5, 0.0],
                         "d1_norm": 3.0, "d2_norm": 4.0})
    theta, r = plots.trajectory_polar_coords(traj)
    np.testing.assert_allclose(r, [5.0, 2.0, 1.5])
    np.testing.assert_allclose(theta, [np.arctan2(4, 3), np.pi / 2, np.pi])


def test_hessian_stats_keep_the_ends_of_which_both_apart():
    """which both: 2 largest + 2 smallest per unit. Pooled together NEP would be 0.5 by
    construction; per end it is the share of negatives at each end, labelled."""
    ends = ["largest", "largest", "smallest", "smallest"] * 2
    df = pd.concat([
        _rows(8, model="vit_ti", quantity="eigenvalue", which="both", end=ends,
              rank=[0, 1] * 4, value=[9.0, 4.0, -3.0, 0.5, 8.0, 6.0, -1.0, -2.0],
              unit_id=["a"] * 4 + ["b"] * 4),
        _rows(2, model="vit_ti", quantity="trace", which="both", value=[100.0, 120.0]),
        _rows(2, model="vit_ti", quantity="trace_nll", which="both", value=[10.0, 14.0]),
    ], ignore_index=True)
    table = hessian_stats(df).set_index("pooled")
    assert list(table.index) == ["2 largest per unit", "2 smallest per unit"]
    top, bottom = table.loc["2 largest per unit"], table.loc["2 smallest per unit"]
    assert top["nep"] == 0.0 and top["ape"] == pytest.approx((9 + 4 + 8 + 6) / 4)
    assert bottom["nep"] == pytest.approx(3 / 4) and bottom["ape"] == pytest.approx(0.5)
    assert (table["trace"] == 110.0).all() and (table["trace_nll"] == 12.0).all()
    mag = hessian_stats(df.assign(end="magnitude", which="magnitude", rank=[0, 1, 2, 3] * 2
                                  + [-1] * 4))
    assert list(mag["pooled"]) == ["top-4 by |λ| per unit"] and mag["nep"].iloc[0] == 3 / 8


def _step_counts(patch, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(bin edges, counts) back from a density step histogram: its polygon runs
    (e0, 0), (e0, h0), (e1, h0), (e1, h1), …, (en, 0); count = h · n · bin width."""
    xy = patch.get_xy()
    edges, heights = xy[0::2, 0], xy[1:-1:2, 1]
    return edges, heights * n * np.diff(edges)


def test_hessian_spectra_draw_one_histogram_per_end_labelled_with_its_rows():
    """which both rows are two histograms (largest, smallest), each counting its own rows
    only; a magnitude-only group stays one histogram, labelled with what it pools."""
    rng = np.random.default_rng(0)
    top = rng.uniform(1.0, 9.0, 6)  # 3 units x 2 largest
    bottom = np.concatenate([rng.uniform(-4.0, -0.5, 5), [0.3]])  # 3 units x 2 smallest
    both = _rows(12, model="vit_ti", quantity="eigenvalue", which="both",
                 end=["largest", "largest", "smallest", "smallest"] * 3, rank=[0, 1] * 6,
                 value=np.ravel(np.column_stack([top.reshape(3, 2), bottom.reshape(3, 2)])),
                 unit_id=np.repeat(["a", "b", "c"], 4))
    mag = _rows(6, model="resnet18", quantity="eigenvalue", which="magnitude", end="magnitude",
                rank=[0, 1, 2] * 2, value=rng.uniform(-1.0, 6.0, 6),
                unit_id=np.repeat(["d", "e"], 3))
    trace = _rows(1, model="vit_ti", quantity="trace", which="both", end="", rank=-1,
                  value=[50.0])
    df = pd.concat([both, mag, trace], ignore_index=True)
    fig = plots.plot_hessian_spectra(df, bins=12)
    ax = fig.axes[0]
    want = {"resnet18 · which=magnitude · top-3 by |λ| per unit (n=6)":
            mag["value"].to_numpy(),
            "vit_ti · which=both · 2 largest per unit (n=6)": top,
            "vit_ti · which=both · 2 smallest per unit (n=6)": bottom}
    assert [p.get_label() for p in ax.patches] == list(want)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(want)
    for patch, values in zip(ax.patches, want.values()):
        edges, counts = _step_counts(patch, len(values))
        assert len(edges) == 13 and counts.sum() == pytest.approx(len(values))
        np.testing.assert_allclose(counts, np.histogram(values, edges)[0], atol=1e-9)
    # the two ends of one group are told apart by line style too (one color per model)
    largest, smallest = ax.patches[1:]
    assert largest.get_edgecolor() == smallest.get_edgecolor()
    assert largest.get_linestyle() != smallest.get_linestyle()
    # magnitude-only input: one histogram of every row, as before, its label saying which
    alone = plots.plot_hessian_spectra(mag).axes[0].patches
    assert [p.get_label() for p in alone] == ["resnet18 · top-3 by |λ| per unit (n=6)"]
    assert _step_counts(alone[0], 6)[1].sum() == pytest.approx(6)


def _grid(model: str = "resnet18") -> pd.DataFrame:
    a, b = np.meshgrid([-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0])
    a, b = a.ravel(), b.ravel()
    return _rows(9, model=model, unit_id=["c0"] * 5 + ["c1"] * 4, kind="grid", a=a, b=b,
                 dims=2, a_points=3, b_points=3, nll=a ** 2, acc=1 - 0.1 * np.abs(a),
                 objective=a ** 2 + 2 * b ** 2 + 1)


def test_landscape_summary_rise_within_a_radius():
    # objective = a² + 2b² + 1; within radius 1: origin (rise 0), a = ±1 (1), b = ±1 (2)
    table = landscape_summary(_grid(), radius=1.0)
    row = table.iloc[0]
    assert (row["points"], row["expected"]) == (9, 9)  # both chunks are one landscape
    assert row["objective_origin"] == 1.0 and row["objective_min"] == 1.0
    assert row["mean_rise"] == pytest.approx((0 + 1 + 1 + 2 + 2) / 5)
    assert row["max_rise"] == pytest.approx(2.0) and row["acc_origin"] == 1.0
    assert landscape_summary(_grid(), radius=0.5).iloc[0]["mean_rise"] == 0.0
    assert landscape_summary(_grid(), radius=2.0, loss="nll").iloc[0]["max_rise"] == 1.0
    partial = landscape_summary(_grid().iloc[:5], radius=1.0).iloc[0]
    assert (partial["points"], partial["expected"]) == (5, 9)  # a running sweep's half grid
    two = pd.concat([_grid(), _grid(model="vit_ti")], ignore_index=True)
    assert landscape_summary(two)["model"].tolist() == ["resnet18", "vit_ti"]


def test_data_size_ablation_uses_final_epochs():
    train = _rows(6, task="train", model=["resnet18"] * 4 + ["vit_ti"] * 2,
                  unit_id=["a", "a", "b", "c", "d", "e"], data_fraction=[1, 1, 1, 0.5, 1, 0.5],
                  seed=[0, 0, 1, 0, 0, 0], epoch=[1, 2, 2, 2, 2, 2],
                  checkpoint=["x1", "x2", "y", "z", "v", "w"],
                  test_acc=[0.1, 0.8, 0.9, 0.7, 0.6, 0.3])
    table = data_size_ablation(train_final(train), "acc").set_index("model")
    assert list(table.columns) == ["0.5", "0.5_std", "0.5_n", "1", "1_std", "1_n"]
    assert table.loc["resnet18", ["0.5", "1"]].tolist() == pytest.approx([0.7, 0.85])  # epoch 1 ignored
    assert table.loc["vit_ti", ["0.5", "1"]].tolist() == pytest.approx([0.3, 0.6])
    # two runs (seeds 0, 1) at fraction 1: std |0.8 - 0.9| / √2; one run: no std
    assert table.loc["resnet18", "1_std"] == pytest.approx(0.1 / np.sqrt(2))
    assert table.loc["resnet18", ["0.5_n", "1_n"]].tolist() == [1, 2]
    assert np.isnan(table.loc["resnet18", "0.5_std"])


def test_training_curves_draw_seed_error_bars():
    # two seeds: epoch-1 losses 1.0 / 1.4, epoch-2 0.5 / 0.7; test accuracy at epoch 2 only
    train = _rows(4, task="train", model="vit_ti", seed=[0, 0, 1, 1], epoch=[1, 2, 1, 2],
                  train_loss=[1.0, 0.5, 1.4, 0.7], test_acc=[np.nan, 0.6, np.nan, 0.8],
                  checkpoint=["", "a", "", "b"])
    left, right = plots.plot_training(train).axes[:2]
    loss_bars = left.containers[0].lines[2][0].get_segments()
    assert [abs(b[1][1] - b[0][1]) / 2 for b in loss_bars] == pytest.approx(
        [_sample_std([1.0, 1.4]), _sample_std([0.5, 0.7])])
    assert left.containers[0].lines[0].get_ydata().tolist() == pytest.approx([1.2, 0.6])
    acc_bars = right.containers[0].lines[2][0].get_segments()
    assert [abs(b[1][1] - b[0][1]) / 2 for b in acc_bars] == pytest.approx([_sample_std([0.6, 0.8])])


def test_frequency_noise_table_and_markdown():
    df = _rows(4, model="vit_ti", frequency=[0.3, 0.3, 0.8, 0.8], seed=[0, 1, 0, 1],
               acc_drop=[0.14, 0.16, 0.04, 0.05], noise_norm=2.0)
    table = frequency_noise(df)
    assert table.iloc[0][["0.3", "0.8"]].tolist() == pytest.approx([0.15, 0.045])
    # std over the two seeds: |0.14 - 0.16| / √2 = 0.01414, |0.04 - 0.05| / √2 = 0.007071
    assert to_markdown(display(table)).splitlines() == [
        "| model | 0.3 | 0.3_n | 0.8 | 0.8_n |", "|---|---|---|---|---|",
        "| vit_ti | 0.15 ± 0.014 | 2 | 0.045 ± 0.0071 | 2 |"]
    bars = plots.plot_freqnoise(df).axes[0].containers[0].lines[2][0].get_segments()
    assert [abs(b[1][1] - b[0][1]) / 2 for b in bars] == pytest.approx(
        [0.02 / np.sqrt(2), 0.01 / np.sqrt(2)])


def test_tables_say_what_is_missing():
    with pytest.raises(NoData, match="no corruption rows"):
        robustness(pd.DataFrame())
    with pytest.raises(NoData, match="lack the column"):
        hessian_stats(_rows(1, model="x"))


def test_every_architecture_keeps_one_color():
    assert style.color("vit_ti") != style.color("resnet18")
    assert style.color("timm:convnext_nano") == style.color("timm:convnext_nano")
    styles = style.variant_styles([("a", "vit_ti"), ("b", "vit_ti"), ("c", "resnet18")])
    assert styles["a"]["color"] == styles["b"]["color"] == style.color("vit_ti")
    assert styles["a"]["linestyle"] != styles["b"]["linestyle"]


# --------------------------------------------------------------------------- a tiny real sweep


def _run(root: str, doc: dict) -> None:
    units = validate(resolve_checkpoint_refs(doc, root)).units()
    summary = run_units(units, root, RunConfig(kind="local", device="cpu"))
    assert summary.failed == 0, harness.load(root, task="_failures")["traceback"].iloc[0]


TRAIN = {"dataset": "digits", "data_fraction": [0.2, 0.1], "epochs": 2, "warmup_epochs": 1,
         "batch_size": 64, "snapshots": True, "augment": "none", "lr": 0.002,
         "eval_batch_size": 512}
OBJ = {"num_samples": 32, "batch_size": 16, "augment": "none"}
FEAT = {"dataset": "digits", "max_samples": 32, "batch_size": 32}


@pytest.fixture(scope="module")
def sweep_root(tmp_path_factory):
    """Train two tiny models at two data sizes (snapshots every epoch), then run every
    analysis task on their checkpoints: the results a report is made from."""
    import torch

    root = str(tmp_path_factory.mktemp("report") / "results")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and immune to a busy CPU
    try:
        yield _sweep(root)
    finally:
        torch.set_num_threads(threads)


def _sweep(root: str) -> str:
    _run(root, {"name": "tr", "tasks": {"train": [{**SMALL_RESNET, **TRAIN},
                                                  {**SMALL_VIT, **TRAIN}]}})
    train = harness.load(root, task="train")
    final = train[(train.epoch == 3) & (train.checkpoint != "")]
    ck = {(r.model, r.data_fraction): r.checkpoint for r in final.itertuples()}
    _run(root, {"name": "an", "tasks": {
        "evaluate": {"checkpoint": "sweep:tr", "dataset": "digits", "max_samples": 96},
        "landscape": [
            {"checkpoint": [ck["resnet18", 0.2], ck["vit_ti", 0.2]], "a_points": 3,
             "b_points": 3, "chunk_size": 5, **OBJ},
            {"checkpoint": ck["vit_ti", 0.1], "dims": 1, "a_points": 5, "chunk_size": 5, **OBJ},
            {"checkpoint": ck["resnet18", 0.1], "directions": "pca", "a_points": 3,
             "b_points": 3, "chunk_size": 9, **OBJ}],
        "hessian": {"checkpoint": list(ck.values()), "top_k": 3, "penalty": "half_sq",
                    "max_iter": 20, "tol": 0.01, "compute": [["eigenvalues", "trace", "density"]],
                    "trace_probes": 4, "density_iter": 8, "density_bins": 32, **OBJ},
        "fourier": {"checkpoint": list(ck.values()), **FEAT},
        "featvar": {"checkpoint": list(ck.values()), **FEAT},
        "lesion": {"checkpoint": [ck["vit_ti", 0.2]], **FEAT},
        "corruption": {"checkpoint": [ck["resnet18", 0.2], ck["vit_ti", 0.2]],
                       "corruption": ["gaussian_noise", "impulse_noise"], "severity": [1, 3],
                       **FEAT},
        "freqnoise": {"checkpoint": [ck["resnet18", 0.2], ck["vit_ti", 0.2]],
                      "frequency": [0.2, 0.8], **FEAT},
    }})
    return root


@pytest.fixture(scope="module")
def frames(sweep_root) -> dict[str, pd.DataFrame]:
    from harness.report import load_joined

    return {t: load_joined(sweep_root, t) for t in
            ("train", "evaluate", "landscape", "hessian", "fourier", "featvar", "lesion",
             "corruption", "freqnoise")}


def _assert_drawn(fig, tmp_path: Path, name: str) -> None:
    """The PNG and PDF exist and the PNG is not a blank canvas."""
    png, pdf = plots.save_figure(fig, tmp_path, name)
    assert pdf.stat().st_size > 1000 and pdf.read_bytes().startswith(b"%PDF")
    img = mpimg.imread(png)[..., :3]
    assert img.shape[0] > 100 and img.shape[1] > 100
    background = img[0, 0]
    assert (np.abs(img - background).sum(axis=-1) > 0.1).mean() > 0.01  # >1% pixels drawn


@pytest.mark.slow
def test_every_plot_draws_from_real_results(frames, tmp_path):
    f = frames
    from harness.report.tables import landscape_groups

    groups, _ = landscape_groups(f["landscape"])
    two_d = [g for g in groups if int(g[2]["dims"].iloc[0]) == 2]
    one_d = [g for g in groups if int(g[2]["dims"].iloc[0]) == 1]
    assert len(two_d) == 3 and len(one_d) == 1
    assert {len(g) for _, _, g in two_d} == {9}  # chunks of one grid are one landscape
    drawn = {
        "contour": plots.plot_landscape_contour(two_d[0][2]),
        "surface": plots.plot_landscape_surface(two_d[1][2]),
        "curve": plots.plot_landscape_1d(one_d),
        "polar": plots.plot_trajectory_polar(f["landscape"]),
        "spectra": plots.plot_hessian_spectra(f["hessian"]),
        "density": plots.plot_hessian_density(f["hessian"]),
        "fourier_depth": plots.plot_fourier_depth(f["fourier"]),
        "fourier_spectra": plots.plot_fourier_spectra(f["fourier"]),
        "featvar": plots.plot_featvar(f["featvar"]),
        "lesion": plots.plot_lesion(f["lesion"]),
        "reliability": plots.plot_reliability(f["evaluate"]),
        "data_size": plots.plot_data_size(train_final(f["train"])),
        "training": plots.plot_training(f["train"]),
        "robustness": plots.plot_robustness(f["corruption"]),
        "freqnoise": plots.plot_freqnoise(f["freqnoise"]),
    }
    for name, fig in drawn.items():
        _assert_drawn(fig, tmp_path, name)
    # the polar plot has one line per trajectory, with a point per snapshot (3 epochs)
    polar_lines = drawn["polar"].axes[0].get_lines()
    assert len(polar_lines) == 1 and len(polar_lines[0].get_xdata()) == 3
    # its radius is the weight-space distance the task measured on the model, ‖a·d1 + b·d2‖
    traj = f["landscape"][f["landscape"]["kind"] == "trajectory"].sort_values("point")
    np.testing.assert_allclose(polar_lines[0].get_ydata(), traj["distance"], rtol=1e-9)
    # the spectra pool every minibatch's top-3 eigenvalues: 2 batches x 3 per model and regime
    hs = hessian_stats(f["hessian"])
    assert len(hs) == 4 and hs["n_eigenvalues"].eq(6).all() and hs["n_traces"].eq(2).all()
    assert set(hs["train_fraction"]) == {0.2, 0.1}
    # evaluate: one row per checkpoint (3 snapshots x 4 runs), regimes joined from train
    table = model_comparison(f["evaluate"])
    assert len(table) == 12 and set(table["epoch"]) == {1, 2, 3}
    # the small ViT's two MSA blocks are shaded in its panels, no block of the ResNet is
    shaded = {ax.get_title(): len(ax.patches) for ax in drawn["fourier_depth"].axes
              if ax.get_visible()}
    assert sorted(shaded.values()) == [0, 0, 2, 2]
    assert all(n == (2 if t.startswith("vit_ti") else 0) for t, n in shaded.items())
    # robustness: 2 corruptions x 2 severities per model; mCE of the reference is 1
    rob = robustness(f["corruption"])
    assert rob["n_sets"].tolist() == [4, 4] and rob["robustness"].between(0, 1).all()
    assert mce(f["corruption"]).set_index("model").loc["resnet18", "mce"] == pytest.approx(1.0)


def _images(index: Path) -> list[str]:
    import re

    return re.findall(r"<img src='([^']+)'", index.read_text())


@pytest.mark.slow
def test_report_renders_every_item_and_survives_a_failing_plot(sweep_root, tmp_path,
                                                                monkeypatch, capsys):
    sweep_root = str(shutil.copytree(sweep_root, tmp_path / "results"))  # the fixture stays as is
    store = Store(sweep_root)
    doc = {"name": "an", "tasks": {"evaluate": {**SMALL_VIT, "dataset": "digits",
                                                "max_samples": 8, "seed": [0, 99]}}}
    store.write_manifest("an", {"spec": doc, "host": "<script>alert(1)</script>",
                                "versions": {"harness": "0.1.0"}, "started_at": "2025-01-01",
                                "argv": ["harness", "run", "x"]})
    _run(sweep_root, {"name": "an", "tasks": {"evaluate": {**SMALL_VIT, "dataset": "digits",
                                                           "max_samples": 8, "seed": 0}}})

    def broken(_df):
        raise RuntimeError("featvar <broken>")

    monkeypatch.setattr(plots, "plot_featvar", broken)
    index = write_report(sweep_root, tmp_path / "out")
    text = index.read_text()
    err = capsys.readouterr().err
    assert "report: [" in err and f"wrote {index}" in err  # progress lines on stderr
    srcs = _images(index)
    assert len(srcs) >= 17 and all((index.parent / s).stat().st_size > 0 for s in srcs)
    assert all((index.parent / s).with_suffix(".pdf").exists() for s in srcs)
    # every figure has its line on how to read it; the claims section is there with its table
    assert text.count("<p class='read'>How to read: ") == len(srcs)
    assert "The paper&#x27;s claims" in text and "Claims and verdicts" in text
    for name in ("claims", "model_comparison", "hessian_stats", "landscape_summary",
                 "data_size_train"):
        assert (index.parent / "tables" / f"{name}.csv").exists()
        assert (index.parent / "tables" / f"{name}.md").exists()
    # the failing plot shows its error in place, escaped; the other plots are still there
    assert "RuntimeError: featvar &lt;broken&gt;" in text and "plots/fourier_depth.png" in srcs
    # missing tasks are named, pending units counted from the stored spec, text escaped
    assert "an/evaluate: 1 of 2 units pending" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "<script>" not in text
    # a sweep subset: only that sweep's items; an unknown sweep is a clear error
    sub = write_report(sweep_root, tmp_path / "sub", sweeps=["tr"])
    assert "plots/training.png" in _images(sub) and "plots/hessian_spectra.png" not in _images(sub)
    missing = next(line for line in sub.read_text().split("<p") if "No data for:" in line)
    assert "Hessian eigenvalue statistics" in missing and "Model comparison" in missing
    with pytest.raises(ValueError, match="nope: not under"):
        write_report(sweep_root, tmp_path / "x", sweeps=["nope"])


# --------------------------------------------------------------------------- the browser


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _browser_or_skip():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        reason = (f"headless browser test needs {', '.join(missing)} (make test installs "
                  "Debian's chromium and chromium-driver when run as root)")
        if os.environ.get("HARNESS_REQUIRE_BROWSER") == "1":
            pytest.fail(reason + "; HARNESS_REQUIRE_BROWSER=1 requires it")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def page(sweep_root, tmp_path_factory) -> Path:
    """The report of the tiny sweep, rendered once."""
    return write_report(sweep_root, tmp_path_factory.mktemp("page"))


@pytest.mark.slow
def test_report_opens_in_headless_chromium(page):
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    index = page
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.get(index.resolve().as_uri())
        driver.execute_async_script(  # wait until every image has loaded or failed
            "const done = arguments[arguments.length - 1];"
            "Promise.all([...document.images].map(i => i.complete ? 1 : new Promise(r => "
            "{i.onload = r; i.onerror = r;}))).then(() => done(1));")
        images = driver.execute_script(
            "return [...document.images].map(i => [i.getAttribute('src'), i.naturalWidth]);")
        driver.set_window_size(900, 800)  # narrower than the widest table
        widths = driver.execute_script(
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth];")
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        title = driver.title
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    assert title.startswith("harness report")
    assert len(images) >= 17
    assert [src for src, width in images if not width > 0] == []
    assert errors == []
    assert widths[0] <= widths[1]  # nothing overflows the page sideways: wide tables scroll
