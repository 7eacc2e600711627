"""Robustness and calibration tasks: evaluate's rows, frequency noise, corruptions.

The noise generator is checked by an independent FFT (numpy, fftshift-ed
indices, an explicit radius) and the tasks end to end through the executor
against a plain serial loop on the same small models of conftest.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import SMALL_RESNET, SMALL_VIT, comparable

import harness
from harness.engine.context import UnitContext, WorkerCache
from harness.data.datasets import load_dataset
from harness.engine.executor import RunConfig, run_units
from harness.data.freqnoise import DEFAULT_GRID, frequency_noise
from harness.analysis.metrics import calibration_metrics, classification_metrics
from harness.models.registry import build_model
from harness.engine.registry import get_task
from harness.engine.spec import SpecError, validate

CPU = torch.device("cpu")
EVALUATE_COLUMNS = ["quantity", "acc", "nll", "ece", "signed_ece", "brier", "top5_acc", "acc_90",
                    "unc_90", "freq_90", "iou", "iou_90", "n_samples", "num_params", "bin",
                    "bin_lower", "bin_upper", "bin_count", "bin_accuracy", "bin_confidence"]


def _fresh(spec: dict, num_classes: int = 10, seed: int = 0) -> torch.nn.Module:
    """The model a unit with these params builds (tasks._workload.cached_model)."""
    torch.manual_seed(seed)
    return build_model(spec["model"], num_classes, **spec["model_args"]).eval()


def _run(doc: dict, root, **config) -> None:
    summary = run_units(validate(doc).units(), str(root), RunConfig(kind="local", device="cpu",
                                                                    **config))
    assert summary.failed == 0, summary.errors


# --------------------------------------------------------------------------- evaluate


def test_evaluate_rows_metrics_and_reliability(tmp_path):
    common = {**SMALL_VIT, "dataset": "digits", "max_samples": 150, "batch_size": 64}
    _run({"name": "ev", "tasks": {"evaluate": [{**common, "ece_bins": 10},
                                               {**common, "ece_bins": 4}]}}, tmp_path)
    df = harness.load(str(tmp_path), task="evaluate")
    assert [c for c in EVALUATE_COLUMNS if c not in df.columns] == []
    for bins, unit in df.groupby("ece_bins"):
        metrics = unit[unit["quantity"] == "metrics"]
        rel = unit[unit["quantity"] == "reliability"].sort_values("bin")
        assert len(metrics) == 1 and len(rel) == bins
        row = metrics.iloc[0]
        # the bins partition the samples; the metrics row has no bin, the bin rows no metrics
        assert rel["bin_count"].sum() == row["n_samples"] == 150
        assert rel["bin"].tolist() == list(range(bins))
        assert np.allclose(rel["bin_lower"], np.arange(bins) / bins)
        assert np.allclose(rel["bin_upper"], np.arange(1, bins + 1) / bins)
        assert metrics[["bin", "bin_count", "bin_accuracy"]].isna().all().all()
        assert rel[["acc", "nll", "ece", "iou_90"]].isna().all().all()
        # the numbers are calibration_metrics of the model's logits (a plain serial reference)
        data = load_dataset("digits", "test")
        with torch.no_grad():
            logits = _fresh(SMALL_VIT)(data.x[:150])
        ref, ref_bins = calibration_metrics(logits, data.y[:150], int(bins))
        for key, value in ref.items():
            assert row[key] == pytest.approx(value, rel=1e-6, abs=1e-9, nan_ok=True), key
        assert rel["bin_count"].tolist() == [b["count"] for b in ref_bins]
        # ECE from the stored bins (empty bins have NaN accuracy and weigh nothing)
        full = rel[rel["bin_count"] > 0]
        ece = (full["bin_count"] / 150 * (full["bin_accuracy"] - full["bin_confidence"]).abs()).sum()
        assert ece == pytest.approx(row["ece"], abs=1e-12)


# --------------------------------------------------------------------------- frequency noise


def _independent_band(h: int, w: int, f: float, bw: float) -> np.ndarray:
    """Band mask in numpy's unshifted layout, built from fftshift-ed indices by an explicit loop."""
    mask = np.zeros((h, w), dtype=bool)
    for i in range(h):
        for j in range(w):
            ku, kv = i - h // 2, j - w // 2  # fftshift-ed: centre = zero frequency
            radius = max(2 * abs(ku) / h, 2 * abs(kv) / w)  # units of π per axis
            mask[i, j] = abs(radius - f) <= bw + 1e-9
    return np.fft.ifftshift(mask)


