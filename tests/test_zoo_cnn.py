"""Convolutional zoo: shapes, exact parameter counts, block decompositions, lesions, validation.

Forward checks use small width/depth overrides (CPU, fast); full-size parameter counts are built on
the meta device (no memory, no init cost) and compared with counts derived by hand from the
architecture and, for the timm-based models, with timm's own ImageNet model of the same family.
"""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from harness.models.blocks import KINDS, blocks, forward_blocks
from harness.models.registry import MODELS, build_model, count_params, model_names, validate_model_args
from harness.models.zoo.cnn import WideBasic

#: Small variants: every code path of the full model (projection and identity shortcuts, grouped
#: convs, all pools) at a fraction of the cost.
SMALL: dict[str, dict] = {
    "resnet18": {"width": 8, "layers": [1, 2, 1, 1]},
    "resnet50": {"width": 8, "layers": [1, 2, 1, 1]},
    "resnext50": {"width": 8, "layers": [1, 2, 1, 1], "cardinality": 4, "base_width": 16},
    "preact_resnet18": {"width": 8, "layers": [2, 1, 1, 1]},
    "preact_resnet50": {"width": 8, "layers": [2, 2, 1, 1]},
    "wrn28_10": {"depth": 16, "widen": 2, "dropout": 0.3},
    "vgg16": {"width": 4},
    "preact_vgg16": {"width": 4},
    "alexnet": {"width": 8, "hidden": 32},
}
CNNS = sorted(SMALL)

#: How many blocks of the small variant are pure x + f(x) residuals.
#: preact basic: every block but the first of stages 2-4 (shape change); preact bottleneck: every
#: block but the first of each stage (4w != w); WRN widen 2: every block but the first of each stage.
SMALL_RESIDUALS = {"preact_resnet18": 5 - 3, "preact_resnet50": 6 - 4, "wrn28_10": 6 - 3}


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN affine params and running stats, so no branch is silently zero (timm zero-inits
    the last BN of each ResNet block) and every statistic matters in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.1 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
    return model


def small(name: str, num_classes: int = 10, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_norms(build_model(name, num_classes, **SMALL[name]), seed).eval()


def full_size(name: str, num_classes: int = 10, **overrides) -> nn.Module:
    """The full-size model on the meta device: exact structure and parameter shapes, no storage."""
    with torch.device("meta"):
        return build_model(name, num_classes, **overrides)


# --------------------------------------------------------------------------- registry and shapes


def test_registered():
    assert set(CNNS) <= set(model_names())
    for name in CNNS:
        assert validate_model_args(name, {}) == []
        assert validate_model_args(name, SMALL[name]) == []
        assert set(SMALL[name]) <= set(MODELS[name].defaults)


@pytest.mark.parametrize("name", CNNS)
@pytest.mark.parametrize("num_classes", [10, 100])
def test_forward_shape_and_decomposition_exact(name, num_classes):
    model = small(name, num_classes)
    x = torch.randn(3, 3, 32, 32)
    parts = blocks(model)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (3, num_classes)
        assert torch.isfinite(out).all()
        assert torch.equal(forward_blocks(parts, x), out)
        # keep=True: every stored output is that block applied to the previous one (no block
        # mutates its input in place, so the stored maps are the ones the model really computed)
        outs = forward_blocks(parts, x, keep=True)
        assert torch.equal(outs[-1], out)
        prev = x
        for part, o in zip(parts, outs):
            assert torch.equal(part.module(prev), o), part.name
            assert o.dim() == (4 if part.layout == "nchw" else 2), part.name
            prev = o


@pytest.mark.parametrize("name", CNNS)
def test_runs_on_40x40(name):
    model = small(name, 10)
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, 10)
        assert torch.equal(forward_blocks(blocks(model), x), out)


@pytest.mark.parametrize("name", CNNS)
def test_block_kinds(name):
    model = small(name)
    parts = blocks(model)
    kinds = [p.kind for p in parts]
    assert all(k in KINDS for k in kinds)
    assert kinds[0] == "stem" and kinds.count("stem") == 1
    assert kinds[-1] == "head" and kinds.count("head") == 1
    assert parts[-1].layout == "flat"
    assert parts[-2].kind == "pool" and parts[-2].layout == "flat"  # global pooling flattens
    assert all(p.layout == "nchw" for p in parts[:-2])
    assert len({p.name for p in parts}) == len(parts)
    # every parameter of the model belongs to some block
    covered = {id(q) for p in parts for q in p.module.parameters()}
    assert covered == {id(q) for q in model.parameters()}


