"""hessian: eigenvalues, trace and spectral density of the Hessian of the training objective.

The paper's Fig. 1c / 4 / 6 / 7b (code never released): for each training
minibatch, the top-5 eigenvalues of largest magnitude of the Hessian of
"NLL + weight decay · penalty on augmented data" (`harness.analysis.objective`), pooled
over many minibatches, at the end of warmup; NEP = P(λ < 0) and
APE = E[λ | λ > 0] summarize them (`harness.analysis.hessian.nep_ape`).

A unit is (model or checkpoint, minibatch, what to compute). `scope: minibatch`
with `batch: -1` (default) expands into one unit per minibatch of the fixed,
seeded, augmented batches (`num_samples` / `batch_size`), so hundreds of
minibatches spread over all workers; `scope: full` is one unit over all of them
(batches weighted by size), optionally data-parallel over `shards` Ray actors.

`solver: lanczos` (default) is ours (`harness.analysis.hessian`); `solver: pyhessian` runs
PyHessian's own eigenvalues() / trace() / density() on the same objective and
batches and writes the same rows, so the two compare in one table. Attention
runs on the explicit softmax(QKᵀ)V path for the whole computation (fused SDPA
has no double backward); `explicit_attention` in the rows counts those modules.

Rows (`quantity`):
- `eigenvalue`: one per eigenvalue; `end` magnitude / largest / smallest, `rank`
  from that end, `error` = residual ‖Hy − λy‖ (a bound on the distance to the
  spectrum, floored at the float rounding level steps · eps · max|λ|; for PyHessian
  measured afterwards with our operator, outside its time).
- `trace`: Hutchinson estimate, `error` = its standard error; `converged` null (no
  target is set: all `trace_probes` run).
- `trace_nll` (every solver, sharded or not): the trace of the NLL alone — the same probes'
  vᵀ(H − H_penalty)v, the penalty's Hessian (≈ weight_decay · I with `half_sq`, which
  dominates the trace of a wide network) taken out exactly per probe. The penalty does not
  depend on the batch, so its operator runs on the unit's model (sharded: on shard 0's copy).
  With `solver: pyhessian` the probes are PyHessian's own: trace() draws them from torch's
  global RNG, whose state is saved before it and restored afterwards in a fork to redraw
  them exactly (`pyhessian_trace`).
- `density`: (`value` = grid point λ, `density` = ρ(λ)), Gaussian broadening as
  PyHessian's density_generate; `slq_node`: the raw quadrature (`value` node,
  `density` weight, `start`), so a density can be re-broadened later. `converged` null:
  SLQ has no convergence test.
"""

from __future__ import annotations

import functools
import json
import math
import time
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from harness.engine.context import UnitContext, WorkerCache
from harness.analysis.hessian import (HVP_METHODS, WHICH, Batch, HessianOperator, PyHessianObjective,
                             TraceEstimate, batch_free_operator, broaden, checked_product,
                             explicit_attention,
                             default_vectors, hutchinson_trace, lanczos_eigs,
                             pyhessian_compat, slq, start_vector, trace_difference)
from harness.analysis.objective import PenaltySet, batch_objective, penalty_tensor
from tasks._workload import (OBJECTIVE_PARAMS, cached_batches, unit_penalty_set,
                             unit_weight_decay)
from harness.engine.params import Param
from harness.engine.registry import Task, expand_axis, register_task
from harness.engine.units import WorkUnit
from tasks._workload import (CHECKPOINT_PARAM, MODEL_PARAMS, check_model_and_data,
                              unit_model_and_data)

QUANTITIES = ("eigenvalues", "trace", "density")
EACH_BATCH = -1
#: `hvp_method: auto` keeps gradient graphs (`retained`) for operators up to this many samples
#: (per shard); above it, `double_backward` (nothing kept between products).
RETAIN_MAX_SAMPLES = 1024


def _check_compute(value: list) -> list[str]:
    bad = [v for v in value if v not in QUANTITIES]
    if bad or not value:
        return [f"compute: {bad or 'empty'}; allowed: any of {', '.join(QUANTITIES)}"]
    return [] if len(set(value)) == len(value) else ["compute: repeated entries"]


