"""The paper's plots from result frames (matplotlib Figures rendered by Agg; no pyplot state).

Every `plot_*` function takes the rows of one task (joined with the train rows
by `frames.with_training` where the regime matters), returns a matplotlib
Figure, and raises `NoData` when the rows hold nothing it could draw. Colors
come from `style.color(model)`: one per architecture in every plot; variants
of one architecture differ by line style. Curves of values averaged over runs
(seeds, checkpoints) carry ± one std error bars where a point has several runs.
`save_figure` writes PNG and PDF.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from harness.report import style
from harness.report.frames import group_frames, identity_keys, mean_std, spread_over_runs
from harness.report.tables import (
    HESSIAN_KEYS,
    NoData,
    _pooled,
    _require,
    data_size_ablation,
    frequency_noise_long,
    robustness_by_severity,
)

MAX_PANELS = 12
FEATURE_KEYS = ("definition", "diagonal", "max_samples")


def save_figure(fig: Figure, out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """Write `name`.png and `name`.pdf under `out_dir`; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png, pdf = out / f"{name}.png", out / f"{name}.pdf"
    fig.savefig(png, dpi=style.DPI, bbox_inches="tight")
    fig.savefig(pdf, bbox_inches="tight")
    return png, pdf


def _figure(width: float = 6.0, height: float = 4.0) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _panels(n: int, title: str, ncols: int = 3, size: tuple[float, float] = (4.2, 3.2),
            **kw) -> tuple[Figure, list]:
    """A figure of min(n, MAX_PANELS) panels; says in the title when some were left out."""
    shown = min(n, MAX_PANELS)
    cols = min(ncols, shown)
    rows = math.ceil(shown / cols)
    fig = _figure(size[0] * cols, size[1] * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False, **kw)).ravel()
    for ax in axes[shown:]:
        ax.set_visible(False)
    fig.suptitle(title if n <= MAX_PANELS else f"{title} (first {MAX_PANELS} of {n})")
    return fig, list(axes[:shown])


def _panel_title(ax, label: str, width: int = 44) -> None:
    """A panel's title wrapped to its width, so neighbouring panels' titles never overlap."""
    ax.set_title("\n".join(textwrap.wrap(label, width, break_on_hyphens=False)) or label,
                 fontsize=8)


def _styles(groups: list[tuple[str, str, pd.DataFrame]]) -> dict[str, dict]:
    return style.variant_styles([(label, model) for label, model, _ in groups])


def _legend(ax, n: int) -> None:
    if n:  # below the axes, one entry a line: labels of model variants are long
        ax.figure.legend(*ax.get_legend_handles_labels(), loc="outside lower center",
                         fontsize=7, frameon=False, ncols=1)


# --------------------------------------------------------------------------- landscapes


def _line(ax, x: Sequence[float], y: Sequence[float], std: Sequence[float] | None,
          n: Sequence[float] | None, label: str, st: dict) -> None:
    """One model's curve; ± one std over runs as error bars at the points with n > 1 runs
    (a plain line where every point has a single run)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    yerr = np.full_like(y, np.nan)
    if std is not None and n is not None:
        yerr = np.where(np.asarray(n, float) > 1, np.asarray(std, float), np.nan)
    if np.isfinite(yerr).any():
        ax.errorbar(x, y, yerr=np.nan_to_num(yerr), label=label, capsize=2, **st)
    else:
        ax.plot(x, y, label=label, **st)


def _surface(grid: pd.DataFrame, loss: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A, B, Z) meshes of a 2D landscape, Z shifted to min 0 (NaN where a point is missing)."""
    _require(grid, "landscape grid", ["a", "b", loss])
    table = grid.pivot_table(index="b", columns="a", values=loss, aggfunc="mean", dropna=False)
    if table.shape[0] < 2 or table.shape[1] < 2:
        raise NoData("a 2D landscape needs at least 2 × 2 grid points")
    z = table.to_numpy(float)
    a, b = np.meshgrid(table.columns.to_numpy(float), table.index.to_numpy(float))
    return a, b, z - np.nanmin(z)


