"""Hessian numerics: exact Hessian-vector products, Lanczos, Hutchinson trace, SLQ density.

Pure functions over a model, a loss and batches, shared by the `hessian` task,
its benchmark and its tests, so a number in a Parquet file and a number in a
test come from the same code.

The operator is H = Σ_k w_k ∇²_θ loss(model, batch_k) over all trainable
parameters θ with w_k = n_k / Σ n (batches weighted by their size). Three exact
ways to apply it (`HVP_METHODS`), measured by `benchmarks/bench_hessian.py` (CPU,
one torch thread, batch 32, HVP time over one gradient's time, two runs):

=================================  ==============  ==============
method                             ResNet-18 w16   ViT-Ti w96 d6
=================================  ==============  ==============
retained (double backward through  2.50 / 2.57     2.21 / 2.21
  a kept gradient graph)
double_backward (fresh)            3.55 / 3.61     3.17 / 3.25
forward_over_reverse (fresh,       4.02 / 4.26     3.77 / 3.91
  torch.func jvp of grad)
  … vmap-ed, per probe of 4        3.66 / 3.35     2.67 / 3.24
retained, batched, per probe of 4  2.54 / 2.57     2.46 / 2.67
torch.func.linearize (2 threads)   2.8, +142 to    1.9, +85 to
                                     build           build
=================================  ==============  ==============

`retained` wins (and batching probes does not pay on CPU): the forward and the
first backward (with `create_graph`) run once per operator, every HVP is one
backward through that graph — the product PyHessian uses on a single batch, so
per product the two tie and our speed has to come from fewer products. It costs the
memory of the graph for every batch of the operator; `double_backward` keeps
nothing between HVPs (the full-dataset / large-batch mode), and
`forward_over_reverse` is the torch.func path (vmap-able, `fused_attn` off
required as for the others).

Lanczos (`lanczos_eigs`) keeps at most `max_vectors` n-vectors on the operator's
device, basis and product in flight together (default 2 · wanted + 14: 24 for a
top-5), with full reorthogonalization (classical Gram–Schmidt; a second pass where the
first cancelled much of the product, ARPACK's DGKS rule), α and β in
float64 and the small projected matrix solved densely. When the basis is full it
restarts thick (Wu & Simon, SIAM J. Matrix Anal. Appl. 22, 2000): the most wanted half
of the Ritz vectors are kept, rotated in place, with the residual direction, and the
projection becomes an arrowhead. A Ritz pair (θ, y) has the residual
r = ‖Hy − θy‖, an upper bound on the distance of θ to the spectrum;
once θ is separated from the rest of the spectrum by a gap δ, the error is
bounded by r²/δ (Kato–Temple; Parlett, The Symmetric Eigenvalue Problem, §11.7),
far below r. Ritz values whose intervals θ ± r overlap (copies of a repeated
eigenvalue) count as one cluster with R² = Σ r² and δ its distance to the nearest
other Ritz value (the block form of the bound). A wanted Ritz value is converged when
min(r, R²/δ) ≤ tol · max|θ| (≈ tol·‖H‖) and r ≤ 10 · tol · max|θ| — the guard on r keeps
an estimated gap of a Ritz value that is not yet resolved from ending the run.
One start vector's Krylov space holds one copy of a repeated eigenvalue: when the
space is invariant — β ≈ 0, or every Ritz value in it converged — its Ritz pairs are
locked (the most wanted that fit the budget) and Lanczos continues from a random
vector orthogonal to all kept vectors, drawn from its own stream (`restart_generator`),
until the restarted space's own wanted values converge too or nothing is left; what
reorthogonalization removes against locked pairs enters every residual, so no value
claims an accuracy that was not shown. A residual test cannot see an eigenvalue the
Krylov space has not yet reached: a small space can hold converged Ritz pairs (true
eigenpairs) while a larger eigenvalue whose direction the start barely held is still
unresolved, and the run ends with the next one in its place (misconvergence). Two
guards: no convergence test before a default basis' worth of steps (2 · wanted + 13,
capped by the budget: ARPACK also tests only once its ncv-vector basis is built), and a
Gaussian start, whose weights are even across the eigendirections, so the extreme
values emerge in order. A start leaning into the gradient (`start_vector(direction=…)`;
the gradient concentrates in the top eigenspace, Gur-Ari et al. 2018) weights the top
directions unevenly: measured at tol 1e-3 on the benchmark's ViT-Ti and ResNet-18, it
returned the 6th eigenvalue as the 5th for 4 of 4 and 2 of 4 seeds, one default basis
or not, while Gaussian starts found the true top-5 in every case (25–36 products).
Measured in benchmarks/bench_hessian.py.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from torch import nn

Batch = Sequence[torch.Tensor]
#: loss(model, batch) -> scalar tensor, differentiable in the model's parameters.
LossFn = Callable[[nn.Module, Batch], torch.Tensor]

HVP_METHODS = ("retained", "double_backward", "forward_over_reverse")
WHICH = ("magnitude", "both", "largest", "smallest")


# --------------------------------------------------------------------------- bookkeeping


class FlatParams:
    """The trainable parameters as one flat vector: views in, one concatenation out."""

    def __init__(self, model: nn.Module) -> None:
        named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("the model has no trainable parameters")
        self.names = [k for k, _ in named]
        self.params = [p for _, p in named]
        self.shapes = [p.shape for p in self.params]
        self.numels = [p.numel() for p in self.params]
        self.n = sum(self.numels)
        self.dtype = self.params[0].dtype
        self.device = self.params[0].device

    def unflatten(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Per-parameter views of a flat vector (no copy)."""
        return [t.view(s) for t, s in zip(torch.split(flat, self.numels), self.shapes)]

    def unflatten_rows(self, rows: torch.Tensor) -> list[torch.Tensor]:
        """Per-parameter views (k, *shape) of a (k, n) matrix whose rows are vectors."""
        return [t.reshape(rows.shape[0], *s)
                for t, s in zip(torch.split(rows, self.numels, dim=1), self.shapes)]

    def flatten(self, tensors: Sequence[torch.Tensor | None]) -> torch.Tensor:
        """One flat vector from per-parameter tensors (None: zeros)."""
        return torch.cat([(t if t is not None else torch.zeros(s, dtype=self.dtype,
                                                                device=self.device)).reshape(-1)
                          for t, s in zip(tensors, self.shapes)])

    def flatten_rows(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """A (k, n) matrix from per-parameter tensors (k, *shape)."""
        return torch.cat([t.reshape(t.shape[0], -1) for t in tensors], dim=1)


def rademacher(n: int, generator: torch.Generator, dtype: torch.dtype,
               device: torch.device, rows: int | None = None) -> torch.Tensor:
    """±1 entries (a flat vector, or `rows` of them), drawn on the generator's device."""
    shape = (n,) if rows is None else (rows, n)
    v = torch.randint(0, 2, shape, generator=generator, device=generator.device)
    return (2 * v - 1).to(device=device, dtype=dtype)


def gaussian(n: int, generator: torch.Generator, dtype: torch.dtype,
             device: torch.device) -> torch.Tensor:
    """A standard normal flat vector (Lanczos start)."""
    return torch.randn(n, generator=generator, device=generator.device,
                       dtype=torch.float32 if dtype == torch.float16 else dtype).to(device, dtype)


#: elements per float64 chunk on the CPU (a cache-sized piece: no n-long float64 copy)
DOT64_CHUNK = 1 << 18
#: columns per float64 chunk of `rows_dot64` (rows · chunk float64 temporaries: 12 MB for 24
#: rows on the CPU; larger on accelerators, where each chunk is a kernel launch)
ROWS64_CHUNK = {"cpu": 1 << 16}
ROWS64_CHUNK_DEFAULT = 1 << 20


def dot64(a: torch.Tensor, b: torch.Tensor) -> float:
    """Inner product accumulated in float64 (Lanczos' α, β and Rayleigh quotients): one row of
    `rows_dot64`, chunk by chunk — converting a whole 23.5M-element vector to float64 costs an
    n-long allocation and ~0.2 s per product (measured on ResNet-50), ten times the chunked sum."""
    return float(rows_dot64(a.unsqueeze(0), b)[0])


def rows_dot64(rows: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """rows @ w accumulated in float64, a column chunk at a time (a float64 vector, len(rows)).

    Gram–Schmidt's coefficients: MKL's float32 sgemv sums each n-long row in float32 and,
    on Lanczos vectors (whose entries are far from independent), was measured 3.8e-5 · ‖w‖
    off on a 701k-parameter ResNet — orthogonality lost at that level capped every Ritz
    value's accuracy near 5e-6 · λmax whatever the tolerance; with these sums the same run
    reaches 4e-8, as a float64 basis does (tests/test_hessian.py). Costs about twice a
    float32 sgemv (the chunks' conversion)."""
    if rows.dtype == torch.float64:
        return torch.mv(rows, w.to(torch.float64))
    chunk = ROWS64_CHUNK.get(rows.device.type, ROWS64_CHUNK_DEFAULT)
    out = torch.zeros(rows.shape[0], dtype=torch.float64, device=rows.device)
    for lo in range(0, rows.shape[1], chunk):
        out += rows[:, lo:lo + chunk].to(torch.float64) @ w[lo:lo + chunk].to(torch.float64)
    return out


def norm64(a: torch.Tensor) -> float:
    """‖a‖₂ in float64 (torch's scaled norm per chunk, as `dot64` chunks on the CPU)."""
    if a.device.type != "cpu" or a.numel() <= DOT64_CHUNK:
        return float(a.to(torch.float64).norm())
    return math.sqrt(math.fsum(float(a[lo:lo + DOT64_CHUNK].to(torch.float64).norm()) ** 2
                               for lo in range(0, a.numel(), DOT64_CHUNK)))


@contextlib.contextmanager
def explicit_attention(model: nn.Module) -> Iterator[int]:
    """Run every attention module on the explicit softmax(QKᵀ)V path for the duration.

    Fused scaled-dot-product attention has neither double backward nor forward-mode
    AD. Unlike `harness.models.registry.disable_fused_attn` the previous flags come back
    afterwards, so a model shared through the worker cache keeps its fast path for
    other tasks. Yields the number of attention modules (0 for a CNN).
    """
    modules = [m for m in model.modules() if hasattr(m, "fused_attn")]
    before = [m.fused_attn for m in modules]
    try:
        for m in modules:
            m.fused_attn = False
        yield len(modules)
    finally:
        for m, flag in zip(modules, before):
            m.fused_attn = flag


# --------------------------------------------------------------------------- the operator


class _Objective(nn.Module):
    """loss_fn(model, batch) as a module, so torch.func.functional_call swaps every
    parameter the loss touches (penalty terms included), not only those of forward()."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.loss_fn(self.model, batch)


class HessianOperator:
    """H = Σ_k w_k ∇² loss(model, batch_k), applied exactly to flat vectors.

    weights: per-batch weights; default n_k / Σ n (the objective over the union
        of the batches). A shard of a data-parallel operator passes n_k / N_total.
    method: one of HVP_METHODS (see the module docstring).
    The model must be in eval mode (batch-statistics norm layers and dropout make
    the objective a different function at every call).
    """

    def __init__(self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn,
                 method: str = "retained", weights: Sequence[float] | None = None) -> None:
        if method not in HVP_METHODS:
            raise ValueError(f"unknown hvp method {method!r}; allowed: {', '.join(HVP_METHODS)}")
        training = sorted({type(m).__name__ for m in model.modules() if m.training})
        if training:
            raise ValueError(f"model has modules in train mode ({', '.join(training[:4])}): "
                             "call model.eval() — train-mode norm layers and dropout make the "
                             "objective change between Hessian-vector products")
        if not batches:
            raise ValueError("no batches")
        self.model = model
        self.loss_fn = loss_fn
        self.method = method
        self.flat = FlatParams(model)
        device = self.flat.device
        self.batches = [tuple(t.to(device, non_blocking=True) for t in b) for b in batches]
        sizes = [len(b[0]) for b in self.batches]
        self.num_samples = sum(sizes)
        self.weights = ([s / self.num_samples for s in sizes] if weights is None
                        else [float(w) for w in weights])
        self.hvps = 0
        self.setup_seconds = 0.0
        self._graph: list[torch.Tensor] | None = None
        self._hv_fn: Callable[..., Any] | None = None

    @property
    def n(self) -> int:
        return self.flat.n

    @property
    def dtype(self) -> torch.dtype:
        return self.flat.dtype

    @property
    def device(self) -> torch.device:
        return self.flat.device

    # -- values ------------------------------------------------------------
    @torch.no_grad()
    def loss(self) -> float:
        """The weighted objective Σ w_k loss_k."""
        return sum(w * float(self.loss_fn(self.model, b)) for w, b in zip(self.weights,
                                                                          self.batches))

    def gradient(self) -> torch.Tensor:
        """The flat gradient of the weighted objective: read off the kept graph (`retained`:
        built here if needed, the products reuse it), else one forward/backward per batch."""
        if self.method == "retained" or self._graph is not None:
            return self.flat.flatten([g.detach() for g in self._build_graph()])
        total = torch.zeros(self.n, dtype=self.dtype, device=self.device)
        for w, b in zip(self.weights, self.batches):
            g = torch.autograd.grad(self.loss_fn(self.model, b), self.flat.params,
                                    allow_unused=True, materialize_grads=True)
            total.add_(self.flat.flatten(g), alpha=w)
        return total

    # -- products ----------------------------------------------------------
    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """Hv for a flat vector v."""
        self.hvps += 1
        if self.method == "retained":
            return self._retained(v.unsqueeze(0), batched=False)[0]
        if self.method == "double_backward":
            return self.fresh_matvec(v)
        return self._fwd_rev(v.unsqueeze(0))[0]

    def matmat(self, rows: torch.Tensor) -> torch.Tensor:
        """H applied to every row of a (k, n) matrix: one batched (vmap-ed) pass for
        `retained` and `forward_over_reverse`, a loop for `double_backward`."""
        self.hvps += rows.shape[0]
        if self.method == "retained":
            return self._retained(rows, batched=rows.shape[0] > 1)
        if self.method == "double_backward":
            return torch.stack([self.fresh_matvec(r) for r in rows])
        return self._fwd_rev(rows)

    def fresh_matvec(self, v: torch.Tensor) -> torch.Tensor:
        """Hv by double backward through a freshly built graph (keeps nothing)."""
        out = torch.zeros(self.n, dtype=self.dtype, device=self.device)
        vs = self.flat.unflatten(v)
        params = self.flat.params
        for w, b in zip(self.weights, self.batches):
            g = torch.autograd.grad(self.loss_fn(self.model, b), params, create_graph=True,
                                    allow_unused=True, materialize_grads=True)
            pairs = [(gi, vi) for gi, vi in zip(g, vs) if gi.requires_grad]
            if pairs:
                hv = torch.autograd.grad([p[0] for p in pairs], params,
                                         grad_outputs=[p[1] for p in pairs],
                                         allow_unused=True, materialize_grads=True)
                out.add_(self.flat.flatten(hv), alpha=w)
        return out

    def _build_graph(self) -> list[torch.Tensor]:
        """Σ_k w_k ∇loss_k with its graph kept, built once per operator."""
        if self._graph is None:
            started = time.perf_counter()
            total: list[torch.Tensor] | None = None
            for w, b in zip(self.weights, self.batches):
                g = torch.autograd.grad(w * self.loss_fn(self.model, b), self.flat.params,
                                        create_graph=True, allow_unused=True,
                                        materialize_grads=True)
                total = list(g) if total is None else [a + c for a, c in zip(total, g)]
            self._graph = total
            self.setup_seconds += time.perf_counter() - started
        return self._graph

    def _retained(self, rows: torch.Tensor, batched: bool) -> torch.Tensor:
        graph = self._build_graph()
        keep = [i for i, g in enumerate(graph) if g.requires_grad]
        params = self.flat.params
        if not keep:
            return torch.zeros_like(rows)
        if batched:
            vs = self.flat.unflatten_rows(rows)
            try:
                hv = torch.autograd.grad([graph[i] for i in keep], params,
                                         grad_outputs=[vs[i] for i in keep], retain_graph=True,
                                         is_grads_batched=True, allow_unused=True,
                                         materialize_grads=True)
                return self.flat.flatten_rows(hv)
            except RuntimeError:  # an op without a batching rule: one product at a time
                pass
        out = []
        for v in rows:
            vs = self.flat.unflatten(v)
            hv = torch.autograd.grad([graph[i] for i in keep], params,
                                     grad_outputs=[vs[i] for i in keep], retain_graph=True,
                                     allow_unused=True, materialize_grads=True)
            out.append(self.flat.flatten(hv))
        return torch.stack(out)

    def _fwd_rev(self, rows: torch.Tensor) -> torch.Tensor:
        """Forward-over-reverse (jvp of grad) with torch.func, vmap-ed over the rows."""
        from torch.func import functional_call, grad, jvp, vmap

        if self._hv_fn is None:
            objective = _Objective(self.model, self.loss_fn)
            names = ["model." + k for k in self.flat.names]
            argnums = tuple(range(len(names)))

            def hv(primals: tuple[torch.Tensor, ...], tangents: tuple[torch.Tensor, ...],
                   batch: Batch) -> tuple[torch.Tensor, ...]:
                def f(*ps: torch.Tensor) -> torch.Tensor:
                    return functional_call(objective, dict(zip(names, ps)), (batch,))

                return jvp(grad(f, argnums=argnums), primals, tangents)[1]

            self._hv_fn = hv
        primals = tuple(p.detach() for p in self.flat.params)
        out = torch.zeros_like(rows)
        vs = self.flat.unflatten_rows(rows)
        for w, b in zip(self.weights, self.batches):
            if rows.shape[0] == 1:
                res = self._hv_fn(primals, tuple(v[0] for v in vs), b)
                out.add_(self.flat.flatten(res).unsqueeze(0), alpha=w)
            else:
                res = vmap(lambda *t: self._hv_fn(primals, t, b))(*vs)
                out.add_(self.flat.flatten_rows(res), alpha=w)
        return out

    def release(self) -> None:
        """Drop the kept gradient graph (its memory) and any p.grad a caller left behind."""
        self._graph = None
        for p in self.flat.params:
            p.grad = None


def batch_free_operator(model: nn.Module, batch: Batch, loss_fn: LossFn) -> HessianOperator:
    """The Hessian of a term that ignores its batch (the objective's penalty): any one batch,
    weight 1, by double backward so nothing is kept between products."""
    return HessianOperator(model, [batch], loss_fn, "double_backward", weights=[1.0])


def checked_product(op: "HessianOperator | Any", v: torch.Tensor, rtol: float | None = None
                    ) -> tuple[torch.Tensor, float]:
    """(Hv, relative difference): Hv the operator's way, checked against a product through a
    freshly built graph — raises unless the two agree. A solver may start from v and reuse
    Hv as its first product (`lanczos_eigs(first_product=…)`), so the check costs one fresh
    product only.

    Two products of one vector differ when the objective is not a fixed function:
    a norm layer in train mode, active dropout or drop-path, a data pipeline that
    re-augments. A non-finite product (e.g. the `l2` penalty Σ‖w‖ at a parameter
    tensor that is exactly zero, where it has no Hessian) also stops here.
    Returns the relative difference ‖a − b‖ / ‖a‖.
    """
    if rtol is None:
        rtol = 1e-6 if op.dtype == torch.float64 else 1e-2
    a = op.matvec(v)
    b = op.fresh_matvec(v)
    op.hvps += 1
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        flat = getattr(op, "flat", None)  # a ShardedHessian has no local parameters
        zero = ([k for k, p in zip(flat.names, flat.params) if not bool(p.detach().any())]
                if flat is not None else [])
        hint = (f"; parameter tensors that are exactly zero: {', '.join(zero[:5])}"
                f"{'…' if len(zero) > 5 else ''} (the `l2` penalty Σ‖w‖ has no Hessian there: "
                "use penalty half_sq or weight_decay 0)" if zero else "")
        raise FloatingPointError(f"the Hessian-vector product is not finite{hint}")
    diff = float((a - b).norm() / a.norm().clamp_min(torch.finfo(a.dtype).tiny))
    if diff > rtol:
        raise RuntimeError(f"two Hessian-vector products of the same vector differ by {diff:.2e} "
                           f"(relative, > {rtol:.0e}): the objective is not deterministic — "
                           "a norm layer in train mode, dropout / drop-path active, or "
                           "batches that change between calls")
    return a, diff


def check_hvp(op: "HessianOperator | Any", generator: torch.Generator, rtol: float | None = None
              ) -> float:
    """`checked_product` of a random unit vector; returns the relative difference."""
    v = gaussian(op.n, generator, op.dtype, op.device)
    return checked_product(op, v / v.norm(), rtol)[1]


# --------------------------------------------------------------------------- Lanczos


@dataclass
class Tridiagonal:
    """A Lanczos run: T's diagonal α and off-diagonal β (float64), the final β_m, the basis."""

    alpha: np.ndarray
    beta: np.ndarray
    last_beta: float
    basis: torch.Tensor | None = None

    def eig(self) -> tuple[np.ndarray, np.ndarray]:
        """Ritz values (ascending) and T's eigenvectors by the symmetric tridiagonal solver."""
        if len(self.alpha) == 1:
            return self.alpha.copy(), np.ones((1, 1))
        return eigh_tridiagonal(self.alpha, self.beta, lapack_driver="stev")


@dataclass
class Eigenpairs:
    """Wanted Ritz pairs of a Lanczos run, in report order.

    end: "magnitude" (ranked by |λ|), "largest" or "smallest" (ranked from that end).
    residual: ‖Hy − θy‖, an upper bound on |λ − θ| for some eigenvalue λ, floored at the
    rounding level of the basis' precision (`rounding_floor`).
    """

    values: np.ndarray
    residuals: np.ndarray
    converged: np.ndarray
    end: list[str]
    rank: list[int]
    steps: int
    seconds: float
    ritz: np.ndarray
    vectors: torch.Tensor | None = None
    state_vectors: int = 0  # n-vectors the solver held (basis + the product in flight)


def _wanted(theta: np.ndarray, k: int, which: str) -> list[tuple[int, str, int]]:
    """(index into theta, end, rank) of the wanted Ritz values."""
    k = min(k, len(theta))
    if which == "magnitude":
        order = np.argsort(-np.abs(theta), kind="stable")[:k]
        return [(int(i), "magnitude", r) for r, i in enumerate(order)]
    top = [(int(i), "largest", r) for r, i in enumerate(np.argsort(-theta, kind="stable")[:k])]
    bottom = [(int(i), "smallest", r) for r, i in enumerate(np.argsort(theta, kind="stable")[:k])]
    if which == "largest":
        return top
    if which == "smallest":
        return bottom
    return top + bottom


def start_vector(n: int, generator: torch.Generator, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu", direction: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """A unit Lanczos start: Gaussian, plus `direction` (each normalized) when it is nonzero.
    Leaning into a direction (the gradient: the top eigenspace) weights the eigendirections
    unevenly, which can let a smaller eigenvalue converge in a larger one's place (module
    docstring); the Gaussian alone is the safe default."""
    v = gaussian(n, generator, dtype, torch.device(device))
    v /= v.norm()
    if direction is not None and float(direction.norm()) > 0:
        v += direction.to(dtype=dtype, device=v.device) / direction.norm()
        v /= v.norm()
    return v


def lanczos(matvec: Callable[[torch.Tensor], torch.Tensor], v0: torch.Tensor, steps: int
            ) -> Tridiagonal:
    """Plain Lanczos with full reorthogonalization (classical Gram–Schmidt, twice), SLQ's.

    The basis is one preallocated (steps + 1, n) tensor. On breakdown (β ≈ 0: the
    Krylov space is invariant) it stops: the quadrature is then exact. The eigenvalue
    solver is `lanczos_eigs` (bounded memory, restarts after a breakdown).
    """
    n = v0.numel()
    steps = min(steps, n)
    basis = torch.empty(steps + 1, n, dtype=v0.dtype, device=v0.device)
    basis[0] = v0 / v0.norm()
    alpha: list[float] = []
    beta: list[float] = []
    scale = 0.0
    for j in range(steps):
        v = basis[j]
        w = _own(matvec(v), basis)
        a = dot64(w, v)
        alpha.append(a)
        w.add_(v, alpha=-a)
        if j > 0:
            w.add_(basis[j - 1], alpha=-beta[-1])
        _reorthogonalize(w, basis[: j + 1])
        b = norm64(w)
        scale = max(scale, abs(a) + b + (beta[-1] if beta else 0.0))
        beta.append(b)
        if _broke_down(b, scale, v0.dtype):
            break
        basis[j + 1] = w / b
    m = len(alpha)
    return Tridiagonal(np.array(alpha), np.array(beta[: m - 1]), beta[m - 1], basis[:m])


def _own(w: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """w, copied if it shares storage with the basis (an operator returning its input)."""
    if w.untyped_storage().data_ptr() == basis.untyped_storage().data_ptr():
        return w.clone()
    return w


#: DGKS: a second Gram–Schmidt pass is needed only when the first left less than this share of
#: the product's norm (Daniel, Gragg, Kaufman & Stewart 1976; ARPACK's dsaitr uses 0.717)
DGKS_ETA = 1 / math.sqrt(2)


def _reorthogonalize(w: torch.Tensor, basis: torch.Tensor,
                     product_norm: float | None = None) -> torch.Tensor:
    """w minus its components along the orthonormal rows of basis by classical Gram–Schmidt
    (two matrix-vector passes over the basis each: the cost that grows with it; coefficients
    summed in float64, `rows_dot64`); returns the components removed (float64).

    Twice always, or — given the norm of the raw product w came from — a second pass only
    where the first left ‖w‖ ≤ DGKS_ETA · product_norm (cancellation: a small β after a
    large product, as near convergence or a breakdown), ARPACK's rule: where little was
    cancelled, one pass is already orthogonal to working precision ("twice is enough")."""
    total = torch.zeros(basis.shape[0], dtype=torch.float64, device=w.device)
    if basis.shape[0]:
        for p in range(2):
            coeff = rows_dot64(basis, w)
            w.addmv_(basis.t(), coeff.to(w.dtype), alpha=-1.0)
            total += coeff
            if p == 0 and product_norm is not None and (
                    norm64(w) > DGKS_ETA * product_norm):
                break
    return total


def _broke_down(b: float, scale: float, dtype: torch.dtype) -> bool:
    """β ≈ 0 relative to the operator's scale seen so far: the Krylov space is invariant."""
    return b <= torch.finfo(dtype).eps ** (2 / 3) * scale


def error_estimates(theta: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    """Per Ritz value, min(r, R²/δ) over clusters: Ritz values whose residual intervals
    [θ ± r] overlap form a cluster (copies of a repeated eigenvalue), R² = Σ r² over it and
    δ = its distance to the nearest Ritz value outside (the block Kato–Temple bound; a lone
    value's cluster is itself: r²/δ). With no Ritz value outside, the residual stands."""
    if len(theta) < 2:
        return residuals.copy()
    order = np.argsort(theta, kind="stable")
    t, r = theta[order], residuals[order]
    label = np.concatenate([[0], np.cumsum(np.diff(t) > r[:-1] + r[1:])])
    est = r.copy()
    for c in range(int(label[-1]) + 1):
        idx = np.flatnonzero(label == c)
        lo, hi = idx[0], idx[-1]
        gap = min(t[lo] - t[lo - 1] if lo > 0 else np.inf,
                  t[hi + 1] - t[hi] if hi + 1 < len(t) else np.inf)
        if np.isfinite(gap):
            est[idx] = np.minimum(r[idx], np.sum(r[idx] ** 2) / gap)
    out = np.empty_like(est)
    out[order] = est
    return out


#: added to the start generator's seed for the restart vectors' own stream (callers often seed
#: the start vector's generator and the solver's alike: a restart must not redraw the start)
RESTART_SEED_OFFSET = 0x5DEECE66D


def restart_generator(generator: torch.Generator) -> torch.Generator:
    """The stream restart vectors are drawn from: seeded from `generator`'s seed plus
    RESTART_SEED_OFFSET, independent of how much of `generator` was used."""
    seed = (generator.initial_seed() + RESTART_SEED_OFFSET) % 2 ** 63
    return torch.Generator(device=generator.device).manual_seed(seed)


def default_vectors(k: int, which: str) -> int:
    """The solver's default vector budget: 2 · wanted + 14 (24 for the paper's top-5)."""
    return 2 * (2 * k if which == "both" else k) + 14


def _priority(theta: np.ndarray, which: str) -> np.ndarray:
    """Indices of every Ritz value, most wanted first (`both`: the two ends alternating)."""
    if which == "magnitude":
        return np.argsort(-np.abs(theta), kind="stable")
    if which == "largest":
        return np.argsort(-theta, kind="stable")
    if which == "smallest":
        return np.argsort(theta, kind="stable")
    up, down = np.argsort(-theta, kind="stable"), np.argsort(theta, kind="stable")
    seen: dict[int, None] = {}
    for a, b in zip(up, down):
        seen.setdefault(int(a))
        seen.setdefault(int(b))
    return np.fromiter(seen, dtype=np.int64, count=len(seen))


def _rotate(rows: torch.Tensor, coeff: np.ndarray, chunk: int = 1 << 16) -> None:
    """rows[:c] = coeffᵀ rows (coeff: (len(rows), c)) in place, a column chunk at a time, so a
    restart needs no second basis (temporary memory c · chunk)."""
    c = coeff.shape[1]
    y = torch.from_numpy(np.ascontiguousarray(coeff.T)).to(rows.dtype).to(rows.device)
    for lo in range(0, rows.shape[1], chunk):
        part = rows[:, lo: lo + chunk]
        part[:c] = y @ part


def rounding_floor(steps: int, dtype: torch.dtype, theta: np.ndarray) -> float:
    """steps · eps · max|θ|: the least residual a run in `dtype` can show. The residual from
    the projection (β · |last entry of the Ritz vector|) holds for the exact Krylov relation;
    in finite precision that relation holds to about eps · ‖H‖ per step (Paige 1976), and a
    float32 run on a dense 3000-dim matrix claimed 1e-19 for values 1.7e-6 off (on ViT-Ti's
    Hessian, 8 · eps · λmax off after 34 steps)."""
    return steps * float(torch.finfo(dtype).eps) * float(np.abs(theta).max())


class _Converged:
    """The stopping rule: min(r, r²/δ) ≤ tol · max|θ| and r ≤ 10 · tol · max|θ| (module
    docstring), over every Ritz value in play (locked and active)."""

    def __init__(self, tol: float) -> None:
        self.tol = tol

    def __call__(self, theta: np.ndarray, res: np.ndarray) -> np.ndarray:
        scale = max(float(np.abs(theta).max()), np.finfo(float).tiny) if len(theta) else 1.0
        return (error_estimates(theta, res) <= self.tol * scale) & (res <= 10 * self.tol * scale)


def lanczos_eigs(matvec: Callable[[torch.Tensor], torch.Tensor], n: int, *, k: int = 5,
                 which: str = "magnitude", tol: float = 1e-3, max_iter: int = 100,
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu", vectors: bool = False,
                 min_iter: int | None = None, start: torch.Tensor | None = None,
                 v0: torch.Tensor | None = None, first_product: torch.Tensor | None = None,
                 max_vectors: int | None = None) -> Eigenpairs:
    """The k extreme eigenvalues of a symmetric operator by thick-restart Lanczos.

    which: "magnitude" (the k of largest |λ|: PyHessian's and the paper's
    choice), "largest", "smallest" or "both" (k from each end, so negative
    eigenvalues show). Stops when every wanted Ritz value is converged (module
    docstring: error estimate min(r, r²/δ) ≤ tol · max|θ| and r ≤ 10 · tol · max|θ|;
    after at least `min_iter` steps since the start or the last breakdown, default
    2 · wanted + 13 capped by the basis: module docstring, misconvergence), or after
    max_iter steps (= HVPs). start: a direction mixed into the random start vector
    (`start_vector`; it weights the eigendirections unevenly, module docstring); or v0:
    the start vector itself, with first_product = H v0 when the
    caller has it (it then counts as the first step). vectors: also return the unit
    Ritz vectors (k, n).

    max_vectors: the n-vectors the solver keeps (its basis plus the product in flight;
    default `default_vectors`, at least wanted + 4). When the basis is full it restarts
    thick (Wu & Simon 2000): the most wanted half of the Ritz vectors stay, with the
    residual direction. A breakdown (β ≈ 0: the Krylov space is invariant, e.g. at a
    repeated eigenvalue) locks that space's Ritz pairs (the most wanted that fit) with
    their residuals, and Lanczos continues from a random vector orthogonal to everything
    kept, drawn from its own stream (`restart_generator`), until the wanted values of
    the restarted space are converged too, or the space is exhausted.
    """
    if which not in WHICH:
        raise ValueError(f"unknown which {which!r}; allowed: {', '.join(WHICH)}")
    device = torch.device(device)
    gen = generator or torch.Generator(device=device).manual_seed(0)
    wanted_count = min(2 * k if which == "both" else k, n)
    budget = default_vectors(k, which) if max_vectors is None else max_vectors
    if budget < wanted_count + 4:
        raise ValueError(f"max_vectors {budget} is too small for {wanted_count} wanted "
                         f"eigenvalues: give at least {wanted_count + 4} (wanted + 4)")
    converged = _Converged(tol)
    started = time.perf_counter()
    if v0 is None:
        v0 = start_vector(n, gen, dtype, device, start)
    elif first_product is not None and first_product.shape != v0.shape:
        raise ValueError(f"first_product {tuple(first_product.shape)} does not match v0 "
                         f"{tuple(v0.shape)}")
    rows = min(budget - 1, n)  # the product in flight is the budget's last vector
    if min_iter is None:  # one default basis before any test (module docstring)
        min_iter = min(default_vectors(k, which) - 1, rows)
    basis = torch.empty(rows, n, dtype=v0.dtype, device=v0.device)
    locked_theta: list[float] = []  # Ritz pairs of invariant spaces: basis[:locked]
    locked_res: list[float] = []
    t = np.zeros((rows + 1, rows + 1))  # the active space's projection (arrowhead + tridiagonal)
    basis[0] = v0 / v0.norm()
    m, steps, block_steps, b, scale = 1, 0, 0, 0.0, 0.0
    min_active = min(wanted_count + 3, rows)
    theta = s = res = np.zeros(0)
    # coupling = V_lockedᵀ H V_active: what reorthogonalization removes against locked pairs
    # that are not exact; it enters every active residual, so none claims more than was shown
    coupling = np.zeros((rows, rows + 1))
    restarts: torch.Generator | None = None
    while True:
        locked = len(locked_theta)
        j = m - 1
        v = basis[locked + j]
        if steps == 0 and first_product is not None:
            w = first_product.to(dtype=v.dtype, device=v.device) / v0.norm()
        else:
            w = _own(matvec(v), basis)
        product_norm = norm64(w)
        steps += 1
        block_steps += 1
        a = dot64(w, v)
        t[j, j] = a
        w.add_(v, alpha=-a)
        coupled = t[:j, j]
        if j > 0 and coupled[:-1].any():  # after a thick restart: the arrow's couplings
            w.addmv_(basis[locked: locked + j].t(),
                     torch.from_numpy(coupled.copy()).to(w.dtype).to(w.device), alpha=-1.0)
        elif j > 0:
            w.add_(basis[locked + j - 1], alpha=-coupled[-1])
        removed = _reorthogonalize(w, basis[: locked + m], product_norm)
        coupling[:locked, j] = removed[:locked].cpu().numpy()
        b = norm64(w)
        scale = max(scale, abs(a) + b + float(np.abs(coupled).sum()))
        theta, s = np.linalg.eigh(t[:m, :m])
        res = np.hypot(b * s[-1, :], np.linalg.norm(coupling[:locked, :m] @ s, axis=0))
        all_theta = np.concatenate([locked_theta, theta])
        all_ok = converged(all_theta, np.concatenate([locked_res, res]))
        own = _priority(theta, which)[:wanted_count]
        picks = [i for i, _, _ in _wanted(all_theta, k, which)]
        done = (block_steps >= min_iter and all_ok[locked + own].all() and all_ok[picks].all())
        # invariant: β ≈ 0, or to the tolerance (every Ritz value of the space converged: a
        # repeated eigenvalue's other copies lie outside it)
        invariant = _broke_down(b, scale, v0.dtype) or bool(all_ok[locked:].all())
        if steps >= max_iter or (done and not invariant):
            break
        if invariant:  # lock the space's Ritz pairs (most wanted first, as fit) and restart
            keep = m
            while keep > min(m, wanted_count) and rows - locked - keep < min(
                    n - locked - keep, min_active):
                keep -= 1
            order = _priority(theta, which)[:keep]
            _rotate(basis[locked: locked + m], s[:, order])
            locked_theta += theta[order].tolist()
            locked_res += res[order].tolist()
            locked += keep
            theta = s = res = np.zeros(0)
            m = 0
            if locked >= n or locked >= rows:
                # the space is exhausted, or the vector budget is all locked pairs (a large
                # λmax makes tol · max|θ| loose for the rest: their spaces converge at once):
                # what is locked is the answer, each with its own residual
                break
            restarts = restarts or restart_generator(gen)
            r = gaussian(n, restarts, v0.dtype, v0.device)
            before = float(r.norm())
            _reorthogonalize(r, basis[:locked])
            if float(r.norm()) <= math.sqrt(torch.finfo(v0.dtype).eps) * before:
                break  # numerically, everything is spanned
            basis[locked] = r / r.norm()
            t[:] = 0.0
            coupling[:] = 0.0
            m, block_steps = 1, 0
            continue
        if locked + m >= rows:  # full: restart thick from the most wanted Ritz vectors
            keep_count = min(wanted_count + (m - wanted_count) // 2, m - 1)
            order = _priority(theta, which)[:keep_count]
            _rotate(basis[locked: locked + m], s[:, order])
            t[:] = 0.0
            t[np.arange(keep_count), np.arange(keep_count)] = theta[order]
            t[:keep_count, keep_count] = t[keep_count, :keep_count] = b * s[-1, order]
            coupling[:locked, :keep_count] = coupling[:locked, :m] @ s[:, order]
            coupling[:, keep_count:] = 0.0
            m = keep_count
        else:
            t[m - 1, m] = t[m, m - 1] = b
        basis[locked + m] = w / b
        m += 1
    locked = len(locked_theta)
    all_theta = np.concatenate([locked_theta, theta])
    all_res = np.concatenate([locked_res, res])
    if len(all_theta):  # no residual below the basis' rounding level is shown (`rounding_floor`)
        all_res = np.maximum(all_res, rounding_floor(steps, basis.dtype, all_theta))
    picks = _wanted(all_theta, k, which)
    idx = [i for i, _, _ in picks]
    vecs = None
    if vectors:
        vecs = torch.empty(len(idx), n, dtype=basis.dtype, device=basis.device)
        for row, i in enumerate(idx):
            if i < locked:
                vecs[row] = basis[i]
            else:
                coeff = torch.from_numpy(s[:, i - locked].copy()).to(basis.dtype)
                vecs[row] = coeff.to(basis.device) @ basis[locked: locked + m]
        vecs /= vecs.norm(dim=1, keepdim=True)
    return Eigenpairs(values=all_theta[idx], residuals=all_res[idx],
                      converged=converged(all_theta, all_res)[idx],
                      end=[e for _, e, _ in picks], rank=[r for _, _, r in picks],
                      steps=steps, seconds=time.perf_counter() - started, ritz=all_theta,
                      vectors=vecs, state_vectors=rows + 1)


# --------------------------------------------------------------------------- trace, density


@dataclass
class TraceEstimate:
    """Hutchinson's tr(H) ≈ mean of vᵀHv over Rademacher probes, with its standard error."""

    value: float
    se: float
    samples: np.ndarray
    seconds: float
    converged: bool | None  # None: no target was set (tol 0), so none was shown

    @property
    def probes(self) -> int:
        return len(self.samples)

    @classmethod
    def from_samples(cls, samples: Sequence[float], seconds: float, converged: bool | None
                     ) -> "TraceEstimate":
        """Mean and standard error of per-probe vᵀHv (se inf for a single probe)."""
        x = np.asarray(samples, dtype=np.float64)
        mean, se = _mean_se(x)
        return cls(mean, se, x, seconds, converged)


def hutchinson_trace(op: HessianOperator, probes: int = 100, generator: torch.Generator | None = None,
                     batch: int = 1, tol: float = 0.0, min_probes: int = 10) -> TraceEstimate:
    """tr(H) by Hutchinson with Rademacher probes, `batch` probes per operator call.

    Stops early once the standard error is ≤ tol · |estimate| (with ≥ min_probes);
    tol 0 runs all probes. `converged` says whether that target was met (None for tol 0:
    there was none to meet).
    """
    gen = generator or torch.Generator(device=op.device).manual_seed(0)
    started = time.perf_counter()
    samples: list[float] = []
    converged = False
    while len(samples) < probes:
        k = min(batch, probes - len(samples))
        v = rademacher(op.n, gen, op.dtype, op.device, rows=k)
        hv = op.matmat(v)
        samples += (hv.to(torch.float64) * v.to(torch.float64)).sum(dim=1).tolist()
        if tol > 0 and len(samples) >= max(min_probes, 2):
            mean, se = _mean_se(samples)
            if se <= tol * abs(mean):
                converged = True
                break
    return TraceEstimate.from_samples(samples, time.perf_counter() - started,
                                      converged if tol > 0 else None)


def trace_difference(total: TraceEstimate, part: TraceEstimate) -> TraceEstimate:
    """tr(A − B) from Hutchinson runs of A and B on the same probes (generators seeded alike,
    the same probe batch): per-probe differences, so B's probe noise cancels, not adds —
    e.g. the trace of the NLL alone, the penalty's (≈ weight_decay · I) taken out."""
    if len(total.samples) != len(part.samples):
        raise ValueError(f"paired traces need the same probes: {len(total.samples)} vs "
                         f"{len(part.samples)} samples")
    return TraceEstimate.from_samples(total.samples - part.samples,
                                      total.seconds + part.seconds, total.converged)


def _mean_se(samples: Sequence[float]) -> tuple[float, float]:
    x = np.asarray(samples, dtype=np.float64)
    se = float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("inf")
    return float(x.mean()), se


@dataclass
class Quadrature:
    """Stochastic Lanczos quadrature: per start, Ritz nodes θ and weights s₀² (sum 1)."""

    nodes: list[np.ndarray]
    weights: list[np.ndarray]
    steps: int
    seconds: float

    def mean(self) -> float:
        """∫ λ ρ(λ) dλ of the (unbroadened) estimate: tr(H) / n in expectation."""
        return float(np.mean([np.sum(w * t) for t, w in zip(self.nodes, self.weights)]))


def slq(op: HessianOperator, starts: int = 1, steps: int = 100,
        generator: torch.Generator | None = None) -> Quadrature:
    """SLQ as PyHessian's density(): per start a Rademacher vector, `steps` Lanczos steps
    (full reorthogonalization, stopping at an invariant subspace), nodes = eig(T),
    weights = squared first components of T's eigenvectors."""
    gen = generator or torch.Generator(device=op.device).manual_seed(0)
    started = time.perf_counter()
    nodes, weights, hvps = [], [], 0
    for _ in range(starts):
        v0 = rademacher(op.n, gen, op.dtype, op.device)
        tri = lanczos(op.matvec, v0, steps)
        theta, s = tri.eig()
        nodes.append(theta)
        weights.append(s[0, :] ** 2)
        hvps += len(tri.alpha)
        tri.basis = None
    return Quadrature(nodes, weights, hvps, time.perf_counter() - started)


def broaden(nodes: Sequence[np.ndarray], weights: Sequence[np.ndarray], num_bins: int = 10000,
            sigma_squared: float = 1e-5, overhead: float = 0.01, normalize: bool = True
            ) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian broadening of SLQ nodes onto a grid, as PyHessian's `density_generate`.

    Grid: from the mean (over starts) smallest node − overhead to the mean largest
    + overhead. Each node is a normal density with variance
    sigma_squared · max(1, grid width), weighted; starts are averaged.
    normalize: rescale so the grid sum · spacing is 1 (PyHessian does); without it
    the density integrates to Σ weights = 1 up to the mass outside the grid.
    """
    lo = float(np.mean([t.min() for t in nodes])) - overhead
    hi = float(np.mean([t.max() for t in nodes])) + overhead
    grid = np.linspace(lo, hi, num_bins)
    var = sigma_squared * max(1.0, hi - lo)
    density = np.zeros(num_bins)
    for theta, w in zip(nodes, weights):
        z = (grid[:, None] - theta[None, :]) ** 2 / (2.0 * var)
        density += (np.exp(-z) * w[None, :]).sum(axis=1) / math.sqrt(2 * math.pi * var)
    density /= len(nodes)
    if normalize and num_bins > 1:
        density /= density.sum() * (grid[1] - grid[0])
    return grid, density


# --------------------------------------------------------------------------- summaries


def nep_ape(eigenvalues: Sequence[float] | np.ndarray) -> dict[str, float]:
    """The paper's summaries of pooled eigenvalues: NEP = P(λ < 0), APE = E[λ | λ > 0]."""
    x = np.asarray(eigenvalues, dtype=np.float64)
    pos = x[x > 0]
    return {"nep": float((x < 0).mean()) if len(x) else float("nan"),
            "ape": float(pos.mean()) if len(pos) else float("nan"), "count": int(len(x))}


# --------------------------------------------------------------------------- PyHessian


@contextlib.contextmanager
def pyhessian_compat() -> Iterator[dict[str, int]]:
    """Run PyHessian 0.1 on current torch and count its Hessian-vector products.

    PyHessian's density() calls `torch.eig`, removed in torch 2 (a stub that raises): for the duration a
    `torch.eig(T, eigenvectors=True)` backed by `torch.linalg.eigh` (T is symmetric)
    is provided. Yields a dict whose "hvps" counts products (single-batch and
    dataloader ones). Nothing is patched outside the `with` block.
    """
    ph = importlib.import_module("pyhessian.hessian")  # the package re-exports a class by that name
    counter = {"hvps": 0}
    real_hvp = ph.hessian_vector_product
    real_loader = ph.hessian.dataloader_hv_product
    real_eig = getattr(torch, "eig", None)  # torch 2 keeps a stub that raises

    def counted_hvp(*args: Any, **kwargs: Any) -> Any:
        counter["hvps"] += 1
        return real_hvp(*args, **kwargs)

    def counted_loader(self: Any, v: Any) -> Any:
        counter["hvps"] += 1
        return real_loader(self, v)

    def eig(t: torch.Tensor, eigenvectors: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        vals, vecs = torch.linalg.eigh(t)
        return torch.stack([vals, torch.zeros_like(vals)], dim=1), vecs

    ph.hessian_vector_product = counted_hvp
    ph.hessian.dataloader_hv_product = counted_loader
    torch.eig = eig
    try:
        yield counter
    finally:
        ph.hessian_vector_product = real_hvp
        ph.hessian.dataloader_hv_product = real_loader
        if real_eig is None:
            del torch.eig
        else:
            torch.eig = real_eig


class PyHessianObjective(nn.Module):
    """The same objective in the shape PyHessian wants: `model(inputs)` then
    `criterion(outputs, targets)`, with index tensors as inputs.

    inputs are indices into the stacked batches, `forward` returns the
    objective of those samples (loss_fn unchanged, penalty included) and the
    criterion passes it through, so PyHessian weights batches by
    `inputs.size(0)` exactly as `HessianOperator` does.
    """

    def __init__(self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        device = next(model.parameters()).device
        self.columns = [torch.cat([b[i] for b in batches]).to(device) for i in
                        range(len(batches[0]))]
        sizes = [len(b[0]) for b in batches]
        starts = np.cumsum([0] + sizes)
        self.index_batches = [(torch.arange(int(a), int(b)), torch.zeros(int(b - a)))
                              for a, b in zip(starts[:-1], starts[1:])]

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        index = index.to(self.columns[0].device)
        return self.loss_fn(self.model, tuple(c[index] for c in self.columns))

    @staticmethod
    def criterion(loss: torch.Tensor, _targets: torch.Tensor) -> torch.Tensor:
        return loss

    def pyhessian(self) -> Any:
        """A `pyhessian.hessian` on one batch (data=) or several (dataloader=)."""
        from pyhessian import hessian

        cuda = self.columns[0].device.type == "cuda"
        if len(self.index_batches) == 1:
            return hessian(self, self.criterion, data=self.index_batches[0], cuda=cuda)
        return hessian(self, self.criterion, dataloader=self.index_batches, cuda=cuda)
