"""Block decomposition: a model as the ordered blocks whose sequential application is its forward.

The per-depth analyses (Fourier, feature-map variance, lesion) need "the output
of block k" and "the model with block k removed". `blocks(model)` returns the
ordered `Block`s — stem, each conv / MSA / MLP block, pooling, head — such that
`forward_blocks(blocks(model), x)` equals `model(x)` exactly.

A pre-norm transformer block (x + attn(norm1(x)), then x + mlp(norm2(x))) is
split into two blocks, MSA and MLP, as the paper counts them. A block with
`residual=True` computes x + branch(x); its lesion skips the branch.

Decomposers are registered per model class by the zoo modules
(`register_decomposer`), so `harness.models.blocks` knows no architecture itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

#: Kinds a block may have.
KINDS = ("stem", "conv", "msa", "mlp", "pool", "norm", "head", "other")
#: How a block's output is laid out, so per-depth analyses can find the spatial grid.
LAYOUTS = ("nchw", "nhwc", "tokens", "flat")


@dataclass(frozen=True)
class Block:
    """One step of the forward pass.

    name: a readable path such as "layer1.0" or "blocks.3.attn".
    kind: one of KINDS.
    module: callable on the previous block's output.
    layout: layout of this block's *output* (one of LAYOUTS); for "tokens",
        `prefix_tokens` leading tokens (class / distillation) precede the grid.
    residual: the module computes x + branch(x); `branch` is that branch.
    """

    name: str
    kind: str
    module: nn.Module
    layout: str
    prefix_tokens: int = 0
    residual: bool = False
    branch: nn.Module | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"block {self.name}: kind {self.kind!r} not in {KINDS}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"block {self.name}: layout {self.layout!r} not in {LAYOUTS}")
        if self.residual and self.branch is None:
            raise ValueError(f"block {self.name}: a residual block needs its branch")


class Residual(nn.Module):
    """x + branch(x): a residual block made explicit, so a lesion can drop the branch."""

    def __init__(self, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


class Lambda(nn.Module):
    """A small function as a module (reshapes, token handling) inside a decomposition."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], label: str = "") -> None:
        super().__init__()
        self.fn = fn
        self.label = label

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.label


Decomposer = Callable[[nn.Module], list[Block]]
_DECOMPOSERS: list[tuple[type, Decomposer]] = []


def register_decomposer(cls: type, fn: Decomposer) -> None:
    """Decompose instances of `cls` (or subclasses) with `fn`; later registrations win."""
    _DECOMPOSERS.insert(0, (cls, fn))


def blocks(model: nn.Module) -> list[Block]:
    """The ordered blocks of `model`; raises TypeError for a model no decomposer knows."""
    for cls, fn in _DECOMPOSERS:
        if isinstance(model, cls):
            return fn(model)
    known = ", ".join(sorted({c.__name__ for c, _ in _DECOMPOSERS}))
    raise TypeError(f"no block decomposition for {type(model).__name__}; known: {known}")


def forward_blocks(parts: list[Block], x: torch.Tensor, skip: int | None = None,
                   keep: bool = False) -> torch.Tensor | list[torch.Tensor]:
    """Apply the blocks in order.

    skip: index of a residual block whose branch is dropped (a lesion).
    keep: return every block's output instead of only the last.
    """
    outputs = []
    for i, block in enumerate(parts):
        if i == skip:
            if not block.residual:
                raise ValueError(f"block {i} ({block.name}) is not residual: it cannot be lesioned")
        else:
            x = block.module(x)
        if keep:
            outputs.append(x)
    return outputs if keep else x