PARAMS = MODEL_PARAMS + (CHECKPOINT_PARAM,) + OBJECTIVE_PARAMS + (
    Param("scope", str, "minibatch", "minibatch: the Hessian of one minibatch per unit (the "
          "paper's); full: of all num_samples in one unit, batches weighted by size",
          choices=("minibatch", "full")),
    Param("batch", int, EACH_BATCH, "minibatch index into the fixed batches; -1: one unit per "
          "minibatch (scope minibatch) or all of them (scope full)", min=-1),
    Param("compute", list, ["eigenvalues"], f"any of {', '.join(QUANTITIES)}",
          check=_check_compute),
    Param("solver", str, "lanczos", "lanczos: ours; pyhessian: PyHessian's eigenvalues() "
          "(power iteration, magnitude only) / trace() / density()",
          choices=("lanczos", "pyhessian")),
    Param("top_k", int, 5, "eigenvalues per end", min=1),
    Param("which", str, "magnitude", "magnitude: the top_k of largest |λ| (the paper's); both: "
          "top_k largest and top_k smallest; largest; smallest", choices=WHICH),
    Param("start_vector", str, "random", "lanczos top-k start vector: random (Gaussian) or "
          "gradient (random + the gradient: leans into the top eigenspace but can return the "
          "6th eigenvalue as the 5th, measured; sharded runs use random); it is also the "
          "vector of the HVP check",
          choices=("gradient", "random")),
    Param("tol", float, 1e-3, "lanczos: error estimate min(r, r²/gap) ≤ tol·max|θ| (r: "
          "residual) for every wanted Ritz value; "
          "pyhessian: its relative change between iterations (eigenvalues and trace)",
          min=0.0, min_exclusive=True),
    Param("max_iter", int, 100, "lanczos: steps (= HVPs); pyhessian: iterations per eigenvalue",
          min=1),
    Param("lanczos_vectors", int, 0, "lanczos: n-vectors the solver keeps on the device (thick "
          "restart when full); 0: 2·wanted + 14 (24 for top_k 5; wanted = top_k, or 2·top_k "
          "with which both)", min=0),
    Param("eigenvectors", bool, False, "write the eigenvectors to the unit's artifacts "
          "(eigenvectors.safetensors)"),
    Param("trace_probes", int, 100, "Hutchinson probes (pyhessian: at most)", min=2),
    Param("probe_batch", int, 1, "Hutchinson probes per batched (vmap-ed) product", min=1),
    Param("density_iter", int, 100, "SLQ Lanczos steps per start", min=1),
    Param("density_starts", int, 1, "SLQ starts (PyHessian's n_v)", min=1),
    Param("density_bins", int, 1000, "grid points of the broadened density", min=2),
    Param("sigma_squared", float, 1e-5, "Gaussian broadening variance (× max(1, grid width))",
          min=0.0, min_exclusive=True),
    Param("hvp_method", str, "auto", f"auto: retained up to {RETAIN_MAX_SAMPLES} samples per "
          "operator (the fastest measured), double_backward above (keeps nothing)",
          choices=("auto",) + HVP_METHODS),
    Param("shards", int, 1, "scope full: Ray actors the products are data-parallel over", min=1),
    Param("shard_num_cpus", float, 1.0, "CPUs per shard actor", min=0.0),
    Param("shard_num_gpus", float, 0.0, "GPUs per shard actor", min=0.0),
)

OUTPUT = pa.schema([
    pa.field("quantity", pa.string()),       # eigenvalue | trace | trace_nll | density | slq_node
    pa.field("end", pa.string()),            # eigenvalue: magnitude | largest | smallest
    pa.field("rank", pa.int64()),            # eigenvalue: 0 = most extreme; slq_node: index
    pa.field("start", pa.int64()),           # slq_node: SLQ start; else -1
    pa.field("value", pa.float64()),         # λ, tr(H), grid point or node
    pa.field("density", pa.float64()),       # ρ(λ) or node weight; else null
    pa.field("error", pa.float64()),         # eigenvalue: residual; trace: standard error
    pa.field("converged", pa.bool_()),       # null where no convergence test applies
    pa.field("hvps", pa.int64()),            # HVPs of this quantity's solve
    pa.field("seconds", pa.float64()),       # wall time of this quantity's solve
    pa.field("setup_seconds", pa.float64()),  # graph build + HVP check (pyhessian: its __init__)
    pa.field("loss", pa.float64()),          # the objective at the unit's batches
    pa.field("weight_decay_used", pa.float64()),
    pa.field("penalty_set_used", pa.string()),  # the rule that chose the penalized tensors
    pa.field("penalty_numel", pa.int64()),   # scalars the penalty covers (sharded: null)
    pa.field("n_params", pa.int64()),
    pa.field("n_samples", pa.int64()),
    pa.field("hvp_method_used", pa.string()),
    pa.field("hvp_check", pa.float64()),     # relative difference of two HVPs of one vector
    pa.field("explicit_attention", pa.int64()),  # attention modules run unfused
    pa.field("eigenvector_file", pa.string()),
])


