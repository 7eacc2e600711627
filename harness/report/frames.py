"""Shaping result frames for tables and plots: the train join, identity keys, labels.

A "model" on a page is more than its `model` name: the same architecture may
appear with several `model_args`, trained on several data fractions, at
several epochs. These helpers find which of those columns actually vary in a
frame, so that tables and legends show exactly the distinctions that exist.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

#: Columns that tell one model apart from another, in display order.
IDENTITY = ("sweep", "dataset", "model", "model_args", "weights", "train_fraction", "epoch",
            "split", "data_fraction")
#: Columns that tell repeated runs of one model apart (seeds, training runs, checkpoints):
#: tables average over them and show the spread (`mean_std`).
RUN_COLUMNS = ("seed", "train_seed", "checkpoint", "corruption_seed", "noise_seed")
#: Added by `with_training` (the evaluated checkpoint's training run).
TRAIN_COLUMNS = ("train_fraction", "epoch", "train_seed", "train_unit", "weights")


def with_training(df: pd.DataFrame, train: pd.DataFrame | None) -> pd.DataFrame:
    """Rows of a checkpoint-consuming task joined with the train rows that wrote the checkpoint.

    Adds `train_fraction`, `epoch`, `train_seed` and `train_unit` (NaN / "" for a
    fresh model or a foreign checkpoint) and `weights`: "fresh" (no checkpoint),
    "trained" (a checkpoint of a train unit in `train`) or the file's base name.
    A train frame passes through with its own data fraction, epoch and seed.
    """
    out = df.copy()
    for name in TRAIN_COLUMNS:
        if name in out.columns:
            out = out.drop(columns=name)
    if len(out) and "task" in out.columns and (out["task"] == "train").all():
        out["train_fraction"] = df["data_fraction"]
        out["epoch"] = df["epoch"]
        out["train_seed"] = df["seed"]
        out["train_unit"] = df["unit_id"]
        out["weights"] = "trained"
        return out
    ckpt = out["checkpoint"].fillna("") if "checkpoint" in out.columns else pd.Series(
        "", index=out.index)
    if train is not None and len(train) and "checkpoint" in train.columns:
        written = train[train["checkpoint"].fillna("") != ""]
        lookup = (written[["checkpoint", "data_fraction", "epoch", "seed", "unit_id"]]
                  .drop_duplicates("checkpoint")
                  .rename(columns={"data_fraction": "train_fraction", "seed": "train_seed",
                                   "unit_id": "train_unit"}))
    else:
        lookup = pd.DataFrame(columns=["checkpoint", "train_fraction", "epoch", "train_seed",
                                       "train_unit"])
    joined = pd.DataFrame({"checkpoint": ckpt.values}, index=out.index).merge(
        lookup, on="checkpoint", how="left")
    joined.index = out.index
    out["train_fraction"] = joined["train_fraction"].astype(float)
    out["epoch"] = joined["epoch"].astype(float)
    out["train_seed"] = joined["train_seed"].astype(float)
    out["train_unit"] = joined["train_unit"].fillna("").astype(str)
    trained = out["train_unit"] != ""
    out["weights"] = np.where(ckpt == "", "fresh", np.where(
        trained, "trained", ckpt.map(lambda p: posixpath.basename(str(p)))))
    return out


def run_epoch_rows(df: pd.DataFrame, which: str) -> pd.DataFrame:
    """Rows of each training run's first (`which="min"`) or last (`"max"`) checkpointed epoch
    (untrained rows are kept)."""
    if "train_unit" not in df.columns or "epoch" not in df.columns:
        return df
    trained = df["train_unit"].fillna("") != ""
    chosen = df[trained].groupby("train_unit")["epoch"].transform(which)
    keep = ~trained
    keep[trained] = df.loc[trained, "epoch"] == chosen
    return df[keep]


def final_epochs(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of the last checkpointed epoch of each training run (untrained rows are kept)."""
    return run_epoch_rows(df, "max")


def train_final(train: pd.DataFrame) -> pd.DataFrame:
    """The train task's final test metrics per run, named like evaluate's columns."""
    rows = train[train["checkpoint"].fillna("") != ""] if "checkpoint" in train.columns else train
    rows = with_training(rows, None)
    rows = final_epochs(rows)
    return rows.rename(columns={"test_acc": "acc", "test_nll": "nll", "test_ece": "ece"})