def plot_landscape_contour(grid: pd.DataFrame, loss: str = "objective", title: str = ""
                           ) -> Figure:
    """Contours of a 2D loss landscape around w0 (Fig. 1a, as contours), shifted to min 0."""
    a, b, z = _surface(grid, loss)
    fig = _figure(4.8, 4.0)
    ax = fig.add_subplot()
    filled = ax.contourf(a, b, np.ma.masked_invalid(z), levels=20, cmap="viridis")
    ax.contour(a, b, np.ma.masked_invalid(z), levels=10, colors="white", linewidths=0.5)
    fig.colorbar(filled, ax=ax, label=f"{loss} − min")
    ax.plot([0], [0], marker="+", color="red", markersize=10)
    ax.set(xlabel="a (direction 1)", ylabel="b (direction 2)", aspect="equal")
    _panel_title(ax, title, width=56)
    return fig


def plot_landscape_surface(grid: pd.DataFrame, loss: str = "objective", title: str = ""
                           ) -> Figure:
    """A 2D loss landscape as a 3D surface (Fig. 1a), shifted to min 0."""
    a, b, z = _surface(grid, loss)
    fig = _figure(5.0, 4.2)
    ax = fig.add_subplot(projection="3d")
    ax.plot_surface(a, b, z, cmap="viridis", linewidth=0, antialiased=True)
    ax.set(xlabel="a", ylabel="b", zlabel=f"{loss} − min")
    _panel_title(ax, title, width=60)
    return fig


def plot_landscape_1d(groups: list[tuple[str, str, pd.DataFrame]], loss: str = "objective"
                      ) -> Figure:
    """1D loss curves (random direction or interpolation between checkpoints), one per
    landscape, shifted so each curve's minimum is 0."""
    curves = [(lab, m, g) for lab, m, g in groups if len(g) >= 2 and loss in g.columns]
    if not curves:
        raise NoData("no 1D landscape with at least two points")
    styles = _styles(curves)
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    for label, _, g in curves:
        g = g.sort_values("a")
        y = g[loss].to_numpy(float)
        ax.plot(g["a"], y - np.nanmin(y), label=label, **styles[label], markersize=3)
    ax.set(xlabel="a", ylabel=f"{loss} − min", title="1D loss landscapes")
    _legend(ax, len(curves))
    return fig


