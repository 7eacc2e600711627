"""Batch augmentation: determinism, what each transform does to pixels and targets, config validation."""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.data.augment import (
    CROP_PADDING,
    PRESETS,
    AugmentConfig,
    _apply_op,
    _OP_NAMES,
    _op_magnitude,
    _randaugment,
    augment_batch,
    augment_config,
    soft_cross_entropy,
    timm_randaugment_config,
    validate_augment,
)
from harness.data.datasets import load_dataset

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)
K = 10


def batch(b: int = 16, seed: int = 0, h: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Random normalized images (every pixel distinct a.s.) and labels."""
    g = torch.Generator().manual_seed(seed)
    pix = torch.rand(b, 3, h, h, generator=g)
    x = (pix - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    return x, torch.randint(0, K, (b,), generator=g)


def run(x, y, cfg, seed=0, num_classes=K):
    return augment_batch(x, y, cfg, num_classes, MEAN, STD, torch.Generator().manual_seed(seed))


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("preset", list(PRESETS))
def test_shapes_dtypes_device_kept(preset, device):
    x, y = batch()
    x, y = x.to(device), y.to(device)
    out, t = run(x, y, PRESETS[preset])
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert t.shape == (16, K) and t.dtype == torch.float32 and t.device == x.device
    assert torch.allclose(t.sum(1), torch.ones(16, device=device), atol=1e-6)
    assert torch.isfinite(out).all()
    out64, _ = run(x.double(), y, PRESETS[preset])
    assert out64.dtype == torch.float64


def test_none_is_identity():
    x, y = batch()
    out, t = run(x, y, PRESETS["none"])
    assert torch.equal(out, x) and torch.equal(t, F.one_hot(y, K).float())
    assert PRESETS["none"].is_identity and not PRESETS["basic"].is_identity


@pytest.mark.parametrize("preset", ["paper", "randaug_tv"])
def test_deterministic_given_generator_and_global_rng_untouched(preset):
    x, y = batch()
    state, py_state, np_state = torch.get_rng_state(), random.getstate(), np.random.get_state()
    a = run(x, y, PRESETS[preset], seed=3)
    torch.rand(3), random.random(), np.random.rand()  # what ran before must not matter
    b = run(x, y, PRESETS[preset], seed=3)
    torch.set_rng_state(state), random.setstate(py_state), np.random.set_state(np_state)
    c = run(x, y, PRESETS[preset], seed=4)
    assert torch.equal(state, torch.get_rng_state()) and random.getstate() == py_state
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    # the generator advances: two calls on one generator differ
    g = torch.Generator().manual_seed(3)
    first = augment_batch(x, y, PRESETS["basic"], K, MEAN, STD, g)[0]
    second = augment_batch(x, y, PRESETS["basic"], K, MEAN, STD, g)[0]
    assert not torch.equal(first, second)


def test_flip_mirrors_per_image():
    x, y = batch(b=32)
    out, t = run(x, y, AugmentConfig(flip=True), seed=1)
    flipped = []
    for i in range(32):
        same, mirrored = torch.equal(out[i], x[i]), torch.equal(out[i], torch.flip(x[i], dims=[-1]))
        assert same != mirrored  # exactly one (random images are not symmetric)
        flipped.append(mirrored)
    assert 4 < sum(flipped) < 28  # per-image, roughly half
    assert torch.equal(t, F.one_hot(y, K).float())


def _pad_black(img: torch.Tensor) -> torch.Tensor:
    """Independent reference: pad the *pixel* image with zeros, normalize back."""
    m, s = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    pix = img * s + m
    return (F.pad(pix, [CROP_PADDING] * 4, value=0.0) - m) / s


def _crop_offsets(out: torch.Tensor, src: torch.Tensor) -> list[tuple[int, int]]:
    """Offsets (dy, dx) at which `out` equals a window of the black-padded `src`."""
    padded = _pad_black(src)
    h, w = out.shape[-2:]
    return [(dy, dx) for dy in range(2 * CROP_PADDING + 1) for dx in range(2 * CROP_PADDING + 1)
            if torch.allclose(out, padded[:, dy:dy + h, dx:dx + w], atol=1e-5)]


def test_crop_preserves_content():
    x, y = batch(b=24)
    out, _ = run(x, y, AugmentConfig(crop=True), seed=2)
    offsets = []
    for i in range(24):
        found = _crop_offsets(out[i], x[i])
        assert len(found) == 1, (i, found)
        offsets.append(found[0])
    assert len(set(offsets)) > 5  # per-image offsets
    # the shifted content matches exactly, and the border is black in pixel space
    dy, dx = next(o for o in offsets if o[0] > CROP_PADDING and o[1] > CROP_PADDING)
    i = offsets.index((dy, dx))
    sy, sx = dy - CROP_PADDING, dx - CROP_PADDING
    assert torch.equal(out[i][:, : 32 - sy, : 32 - sx], x[i][:, sy:, sx:])
    black = (0 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.allclose(out[i][:, -1, -1], black, atol=1e-6)


def test_crop_and_flip_together():
    x, y = batch(b=16, h=8)  # also non-32 sizes: crop back to the input size
    out, _ = run(x, y, PRESETS["basic"], seed=5)
    assert out.shape == x.shape
    for i in range(16):
        assert len(_crop_offsets(out[i], x[i])) + len(_crop_offsets(out[i], x[i].flip(-1))) >= 1


def test_mixup_targets_and_images_share_lambda():
    b = K  # distinct labels, so the targets tell who was mixed with whom
    x, _ = batch(b=b)
    y = torch.randperm(K, generator=torch.Generator().manual_seed(0))
    out, t = run(x, y, AugmentConfig(mixup=1.0), seed=6)
    assert torch.allclose(t.sum(1), torch.ones(b))
    lams = set()
    for i in range(b):
        nz = torch.nonzero(t[i]).view(-1)
        assert len(nz) <= 2
        lam = t[i, y[i]].item()
        j = (y == nz[nz != y[i]][0]).nonzero().item() if len(nz) == 2 else i
        assert torch.allclose(out[i], lam * x[i] + (1 - lam) * x[j], atol=1e-5)
        assert t[i, y[j]].item() == pytest.approx(1 - lam) if j != i else True
        lams.add(round(lam, 6))
    assert len(lams) == 1  # one lambda per batch (timm's "batch" mode)


def test_cutmix_box_area_matches_lambda():
    x, _ = batch(b=K)
    y = torch.arange(K)
    for seed in range(4):
        out, t = run(x, y, AugmentConfig(cutmix=1.0), seed=seed)
        lam = t[0, 0].item()
        pasted = (out[0] != x[0]).any(0)  # pixels that came from the partner (x.flip(0) -> index K-1)
        assert pasted.float().mean().item() == pytest.approx(1 - lam, abs=1e-6)
        assert torch.equal(out[0][:, pasted], x[K - 1][:, pasted])
        assert t[0, K - 1].item() == pytest.approx(1 - lam, abs=1e-6)


def test_mixup_and_cutmix_both_used_when_both_on():
    x, y = batch(b=8)
    kinds = set()
    for seed in range(12):
        out, _ = run(x, y, AugmentConfig(mixup=1.0, cutmix=0.8), seed=seed)
        exact = (out == x) | (out == x.flip(0))
        kinds.add("cutmix" if exact.all() else "mixup")
    assert kinds == {"mixup", "cutmix"}


def test_label_smoothing():
    x, y = batch()
    eps = 0.1
    _, t = run(x, y, AugmentConfig(label_smoothing=eps))
    assert torch.allclose(t[torch.arange(16), y], torch.full((16,), 1 - eps + eps / K))
    off = t.clone()
    off[torch.arange(16), y] = eps / K
    assert torch.allclose(off, torch.full_like(t, eps / K))


def test_soft_cross_entropy_matches_torch():
    logits = torch.randn(8, K, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8)
    assert torch.allclose(soft_cross_entropy(logits, F.one_hot(y, K).float()), F.cross_entropy(logits, y))
    _, t = run(torch.zeros(8, 3, 4, 4), y, AugmentConfig(label_smoothing=0.1))
    assert torch.allclose(soft_cross_entropy(logits, t), F.cross_entropy(logits, y, label_smoothing=0.1))


def test_randaugment_changes_images_and_stays_in_range():
    x, y = batch()
    out, t = run(x, y, AugmentConfig(randaugment=True, randaugment_n=2, randaugment_m=9), seed=0)
    pix = out * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
    assert pix.min() > -1e-5 and pix.max() < 1 + 1e-5
    changed = [(out[i] - x[i]).abs().max().item() > 1e-4 for i in range(16)]
    assert sum(changed) >= 12  # Identity twice is rare (1/196)
    assert torch.equal(t, F.one_hot(y, K).float())
    same, _ = run(x, y, AugmentConfig(randaugment=True, randaugment_n=0))
    assert torch.allclose(same, x, atol=1e-5)


def test_randaugment_grouping_equals_per_image_ops():
    # the batched (grouped by op and sign) path equals applying each image's ops one by one
    pix = torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    ops = torch.arange(24).view(2, 12) % len(_OP_NAMES)
    negate = torch.rand(2, 12, generator=torch.Generator().manual_seed(2)) < 0.5
    got = _randaugment(pix, 2, 9, ops, negate)
    for i in range(12):
        img = pix[i]
        for s in range(2):
            op = _OP_NAMES[int(ops[s, i])]
            mag = _op_magnitude(op, 9, 16, 16)
            img = _apply_op(img, op, -mag if bool(negate[s, i]) else mag)
        assert torch.allclose(got[i], img, atol=1e-6), _OP_NAMES[int(ops[0, i])]


def test_works_on_a_real_dataset():
    d = load_dataset("digits", "test")
    g = torch.Generator().manual_seed(0)
    out, t = augment_batch(d.x[:32], d.y[:32], PRESETS["paper"], d.num_classes, d.mean, d.std, g)
    assert out.shape == (32, 3, 32, 32) and torch.isfinite(out).all() and t.shape == (32, 10)


def test_presets_and_overrides():
    for name in PRESETS:
        assert validate_augment(name) == [] and augment_config(name) == PRESETS[name]
    p = PRESETS["paper"]
    assert (p.crop, p.flip, p.randaugment, p.randaugment_n, p.randaugment_m) == (True, True, True, 2, 9)
    assert (p.mixup, p.cutmix, p.label_smoothing) == (1.0, 0.8, 0.1)
    assert (p.backend, p.random_erasing, timm_randaugment_config(p)) == \
        ("timm", 0.25, "rand-m9-n2-mstd0.5")
    tv = PRESETS["randaug_tv"]  # the torchvision-op variant departs from the paper: another name
    assert (tv.backend, tv.random_erasing, tv.randaugment_mstd) == ("harness", 0.0, 0.0)
    assert PRESETS["basic"] == AugmentConfig(crop=True, flip=True)
    assert augment_config({"preset": "basic", "flip": False}) == AugmentConfig(crop=True)
    assert augment_config({"mixup": 1, "randaugment": True}) == AugmentConfig(mixup=1.0, randaugment=True)
    assert augment_config(None) == AugmentConfig() and augment_config(p) is p
    assert augment_config(p.to_dict()) == p


def test_bad_specs_name_allowed_values():
    assert validate_augment("fancy") == ["unknown augment preset 'fancy'; allowed presets: none, "
                                         "basic, paper, randaug_tv"]
    (msg,) = validate_augment({"crops": True})
    assert "unknown key 'crops'" in msg and "preset, crop, flip, randaugment" in msg and "label_smoothing" in msg
    errs = validate_augment({"preset": "x", "crop": 1, "randaugment_m": 31, "randaugment_n": -1,
                             "mixup": -0.5, "label_smoothing": 1.0})
    assert len(errs) == 6
    joined = "; ".join(errs)
    for want in ("allowed presets: none, basic, paper, randaug_tv", "augment.crop must be true or false",
                 "randaugment_m must be an int in 0..30", "randaugment_n must be an int >= 0",
                 "augment.mixup must be a number >= 0", "label_smoothing must be a number in [0, 1)"):
        assert want in joined
    assert "preset name (none, basic, paper, randaug_tv) or a mapping" in validate_augment(3)[0]
    with pytest.raises(ValueError, match="augment.cutmix must be a number >= 0"):
        augment_config({"cutmix": "lots"})


def test_rejects_non_float_batch():
    with pytest.raises(ValueError, match="float"):
        run(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), PRESETS["basic"])


def test_backend_mismatches_are_refused_naming_the_fix():
    assert validate_augment({"preset": "randaug_tv", "random_erasing": 0.25}) == [
        "augment.random_erasing needs backend timm (the harness backend has no random erasing); "
        "set backend: timm or random_erasing: 0"]
    assert "randaugment_mstd needs backend timm" in validate_augment({"randaugment_mstd": 0.5})[0]
    assert validate_augment({"preset": "paper", "randaugment_m": 11}) == [
        "augment.randaugment_m runs 0..10 on the timm backend (timm's magnitude scale), got 11"]
    assert "augment.backend must be one of harness, timm" in validate_augment({"backend": "tv"})[0]
    assert "random_erasing must be a probability" in validate_augment({"random_erasing": 2})[0]
    assert augment_config({"preset": "paper", "random_erasing": 0}).random_erasing == 0.0


def _uint8_batch(b: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """8-bit images (as CIFAR stores them), their normalized float form, labels."""
    g = torch.Generator().manual_seed(seed)
    pix = torch.randint(0, 256, (b, 32, 32, 3), dtype=torch.uint8, generator=g)
    x = (pix.permute(0, 3, 1, 2).float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(STD).view(1, 3, 1, 1)
    return pix, x, torch.randint(0, K, (b,), generator=g)


def test_paper_preset_is_the_original_codes_timm_pipeline():
    """Bit for bit what how-do-vits-work's get_cifar100 + timm's Mixup give for the same seeds."""
    import timm.data.transforms_factory as tff
    from PIL import Image
    from timm.data.mixup import Mixup
    from torchvision import transforms

    pix, x, y = _uint8_batch(8, 0)
    got, got_t = run(x, y, PRESETS["paper"], seed=5)
    # the reference, written the way the original code builds it
    seed = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(5)))
    trains = tff.transforms_imagenet_train(
        img_size=32, mean=MEAN, std=STD, scale=None, ratio=None, hflip=0.5, vflip=0.0,
        color_jitter=0.0, auto_augment="rand-m9-n2-mstd0.5", interpolation="random",
        re_prob=0.25, re_mode="const", re_count=1, re_num_splits=0, separate=True)
    trains = (transforms.Compose([transforms.RandomCrop(32, padding=4),
                                  transforms.RandomHorizontalFlip(p=0.5)]), *trains[1:])
    transform = transforms.Compose(trains)
    with torch.random.fork_rng(devices=[]):
        random.seed(seed), np.random.seed(seed % 2**32), torch.manual_seed(seed)
        ref = torch.stack([transform(Image.fromarray(img.numpy())) for img in pix])
        ref, ref_t = Mixup(mixup_alpha=1.0, cutmix_alpha=0.8, label_smoothing=0.1,
                           num_classes=K)(ref, y)
    assert torch.equal(got, ref) and torch.equal(got_t, ref_t)
    assert not torch.equal(got, x)


def test_timm_backend_gives_the_same_batch_in_another_process():
    _, x, y = _uint8_batch(5, 1)  # odd: timm's Mixup.__call__ would refuse it
    out, t = run(x, y, PRESETS["paper"], seed=7)
    code = ("import torch, sys; sys.path[:0] = ['tests']; from test_augment import PRESETS, _uint8_batch, run; "
            "_, x, y = _uint8_batch(5, 1); out, t = run(x, y, PRESETS['paper'], seed=7); "
            "torch.save((out, t), sys.argv[1])")
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([sys.executable, "-c", code, f"{d}/b.pt"], check=True)
        other, other_t = torch.load(f"{d}/b.pt", weights_only=True)
    assert torch.equal(out, other) and torch.equal(t, other_t)
