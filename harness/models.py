"""Model registry: name -> constructor of a CIFAR-sized (32x32 input) classifier.

The spec validator calls `validate_model_args` so that a sweep with a bad model
name or override fails before any work unit runs; work units call
`build_model`. Entries are plain records so a later registry (the full zoo,
`timm:<name>`) can add to `MODELS` with `register_model` without changing the
callers.

Building is deterministic for a given `torch.manual_seed`: every constructor
draws its initial weights from the global torch RNG in a fixed order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

__all__ = [
    "ModelEntry",
    "MODELS",
    "register_model",
    "model_names",
    "validate_model_args",
    "build_model",
    "count_params",
    "disable_fused_attn",
]


@dataclass(frozen=True)
class ModelEntry:
    """One registered architecture.

    `build(num_classes, **overrides)` makes the model. `defaults` lists every
    override the entry accepts with its default value; the default's type is the
    type an override must have (an int default accepts only ints, a float
    default accepts ints and floats, a list default accepts lists whose items
    have the type of the default's items). `check`, if given, returns extra
    error messages about override *values* (e.g. divisibility), so that a bad
    combination is reported by the validator instead of deep inside timm.
    """

    name: str
    build: Callable[..., nn.Module]
    description: str
    defaults: dict
    check: Callable[[dict], list[str]] | None = field(default=None, compare=False)


MODELS: dict[str, ModelEntry] = {}


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add `entry` to the registry (replacing one of the same name) and return it."""
    MODELS[entry.name] = entry
    return entry


def model_names() -> list[str]:
    """Registered model names, sorted (for messages and `harness list models`)."""
    return sorted(MODELS)


# --------------------------------------------------------------------------- validation


def _type_name(value: Any) -> str:
    return type(value).__name__


def _type_error(default: Any, value: Any) -> str | None:
    """Why `value` cannot stand in for `default`, or None if its type fits.

    bool is a subclass of int in Python; it is rejected where an int/float is
    expected (and vice versa) because `width: true` in a sweep is a mistake.
    """
    if isinstance(default, bool):
        return None if isinstance(value, bool) else f"expected bool, got {_type_name(value)} {value!r}"
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return None
        return f"expected int, got {_type_name(value)} {value!r}"
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return None
        return f"expected float, got {_type_name(value)} {value!r}"
    if isinstance(default, str):
        return None if isinstance(value, str) else f"expected str, got {_type_name(value)} {value!r}"
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            return f"expected list, got {_type_name(value)} {value!r}"
        if default:
            for item in value:
                err = _type_error(default[0], item)
                if err is not None:
                    return f"list item: {err}"
        return None
    return None  # no default type to compare against: accept


def validate_model_args(name: str, args: dict) -> list[str]:
    """Human-readable problems with building model `name` with overrides `args`.

    Empty list means valid. Used by the spec validator (before anything runs)
    and by `build_model`.
    """
    if name not in MODELS:
        return [f"unknown model {name!r}; allowed: {', '.join(model_names())}"]
    entry = MODELS[name]
    if not isinstance(args, dict):
        return [f"model {name!r}: model_args must be a mapping, got {_type_name(args)}"]
    allowed = ", ".join(f"{k}={v!r}" for k, v in entry.defaults.items()) or "(none)"
    errors: list[str] = []
    for key in args:
        if key not in entry.defaults:
            errors.append(f"model {name!r}: unknown model arg {key!r}; allowed (with defaults): {allowed}")
    for key, value in args.items():
        if key in entry.defaults:
            err = _type_error(entry.defaults[key], value)
            if err is not None:
                errors.append(f"model {name!r}: model arg {key!r}: {err}")
    if not errors and entry.check is not None:
        merged = {**entry.defaults, **args}
        errors.extend(f"model {name!r}: {msg}" for msg in entry.check(merged))
    return errors


def build_model(name: str, num_classes: int, **model_args: Any) -> nn.Module:
    """Build model `name` for `num_classes` classes; the caller seeds torch first.

    Raises ValueError (all problems in one message) on an unknown name or a bad
    override, so a typo never silently builds the default model.
    """
    errors = validate_model_args(name, model_args)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        errors.append(f"num_classes must be a positive int, got {num_classes!r}")
    if errors:
        raise ValueError("; ".join(errors))
    entry = MODELS[name]
    return entry.build(num_classes, **{**entry.defaults, **model_args})


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters (what the Hessian is taken over)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def disable_fused_attn(model: nn.Module) -> int:
    """Switch every attention module to the explicit softmax(QK^T)V path.

    `scaled_dot_product_attention` has no double-backward on every backend,
    which Hessian-vector products need. Returns how many modules were switched.
    """
    n = 0
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
            n += 1
    return n


# --------------------------------------------------------------------------- resnet18


def _positive_ints(cfg: dict, keys: tuple[str, ...]) -> list[str]:
    return [f"{k} must be >= 1, got {cfg[k]!r}" for k in keys if cfg[k] < 1]


def _check_resnet(cfg: dict) -> list[str]:
    errors = _positive_ints(cfg, ("width",))
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


# --------------------------------------------------------------------------- vit_ti


def _check_vit(cfg: dict) -> list[str]:
    errors = _positive_ints(cfg, ("patch_size", "embed_dim", "depth", "num_heads"))
    if errors:
        return errors
    if 32 % cfg["patch_size"]:
        errors.append(f"patch_size must divide 32, got {cfg['patch_size']!r}")
    if cfg["embed_dim"] % cfg["num_heads"]:
        errors.append(f"embed_dim ({cfg['embed_dim']}) must be divisible by num_heads ({cfg['num_heads']})")
    if cfg["mlp_ratio"] <= 0:
        errors.append(f"mlp_ratio must be > 0, got {cfg['mlp_ratio']!r}")
    return errors


def _build_vit_ti(
    num_classes: int,
    patch_size: int = 2,
    embed_dim: int = 192,
    depth: int = 12,
    num_heads: int = 3,
    mlp_ratio: float = 4.0,
    fused_attn: bool = True,
) -> nn.Module:
    """ViT-Ti for 32x32 input with 2x2 patches (256 tokens + cls), no qkv bias, as in the paper.

    `fused_attn=False` switches to explicit attention, needed for second-order
    (Hessian) computations.
    """
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(
        img_size=32,
        patch_size=patch_size,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=float(mlp_ratio),
        qkv_bias=False,
        num_classes=num_classes,
    )
    if not fused_attn:
        disable_fused_attn(model)
    return model


register_model(
    ModelEntry(
        name="vit_ti",
        build=_build_vit_ti,
        description="ViT-Ti (timm VisionTransformer), 32x32 input, 2x2 patches, no qkv bias",
        defaults={
            "patch_size": 2,
            "embed_dim": 192,
            "depth": 12,
            "num_heads": 3,
            "mlp_ratio": 4.0,
            "fused_attn": True,
        },
        check=_check_vit,
    )
)