def test_block_counts():
    def n_conv(name):
        return sum(p.kind == "conv" for p in blocks(small(name)))

    for name in ("resnet18", "resnet50", "resnext50", "preact_resnet18", "preact_resnet50"):
        assert n_conv(name) == sum(SMALL[name]["layers"])
    assert n_conv("wrn28_10") == 3 * (16 - 4) // 6
    for name in ("vgg16", "preact_vgg16"):
        kinds = [p.kind for p in blocks(small(name))]
        assert kinds.count("stem") + kinds.count("conv") == 13
        assert kinds.count("pool") == 5 + 1  # five max-pools, then global pooling
        assert kinds.count("norm") == (1 if name == "preact_vgg16" else 0)
    kinds = [p.kind for p in blocks(small("alexnet"))]
    assert kinds == ["stem", "pool", "conv", "pool", "conv", "conv", "conv", "pool", "pool", "head"]


# --------------------------------------------------------------------------- residual blocks and lesions


def test_residual_flags():
    for name in CNNS:
        parts = blocks(small(name))
        assert sum(p.residual for p in parts) == SMALL_RESIDUALS.get(name, 0), name
        for i, p in enumerate(parts):
            if not p.residual:
                with pytest.raises(ValueError, match="not residual"):
                    forward_blocks(parts, torch.randn(1, 3, 32, 32), skip=i)


def _last_branch_conv(block: nn.Module) -> nn.Conv2d:
    """The conv that ends the residual branch (no BN after it in a pre-activation block)."""
    return block.conv3 if hasattr(block, "conv3") else block.conv2


@pytest.mark.parametrize("name", sorted(SMALL_RESIDUALS))
def test_residual_branch_and_lesion(name):
    x = torch.randn(2, 3, 32, 32)
    model = small(name)
    parts = blocks(model)
    residual = [i for i, p in enumerate(parts) if p.residual]
    assert residual
    with torch.no_grad():
        full = model(x)
        outs = forward_blocks(parts, x, keep=True)
        for i in residual:  # the block is exactly x + branch(x)
            assert torch.equal(parts[i].module(outs[i - 1]), outs[i - 1] + parts[i].branch(outs[i - 1]))
            assert {id(q) for q in parts[i].branch.parameters()} == {id(q) for q in parts[i].module.parameters()}
    for i in residual:
        model = small(name)
        parts = blocks(model)
        with torch.no_grad():
            lesioned = forward_blocks(parts, x, skip=i)
            assert not torch.equal(lesioned, full)  # the branch did something
            _last_branch_conv(parts[i].module).weight.zero_()  # now the branch outputs exactly 0
            assert torch.equal(model(x), lesioned), parts[i].name


def test_wrn_shortcuts():
    m = small("wrn28_10")
    shortcuts = [b.shortcut is None for stage in m.stages for b in stage]
    assert shortcuts == [False, True, False, True, False, True]
    m1 = build_model("wrn28_10", 10, depth=10, widen=1)  # 16 -> 16: first block is an identity too
    assert [b.shortcut is None for stage in m1.stages for b in stage] == [True, False, False]
    assert sum(p.residual for p in blocks(m1)) == 1
    assert all(isinstance(b, WideBasic) for stage in m1.stages for b in stage)


def test_wrn_dropout_only_in_train_mode():
    model = small("wrn28_10")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))


# --------------------------------------------------------------------------- structure


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnext50"])
def test_timm_resnet_cifar_stem(name):
    m = small(name)
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1)
    assert isinstance(m.maxpool, nn.Identity)
    assert m.forward_features(torch.randn(1, 3, 32, 32)).shape[-2:] == (4, 4)  # 32, 16, 8, 4


def test_resnext_groups():
    m = full_size("resnext50")
    convs = [m.layer1[0].conv2, m.layer4[0].conv2]
    assert [c.groups for c in convs] == [32, 32]
    assert [c.in_channels for c in convs] == [128, 1024]  # 32 groups x 4 channels, doubling per stage


@pytest.mark.parametrize("name", ["preact_resnet18", "preact_resnet50"])
def test_preact_resnet_structure(name):
    from timm.models.resnetv2 import PreActBasic, PreActBottleneck

    m = small(name)
    assert [type(c) for c in m.stem] == [nn.Conv2d]
    assert m.stem.conv.kernel_size == (3, 3) and m.stem.conv.stride == (1, 1)
    blk = m.stages[0].blocks[0]
    assert isinstance(blk, PreActBasic if name == "preact_resnet18" else PreActBottleneck)
    assert isinstance(blk.norm1, nn.BatchNorm2d) and type(blk.conv1) is nn.Conv2d  # not GroupNorm/StdConv
    assert m.forward_features(torch.randn(1, 3, 32, 32)).shape[-2:] == (4, 4)


