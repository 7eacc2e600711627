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

from torch import nn

__all__ = [
    "ModelEntry",
    "MODELS",
    "register_model",
    "PrefixFamily",
    "register_family",
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
#: `timm:<name>` builds any timm model (harness/models/zoo/timm_models.py registers it).
TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class PrefixFamily:
    """Models named `<prefix><anything>` (e.g. every timm model), validated and built by the
    family's own functions instead of one registry entry per name."""

    prefix: str
    validate: Callable[[str, dict], list[str]]
    build: Callable[..., nn.Module]


_FAMILIES: dict[str, PrefixFamily] = {}


def register_family(family: PrefixFamily) -> PrefixFamily:
    """Route names starting with `family.prefix` to it (the zoo registers `timm:`)."""
    _FAMILIES[family.prefix] = family
    return family


def _family(name: Any) -> PrefixFamily | None:
    if isinstance(name, str):
        for prefix, family in _FAMILIES.items():
            if name.startswith(prefix):
                return family
    return None


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
    family = _family(name)
    if family is not None:
        return family.validate(name, args)
    if name not in MODELS:
        return [f"unknown model {name!r}; allowed: {', '.join(model_names())} "
                f"or {TIMM_PREFIX}<any timm model>"]
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
    family = _family(name)
    if family is not None:
        return family.build(name, num_classes, **model_args)
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


def check_positive(cfg: dict, keys: tuple[str, ...]) -> list[str]:
    """Messages for the overrides among `keys` that are below 1."""
    return [f"{k} must be >= 1, got {cfg[k]!r}" for k in keys if cfg[k] < 1]

