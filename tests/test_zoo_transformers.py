"""Attention / MLP zoo: builds, any-size windows, exact block decompositions, parameter counts, timm:<name>."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.models.blocks import Block, blocks, forward_blocks
from harness.models.registry import MODELS, build_model, count_params, validate_model_args
from harness.models.zoo.timm_models import build_timm, validate_timm
from harness.models.zoo.transformers import AlterNet, MSABlock, PaddedSwinBlock, WindowMSA, padded_window_mask

SMALL = {
    "vit_ti": {"embed_dim": 24, "depth": 2, "num_heads": 3, "patch_size": 4},
    "pit_ti": {"base_dims": [8, 8, 8], "depth": [1, 2, 1], "heads": [1, 2, 4], "patch_size": 4, "stride": 2},
    "swin_ti": {"embed_dim": 12, "depths": [1, 2, 2, 1], "num_heads": [1, 2, 2, 4]},
    "mixer": {"embed_dim": 16, "depth": 2},
    "alternet": {"width": 4, "depth": [1, 2, 2, 2], "msas": [0, 1, 1, 1], "heads": [1, 2, 2, 4], "head_dim": 4},
}
OURS = sorted(SMALL)


def small(name: str, num_classes: int = 10, seed: int = 0, **extra) -> nn.Module:
    """A small variant in eval mode, its zero-initialised tensors (heads, biases) randomised.

    timm zero-initialises e.g. the Mixer head: all-zero logits would make the
    exactness checks vacuous.
    """
    torch.manual_seed(seed)
    model = build_model(name, num_classes, **{**SMALL[name], **extra}).eval()
    return randomize_zeros(model)


def randomize_zeros(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.1)
    return model


def assert_decomposes_exactly(model: nn.Module, x: torch.Tensor) -> list[Block]:
    """forward_blocks(blocks(m), x) == m(x) bitwise, and each block's output has its layout's rank."""
    parts = blocks(model)
    with torch.no_grad():
        ref = model(x)
        outs = forward_blocks(parts, x, keep=True)
    assert torch.equal(outs[-1], ref), (outs[-1] - ref).abs().max()
    rank = {"nchw": 4, "nhwc": 4, "tokens": 3, "flat": 2}
    for block, out in zip(parts, outs):
        assert out.dim() == rank[block.layout], (block.name, block.layout, out.shape)
    return parts


def _zero_target(model: nn.Module, block: Block) -> nn.Module:
    """A module the *model's own forward* calls whose zero output zeroes `block`'s branch."""
    branch = block.branch
    if any(m is branch for m in model.modules()):  # the block calls its branch itself (AlterNet MSA)
        return branch
    for attr in ("attn", "mlp", "mlp_tokens"):
        if attr in branch._modules:
            return branch._modules[attr]
    return branch[1]  # Sequential(norm, attn|mlp, ...) or Sequential(pre, rest)


def assert_lesions_exact(model: nn.Module, x: torch.Tensor, parts: list[Block]) -> None:
    """skip=i equals the full model with block i's branch output zeroed, for the first residual block of each kind."""
    seen = set()
    for i, block in enumerate(parts):
        if not block.residual or block.kind in seen:
            continue
        seen.add(block.kind)
        handle = _zero_target(model, block).register_forward_hook(lambda m, a, out: torch.zeros_like(out))
        try:
            with torch.no_grad():
                ref = model(x)
        finally:
            handle.remove()
        with torch.no_grad():
            lesioned = forward_blocks(parts, x, skip=i)
            assert not torch.equal(lesioned, model(x))  # the lesion changed something
        torch.testing.assert_close(lesioned, ref, rtol=0, atol=1e-6)
    assert seen, "no residual block found"


# --------------------------------------------------------------------------- builds + decomposition


