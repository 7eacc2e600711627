"""Attention and MLP architectures of the zoo, CIFAR-sized (32x32 input by default, any class count).

Registered models (full-size defaults = the paper's CIFAR configurations, see
/work/shared/PAPER.md; every one has width/depth/patch overrides for small CPU
variants and a `fused_attn` switch):

* ``vit_ti``  timm VisionTransformer, patch 2, dim 192, depth 12, 3 heads, no qkv bias.
* ``pit_ti``  timm PoolingVisionTransformer, patch 2 stride 1, base dims 32, depth (2,6,4), heads (2,4,8).
* ``swin_ti`` timm SwinTransformer, patch 1, window 4, dim 96, depths (2,2,6,2), heads (3,6,12,24),
  no qkv bias; its blocks pad the map to a multiple of the window and mask the padding (see
  `PaddedSwinBlock`), so any window works on any map size.
* ``mixer``   timm MlpMixer, Mixer-Ti widths of the original code (dim 256, depth 8, token MLP 128,
  channel MLP 1024) with 4x4 patches (64 tokens) on 32x32 input.
* ``alternet`` the paper's AlterNet, hand-written here (`AlterNet`).

`fused_attn=True` keeps each library's default attention kernel (timm uses
`scaled_dot_product_attention` for ViT/PiT attention but its *explicit* path
for Swin's window attention, which timm marks experimental); `fused_attn=False`
forces the explicit softmax(QK^T)V path on every attention module, which
second-order (Hessian) work needs.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.models.swin_transformer import SwinTransformerBlock, window_partition, window_reverse
from torch import nn

from harness.models.blocks import Block, register_decomposer
from harness.models.registry import ModelEntry, check_positive, disable_fused_attn, register_model

__all__ = [
    "PaddedSwinBlock",
    "padded_window_mask",
    "WindowMSA",
    "PreActBasic",
    "PreActBottleneck",
    "MSABlock",
    "AlterNet",
    "decompose_alternet",
]


def _positive_list(cfg: dict, key: str, length: int | None = None, minimum: int = 1) -> list[str]:
    value = list(cfg[key])
    errors = []
    if length is not None and len(value) != length:
        errors.append(f"{key} must have {length} entries, got {value!r}")
    elif not value:
        errors.append(f"{key} must not be empty")
    if any(v < minimum for v in value):
        errors.append(f"{key} entries must be >= {minimum}, got {value!r}")
    return errors


def _check_ratio(cfg: dict, *keys: str) -> list[str]:
    return [f"{k} must be > 0, got {cfg[k]!r}" for k in keys if cfg[k] <= 0]


def check_drop_path(cfg: dict) -> list[str]:
    """Stochastic depth (the paper's recipe uses 0.1) must be a probability below 1."""
    if not 0.0 <= cfg.get("drop_path", 0.0) < 1.0:
        return [f"drop_path must be in [0, 1), got {cfg['drop_path']!r}"]
    return []


def _finish(model: nn.Module, fused_attn: bool) -> nn.Module:
    if not fused_attn:
        disable_fused_attn(model)
    return model


# --------------------------------------------------------------------------- vit_ti


def _check_vit(cfg: dict) -> list[str]:
    errors = check_positive(cfg, ("img_size", "patch_size", "embed_dim", "depth", "num_heads"))
    if errors:
        return errors
    if cfg["img_size"] % cfg["patch_size"]:
        errors.append(f"patch_size must divide img_size ({cfg['img_size']}), got {cfg['patch_size']!r}")
    if cfg["embed_dim"] % cfg["num_heads"]:
        errors.append(f"embed_dim ({cfg['embed_dim']}) must be divisible by num_heads ({cfg['num_heads']})")
    return errors + _check_ratio(cfg, "mlp_ratio")


def _build_vit_ti(
    num_classes: int,
    img_size: int = 32,
    patch_size: int = 2,
    embed_dim: int = 192,
    depth: int = 12,
    num_heads: int = 3,
    mlp_ratio: float = 4.0,
    drop_path: float = 0.0,
    fused_attn: bool = True,
) -> nn.Module:
    """ViT-Ti for 32x32 input with 2x2 patches (256 tokens + cls), no qkv bias, as in the paper.

    The learned position embedding fixes the input size to `img_size`.
    """
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(
        img_size=img_size,
        patch_size=patch_size,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=float(mlp_ratio),
        qkv_bias=False,
        num_classes=num_classes,
        drop_path_rate=float(drop_path),
    )
    return _finish(model, fused_attn)


register_model(
    ModelEntry(
        name="vit_ti",
        build=_build_vit_ti,
        description="ViT-Ti (timm VisionTransformer), 32x32 input, 2x2 patches, no qkv bias",
        defaults={
            "img_size": 32,
            "patch_size": 2,
            "embed_dim": 192,
            "depth": 12,
            "num_heads": 3,
            "mlp_ratio": 4.0,
            "drop_path": 0.0,
            "fused_attn": True,
        },
        check=lambda cfg: _check_vit(cfg) + check_drop_path(cfg),
    )
)


# --------------------------------------------------------------------------- pit_ti


def _check_pit(cfg: dict) -> list[str]:
    errors = check_positive(cfg, ("img_size", "patch_size", "stride"))
    errors += _positive_list(cfg, "base_dims") + _positive_list(cfg, "depth") + _positive_list(cfg, "heads")
    errors += _check_ratio(cfg, "mlp_ratio")
    if errors:
        return errors
    n = {len(cfg["base_dims"]), len(cfg["depth"]), len(cfg["heads"])}
    if len(n) != 1:
        errors.append(f"base_dims, depth and heads must have the same length, got "
                      f"{list(cfg['base_dims'])!r}, {list(cfg['depth'])!r}, {list(cfg['heads'])!r}")
    if cfg["patch_size"] > cfg["img_size"]:
        errors.append(f"patch_size ({cfg['patch_size']}) must be <= img_size ({cfg['img_size']})")
    return errors


def _build_pit_ti(
    num_classes: int,
    img_size: int = 32,
    patch_size: int = 2,
    stride: int = 1,
    base_dims: Sequence[int] = (32, 32, 32),
    depth: Sequence[int] = (2, 6, 4),
    heads: Sequence[int] = (2, 4, 8),
    mlp_ratio: float = 4.0,
    drop_path: float = 0.0,
    fused_attn: bool = True,
) -> nn.Module:
    """PiT-Ti as in the paper: 2x2 patches with stride 1 (a 31x31 grid on 32x32), stage widths
    base_dim * heads = 64, 128, 256, depthwise-conv pooling between stages.

    The position embedding fixes the input size to `img_size`.
    """
    from timm.models.pit import PoolingVisionTransformer

    model = PoolingVisionTransformer(
        img_size=img_size,
        patch_size=patch_size,
        stride=stride,
        base_dims=list(base_dims),
        depth=list(depth),
        heads=list(heads),
        mlp_ratio=float(mlp_ratio),
        num_classes=num_classes,
        drop_path_rate=float(drop_path),
    )
    return _finish(model, fused_attn)


register_model(
    ModelEntry(
        name="pit_ti",
        build=_build_pit_ti,
        description="PiT-Ti (timm PoolingVisionTransformer), 32x32 input, 2x2 patches stride 1, "
                    "base dims 32, depth (2,6,4), heads (2,4,8)",
        defaults={
            "img_size": 32,
            "patch_size": 2,
            "stride": 1,
            "base_dims": [32, 32, 32],
            "depth": [2, 6, 4],
            "heads": [2, 4, 8],
            "mlp_ratio": 4.0,
            "drop_path": 0.0,
            "fused_attn": True,
        },
        check=lambda cfg: _check_pit(cfg) + check_drop_path(cfg),
    )
)


# --------------------------------------------------------------------------- swin_ti


class PaddedSwinBlock(SwinTransformerBlock):
    """timm's Swin block with window attention that is correct on any map size.

    timm 1.0.31 already clips the window to the map when the map (at build
    size) is no larger than the window, and zero-pads maps that are not a
    multiple of the window. Two things are missing, and added here for maps
    that need padding:
      * the padded tokens are attended to like real ones (their zero keys
        dilute the attention of border windows); here they are masked out as
        keys (-inf), so a border window is exactly a smaller, clipped window;
      * with shifted windows timm rolls the unpadded map and then pads, but
        builds the shift mask for the padded map, so the mask's region
        boundaries do not match where the rolled tokens are (tokens from
        opposite borders attend to each other). Here the map is padded first,
        then rolled, and the shift regions and the padding mask are built on
        the padded map.
    Maps that are a multiple of the window run timm's own code unchanged
    (bitwise identical to timm's SwinTransformerBlock).
    """

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        wh, ww = self.window_size
        pad_h, pad_w = (-H) % wh, (-W) % ww
        if not (pad_h or pad_w):
            return super()._attn(x)
        sh, sw = self.shift_size
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        Hp, Wp = H + pad_h, W + pad_w
        if sh or sw:
            x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
        windows = window_partition(x, self.window_size).view(-1, self.window_area, C)
        mask = self._padded_mask(H, W, x.device, x.dtype)
        out = self.attn(windows, mask=mask).view(-1, wh, ww, C)
        x = window_reverse(out, self.window_size, Hp, Wp)
        if sh or sw:
            x = torch.roll(x, shifts=(sh, sw), dims=(1, 2))
        return x[:, :H, :W, :].contiguous()

    def _padded_mask(self, H: int, W: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """(num_windows, N, N) mask for an H x W map, cached per size (it is not a weight)."""
        cache = self.__dict__.setdefault("_mask_cache", {})
        key = (H, W, self.window_size, self.shift_size, str(device), dtype)
        if key not in cache:
            cache[key] = padded_window_mask(H, W, self.window_size, self.shift_size).to(device, dtype)
        return cache[key]


def padded_window_mask(H: int, W: int, window: tuple[int, int], shift: tuple[int, int]) -> torch.Tensor:
    """Attention mask for (shifted) windows over an H x W map zero-padded to a multiple of `window`.

    Built in the frame of the padded, rolled map: token labels are the shift
    region (0..8, as in Swin) for real tokens; keys that are padding get -inf,
    keys in another shift region get -100 (timm's constant). Every window holds
    at least one real token (padding < window), so no row is all -inf.
    """
    wh, ww = window
    sh, sw = shift
    Hp, Wp = H + (-H) % wh, W + (-W) % ww
    region = torch.zeros(Hp, Wp)
    if sh or sw:
        cnt = 0
        for hs in (slice(0, -wh), slice(-wh, -sh if sh else None), slice(-sh if sh else Hp, None)):
            for ws in (slice(0, -ww), slice(-ww, -sw if sw else None), slice(-sw if sw else Wp, None)):
                region[hs, ws] = cnt
                cnt += 1
    real = torch.zeros(Hp, Wp, dtype=torch.bool)
    real[:H, :W] = True
    real = torch.roll(real, shifts=(-sh, -sw), dims=(0, 1))
    part = lambda t: rearrange(t, "(n1 p1) (n2 p2) -> (n1 n2) (p1 p2)", p1=wh, p2=ww)  # noqa: E731
    region_w, real_w = part(region), part(real)
    mask = torch.zeros(region_w.shape[0], wh * ww, wh * ww)
    mask = mask.masked_fill(region_w[:, :, None] != region_w[:, None, :], -100.0)
    return mask.masked_fill(~real_w[:, None, :], float("-inf"))


def _check_swin(cfg: dict) -> list[str]:
    errors = check_positive(cfg, ("img_size", "patch_size", "window_size", "embed_dim"))
    errors += _positive_list(cfg, "depths") + _positive_list(cfg, "num_heads") + _check_ratio(cfg, "mlp_ratio")
    if errors:
        return errors
    if len(cfg["depths"]) != len(cfg["num_heads"]):
        errors.append(f"depths and num_heads must have the same length, got {list(cfg['depths'])!r} "
                      f"and {list(cfg['num_heads'])!r}")
        return errors
    for i, h in enumerate(cfg["num_heads"]):
        dim = cfg["embed_dim"] * 2 ** i
        if dim % h:
            errors.append(f"stage {i + 1} width embed_dim*2^{i} = {dim} must be divisible by num_heads[{i}] = {h}")
    if cfg["patch_size"] > cfg["img_size"]:
        errors.append(f"patch_size ({cfg['patch_size']}) must be <= img_size ({cfg['img_size']})")
    return errors


def _build_swin_ti(
    num_classes: int,
    img_size: int = 32,
    patch_size: int = 1,
    window_size: int = 4,
    embed_dim: int = 96,
    depths: Sequence[int] = (2, 2, 6, 2),
    num_heads: Sequence[int] = (3, 6, 12, 24),
    mlp_ratio: float = 4.0,
    qkv_bias: bool = False,
    drop_path: float = 0.0,
    fused_attn: bool = True,
) -> nn.Module:
    """Swin-Ti as in the paper (patch 1, window 4 on 32x32: stage maps 32, 16, 8, 4).

    Built with `strict_img_size=False`, so it accepts any input size; window
    sizes are clipped for the maps at `img_size` (timm) and maps that are not a
    multiple of the window are padded with the padding masked (`PaddedSwinBlock`).
    """
    from timm.models.swin_transformer import SwinTransformer

    model = SwinTransformer(
        img_size=img_size,
        patch_size=patch_size,
        window_size=window_size,
        embed_dim=embed_dim,
        depths=tuple(depths),
        num_heads=tuple(num_heads),
        mlp_ratio=float(mlp_ratio),
        qkv_bias=qkv_bias,
        num_classes=num_classes,
        strict_img_size=False,
        drop_path_rate=float(drop_path),
    )
    for module in model.modules():
        if type(module) is SwinTransformerBlock:
            module.__class__ = PaddedSwinBlock  # same parameters and buffers, padding-aware _attn
    return _finish(model, fused_attn)


register_model(
    ModelEntry(
        name="swin_ti",
        build=_build_swin_ti,
        description="Swin-Ti (timm SwinTransformer), 32x32 input, patch 1, window 4 (padded+masked on "
                    "non-multiple maps), dim 96, depths (2,2,6,2), heads (3,6,12,24), no qkv bias",
        defaults={
            "img_size": 32,
            "patch_size": 1,
            "window_size": 4,
            "embed_dim": 96,
            "depths": [2, 2, 6, 2],
            "num_heads": [3, 6, 12, 24],
            "mlp_ratio": 4.0,
            "qkv_bias": False,
            "drop_path": 0.0,
            "fused_attn": True,
        },
        check=lambda cfg: _check_swin(cfg) + check_drop_path(cfg),
    )
)


# --------------------------------------------------------------------------- mixer


def _check_mixer(cfg: dict) -> list[str]:
    errors = check_positive(cfg, ("img_size", "patch_size", "embed_dim", "depth"))
    errors += _check_ratio(cfg, "token_mlp_ratio", "channel_mlp_ratio")
    if errors:
        return errors
    if cfg["img_size"] % cfg["patch_size"]:
        errors.append(f"patch_size must divide img_size ({cfg['img_size']}), got {cfg['patch_size']!r}")
    for key in ("token_mlp_ratio", "channel_mlp_ratio"):
        if int(cfg[key] * cfg["embed_dim"]) < 1:
            errors.append(f"{key} * embed_dim must be >= 1, got {cfg[key]!r} * {cfg['embed_dim']}")
    return errors


def _build_mixer(
    num_classes: int,
    img_size: int = 32,
    patch_size: int = 4,
    embed_dim: int = 256,
    depth: int = 8,
    token_mlp_ratio: float = 0.5,
    channel_mlp_ratio: float = 4.0,
    drop_path: float = 0.0,
    fused_attn: bool = True,
) -> nn.Module:
    """MLP-Mixer-Ti for CIFAR: the original code's Mixer-Ti widths (dim 256, depth 8,
    token-mixing hidden 128 = 0.5*dim, channel hidden 1024 = 4*dim) on 4x4 patches
    (an 8x8 grid, 64 tokens). The original's CIFAR patch size is not recorded in its
    configs; 4 is our choice. `fused_attn` is accepted for uniform sweeps and does
    nothing: a Mixer has no attention.
    """
    from timm.models.mlp_mixer import MlpMixer

    del fused_attn
    return MlpMixer(
        num_classes=num_classes,
        img_size=img_size,
        patch_size=patch_size,
        num_blocks=depth,
        embed_dim=embed_dim,
        mlp_ratio=(float(token_mlp_ratio), float(channel_mlp_ratio)),
        drop_path_rate=float(drop_path),
    )


register_model(
    ModelEntry(
        name="mixer",
        build=_build_mixer,
        description="MLP-Mixer-Ti (timm MlpMixer), 32x32 input, 4x4 patches, dim 256, depth 8, "
                    "token/channel MLP ratios 0.5/4",
        defaults={
            "img_size": 32,
            "patch_size": 4,
            "embed_dim": 256,
            "depth": 8,
            "token_mlp_ratio": 0.5,
            "channel_mlp_ratio": 4.0,
            "drop_path": 0.0,
            "fused_attn": True,
        },
        check=lambda cfg: _check_mixer(cfg) + check_drop_path(cfg),
    )
)


# --------------------------------------------------------------------------- alternet


class WindowMSA(nn.Module):
    """Multi-head self-attention inside non-overlapping windows of an NCHW map, any map size.

    As the original AlterNet's LocalAttention: 1x1-conv projections (q, k, v
    without bias, output with bias), `heads` heads of `head_dim` channels, and
    one learned relative position bias table of shape (2w-1, 2w-1) shared by
    all heads. Unlike the original (which needed H, W divisible by the window),
    the map is zero-padded on the bottom/right to a multiple of the window,
    padded keys are masked out (-inf), and the output is cropped back: a border
    window is exactly a smaller window.
    """

    fused_attn: bool

    def __init__(self, dim_in: int, dim_out: int, heads: int, head_dim: int = 64, window_size: int = 4,
                 fused_attn: bool = True) -> None:
        super().__init__()
        self.heads, self.head_dim, self.window_size = heads, head_dim, window_size
        self.scale = head_dim ** -0.5
        self.fused_attn = fused_attn
        inner = heads * head_dim
        self.to_q = nn.Conv2d(dim_in, inner, 1, bias=False)
        self.to_kv = nn.Conv2d(dim_in, 2 * inner, 1, bias=False)
        self.to_out = nn.Conv2d(inner, dim_out, 1)
        w = window_size
        self.relative_position = nn.Parameter(torch.randn(2 * w - 1, 2 * w - 1) * 0.02)
        ys, xs = torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij")
        pos = torch.stack([ys.flatten(), xs.flatten()], dim=-1)  # (N, 2), N = w*w
        rel = pos[None, :, :] - pos[:, None, :] + (w - 1)  # [query, key] -> key - query, shifted to >= 0
        self.register_buffer("relative_index", rel[..., 0] * (2 * w - 1) + rel[..., 1], persistent=False)

    def _bias(self, H: int, W: int, batch: int) -> torch.Tensor:
        """Relative position bias (1, 1, N, N), plus -inf on padding keys when the map is padded."""
        bias = self.relative_position.flatten()[self.relative_index][None, None]
        w = self.window_size
        pad_h, pad_w = (-H) % w, (-W) % w
        if not (pad_h or pad_w):
            return bias
        real = torch.zeros(H + pad_h, W + pad_w, dtype=torch.bool, device=bias.device)
        real[:H, :W] = True
        real = rearrange(real, "(n1 p1) (n2 p2) -> (n1 n2) (p1 p2)", p1=w, p2=w)
        pad = torch.zeros(real.shape, dtype=bias.dtype, device=bias.device).masked_fill(~real, float("-inf"))
        pad = pad.repeat(batch, 1)[:, None, None, :]  # (B * windows, 1, 1, N); windows are (b n1 n2)
        return bias + pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        w = self.window_size
        x = F.pad(x, (0, (-W) % w, 0, (-H) % w))
        n1, n2 = x.shape[2] // w, x.shape[3] // w
        q = self.to_q(x)
        k, v = self.to_kv(x).chunk(2, dim=1)
        q, k, v = (rearrange(t, "b (h d) (n1 p1) (n2 p2) -> (b n1 n2) h (p1 p2) d", h=self.heads, p1=w, p2=w)
                   for t in (q, k, v))
        bias = self._bias(H, W, B)
        if self.fused_attn:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=self.scale)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1) + bias
            out = attn.softmax(dim=-1) @ v
        out = rearrange(out, "(b n1 n2) h (p1 p2) d -> b (h d) (n1 p1) (n2 p2)", n1=n1, n2=n2, p1=w, p2=w)
        return self.to_out(out[:, :, :H, :W])

    def extra_repr(self) -> str:
        return f"heads={self.heads}, head_dim={self.head_dim}, window_size={self.window_size}"


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)