# --------------------------------------------------------------------------- objective


def objective_loss(model: nn.Module, batch: Batch, weight_decay: float, penalty: str,
                   names: tuple[str, ...] | None = None) -> torch.Tensor:
    """The training objective of one (images, soft targets, labels) batch."""
    return batch_objective(model, batch[0], batch[1], weight_decay, penalty, names)


def penalty_loss(model: nn.Module, batch: Batch, weight_decay: float, penalty: str,
                 names: tuple[str, ...] | None = None) -> torch.Tensor:
    """The objective's penalty term alone (the batch does not enter): `trace_nll` subtracts
    its Hessian."""
    return weight_decay * penalty_tensor(model, penalty, names)


def penalty_operator(model: nn.Module, batches: list[Batch], p: dict[str, Any], wd: float,
                     covered: PenaltySet) -> HessianOperator:
    """The Hessian of the penalty term alone on `model` (one batch, weight 1: it does not
    enter), by double backward (nothing kept): what `trace_nll` subtracts per probe."""
    return batch_free_operator(model, batches[0], penalty_objective(p, wd, covered))


def penalty_objective(p: dict[str, Any], wd: float, covered: PenaltySet) -> Any:
    """The unit's penalty term as a loss function of (model, batch)."""
    return functools.partial(penalty_loss, weight_decay=wd, penalty=p["penalty"],
                             names=covered.names)


def load_objective(p: dict[str, Any], ctx: UnitContext
                   ) -> tuple[nn.Module, list[Batch], Any, float, PenaltySet]:
    """The unit's model (eval mode), its fixed batches, the loss, weight decay, penalty set."""
    model, data = unit_model_and_data(ctx, p)
    wd = unit_weight_decay(ctx, p)
    covered = unit_penalty_set(ctx, p, model)
    batches = cached_batches(ctx, data, p)
    return model, batches, functools.partial(objective_loss, weight_decay=wd,
                                             penalty=p["penalty"], names=covered.names), wd, covered


def unit_batches(p: dict[str, Any], batches: list[Batch]) -> list[Batch]:
    """The batches a unit's Hessian is taken over."""
    if p["scope"] == "full":
        return list(batches)
    if p["batch"] >= len(batches):
        raise ValueError(f"batch {p['batch']} lies past the fixed batches: the split holds "
                         f"{sum(len(b[0]) for b in batches)} of num_samples {p['num_samples']} "
                         f"({len(batches)} batches of {p['batch_size']}); lower num_samples")
    return [batches[p["batch"]]]


def shard_objective(p: dict[str, Any], shard: int, shards: int, device: torch.device
                    ) -> tuple[nn.Module, list[Batch], Any, list[float], Any]:
    """Builder of a shard actor (large-batch mode): loads what the unit loads, where it runs;
    the last item is the penalty term alone (`ShardedHessian.penalty_operator`, `trace_nll`).

    The actor serves this unit only, so the unit's float32 precision is set for its
    process and not restored.
    """
    from harness.analysis.hessian_parallel import shard_batches
    from harness.engine.context import set_float32_precision

    set_float32_precision(p["precision"])
    ctx = UnitContext(device=device, cache=WorkerCache(4), seed=p["seed"], unit_id="0")
    model, batches, loss_fn, wd, covered = load_objective(p, ctx)
    mine, weights = shard_batches(batches, shard, shards)
    return model, mine, loss_fn, weights, penalty_objective(p, wd, covered)


