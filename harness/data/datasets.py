"""Dataset registry: name -> in-memory, normalized (N, 3, H, W) image tensors.

Every dataset but `imagefolder` is returned whole as tensors (they are small,
and a worker caches them across units, so there is no DataLoader in their hot
path); `imagefolder` keeps its images on disk and streams them (`ImageFiles`). The *split itself* never depends on `seed` — the
test set must be the same for every model in a sweep — only the `data_fraction`
/ `data_size` subset does (data-size regimes are stratified, seeded and nested:
for one seed the 10% subset lies inside the 50% subset, so a data-size sweep
adds samples instead of drawing a fresh set at each size).

Datasets:
  digits     scikit-learn's bundled 8x8 digits, 32x32x3 (always available).
  synthetic  seeded class prototypes + noise, 32x32x3 (shape/speed tests).
  cifar10    local torchvision-format root (`cifar-10-batches-py`).
  cifar100   local torchvision-format root (`cifar-100-python`).
  imagefolder  ImageNet-style `root/{train,val}/<class>/<image>`, streamed from
             disk through a DataLoader (optionally capped at `max_images`).

Local roots come from the `data_root` dataset arg, else the `HARNESS_DATA`
environment variable, else `./data`; nothing is downloaded unless a loader is
given `download=True`.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "Dataset",
    "ImageFiles",
    "DATASETS",
    "SPLITS",
    "DATA_ENV",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DatasetNotFoundError",
    "register_dataset",
    "dataset_names",
    "validate_dataset_args",
    "load_dataset",
    "resolve_data_root",
    "stratified_order",
    "stratified_subset_indices",
]

SPLITS = ("train", "test")

#: Environment variable naming the default local data root.
DATA_ENV = "HARNESS_DATA"

# The constants of the paper's code (xxxnell/how-do-vits-work, ops/datasets.py).
# CIFAR-10's std is the widely copied (0.2023, 0.1994, 0.2010), not the exact
# per-channel pixel std (~0.247, 0.243, 0.261): kept for comparability.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Dataset:
    """A whole split in memory.

    `mean`/`std` are the per-channel constants `x` was normalized with
    (`x = (pixel - mean) / std`, pixels in [0, 1]), so that augmentations can
    work in pixel space (black padding, RandAugment) and normalize back.
    `indices`: each sample's position in the loader's whole split (None: the
    whole split in order), so that other files of the same split (CIFAR-C)
    and per-image seeds can follow a `data_fraction` / `data_size` subset.
    """

    name: str
    x: torch.Tensor  # float32 (N, 3, H, W), normalized; H = W = 32; imagefolder: ImageFiles
    y: torch.Tensor  # int64 (N,)
    num_classes: int
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    indices: torch.Tensor | None = None  # int64 (N,), ascending

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def split_positions(self) -> torch.Tensor:
        """int64 (N,): each sample's position in the whole split (`indices`, or 0 … N−1)."""
        return self.indices if self.indices is not None else torch.arange(len(self))


class DatasetNotFoundError(FileNotFoundError, ValueError):
    """A local dataset root is missing; the message says where we looked and how to fix it.

    Also a ValueError, so callers that treat bad dataset arguments as a
    configuration error catch it the same way.
    """


#: name -> loader(split, **kwargs) returning the *whole* split; `load_dataset`
#: does the subsetting. A loader's keyword arguments (with defaults) are the
#: dataset's allowed kwargs.
DATASETS: dict[str, Callable[..., Dataset]] = {}

#: name -> cheap check(kwargs) -> problems, run by `validate_dataset_args`
#: (must not touch the disk: the spec validator calls it for every unit).
_CHECKS: dict[str, Callable[[dict[str, Any]], list[str]]] = {}


def register_dataset(
    name: str,
    loader: Callable[..., Dataset],
    check: Callable[[dict[str, Any]], list[str]] | None = None,
) -> Callable[..., Dataset]:
    """Register `loader(split, **kwargs) -> Dataset` under `name`.

    `check(kwargs) -> list[str]` optionally validates argument *values* cheaply
    (no disk access), so bad values are reported before any unit runs.
    """
    DATASETS[name] = loader
    if check is not None:
        _CHECKS[name] = check
    else:
        _CHECKS.pop(name, None)
    return loader


