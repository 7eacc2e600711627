"""Building block: the models — the registry of architectures, the zoo that fills it (the
paper's ResNets, ViT, PiT, Swin, Mixer, AlterNet and any `timm:<name>`), their block
decompositions and checkpoints. Imports no engine: `build_model("vit_ti", 10)` works anywhere."""

from harness.models.registry import (MODELS, TIMM_PREFIX, ModelEntry, build_model, count_params,
                                     disable_fused_attn, model_names, register_model,
                                     validate_model_args)
from harness.models import zoo  # noqa: E402,F401  (registers every architecture)

__all__ = ["MODELS", "TIMM_PREFIX", "ModelEntry", "build_model", "count_params",
           "disable_fused_attn", "model_names", "register_model", "validate_model_args"]