@pytest.mark.parametrize(("size", "f", "bw"), [((32, 32), 0.0, 0.2), ((32, 32), 0.3, 0.2),
                                               ((32, 32), 0.8, 0.2), ((32, 32), 1.0, 0.2),
                                               ((32, 32), 0.5, 0.05), ((16, 24), 0.6, 0.1)])
def test_frequency_noise_energy_lies_in_the_band(size, f, bw):
    h, w = size
    noise = frequency_noise((4, 3, h, w), f, bw, 3.0, seed=1, dtype=torch.float64)
    power = np.abs(np.fft.fft2(noise.numpy())) ** 2
    band = _independent_band(h, w, f, bw)
    inside = power[..., band].sum(axis=-1).sum(axis=-1) / power.sum(axis=(-1, -2)).sum(axis=-1)
    assert (inside > 1 - 1e-12).all()  # goal: > 99 %; the mask is exact, so all but round-off
    # the noise fills the band, not a corner of it: most band bins carry energy
    assert (power[..., band] > 1e-12 * power.max()).mean() > 0.9
    # norm over channels and pixels, per image
    assert torch.allclose(noise.flatten(1).norm(dim=1), torch.full((4,), 3.0, dtype=torch.float64),
                          rtol=1e-12)


def test_frequency_noise_is_real_seeded_and_batch_independent():
    a = frequency_noise((5, 3, 32, 32), 0.4, 0.2, 2.0, seed=3)
    assert a.dtype == torch.float32 and torch.equal(a, frequency_noise((5, 3, 32, 32), 0.4, 0.2, 2.0,
                                                                         seed=3))
    assert torch.allclose(a.flatten(1).norm(dim=1), torch.full((5,), 2.0), rtol=1e-5)
    assert not torch.allclose(a, frequency_noise((5, 3, 32, 32), 0.4, 0.2, 2.0, seed=4))
    # image 3 alone, by its id, gets the noise it gets inside the batch
    alone = frequency_noise((1, 3, 32, 32), 0.4, 0.2, 2.0, seed=3, image_ids=torch.tensor([3]))
    assert torch.equal(alone[0], a[3]) and not torch.allclose(a[3], a[2])
    # the same white noise is filtered at every frequency: two disjoint bands are orthogonal
    low = frequency_noise((5, 3, 32, 32), 0.1, 0.05, 1.0, seed=3, dtype=torch.float64)
    high = frequency_noise((5, 3, 32, 32), 0.9, 0.05, 1.0, seed=3, dtype=torch.float64)
    assert (low * high).flatten(1).sum(1).abs().max() < 1e-12


def test_frequency_noise_bad_input():
    with pytest.raises(ValueError, match="no Fourier bin of a 32x32 image.*widen `bandwidth`"):
        frequency_noise((1, 3, 32, 32), 0.05, 0.01, 1.0)
    with pytest.raises(ValueError, match="frequency must lie in"):
        frequency_noise((1, 3, 32, 32), 1.5, 0.2, 1.0)


FREQ_COMMON = {**SMALL_VIT, "dataset": "digits", "max_samples": 64, "batch_size": 24}


def test_freqnoise_task_against_a_serial_loop(tmp_path):
    doc = {"name": "fn", "tasks": {
        "freqnoise": [{**FREQ_COMMON, "frequency": [0.2, 0.9], "noise_norm": 6.0},
                      {**FREQ_COMMON, "frequency": 0.5, "noise_norm": 0.0},
                      {**FREQ_COMMON, "frequency": 0.5, "noise_norm": 0.3, "space": "normalized"}],
        "evaluate": {**FREQ_COMMON}}}
    _run(doc, tmp_path)
    df = harness.load(str(tmp_path), task="freqnoise")
    ev = harness.load(str(tmp_path), task="evaluate", quantity="metrics").iloc[0]
    assert len(df) == 4 and (df["n_samples"] == 64).all() and (df["bandwidth"] == 0.2).all()
    # clean metrics are the evaluate task's on the same samples
    assert df["clean_acc"].eq(ev["acc"]).all()
    assert df["clean_nll"].sub(ev["nll"]).abs().max() < 1e-6
    assert (df["acc_drop"] == df["clean_acc"] - df["acc"]).all()
    zero = df[df["noise_norm"] == 0.0].iloc[0]
    assert zero["acc"] == zero["clean_acc"] and zero["nll"] == pytest.approx(zero["clean_nll"], rel=1e-6)
    # a plain loop: whole set in one batch, noise added in pixel units (/ std) or as is
    data = load_dataset("digits", "test")
    model = _fresh(SMALL_VIT)
    std = torch.tensor(data.std).view(1, 3, 1, 1)
    for _, row in df[df["noise_norm"] > 0].iterrows():
        noise = frequency_noise((64, 3, 32, 32), row["frequency"], 0.2, row["noise_norm"])
        x = data.x[:64] + (noise / std if row["space"] == "pixel" else noise)
        with torch.no_grad():
            ref = classification_metrics(model(x), data.y[:64])
        assert row["acc"] == pytest.approx(ref["acc"], abs=1e-12)
        assert row["nll"] == pytest.approx(ref["nll"], rel=1e-7)
        # a fresh model barely reacts (NLL moves 7e-6 .. 6e-5), far more than the match error (~4e-9)
        assert abs(row["nll"] - row["clean_nll"]) > 1e-6