def dataset_names() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(DATASETS)


def _loader_kwargs(name: str) -> dict[str, Any]:
    """The keyword arguments a loader accepts, with their defaults."""
    params = list(inspect.signature(DATASETS[name]).parameters.values())[1:]  # skip `split`
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def validate_dataset_args(
    name: str,
    split: str = "test",
    data_fraction: float = 1.0,
    kwargs: dict | None = None,
    data_size: int | None = None,
) -> list[str]:
    """Human-readable problems with a dataset request (empty if fine).

    Cheap (loads nothing, reads no disk), so the spec validator can call it for
    every unit. `data_size` (absolute subset size) excludes `data_fraction < 1`;
    whether it fits the split is only known at load time.
    """
    if name not in DATASETS:
        return [f"unknown dataset {name!r}; allowed: {', '.join(dataset_names())}"]
    errors: list[str] = []
    if split not in SPLITS:
        errors.append(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    fraction_ok = not (
        isinstance(data_fraction, bool)
        or not isinstance(data_fraction, (int, float))
        or not 0.0 < data_fraction <= 1.0
    )
    if not fraction_ok:
        errors.append(f"data_fraction must be a number in (0, 1], got {data_fraction!r}")
    if data_size is not None:
        if not _is_int(data_size) or data_size < 1:
            errors.append(f"data_size must be an int >= 1 (or null for the whole split), got {data_size!r}")
        elif fraction_ok and data_fraction < 1.0:
            errors.append(
                f"data_size={data_size} and data_fraction={data_fraction} are mutually exclusive; "
                "give one of them (leave data_fraction at 1.0 when using data_size)"
            )
    allowed = _loader_kwargs(name)
    known = {}
    for key, value in (kwargs or {}).items():
        if key not in allowed:
            listed = ", ".join(f"{k}={v!r}" for k, v in allowed.items()) or "(none)"
            errors.append(f"dataset {name!r}: unknown arg {key!r}; allowed (with defaults): {listed}")
        else:
            known[key] = value
    if name in _CHECKS:
        errors += [f"dataset {name!r}: {e}" for e in _CHECKS[name](known)]
    return errors


# --------------------------------------------------------------------------- subsets


def stratified_order(y: np.ndarray, seed: int) -> np.ndarray:
    """A seeded permutation of `range(len(y))` whose every prefix is stratified.

    Why: data-size regimes must be *nested* — for one seed the first k samples
    of this order are the size-k subset, so a smaller subset always lies inside
    a larger one. Each class is shuffled (seeded); its r-th sample gets the key
    (r + 0.5) / n_c (Webster/Sainte-Laguë apportionment), so any prefix holds
    about k * n_c / N of class c (within one for balanced classes). The first
    sample of every class is moved to the front, so any prefix of length >= the
    number of classes sees every class. Ties are broken by the seed.
    """
    y = np.asarray(y)
    n = len(y)
    rng = np.random.default_rng(seed)
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    rank = np.empty(n, dtype=np.int64)
    by_class = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    for ci in range(len(classes)):
        members = by_class[starts[ci]:starts[ci + 1]]
        rank[rng.permutation(members)] = np.arange(len(members))
    key = (rank + 0.5) / counts[inverse]
    key[rank == 0] = -1.0
    tie = rng.random(n)
    return np.lexsort((tie, key))


def stratified_subset_indices(
    y: np.ndarray, fraction: float = 1.0, seed: int = 0, *, size: int | None = None
) -> np.ndarray:
    """Indices of a seeded, stratified, nested subset of `y`, sorted ascending.

    The subset is the first k entries of `stratified_order(y, seed)`, with
    k = `size` if given, else round(fraction * N) but at least the number of
    classes (so a tiny fraction still sees every class). Subsets of one seed are
    nested: a smaller fraction or size lies inside a larger one. fraction >= 1
    (and size = N) return the whole split in its fixed order.
    Raises ValueError when `size` exceeds N or is below the number of classes.
    """
    y = np.asarray(y)
    n = len(y)
    n_classes = len(np.unique(y))
    if size is not None:
        if size > n:
            raise ValueError(f"data_size={size} exceeds the split's {n} samples")
        if size < n_classes:
            raise ValueError(
                f"data_size={size} is smaller than the {n_classes} classes present; "
                f"every class keeps at least one sample, so use data_size >= {n_classes}"
            )
        k = int(size)
    else:
        if fraction >= 1.0:
            return np.arange(n)
        k = max(int(round(fraction * n)), n_classes)
    if k >= n:
        return np.arange(n)
    return np.sort(stratified_order(y, seed)[:k])


def load_dataset(
    name: str,
    split: str = "test",
    data_fraction: float = 1.0,
    seed: int = 0,
    data_size: int | None = None,
    **kwargs: Any,
) -> Dataset:
    """Load a split of dataset `name`, optionally a stratified seeded subset.

    With `data_fraction=1` (and no `data_size`) the whole split comes back in a
    fixed order whatever the seed; with `data_fraction<1` or `data_size=k` a
    stratified subset chosen by `seed`, nested across sizes (see
    `stratified_order`). Raises ValueError naming the allowed values on a bad
    name/split/fraction/size/kwarg, DatasetNotFoundError for a missing local root.
    """
    errors = validate_dataset_args(name, split, data_fraction, kwargs, data_size)
    if errors:
        raise ValueError("; ".join(errors))
    full = DATASETS[name](split, **kwargs)
    if data_size is None and data_fraction >= 1.0:
        return full
    idx = stratified_subset_indices(full.y.numpy(), float(data_fraction), seed, size=data_size)
    if len(idx) == len(full):
        return full
    t = torch.from_numpy(idx).long()
    x = full.x.select(idx) if isinstance(full.x, ImageFiles) else full.x[t]
    return replace(full, x=x, y=full.y[t], indices=t)


# --------------------------------------------------------------------------- local roots


def resolve_data_root(data_root: str | os.PathLike | None = None) -> tuple[Path, str]:
    """The local data root and where it came from: `data_root`, else $HARNESS_DATA, else ./data.

    Returned absolute (so error messages name the real place), with a short
    description of its origin for those messages.
    """
    if data_root not in (None, ""):
        return Path(data_root).expanduser().absolute(), "from data_root"
    env = os.environ.get(DATA_ENV, "")
    if env:
        return Path(env).expanduser().absolute(), f"from ${DATA_ENV}"
    return Path("data").absolute(), f"default ./data (${DATA_ENV} is not set)"


def _how_to_fix(what: str, can_download: bool) -> str:
    fix = (
        f"Fix: pass data_root (--data-root, or dataset_args: {{data_root: ...}}) pointing at the "
        f"folder that contains {what}, or set {DATA_ENV}=/path/to/that/folder"
    )
    if can_download:
        fix += ", or set dataset_args: {download: true} to download it there (needs network)"
    return fix + "."


def _check_root_args(kwargs: dict[str, Any]) -> list[str]:
    errors = []
    root = kwargs.get("data_root")
    if root is not None and not isinstance(root, (str, os.PathLike)):
        errors.append(f"data_root must be a path string or null, got {root!r}")
    if "download" in kwargs and not isinstance(kwargs["download"], bool):
        errors.append(f"download must be true or false, got {kwargs['download']!r}")
    return errors


# --------------------------------------------------------------------------- CIFAR


@functools.lru_cache(maxsize=1)
def _cifar_classes() -> dict[str, type]:
    """torchvision's CIFAR readers with the md5 checks replaced by presence checks.

    Why: the reading (pickle layout, label keys, HWC transpose) is torchvision's,
    but its per-file md5 check rejects the tiny fake roots the tests write (and
    costs a pass over 170 MB per load). `download=True` still verifies the
    downloaded archive's md5.
    """
    from torchvision.datasets import CIFAR10, CIFAR100

    class _Presence:
        def _check_integrity(self) -> bool:  # type: ignore[override]
            folder = Path(self.root) / self.base_folder
            names = [f for f, _ in self.train_list + self.test_list] + [self.meta["filename"]]
            return all((folder / f).is_file() for f in names)

        def _load_meta(self) -> None:  # type: ignore[override]
            with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as fh:
                self.classes = pickle.load(fh, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    class LocalCIFAR10(_Presence, CIFAR10):
        pass

    class LocalCIFAR100(_Presence, CIFAR100):
        pass

    return {"cifar10": LocalCIFAR10, "cifar100": LocalCIFAR100}


_CIFAR = {
    # name: (title, torchvision folder, num_classes, mean, std, extra folder names under the root)
    "cifar10": ("CIFAR-10", "cifar-10-batches-py", 10, CIFAR10_MEAN, CIFAR10_STD, ("cifar10", "cifar-10")),
    "cifar100": ("CIFAR-100", "cifar-100-python", 100, CIFAR100_MEAN, CIFAR100_STD, ("cifar100", "cifar-100")),
}


def _cifar_files(name: str) -> list[str]:
    cls = _cifar_classes()[name]
    return [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]


def _find_cifar_root(name: str, data_root: Any, download: bool) -> Path:
    """The torchvision root (folder holding the pickle folder) to read, or a clear error."""
    title, folder, *_, extra = _CIFAR[name]
    root, origin = resolve_data_root(data_root)
    candidates = [root] + [root / e for e in extra]
    if root.name == folder:  # pointed at the pickle folder itself
        candidates.insert(0, root.parent)
    files = _cifar_files(name)
    for cand in candidates:
        if all((cand / folder / f).is_file() for f in files):
            return cand
    if download:
        return root
    looked = "\n".join(f"  {c / folder}" for c in candidates)
    partial = [c for c in candidates if (c / folder).is_dir()]
    missing = ""
    if partial:
        gone = [f for f in files if not (partial[0] / folder / f).is_file()]
        missing = f"\n{partial[0] / folder} exists but lacks: {', '.join(gone)}"
    raise DatasetNotFoundError(
        f"{name}: {title} not found. Looked for the torchvision folder {folder!r} "
        f"(files {', '.join(files)}) at:\n{looked}\n"
        f"(data root {root}, {origin}).{missing}\n{_how_to_fix(repr(folder), True)}"
    )


def _load_cifar(name: str, split: str, data_root: Any, download: bool) -> Dataset:
    """Read a whole CIFAR split with torchvision; normalize with the paper's constants."""
    _, _, num_classes, mean, std, _ = _CIFAR[name]
    root = _find_cifar_root(name, data_root, download)
    ds = _cifar_classes()[name](str(root), train=(split == "train"), download=download)
    raw = torch.from_numpy(np.ascontiguousarray(ds.data))  # uint8 (N, 32, 32, 3)
    y = torch.as_tensor(np.asarray(ds.targets, dtype=np.int64))
    del ds
    x = _normalize_uint8(raw.permute(0, 3, 1, 2), mean, std)
    return Dataset(name=name, x=x, y=y, num_classes=num_classes, mean=mean, std=std)


def _normalize_uint8(raw: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 normalized, in place on one float buffer (peak = float + uint8)."""
    x = torch.empty(raw.shape, dtype=torch.float32, device=raw.device)
    x.copy_(raw)
    m = torch.tensor(mean, dtype=torch.float32, device=raw.device).view(1, 3, 1, 1) * 255.0
    s = torch.tensor(std, dtype=torch.float32, device=raw.device).view(1, 3, 1, 1) * 255.0
    return x.sub_(m).div_(s)


def _load_cifar10(split: str, *, data_root: str | None = None, download: bool = False) -> Dataset:
    """CIFAR-10 from a local torchvision root: 50000 train / 10000 test, 10 classes.

    Root: `data_root`, else $HARNESS_DATA, else ./data; the folder holding
    `cifar-10-batches-py` (also accepted: `<root>/cifar10/`, or the pickle folder
    itself). Downloads only with `download=True`. Normalized with the paper's
    constants `CIFAR10_MEAN`/`CIFAR10_STD`. The train split takes 614 MB as float32.
    """
    return _load_cifar("cifar10", split, data_root, download)


def _load_cifar100(split: str, *, data_root: str | None = None, download: bool = False) -> Dataset:
    """CIFAR-100 (fine labels) from a local torchvision root: 50000 train / 10000 test.

    Root: as for cifar10, holding `cifar-100-python` (or `<root>/cifar100/`).
    Normalized with `CIFAR100_MEAN`/`CIFAR100_STD`.
    """
    return _load_cifar("cifar100", split, data_root, download)


register_dataset("cifar10", _load_cifar10, _check_root_args)
register_dataset("cifar100", _load_cifar100, _check_root_args)


# --------------------------------------------------------------------------- imagefolder

_IMAGEFOLDER_SPLIT_DIRS = {"train": ("train",), "test": ("val", "test")}
_IMAGEFOLDER_CAP_SEED = 0  # fixed: which images fill the cap never depends on a unit's seed


def _read_image(path: str, img_size: int, crop_pct: float) -> torch.Tensor:
    """One image as uint8 (3, img_size, img_size): shorter side to img_size/crop_pct, center crop."""
    from PIL import Image
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    with Image.open(path) as im:
        im = im.convert("RGB")
        im = TF.resize(im, int(math.floor(img_size / crop_pct)), interpolation=InterpolationMode.BILINEAR)
        im = TF.center_crop(im, [img_size, img_size])
        return TF.pil_to_tensor(im)


class _Decoded(torch.utils.data.Dataset):
    """What a DataLoader worker holds: paths and the transform (no pixels)."""

    def __init__(self, paths: list[str], img_size: int, crop_pct: float,
                 mean: tuple[float, float, float], std: tuple[float, float, float]) -> None:
        self.paths, self.img_size, self.crop_pct = paths, img_size, crop_pct
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        raw = _read_image(self.paths[i], self.img_size, self.crop_pct)
        return _normalize_uint8(raw[None], self.mean, self.std)[0]


class ImageFiles:
    """The images of a split left on disk and decoded when used: `Dataset.x` of `imagefolder`.

    Why: an ImageNet split does not fit in a worker's memory (1.28M images at
    224 px are 770 GB as float32). Only the paths are held. A slice
    (`x[:n]`) is a view that reads nothing; `batches()` streams a view through a
    DataLoader (worker processes decode and normalize, pinned memory on CUDA); any
    other index (an index tensor, a mask, an int) and `.to(device)`
    decode just those images into a normalized float tensor, exactly as the
    batches would be.
    """

    def __init__(self, paths: list[str], img_size: int, crop_pct: float,
                 mean: tuple[float, float, float], std: tuple[float, float, float],
                 workers: int = 4) -> None:
        self.paths, self.img_size, self.crop_pct = list(paths), img_size, crop_pct
        self.mean, self.std, self.workers = mean, std, workers

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), 3, self.img_size, self.img_size)

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def select(self, idx: Any) -> "ImageFiles":
        """A view of the images at `idx` (positions), reading nothing."""
        keep = np.asarray(idx).reshape(-1)
        return ImageFiles([self.paths[int(i)] for i in keep], self.img_size, self.crop_pct,
                          self.mean, self.std, self.workers)

    def __getitem__(self, idx: Any) -> Any:
        if isinstance(idx, slice):
            return ImageFiles(self.paths[idx], self.img_size, self.crop_pct, self.mean, self.std,
                              self.workers)
        if isinstance(idx, (int, np.integer)):
            return self.select([idx])[torch.arange(1)][0]
        if isinstance(idx, torch.Tensor) and idx.dtype == torch.bool:
            idx = torch.nonzero(idx).view(-1)
        view = self.select(idx.cpu().numpy() if isinstance(idx, torch.Tensor) else idx)
        raw = torch.empty(view.shape, dtype=torch.uint8)
        with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
            for i, img in enumerate(pool.map(
                    lambda p: _read_image(p, self.img_size, self.crop_pct), view.paths)):
                raw[i] = img
        return _normalize_uint8(raw, self.mean, self.std)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> torch.Tensor:
        """These images decoded onto `device`: what `x[i:j].to(device)` gives for a tensor, so
        code that walks a split in slices reads one slice at a time (no DataLoader prefetch)."""
        return self[torch.arange(len(self))].to(device, non_blocking=non_blocking)

    def batches(self, batch_size: int, device: torch.device | str = "cpu"):
        """Normalized float batches on `device`, in order, decoded by DataLoader workers.

        The workers also normalize (with `x[idx]`'s arithmetic, so both give the same
        values), and batches reach this process in shared memory, pinned on CUDA: the
        process that runs the model allocates no per-batch buffer. (It did when it
        normalized uint8 batches itself: glibc's heap then grew by up to 150 MB over
        20,000 images, in some runs.)
        """
        device = torch.device(device)
        workers = min(self.workers, os.cpu_count() or 1)
        loader = torch.utils.data.DataLoader(
            _Decoded(self.paths, self.img_size, self.crop_pct, self.mean, self.std),
            batch_size=batch_size, shuffle=False, num_workers=workers,
            pin_memory=device.type == "cuda", prefetch_factor=2 if workers > 0 else None)
        for x in loader:
            yield x.to(device, non_blocking=True)


def _find_imagefolder_split(data_root: Any, split: str) -> tuple[Path, Path]:
    """(dataset root, split folder) for an ImageNet-style tree, or a clear error."""
    root, origin = resolve_data_root(data_root)
    candidates = [root, root / "imagenet"]
    for cand in candidates:
        for sub in _IMAGEFOLDER_SPLIT_DIRS[split]:
            if (cand / sub).is_dir():
                return cand, cand / sub
    looked = "\n".join(f"  {c / s}" for c in candidates for s in _IMAGEFOLDER_SPLIT_DIRS[split])
    raise DatasetNotFoundError(
        f"imagefolder: no {split!r} split folder found. Looked for <root>/<split>/<class>/<images> at:\n"
        f"{looked}\n(data root {root}, {origin}).\n"
        + _how_to_fix("'train' and 'val' (each with one sub-folder per class)", False)
    )


def _class_names(root: Path) -> list[str]:
    """Sorted union of class folders over both splits, so class indices agree between them."""
    names: set[str] = set()
    for subs in _IMAGEFOLDER_SPLIT_DIRS.values():
        for sub in subs:
            if (root / sub).is_dir():
                names |= {e.name for e in os.scandir(root / sub) if e.is_dir()}
    return sorted(names)


def _load_imagefolder(
    split: str,
    *,
    data_root: str | None = None,
    img_size: int = 224,
    max_images: int = 0,
    crop_pct: float = 0.875,
    workers: int = 4,
) -> Dataset:
    """An ImageNet-style folder `root/{train,val}/<class>/<image files>` ("test" reads `val`, else `test`).

    Root: `data_root`, else $HARNESS_DATA, else ./data (also accepted:
    `<root>/imagenet/`). Classes are the sorted union of class folders of both
    splits. The images stay on disk (`x` is an `ImageFiles`): evaluations stream
    them through a DataLoader with `workers` processes, so a worker's memory does
    not grow with the folder. `max_images` > 0 keeps a class-stratified subset of
    that many, chosen with a fixed seed (the same for every unit;
    `data_fraction`/`data_size` then subset *these*). Each image is resized
    (bilinear) so its shorter side is floor(img_size / crop_pct), center-cropped
    to img_size (crop_pct 0.875: the standard 256 -> 224 eval transform; 1.0
    keeps the whole shorter side) and normalized with ImageNet mean/std.
    """
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    root, folder = _find_imagefolder_split(data_root, split)
    classes = _class_names(root)
    if not classes:
        raise DatasetNotFoundError(
            f"imagefolder: {folder} has no class sub-folders; expected {folder}/<class>/<image files> "
            "(ImageNet's flat val folder must first be sorted into class folders)"
        )
    samples = make_dataset(str(folder), {c: i for i, c in enumerate(classes)},
                           extensions=IMG_EXTENSIONS, allow_empty=True)
    if not samples:
        raise DatasetNotFoundError(
            f"imagefolder: no image files ({', '.join(IMG_EXTENSIONS)}) under {folder}/<class>/"
        )
    labels = np.array([c for _, c in samples], dtype=np.int64)
    if 0 < max_images < len(samples):
        keep = stratified_subset_indices(labels, 1.0, _IMAGEFOLDER_CAP_SEED,
                                         size=max(max_images, len(np.unique(labels))))
    else:
        keep = np.arange(len(samples))
    x = ImageFiles([samples[i][0] for i in keep], img_size, crop_pct, IMAGENET_MEAN, IMAGENET_STD,
                   workers)
    y = torch.from_numpy(labels[keep].copy())
    return Dataset(name="imagefolder", x=x, y=y, num_classes=len(classes),  # type: ignore[arg-type]
                   mean=IMAGENET_MEAN, std=IMAGENET_STD)


def _check_imagefolder(kwargs: dict[str, Any]) -> list[str]:
    errors = _check_root_args(kwargs)
    for key, low in (("img_size", 1), ("max_images", 0), ("workers", 0)):
        if key in kwargs and (not _is_int(kwargs[key]) or kwargs[key] < low):
            errors.append(f"{key} must be an int >= {low}, got {kwargs[key]!r}")
    pct = kwargs.get("crop_pct", 0.875)
    if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 0.0 < pct <= 1.0:
        errors.append(f"crop_pct must be a number in (0, 1], got {pct!r}")
    return errors


register_dataset("imagefolder", _load_imagefolder, _check_imagefolder)


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
    The normalization constants (pixels in [0, 1]) are under the key "stats".
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
    out["stats"] = (mean.view(3), std.view(3))
    return out


def _load_digits(split: str) -> Dataset:
    """scikit-learn's handwritten digits: 1797 images, 10 classes, 1347 train / 450 test."""
    x, y = _digits_splits()[split]
    mean, std = _digits_splits()["stats"]
    return Dataset(name="digits", x=x.clone(), y=y.clone(), num_classes=10,
                   mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std))


register_dataset("digits", _load_digits)


# --------------------------------------------------------------------------- synthetic

_SYNTHETIC_PROTOTYPE_SEED = 12345
_SYNTHETIC_SPLIT_SEEDS = {"train": 1, "test": 2}
#: Synthetic images are made in normalized space; these constants *define* their
#: pixel image as 0.5 + 0.25 * x, which lies in [0, 1] for ~95% of pixels, so
#: pixel-space augmentations (black padding, RandAugment) act as on real images.
SYNTHETIC_MEAN = (0.5, 0.5, 0.5)
SYNTHETIC_STD = (0.25, 0.25, 0.25)


def _check_synthetic(kwargs: dict[str, Any]) -> list[str]:
    errors = []
    n, k, noise = (kwargs.get(a) for a in ("num_samples", "num_classes", "noise"))
    if "num_samples" in kwargs and (not _is_int(n) or n < 1):
        errors.append(f"num_samples must be an int >= 1, got {n!r}")
    if "num_classes" in kwargs and (not _is_int(k) or k < 2):
        errors.append(f"num_classes must be an int >= 2, got {k!r}")
    if "noise" in kwargs and (isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0):
        errors.append(f"noise must be a number >= 0, got {noise!r}")
    return errors


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
    return Dataset(name="synthetic", x=x.float().contiguous(), y=y.long(), num_classes=num_classes,
                   mean=SYNTHETIC_MEAN, std=SYNTHETIC_STD)


register_dataset("synthetic", _load_synthetic, _check_synthetic)
