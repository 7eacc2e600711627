"""Model registry: shapes, exact parameter counts, fused attention, validation, seeding."""

import pytest
import timm
import torch
from timm.layers import Attention

from harness.models.registry import (
    MODELS,
    ModelEntry,
    build_model,
    count_params,
    model_names,
    register_model,
    validate_model_args,
)

SMALL_RESNET = {"width": 8}
SMALL_VIT = {"embed_dim": 48, "depth": 2, "num_heads": 3}


def resnet_params_by_hand(w: int, layers, num_classes: int) -> int:
    """CIFAR ResNet with BasicBlocks, counted from the architecture (no timm)."""
    bn = lambda c: 2 * c  # noqa: E731  (weight + bias)
    total = 3 * 3 * 3 * w + bn(w)  # 3x3 stem conv (no bias) + BN
    c_in = w
    for stage, n_blocks in enumerate(layers):
        c = w * 2 ** stage
        for b in range(n_blocks):
            cin = c_in if b == 0 else c
            total += 3 * 3 * cin * c + bn(c) + 3 * 3 * c * c + bn(c)
            if b == 0 and (stage > 0 or cin != c):  # 1x1 projection shortcut + BN
                total += cin * c + bn(c)
        c_in = c
    return total + 8 * w * num_classes + num_classes  # fc


def vit_params_by_hand(d: int, depth: int, patch: int, num_classes: int, mlp_ratio: float = 4.0) -> int:
    """timm ViT, class token, learned pos-embed, qkv without bias, pre-norm blocks."""
    tokens = (32 // patch) ** 2 + 1  # patches + cls
    h = int(d * mlp_ratio)
    patch_embed = 3 * patch * patch * d + d  # conv weight + bias
    cls_and_pos = d + tokens * d
    block = (
        2 * d            # norm1
        + 3 * d * d      # qkv, no bias
        + d * d + d      # attn proj
        + 2 * d          # norm2
        + d * h + h      # mlp fc1
        + h * d + d      # mlp fc2
    )
    return patch_embed + cls_and_pos + depth * block + 2 * d + d * num_classes + num_classes


def test_registry():
    assert {"resnet18", "vit_ti"} <= set(model_names()) and model_names() == sorted(model_names())
    assert all(isinstance(MODELS[n], ModelEntry) for n in model_names())


def test_register_model_extends_registry():
    entry = ModelEntry("tiny_linear", lambda num_classes, hidden=4: torch.nn.Linear(hidden, num_classes),
                       "test only", {"hidden": 4})
    register_model(entry)
    try:
        assert "tiny_linear" in model_names()
        assert build_model("tiny_linear", 3, hidden=5).weight.shape == (3, 5)
    finally:
        del MODELS["tiny_linear"]


def test_resnet18_small_forward_shape_and_cifar_stem():
    torch.manual_seed(0)
    m = build_model("resnet18", num_classes=7, **SMALL_RESNET).eval()
    x = torch.randn(2, 3, 32, 32)
    assert m(x).shape == (2, 7)
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1) and m.conv1.out_channels == 8
    assert isinstance(m.maxpool, torch.nn.Identity)
    assert m.bn1.num_features == 8
    assert m.layer1[0].downsample is None  # stem width == stage-1 width: identity shortcut
    assert m.forward_features(x).shape == (2, 64, 4, 4)  # 32 -> 32, 16, 8, 4
    assert count_params(m) == resnet_params_by_hand(8, (2, 2, 2, 2), 7)


def test_resnet18_layers_override():
    torch.manual_seed(0)
    m = build_model("resnet18", 3, width=4, layers=[1, 1, 2, 1])
    assert [len(getattr(m, f"layer{i}")) for i in range(1, 5)] == [1, 1, 2, 1]
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    assert count_params(m) == resnet_params_by_hand(4, (1, 1, 2, 1), 3)


def test_resnet18_full_param_count():
    m = build_model("resnet18", 10)
    n = count_params(m)
    assert n == 11_173_962
    assert n == resnet_params_by_hand(64, (2, 2, 2, 2), 10)
    # independent of our construction: timm's ImageNet resnet18, 7x7 stem swapped for 3x3
    ref = count_params(timm.create_model("resnet18", num_classes=10))
    assert n == ref - 7 * 7 * 3 * 64 + 3 * 3 * 3 * 64


