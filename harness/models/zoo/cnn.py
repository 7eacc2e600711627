"""Convolutional architectures of the zoo, CIFAR-sized (32x32 input, any class count).

Every model keeps the full 32x32 resolution in its stem (no ImageNet 7x7/2 conv + max-pool) and
ends in a pooling step that does not depend on the input size, so 40x40 (or any size large
enough for the down-sampling) also runs. Each architecture also registers a block decomposition
(`harness.models.blocks`) for the per-depth analyses.

Registered here (name: construction):

- resnet18, resnet50, resnext50: timm `ResNet` (post-activation BasicBlock / Bottleneck).
- preact_resnet18, preact_resnet50: timm `ResNetV2` (pre-activation, He et al. 2016 "Identity
  mappings") with BatchNorm and plain convs, final BN-ReLU before pooling.
- wrn28_10: WideResNet (Zagoruyko & Komodakis 2016), hand-written; timm has no CIFAR WRN.
- vgg16, preact_vgg16: CIFAR VGG-16 with BatchNorm and a linear classifier on the GAP vector.
- alexnet: a CIFAR AlexNet (5 convs, 3 fully connected layers).

Decomposition rules: the stem is kind "stem"; each residual block or conv unit is kind "conv";
max-pools and the global pooling are kind "pool" (the global pooling flattens, layout "flat");
a final BN-ReLU is kind "norm"; the classifier is kind "head". A block is `residual=True` only
when it computes exactly x + f(x): pre-activation blocks with an identity shortcut. Post-activation
ResNet blocks compute relu(x + f(x)) and projection-shortcut blocks compute P(x) + f(x); neither
can be lesioned by dropping a branch.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from harness.models.blocks import Block, register_decomposer
from harness.models.registry import ModelEntry, check_positive, register_model
from harness.models.zoo.transformers import check_drop_path

__all__ = ["WideBasic", "WideResNet", "VGG", "AlexNet", "VGG16_CFG"]


# --------------------------------------------------------------------------- shared helpers


def _check_layers(cfg: dict, n: int = 4) -> list[str]:
    layers = cfg["layers"]
    if len(layers) != n or any(k < 1 for k in layers):
        return [f"layers must be {n} ints >= 1, got {list(layers)!r}"]
    return []


def _check_dropout(cfg: dict, key: str = "dropout") -> list[str]:
    p = cfg[key]
    return [] if 0.0 <= p < 1.0 else [f"{key} must be in [0, 1), got {p!r}"]


def _init_cnn(module: nn.Module) -> None:
    """Kaiming-normal (fan_out) convs, unit BN, zero biases: the init timm's ResNets use.

    Hand-written models use it too so that all CNNs of the zoo start alike. Linear layers keep
    PyTorch's default init (as timm's ResNet fc does).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class _Branch(nn.Module):
    """The branch f of a block that computes x + f(x), sharing (not copying) the block's layers.

    A lesion drops this branch; an analysis can call it to see what the block adds.
    """

    def __init__(self, block: nn.Module, fn: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.block = block
        self._fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fn(self.block, x)


class _OwnerDropout(nn.Module):
    """Functional dropout that follows the owning model's train/eval mode.

    timm's ResNet applies its head dropout with F.dropout(training=self.training); a fresh
    nn.Dropout would keep its own (possibly stale) mode.
    """

    def __init__(self, owner: nn.Module, p: float) -> None:
        super().__init__()
        self._owner = weakref.ref(owner)
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        owner = self._owner()
        return F.dropout(x, p=self.p, training=owner.training if owner is not None else self.training)


class _ConvHead(nn.Module):
    """timm ClassifierHead with a 1x1-conv fc, applied to the already pooled and flattened vector."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head
        if isinstance(h.fc, nn.Conv2d):
            x = x[:, :, None, None]
        return h.flatten(h.fc(h.drop(x)))


def _require_own_forward(model: nn.Module, base: type, *methods: str) -> None:
    """Refuse a subclass that overrides `base`'s forward: its decomposition would not reproduce it."""
    overridden = [m for m in methods if getattr(type(model), m) is not getattr(base, m)]
    if overridden:
        raise TypeError(f"no block decomposition for {type(model).__name__}: it overrides "
                        f"{base.__name__}.{'/'.join(overridden)}")


def _cifar_reductions(feature_info: list[dict]) -> None:
    """Fix timm's feature_info strides after the stem swap: stem 1, then stages 1, 2, 4, 8 (not 2, 4, ..., 32)."""
    feature_info[0]["reduction"] = 1
    for i, info in enumerate(feature_info[1:]):
        info["reduction"] = 2**i


def _gap_flat() -> nn.Module:
    """Global average pooling to a (B, C) vector, whatever the input size."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


# --------------------------------------------------------------------------- timm ResNet (post-activation)


def _check_resnet(cfg: dict) -> list[str]:
    errors = check_positive(cfg, ("width",))
    if cfg["width"] % 2:
        errors.append(f"width must be even, got {cfg['width']!r}")
    return errors + _check_layers(cfg)


def _check_resnext(cfg: dict) -> list[str]:
    errors = _check_resnet(cfg) + check_positive(cfg, ("cardinality", "base_width"))
    if not errors and cfg["width"] * cfg["base_width"] < 64:
        # timm: group width = floor(planes * base_width / 64); planes = width in the first stage
        errors.append(
            f"width * base_width must be >= 64 so every group has a channel, got "
            f"{cfg['width']} * {cfg['base_width']}"
        )
    return errors


def _cifar_timm_resnet(block: type, num_classes: int, width: int, layers: Sequence[int], **kwargs: Any) -> nn.Module:
    """timm ResNet with a 3x3/stride-1 stem and no max-pool, stage widths w, 2w, 4w, 8w.

    The ImageNet stem (7x7/2 conv + max-pool) would shrink a 32x32 image to 8x8 before the first
    stage; the paper's CIFAR models keep full resolution. timm's plain stem hard-codes 64 input
    channels for layer1, so the model is made with the 'deep' stem (whose output width is
    2 * stem_width = width, hence width must be even) and that stem is then swapped for one 3x3 conv.
    """
    from timm.models.resnet import ResNet

    model = ResNet(
        block=block,
        layers=tuple(layers),
        num_classes=num_classes,
        channels=(width, 2 * width, 4 * width, 8 * width),
        stem_type="deep",
        stem_width=width // 2,
        **kwargs,
    )
    model.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as timm inits convs
    model.maxpool = nn.Identity()
    assert model.bn1.num_features == width
    _cifar_reductions(model.feature_info)
    return model


def _build_resnet18(num_classes: int, width: int = 64, layers: "list[int] | tuple[int, ...]" = (2, 2, 2, 2),
                    drop_path: float = 0.0) -> nn.Module:
    """CIFAR ResNet-18: timm BasicBlock stages (2, 2, 2, 2), see `_cifar_timm_resnet`.

    drop_path: timm's stochastic depth, rising linearly to this rate over the blocks.
    """
    from timm.models.resnet import BasicBlock

    return _cifar_timm_resnet(BasicBlock, num_classes, width, layers, drop_path_rate=float(drop_path))


def _build_resnet50(num_classes: int, width: int = 64, layers: "list[int] | tuple[int, ...]" = (3, 4, 6, 3),
                    drop_path: float = 0.0) -> nn.Module:
    """CIFAR ResNet-50 (the paper's main CNN): timm Bottleneck stages (3, 4, 6, 3), expansion 4."""
    from timm.models.resnet import Bottleneck

    return _cifar_timm_resnet(Bottleneck, num_classes, width, layers, drop_path_rate=float(drop_path))


def _build_resnext50(
    num_classes: int,
    width: int = 64,
    layers: "list[int] | tuple[int, ...]" = (3, 4, 6, 3),
    cardinality: int = 32,
    base_width: int = 4,
    drop_path: float = 0.0,
) -> nn.Module:
    """CIFAR ResNeXt-50 32x4d: the ResNet-50 layout with grouped 3x3 convs (timm cardinality/base_width)."""
    from timm.models.resnet import Bottleneck

    return _cifar_timm_resnet(Bottleneck, num_classes, width, layers, cardinality=cardinality,
                              base_width=base_width, drop_path_rate=float(drop_path))


def _decompose_timm_resnet(model: nn.Module) -> list[Block]:
    """stem (conv1, bn1, act1, maxpool), every block of layer1..4, global pool, fc.

    timm's BasicBlock / Bottleneck end in act(x + f(x)): not a pure residual, so none is
    lesionable.
    """
    from timm.models.resnet import ResNet

    _require_own_forward(model, ResNet, "forward", "forward_features", "forward_head")
    parts = [Block("stem", "stem", nn.Sequential(model.conv1, model.bn1, model.act1, model.maxpool), "nchw")]
    for li in range(1, 5):
        for bi, blk in enumerate(getattr(model, f"layer{li}")):
            parts.append(Block(f"layer{li}.{bi}", "conv", blk, "nchw"))
    parts.append(Block("global_pool", "pool", nn.Sequential(model.global_pool, nn.Flatten(1)), "flat"))
    head: nn.Module = model.fc
    if model.drop_rate:
        head = nn.Sequential(_OwnerDropout(model, float(model.drop_rate)), model.fc)
    parts.append(Block("fc", "head", head, "flat"))
    return parts


# --------------------------------------------------------------------------- pre-activation ResNet (timm ResNetV2)


def _check_preact(cfg: dict) -> list[str]:
    errors = check_positive(cfg, ("width",))
    if cfg["width"] % 8:
        errors.append(f"width must be a multiple of 8 (timm ResNetV2 rounds channel counts to 8), got {cfg['width']!r}")
    return errors + _check_layers(cfg)


def _cifar_preact_resnet(num_classes: int, width: int, layers: Sequence[int], basic: bool,
                         drop_path: float = 0.0) -> nn.Module:
    """timm ResNetV2 (pre-activation) with BatchNorm + plain convs and a single 3x3/stride-1 stem conv.

    As in He et al. (2016) the stem is a bare conv (no BN-ReLU: the first block pre-activates
    it) and a final BN-ReLU precedes pooling. timm's defaults (weight-standardized convs,
    GroupNorm) are BiT's, not the paper's, so conv and norm layers are set as timm's resnetv2_18/50
    set them. Stage widths are w, 2w, 4w, 8w (basic) or 4w, ..., 32w with bottleneck width w, ... (bottleneck).
    """
    from timm.layers import BatchNormAct2d, create_conv2d
    from timm.models.resnetv2 import ResNetV2

    expansion = 1 if basic else 4
    model = ResNetV2(
        layers=list(layers),
        channels=tuple(expansion * width * 2**i for i in range(4)),
        num_classes=num_classes,
        stem_chs=width,
        basic=basic,
        bottle_ratio=1.0 if basic else 0.25,
        conv_layer=create_conv2d,
        norm_layer=BatchNormAct2d,
        drop_path_rate=float(drop_path),
    )
    conv = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # as timm inits convs
    model.stem = nn.Sequential(OrderedDict(conv=conv))
    model.stem_feat_idx = 0
    model.feature_info[0]["module"] = "stem.conv"
    _cifar_reductions(model.feature_info)
    return model


def _build_preact_resnet18(num_classes: int, width: int = 64, layers: "list[int] | tuple[int, ...]" = (2, 2, 2, 2),
                           drop_path: float = 0.0) -> nn.Module:
    """CIFAR pre-activation ResNet-18 (timm PreActBasic blocks)."""
    return _cifar_preact_resnet(num_classes, width, layers, basic=True, drop_path=drop_path)


def _build_preact_resnet50(num_classes: int, width: int = 64, layers: "list[int] | tuple[int, ...]" = (3, 4, 6, 3),
                           drop_path: float = 0.0) -> nn.Module:
    """CIFAR pre-activation ResNet-50 (timm PreActBottleneck blocks, stride on the 3x3 conv)."""
    return _cifar_preact_resnet(num_classes, width, layers, basic=False, drop_path=drop_path)


def _preact_basic_branch(b: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return b.drop_path(b.conv2(b.norm2(b.conv1(b.norm1(x)))))


def _preact_bottleneck_branch(b: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return b.drop_path(b.conv3(b.norm3(b.conv2(b.norm2(b.conv1(b.norm1(x)))))))


def _decompose_resnetv2(model: nn.Module) -> list[Block]:
    """stem, every stage block, final norm, global pool, head.

    A PreActBasic / PreActBottleneck without a downsample computes exactly x + f(x): residual,
    with f its pre-activated conv branch. Blocks with a projection (first of a stage when the shape
    changes) and timm's non-pre-activation Bottleneck are not.
    """
    from timm.models.resnetv2 import PreActBasic, PreActBottleneck, ResNetV2

    _require_own_forward(model, ResNetV2, "forward", "forward_features", "forward_head")
    branch_fns = {PreActBasic: _preact_basic_branch, PreActBottleneck: _preact_bottleneck_branch}
    parts = [Block("stem", "stem", model.stem, "nchw")]
    for si, stage in enumerate(model.stages):
        for bi, blk in enumerate(stage.blocks):
            fn = branch_fns.get(type(blk))
            if fn is not None and blk.downsample is None:
                parts.append(Block(f"stages.{si}.blocks.{bi}", "conv", blk, "nchw", residual=True, branch=_Branch(blk, fn)))
            else:
                parts.append(Block(f"stages.{si}.blocks.{bi}", "conv", blk, "nchw"))
    if not isinstance(model.norm, nn.Identity):
        parts.append(Block("norm", "norm", model.norm, "nchw"))
    parts.append(Block("head.global_pool", "pool", nn.Sequential(model.head.global_pool, nn.Flatten(1)), "flat"))
    parts.append(Block("head.fc", "head", _ConvHead(model.head), "flat"))
    return parts


# --------------------------------------------------------------------------- WideResNet


class WideBasic(nn.Module):
    """Pre-activation wide basic block: BN-ReLU-conv3x3-BN-ReLU-dropout-conv3x3, plus shortcut.

    When the shape changes the shortcut is a 1x1 conv applied to the pre-activated input (as in
    the authors' code), otherwise it is the identity and the block is exactly x + branch(x).
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, stride=1, padding=1, bias=False)
        self.shortcut = (
            nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False) if stride != 1 or in_chs != out_chs else None
        )

    def _rest(self, o: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.drop(F.relu(self.bn2(self.conv1(o)))))

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch f (meaningful as a lesion only when the shortcut is the identity)."""
        return self._rest(F.relu(self.bn1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        return self._rest(o) + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    """WRN-depth-widen for CIFAR: 3x3 stem to 16 channels, 3 stages of (depth-4)/6 WideBasic blocks
    with widths 16k, 32k, 64k (strides 1, 2, 2), final BN-ReLU, global average pooling, linear.
    """

    def __init__(self, num_classes: int, depth: int = 28, widen: int = 10, dropout: float = 0.0) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4 >= 10, got {depth}")
        n = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.stem = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        stages, in_chs = [], 16
        for i, w in enumerate(widths):
            blocks = [WideBasic(in_chs if b == 0 else w, w, stride=(1 if i == 0 else 2) if b == 0 else 1, dropout=dropout)
                      for b in range(n)]
            stages.append(nn.Sequential(*blocks))
            in_chs = w
        self.stages = nn.Sequential(*stages)
        self.norm = nn.Sequential(nn.BatchNorm2d(in_chs), nn.ReLU())
        self.pool = _gap_flat()
        self.fc = nn.Linear(in_chs, num_classes)
        _init_cnn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.norm(self.stages(self.stem(x)))))


def _check_wrn(cfg: dict) -> list[str]:
    errors = check_positive(cfg, ("widen",))
    if cfg["depth"] < 10 or (cfg["depth"] - 4) % 6:
        errors.append(f"depth must be 6n+4 >= 10 (10, 16, 22, 28, ...), got {cfg['depth']!r}")
    return errors + _check_dropout(cfg)


def _build_wrn(num_classes: int, depth: int = 28, widen: int = 10, dropout: float = 0.0) -> nn.Module:
    """WRN-28-10 by default; dropout (between the two convs of a block) is 0 as in the paper's recipe."""
    return WideResNet(num_classes, depth=depth, widen=widen, dropout=float(dropout))


def _decompose_wrn(model: WideResNet) -> list[Block]:
    """stem, every WideBasic (residual when its shortcut is the identity), norm, pool, fc."""
    parts = [Block("stem", "stem", model.stem, "nchw")]
    for si, stage in enumerate(model.stages):
        for bi, blk in enumerate(stage):
            name = f"stages.{si}.{bi}"
            if blk.shortcut is None:
                parts.append(Block(name, "conv", blk, "nchw", residual=True, branch=_Branch(blk, WideBasic.branch)))
            else:
                parts.append(Block(name, "conv", blk, "nchw"))
    parts += [
        Block("norm", "norm", model.norm, "nchw"),
        Block("pool", "pool", model.pool, "flat"),
        Block("fc", "head", model.fc, "flat"),
    ]
    return parts


# --------------------------------------------------------------------------- VGG


#: CIFAR VGG-16 layout in units of the base width w (=64): channel multipliers, "M" = 2x2 max-pool.
VGG16_CFG: tuple = (1, 1, "M", 2, 2, "M", 4, 4, 4, "M", 8, 8, 8, "M", 8, 8, 8, "M")


class VGG(nn.Module):
    """CIFAR VGG with BatchNorm: conv stacks and max-pools (`features`), global average pooling,
    one linear layer on the 8w-dim vector.

    `preact=False`: each unit is conv3x3-BN-ReLU. `preact=True`: each unit after the first is
    BN-ReLU-conv3x3, the first conv sees the raw image (as in pre-activation ResNets, rather than
    a ReLU of the normalized image), and a final BN-ReLU (`norm`) precedes pooling. Convs have no
    bias: a BN follows every conv in both variants, so a bias would be redundant. After the five
    max-pools a 32x32 input is 1x1; the global pooling makes other sizes (e.g. 40x40) work too.
    """

    def __init__(self, num_classes: int, width: int = 64, cfg: Sequence = VGG16_CFG, preact: bool = False) -> None:
        super().__init__()
        self.preact = preact
        units: list[nn.Module] = []
        in_chs = 3
        for item in cfg:
            if item == "M":
                units.append(nn.MaxPool2d(2, 2))
                continue
            out = int(item) * width
            conv = nn.Conv2d(in_chs, out, 3, padding=1, bias=False)
            if not preact:
                units.append(nn.Sequential(OrderedDict(conv=conv, bn=nn.BatchNorm2d(out), act=nn.ReLU())))
            elif in_chs == 3:
                units.append(nn.Sequential(OrderedDict(conv=conv)))
            else:
                units.append(nn.Sequential(OrderedDict(bn=nn.BatchNorm2d(in_chs), act=nn.ReLU(), conv=conv)))
            in_chs = out
        self.features = nn.Sequential(*units)
        self.norm = nn.Sequential(nn.BatchNorm2d(in_chs), nn.ReLU()) if preact else nn.Identity()
        self.pool = _gap_flat()
        self.fc = nn.Linear(in_chs, num_classes)
        _init_cnn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.norm(self.features(x))))


def _check_width(cfg: dict) -> list[str]:
    return check_positive(cfg, ("width",))


def _build_vgg16(num_classes: int, width: int = 64) -> nn.Module:
    """CIFAR VGG-16-BN (conv-BN-ReLU units), channels w, 2w, 4w, 8w, 8w per stage."""
    return VGG(num_classes, width=width, preact=False)


def _build_preact_vgg16(num_classes: int, width: int = 64) -> nn.Module:
    """CIFAR pre-activation VGG-16 (BN-ReLU-conv units), the paper's 'prevgg'."""
    return VGG(num_classes, width=width, preact=True)


def _decompose_vgg(model: VGG) -> list[Block]:
    """First conv unit as stem, every conv unit ("conv") and max-pool ("pool"), norm, GAP, fc."""
    parts = []
    for i, unit in enumerate(model.features):
        kind = "pool" if isinstance(unit, nn.MaxPool2d) else ("stem" if i == 0 else "conv")
        parts.append(Block(f"features.{i}", kind, unit, "nchw"))
    if not isinstance(model.norm, nn.Identity):
        parts.append(Block("norm", "norm", model.norm, "nchw"))
    parts += [Block("pool", "pool", model.pool, "flat"), Block("fc", "head", model.fc, "flat")]
    return parts


# --------------------------------------------------------------------------- AlexNet


class AlexNet(nn.Module):
    """CIFAR AlexNet: five convs (3x3 stride-1 stem instead of 11x11/4, then 5x5, 3x3, 3x3, 3x3;
    channels w, 3w, 6w, 4w, 4w), overlapping 3x3/2 max-pools after conv 1, 2 and 5 (32 -> 16 -> 8
    -> 4), adaptive average pooling to 4x4 (the identity at 32x32, so other sizes run), then three
    fully connected layers (hidden, hidden, classes) with dropout before the first two.
    No BatchNorm, so convs keep their bias.
    """

    def __init__(self, num_classes: int, width: int = 64, hidden: int = 4096, dropout: float = 0.5) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = width, 3 * width, 6 * width, 4 * width, 4 * width

        def unit(cin: int, cout: int, k: int) -> nn.Module:
            return nn.Sequential(OrderedDict(conv=nn.Conv2d(cin, cout, k, padding=k // 2), act=nn.ReLU()))

        self.features = nn.Sequential(
            unit(3, c1, 3),
            nn.MaxPool2d(3, 2, padding=1),
            unit(c1, c2, 5),
            nn.MaxPool2d(3, 2, padding=1),
            unit(c2, c3, 3),
            unit(c3, c4, 3),
            unit(c4, c5, 3),
            nn.MaxPool2d(3, 2, padding=1),
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(1))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(c5 * 16, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )
        _init_cnn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def _check_alexnet(cfg: dict) -> list[str]:
    return check_positive(cfg, ("width", "hidden")) + _check_dropout(cfg)


def _build_alexnet(num_classes: int, width: int = 64, hidden: int = 4096, dropout: float = 0.5) -> nn.Module:
    """CIFAR AlexNet; see `AlexNet`."""
    return AlexNet(num_classes, width=width, hidden=hidden, dropout=float(dropout))


def _decompose_alexnet(model: AlexNet) -> list[Block]:
    """conv 1 as stem, each conv ("conv") and max-pool ("pool"), the 4x4 pooling, the 3-layer classifier as head."""
    parts = []
    for i, unit in enumerate(model.features):
        kind = "pool" if isinstance(unit, nn.MaxPool2d) else ("stem" if i == 0 else "conv")
        parts.append(Block(f"features.{i}", kind, unit, "nchw"))
    parts += [Block("pool", "pool", model.pool, "flat"), Block("classifier", "head", model.classifier, "flat")]
    return parts


# --------------------------------------------------------------------------- registration


def _with_drop_path(check: Callable[[dict], list[str]]) -> Callable[[dict], list[str]]:
    """`check` plus the drop_path range check (the timm CNNs take stochastic depth)."""
    return lambda cfg: check(cfg) + check_drop_path(cfg)


def _register() -> None:
    from timm.models.resnet import ResNet
    from timm.models.resnetv2 import ResNetV2

    resnet_desc = "timm {}, 3x3 stem, no max-pool"
    for entry in (
        ModelEntry("resnet18", _build_resnet18,
                   "CIFAR ResNet-18 (timm BasicBlock, 3x3 stem, no max-pool), stage widths w,2w,4w,8w",
                   {"width": 64, "layers": [2, 2, 2, 2], "drop_path": 0.0}, _with_drop_path(_check_resnet)),
        ModelEntry("resnet50", _build_resnet50,
                   "CIFAR ResNet-50 (" + resnet_desc.format("Bottleneck") + "), stage widths 4w..32w",
                   {"width": 64, "layers": [3, 4, 6, 3], "drop_path": 0.0}, _with_drop_path(_check_resnet)),
        ModelEntry("resnext50", _build_resnext50,
                   "CIFAR ResNeXt-50 32x4d (" + resnet_desc.format("Bottleneck, grouped 3x3") + ")",
                   {"width": 64, "layers": [3, 4, 6, 3], "cardinality": 32, "base_width": 4,
                    "drop_path": 0.0}, _with_drop_path(_check_resnext)),
        ModelEntry("preact_resnet18", _build_preact_resnet18,
                   "CIFAR pre-activation ResNet-18 (timm ResNetV2 PreActBasic, BN), 3x3 stem",
                   {"width": 64, "layers": [2, 2, 2, 2], "drop_path": 0.0}, _with_drop_path(_check_preact)),
        ModelEntry("preact_resnet50", _build_preact_resnet50,
                   "CIFAR pre-activation ResNet-50 (timm ResNetV2 PreActBottleneck, BN), 3x3 stem",
                   {"width": 64, "layers": [3, 4, 6, 3], "drop_path": 0.0}, _with_drop_path(_check_preact)),
        ModelEntry("wrn28_10", _build_wrn,
                   "CIFAR WideResNet-depth-widen (pre-activation basic blocks, widths 16k,32k,64k)",
                   {"depth": 28, "widen": 10, "dropout": 0.0}, _check_wrn),
        ModelEntry("vgg16", _build_vgg16,
                   "CIFAR VGG-16-BN (conv-BN-ReLU), GAP + linear classifier, base width w",
                   {"width": 64}, _check_width),
        ModelEntry("preact_vgg16", _build_preact_vgg16,
                   "CIFAR pre-activation VGG-16 (BN-ReLU-conv), GAP + linear classifier, base width w",
                   {"width": 64}, _check_width),
        ModelEntry("alexnet", _build_alexnet,
                   "CIFAR AlexNet (5 convs, 3x3 stem, 3 FC layers of width hidden)",
                   {"width": 64, "hidden": 4096, "dropout": 0.5}, _check_alexnet),
    ):
        register_model(entry)

    register_decomposer(ResNet, _decompose_timm_resnet)
    register_decomposer(ResNetV2, _decompose_resnetv2)
    register_decomposer(WideResNet, _decompose_wrn)
    register_decomposer(VGG, _decompose_vgg)
    register_decomposer(AlexNet, _decompose_alexnet)


_register()
