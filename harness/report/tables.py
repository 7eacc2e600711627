"""The paper's tables as pandas DataFrames, computed from result frames.

Each function takes the rows of one task (optionally joined with the train
rows by `frames.with_training`, which adds the training data fraction and
epoch) and returns a plain DataFrame whose first columns are the keys that
tell its groups apart (`model` always, the rest only when they vary).
Values are averaged over seeds and training runs (`frames.RUN_COLUMNS`):
each run's rows are averaged first, then the runs, and `<value>_std` (sample
std over runs, NaN for one run) and `n` (runs) give the spread. The CSV keeps
these as numbers; `display` writes "mean ± std" for the page.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from harness.analysis.hessian import nep_ape
from harness.report.frames import (
    group_frames,
    identity_keys,
    labels,
    mean_std,
    metrics_rows,
    per_run,
    run_columns,
    spread_over_runs,
)

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


def display(table: pd.DataFrame) -> pd.DataFrame:
    """The table as the page shows it: every column `x` with an `x_std` beside it becomes the
    text "mean ± std" (4 and 2 significant digits; the mean alone where std is NaN: one run)."""
    out = table.copy()
    for col in table.columns:
        std = f"{col}_std"
        if std in table.columns:
            out[col] = [_plus_minus(m, sd) for m, sd in zip(table[col], table[std])]
            out = out.drop(columns=std)
    return out


def _plus_minus(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "–"
    return f"{mean:.4g}" if pd.isna(std) else f"{mean:.4g} ± {std:.2g}"


def _wide(stats: pd.DataFrame, keys: list[str], column: str, value: str) -> pd.DataFrame:
    """`mean_std` rows per (keys, column) as one row per keys with, per value of `column`
    (formatted :g), the mean, `<c>_std` and `<c>_n` columns."""
    wide = stats.set_index([*keys, column])[[value, f"{value}_std", "n"]].unstack(column)
    out = pd.DataFrame(index=wide.index)
    for c in sorted(stats[column].unique()):
        out[f"{c:g}"] = wide[(value, c)]
        out[f"{c:g}_std"] = wide[(f"{value}_std", c)]
        out[f"{c:g}_n"] = wide[("n", c)]
    return out.reset_index()


def model_comparison(evaluate: pd.DataFrame) -> pd.DataFrame:
    """Acc, NLL, ECE, Acc-90, Unc-90, … per model: mean and std over runs (seeds, checkpoints),
    n runs, and the parameter count."""
    rows = _require(metrics_rows(_require(evaluate, "evaluate")), "evaluate metrics", ["acc"])
    keys = identity_keys(rows)
    metrics = [m for m in METRICS if m in rows.columns and rows[m].notna().any()]
    table = spread_over_runs(rows, keys, metrics)
    if "num_params" in rows.columns:
        params = rows.groupby(keys, dropna=False, sort=True)["num_params"].max()
        table.insert(len(table.columns) - 1, "num_params", params.to_numpy())
    return table


def _cells(corruption: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Mean accuracy per (model group, corruption, severity), over seeds."""
    rows = _require(corruption, "corruption", ["corruption", "severity", "acc"])
    keys = identity_keys(rows, CORRUPTION_KEYS)
    agg = {"acc": ("acc", "mean")}
    if "clean_acc" in rows.columns:
        agg["clean_acc"] = ("clean_acc", "mean")
    cells = rows.groupby([*keys, "corruption", "severity"], dropna=False, sort=True).agg(**agg)
    return cells.reset_index(), keys


def _set_runs(corruption: pd.DataFrame) -> tuple[pd.DataFrame, list[str], list[str]]:
    """One row per (model group, run, corruption, severity): its mean acc (and clean_acc)."""
    rows = _require(corruption, "corruption", ["corruption", "severity", "acc"])
    keys = identity_keys(rows, CORRUPTION_KEYS)
    values = ["acc", *(["clean_acc"] if "clean_acc" in rows.columns else [])]
    return per_run(rows, [*keys, "corruption", "severity"], values), keys, values