def test_registered():
    assert set(OURS) <= set(MODELS)
    for name in OURS:
        assert validate_model_args(name, {}) == []
        assert validate_model_args(name, SMALL[name]) == []
        assert "fused_attn" in MODELS[name].defaults


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("name", OURS)
def test_build_forward_and_exact_decomposition(name, num_classes):
    m = small(name, num_classes)
    x = torch.randn(2, 3, 32, 32)
    assert m(x).shape == (2, num_classes)
    parts = assert_decomposes_exactly(m, x)
    kinds = [b.kind for b in parts]
    assert kinds[0] == "stem" and kinds[-1] == "head" and kinds[-2] == "pool"
    expected_inner = {"vit_ti": {"msa", "mlp"}, "pit_ti": {"msa", "mlp", "pool"}, "swin_ti": {"msa", "mlp", "pool"},
                      "mixer": {"mlp"}, "alternet": {"conv", "msa"}}[name]
    assert expected_inner <= set(kinds)
    if num_classes == 10:
        assert_lesions_exact(m, x, parts)


def test_decomposition_structure():
    vit = blocks(small("vit_ti"))
    assert [b.name for b in vit[:3]] == ["stem", "blocks.0.attn", "blocks.0.mlp"]
    assert vit[0].layout == "tokens" and vit[0].prefix_tokens == 1
    assert [b.kind for b in vit[-3:]] == ["norm", "pool", "head"] and vit[-1].layout == "flat"
    assert sum(b.kind == "msa" for b in vit) == 2 and all(b.residual for b in vit if b.kind in ("msa", "mlp"))

    pit = blocks(small("pit_ti"))
    assert [b.name for b in pit if b.kind == "pool"][:2] == ["transformers.1.pool", "transformers.2.pool"]
    assert all(b.prefix_tokens == 1 for b in pit if b.layout == "tokens")

    swin = blocks(small("swin_ti"))
    assert all(b.layout == "nhwc" for b in swin[:-2])
    # current timm: patch merging opens stages 2..4
    assert [b.name for b in swin if b.kind == "pool"][:3] == [f"layers.{i}.downsample" for i in (1, 2, 3)]

    mixer = blocks(small("mixer"))
    assert [b.name for b in mixer[1:3]] == ["blocks.0.token_mix", "blocks.0.channel_mix"]

    alt = blocks(small("alternet"))
    msa = [b.name for b in alt if b.kind == "msa"]
    assert msa == ["stages.1.1", "stages.2.1", "stages.3.1"]  # last block of each stage with an MSA
    first_of_stage = [b for b in alt if b.name.endswith(".0") and b.kind == "conv"]
    assert first_of_stage and not any(b.residual for b in first_of_stage)  # projection shortcut


def test_block_modules_own_only_their_parameters():
    m = small("vit_ti")
    parts = blocks(m)
    total = sum(sum(p.numel() for p in b.module.parameters()) for b in parts)
    assert total == count_params(m)  # every parameter in exactly one block


# --------------------------------------------------------------------------- any input size, windows


@pytest.mark.parametrize("size", [32, 40])
@pytest.mark.parametrize("window", [4, 7])
def test_swin_any_window_any_size(size, window):
    m = small("swin_ti", window_size=window)
    x = torch.randn(1, 3, size, size)
    assert m(x).shape == (1, 10)
    assert_decomposes_exactly(m, x)


def test_swin_img_size_override_and_odd_maps():
    m = small("swin_ti", img_size=40, window_size=7)
    for size in (40, 33, 17):
        assert m(torch.randn(1, 3, size, size)).shape == (1, 10)


def test_padded_swin_equals_timm_on_divisible_maps():
    from timm.models.swin_transformer import SwinTransformerBlock

    torch.manual_seed(0)
    blk = SwinTransformerBlock(dim=8, input_resolution=(8, 8), num_heads=2, window_size=4, shift_size=2,
                               dynamic_mask=True).eval()
    x = torch.randn(2, 8, 8, 8)
    with torch.no_grad():
        ref = blk(x)
        blk.__class__ = PaddedSwinBlock
        assert torch.equal(blk(x), ref)