def test_freqnoise_expands_the_default_grid_and_computes_clean_once():
    units = validate({"name": "g", "tasks": {"freqnoise": {**FREQ_COMMON, "max_samples": 16}}}).units()
    assert sorted(u.params["frequency"] for u in units) == list(DEFAULT_GRID)
    assert DEFAULT_GRID == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    task, cache = get_task("freqnoise"), WorkerCache()
    rows = []
    for i, unit in enumerate(units[:3]):
        ctx = UnitContext(device=CPU, cache=cache, seed=0, unit_id=unit.unit_id)
        rows += task.run(unit, ctx)
        if i == 0:
            misses = cache.misses  # dataset, model, clean metrics
    assert misses == 3 and cache.misses == misses  # later frequencies reuse all three
    assert len({r["clean_acc"] for r in rows}) == 1
    with pytest.raises(SpecError, match="frequency: 1.5 out of range"):
        validate({"name": "g", "tasks": {"freqnoise": {**FREQ_COMMON, "frequency": 1.5}}})
    with pytest.raises(SpecError, match="frequency: -0.5 is not in"):
        validate({"name": "g", "tasks": {"freqnoise": {**FREQ_COMMON, "frequency": -0.5}}})


# --------------------------------------------------------------------------- corruptions


def test_corruption_expands_to_75_units_and_checks_files_need_cifar():
    units = validate({"name": "c", "tasks": {"corruption": {**SMALL_RESNET}}}).units()
    assert len(units) == 75 and len({(u.params["corruption"], u.params["severity"]) for u in units}) == 75
    with pytest.raises(SpecError, match="cifar_c_root: the CIFAR-C files corrupt cifar10 / cifar100"):
        validate({"name": "c", "tasks": {"corruption": {**SMALL_RESNET, "cifar_c_root": "/x"}}})
    with pytest.raises(SpecError, match="corruption: unknown value 'fogg'"):
        validate({"name": "c", "tasks": {"corruption": {**SMALL_RESNET, "corruption": "fogg"}}})
    with pytest.raises(SpecError, match="severity: unknown value 6"):
        validate({"name": "c", "tasks": {"corruption": {**SMALL_RESNET, "severity": 6}}})


CORRUPT_COMMON = {**SMALL_VIT, "dataset": "digits", "max_samples": 64, "batch_size": 24,
                  "corruption": "gaussian_noise", "severity": [1, 5]}


def _serial_corruption(kind: str, severity: int, n: int = 64) -> dict[str, float]:
    """The corruption task's numbers by a plain loop: whole set in one batch, ids 0..n-1."""
    from harness.data.corruptions import corrupt

    data = load_dataset("digits", "test")
    mean, std = torch.tensor(data.mean).view(1, 3, 1, 1), torch.tensor(data.std).view(1, 3, 1, 1)
    pixels = (data.x[:n] * std + mean).clamp(0, 1)
    x = (corrupt(pixels, kind, severity, image_ids=torch.arange(n)) - mean) / std
    with torch.no_grad():
        return classification_metrics(_fresh(SMALL_VIT)(x), data.y[:n])