def robustness(corruption: pd.DataFrame) -> pd.DataFrame:
    """Per model: clean accuracy and robustness (each run's mean accuracy over every corruption
    × severity set present — the paper's 75), mean ± std over runs with n runs; n_sets; and
    the mean accuracy of each corruption over its severities (mean over runs)."""
    runs, keys, values = _set_runs(corruption)
    runs = runs.rename(columns={"acc": "robustness"})
    table = spread_over_runs(runs, keys, [*values[1:], "robustness"]).set_index(keys)
    cells, _ = _cells(corruption)
    table.insert(len(table.columns), "n_sets", cells.groupby(keys, dropna=False, sort=True).size())
    per = cells.pivot_table(index=keys, columns="corruption", values="acc", aggfunc="mean",
                            dropna=False)
    per.columns = [str(c) for c in per.columns]
    return table.join(per).reset_index()


def robustness_by_severity(corruption: pd.DataFrame) -> pd.DataFrame:
    """Accuracy over corruptions at each severity per model (robustness vs severity): each
    run's mean over corruptions, then mean, acc_std and n over runs."""
    runs, keys, _ = _set_runs(corruption)
    return spread_over_runs(runs, [*keys, "severity"], ["acc"])


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
    ce = _corruption_errors(cells, base, keys)
    per = ce["ce"].unstack("corruption")
    per.columns = [f"ce_{c}" for c in per.columns]
    table = pd.DataFrame({"mce": per.mean(axis=1)})
    measures = ["mce"]
    if "relative" in ce.columns:
        table["relative_mce"] = ce["relative"].unstack("corruption").mean(axis=1)
        measures.append("relative_mce")
    # the spread: each run's mCE (its own accuracies against the reference's mean ones)
    runs, _, _ = _set_runs(corruption)
    by_run = [*keys, *run_columns(runs, keys)]
    run_ce = _corruption_errors(runs.assign(err=1.0 - runs["acc"]), base, by_run)
    run_ce = run_ce.rename(columns={"ce": "mce", "relative": "relative_mce"})
    per_run_mce = run_ce.groupby(by_run, dropna=False, sort=True)[measures].mean().reset_index()
    spread = mean_std(per_run_mce, keys, measures).set_index(keys)
    for m in measures:
        table.insert(table.columns.get_loc(m) + 1, f"{m}_std", spread[f"{m}_std"])
    table.insert(len(table.columns), "n", spread["n"])
    table = table.join(per).reset_index()
    table.insert(len(keys), "reference", ref)
    return table


