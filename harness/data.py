"""Dataset registry: name -> in-memory, normalized 32x32x3 image tensors.

Every dataset is returned whole as tensors (the datasets here are small, and a
worker caches them across units, so there is no DataLoader in the hot path).
The *split itself* never depends on `seed` — the test set must be the same for
every model in a sweep — only the `data_fraction` subset does (data-size
regimes are stratified and seeded).
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "Dataset",
    "DATASETS",
    "SPLITS",
    "register_dataset",
    "dataset_names",
    "validate_dataset_args",
    "load_dataset",
    "stratified_subset_indices",
]

SPLITS = ("train", "test")


@dataclass
class Dataset:
    """A whole split in memory."""

    name: str
    x: torch.Tensor  # float32 (N, 3, 32, 32), normalized
    y: torch.Tensor  # int64 (N,)
    num_classes: int

    def __len__(self) -> int:
        return int(self.y.shape[0])


#: name -> loader(split, **kwargs) returning the *whole* split; `load_dataset`
#: does the subsetting. A loader's keyword arguments (with defaults) are the
#: dataset's allowed kwargs.
DATASETS: dict[str, Callable[..., Dataset]] = {}


def register_dataset(name: str, loader: Callable[..., Dataset]) -> Callable[..., Dataset]:
    """Register `loader(split, **kwargs) -> Dataset` under `name`."""
    DATASETS[name] = loader
    return loader


def dataset_names() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(DATASETS)


def _loader_kwargs(name: str) -> dict[str, Any]:
    """The keyword arguments a loader accepts, with their defaults."""
    params = list(inspect.signature(DATASETS[name]).parameters.values())[1:]  # skip `split`
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def validate_dataset_args(
    name: str, split: str = "test", data_fraction: float = 1.0, kwargs: dict | None = None
) -> list[str]:
    """Human-readable problems with a dataset request (empty if fine).

    Cheap (loads nothing), so the spec validator can call it for every unit.
    """
    if name not in DATASETS:
        return [f"unknown dataset {name!r}; allowed: {', '.join(dataset_names())}"]
    errors: list[str] = []
    if split not in SPLITS:
        errors.append(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    if (
        isinstance(data_fraction, bool)
        or not isinstance(data_fraction, (int, float))
        or not 0.0 < data_fraction <= 1.0
    ):
        errors.append(f"data_fraction must be a number in (0, 1], got {data_fraction!r}")
    allowed = _loader_kwargs(name)
    for key in kwargs or {}:
        if key not in allowed:
            listed = ", ".join(f"{k}={v!r}" for k, v in allowed.items()) or "(none)"
            errors.append(f"dataset {name!r}: unknown arg {key!r}; allowed (with defaults): {listed}")
    return errors


def stratified_subset_indices(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a seeded, stratified `fraction` of `y`, sorted ascending.

    Class quotas are `fraction * n_c`, rounded by largest remainder so the total
    is `round(fraction * N)`; every present class keeps at least one sample
    (so a tiny fraction still sees every class). Each class's quota is thus
    within one of its proportional share (except the one-sample floor).
    """
    y = np.asarray(y)
    if fraction >= 1.0:
        return np.arange(len(y))
    classes, counts = np.unique(y, return_counts=True)
    quota = fraction * counts
    take = np.maximum(np.floor(quota).astype(np.int64), 1)
    take = np.minimum(take, counts)
    left = int(round(fraction * len(y))) - int(take.sum())
    if left > 0:
        remainder = quota - np.floor(quota)
        remainder[take >= counts] = -1.0  # full classes cannot take more
        order = np.argsort(-remainder, kind="stable")  # ties -> lower class first
        for c in order[:left]:
            if take[c] < counts[c]:
                take[c] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(chosen))


