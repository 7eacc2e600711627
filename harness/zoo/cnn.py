"""Convolutional architectures of the zoo, CIFAR-sized (32x32 input, any class count)."""

from __future__ import annotations

from torch import nn

from harness.models import ModelEntry, check_positive, register_model

# --------------------------------------------------------------------------- resnet18


def _check_resnet(cfg: dict) -> list[str]:
    errors = check_positive(cfg, ("width",))
    if cfg["width"] % 2:
        errors.append(f"width must be even, got {cfg['width']!r}")
    layers = cfg["layers"]
    if len(layers) != 4 or any(n < 1 for n in layers):
        errors.append(f"layers must be 4 ints >= 1, got {list(layers)!r}")
    return errors


def _build_resnet18(num_classes: int, width: int = 64, layers: "list[int] | tuple[int, ...]" = (2, 2, 2, 2)) -> nn.Module:
    """CIFAR ResNet-18: timm's ResNet with a 3x3/stride-1 stem and no max-pool.

    The ImageNet stem (7x7/2 conv + max-pool) would shrink a 32x32 image to 8x8
    before the first stage; the paper's CIFAR models keep full resolution.
    timm's plain stem hard-codes 64 input channels for layer1, so the model is
    made with the 'deep' stem (whose output width is 2 * stem_width = width,
    hence width must be even) and that stem is then swapped for one 3x3 conv.
    """
    from timm.models.resnet import BasicBlock, ResNet

    model = ResNet(
        block=BasicBlock,
        layers=tuple(layers),
        num_classes=num_classes,
        channels=(width, 2 * width, 4 * width, 8 * width),
        stem_type="deep",
        stem_width=width // 2,
    )
    model.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as timm inits convs
    model.maxpool = nn.Identity()
    assert model.bn1.num_features == width
    return model


register_model(
    ModelEntry(
        name="resnet18",
        build=_build_resnet18,
        description="CIFAR ResNet-18 (timm BasicBlock, 3x3 stem, no max-pool), stage widths w,2w,4w,8w",
        defaults={"width": 64, "layers": [2, 2, 2, 2]},
        check=_check_resnet,
    )
)
