"""Aggregation layer: the paper's tables (pandas), plots (matplotlib) and one HTML report.

    from harness.report import load_joined, model_comparison, write_report
    ev = load_joined("results", "evaluate")          # evaluate rows + training regime columns
    model_comparison(ev)                              # a DataFrame
    write_report("results", "report")                 # -> report/index.html
"""

from harness.report.frames import final_epochs, train_final, with_training
from harness.report.html import write_report
from harness.report.tables import (
    NoData,
    data_size_ablation,
    frequency_noise,
    hessian_stats,
    landscape_summary,
    mce,
    model_comparison,
    robustness,
    robustness_by_severity,
)

__all__ = [
    "NoData",
    "data_size_ablation",
    "final_epochs",
    "frequency_noise",
    "hessian_stats",
    "landscape_summary",
    "load_joined",
    "mce",
    "model_comparison",
    "robustness",
    "robustness_by_severity",
    "train_final",
    "with_training",
    "write_report",
]


def load_joined(results: str, task: str, sweep: str | list[str] | None = None, **filters):
    """`harness.load` of one task, joined with the train rows (of every sweep under
    `results`) that wrote its checkpoints: adds train_fraction, epoch, train_seed, weights."""
    from harness.engine.store import Store, load

    df = load(results, task=task, sweep=sweep, **filters)
    store = Store(results)
    has_train = any("train" in store.tasks(s) for s in store.sweeps())
    train = load(results, task="train", sweep=store.sweeps()) if has_train else None
    return with_training(df, train)