def test_corruption_task_against_a_serial_loop(tmp_path):
    _run({"name": "co", "tasks": {"corruption": CORRUPT_COMMON}}, tmp_path)
    df = harness.load(str(tmp_path), task="corruption").sort_values("severity")
    assert df["severity"].tolist() == [1, 5] and (df["source"] == "generated").all()
    data = load_dataset("digits", "test")
    with torch.no_grad():
        clean = classification_metrics(_fresh(SMALL_VIT)(data.x[:64]), data.y[:64])
    for _, row in df.iterrows():
        ref = _serial_corruption(row["corruption"], int(row["severity"]))
        assert row["acc"] == pytest.approx(ref["acc"], abs=1e-12)
        assert row["nll"] == pytest.approx(ref["nll"], rel=1e-5)
        assert row["ece"] == pytest.approx(ref["ece"], abs=1e-5)
        assert row["clean_acc"] == pytest.approx(clean["acc"], abs=1e-12)
        assert row["clean_nll"] == pytest.approx(clean["nll"], rel=1e-5)
        assert row["error_rel_clean"] == pytest.approx((1 - row["acc"]) - (1 - row["clean_acc"]))
    assert df["nll"].iloc[1] != pytest.approx(df["nll"].iloc[0], rel=1e-4)  # severity matters


def test_corruption_rows_say_which_frost_texture(tmp_path, monkeypatch):
    """frost rows name their layer (photos where installed, or procedural), other kinds none;
    asking for photos where they are not installed fails validation naming the fix."""
    pytest.importorskip("imagecorruptions")
    doc = {"name": "fr", "tasks": {"corruption": {**CORRUPT_COMMON, "max_samples": 16,
                                                  "corruption": ["frost", "gaussian_noise"],
                                                  "severity": 3,
                                                  "frost_texture": ["auto", "procedural"]}}}
    _run(doc, tmp_path)
    df = harness.load(str(tmp_path), task="corruption")
    got = {(r.corruption, r.frost_source if isinstance(r.frost_source, str) else None)
           for r in df.itertuples()}
    assert got == {("frost", "photos"), ("frost", "procedural"), ("gaussian_noise", None)}
    frost = df[df["corruption"] == "frost"].set_index("frost_source")
    assert frost.loc["photos", "nll"] != pytest.approx(frost.loc["procedural", "nll"], rel=1e-6)
    from harness.data.corruptions import weather

    monkeypatch.setattr(weather, "frost_photo_dir", lambda: None)
    doc["tasks"]["corruption"]["frost_texture"] = "photos"
    with pytest.raises(SpecError, match=r"frost photos are not installed; pip install 'harness\[frost\]'"):
        validate(doc)


@pytest.mark.slow
def test_robustness_tasks_on_ray_equal_local(tmp_path, ray_session):
    doc = {"name": "rob", "tasks": {"corruption": CORRUPT_COMMON,
                                    "freqnoise": {**FREQ_COMMON, "frequency": [0.3, 0.7]}}}
    units = validate(doc).units()
    local = run_units(units, str(tmp_path / "local"), RunConfig(kind="local", device="cpu"))
    remote = run_units(units, str(tmp_path / "ray"), RunConfig(kind="ray", workers=2))
    assert (local.done, remote.done, remote.failed) == (4, 4, 0)
    for task in ("corruption", "freqnoise"):
        a = comparable(harness.load(str(tmp_path / "local"), task=task))
        b = comparable(harness.load(str(tmp_path / "ray"), task=task))
        metrics = [c for c in a.columns if c.endswith(("acc", "nll", "ece", "drop", "clean"))]
        assert metrics
        a_, b_ = a.drop(columns=metrics), b.drop(columns=metrics)
        assert a_.equals(b_)
        assert np.allclose(a[metrics].to_numpy(float), b[metrics].to_numpy(float), rtol=1e-6,
                           atol=1e-7)


def test_nan_metrics_survive_the_store(tmp_path):
    # a fresh model is never > 90 % confident: acc_90 / iou_90 are NaN, stored as NaN or null
    _run({"name": "nan", "tasks": {"evaluate": {**SMALL_RESNET, "dataset": "digits",
                                                "max_samples": 32}}}, tmp_path)
    row = harness.load(str(tmp_path), task="evaluate", quantity="metrics").iloc[0]
    assert row["freq_90"] == 0.0 and math.isnan(row["acc_90"]) and math.isnan(row["iou_90"])


