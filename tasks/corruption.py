"""corruption: accuracy, NLL and ECE on one CIFAR-C corruption at one severity (Park & Kim 2022, Fig. 12).

The paper's robustness is the mean accuracy over CIFAR-100-C's 15 corruptions
× 5 severities. One unit = (model or checkpoint, corruption, severity):
`corruption: all` and `severity: -1` (the defaults) expand to every kind and
every severity, 75 units per model.

Images: with `cifar_c_root: ""` (default) the unit corrupts its clean split on
the worker's device, batch by batch (`harness.data.corruptions.corrupt`: the
CIFAR-C severity table, or ImageNet-C's with `corruption_constants:
imagenet`), each image seeded by (corruption_seed, its index in the split) —
only the unit's params travel, never 75 copies of the data. Generated frost
blends in crops of ImageNet-C's frost photos where `imagecorruptions` is
installed (the `frost` extra), else a procedural texture with their moments
(`frost_texture` param: auto / photos / procedural); the `frost_source`
column says which (`files` for rows read from CIFAR-C files). With a root, the
unit reads the real CIFAR-10-C / CIFAR-100-C `.npy` files
(`harness.data.cifar_c.load_cifar_c`; `dataset` must be cifar10 or cifar100 and
`split` test, the clean reference the files corrupt). `source` says which.

Both sides use the same images: the unit's clean samples are the first
`max_samples` of its `data_fraction` / `data_size` subset, and the corrupted
ones are those very images — generated from them, or read from the files at
their positions in the test split (`Dataset.indices`; the files' labels there
must equal the split's, else the unit fails naming the mismatch). A generated
image's seed is its position in the whole split, so a subset sees the same
corruption of an image as the whole split does.

Every row carries the clean metrics of those images (computed once per
worker) and error_rel_clean = (1 − acc) − (1 − clean_acc), the corruption
error of Hendrycks & Dietterich's "relative mCE" numerator.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import torch

from harness.engine.context import UnitContext
from harness.data import Dataset
from harness.data.corruptions import (
    CORRUPTIONS,
    FROST_TEXTURES,
    SEVERITIES,
    TABLES,
    corrupt,
    frost_texture,
)
from harness.analysis.metrics import classification_metrics
from harness.engine.params import Param
from harness.analysis.perturb import from_pixels, to_pixels
from tasks._workload import cached_clean_metrics, unit_samples
from harness.engine.registry import Task, expand_axis, register_task
from harness.engine.units import WorkUnit
from tasks._workload import EVAL_PARAMS, MODEL_PARAMS, check_model_and_data
from harness.analysis.perturb import predict_logits

ALL_KINDS = "all"
ALL_SEVERITIES = -1
CIFAR_C_DATASETS = ("cifar10", "cifar100")
#: The params a unit's corrupted images depend on: units differing only here share clean metrics.
CORRUPTION_PARAMS = ("corruption", "severity", "cifar_c_root", "corruption_constants",
                     "corruption_seed", "frost_texture")

PARAMS = MODEL_PARAMS + EVAL_PARAMS + (
    Param("corruption", str, ALL_KINDS, "CIFAR-10-C corruption kind; all: one unit per kind",
          choices=(ALL_KINDS, *CORRUPTIONS)),
    Param("severity", int, ALL_SEVERITIES, "severity 1..5; -1: one unit per severity",
          choices=(ALL_SEVERITIES, *SEVERITIES)),
    Param("cifar_c_root", str, "", "folder of the CIFAR-10-C / CIFAR-100-C .npy files; empty: "
          "generate the corruptions on the fly"),
    Param("corruption_constants", str, "cifar", "severity table of generated corruptions: "
          "cifar (CIFAR-10-C) or imagenet (ImageNet-C, as the imagecorruptions package)",
          choices=tuple(sorted(TABLES))),
    Param("corruption_seed", int, 0, "seed of generated corruptions (with each image's index)",
          min=0),
    Param("frost_texture", str, "auto", "generated frost: the ImageNet-C frost photos (photos; "
          "needs the frost extra), a texture with their moments (procedural), or auto: photos "
          "where installed", choices=FROST_TEXTURES),
)

OUTPUT = pa.schema([
    pa.field("source", pa.string()),  # generated | cifar_c_files
    pa.field("acc", pa.float64()),
    pa.field("nll", pa.float64()),
    pa.field("ece", pa.float64()),
    pa.field("clean_acc", pa.float64()),
    pa.field("clean_nll", pa.float64()),
    pa.field("clean_ece", pa.float64()),
    pa.field("error_rel_clean", pa.float64()),  # (1 - acc) - (1 - clean_acc)
    pa.field("n_samples", pa.int64()),
    pa.field("frost_source", pa.string()),  # frost rows: photos | procedural | files
])


def _file_images(p: dict[str, Any], data: Dataset, n: int) -> torch.Tensor:
    """Pixels in [0, 1] of the unit's CIFAR-C set at the positions of the clean samples
    `data[:n]` in the test split; ValueError when the files do not hold those images."""
    from harness.data.cifar_c import load_cifar_c

    where = f"{p['cifar_c_root']}: {p['corruption']} severity {p['severity']}"
    x, y = load_cifar_c(p["cifar_c_root"], p["dataset"], p["corruption"], p["severity"])
    pos = data.split_positions()[:n]
    if data.indices is None and len(x) != len(data):
        raise ValueError(f"{where} has {len(x)} images, the clean {p['dataset']} test split "
                         f"{len(data)}: the files must corrupt exactly that split")
    if int(pos.max()) >= len(x):
        raise ValueError(f"{where} has {len(x)} images; the clean samples reach position "
                         f"{int(pos.max())} of the test split: the files must corrupt that split")
    if not torch.equal(y[pos], data.y[:n]):
        bad = int((y[pos] != data.y[:n]).sum())
        raise ValueError(f"{where}: {bad} of {n} labels differ from the clean {p['dataset']} "
                         "test split's at the same positions: the files do not corrupt that split")
    return x[pos]


def run(unit: WorkUnit, ctx: UnitContext) -> list[dict[str, Any]]:
    p = unit.params
    if p["corruption"] == ALL_KINDS or p["severity"] == ALL_SEVERITIES:
        raise ValueError("corruption 'all' / severity -1 are expanded into one unit each; a unit "
                         "needs one corruption kind and one severity")
    model, data, n = unit_samples(ctx, p)
    clean = cached_clean_metrics(ctx, p, model, data, n, CORRUPTION_PARAMS)
    if p["cifar_c_root"]:
        source = "cifar_c_files"
        pixels = _file_images(p, data, n)
        logits = predict_logits(model, from_pixels(pixels, data), p["batch_size"], ctx.device)
    else:
        source = "generated"
        positions = data.split_positions()[:n].to(ctx.device)

        def corrupted(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
            out = corrupt(to_pixels(x, data), p["corruption"], p["severity"],
                          image_ids=positions[ids], seed=p["corruption_seed"],
                          constants=p["corruption_constants"], frost_texture=p["frost_texture"])
            return from_pixels(out, data)

        logits = predict_logits(model, data.x[:n], p["batch_size"], ctx.device, corrupted)
    m = classification_metrics(logits, data.y[:n], p["ece_bins"])
    return [{"source": source, **m, "clean_acc": clean["acc"], "clean_nll": clean["nll"],
             "clean_ece": clean["ece"], "error_rel_clean": (1 - m["acc"]) - (1 - clean["acc"]),
             "n_samples": n, "frost_source": _frost_source(p)}]


def _frost_source(p: dict[str, Any]) -> str | None:
    """What a frost row's layer is: the files' own, the photos or the procedural texture."""
    if p["corruption"] != "frost":
        return None
    return "files" if p["cifar_c_root"] else frost_texture(p["frost_texture"])


def check(params: dict[str, Any]) -> list[str]:
    errors = check_model_and_data(params)
    if params["cifar_c_root"]:
        if params["dataset"] not in CIFAR_C_DATASETS:
            errors.append(f"cifar_c_root: the CIFAR-C files corrupt cifar10 / cifar100, but dataset "
                          f"is {params['dataset']!r}: set dataset, or cifar_c_root: '' to generate")
        if params["split"] != "test":
            errors.append("split: CIFAR-C files corrupt the test split; set split: test")
    elif params["frost_texture"] == "photos" and params["corruption"] in ("frost", ALL_KINDS):
        try:
            frost_texture("photos")
        except ValueError as e:
            errors.append(str(e))
    return errors


def expand(combo: dict[str, Any]) -> list[dict[str, Any]]:
    """corruption 'all' -> every kind, severity -1 -> every severity (kinds outer, severities inner)."""
    return [unit for kind in expand_axis(combo, "corruption", ALL_KINDS, CORRUPTIONS)
            for unit in expand_axis(kind, "severity", ALL_SEVERITIES, SEVERITIES)]


register_task(Task(
    name="corruption",
    description="accuracy / NLL / ECE on one CIFAR-C corruption and severity, beside clean",
    params=PARAMS,
    output_schema=OUTPUT,
    run=run,
    expand=expand,
    check=check,
))
