"""Local on-disk datasets (fake CIFAR roots, a PNG image folder), root resolution, nested subsets."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.data.datasets import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetNotFoundError,
    load_dataset,
    stratified_order,
    stratified_subset_indices,
    validate_dataset_args,
)

PER_BATCH = 4  # CIFAR-10 images per data_batch_i
N_TEST = 6


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    """Rows of 3072 uint8, the CIFAR layout: 1024 R, then 1024 G, then 1024 B (row-major 32x32)."""
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_fake_cifar10(root: Path, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A tiny root in torchvision's exact `cifar-10-batches-py` pickle format; returns the raw splits."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    xs, ys = [], []
    for i in range(1, 6):
        data, labels = _images(rng, PER_BATCH), rng.integers(0, 10, PER_BATCH).tolist()
        _dump(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5", "labels": labels,
                                             "data": data, "filenames": [f"im{j}.png" for j in range(PER_BATCH)]})
        xs.append(data)
        ys += labels
    test, test_y = _images(rng, N_TEST), rng.integers(0, 10, N_TEST).tolist()
    _dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": test_y, "data": test,
                                  "filenames": [f"t{j}.png" for j in range(N_TEST)]})
    _dump(folder / "batches.meta", {"num_cases_per_batch": PER_BATCH, "num_vis": 3072,
                                    "label_names": [f"class{c}" for c in range(10)]})
    return {"train": (np.concatenate(xs), np.array(ys)), "test": (test, np.array(test_y))}


def write_fake_cifar100(root: Path, seed: int = 1) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A tiny root in torchvision's exact `cifar-100-python` pickle format (fine + coarse labels)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for split, fname, n in (("train", "train", 12), ("test", "test", 5)):
        data, fine = _images(rng, n), rng.integers(0, 100, n).tolist()
        _dump(folder / fname, {"filenames": [f"{j}.png" for j in range(n)], "batch_label": split,
                               "fine_labels": fine, "coarse_labels": [f // 5 for f in fine], "data": data})
        out[split] = (data, np.array(fine))
    _dump(folder / "meta", {"fine_label_names": [f"f{c}" for c in range(100)],
                            "coarse_label_names": [f"c{c}" for c in range(20)]})
    return out


def _expected(raw: np.ndarray, mean, std) -> torch.Tensor:
    img = raw.reshape(-1, 3, 32, 32).astype(np.float64) / 255.0
    return torch.from_numpy((img - np.array(mean)[:, None, None]) / np.array(std)[:, None, None])


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    """No HARNESS_DATA, cwd = an empty temp dir (so ./data does not exist)."""
    monkeypatch.delenv("HARNESS_DATA", raising=False)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


# --------------------------------------------------------------------------- CIFAR


def test_cifar10_fake_root_shapes_labels_normalization(tmp_path, no_env):
    raw = write_fake_cifar10(tmp_path / "root")
    for split, n in (("train", 5 * PER_BATCH), ("test", N_TEST)):
        d = load_dataset("cifar10", split, data_root=str(tmp_path / "root"))
        assert d.name == "cifar10" and d.num_classes == 10 and len(d) == n
        assert d.x.shape == (n, 3, 32, 32) and d.x.dtype == torch.float32 and d.y.dtype == torch.int64
        assert d.y.tolist() == raw[split][1].tolist()  # batches 1..5 in order
        assert d.mean == CIFAR10_MEAN and d.std == CIFAR10_STD
        assert torch.allclose(d.x.double(), _expected(raw[split][0], CIFAR10_MEAN, CIFAR10_STD), atol=1e-5)


def test_cifar100_fake_root_fine_labels(tmp_path, no_env):
    raw = write_fake_cifar100(tmp_path)
    d = load_dataset("cifar100", "train", data_root=tmp_path)
    assert d.num_classes == 100 and d.x.shape == (12, 3, 32, 32)
    assert d.y.tolist() == raw["train"][1].tolist()
    assert d.mean == CIFAR100_MEAN and d.std == CIFAR100_STD
    assert torch.allclose(d.x.double(), _expected(raw["train"][0], CIFAR100_MEAN, CIFAR100_STD), atol=1e-5)
    t = load_dataset("cifar100", "test", data_root=tmp_path)
    assert t.y.tolist() == raw["test"][1].tolist()


def test_cifar_root_layouts(tmp_path, no_env):
    write_fake_cifar10(tmp_path / "a" / "cifar10")  # <root>/cifar10/cifar-10-batches-py
    assert len(load_dataset("cifar10", "test", data_root=tmp_path / "a")) == N_TEST
    write_fake_cifar10(tmp_path / "b")  # the pickle folder itself
    assert len(load_dataset("cifar10", "test", data_root=tmp_path / "b" / "cifar-10-batches-py")) == N_TEST


def test_missing_root_error_names_paths_and_fixes(tmp_path, no_env):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", "test")
    msg = str(err.value)
    assert str(no_env / "data" / "cifar-10-batches-py") in msg
    assert str(no_env / "data" / "cifar10" / "cifar-10-batches-py") in msg
    assert "HARNESS_DATA" in msg and "data_root" in msg and "download: true" in msg
    assert "is not set" in msg
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, ValueError)
    # an explicit data_root is named as such
    with pytest.raises(DatasetNotFoundError, match="from data_root") as err:
        load_dataset("cifar100", "train", data_root=tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / "cifar-100-python") in str(err.value)


def test_partial_root_names_missing_files(tmp_path, no_env):
    write_fake_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match="lacks: data_batch_3"):
        load_dataset("cifar10", "test", data_root=tmp_path)


def test_harness_data_env_respected_and_overridden(tmp_path, no_env, monkeypatch):
    raw = write_fake_cifar10(tmp_path / "envroot")
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path / "envroot"))
    d = load_dataset("cifar10", "test")
    assert d.y.tolist() == raw["test"][1].tolist()
    # data_root wins over the environment
    with pytest.raises(DatasetNotFoundError, match="from data_root"):
        load_dataset("cifar10", "test", data_root=tmp_path / "elsewhere")
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path / "bad"))
    with pytest.raises(DatasetNotFoundError, match=r"from \$HARNESS_DATA") as err:
        load_dataset("cifar10", "test")
    assert str(tmp_path / "bad" / "cifar-10-batches-py") in str(err.value)


def test_default_root_is_cwd_data(tmp_path, no_env):
    write_fake_cifar10(no_env / "data")
    assert len(load_dataset("cifar10", "test")) == N_TEST


def test_validation_is_cheap_and_knows_new_args():
    # no disk access: a nonexistent root validates fine
    assert validate_dataset_args("cifar10", "train", 1.0, {"data_root": "/definitely/not/here"}) == []
    assert validate_dataset_args("cifar100", "test", 0.5, {"download": False}) == []
    assert validate_dataset_args("imagefolder", "test", 1.0, {"img_size": 64, "max_images": 10}) == []
    errs = validate_dataset_args("cifar10", "train", 1.0, {"download": "yes", "data_root": 3})
    assert any("download must be true or false" in e for e in errs)
    assert any("data_root must be a path" in e for e in errs)
    errs = validate_dataset_args("imagefolder", "train", 1.0, {"img_size": 0, "crop_pct": 2, "imgsize": 3})
    assert any("img_size must be an int >= 1" in e for e in errs)
    assert any("crop_pct must be a number in (0, 1]" in e for e in errs)
    assert any("max_images=0" in e and "img_size=224" in e for e in errs)
    errs = validate_dataset_args("synthetic", "train", 1.0, {"num_samples": 0})
    assert errs == ["dataset 'synthetic': num_samples must be an int >= 1, got 0"]


# --------------------------------------------------------------------------- imagefolder

COLORS = {"cat": (255, 0, 0), "dog": (0, 255, 0), "owl": (0, 0, 255)}


def write_image_folder(root: Path, per_class: dict[str, dict[str, int]]) -> None:
    """root/<split>/<class>/<i>.png, solid class colours, odd non-square sizes."""
    for split, counts in per_class.items():
        for cls, n in counts.items():
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40 + 3 * i, 30), COLORS[cls]).save(root / split / cls / f"{i}.png")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")


def test_imagefolder_loads_resizes_and_normalizes(tmp_path, no_env):
    write_image_folder(tmp_path, {"train": {"cat": 4, "dog": 4, "owl": 4}, "val": {"cat": 2, "dog": 3}})
    tr = load_dataset("imagefolder", "train", data_root=tmp_path, img_size=16)
    te = load_dataset("imagefolder", "test", data_root=tmp_path, img_size=16)
    assert tr.num_classes == te.num_classes == 3  # class indices agree between splits
    assert tr.x.shape == (12, 3, 16, 16) and tr.x.dtype == torch.float32
    assert te.y.tolist() == [0, 0, 1, 1, 1]
    assert tr.mean == IMAGENET_MEAN and tr.std == IMAGENET_STD
    for i, cls in enumerate(["cat", "dog", "owl"]):
        want = (torch.tensor(COLORS[cls]) / 255.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
        img = tr.x[tr.y == i]
        assert torch.allclose(img, want.view(1, 3, 1, 1).expand_as(img), atol=1e-5)


def test_imagefolder_center_crop(tmp_path, no_env):
    (tmp_path / "train" / "a").mkdir(parents=True)
    im = np.zeros((20, 40, 3), np.uint8)  # h 20, w 40: left half red, right half blue
    im[:, :20, 0] = 255
    im[:, 20:, 2] = 255
    Image.fromarray(im).save(tmp_path / "train" / "a" / "x.png")
    d = load_dataset("imagefolder", "train", data_root=tmp_path, img_size=10, crop_pct=1.0)
    pix = d.x[0] * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    # resized to 10 x 20, centre 10 columns = resized columns 5..14: red then blue
    assert torch.allclose(pix[0, :, :4], torch.ones(10, 4), atol=1e-3)
    assert torch.allclose(pix[2, :, 6:], torch.ones(10, 4), atol=1e-3)


def test_imagefolder_max_images_stratified_deterministic(tmp_path, no_env):
    write_image_folder(tmp_path, {"train": {"cat": 4, "dog": 4, "owl": 4}})
    a = load_dataset("imagefolder", "train", data_root=tmp_path, img_size=8, max_images=6)
    b = load_dataset("imagefolder", "train", data_root=tmp_path, img_size=8, max_images=6, seed=5)
    assert len(a) == 6 and np.bincount(a.y.numpy()).tolist() == [2, 2, 2]
    assert a.x.paths == b.x.paths and torch.equal(a.x[torch.arange(6)], b.x[torch.arange(6)])
    assert torch.equal(a.y, b.y)


def test_imagefolder_missing_root_and_split(tmp_path, no_env):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("imagefolder", "test", data_root=tmp_path / "in")
    msg = str(err.value)
    for p in (tmp_path / "in" / "val", tmp_path / "in" / "imagenet" / "val", tmp_path / "in" / "test"):
        assert str(p) in msg
    assert "HARNESS_DATA" in msg
    write_image_folder(tmp_path / "r", {"train": {"cat": 1}})
    with pytest.raises(DatasetNotFoundError, match="no 'test' split"):
        load_dataset("imagefolder", "test", data_root=tmp_path / "r")


# --------------------------------------------------------------------------- nested subsets


def _stratified_ok(sub_y: np.ndarray, full_y: np.ndarray, k: int) -> bool:
    full = np.bincount(full_y)
    sub = np.bincount(sub_y, minlength=len(full))
    return len(sub_y) == k and bool(np.all(np.abs(sub - k * full / len(full_y)) <= 1))


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_fractions_nested_and_stratified(seed):
    y = load_dataset("digits", "train").y.numpy()
    idx = {f: set(stratified_subset_indices(y, f, seed).tolist()) for f in (0.1, 0.25, 0.5, 0.9, 1.0)}
    assert idx[0.1] < idx[0.25] < idx[0.5] < idx[0.9] < idx[1.0]
    for f, s in idx.items():
        assert _stratified_ok(y[sorted(s)], y, round(f * len(y)))


def test_every_prefix_size_nested():
    y = np.repeat(np.arange(5), [40, 30, 20, 7, 3])
    prev: set[int] = set()
    for k in range(5, len(y) + 1):
        cur = set(stratified_subset_indices(y, seed=3, size=k).tolist())
        assert prev <= cur and len(cur) == k
        assert set(y[sorted(cur)].tolist()) == set(range(5))  # every class from the first 5 on
        prev = cur
    order = stratified_order(y, 3)
    assert sorted(order.tolist()) == list(range(len(y)))


def test_load_dataset_fractions_nested_rows():
    full = load_dataset("digits", "train")
    small = load_dataset("digits", "train", data_fraction=0.1, seed=4)
    big = load_dataset("digits", "train", data_fraction=0.5, seed=4)
    idx_small = stratified_subset_indices(full.y.numpy(), 0.1, 4)
    idx_big = stratified_subset_indices(full.y.numpy(), 0.5, 4)
    assert torch.equal(small.x, full.x[torch.from_numpy(idx_small)])
    assert torch.equal(big.x, full.x[torch.from_numpy(idx_big)])
    assert set(idx_small) < set(idx_big)
    assert small.mean == full.mean and small.std == full.std  # subsets keep the constants


def test_data_size():
    full = load_dataset("digits", "train")
    d = load_dataset("digits", "train", data_size=135, seed=2)
    assert _stratified_ok(d.y.numpy(), full.y.numpy(), 135)
    # same nested order as data_fraction: round(0.1 * 1347) = 135
    f = load_dataset("digits", "train", data_fraction=0.1, seed=2)
    assert torch.equal(d.x, f.x) and torch.equal(d.y, f.y)
    small = stratified_subset_indices(full.y.numpy(), seed=2, size=50)
    assert set(small) <= set(stratified_subset_indices(full.y.numpy(), seed=2, size=135))
    assert torch.equal(load_dataset("digits", "train", data_size=len(full)).x, full.x)
    assert not torch.equal(load_dataset("digits", "train", data_size=135, seed=3).x, d.x)


def test_data_size_errors():
    with pytest.raises(ValueError, match="mutually exclusive"):
        load_dataset("digits", "train", data_fraction=0.5, data_size=10)
    with pytest.raises(ValueError, match="exceeds the split's 1347 samples"):
        load_dataset("digits", "train", data_size=5000)
    with pytest.raises(ValueError, match="smaller than the 10 classes"):
        load_dataset("digits", "train", data_size=5)
    for bad in (0, -3, 2.5, True, "10"):
        assert any("data_size must be an int >= 1" in e
                   for e in validate_dataset_args("digits", "train", 1.0, {}, data_size=bad))
    assert validate_dataset_args("digits", "train", 1.0, {}, data_size=10) == []


def test_cifar_subsets_on_fake_root(tmp_path, no_env):
    write_fake_cifar10(tmp_path)
    full = load_dataset("cifar10", "train", data_root=tmp_path)
    sub = load_dataset("cifar10", "train", data_root=tmp_path, data_size=10, seed=0)
    idx = stratified_subset_indices(full.y.numpy(), seed=0, size=10)
    assert torch.equal(sub.x, full.x[torch.from_numpy(idx)])


def test_digits_and_synthetic_constants():
    d = load_dataset("digits", "train")
    pix = d.x * torch.tensor(d.std).view(1, 3, 1, 1) + torch.tensor(d.mean).view(1, 3, 1, 1)
    assert pix.min().item() > -1e-5 and pix.max().item() < 1 + 1e-5 and pix.max().item() > 0.9
    s = load_dataset("synthetic", "test")
    assert s.mean == (0.5, 0.5, 0.5) and s.std == (0.25, 0.25, 0.25)