def _fake_cifar_c(tmp_path, monkeypatch, kinds: list[str], n_test: int = 40):
    """A fake CIFAR-10 root (n_test test images) and the generated corruptions of its whole test
    split (image ids 0 … n_test−1) written as CIFAR-10-C .npy files; returns (test split, c root)."""
    import test_datasets_disk
    from test_datasets_disk import write_fake_cifar10

    from harness.data.corruptions import SEVERITIES, corrupt
    from harness.analysis.perturb import to_pixels

    monkeypatch.delenv("HARNESS_DATA", raising=False)
    monkeypatch.setattr(test_datasets_disk, "N_TEST", n_test)
    write_fake_cifar10(tmp_path / "data")
    data = load_dataset("cifar10", "test", data_root=str(tmp_path / "data"))
    folder = tmp_path / "c" / "CIFAR-10-C"
    folder.mkdir(parents=True)
    ids = torch.arange(len(data))
    for kind in kinds:
        sets = [corrupt(to_pixels(data.x, data), kind, s, image_ids=ids) for s in SEVERITIES]
        u8 = torch.cat(sets).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        np.save(folder / f"{kind}.npy", u8.numpy())
    np.save(folder / "labels.npy", data.y.repeat(len(SEVERITIES)).numpy())
    return data, tmp_path / "c"


@pytest.mark.parametrize("subset", [{}, {"data_size": 20, "max_samples": 12},
                                    {"data_fraction": 0.5}])
def test_cifar_c_files_give_the_generated_metrics(tmp_path, monkeypatch, subset):
    """Reading the written files back must give exactly the metrics of generating them on the
    fly, whole split or stratified subset: both sides corrupt the same images, and the clean
    metrics are those of the subset's first max_samples images (a plain loop checks them)."""
    from harness.data.datasets import stratified_subset_indices

    kinds = ["gaussian_noise", "glass_blur", "jpeg_compression"]
    data, croot = _fake_cifar_c(tmp_path, monkeypatch, kinds)
    common = {**SMALL_RESNET, "dataset": "cifar10", "dataset_args": {"data_root": str(tmp_path / "data")},
              "corruption": kinds, "severity": [2, 5], "batch_size": 4, **subset}
    _run({"name": "cc", "tasks": {"corruption": [common, {**common, "cifar_c_root": str(croot)}]}},
         tmp_path / "results")
    df = harness.load(str(tmp_path / "results"), task="corruption")
    idx = torch.arange(len(data))
    if subset:
        idx = torch.from_numpy(stratified_subset_indices(
            data.y.numpy(), subset.get("data_fraction", 1.0), 0, size=subset.get("data_size")))
        assert 0 < len(idx) < len(data)
    idx = idx[:subset.get("max_samples", len(idx))]
    assert len(df) == 12 and (df["n_samples"] == len(idx)).all()
    key = ["corruption", "severity"]
    gen = df[df["source"] == "generated"].set_index(key).sort_index()
    files = df[df["source"] == "cifar_c_files"].set_index(key).sort_index()
    cols = ["acc", "nll", "ece", "clean_acc", "clean_nll", "clean_ece", "error_rel_clean"]
    assert gen.index.equals(files.index) and len(gen) == 6
    assert np.array_equal(gen[cols].to_numpy(), files[cols].to_numpy())
    assert gen["nll"].nunique() > 1  # the sets differ from each other
    with torch.no_grad():
        clean = classification_metrics(_fresh(SMALL_RESNET)(data.x[idx]), data.y[idx])
    assert np.allclose(files["clean_acc"], clean["acc"], atol=1e-12)
    assert np.allclose(files["clean_nll"], clean["nll"], rtol=1e-5)


def test_cifar_c_files_of_another_split_are_refused(tmp_path, monkeypatch):
    """Files whose labels differ from the clean split's at the subset's positions fail the unit
    with a message naming the mismatch, instead of comparing different images."""
    from tasks.corruption import _file_images

    data, croot = _fake_cifar_c(tmp_path, monkeypatch, ["gaussian_noise"])
    p = {"cifar_c_root": str(croot), "dataset": "cifar10", "corruption": "gaussian_noise",
         "severity": 1}
    labels = croot / "CIFAR-10-C" / "labels.npy"
    y = np.load(labels)
    assert np.array_equal(_file_images(p, data, 8).shape, (8, 3, 32, 32))
    np.save(labels, np.roll(y, 1))
    with pytest.raises(ValueError, match="labels differ from the clean cifar10 test split"):
        _file_images(p, data, len(data))
    np.save(labels, y[:5 * 30])
    np.save(croot / "CIFAR-10-C" / "gaussian_noise.npy",
            np.load(croot / "CIFAR-10-C" / "gaussian_noise.npy")[:5 * 30])
    with pytest.raises(ValueError, match="has 30 images, the clean cifar10 test split 40"):
        _file_images(p, data, 8)
