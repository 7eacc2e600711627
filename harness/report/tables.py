"""The paper's tables as pandas DataFrames, computed from result frames.

Each function takes the rows of one task (optionally joined with the train
rows by `frames.with_training`, which adds the training data fraction and
epoch) and returns a plain DataFrame whose first columns are the keys that
tell its groups apart (`model` always, the rest only when they vary).
Values are averaged over seeds and training runs; `n` counts what was
averaged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from harness.analysis.hessian import nep_ape
from harness.report.frames import group_frames, identity_keys, labels, metrics_rows

#: Evaluate's metric columns in the paper's order (the ones present are shown).
METRICS = ("acc", "nll", "ece", "signed_ece", "brier", "top5_acc", "acc_90", "unc_90",
           "freq_90", "iou", "iou_90")
CORRUPTION_KEYS = ("source", "data_fraction")
HESSIAN_KEYS = ("solver", "scope", "which", "top_k", "num_samples", "batch_size", "augment",
                "penalty", "weight_decay", "train_seed")
LANDSCAPE_KEYS = ("directions", "normalization", "dims", "direction_seed", "perturb_bias_norm",
                  "bn_recompute", "a_range", "b_range", "a_points", "b_points", "augment",
                  "penalty", "weight_decay", "num_samples", "train_seed", "seed")
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


class NoData(ValueError):
    """The results hold nothing a table or plot could be made from."""


def _require(df: pd.DataFrame | None, what: str, columns: Sequence[str] = ()) -> pd.DataFrame:
    if df is None or not len(df):
        raise NoData(f"no {what} rows")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise NoData(f"{what} rows lack the column(s) {', '.join(missing)}")
    return df


def model_comparison(evaluate: pd.DataFrame) -> pd.DataFrame:
    """Acc, NLL, ECE, Acc-90, Unc-90, … and parameter count per model, mean over seeds."""
    rows = _require(metrics_rows(_require(evaluate, "evaluate")), "evaluate metrics", ["acc"])
    keys = identity_keys(rows)
    metrics = [m for m in METRICS if m in rows.columns and rows[m].notna().any()]
    agg = {m: "mean" for m in metrics}
    if "num_params" in rows.columns:
        agg["num_params"] = "max"
    table = rows.groupby(keys, dropna=False, sort=True).agg(agg)
    table["n"] = rows.groupby(keys, dropna=False, sort=True).size()
    return table.reset_index()


def _cells(corruption: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Mean accuracy per (model group, corruption, severity), over seeds."""
    rows = _require(corruption, "corruption", ["corruption", "severity", "acc"])
    keys = identity_keys(rows, CORRUPTION_KEYS)
    agg = {"acc": ("acc", "mean")}
    if "clean_acc" in rows.columns:
        agg["clean_acc"] = ("clean_acc", "mean")
    cells = rows.groupby([*keys, "corruption", "severity"], dropna=False, sort=True).agg(**agg)
    return cells.reset_index(), keys


def robustness(corruption: pd.DataFrame) -> pd.DataFrame:
    """Per model: clean accuracy, robustness (mean accuracy over every corruption × severity
    set present; the paper's 75) and the mean accuracy of each corruption over its severities."""
    cells, keys = _cells(corruption)
    grouped = cells.groupby(keys, dropna=False, sort=True)
    table = pd.DataFrame({"robustness": grouped["acc"].mean(), "n_sets": grouped.size()})
    if "clean_acc" in cells.columns:
        table.insert(0, "clean_acc", grouped["clean_acc"].mean())
    per = cells.pivot_table(index=keys, columns="corruption", values="acc", aggfunc="mean",
                            dropna=False)
    per.columns = [str(c) for c in per.columns]
    return table.join(per).reset_index()