def sharded_penalty_rule(p: dict[str, Any], ctx: UnitContext) -> str:
    """The penalty set's rule where the unit holds no model (large-batch mode): from the sidecar."""
    from harness.analysis.objective import penalty_set_rule
    from tasks._workload import checkpoint_meta

    return penalty_set_rule(p["penalty_set"], checkpoint_meta(ctx, p.get("checkpoint", "")))


def resolve_method(requested: str, num_samples: int) -> str:
    """`auto`: `retained` while the kept graphs stay small, else `double_backward`.

    Not timed per worker: on a shared machine a few timed products pick the wrong
    method as often as not, and the ranking is the same everywhere — a retained
    product skips the forward and the first backward that every fresh method
    repeats (benchmarks/bench_hessian.py measures all three each run).
    """
    if requested != "auto":
        return requested
    return "retained" if num_samples <= RETAIN_MAX_SAMPLES else "double_backward"


# --------------------------------------------------------------------------- rows


def _row(quantity: str, value: float, **extra: Any) -> dict[str, Any]:
    row = {"quantity": quantity, "end": "", "rank": -1, "start": -1, "value": float(value),
           "density": None, "error": None, "converged": None, "hvps": 0, "seconds": 0.0}
    row.update(extra)
    return row


def _eigen_rows(values: np.ndarray, residuals: np.ndarray, converged: np.ndarray,
                ends: list[str], ranks: list[int], hvps: int, seconds: float
                ) -> list[dict[str, Any]]:
    return [_row("eigenvalue", v, end=e, rank=int(r), error=float(res), converged=bool(c),
                 hvps=hvps, seconds=seconds)
            for v, res, c, e, r in zip(values, residuals, converged, ends, ranks)]


def _density_rows(nodes: list[np.ndarray], weights: list[np.ndarray], p: dict[str, Any],
                  hvps: int, seconds: float) -> list[dict[str, Any]]:
    grid, dens = broaden(nodes, weights, p["density_bins"], p["sigma_squared"])
    rows = [_row("density", g, density=float(d), hvps=hvps, seconds=seconds)
            for g, d in zip(grid, dens)]
    for s, (theta, w) in enumerate(zip(nodes, weights)):
        rows += [_row("slq_node", t, density=float(wi), rank=i, start=s, hvps=hvps,
                      seconds=seconds) for i, (t, wi) in enumerate(zip(theta, w))]
    return rows


def _save_vectors(ctx: UnitContext, values: np.ndarray, vectors: torch.Tensor,
                  names: list[str], shapes: list[tuple[int, ...]]) -> str:
    """eigenvectors.safetensors beside the rows: rows of `vectors` in `param_names` order."""
    from safetensors.torch import save

    from harness.fileio import write_bytes

    path = ctx.artifact("eigenvectors.safetensors")
    meta = {"param_names": json.dumps(names), "param_shapes": json.dumps(shapes)}
    write_bytes(path, save({"eigenvalues": torch.from_numpy(np.asarray(values, np.float64)),
                             "vectors": vectors.detach().cpu().contiguous()}, metadata=meta))
    return ctx.stored_path(path)


def _generator(ctx: UnitContext, device: torch.device, offset: int) -> torch.Generator:
    """Probe / start-vector generator, seeded from the unit id (the same on every re-run)."""
    return torch.Generator(device=device).manual_seed(int(ctx.rng.integers(2 ** 62)) + offset)