class _PreActBlock(nn.Module):
    """Pre-activation residual block: x + rest(pre(x)), pre = BN-ReLU.

    With an identity shortcut the module computes `x + branch(x)` with
    branch = Sequential(pre, rest) (lesionable). With a projection shortcut
    (stride or width change), as in pre-activation ResNets the shortcut taps
    the pre-activated input: shortcut(pre(x)) + rest(pre(x)).
    """

    def __init__(self, cin: int, cout: int, stride: int, layers: list[nn.Module]) -> None:
        super().__init__()
        self.pre = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU())
        self.rest = nn.Sequential(*layers)
        self.shortcut = _conv(cin, cout, 1, stride) if (stride != 1 or cin != cout) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut is None:
            return x + self.rest(self.pre(x))
        x = self.pre(x)
        return self.shortcut(x) + self.rest(x)


class PreActBasic(_PreActBlock):
    """Pre-activation basic block: BN-ReLU-3x3 conv (stride) - BN-ReLU-3x3 conv."""

    expansion = 1

    def __init__(self, cin: int, channels: int, stride: int = 1) -> None:
        cout = channels * self.expansion
        super().__init__(cin, cout, stride, [
            _conv(cin, channels, 3, stride), nn.BatchNorm2d(channels), nn.ReLU(), _conv(channels, cout, 3)])


