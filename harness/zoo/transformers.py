"""Attention and MLP architectures of the zoo, CIFAR-sized (32x32 input, any class count)."""

from __future__ import annotations

from torch import nn

from harness.models import ModelEntry, check_positive, disable_fused_attn, register_model

# --------------------------------------------------------------------------- vit_ti


def _check_vit(cfg: dict) -> list[str]:
    errors = check_positive(cfg, ("patch_size", "embed_dim", "depth", "num_heads"))
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