def test_vit_small_forward_shape():
    torch.manual_seed(0)
    m = build_model("vit_ti", num_classes=5, **SMALL_VIT).eval()
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    assert count_params(m) == vit_params_by_hand(48, 2, 2, 5)
    m4 = build_model("vit_ti", 5, embed_dim=48, depth=1, num_heads=3, patch_size=4, mlp_ratio=2.0)
    assert m4(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    assert count_params(m4) == vit_params_by_hand(48, 1, 4, 5, mlp_ratio=2.0)


def test_vit_full_param_count():
    n = count_params(build_model("vit_ti", 10))
    assert n == vit_params_by_hand(192, 12, 2, 10)
    assert n == 5_385_802


def test_fused_attn_off_on_every_attention_module(sdpa_calls):
    torch.manual_seed(0)
    fused = build_model("vit_ti", 5, **SMALL_VIT).eval()
    torch.manual_seed(0)
    plain = build_model("vit_ti", 5, fused_attn=False, **SMALL_VIT).eval()
    attn = [m for m in plain.modules() if isinstance(m, Attention)]
    assert len(attn) == SMALL_VIT["depth"]
    assert all(m.fused_attn is False for m in plain.modules() if hasattr(m, "fused_attn"))

    calls = sdpa_calls
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out_plain = plain(x)
        assert calls == []  # the explicit softmax(QK^T)V path really runs
        out_fused = fused(x)
    if all(m.fused_attn for m in fused.modules() if isinstance(m, Attention)):
        assert len(calls) == SMALL_VIT["depth"]
    # same weights (same seed), same function
    torch.testing.assert_close(out_plain, out_fused, rtol=1e-4, atol=1e-5)


def test_validate_model_args():
    assert validate_model_args("resnet18", {}) == []
    assert validate_model_args("vit_ti", {"depth": 2, "mlp_ratio": 2, "fused_attn": False}) == []

    (err,) = validate_model_args("resnet51", {})
    assert "resnet51" in err and "resnet18" in err and "vit_ti" in err

    (err,) = validate_model_args("resnet18", {"widht": 8})
    assert "widht" in err and "width=64" in err and "layers=[2, 2, 2, 2]" in err

    (err,) = validate_model_args("resnet18", {"width": "8"})
    assert "width" in err and "int" in err
    assert validate_model_args("resnet18", {"width": True})  # bool is not an int here
    assert validate_model_args("resnet18", {"width": 8.0})
    assert validate_model_args("resnet18", {"layers": [2, 2, "2", 2]})
    assert validate_model_args("resnet18", {"layers": [2, 2, 2]})
    assert validate_model_args("resnet18", {"width": 7})  # must be even
    assert validate_model_args("vit_ti", {"fused_attn": "no"})
    assert validate_model_args("vit_ti", {"embed_dim": 50})  # not divisible by 3 heads
    assert validate_model_args("vit_ti", {"patch_size": 5})  # does not divide 32
    assert len(validate_model_args("vit_ti", {"foo": 1, "depth": "x"})) == 2


def test_build_model_raises_on_invalid():
    with pytest.raises(ValueError, match="resnet18"):
        build_model("nope", 10)
    with pytest.raises(ValueError, match="widht"):
        build_model("resnet18", 10, widht=8)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("resnet18", 0, width=8)


def test_seeded_builds_identical():
    for name, args in (("resnet18", SMALL_RESNET), ("vit_ti", SMALL_VIT)):
        sds = []
        for seed in (5, 5, 6):
            torch.manual_seed(seed)
            sds.append(build_model(name, 10, **args).state_dict())
        assert sds[0].keys() == sds[2].keys()
        assert all(torch.equal(sds[0][k], sds[1][k]) for k in sds[0])
        assert any(not torch.equal(sds[0][k], sds[2][k]) for k in sds[0])


def test_count_params_only_trainable():
    m = build_model("resnet18", 10, **SMALL_RESNET)
    n = count_params(m)
    m.fc.weight.requires_grad_(False)
    assert count_params(m) == n - m.fc.weight.numel()