def test_timm_imagenet_resnets_decompose_too():
    """The decomposers are for the timm classes, so timm's own (ImageNet-stem) models work as well."""
    for name in ("resnet18", "resnetv2_18"):
        torch.manual_seed(0)
        m = randomize_norms(timm.create_model(name, num_classes=5)).eval()
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            assert torch.equal(forward_blocks(blocks(m), x), m(x))


def test_timm_resnet_head_dropout_follows_model_mode():
    torch.manual_seed(0)
    m = timm.create_model("resnet18", num_classes=5, drop_rate=0.5)
    parts = blocks(m)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        m.eval()
        assert torch.equal(forward_blocks(parts, x), m(x))
        m.train()
        feats = forward_blocks(parts[:-1], x)
        assert not torch.equal(parts[-1].module(feats), parts[-1].module(feats))


@pytest.mark.parametrize("name", ["wrn28_10", "vgg16", "alexnet"])
def test_seeded_builds_identical(name):
    sds = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        sds.append(build_model(name, 10, **SMALL[name]).state_dict())
    assert all(torch.equal(sds[0][k], sds[1][k]) for k in sds[0])
    assert any(not torch.equal(sds[0][k], sds[2][k]) for k in sds[0])


# --------------------------------------------------------------------------- parameter counts by hand

BN = 2  # BatchNorm affine params per channel (weight + bias)


