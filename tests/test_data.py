"""Dataset registry: splits, stratified subsets, normalization, determinism, errors."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from harness.data.datasets import Dataset, dataset_names, load_dataset, validate_dataset_args


def _counts(y: torch.Tensor, num_classes: int) -> np.ndarray:
    return np.bincount(y.numpy(), minlength=num_classes)


def test_registry_names():
    assert dataset_names() == sorted(dataset_names())
    assert {"digits", "synthetic"} <= set(dataset_names())


def test_digits_shapes_dtypes_and_split_sizes():
    test = load_dataset("digits", "test")
    train = load_dataset("digits", "train")
    assert isinstance(test, Dataset)
    assert len(test) == 450 and len(train) == 1797 - 450
    assert test.x.shape == (450, 3, 32, 32) and test.x.dtype == torch.float32
    assert test.y.shape == (450,) and test.y.dtype == torch.int64
    assert test.num_classes == 10
    # three identical channels (grey digits repeated)
    assert torch.equal(test.x[:, 0], test.x[:, 1]) and torch.equal(test.x[:, 0], test.x[:, 2])


def test_digits_split_is_sklearn_stratified_split():
    d = load_digits()
    _, test_idx = train_test_split(np.arange(1797), test_size=0.25, stratify=d.target, random_state=0)
    test = load_dataset("digits", "test")
    assert test.y.tolist() == d.target[np.sort(test_idx)].tolist()


def test_digits_normalized_with_train_stats():
    train = load_dataset("digits", "train")
    mean = train.x.double().mean(dim=(0, 2, 3))
    std = train.x.double().std(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(mean, torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(std, torch.ones(3, dtype=torch.float64), atol=1e-5)
    # the test split uses the same constants, so it is close to but not exactly standardized
    test = load_dataset("digits", "test")
    assert abs(test.x.double().mean().item()) < 0.1
    assert not torch.allclose(test.x.double().mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-5)


def test_digits_pixels_match_bilinear_resize_of_raw_images():
    # Independent check of the preprocessing: undo the normalization with two
    # known pixels and compare against an explicit 4x bilinear upsample.
    d = load_digits()
    _, test_idx = train_test_split(np.arange(1797), test_size=0.25, stratify=d.target, random_state=0)
    img = d.images[np.sort(test_idx)[0]] / 16.0  # (8, 8) in [0, 1]
    # align_corners=False, scale 4: output pixel i samples input coordinate (i + .5) / 4 - .5
    coords = np.clip((np.arange(32) + 0.5) / 4 - 0.5, 0, 7)
    lo = np.floor(coords).astype(int)
    hi = np.minimum(lo + 1, 7)
    w = coords - lo
    rows = img[lo] * (1 - w)[:, None] + img[hi] * w[:, None]
    ref = rows[:, lo] * (1 - w)[None, :] + rows[:, hi] * w[None, :]
    x = load_dataset("digits", "test").x[0, 0].double().numpy()
    # x = (ref - m) / s for unknown m, s: fit them by least squares and check the residual
    a = np.stack([ref.ravel(), np.ones(ref.size)], 1)
    coef, *_ = np.linalg.lstsq(a, x.ravel(), rcond=None)
    assert np.abs(a @ coef - x.ravel()).max() < 1e-4
    assert coef[0] > 0


def test_digits_fraction_stratified():
    train = load_dataset("digits", "train")
    sub = load_dataset("digits", "train", data_fraction=0.1, seed=0)
    assert len(sub) == round(0.1 * len(train))  # 135
    full_counts = _counts(train.y, 10)
    sub_counts = _counts(sub.y, 10)
    assert np.all(np.abs(sub_counts - 0.1 * full_counts) <= 1), (sub_counts, full_counts)
    # every row of the subset is a row of the full split
    full_rows = {tuple(r.tolist()) for r in train.x[:, 0, 16]}
    assert all(tuple(r.tolist()) in full_rows for r in sub.x[:, 0, 16])


def test_digits_tiny_fraction_keeps_every_class():
    sub = load_dataset("digits", "train", data_fraction=0.001, seed=3)
    assert sorted(sub.y.tolist()) == list(range(10))


def test_digits_fraction_seeding():
    a = load_dataset("digits", "train", data_fraction=0.1, seed=0)
    b = load_dataset("digits", "train", data_fraction=0.1, seed=0)
    c = load_dataset("digits", "train", data_fraction=0.1, seed=1)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert a.x.shape == c.x.shape and not torch.equal(a.x, c.x)


def test_digits_test_split_independent_of_seed():
    a = load_dataset("digits", "test", seed=0)
    b = load_dataset("digits", "test", seed=123)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


def test_digits_returns_copies():
    a = load_dataset("digits", "test")
    a.x.zero_()
    assert load_dataset("digits", "test").x.abs().sum() > 0


def test_synthetic_deterministic_and_shaped():
    a = load_dataset("synthetic", "train", seed=0)
    b = load_dataset("synthetic", "train", seed=0)
    assert len(a) == 512 and a.x.shape == (512, 3, 32, 32)
    assert a.x.dtype == torch.float32 and a.y.dtype == torch.int64 and a.num_classes == 10
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert np.all(np.abs(_counts(a.y, 10) - 51.2) <= 1)  # balanced
    assert abs(a.x.std().item() - 1.0) < 0.05
    t = load_dataset("synthetic", "test")
    assert not torch.equal(a.x, t.x)


def test_synthetic_kwargs_and_fraction():
    d = load_dataset("synthetic", "test", num_samples=100, num_classes=4, noise=0.1)
    assert d.x.shape == (100, 3, 32, 32) and d.num_classes == 4 and set(d.y.tolist()) == {0, 1, 2, 3}
    s0 = load_dataset("synthetic", "train", data_fraction=0.25, seed=0)
    s0b = load_dataset("synthetic", "train", data_fraction=0.25, seed=0)
    s1 = load_dataset("synthetic", "train", data_fraction=0.25, seed=1)
    assert len(s0) == 128 and torch.equal(s0.x, s0b.x) and not torch.equal(s0.x, s1.x)
    assert np.all(np.abs(_counts(s0.y, 10) - 0.25 * _counts(load_dataset("synthetic", "train").y, 10)) <= 1)


def test_synthetic_is_learnable_with_shared_prototypes():
    # nearest class-mean fit on train classifies test well: same prototypes, different samples
    train = load_dataset("synthetic", "train")
    test = load_dataset("synthetic", "test")
    means = torch.stack([train.x[train.y == c].mean(0) for c in range(10)]).flatten(1)
    pred = torch.cdist(test.x.flatten(1), means).argmin(1)
    assert (pred == test.y).float().mean().item() > 0.95


def test_bad_name_split_fraction_and_kwargs():
    with pytest.raises(ValueError, match="digits.*synthetic"):
        load_dataset("cifar-ten")
    with pytest.raises(ValueError, match="train.*test"):
        load_dataset("digits", "val")
    for frac in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            load_dataset("digits", "train", data_fraction=frac)
    with pytest.raises(ValueError, match="num_samples=512"):
        load_dataset("synthetic", "train", num_sample=10)
    with pytest.raises(ValueError, match=r"\(none\)"):
        load_dataset("digits", "train", noise=0.1)
    assert validate_dataset_args("digits", "train", 0.5, {}) == []