def _corruption_errors(rows: pd.DataFrame, base: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """CE (and relative CE where clean accuracies exist) per group of `by` and corruption: Σ_s err
    / Σ_s err_ref over the severities `rows` share with the reference `base`."""
    merged = rows.merge(base, on=["corruption", "severity"], suffixes=("", "_ref"))
    sums = merged.groupby([*by, "corruption"], dropna=False, sort=True)
    out = pd.DataFrame({"ce": sums["err"].sum() / sums["err_ref"].sum()})
    if "clean_acc_ref" in merged.columns:
        rel = merged.assign(d=merged["err"] - (1 - merged["clean_acc"]),
                            d_ref=merged["err_ref"] - (1 - merged["clean_acc_ref"]))
        rsum = rel.groupby([*by, "corruption"], dropna=False, sort=True)
        d_ref = rsum["d_ref"].sum()
        out["relative"] = rsum["d"].sum() / d_ref.where(d_ref > 0)
    return out


#: what the eigenvalue rows of one `end` are, for the `pooled` column
POOLED = {"magnitude": "top-{k} by |λ|", "largest": "{k} largest", "smallest": "{k} smallest",
          "": "every eigenvalue row"}


def _pooled(end: str, eig: pd.DataFrame) -> str:
    """`pooled` label: which rows of each unit were pooled (end and how many per unit)."""
    k = int(eig["rank"].max()) + 1 if "rank" in eig.columns and len(eig) else 0
    return POOLED.get(end, f"end {end}").format(k=k) + " per unit"


def hessian_stats(hessian: pd.DataFrame) -> pd.DataFrame:
    """Pooled top eigenvalues per model, data regime and `end`: NEP = P(λ<0), APE = E[λ|λ>0],
    quantiles, extremes, the mean Hutchinson trace and that of the NLL alone when measured.

    One row per end, labelled in `pooled` (e.g. "top-5 by |λ| per unit", the paper's): with
    `which: both` the largest and the smallest are summarized apart — pooled together, half
    of the rows are the most negative by construction and NEP would read 0.5.
    """
    rows = _require(hessian, "hessian", ["quantity", "value"])
    used = rows[rows["quantity"].isin(["eigenvalue", "trace", "trace_nll"])]
    _require(used, "hessian eigenvalue or trace")
    keys = identity_keys(used, HESSIAN_KEYS)
    out = []
    for _, group in used.groupby(keys, dropna=False, sort=True):
        eigs = group[group["quantity"] == "eigenvalue"]
        ends = (eigs["end"].fillna("").astype(str) if "end" in eigs.columns
                else pd.Series("", index=eigs.index))
        traces = {q: group.loc[group["quantity"] == q, "value"].to_numpy(float)
                  for q in ("trace", "trace_nll")}
        for end in sorted(set(ends)) or [""]:
            sel = eigs[ends == end]
            eig = sel["value"].to_numpy(float)
            summary = nep_ape(eig)
            record = {k: group[k].iloc[0] for k in keys}
            record.update({"pooled": _pooled(end, sel) if len(sel) else "",
                           "n_eigenvalues": summary["count"], "nep": summary["nep"],
                           "ape": summary["ape"],
                           "min": float(eig.min()) if len(eig) else np.nan,
                           "max": float(eig.max()) if len(eig) else np.nan})
            for q in QUANTILES:
                record[f"q{round(q * 100):02d}"] = (float(np.quantile(eig, q)) if len(eig)
                                                    else np.nan)
            for q, values in traces.items():
                record[q] = float(values.mean()) if len(values) else np.nan
            record["n_traces"] = len(traces["trace"])
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
    """`metric` per model (rows) and training data fraction (columns "<f>"), mean over runs,
    with "<f>_std" and "<f>_n" (runs).

    `df` holds one row per final model: `frames.train_final(train)`, or evaluate
    rows joined with `with_training` and reduced with `final_epochs`.
    """
    rows = _require(df, "data-size", [metric, fraction])
    rows = rows[rows[fraction].notna()]
    _require(rows, f"rows with a {fraction}")
    keys = identity_keys(rows, exclude=("train_fraction", "data_fraction", "epoch", "weights"))
    return _wide(spread_over_runs(rows, [*keys, fraction], [metric]), keys, fraction, metric)


def frequency_noise(freqnoise: pd.DataFrame) -> pd.DataFrame:
    """Accuracy drop per model (rows) and noise frequency in units of π (columns "<f>"), mean
    over runs with "<f>_std" and "<f>_n" (Fig. 2b as numbers)."""
    return _wide(frequency_noise_long(freqnoise), *_freq_keys(freqnoise), "acc_drop")


def _freq_keys(freqnoise: pd.DataFrame) -> tuple[list[str], str]:
    rows = _require(freqnoise, "freqnoise", ["frequency", "acc_drop"])
    return identity_keys(rows, ("noise_norm", "bandwidth")), "frequency"


def frequency_noise_long(freqnoise: pd.DataFrame) -> pd.DataFrame:
    """One row per model group and frequency: acc_drop mean, acc_drop_std and n over runs."""
    keys, column = _freq_keys(freqnoise)
    return spread_over_runs(freqnoise, [*keys, column], ["acc_drop"])
