"""Any timm model by name (`timm:<name>`), and block decompositions of timm's model classes.

Two things live here because both are about timm's own classes, independent of
how the zoo configures them:

* `validate_timm` / `build_timm`: the `timm:<name>` entries of the model
  registry (`timm.create_model(name, pretrained=..., num_classes=...)`), checked
  against `timm.list_models()` before anything runs, so a typo fails the spec
  validation with the closest real names instead of failing deep in a worker.
* Decomposers (see `harness.models.blocks`) for timm's VisionTransformer,
  PoolingVisionTransformer (PiT), SwinTransformer and MlpMixer, so the per-depth
  analyses work on the zoo's CIFAR models and on `timm:` models alike (timm's
  ResNet / ResNetV2 decomposers live with the CNN zoo in `harness.models.zoo.cnn`).

Every decomposition re-uses the model's own submodules in the model's own
order, so `forward_blocks(blocks(m), x)` is bitwise equal to `m(x)` in eval
mode (the tests check max abs diff == 0). Where a timm forward method is a
function of the whole model (ViT's `_pos_embed`, `pool`), the block module calls
that method on the model rather than re-implementing it; `_Call` keeps the
model out of its registered submodules so a block's `parameters()` are only the
ones that block owns.
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from typing import Any, Callable

import torch
from torch import nn

from harness.models.blocks import Block, Residual, register_decomposer
from harness.models.registry import TIMM_PREFIX, PrefixFamily, disable_fused_attn, register_family

__all__ = [
    "TIMM_PREFIX",
    "TIMM_DEFAULTS",
    "timm_model_names",
    "validate_timm",
    "build_timm",
    "decompose_vit",
    "decompose_pit",
    "decompose_swin",
    "decompose_mixer",
    "vit_block_parts",
]

#: Overrides a `timm:` model accepts, with defaults. img_size 0 = the model's own default.
TIMM_DEFAULTS: dict[str, Any] = {"pretrained": False, "fused_attn": True, "img_size": 0}


# --------------------------------------------------------------------------- timm:<name>


@lru_cache(maxsize=1)
def timm_model_names() -> tuple[str, ...]:
    """Every architecture timm can create (cached: listing takes a while)."""
    import timm

    return tuple(timm.list_models())


def _strip(name: str) -> str:
    return name[len(TIMM_PREFIX):] if name.startswith(TIMM_PREFIX) else name


def validate_timm(name: str, args: dict) -> list[str]:
    """Problems with building `timm:<name>` with overrides `args` (empty list = valid).

    `name` may carry the "timm:" prefix and a pretrained tag ("resnet18.a1_in1k");
    the architecture part must be in `timm.list_models()`. Unknown names get the
    closest matches (difflib) in the message.
    """
    arch = _strip(name)
    label = f"{TIMM_PREFIX}{arch}"
    errors: list[str] = []
    base = arch.split(".", 1)[0]
    names = timm_model_names()
    if not base or base not in names:
        close = difflib.get_close_matches(base, names, n=5, cutoff=0.6)
        hint = f"; close matches: {', '.join(close)}" if close else "; see timm.list_models()"
        errors.append(f"unknown timm model {base!r}{hint}")
    if not isinstance(args, dict):
        return errors + [f"model {label!r}: model_args must be a mapping, got {type(args).__name__}"]
    allowed = ", ".join(f"{k}={v!r}" for k, v in TIMM_DEFAULTS.items())
    for key, value in args.items():
        if key not in TIMM_DEFAULTS:
            errors.append(f"model {label!r}: unknown model arg {key!r}; allowed (with defaults): {allowed}")
        elif key in ("pretrained", "fused_attn") and not isinstance(value, bool):
            errors.append(f"model {label!r}: model arg {key!r}: expected bool, got {type(value).__name__} {value!r}")
        elif key == "img_size" and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            errors.append(f"model {label!r}: model arg 'img_size': expected int >= 0 (0 = model default), got {value!r}")
    return errors


def build_timm(name: str, num_classes: int, pretrained: bool = False, fused_attn: bool = True,
               img_size: int = 0) -> nn.Module:
    """`timm.create_model(name, pretrained=..., num_classes=...)`, validated first.

    Nothing is downloaded unless `pretrained=True`. `img_size` (if > 0) is passed
    to timm, for architectures whose constructor takes it (ViTs at 32x32).
    `fused_attn=False` switches every attention module to explicit attention.
    """
    import timm

    args = {"pretrained": pretrained, "fused_attn": fused_attn, "img_size": img_size}
    errors = validate_timm(name, args)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        errors.append(f"num_classes must be a positive int, got {num_classes!r}")
    if errors:
        raise ValueError("; ".join(errors))
    kwargs: dict[str, Any] = {"pretrained": pretrained, "num_classes": num_classes}
    if img_size:
        kwargs["img_size"] = img_size
    model = timm.create_model(_strip(name), **kwargs)
    if not fused_attn:
        disable_fused_attn(model)
    return model


# --------------------------------------------------------------------------- helpers


class _Call(nn.Module):
    """Block module that runs `fn(owner, x)`, where `owner` is the model (or a part of it).

    The owner is stored outside the module tree, so it is not a submodule of
    the block; `parts` (the modules / parameters the block really uses) are
    registered instead, so that `block.module.parameters()` lists exactly what
    the block owns.
    """

    def __init__(self, fn: Callable[[Any, torch.Tensor], torch.Tensor], owner: nn.Module, label: str,
                 parts: dict[str, nn.Module | nn.Parameter | None] | None = None) -> None:
        super().__init__()
        object.__setattr__(self, "_owner", owner)
        self.fn = fn
        self.label = label
        for key, part in (parts or {}).items():
            if isinstance(part, nn.Parameter):
                self.register_parameter(key, part)
            elif isinstance(part, nn.Module):
                self.add_module(key, part)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self._owner, x)

    def extra_repr(self) -> str:
        return self.label


def _require(model: nn.Module, base: type, *names: str) -> None:
    """Refuse a subclass that overrides `base`'s forward methods: the decomposition would not reproduce it."""
    overridden = [n for n in names if getattr(type(model), n, None) is not getattr(base, n, None)]
    if overridden:
        raise TypeError(
            f"no block decomposition for {type(model).__name__}: it overrides {base.__name__}."
            f"{'/'.join(overridden)}, so a decomposition of {base.__name__} would not reproduce its forward")