def resnet_params_by_hand(w: int, layers, num_classes: int, bottleneck: bool, preact: bool = False,
                          cardinality: int = 1, base_width: int = 64) -> int:
    """CIFAR ResNet / pre-activation ResNet / ResNeXt counted from the architecture (no timm).

    Stem: one 3x3 conv 3 -> w (no bias), + BN in the post-activation nets only. Stage s has planes
    p = w * 2^s and output width e * p (e = 4 for bottlenecks); a bottleneck's inner width is
    floor(p * base_width / 64) * cardinality and its 3x3 conv has `cardinality` groups. The first
    block of a stage has a 1x1 projection shortcut when its input width or stride differs (+ BN in
    post-activation nets). Post-activation blocks put a BN after each conv; pre-activation blocks
    put a BN before each conv (on that conv's input) and the net ends with a BN. Linear classifier.
    """
    e = 4 if bottleneck else 1
    total = 27 * w + (0 if preact else BN * w)
    cin = w
    for s, n in enumerate(layers):
        p = w * 2**s
        out = e * p
        for b in range(n):
            c_in = cin if b == 0 else out
            if bottleneck:
                mid = (p * base_width // 64) * cardinality
                convs = [(c_in, mid, 1, 1), (mid, mid, 3, cardinality), (mid, out, 1, 1)]
            else:
                convs = [(c_in, p, 3, 1), (p, out, 3, 1)]
            for ci, co, k, g in convs:
                total += k * k * ci * co // g + BN * (ci if preact else co)
            if b == 0 and (s > 0 or c_in != out):
                total += c_in * out + (0 if preact else BN * out)
        cin = out
    return total + (BN * cin if preact else 0) + cin * num_classes + num_classes


def wrn_params_by_hand(depth: int, k: int, num_classes: int) -> int:
    """WRN-depth-k: 3x3 stem 3 -> 16; n = (depth-4)/6 blocks per stage of widths 16k, 32k, 64k,
    each BN(cin) conv3x3(cin, c) BN(c) conv3x3(c, c) (+ 1x1 conv projection when cin != c);
    final BN, linear. No conv biases."""
    n = (depth - 4) // 6
    total, cin = 27 * 16, 16
    for c in (16 * k, 32 * k, 64 * k):
        for b in range(n):
            ci = cin if b == 0 else c
            total += BN * ci + 9 * ci * c + BN * c + 9 * c * c
            total += ci * c if ci != c else 0  # projection (the stride-2 blocks always change width)
        cin = c
    return total + BN * cin + cin * num_classes + num_classes


def vgg16_params_by_hand(w: int, num_classes: int) -> int:
    """13 bias-free 3x3 convs with widths w,w | 2w,2w | 4w x3 | 8w x3 | 8w x3, one BN per conv
    (after it; or, pre-activation, before each conv but the first plus one at the end: the same
    widths shifted by one, so the same count), linear 8w -> classes."""
    widths = [1, 1, 2, 2, 4, 4, 4, 8, 8, 8, 8, 8, 8]
    total, cin = 0, 3
    for m in widths:
        total += 9 * cin * m * w + BN * m * w
        cin = m * w
    return total + cin * num_classes + num_classes


def alexnet_params_by_hand(w: int, hidden: int, num_classes: int) -> int:
    """Convs (with bias) 3x3 3->w, 5x5 w->3w, 3x3 3w->6w, 6w->4w, 4w->4w; FC 4w*4*4 -> hidden ->
    hidden -> classes."""
    convs = [(3, w, 3), (w, 3 * w, 5), (3 * w, 6 * w, 3), (6 * w, 4 * w, 3), (4 * w, 4 * w, 3)]
    total = sum(k * k * ci * co + co for ci, co, k in convs)
    fcs = [(4 * w * 16, hidden), (hidden, hidden), (hidden, num_classes)]
    return total + sum(i * o + o for i, o in fcs)


def timm_cifar_reference(timm_name: str, num_classes: int = 10) -> int:
    """timm's ImageNet model of the same family with its 7x7 stem conv (3 -> 64) swapped for a 3x3 one."""
    with torch.device("meta"):
        ref = count_params(timm.create_model(timm_name, num_classes=num_classes))
    return ref - 7 * 7 * 3 * 64 + 3 * 3 * 3 * 64


#: Full-size counts for 10 classes. Derivations: resnet18/50, resnext50 and the pre-activation nets
#: equal timm's resnet18 / resnet50 / resnext50_32x4d / resnetv2_18 / resnetv2_50 with the 7x7 stem
#: replaced by a 3x3 one (ImageNet counts with 10 classes: 11,181,642 / 23,528,522 / 23,000,394 /
#: 11,179,850 / 23,520,842; minus 9,408 plus 1,728). WRN-28-10: 36,479,194, the figure of the
#: authors' bias-free implementation (36.5M). VGG-16-BN: 14,728,266 for the usual CIFAR version
#: with conv biases, minus the 4,224 biases our bias-free convs drop. AlexNet: see the hand formula
#: (2,448,192 conv + 33,603,594 FC).
FULL_COUNTS = {
    "resnet18": 11_173_962,
    "resnet50": 23_520_842,
    "resnext50": 22_992_714,
    "preact_resnet18": 11_172_170,
    "preact_resnet50": 23_513_162,
    "wrn28_10": 36_479_194,
    "vgg16": 14_724_042,
    "preact_vgg16": 14_724_042,
    "alexnet": 36_051_786,
}


def test_full_size_param_counts():
    assert set(FULL_COUNTS) == set(CNNS)
    got = {name: count_params(full_size(name)) for name in CNNS}
    assert got == FULL_COUNTS
    by_hand = {
        "resnet18": resnet_params_by_hand(64, (2, 2, 2, 2), 10, bottleneck=False),
        "resnet50": resnet_params_by_hand(64, (3, 4, 6, 3), 10, bottleneck=True),
        "resnext50": resnet_params_by_hand(64, (3, 4, 6, 3), 10, bottleneck=True, cardinality=32, base_width=4),
        "preact_resnet18": resnet_params_by_hand(64, (2, 2, 2, 2), 10, bottleneck=False, preact=True),
        "preact_resnet50": resnet_params_by_hand(64, (3, 4, 6, 3), 10, bottleneck=True, preact=True),
        "wrn28_10": wrn_params_by_hand(28, 10, 10),
        "vgg16": vgg16_params_by_hand(64, 10),
        "preact_vgg16": vgg16_params_by_hand(64, 10),
        "alexnet": alexnet_params_by_hand(64, 4096, 10),
    }
    assert by_hand == FULL_COUNTS
    assert timm_cifar_reference("resnet18") == FULL_COUNTS["resnet18"]
    assert timm_cifar_reference("resnet50") == FULL_COUNTS["resnet50"]
    assert timm_cifar_reference("resnext50_32x4d") == FULL_COUNTS["resnext50"]
    assert timm_cifar_reference("resnetv2_18") == FULL_COUNTS["preact_resnet18"]
    assert timm_cifar_reference("resnetv2_50") == FULL_COUNTS["preact_resnet50"]


def test_param_counts_follow_overrides_and_classes():
    cases = {
        "resnet50": (dict(width=16, layers=[1, 2, 1, 1]),
                     lambda nc: resnet_params_by_hand(16, (1, 2, 1, 1), nc, bottleneck=True)),
        "resnext50": (dict(width=16, layers=[1, 1, 2, 1], cardinality=8, base_width=8),
                      lambda nc: resnet_params_by_hand(16, (1, 1, 2, 1), nc, True, cardinality=8, base_width=8)),
        "preact_resnet18": (dict(width=16, layers=[1, 1, 3, 1]),
                            lambda nc: resnet_params_by_hand(16, (1, 1, 3, 1), nc, bottleneck=False, preact=True)),
        "preact_resnet50": (dict(width=8, layers=[2, 1, 1, 2]),
                            lambda nc: resnet_params_by_hand(8, (2, 1, 1, 2), nc, bottleneck=True, preact=True)),
        "wrn28_10": (dict(depth=16, widen=1), lambda nc: wrn_params_by_hand(16, 1, nc)),
        "vgg16": (dict(width=16), lambda nc: vgg16_params_by_hand(16, nc)),
        "preact_vgg16": (dict(width=16), lambda nc: vgg16_params_by_hand(16, nc)),
        "alexnet": (dict(width=16, hidden=100), lambda nc: alexnet_params_by_hand(16, 100, nc)),
    }
    for name, (args, expected) in cases.items():
        for nc in (10, 100):
            assert count_params(full_size(name, nc, **args)) == expected(nc), (name, nc)
    assert count_params(full_size("wrn28_10", 100)) == wrn_params_by_hand(28, 10, 100)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("name,args,needle", [
    ("wrn28_10", {"depth": 27}, "6n+4"),
    ("wrn28_10", {"depth": 4}, "6n+4"),
    ("wrn28_10", {"widen": 0}, "widen"),
    ("wrn28_10", {"dropout": 1.0}, "dropout"),
    ("wrn28_10", {"dropout": "0.3"}, "float"),
    ("wrn28_10", {"depth": 28.0}, "int"),
    ("resnet50", {"width": 7}, "even"),
    ("resnet50", {"layers": [3, 4, 6]}, "layers"),
    ("resnet50", {"layers": [3, 0, 6, 3]}, "layers"),
    ("resnext50", {"width": 8}, "base_width"),
    ("resnext50", {"cardinality": 0}, "cardinality"),
    ("preact_resnet18", {"width": 12}, "multiple of 8"),
    ("preact_resnet50", {"layers": [1, 1, 1, 1, 1]}, "layers"),
    ("vgg16", {"width": 0}, "width"),
    ("preact_vgg16", {"depth": 16}, "unknown model arg"),
    ("alexnet", {"hidden": 0}, "hidden"),
    ("alexnet", {"dropout": -0.1}, "dropout"),
])
def test_validate_rejects_bad_overrides(name, args, needle):
    errors = validate_model_args(name, args)
    assert errors and any(needle in e for e in errors), errors
    assert all(name in e for e in errors)
    with pytest.raises(ValueError):
        build_model(name, 10, **args)


def test_validate_accepts_good_overrides():
    assert validate_model_args("wrn28_10", {"depth": 40, "widen": 4, "dropout": 0.3}) == []
    assert validate_model_args("wrn28_10", {"dropout": 0}) == []  # an int is a fine float
    assert validate_model_args("resnext50", {"width": 16, "base_width": 4}) == []
    assert validate_model_args("preact_resnet50", {"width": 16, "layers": [1, 1, 1, 1]}) == []
    assert validate_model_args("alexnet", {"width": 3, "hidden": 10, "dropout": 0.0}) == []


def test_subclass_overriding_forward_is_refused():
    from timm.models.resnet import BasicBlock, ResNet

    class Doubled(ResNet):
        def forward(self, x):
            return 2 * super().forward(x)

    with pytest.raises(TypeError, match="overrides"):
        blocks(Doubled(BasicBlock, [1, 1, 1, 1], num_classes=3))


TIMM_CNNS = ["resnet18", "resnet50", "resnext50", "preact_resnet18", "preact_resnet50"]


@pytest.mark.parametrize("name", TIMM_CNNS)
def test_timm_cnns_take_timms_stochastic_depth(name):
    """drop_path: timm's DropPath, rising linearly over the blocks; identity in eval mode."""
    from timm.layers import DropPath

    torch.manual_seed(0)
    model = build_model(name, 10, **SMALL[name], drop_path=0.3)
    n = sum(SMALL[name]["layers"])
    rates = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    assert rates == pytest.approx([0.3 * i / (n - 1) for i in range(1, n)])  # block 0 keeps 0
    with torch.no_grad():  # timm zero-inits each block's last norm: make the branches count
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
    plain = build_model(name, 10, **SMALL[name])
    plain.load_state_dict(model.state_dict())
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(model.eval()(x), plain.eval()(x))
    model.train()
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(2)
    assert not torch.allclose(a, model(x))  # some block dropped for some sample
    assert validate_model_args(name, {**SMALL[name], "drop_path": 1.0}) == [
        f"model '{name}': drop_path must be in [0, 1), got 1.0"]