def checked_start(p: dict[str, Any], ctx: UnitContext, op: Any
                  ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(v0, H v0, check): the top-k solve's start vector — Gaussian, plus the gradient with
    `start_vector: gradient` where the operator has one — and its product, checked against a
    fresh product (the HVP check of every unit); Lanczos reuses H v0 as its first step."""
    direction = (op.gradient() if p["start_vector"] == "gradient" and hasattr(op, "gradient")
                 else None)
    v0 = start_vector(op.n, _generator(ctx, op.device, 1), op.dtype, op.device, direction)
    hv0, check = checked_product(op, v0)
    return v0, hv0, check


def _run_lanczos(p: dict[str, Any], ctx: UnitContext, op: Any, names: list[str],
                 shapes: list[tuple[int, ...]], v0: torch.Tensor, hv0: torch.Tensor,
                 penalty_op: Any = None) -> tuple[list[dict[str, Any]], str]:
    """Our solvers on `op`; `penalty_op` (the penalty's Hessian, on op's device and dtype):
    the same probes through it give the `trace_nll` row."""
    rows: list[dict[str, Any]] = []
    path = ""
    if "eigenvalues" in p["compute"]:
        before = op.hvps - 1  # H v0 came with the check
        eig = lanczos_eigs(op.matvec, op.n, k=p["top_k"], which=p["which"], tol=p["tol"],
                           max_iter=p["max_iter"], generator=_generator(ctx, op.device, 1),
                           dtype=op.dtype, device=op.device, vectors=p["eigenvectors"],
                           v0=v0, first_product=hv0,
                           max_vectors=p["lanczos_vectors"] or None)
        rows += _eigen_rows(eig.values, eig.residuals, eig.converged, eig.end, eig.rank,
                            op.hvps - before, eig.seconds)
        if p["eigenvectors"]:
            path = _save_vectors(ctx, eig.values, eig.vectors, names, shapes)
    if "trace" in p["compute"]:
        before = op.hvps
        seed = _generator(ctx, op.device, 2).initial_seed()
        tr = hutchinson_trace(op, p["trace_probes"],
                              torch.Generator(device=op.device).manual_seed(seed),
                              batch=p["probe_batch"])
        rows.append(_row("trace", tr.value, error=tr.se, converged=tr.converged,
                         hvps=op.hvps - before, seconds=tr.seconds))
        if penalty_op is not None:  # the same probes through the penalty's Hessian
            pen = hutchinson_trace(penalty_op, tr.probes,
                                   torch.Generator(device=op.device).manual_seed(seed),
                                   batch=p["probe_batch"])
            nll = trace_difference(tr, pen)
            rows.append(_row("trace_nll", nll.value, error=nll.se, converged=nll.converged,
                             hvps=op.hvps - before, seconds=nll.seconds))
    if "density" in p["compute"]:
        before = op.hvps
        q = slq(op, p["density_starts"], p["density_iter"], _generator(ctx, op.device, 3))
        rows += _density_rows(q.nodes, q.weights, p, op.hvps - before, q.seconds)
    return rows, path


def pyhessian_trace(ph: Any, probes: int, tol: float, penalty_op: HessianOperator | None = None
                    ) -> tuple[TraceEstimate, TraceEstimate | None]:
    """PyHessian's trace() as a TraceEstimate and, given the penalty's operator, the trace of
    the NLL alone on PyHessian's very probes (None without one).

    trace() draws each probe from torch's global RNG — per parameter tensor
    `randint_like(p, high=2, device=ph.device)`, zeros set to −1 — and nothing else draws
    from it between probes (the products of an eval-mode objective are deterministic). So
    the global state is saved before trace() and restored afterwards inside
    `torch.random.fork_rng` to redraw the same probes one at a time for vᵀ H_penalty v;
    the fork leaves the caller's stream where trace() left it (density() draws as before).
    `converged`: PyHessian stopped on its tolerance before `probes`.
    """
    cuda = ph.device == "cuda"
    cpu_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if cuda else None
    started = time.perf_counter()
    samples = np.asarray(ph.trace(maxIter=probes, tol=tol), dtype=np.float64)
    total = TraceEstimate.from_samples(samples, time.perf_counter() - started,
                                       len(samples) < probes)
    if penalty_op is None:
        return total, None
    started = time.perf_counter()
    quad = []
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if cuda else []):
        torch.set_rng_state(cpu_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)
        for _ in range(len(samples)):  # as pyhessian.hessian.trace draws them
            v = [torch.randint_like(t, high=2, device=ph.device) for t in ph.params]
            for v_i in v:
                v_i[v_i == 0] = -1
            flat = torch.cat([t.reshape(-1) for t in v]).to(penalty_op.device, penalty_op.dtype)
            if flat.numel() != penalty_op.n:
                raise RuntimeError(f"PyHessian's probes have {flat.numel()} entries, the "
                                   f"penalty's operator {penalty_op.n}")
            hv = penalty_op.matvec(flat)
            quad.append(float((hv.to(torch.float64) * flat.to(torch.float64)).sum()))
    part = TraceEstimate.from_samples(quad, time.perf_counter() - started, None)
    return total, trace_difference(total, part)


def _run_pyhessian(p: dict[str, Any], ctx: UnitContext, op: HessianOperator,
                   batches: list[Batch], penalty_op: HessianOperator | None = None
                   ) -> tuple[list[dict[str, Any]], float, str]:
    """PyHessian's own methods on the same objective; residuals checked with our operator;
    `penalty_op`: PyHessian's trace probes through it give the `trace_nll` row."""
    model = op.model
    wrapper = PyHessianObjective(model, batches, op.loss_fn)
    torch.manual_seed(int(ctx.rng.integers(2 ** 62)) + 4)  # PyHessian draws from the global RNG
    rows: list[dict[str, Any]] = []
    path = ""
    with pyhessian_compat() as counter:
        started = time.perf_counter()
        ph = wrapper.pyhessian()
        setup = time.perf_counter() - started
        try:
            if "eigenvalues" in p["compute"]:
                counter["hvps"], started = 0, time.perf_counter()
                values, vectors = ph.eigenvalues(maxIter=p["max_iter"], tol=p["tol"],
                                                 top_n=p["top_k"])
                seconds, hvps = time.perf_counter() - started, counter["hvps"]
                flat = torch.stack([op.flat.flatten([t.detach() for t in v]) for v in vectors])
                vals = np.asarray(values, dtype=np.float64)
                res = np.array([float((op.matvec(y) - lam * y).norm())
                                for lam, y in zip(vals, flat)])
                scale = float(np.abs(vals).max())
                order = np.argsort(-np.abs(vals), kind="stable")
                rows += _eigen_rows(vals[order], res[order], res[order] <= p["tol"] * scale,
                                    ["magnitude"] * len(vals), list(range(len(vals))), hvps,
                                    seconds)
                if p["eigenvectors"]:
                    path = _save_vectors(ctx, vals[order], flat[order], op.flat.names,
                                         [tuple(s) for s in op.flat.shapes])
            if "trace" in p["compute"]:
                counter["hvps"] = 0
                tr, nll = pyhessian_trace(ph, p["trace_probes"], p["tol"], penalty_op)
                rows.append(_row("trace", tr.value, error=tr.se, converged=tr.converged,
                                 hvps=counter["hvps"], seconds=tr.seconds))
                if nll is not None:
                    rows.append(_row("trace_nll", nll.value, error=nll.se,
                                     converged=nll.converged, hvps=counter["hvps"],
                                     seconds=nll.seconds))
            if "density" in p["compute"]:
                counter["hvps"], started = 0, time.perf_counter()
                nodes, weights = ph.density(iter=p["density_iter"], n_v=p["density_starts"])
                seconds = time.perf_counter() - started
                rows += _density_rows([np.asarray(t, np.float64) for t in nodes],
                                      [np.asarray(w, np.float64) for w in weights], p,
                                      counter["hvps"], seconds)
        finally:
            del ph
            for param in model.parameters():  # PyHessian leaves a graph in every .grad
                param.grad = None
    return rows, setup, path


def run(unit: WorkUnit, ctx: UnitContext) -> list[dict[str, Any]]:
    p = unit.params
    if p["scope"] == "minibatch" and p["batch"] < 0:
        raise ValueError("batch -1 is expanded into one unit per minibatch; a unit needs an index")
    if p["shards"] > 1:
        return _run_sharded(p, ctx)
    model, all_batches, loss_fn, wd, covered = load_objective(p, ctx)
    batches = unit_batches(p, all_batches)
    with explicit_attention(model) as attention:
        method = resolve_method(p["hvp_method"], sum(len(b[0]) for b in batches))
        op = HessianOperator(model, batches, loss_fn, method=method)
        try:
            started = time.perf_counter()
            v0, hv0, check = checked_start(p, ctx, op)
            setup = time.perf_counter() - started
            loss = op.loss()
            penalty_op = (penalty_operator(model, batches, p, wd, covered)
                          if "trace" in p["compute"] else None)
            if p["solver"] == "pyhessian":
                op.release()  # PyHessian builds its own graph
                rows, setup, path = _run_pyhessian(p, ctx, op, batches, penalty_op)
                method = "pyhessian"
            else:
                rows, path = _run_lanczos(p, ctx, op, op.flat.names,
                                          [tuple(s) for s in op.flat.shapes], v0, hv0,
                                          penalty_op)
        finally:
            op.release()
    common = {"setup_seconds": setup, "loss": loss, "weight_decay_used": wd,
              "penalty_set_used": covered.rule, "penalty_numel": covered.numel(model),
              "n_params": op.n,
              "n_samples": op.num_samples, "hvp_method_used": method, "hvp_check": check,
              "explicit_attention": attention, "eigenvector_file": path}
    return [{**r, **common} for r in rows]


def _run_sharded(p: dict[str, Any], ctx: UnitContext) -> list[dict[str, Any]]:
    """Large-batch mode: the same solvers on a Hessian data-parallel over shard actors.

    The unit itself loads nothing but the checkpoint's sidecar: the shards load the
    model and their batches where they run; the Lanczos basis lives on ctx.device. The
    penalty's Hessian (`trace_nll`) is applied on shard 0's model copy.
    """
    from harness.analysis.hessian_parallel import ShardedHessian

    method = resolve_method(p["hvp_method"], math.ceil(p["num_samples"] / p["shards"]))
    builder = functools.partial(shard_objective, p)
    with ShardedHessian(builder, p["shards"], method, p["shard_num_cpus"],
                        p["shard_num_gpus"], device=ctx.device) as op:
        started = time.perf_counter()
        v0, hv0, check = checked_start(p, ctx, op)
        setup = time.perf_counter() - started
        penalty_op = op.penalty_operator() if "trace" in p["compute"] else None
        rows, path = _run_lanczos(p, ctx, op, op.names, op.shapes, v0, hv0, penalty_op)
        common = {"setup_seconds": setup, "loss": op.loss(),
                  "weight_decay_used": unit_weight_decay(ctx, p),
                  "penalty_set_used": sharded_penalty_rule(p, ctx), "penalty_numel": None,
                  "n_params": op.n, "n_samples": op.num_samples,
                  "hvp_method_used": f"{method} x{p['shards']} shards", "hvp_check": check,
                  "explicit_attention": op.attention_modules, "eigenvector_file": path}
    return [{**r, **common} for r in rows]


# --------------------------------------------------------------------------- spec


def check(params: dict[str, Any]) -> list[str]:
    errors = check_model_and_data(params)
    if params["scope"] == "full" and params["batch"] != EACH_BATCH:
        errors.append("batch: scope full takes every batch; leave batch at -1")
    if params["solver"] == "pyhessian":
        if params["which"] != "magnitude":
            errors.append("which: PyHessian's power iteration finds the largest |λ| only; use "
                          "which magnitude (or solver lanczos)")
        if params["shards"] > 1:
            errors.append("shards: the data-parallel mode runs solver lanczos only")
    wanted = params["top_k"] * (2 if params["which"] == "both" else 1)
    if 0 < params["lanczos_vectors"] < wanted + 4:
        errors.append(f"lanczos_vectors: {params['lanczos_vectors']} is too small for "
                      f"{wanted} wanted eigenvalues; give at least {wanted + 4}, or 0 for "
                      f"the default {default_vectors(params['top_k'], params['which'])}")
    if params["shards"] > 1 and params["scope"] != "full":
        errors.append("shards: data-parallel products are for scope full (one minibatch is one "
                      "shard)")
    batches = math.ceil(params["num_samples"] / params["batch_size"])
    if params["shards"] > batches:
        errors.append(f"shards: {params['shards']} shards need at least as many batches; "
                      f"num_samples {params['num_samples']} / batch_size {params['batch_size']} "
                      f"make {batches}: lower shards or batch_size")
    return errors


def expand(combo: dict[str, Any]) -> list[dict[str, Any]]:
    """scope minibatch with batch -1 -> one unit per minibatch of the fixed batches.

    The count is ceil(num_samples / batch_size): a split smaller than num_samples
    leaves the last units without a batch, and they fail saying so.
    """
    if combo["scope"] == "full":
        return [combo]
    count = math.ceil(combo["num_samples"] / combo["batch_size"])
    return expand_axis(combo, "batch", EACH_BATCH, range(count))


register_task(Task(
    name="hessian",
    description="Hessian eigenvalues (Lanczos / PyHessian), trace and spectral density of the "
                "training objective, per minibatch or over all batches",
    params=PARAMS,
    output_schema=OUTPUT,
    run=run,
    expand=expand,
    check=check,
))