def trajectory_polar_coords(traj: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(angle, radius) of trajectory rows in weight space: the plane's coordinates a, b are in
    units of the axes d1, d2 (PCA scales each by its own max |projection|), so the true position
    is (a·‖d1‖, b·‖d2‖) on the orthogonal PCA axes — radius ‖a·d1 + b·d2‖, not √(a²+b²)."""
    a = traj["a"].to_numpy(float)
    b = traj["b"].fillna(0.0).to_numpy(float)
    x = a * traj["d1_norm"].to_numpy(float)
    y = b * traj["d2_norm"].fillna(0.0).to_numpy(float)
    return np.arctan2(y, x), np.hypot(x, y)


def plot_trajectory_polar(landscape: pd.DataFrame) -> Figure:
    """Training trajectories in polar coordinates (Fig. 1b): each snapshot's position in the
    PCA plane of its training run, as a distance in weight space and an angle from the first
    principal axis (`trajectory_polar_coords`); the last snapshot (the origin of the plane)
    sits at the center."""
    rows = _require(landscape, "landscape", ["kind"])
    traj = rows[rows["kind"] == "trajectory"]
    _require(traj, "landscape trajectory (directions: pca)", ["a", "b", "d1_norm", "d2_norm"])
    groups = group_frames(traj, identity_keys(traj, ("train_seed", "direction_seed")))
    styles = _styles(groups)
    fig = _figure(5.2, 5.0)
    ax = fig.add_subplot(projection="polar")
    for label, _, g in groups:
        theta, r = trajectory_polar_coords(g.drop_duplicates("point").sort_values("point"))
        st = styles[label]
        ax.plot(theta, r, label=label, color=st["color"],
                linestyle=st["linestyle"], marker=st["marker"], markersize=3)
    ax.set_title("training trajectories in the PCA plane (polar; radius: weight distance)")
    _legend(ax, len(groups))
    return fig


# --------------------------------------------------------------------------- Hessian


def _hessian_groups(hessian: pd.DataFrame, quantity: str) -> list:
    rows = _require(hessian, "hessian", ["quantity", "value"])
    sel = rows[rows["quantity"] == quantity]
    _require(sel, f"hessian {quantity}")
    return group_frames(sel, identity_keys(sel, HESSIAN_KEYS, exclude=("train_seed",)))


def _by_end(groups: list[tuple[str, str, pd.DataFrame]]) -> list[tuple[str, str, pd.DataFrame]]:
    """Each group's eigenvalue rows split by `end`, labelled with what they pool (the `pooled`
    label of `hessian_stats`, e.g. "top-5 by |λ| per unit"): with `which: both` the largest and
    the smallest are two curves, not one histogram of both ends."""
    out = []
    for label, model, g in groups:
        ends = (g["end"].fillna("").astype(str) if "end" in g.columns
                else pd.Series("", index=g.index))
        for end in sorted(set(ends)):
            sel = g[ends == end]
            out.append((f"{label} · {_pooled(end, sel)}", model, sel))
    return out


def plot_hessian_spectra(hessian: pd.DataFrame, bins: int = 40) -> Figure:
    """Densities of the pooled top eigenvalues per model and end (Fig. 4 style, log density):
    one histogram per group and `end`, labelled with the rows it pools and their count, so
    `which: both` shows the largest and the smallest apart (as `hessian_stats` summarizes
    them); negative mass is non-convexity (NEP), the positive tail sharpness (APE)."""
    curves = _by_end(_hessian_groups(hessian, "eigenvalue"))
    values = np.concatenate([g["value"].to_numpy(float) for _, _, g in curves])
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    pad = max(hi - lo, abs(hi), 1e-12) * 0.05
    edges = np.linspace(lo - pad, hi + pad, bins + 1)
    styles = _styles(curves)
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    for label, _, g in curves:
        st = styles[label]
        ax.hist(g["value"].to_numpy(float), bins=edges, density=True, histtype="step",
                color=st["color"], linestyle=st["linestyle"], linewidth=1.4,
                label=f"{label} (n={len(g)})")
    ax.axvline(0.0, color="black", linewidth=0.6)
    ax.set_yscale("log")
    ax.set(xlabel="eigenvalue λ", ylabel="density",
           title="Hessian top eigenvalues, pooled per model and end")
    _legend(ax, len(curves))
    return fig


def plot_hessian_density(hessian: pd.DataFrame) -> Figure:
    """SLQ spectral densities ρ(λ) of the whole Hessian spectrum, one curve per unit."""
    groups = _hessian_groups(hessian, "density")
    styles = _styles(groups)
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    for label, _, g in groups:
        st = styles[label]
        for i, (_, unit) in enumerate(g.groupby("unit_id", sort=True)):
            unit = unit.sort_values("value")
            ax.plot(unit["value"], unit["density"].clip(lower=1e-12), color=st["color"],
                    linestyle=st["linestyle"], linewidth=1.0, alpha=0.8,
                    label=label if i == 0 else None)
    ax.set_yscale("log")
    ax.set(xlabel="eigenvalue λ", ylabel="density ρ(λ)", title="Hessian spectral density (SLQ)")
    _legend(ax, len(groups))
    return fig


# --------------------------------------------------------------------------- per depth


def _shade_msa(ax, blocks: pd.DataFrame) -> None:
    """Shade the depth span of every MSA block (columns depth, block_kind, n_blocks)."""
    n = int(blocks["n_blocks"].max()) if "n_blocks" in blocks.columns else len(blocks)
    half = 0.5 / max(n - 1, 1)
    for depth in blocks.loc[blocks["block_kind"] == "msa", "depth"].unique():
        ax.axvspan(depth - half, depth + half, color=style.MSA_SHADE, linewidth=0, zorder=0)


def _per_depth(df: pd.DataFrame, value: str, title: str, ylabel: str, log: bool = False,
               extra: Sequence[str] = FEATURE_KEYS) -> Figure:
    """One panel per model: `value` (mean over seeds / runs) vs normalized depth, MSAs shaded."""
    rows = _require(df, title, ["depth", "block_kind", value])
    groups = group_frames(rows, identity_keys(rows, extra))
    fig, axes = _panels(len(groups), title, sharey=True)
    for ax, (label, model, g) in zip(axes, groups):
        per = g.groupby(["block_index", "depth", "block_kind"], as_index=False)[value].mean()
        _shade_msa(ax, g.drop_duplicates("block_index"))
        ax.plot(per["depth"], per[value], color=style.color(model), marker="o", markersize=3)
        ax.set(xlabel="normalized depth", ylabel=ylabel, xlim=(-0.05, 1.05))
        _panel_title(ax, label)
        if log and (per[value] > 0).all():
            ax.set_yscale("log")
    return fig


def plot_fourier_depth(fourier: pd.DataFrame) -> Figure:
    """Δ log amplitude at the highest frequency (π) of each block's feature map vs depth,
    MSA blocks shaded (Fig. 2a right / Fig. 8): MSAs lower it (low-pass), Convs raise it."""
    rows = _require(fourier, "fourier", ["is_max_frequency"])
    return _per_depth(rows[rows["is_max_frequency"].astype(bool)], "delta_log_amplitude",
                      "Δ log amplitude at π vs depth (MSA shaded)", "Δ log amplitude")


def plot_fourier_spectra(fourier: pd.DataFrame) -> Figure:
    """Δ log amplitude vs frequency of every block's feature map, colored by depth
    (Fig. 2a left): the darker the curve, the later the block."""
    rows = _require(fourier, "fourier", ["frequency", "delta_log_amplitude", "depth"])
    groups = group_frames(rows, identity_keys(rows, FEATURE_KEYS))
    fig, axes = _panels(len(groups), "Δ log amplitude of feature maps vs frequency", sharey=True)
    cmap = matplotlib.colormaps["magma_r"]
    for ax, (label, _, g) in zip(axes, groups):
        per = g.groupby(["block_index", "depth", "frequency"], as_index=False)[
            "delta_log_amplitude"].mean()
        for (_, depth), curve in per.groupby(["block_index", "depth"]):
            ax.plot(curve["frequency"], curve["delta_log_amplitude"],
                    color=cmap(0.15 + 0.8 * float(depth)), linewidth=1.0)
        ax.set(xlabel="frequency (×π)", ylabel="Δ log amplitude")
        _panel_title(ax, label)
    return fig


def plot_featvar(featvar: pd.DataFrame) -> Figure:
    """Feature-map variance of each block vs depth (Fig. 9), MSA blocks shaded: MSAs
    reduce the variance, Convs and MLPs increase it."""
    return _per_depth(featvar, "variance", "feature-map variance vs depth (MSA shaded)",
                      "variance", log=True)


def plot_lesion(lesion: pd.DataFrame) -> Figure:
    """Accuracy drop when one residual block's branch is skipped, vs the block's depth
    (MSA blocks shaded): which blocks the model relies on most."""
    return _per_depth(lesion, "acc_drop", "accuracy drop when a block is removed (MSA shaded)",
                      "accuracy drop", extra=("split", "max_samples"))


# --------------------------------------------------------------------------- robustness


def plot_robustness(corruption: pd.DataFrame) -> Figure:
    """Accuracy (mean over corruptions) vs corruption severity per model; severity 0 is the
    clean accuracy. Error bars: ± std over runs where a model has several."""
    table = robustness_by_severity(corruption)
    keys = [c for c in table.columns if c not in ("severity", "acc", "acc_std", "n")]
    groups = group_frames(table, keys)
    clean = {}
    if "clean_acc" in corruption.columns:
        spread = spread_over_runs(corruption, keys, ["clean_acc"])
        for label, _, g in group_frames(spread, keys):
            clean[label] = g.iloc[0]
    styles = _styles(groups)
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    for label, _, g in groups:
        x, y = list(g["severity"].astype(float)), list(g["acc"])
        std, n = list(g["acc_std"]), list(g["n"])
        if label in clean:
            c = clean[label]
            x, y = [0.0, *x], [c["clean_acc"], *y]
            std, n = [c["clean_acc_std"], *std], [c["n"], *n]
        _line(ax, x, y, std, n, label, styles[label])
    ax.set(xlabel="severity (0: clean)", ylabel="accuracy (mean over corruptions)",
           title="robustness vs corruption severity")
    _legend(ax, len(groups))
    return fig


def plot_freqnoise(freqnoise: pd.DataFrame) -> Figure:
    """Accuracy drop vs the center frequency of band-limited noise (Fig. 2b): ViTs are
    hurt most by low-frequency noise, ResNets by high-frequency noise. Error bars: ± std over
    runs where a model has several."""
    rows = _require(freqnoise, "freqnoise", ["frequency", "acc_drop"])
    groups = group_frames(frequency_noise_long(rows),
                          identity_keys(rows, ("noise_norm", "bandwidth")))
    styles = _styles(groups)
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    for label, _, g in groups:
        g = g.sort_values("frequency")
        _line(ax, g["frequency"], g["acc_drop"], g["acc_drop_std"], g["n"], label, styles[label])
    ax.set(xlabel="noise frequency (×π)", ylabel="accuracy drop",
           title="robustness to frequency-band noise")
    _legend(ax, len(groups))
    return fig


# --------------------------------------------------------------------------- calibration, data


def plot_reliability(evaluate: pd.DataFrame) -> Figure:
    """Reliability diagrams: accuracy per confidence bin (bars, samples pooled over seeds)
    against the diagonal of perfect calibration."""
    rows = _require(evaluate, "evaluate", ["quantity"])
    rel = rows[rows["quantity"] == "reliability"]
    _require(rel, "evaluate reliability", ["bin_lower", "bin_upper", "bin_count",
                                           "bin_accuracy", "bin_confidence"])
    groups = group_frames(rel, identity_keys(rel))
    fig, axes = _panels(len(groups), "reliability diagrams", sharey=True)
    for ax, (label, model, g) in zip(axes, groups):
        g = g.assign(hits=g["bin_accuracy"].fillna(0) * g["bin_count"],
                     conf=g["bin_confidence"].fillna(0) * g["bin_count"])
        per = g.groupby(["bin_lower", "bin_upper"], as_index=False)[
            ["bin_count", "hits", "conf"]].sum()
        full = per[per["bin_count"] > 0]
        width = (per["bin_upper"] - per["bin_lower"]).to_numpy(float)
        ax.bar(per["bin_lower"], (per["hits"] / per["bin_count"].where(
            per["bin_count"] > 0)).fillna(0), width=width, align="edge",
            color=style.color(model), edgecolor="black", linewidth=0.5, label="accuracy")
        ax.plot(full["conf"] / full["bin_count"], full["hits"] / full["bin_count"], "k.",
                markersize=4, label="(confidence, accuracy)")
        ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=0.8)
        ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
        _panel_title(ax, label)
    return fig


def plot_data_size(df: pd.DataFrame, metric: str = "acc") -> Figure:
    """`metric` vs training data fraction per architecture (data-size regimes); `df` as for
    `tables.data_size_ablation`. Error bars: ± std over training runs (seeds) where several."""
    table = data_size_ablation(df, metric)
    fractions = [c for c in table.columns if _is_number(c)]
    keys = [c for c in table.columns
            if c not in fractions and c.rsplit("_", 1)[0] not in fractions]
    groups = group_frames(table, keys)
    styles = _styles(groups)
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    x = np.array([float(c) for c in fractions])
    for label, _, g in groups:
        row = g.iloc[0]
        _line(ax, x, row[fractions].to_numpy(float), row[[f"{c}_std" for c in fractions]],
              row[[f"{c}_n" for c in fractions]], label, styles[label])
    ax.set_xscale("log")
    ax.set(xlabel="training data fraction", ylabel=metric, title=f"{metric} vs data size")
    _legend(ax, len(groups))
    return fig


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def plot_training(train: pd.DataFrame) -> Figure:
    """Training loss and test accuracy per epoch for each training run's model: mean over seeds,
    ± std error bars where several seeds reached the epoch."""
    rows = _require(train, "train", ["epoch", "train_loss", "test_acc"])
    groups = group_frames(rows, identity_keys(rows, exclude=("epoch", "weights")))
    styles = _styles(groups)
    fig = _figure(9.0, 3.6)
    left, right = fig.subplots(1, 2)
    for label, _, g in groups:
        loss = mean_std(g, ["epoch"], ["train_loss"])
        _line(left, loss["epoch"], loss["train_loss"], loss["train_loss_std"], loss["n"], label,
              {**styles[label], "markersize": 2})
        tested = g[g["test_acc"].notna()]
        if len(tested):
            acc = mean_std(tested, ["epoch"], ["test_acc"])
            _line(right, acc["epoch"], acc["test_acc"], acc["test_acc_std"], acc["n"], label,
                  styles[label])
    left.set(xlabel="epoch", ylabel="training loss", title="training loss")
    right.set(xlabel="epoch", ylabel="test accuracy", title="test accuracy at checkpoints")
    _legend(left, len(groups))
    return fig