def load_dataset(
    name: str, split: str = "test", data_fraction: float = 1.0, seed: int = 0, **kwargs: Any
) -> Dataset:
    """Load a split of dataset `name`, optionally a stratified seeded subset.

    With `data_fraction=1` the whole split comes back in a fixed order whatever
    the seed; with `data_fraction<1` a stratified subset chosen by `seed`.
    Raises ValueError naming the allowed values on a bad name/split/fraction/kwarg.
    """
    errors = validate_dataset_args(name, split, data_fraction, kwargs)
    if errors:
        raise ValueError("; ".join(errors))
    full = DATASETS[name](split, **kwargs)
    if data_fraction >= 1.0:
        return full
    idx = torch.from_numpy(stratified_subset_indices(full.y.numpy(), float(data_fraction), seed))
    return Dataset(name=full.name, x=full.x[idx], y=full.y[idx], num_classes=full.num_classes)


# --------------------------------------------------------------------------- digits

_DIGITS_TEST_SIZE = 0.25
_DIGITS_SPLIT_SEED = 0  # fixed: the split never depends on a unit's seed


@functools.lru_cache(maxsize=1)
def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's bundled 8x8 digits (no download): images (N, 8, 8) in 0..16, labels (N,)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32), d.target.astype(np.int64)


@functools.lru_cache(maxsize=1)
def _digits_splits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Both digits splits, resized to 32x32x3 and normalized with train-split statistics.

    Cached per process because every work unit asks for the data. Callers must
    not modify the returned tensors in place (`_load_digits` hands out copies).
    """
    from sklearn.model_selection import train_test_split

    images, labels = _digits_raw()
    x = torch.from_numpy(images / 16.0).float().unsqueeze(1)  # (N,1,8,8) in [0,1]
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    x = x.repeat(1, 3, 1, 1).contiguous()
    y = torch.from_numpy(labels)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)),
        test_size=_DIGITS_TEST_SIZE,
        stratify=labels,
        random_state=_DIGITS_SPLIT_SEED,
    )
    splits = {"train": np.sort(train_idx), "test": np.sort(test_idx)}
    xtr = x[torch.from_numpy(splits["train"])]
    mean = xtr.mean(dim=(0, 2, 3), keepdim=True)
    std = xtr.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
    out = {}
    for split, idx in splits.items():
        t = torch.from_numpy(idx)
        out[split] = (((x[t] - mean) / std).contiguous(), y[t].contiguous())
    return out


def _load_digits(split: str) -> Dataset:
    """scikit-learn's handwritten digits: 1797 images, 10 classes, 1347 train / 450 test."""
    x, y = _digits_splits()[split]
    return Dataset(name="digits", x=x.clone(), y=y.clone(), num_classes=10)


register_dataset("digits", _load_digits)


# --------------------------------------------------------------------------- synthetic

_SYNTHETIC_PROTOTYPE_SEED = 12345
_SYNTHETIC_SPLIT_SEEDS = {"train": 1, "test": 2}


def _load_synthetic(
    split: str, *, num_samples: int = 512, num_classes: int = 10, noise: float = 0.5
) -> Dataset:
    """Learnable random images: a fixed Gaussian prototype per class plus Gaussian noise.

    Prototypes come from a fixed generator (seed 12345), so train and test share
    them; the two splits draw labels and noise from different fixed seeds, so
    they are disjoint samples of one distribution. Divided by sqrt(1 + noise^2)
    so pixels have unit variance, like a normalized real dataset.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"synthetic: num_samples must be an int >= 1, got {num_samples!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"synthetic: num_classes must be an int >= 2, got {num_classes!r}")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
        raise ValueError(f"synthetic: noise must be a number >= 0, got {noise!r}")
    proto_gen = torch.Generator().manual_seed(_SYNTHETIC_PROTOTYPE_SEED)
    prototypes = torch.randn(num_classes, 3, 32, 32, generator=proto_gen)
    gen = torch.Generator().manual_seed(_SYNTHETIC_SPLIT_SEEDS[split])
    # balanced labels (class counts differ by at most one), in a seeded order
    y = (torch.arange(num_samples) % num_classes)[torch.randperm(num_samples, generator=gen)]
    x = prototypes[y] + float(noise) * torch.randn(num_samples, 3, 32, 32, generator=gen)
    x = x / float(np.sqrt(1.0 + float(noise) ** 2))
    return Dataset(name="synthetic", x=x.float().contiguous(), y=y.long(), num_classes=num_classes)


register_dataset("synthetic", _load_synthetic)