def robustness_by_severity(corruption: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy over corruptions at each severity, per model (robustness vs severity)."""
    cells, keys = _cells(corruption)
    out = cells.groupby([*keys, "severity"], dropna=False, sort=True)["acc"].mean()
    return out.reset_index()


def mce(corruption: pd.DataFrame, reference: str | None = None) -> pd.DataFrame:
    """Corruption errors against a reference model (Hendrycks & Dietterich 2019).

    CE_c = Σ_s err(c, s) / Σ_s err_ref(c, s) with err = 1 − accuracy, over the
    severities both have; mCE = mean over corruptions of CE_c. With clean
    accuracies, relative mCE uses (err − clean err) in both sums (NaN where the
    reference loses nothing to a corruption). `reference` is a model name or a
    label as shown in the table (default: of the models whose name contains
    "resnet" — else of all — the one with the highest clean accuracy, i.e. the
    best-trained one rather than, say, a warmup checkpoint).
    """
    cells, keys = _cells(corruption)
    cells = cells.assign(err=1.0 - cells["acc"], label=labels(cells, keys).values)
    models = dict(zip(cells["label"], cells["model"].astype(str)))  # cells are sorted by keys
    names = list(models)
    if reference is None:
        pool = [n for n in names if "resnet" in models[n]] or names
        if "clean_acc" in cells:
            clean = cells.groupby("label", sort=False)["clean_acc"].mean()
            pool = sorted(pool, key=lambda n: -clean[n])  # stable: ties keep table order
        ref = pool[0]
    else:
        exact = [n for n in names if n == reference]
        by_model = [n for n in names if models[n] == reference]
        if not exact and not by_model:
            raise ValueError(f"mce: reference {reference!r} is not among the models: "
                             f"{', '.join(names)}")
        ref = (exact or by_model)[0]
    base = cells[cells["label"] == ref][["corruption", "severity", "err"]
                                        + (["clean_acc"] if "clean_acc" in cells else [])]
    merged = cells.merge(base, on=["corruption", "severity"], suffixes=("", "_ref"))
    sums = merged.groupby([*keys, "corruption"], dropna=False, sort=True)
    ce = sums["err"].sum() / sums["err_ref"].sum()
    per = ce.unstack("corruption")
    per.columns = [f"ce_{c}" for c in per.columns]
    table = pd.DataFrame({"mce": per.mean(axis=1)})
    if "clean_acc" in merged.columns:
        rel = merged.assign(d=merged["err"] - (1 - merged["clean_acc"]),
                            d_ref=merged["err_ref"] - (1 - merged["clean_acc_ref"]))
        rsum = rel.groupby([*keys, "corruption"], dropna=False, sort=True)
        d_ref = rsum["d_ref"].sum()
        table["relative_mce"] = (rsum["d"].sum() / d_ref.where(d_ref > 0)).unstack(
            "corruption").mean(axis=1)
    table = table.join(per).reset_index()
    table.insert(len(keys), "reference", ref)
    return table


def hessian_stats(hessian: pd.DataFrame) -> pd.DataFrame:
    """Pooled top eigenvalues per model and data regime: NEP = P(λ<0), APE = E[λ|λ>0],
    quantiles, extremes, and the mean Hutchinson trace when measured."""
    rows = _require(hessian, "hessian", ["quantity", "value"])
    used = rows[rows["quantity"].isin(["eigenvalue", "trace"])]
    _require(used, "hessian eigenvalue or trace")
    keys = identity_keys(used, HESSIAN_KEYS)
    out = []
    for _, group in used.groupby(keys, dropna=False, sort=True):
        eig = group.loc[group["quantity"] == "eigenvalue", "value"].to_numpy(float)
        trace = group.loc[group["quantity"] == "trace", "value"].to_numpy(float)
        summary = nep_ape(eig)
        record = {k: group[k].iloc[0] for k in keys}
        record.update({"n_eigenvalues": summary["count"], "nep": summary["nep"],
                       "ape": summary["ape"],
                       "min": float(eig.min()) if len(eig) else np.nan,
                       "max": float(eig.max()) if len(eig) else np.nan})
        for q in QUANTILES:
            record[f"q{round(q * 100):02d}"] = float(np.quantile(eig, q)) if len(eig) else np.nan
        record["trace"] = float(trace.mean()) if len(trace) else np.nan
        record["n_traces"] = len(trace)
        out.append(record)
    return pd.DataFrame(out)


def landscape_groups(landscape: pd.DataFrame) -> tuple[list[tuple[str, str, pd.DataFrame]],
                                                        list[str]]:
    """The grid rows of each landscape (all its chunks), with their display labels."""
    rows = _require(landscape, "landscape", ["a", "nll"])
    grid = rows[rows["kind"] == "grid"] if "kind" in rows.columns else rows
    _require(grid, "landscape grid")
    keys = identity_keys(grid, LANDSCAPE_KEYS)
    return group_frames(grid, keys), keys


def _radius(grid: pd.DataFrame) -> np.ndarray:
    a = grid["a"].to_numpy(float)
    b = grid["b"].fillna(0.0).to_numpy(float) if "b" in grid.columns else np.zeros_like(a)
    return np.hypot(a, b)


def landscape_summary(landscape: pd.DataFrame, radius: float = 0.5,
                      loss: str = "objective") -> pd.DataFrame:
    """Per landscape: the loss at the origin (the grid point nearest a = b = 0), its minimum,
    and the mean and largest rise of the loss over the points with √(a²+b²) ≤ `radius` —
    how sharp the basin is; `points` / `expected` say how much of the grid is done."""
    groups, keys = landscape_groups(landscape)
    out = []
    for _, _, grid in groups:
        if loss not in grid.columns:
            raise NoData(f"landscape rows lack the loss column {loss!r}")
        r = _radius(grid)
        values = grid[loss].to_numpy(float)
        origin = int(np.argmin(r))
        inside = r <= radius + 1e-9
        rise = values[inside] - values[origin]
        record = {k: grid[k].iloc[0] for k in keys}
        expected = np.nan
        if {"a_points", "dims"} <= set(grid.columns):
            first = grid.iloc[0]
            expected = int(first["a_points"] * (first["b_points"] if first["dims"] == 2 else 1))
        record.update({"points": len(grid), "expected": expected,
                       f"{loss}_origin": float(values[origin]),
                       f"{loss}_min": float(np.nanmin(values)),
                       "radius": radius, "mean_rise": float(np.nanmean(rise)),
                       "max_rise": float(np.nanmax(rise)),
                       "acc_origin": float(grid["acc"].iloc[origin]) if "acc" in grid else np.nan})
        out.append(record)
    return pd.DataFrame(out)


def data_size_ablation(df: pd.DataFrame, metric: str = "acc",
                       fraction: str = "train_fraction") -> pd.DataFrame:
    """`metric` per model (rows) and training data fraction (columns), mean over seeds.

    `df` holds one row per final model: `frames.train_final(train)`, or evaluate
    rows joined with `with_training` and reduced with `final_epochs`.
    """
    rows = _require(df, "data-size", [metric, fraction])
    rows = rows[rows[fraction].notna()]
    _require(rows, f"rows with a {fraction}")
    keys = identity_keys(rows, exclude=("train_fraction", "data_fraction", "epoch", "weights"))
    table = rows.pivot_table(index=keys, columns=fraction, values=metric, aggfunc="mean")
    table.columns = [f"{c:g}" for c in table.columns]
    return table.reset_index()


def frequency_noise(freqnoise: pd.DataFrame) -> pd.DataFrame:
    """Accuracy drop per model (rows) and noise frequency in units of π (columns), mean over
    seeds (Fig. 2b as numbers)."""
    rows = _require(freqnoise, "freqnoise", ["frequency", "acc_drop"])
    keys = identity_keys(rows, ("noise_norm", "bandwidth"))
    table = rows.pivot_table(index=keys, columns="frequency", values="acc_drop", aggfunc="mean")
    table.columns = [f"{c:g}" for c in table.columns]
    return table.reset_index()