@pytest.mark.parametrize("hw", [(5, 5), (7, 7), (6, 11)])
def test_padded_shifted_windows_are_local(hw):
    """A token only sees tokens less than a window away: no wrap-around across the map border.

    (timm 1.0.31 rolls before padding but masks for the padded map, so on these
    sizes a corner token attends to the opposite border.)
    """
    from timm.models.swin_transformer import SwinTransformerBlock

    H, W = hw
    torch.manual_seed(0)
    blk = SwinTransformerBlock(dim=8, input_resolution=hw, num_heads=2, window_size=4, shift_size=2,
                               dynamic_mask=True).eval()
    blk.__class__ = PaddedSwinBlock
    x = torch.randn(1, H, W, 8, requires_grad=True)
    for r0 in range(H):
        for c0 in range(W):
            x.grad = None
            blk._attn(x)[0, r0, c0].sum().backward()
            dep = (x.grad[0].abs().sum(-1) > 1e-12).nonzero().tolist()
            assert [r0, c0] in dep
            assert all(abs(r - r0) < 4 and abs(c - c0) < 4 for r, c in dep), (r0, c0, dep)


def _window_attention_reference(attn: nn.Module, x: torch.Tensor, window: int) -> torch.Tensor:
    """timm WindowAttention on each window clipped to the map (no padding at all), by loops."""
    B, H, W, C = x.shape
    bias = attn._get_rel_pos_bias()[0]  # (heads, N, N) over a full window
    out = torch.zeros_like(x)
    for i in range(0, H, window):
        for j in range(0, W, window):
            rows, cols = range(i, min(i + window, H)), range(j, min(j + window, W))
            local = torch.tensor([(r - i) * window + (c - j) for r in rows for c in cols])
            tok = x[:, rows.start:rows.stop, cols.start:cols.stop].reshape(B, -1, C)
            qkv = attn.qkv(tok).reshape(B, len(local), 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            a = (q * attn.scale) @ k.transpose(-2, -1) + bias[:, local][:, :, local]
            o = (a.softmax(-1) @ v).transpose(1, 2).reshape(B, len(local), -1)
            out[:, rows.start:rows.stop, cols.start:cols.stop] = attn.proj(o).reshape(B, len(rows), len(cols), C)
    return out


def test_padded_swin_border_window_is_a_clipped_window():
    from timm.models.swin_transformer import SwinTransformerBlock

    torch.manual_seed(0)
    blk = SwinTransformerBlock(dim=8, input_resolution=(6, 7), num_heads=2, window_size=4, shift_size=0,
                               dynamic_mask=True).eval()
    blk.__class__ = PaddedSwinBlock
    x = torch.randn(2, 6, 7, 8)
    with torch.no_grad():
        torch.testing.assert_close(blk._attn(x), _window_attention_reference(blk.attn, x, 4), rtol=1e-5, atol=1e-6)


def test_padded_window_mask_values():
    m = padded_window_mask(5, 5, (4, 4), (0, 0))
    assert m.shape == (4, 16, 16)
    assert torch.isneginf(m[3, :, 1]).all() and (m[0] == 0).all()  # window (1,1) holds one real token (index 0)
    m = padded_window_mask(8, 8, (4, 4), (2, 2))
    assert set(m.unique().tolist()) == {0.0, -100.0}  # no padding: Swin's own shift mask


@pytest.mark.parametrize("size", [40, 33])
def test_alternet_any_size(size):
    m = small("alternet", window_size=7)
    x = torch.randn(1, 3, size, size)
    assert m(x).shape == (1, 10)
    assert_decomposes_exactly(m, x)


@pytest.mark.parametrize("fused", [True, False])
def test_window_msa_border_window_is_a_clipped_window(fused):
    """WindowMSA on a 6x7 map with window 4 == attention within each window clipped to the map."""
    torch.manual_seed(0)
    w = 4
    mod = WindowMSA(6, 10, heads=2, head_dim=3, window_size=w, fused_attn=fused).eval()
    nn.init.normal_(mod.relative_position, std=0.5)
    x = torch.randn(2, 6, 6, 7)
    H, W = x.shape[2:]
    q, kv = mod.to_q(x), mod.to_kv(x)
    k, v = kv.chunk(2, dim=1)
    ref = torch.zeros(2, 6, H, W)
    for i in range(0, H, w):
        for j in range(0, W, w):
            pos = [(r, c) for r in range(i, min(i + w, H)) for c in range(j, min(j + w, W))]

            def take(t):
                return torch.stack([t[:, :, r, c] for r, c in pos], -1).reshape(2, 2, 3, len(pos)).transpose(-1, -2)
            bias = torch.tensor([[mod.relative_position[rk - rq + w - 1, ck - cq + w - 1].item()
                                  for rk, ck in pos] for rq, cq in pos])
            a = take(q) @ take(k).transpose(-1, -2) * 3 ** -0.5 + bias
            o = (a.softmax(-1) @ take(v)).transpose(-1, -2).reshape(2, 6, len(pos))
            for n, (r, c) in enumerate(pos):
                ref[:, :, r, c] = o[:, :, n]
    with torch.no_grad():
        torch.testing.assert_close(mod(x), mod.to_out(ref), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- fused attention


@pytest.mark.parametrize("name", ["vit_ti", "pit_ti", "swin_ti", "alternet"])
def test_fused_attn_false_disables_sdpa(name, sdpa_calls):
    calls = sdpa_calls
    x = torch.randn(1, 3, 32, 32)
    fused, plain = small(name), small(name, fused_attn=False)
    flags = [m.fused_attn for m in plain.modules() if hasattr(m, "fused_attn")]
    assert flags and not any(flags)
    with torch.no_grad():
        out_plain = plain(x)
        assert calls == []
        out_fused = fused(x)
    if name != "swin_ti":  # timm keeps Swin's window attention on the explicit path by default
        assert calls
    torch.testing.assert_close(out_plain, out_fused, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- parameter counts


def vit_block(d: int, hidden: int, qkv_bias: bool) -> int:
    """Pre-norm transformer block: 2 LayerNorms, qkv (+bias), proj, 2-layer MLP."""
    return 2 * d + 3 * d * d + (3 * d if qkv_bias else 0) + d * d + d + 2 * d + d * hidden + hidden + hidden * d + d


def pit_params_by_hand(img: int, patch: int, stride: int, base: list[int], depth: list[int], heads: list[int],
                       num_classes: int) -> int:
    dims = [b * h for b, h in zip(base, heads)]
    grid = (img - patch) // stride + 1  # conv embedding, no padding
    total = 3 * patch * patch * dims[0] + dims[0]  # patch conv
    total += dims[0] * grid * grid + dims[0]  # pos_embed (C, H, W) + cls token
    for s, d in enumerate(dims):
        if s:  # pooling: grouped 3x3 conv (groups = C_in, weight (C_out, 1, 3, 3)) + bias; class-token fc
            total += 9 * d + d + dims[s - 1] * d + d
        total += depth[s] * vit_block(d, 4 * d, qkv_bias=True)
    return total + 2 * dims[-1] + dims[-1] * num_classes + num_classes  # final LN, head


def swin_params_by_hand(img: int, patch: int, window: int, e: int, depths: list[int], heads: list[int],
                        num_classes: int) -> int:
    total = 3 * patch * patch * e + e + 2 * e  # patch conv + its LayerNorm
    res = img // patch
    for s, (n, h) in enumerate(zip(depths, heads)):
        d = e * 2 ** s
        if s:
            total += 2 * 4 * (d // 2) + 4 * (d // 2) * d  # patch merging: LN(4C) + Linear(4C -> 2C), no bias
            res = (res + 1) // 2
        w = min(window, res)  # timm clips the window to a smaller map
        total += n * (vit_block(d, 4 * d, qkv_bias=False) + (2 * w - 1) ** 2 * h)  # + relative position table
    d = e * 2 ** (len(depths) - 1)
    return total + 2 * d + d * num_classes + num_classes


def mixer_params_by_hand(img: int, patch: int, e: int, depth: int, rt: float, rc: float, num_classes: int) -> int:
    tokens, ht, hc = (img // patch) ** 2, int(rt * e), int(rc * e)
    block = 2 * e + (tokens * ht + ht + ht * tokens + tokens) + 2 * e + (e * hc + hc + hc * e + e)
    return 3 * patch * patch * e + e + depth * block + 2 * e + e * num_classes + num_classes


def alternet_params_by_hand(w: int, depth: list[int], msas: list[int], heads: list[int], head_dim: int,
                            window: int, num_classes: int) -> int:
    """Pre-activation bottleneck AlterNet (no biases in convs but the attention output)."""
    total = 3 * 3 * 3 * w  # stem conv, no BN (pre-activation)
    cin = w
    for s, (n, m, h) in enumerate(zip(depth, msas, heads)):
        c = w * 2 ** s
        for b, is_msa in enumerate([False] * (n - 2 * m) + [False, True] * m):
            if is_msa:  # BN(d) GELU 1x1(d -> d/4) BN(d/4) MSA(d/4 -> d): q, kv, out(+bias), bias table
                d, wd, inner = cin, cin // 4, h * head_dim
                total += 2 * d + d * wd + 2 * wd + wd * inner + wd * 2 * inner + inner * d + d + (2 * window - 1) ** 2
            else:  # BN 1x1 BN 3x3 BN 1x1(c -> 4c) [+ 1x1 projection shortcut]
                total += 2 * cin + cin * c + 2 * c + 9 * c * c + 2 * c + c * 4 * c
                if (b == 0 and s > 0) or cin != 4 * c:
                    total += cin * 4 * c
                cin = 4 * c
    return total + 2 * cin + cin * num_classes + num_classes  # final BN, fc


def test_full_size_param_counts():
    n = {name: count_params(build_model(name, 10)) for name in OURS}
    assert n["vit_ti"] == 5_385_802
    assert n["pit_ti"] == pit_params_by_hand(32, 2, 1, [32] * 3, [2, 6, 4], [2, 4, 8], 10) == 4_559_306
    assert n["swin_ti"] == swin_params_by_hand(32, 1, 4, 96, [2, 2, 6, 2], [3, 6, 12, 24], 10) == 27_492_916
    assert n["mixer"] == mixer_params_by_hand(32, 4, 256, 8, 0.5, 4.0, 10) == 4_360_970
    assert n["alternet"] == alternet_params_by_hand(64, [3, 4, 6, 4], [0, 1, 1, 2], [3, 6, 12, 24], 64, 4, 10)
    assert n["alternet"] == 32_828_430


def test_small_param_counts_follow_overrides():
    assert count_params(small("pit_ti", 7)) == pit_params_by_hand(32, 4, 2, [8] * 3, [1, 2, 1], [1, 2, 4], 7)
    assert count_params(small("swin_ti", 7, window_size=7)) == swin_params_by_hand(32, 1, 7, 12, [1, 2, 2, 1],
                                                                                    [1, 2, 2, 4], 7)
    assert count_params(small("mixer", 7)) == mixer_params_by_hand(32, 4, 16, 2, 0.5, 4.0, 7)
    assert count_params(small("alternet", 7)) == alternet_params_by_hand(4, [1, 2, 2, 2], [0, 1, 1, 1],
                                                                         [1, 2, 2, 4], 4, 4, 7)


def test_alternet_layout_and_structure():
    m = small("alternet")
    assert isinstance(m, AlterNet)
    kinds = [["msa" if isinstance(b, MSABlock) else "conv" for b in st] for st in m.stages]
    assert kinds == [["conv"], ["conv", "msa"], ["conv", "msa"], ["conv", "msa"]]
    m = build_model("alternet", 10, width=4, depth=[1, 1, 6, 4], msas=[0, 0, 1, 2], heads=[1, 1, 1, 1], head_dim=4)
    assert [isinstance(b, MSABlock) for b in m.stages[3]] == [False, True, False, True]
    assert [isinstance(b, MSABlock) for b in m.stages[2]] == [False] * 5 + [True]


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("name,args,needle", [
    ("vit_ti", {"img_size": 30, "patch_size": 4}, "divide img_size"),
    ("vit_ti", {"embed_dim": 50}, "divisible by num_heads"),
    ("pit_ti", {"depth": [2, 6]}, "same length"),
    ("pit_ti", {"heads": [2, 0, 8]}, ">= 1"),
    ("swin_ti", {"num_heads": [3, 6, 12, 25]}, "divisible by num_heads[3]"),
    ("swin_ti", {"depths": [2, 2, 6]}, "same length"),
    ("swin_ti", {"window_size": 0}, "window_size must be >= 1"),
    ("mixer", {"patch_size": 5}, "divide img_size"),
    ("mixer", {"token_mlp_ratio": 0.0}, "token_mlp_ratio must be > 0"),
    ("alternet", {"msas": [0, 1, 4, 2]}, "stage 3: 4 MSA blocks need depth >= 8"),
    ("alternet", {"msas": [0, 1, 1]}, "msas must have 4 entries"),
    ("alternet", {"block": "wide"}, "block must be one of"),
    ("alternet", {"window_size": -1}, "window_size must be >= 1"),
    ("alternet", {"fused_attn": "no"}, "expected bool"),
])
def test_bad_overrides_rejected(name, args, needle):
    errors = validate_model_args(name, args)
    assert errors and any(needle in e for e in errors), errors
    with pytest.raises(ValueError, match=name):
        build_model(name, 10, **args)


# --------------------------------------------------------------------------- timm:<name>


def test_timm_resnet18():
    torch.manual_seed(0)
    m = randomize_zeros(build_timm("timm:resnet18", num_classes=10).eval())
    assert m.fc.out_features == 10
    x = torch.randn(1, 3, 32, 32)
    assert m(x).shape == (1, 10)
    assert_decomposes_exactly(m, x)


def test_timm_unknown_name_suggests_close_matches():
    (err,) = validate_timm("timm:resnt18", {})
    assert "unknown timm model 'resnt18'" in err and "resnet18" in err
    with pytest.raises(ValueError, match="close matches: .*resnet18"):
        build_timm("timm:resnt18", 10)
    assert validate_timm("timm:resnet18.a1_in1k", {"pretrained": False}) == []
    errors = validate_timm("timm:resnet18", {"pretrained": "yes", "widht": 3})
    assert any("pretrained" in e and "bool" in e for e in errors) and any("widht" in e for e in errors)


def test_timm_generic_decompositions():
    """timm classes configured differently from the zoo: register tokens + GAP ViT, distilled PiT, plain Swin."""
    from timm.models.pit import PoolingVisionTransformer
    from timm.models.swin_transformer import SwinTransformer
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, reg_tokens=2,
                            global_pool="avg", fc_norm=True, init_values=1e-2, num_classes=5).eval()
    randomize_zeros(vit)
    assert assert_decomposes_exactly(vit, x)[0].prefix_tokens == 3
    pit = PoolingVisionTransformer(img_size=32, patch_size=4, stride=2, base_dims=[4, 4], depth=[1, 1],
                                   heads=[2, 4], distilled=True, num_classes=5).eval()
    randomize_zeros(pit)
    assert assert_decomposes_exactly(pit, x)[0].prefix_tokens == 2
    swin = SwinTransformer(img_size=32, patch_size=2, window_size=4, embed_dim=8, depths=(1, 2),
                           num_heads=(1, 2), num_classes=5).eval()
    assert_decomposes_exactly(randomize_zeros(swin), x)
    with pytest.raises(TypeError, match="no block decomposition"):
        blocks(nn.Linear(2, 2))


def test_timm_fused_attn_off():
    m = build_timm("timm:vit_tiny_patch16_224", 10, img_size=32, fused_attn=False)
    flags = [mod.fused_attn for mod in m.modules() if hasattr(mod, "fused_attn")]
    assert len(flags) == 12 and not any(flags)


@pytest.mark.parametrize("name, small", [
    ("vit_ti", {"embed_dim": 48, "depth": 2, "num_heads": 3, "patch_size": 4}),
    ("pit_ti", {"base_dims": [16, 16, 16], "depth": [1, 1, 1], "heads": [1, 2, 4]}),
    ("swin_ti", {"embed_dim": 24, "depths": [1, 1, 1, 1], "num_heads": [1, 2, 2, 4]}),
    ("mixer", {"embed_dim": 32, "depth": 2}),
])
def test_stochastic_depth_override(name, small):
    """drop_path (the paper's recipe: 0.1) drops residual branches in train mode only."""
    from timm.layers import DropPath

    torch.manual_seed(0)
    model = build_model(name, 10, **small, drop_path=0.5)
    rates = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    assert rates and max(rates) == pytest.approx(0.5)
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        assert torch.equal(forward_blocks(blocks(model), x), model(x))
    assert validate_model_args(name, {"drop_path": 1.0}) == [
        f"model {name!r}: drop_path must be in [0, 1), got 1.0"]