def varying(df: pd.DataFrame, candidates: Iterable[str], always: Sequence[str] = ("model",)
            ) -> list[str]:
    """Candidate columns present in `df` with more than one value (NaN counts as a value)."""
    keys = []
    for name in candidates:
        if name not in df.columns:
            continue
        if name in always or df[name].astype(str).nunique(dropna=False) > 1:
            keys.append(name)
    return keys


def identity_keys(df: pd.DataFrame, extra: Iterable[str] = (), exclude: Iterable[str] = ()
                  ) -> list[str]:
    """Columns that distinguish the groups of a table: `model` plus whatever else varies."""
    skip = set(exclude)
    names = [c for c in (*IDENTITY, *extra) if c not in skip]
    keys = varying(df, dict.fromkeys(names))
    if {"data_fraction", "train_fraction"} <= set(keys) and df["data_fraction"].equals(
            df["train_fraction"].astype(df["data_fraction"].dtype)):
        keys.remove("data_fraction")  # train rows: the same column twice
    return keys


def short_value(name: str, value: object) -> str:
    """A compact display form of one key value (model_args JSON flattened, fractions as %)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if name == "model_args" and isinstance(value, str):
        try:
            args = json.loads(value)
        except ValueError:
            return value
        if isinstance(args, dict):
            text = " ".join(f"{k}={json.dumps(v, separators=(',', ':'))}"
                            for k, v in sorted(args.items()))
            return text or "default"
    if name in ("train_fraction", "data_fraction") and isinstance(value, (int, float)):
        return f"{value:.0%} data" if name == "train_fraction" else f"{value:g}"
    if name == "epoch" and isinstance(value, (int, float)):
        return f"ep {int(value)}"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def labels(df: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    """One display label per row from its key values: `model` first, then `key=value`s."""
    def one(row: pd.Series) -> str:
        parts = []
        for k in keys:
            text = short_value(k, row[k])
            if k in ("model", "train_fraction", "epoch", "weights", "model_args"):
                parts.append(text)
            else:
                parts.append(f"{k}={text}")
        return " · ".join(parts)

    if not len(df):
        return pd.Series([], dtype=str, index=df.index)
    return df.apply(one, axis=1).astype(str)


def group_frames(df: pd.DataFrame, keys: Sequence[str]) -> list[tuple[str, str, pd.DataFrame]]:
    """(label, model, rows) per group of `keys`, in sorted key order."""
    out = []
    for _, rows in df.groupby(list(keys), dropna=False, sort=True):
        label = labels(rows.iloc[:1], keys).iloc[0]
        out.append((label, str(rows["model"].iloc[0]), rows))
    return out


def metrics_rows(evaluate: pd.DataFrame) -> pd.DataFrame:
    """The per-unit metric rows of evaluate results, with or without a `quantity` column."""
    if "quantity" in evaluate.columns:
        return evaluate[evaluate["quantity"] == "metrics"]
    return evaluate


def run_columns(df: pd.DataFrame, keys: Sequence[str]) -> list[str]:
    """The `RUN_COLUMNS` of `df` that are not group keys: what tells one run from another."""
    return [c for c in RUN_COLUMNS if c in df.columns and c not in keys]


def per_run(df: pd.DataFrame, keys: Sequence[str], values: Sequence[str]) -> pd.DataFrame:
    """Mean of `values` per group of `keys` and run (`run_columns`): one row per run."""
    by = [*keys, *run_columns(df, keys)]
    return df.groupby(by, dropna=False, sort=True)[list(values)].mean().reset_index()


def mean_std(df: pd.DataFrame, keys: Sequence[str], values: Sequence[str]) -> pd.DataFrame:
    """Per group of `keys`: each value's mean and `<value>_std` (sample std, ddof 1: NaN for a
    single row) over the group's rows, and `n`, the rows counted (NaN values are skipped)."""
    grouped = df.groupby(list(keys), dropna=False, sort=True)[list(values)]
    mean, std = grouped.mean(), grouped.std(ddof=1)
    out = pd.DataFrame(index=mean.index)
    for v in values:
        out[v], out[f"{v}_std"] = mean[v], std[v]
    out["n"] = grouped.size()
    return out.reset_index()


def spread_over_runs(df: pd.DataFrame, keys: Sequence[str], values: Sequence[str]
                     ) -> pd.DataFrame:
    """`mean_std` over runs: each run's rows averaged first (`per_run`), so a run with more
    rows does not weigh more; n counts runs."""
    return mean_std(per_run(df, keys, values), keys, values)
