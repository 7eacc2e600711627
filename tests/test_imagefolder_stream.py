"""imagefolder streams from disk: flat worker memory on a 20k-image folder, the 224-px path in the
evaluation tasks, and streamed batches equal to eagerly decoded images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import harness
from harness.data.datasets import ImageFiles, load_dataset
from harness.engine.executor import RunConfig, run_units
from harness.engine.spec import validate
from harness.analysis.perturb import predict_logits

ROOT = Path(__file__).resolve().parents[1]


def write_folder(root: Path, splits: dict[str, int], classes: int, size: tuple[int, int],
                 seed: int = 0) -> None:
    """root/<split>/c<k>/<i>.png with `n` seeded random images per split, spread over the classes."""
    rng = np.random.default_rng(seed)
    for split, n in splits.items():
        for k in range(classes):
            (root / split / f"c{k}").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / f"c{i % classes}" / f"{i}.png")


def test_streamed_batches_equal_decoded_images(tmp_path):
    write_folder(tmp_path, {"train": 10, "val": 7}, 3, (30, 20))
    data = load_dataset("imagefolder", "test", data_root=tmp_path, img_size=16, workers=2)
    assert isinstance(data.x, ImageFiles) and data.x.shape == (7, 3, 16, 16)
    eager = data.x[torch.arange(7)]
    streamed = torch.cat(list(data.x.batches(3)))
    assert torch.equal(streamed, eager)
    assert isinstance(data.x[:4], ImageFiles) and len(data.x[:4]) == 4  # a slice reads nothing
    assert torch.equal(data.x[2:5].to("cpu"), eager[2:5])  # ... until it is moved to a device
    # a subset is a view of the same files: same images as indexing the whole split
    sub = load_dataset("imagefolder", "test", data_root=tmp_path, img_size=16, data_size=3)
    assert isinstance(sub.x, ImageFiles) and len(sub) == 3
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 3))
    assert torch.equal(predict_logits(model, data.x, 4, torch.device("cpu")), model(eager))


MEASURE = """
import json, resource, sys, torch
from harness.data.datasets import load_dataset
from harness.analysis.perturb import predict_logits
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(),
                            torch.nn.Linear(48, 2))
data = load_dataset("imagefolder", "train", data_root=sys.argv[1], img_size=32, workers=2)
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
marks = {"start": peak()}

def record(batch, ids):  # the peak once the loader runs (batch 4: first 1,024 images), then at the end
    if int(ids[0]) == 4 * 256:
        marks["warm"] = peak()
    return batch

logits = predict_logits(model, data.x, 256, torch.device("cpu"), record)
print(json.dumps({"n": len(logits), "grew": peak() - marks["warm"], "total": peak() - marks["start"],
                  "split_bytes": 4 * 3 * 32 * 32 * len(data)}))
"""


@pytest.mark.slow
def test_a_20k_image_folder_streams_in_flat_worker_memory(tmp_path):
    n = 20_000
    write_folder(tmp_path, {"train": n}, 2, (8, 8))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path)], env=env, check=True,
                         capture_output=True, text=True, timeout=600).stdout
    got = json.loads(out.strip().splitlines()[-1])
    print("imagefolder_stream_memory", got)
    assert got["n"] == n
    # held whole, the split alone would take 245 MB as float32; streamed, the peak does not grow
    # while the last 18,976 images pass (one batch of 256 images at 32 px is 3 MB)
    assert got["grew"] < got["split_bytes"] / 10, got
    # and all of it, start-up of the loader included (measured: 0-15 MB), stays below half the
    # split: decoding it whole first would take all 245 MB
    assert got["total"] < got["split_bytes"] / 2, got


@pytest.mark.slow
def test_the_224px_path_runs_evaluate_landscape_hessian_and_corruption(tmp_path):
    write_folder(tmp_path / "in", {"train": 4, "val": 4}, 2, (300, 256))
    common = {"model": "resnet18", "model_args": {"width": 8, "layers": [1, 1, 1, 1]},
              "dataset": "imagefolder", "dataset_args": {"data_root": str(tmp_path / "in"),
                                                         "workers": 2}}
    measure = {"num_samples": 4, "batch_size": 4, "augment": "none"}
    doc = {"name": "in224", "tasks": {
        "evaluate": {**common, "batch_size": 4},
        "landscape": {**common, **measure, "dims": 1, "a_points": 3, "chunk_size": 3},
        "hessian": {**common, **measure, "top_k": 1, "max_iter": 4, "batch": 0,
                    "penalty": "half_sq"},
        "corruption": {**common, "batch_size": 4, "corruption": "gaussian_noise", "severity": 1,
                       "corruption_constants": "imagenet"},
    }}
    units = validate(doc).units()
    summary = run_units(units, str(tmp_path / "r"), RunConfig(kind="local", device="cpu"))
    assert (summary.done, summary.failed) == (len(units), 0), summary.errors
    ev = harness.load(str(tmp_path / "r"), task="evaluate")
    assert ev["n_samples"].iloc[0] == 4 and ev["quantity"].notna().all()
    co = harness.load(str(tmp_path / "r"), task="corruption")
    assert co["n_samples"].iloc[0] == 4 and co["source"].iloc[0] == "generated"
    hs = harness.load(str(tmp_path / "r"), task="hessian")
    assert np.isfinite(hs.select_dtypes("number").to_numpy(dtype=float)).any()
    assert len(harness.load(str(tmp_path / "r"), task="landscape")) >= 3