# --------------------------------------------------------------------------- ViT


def _vit_stem(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = m.patch_embed(x)
    x = m._pos_embed(x)
    x = m.patch_drop(x)
    return m.norm_pre(x)


def _vit_pool(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = m.pool(x)
    x = m.fc_norm(x)
    return m.head_drop(x)


def _is_plain_vit_block(blk: nn.Module) -> bool:
    from timm.models.vision_transformer import Block as VitBlock

    return isinstance(blk, VitBlock) and type(blk).forward is VitBlock.forward


def vit_block_parts(blk: nn.Module, name: str, layout: str = "tokens", prefix_tokens: int = 0) -> list[Block]:
    """A pre-norm timm ViT Block as two residual blocks: MSA, then MLP.

    x + drop_path1(ls1(attn(norm1(x)))) and x + drop_path2(ls2(mlp(norm2(x)))):
    the same modules in the same order as `Block.forward`, so exact.
    Any other block class is kept whole as kind "other" (not lesionable).
    """
    if not _is_plain_vit_block(blk):
        return [Block(name, "other", blk, layout, prefix_tokens)]
    msa = nn.Sequential(blk.norm1, blk.attn, blk.ls1, blk.drop_path1)
    mlp = nn.Sequential(blk.norm2, blk.mlp, blk.ls2, blk.drop_path2)
    return [
        Block(f"{name}.attn", "msa", Residual(msa), layout, prefix_tokens, residual=True, branch=msa),
        Block(f"{name}.mlp", "mlp", Residual(mlp), layout, prefix_tokens, residual=True, branch=mlp),
    ]


def decompose_vit(model: nn.Module) -> list[Block]:
    """timm VisionTransformer: stem, (MSA, MLP) per block, norm, pool, head.

    stem = patch embed + class/register tokens + position embedding + pos drop +
    patch drop + norm_pre (layout "tokens", prefix = class + register tokens);
    pool = cls-token pick / average / attention pool (`model.pool`) + fc_norm +
    head dropout (layout "flat"); head = the classifier.
    """
    from timm.models.vision_transformer import VisionTransformer

    _require(model, VisionTransformer, "forward", "forward_features", "forward_head", "_pos_embed", "pool")
    n = int(model.num_prefix_tokens)
    stem = _Call(_vit_stem, model, "patch_embed + tokens + pos_embed + norm_pre", {
        "patch_embed": model.patch_embed, "cls_token": model.cls_token, "reg_token": model.reg_token,
        "pos_embed": model.pos_embed, "pos_drop": model.pos_drop, "patch_drop": model.patch_drop,
        "norm_pre": model.norm_pre})
    parts = [Block("stem", "stem", stem, "tokens", n)]
    for i, blk in enumerate(model.blocks):
        parts += vit_block_parts(blk, f"blocks.{i}", "tokens", n)
    pool = _Call(_vit_pool, model, "pool + fc_norm + head_drop", {
        "attn_pool": model.attn_pool, "fc_norm": model.fc_norm, "head_drop": model.head_drop})
    parts += [
        Block("norm", "norm", model.norm, "tokens", n),
        Block("pool", "pool", pool, "flat"),
        Block("head", "head", model.head, "flat"),
    ]
    return parts


# --------------------------------------------------------------------------- PiT


def _pit_grid(model: nn.Module) -> list[tuple[int, int]]:
    """Token grid (H, W) of each PiT stage, from the patch grid and the pooling convs."""
    h, w = int(model.patch_embed.height), int(model.patch_embed.width)
    grids = []
    for stage in model.transformers:
        if stage.pool is not None:
            conv = stage.pool.conv
            h = (h + 2 * conv.padding[0] - conv.dilation[0] * (conv.kernel_size[0] - 1) - 1) // conv.stride[0] + 1
            w = (w + 2 * conv.padding[1] - conv.dilation[1] * (conv.kernel_size[1] - 1) - 1) // conv.stride[1] + 1
        grids.append((h, w))
    return grids


class _PitStem(nn.Module):
    """PiT stem: conv patch embed + position embedding, then class tokens concatenated in front.

    timm's PiT carries the class tokens beside the NCHW map; here they are
    prepended to the token sequence (layout "tokens", prefix = number of class
    tokens), exactly as each PiT stage does before its blocks.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.patch_embed = model.patch_embed
        self.pos_embed = model.pos_embed
        self.cls_token = model.cls_token
        self.pos_drop = model.pos_drop
        self.norm = model.transformers[0].norm
        if model.transformers[0].pool is not None:  # never in timm; kept general
            raise TypeError("PiT with a pooling layer before the first stage is not supported")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = self.pos_drop(x + self.pos_embed)
        cls_tokens = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat((cls_tokens, x.flatten(2).transpose(1, 2)), dim=1)
        return self.norm(x)


class _PitPool(nn.Module):
    """PiT pooling between stages on the concatenated token sequence.

    Splits the class tokens off, folds the grid back to NCHW (H, W known from
    the model's geometry: PiT's position embedding fixes the input size), runs
    the depthwise-conv pool and the class-token fc, and concatenates again.
    """

    def __init__(self, stage: nn.Module, num_tokens: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.pool = stage.pool
        self.norm = stage.norm
        self.num_tokens = num_tokens
        self.grid = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.num_tokens
        cls_tokens, t = x[:, :n], x[:, n:]
        B, _, C = t.shape
        t = t.transpose(1, 2).reshape(B, C, *self.grid)
        t, cls_tokens = self.pool(t, cls_tokens)
        x = torch.cat((cls_tokens, t.flatten(2).transpose(1, 2)), dim=1)
        return self.norm(x)

    def extra_repr(self) -> str:
        return f"num_tokens={self.num_tokens}, grid={self.grid}"


def _pit_pool_tokens(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if m.head_dist is not None:
        return m.head_drop(x[:, :2])
    x = x[:, 0] if m.global_pool == "token" else x[:, :m.num_tokens]
    return m.head_drop(x)


def _pit_head(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if m.head_dist is not None:  # eval-mode average of the class and distillation heads
        return (m.head(x[:, 0]) + m.head_dist(x[:, 1])) / 2
    return m.head(x)


def decompose_pit(model: nn.Module) -> list[Block]:
    """timm PoolingVisionTransformer: stem, per stage [pool,] (MSA, MLP) per block, norm, pool, head.

    Class tokens are concatenated in front of the grid tokens throughout
    (layout "tokens", prefix_tokens = 1, or 2 when distilled). The final norm
    is applied to the whole sequence (LayerNorm is per token, so the class
    tokens come out exactly as timm's norm of the class tokens alone); "pool"
    picks the class token. Pooling layers between stages are kind "pool".
    """
    from timm.models.pit import PoolingVisionTransformer

    _require(model, PoolingVisionTransformer, "forward", "forward_features", "forward_head")
    n = int(model.num_tokens)
    grids = _pit_grid(model)
    parts = [Block("stem", "stem", _PitStem(model), "tokens", n)]
    for s, stage in enumerate(model.transformers):
        if s > 0:
            parts.append(Block(f"transformers.{s}.pool", "pool", _PitPool(stage, n, grids[s - 1]), "tokens", n))
        for i, blk in enumerate(stage.blocks):
            parts += vit_block_parts(blk, f"transformers.{s}.blocks.{i}", "tokens", n)
    pool = _Call(_pit_pool_tokens, model, "class token(s) + head_drop", {"head_drop": model.head_drop})
    head = _Call(_pit_head, model, "head (+ head_dist average)", {"head": model.head, "head_dist": model.head_dist})
    # distilled (or global_pool=''): the pool keeps the class tokens, (B, n, C), an empty grid
    picks_one = model.head_dist is None and model.global_pool == "token"
    parts += [
        Block("norm", "norm", model.norm, "tokens", n),
        Block("pool", "pool", pool, "flat") if picks_one else Block("pool", "pool", pool, "tokens", n),
        Block("head", "head", head, "flat"),
    ]
    return parts


# --------------------------------------------------------------------------- Swin


class _SwinAttnBranch(nn.Module):
    """drop_path1(window attention(norm1(x))) of a Swin block, on NHWC maps."""

    def __init__(self, blk: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "_blk", blk)
        self.norm1 = blk.norm1
        self.attn = blk.attn
        self.drop_path1 = blk.drop_path1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop_path1(self._blk._attn(self.norm1(x)))


class _SwinMlpBranch(nn.Module):
    """drop_path2(mlp(norm2(x))) of a Swin block, computed on (B, H*W, C) as timm does."""

    def __init__(self, blk: nn.Module) -> None:
        super().__init__()
        self.norm2 = blk.norm2
        self.mlp = blk.mlp
        self.drop_path2 = blk.drop_path2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        return self.drop_path2(self.mlp(self.norm2(x.reshape(B, -1, C)))).reshape(B, H, W, C)


def _swin_pool(head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return head.drop(head.global_pool(x))


def decompose_swin(model: nn.Module) -> list[Block]:
    """timm SwinTransformer (NHWC): stem, per stage [patch merging,] (MSA, MLP) per block, norm, pool, head.

    Current timm does the patch merging at the start of stages 2..4 (kind
    "pool"); the classifier is `head` (ClassifierHead: pool + drop, then fc).
    """
    from timm.layers import ClassifierHead
    from timm.models.swin_transformer import SwinTransformer, SwinTransformerBlock

    _require(model, SwinTransformer, "forward", "forward_features", "forward_head")
    if not isinstance(model.head, ClassifierHead):
        raise TypeError(f"no block decomposition for a Swin head of type {type(model.head).__name__}")
    parts = [Block("stem", "stem", model.patch_embed, "nhwc")]
    for s, stage in enumerate(model.layers):
        if not isinstance(stage.downsample, nn.Identity):
            parts.append(Block(f"layers.{s}.downsample", "pool", stage.downsample, "nhwc"))
        for i, blk in enumerate(stage.blocks):
            name = f"layers.{s}.blocks.{i}"
            if not isinstance(blk, SwinTransformerBlock) or type(blk).forward is not SwinTransformerBlock.forward:
                parts.append(Block(name, "other", blk, "nhwc"))
                continue
            msa, mlp = _SwinAttnBranch(blk), _SwinMlpBranch(blk)
            parts += [
                Block(f"{name}.attn", "msa", Residual(msa), "nhwc", residual=True, branch=msa),
                Block(f"{name}.mlp", "mlp", Residual(mlp), "nhwc", residual=True, branch=mlp),
            ]
    head = model.head
    pool = _Call(_swin_pool, head, "global_pool + drop", {"global_pool": head.global_pool, "drop": head.drop})
    parts += [
        Block("norm", "norm", model.norm, "nhwc"),
        Block("pool", "pool", pool, "flat"),
        Block("head", "head", nn.Sequential(head.fc, head.flatten), "flat"),
    ]
    return parts


# --------------------------------------------------------------------------- MLP-Mixer


class _TokenMix(nn.Module):
    """drop_path(mlp_tokens(norm1(x)^T)^T): the Mixer's token-mixing (spatial) MLP branch."""

    def __init__(self, blk: nn.Module) -> None:
        super().__init__()
        self.norm1 = blk.norm1
        self.mlp_tokens = blk.mlp_tokens
        self.drop_path = blk.drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop_path(self.mlp_tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2))


def _mixer_pool(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if m.global_pool == "avg":
        x = x.mean(dim=1)
    return m.head_drop(x)


def decompose_mixer(model: nn.Module) -> list[Block]:
    """timm MlpMixer: stem, (token-mixing MLP, channel-mixing MLP) per block, norm, pool, head.

    Both halves of a MixerBlock are kind "mlp" (they are MLPs; the token-mixing
    one mixes across positions, the channel one across features) and are told
    apart by name: "blocks.i.token_mix" / "blocks.i.channel_mix". Other block
    types built on MlpMixer (ResMLP, gMLP) are kept whole as kind "other".
    """
    from timm.models.mlp_mixer import MixerBlock, MlpMixer

    _require(model, MlpMixer, "forward", "forward_features", "forward_head")
    parts = [Block("stem", "stem", model.stem, "tokens")]
    for i, blk in enumerate(model.blocks):
        name = f"blocks.{i}"
        if not isinstance(blk, MixerBlock) or type(blk).forward is not MixerBlock.forward:
            parts.append(Block(name, "other", blk, "tokens"))
            continue
        tok = _TokenMix(blk)
        ch = nn.Sequential(blk.norm2, blk.mlp_channels, blk.drop_path)
        parts += [
            Block(f"{name}.token_mix", "mlp", Residual(tok), "tokens", residual=True, branch=tok),
            Block(f"{name}.channel_mix", "mlp", Residual(ch), "tokens", residual=True, branch=ch),
        ]
    pool = _Call(_mixer_pool, model, "mean over tokens + head_drop", {"head_drop": model.head_drop})
    parts += [
        Block("norm", "norm", model.norm, "tokens"),
        Block("pool", "pool", pool, "flat"),
        Block("head", "head", model.head, "flat"),
    ]
    return parts


def _register() -> None:
    from timm.models.mlp_mixer import MlpMixer
    from timm.models.pit import PoolingVisionTransformer
    from timm.models.swin_transformer import SwinTransformer
    from timm.models.vision_transformer import VisionTransformer

    register_decomposer(VisionTransformer, decompose_vit)
    register_decomposer(PoolingVisionTransformer, decompose_pit)
    register_decomposer(SwinTransformer, decompose_swin)
    register_decomposer(MlpMixer, decompose_mixer)


_register()


register_family(PrefixFamily(TIMM_PREFIX, validate_timm, build_timm))