class PreActBottleneck(_PreActBlock):
    """Pre-activation bottleneck: BN-ReLU-1x1, BN-ReLU-3x3 (stride), BN-ReLU-1x1 to 4x channels."""

    expansion = 4

    def __init__(self, cin: int, channels: int, stride: int = 1) -> None:
        cout = channels * self.expansion
        super().__init__(cin, cout, stride, [
            _conv(cin, channels, 1), nn.BatchNorm2d(channels), nn.ReLU(),
            _conv(channels, channels, 3, stride), nn.BatchNorm2d(channels), nn.ReLU(),
            _conv(channels, cout, 1)])


class MSABlock(nn.Module):
    """AlterNet's MSA block (the original's AttentionBlockB): x + drop_path(MSA(BN(1x1 conv(GELU(BN(x)))))).

    Pre-activation, a 1x1 conv to the block's inner width (dim / expansion),
    BN, windowed MSA back to `dim`; no MLP. Always has an identity shortcut.
    """

    def __init__(self, dim: int, expansion: int, heads: int, head_dim: int, window_size: int,
                 drop_path: float = 0.0, fused_attn: bool = True) -> None:
        super().__init__()
        from timm.layers import DropPath

        width = dim // expansion
        self.branch = nn.Sequential(
            nn.BatchNorm2d(dim), nn.GELU(), nn.Conv2d(dim, width, 1, bias=False), nn.BatchNorm2d(width),
            WindowMSA(width, dim, heads, head_dim, window_size, fused_attn),
            DropPath(drop_path) if drop_path > 0 else nn.Identity())

    @property
    def attn(self) -> WindowMSA:
        """The block's windowed MSA."""
        return self.branch[4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


class AlterNet(nn.Module):
    """AlterNet (Park & Kim 2022): a pre-activation ResNet whose stage ends alternate Conv and MSA blocks.

    Stage s has depth[s] blocks; the last 2*msas[s] of them alternate
    (conv, MSA), i.e. every second block from the end is an MSA block, as in the
    original `_make_layer`: [conv] * (n - 2m) + [conv, MSA] * m. CIFAR stem: one
    3x3 conv (no BN/ReLU: pre-activation), no pooling; stages at stride 1, 2, 2, 2;
    classifier: BN-ReLU-global average pool-linear. Stochastic depth (drop_path)
    is applied to MSA blocks only, linearly in the block index, as in the original.
    """

    def __init__(self, num_classes: int, width: int = 64, depth: Sequence[int] = (3, 4, 6, 4),
                 msas: Sequence[int] = (0, 1, 1, 2), heads: Sequence[int] = (3, 6, 12, 24), head_dim: int = 64,
                 window_size: int = 4, block: str = "bottleneck", drop_path: float = 0.0,
                 fused_attn: bool = True) -> None:
        super().__init__()
        conv_block = {"bottleneck": PreActBottleneck, "basic": PreActBasic}[block]
        expansion = conv_block.expansion
        total = sum(depth)
        self.stem = _conv(3, width, 3)
        stages, cin, idx = [], width, 0
        for s, (n, m, h) in enumerate(zip(depth, msas, heads)):
            channels = width * 2 ** s
            is_msa = [False] * (n - 2 * m) + [False, True] * m
            blocks = []
            for b, msa in enumerate(is_msa):
                if msa:
                    sd = drop_path * idx / max(total - 1, 1)
                    blocks.append(MSABlock(cin, expansion, h, head_dim, window_size, sd, fused_attn))
                else:
                    blocks.append(conv_block(cin, channels, stride=2 if (b == 0 and s > 0) else 1))
                    cin = channels * expansion
                idx += 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.BatchNorm2d(cin)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(cin, num_classes)
        self.num_features = cin
        attn_convs = {id(c) for m in self.modules() if isinstance(m, WindowMSA) for c in m.modules()}
        for mod in self.modules():  # ResNet init for the convolutions; attention keeps PyTorch's default
            if isinstance(mod, nn.Conv2d) and id(mod) not in attn_convs:
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """timm's convention (as its Swin): relative-position tables take no weight decay."""
        return {n for n, _ in self.named_parameters() if "relative_position" in n}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.act(self.norm(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def decompose_alternet(model: AlterNet) -> list[Block]:
    """AlterNet: stem, each conv block ("conv") and MSA block ("msa"), norm (BN-ReLU), pool, head.

    MSA blocks and identity-shortcut conv blocks are residual (lesionable);
    the first block of a stage (projection shortcut) is not.
    """
    parts = [Block("stem", "stem", model.stem, "nchw")]
    for s, stage in enumerate(model.stages):
        for b, blk in enumerate(stage):
            name = f"stages.{s}.{b}"
            if isinstance(blk, MSABlock):
                parts.append(Block(name, "msa", blk, "nchw", residual=True, branch=blk.branch))
            else:
                res = blk.shortcut is None
                branch = nn.Sequential(blk.pre, blk.rest) if res else None
                parts.append(Block(name, "conv", blk, "nchw", residual=res, branch=branch))
    parts += [
        Block("norm", "norm", nn.Sequential(model.norm, model.act), "nchw"),
        Block("pool", "pool", nn.Sequential(model.pool, model.flatten), "flat"),
        Block("head", "head", model.fc, "flat"),
    ]
    return parts


register_decomposer(AlterNet, decompose_alternet)

_BLOCKS = ("bottleneck", "basic")


def _check_alternet(cfg: dict) -> list[str]:
    errors = check_positive(cfg, ("width", "head_dim", "window_size"))
    errors += _positive_list(cfg, "depth", 4) + _positive_list(cfg, "heads", 4)
    errors += _positive_list(cfg, "msas", 4, minimum=0)
    if cfg["block"] not in _BLOCKS:
        errors.append(f"block must be one of {', '.join(_BLOCKS)}, got {cfg['block']!r}")
    if not 0.0 <= cfg["drop_path"] < 1.0:
        errors.append(f"drop_path must be in [0, 1), got {cfg['drop_path']!r}")
    if errors:
        return errors
    for s, (n, m) in enumerate(zip(cfg["depth"], cfg["msas"])):
        if 2 * m > n:
            errors.append(f"stage {s + 1}: {m} MSA blocks need depth >= {2 * m} (conv/MSA alternate), "
                          f"got depth {n}")
    return errors


def _build_alternet(num_classes: int, **cfg) -> nn.Module:
    """AlterNet-50 for CIFAR-100 (the paper's variant): bottleneck blocks (3,4,6,4), MSAs (0,1,1,2)."""
    cfg = dict(cfg)
    return AlterNet(num_classes, depth=tuple(cfg.pop("depth")), msas=tuple(cfg.pop("msas")),
                    heads=tuple(cfg.pop("heads")), **cfg)


register_model(
    ModelEntry(
        name="alternet",
        build=_build_alternet,
        description="AlterNet-50 (CIFAR-100 variant): pre-activation bottleneck ResNet, blocks (3,4,6,4), "
                    "last blocks alternate conv/windowed-MSA with MSAs (0,1,1,2), heads (3,6,12,24), window 4",
        defaults={
            "width": 64,
            "depth": [3, 4, 6, 4],
            "msas": [0, 1, 1, 2],
            "heads": [3, 6, 12, 24],
            "head_dim": 64,
            "window_size": 4,
            "block": "bottleneck",
            "drop_path": 0.0,
            "fused_attn": True,
        },
        check=_check_alternet,
    )
)
