"""Hessian numerics against exact answers (dense Hessians of tiny float64 models), PyHessian,
curvlinops; the data-parallel operator; HVPs on the zoo's transformers; the task end to end."""

from __future__ import annotations

import functools
from typing import Any
import time

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

import harness
from harness.data.augment import soft_targets
from harness.engine.executor import RunConfig, run_units
from harness.analysis.hessian import (HVP_METHODS, HessianOperator, PyHessianObjective, _Objective,
                             DOT64_CHUNK, broaden, check_hvp, checked_product, dot64, error_estimates,
                             explicit_attention, gaussian, norm64, rows_dot64,
                             hutchinson_trace, lanczos, lanczos_eigs, nep_ape, pyhessian_compat,
                             rademacher,
                             restart_generator, slq, start_vector, trace_difference)
from harness.models.registry import build_model
from harness.analysis.objective import batch_objective, penalty_tensor
from harness.engine.spec import SpecError, validate

from conftest import SMALL_RESNET, SMALL_VIT

F64 = torch.float64


def tiny_loss(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The harness objective (NLL + 0.05 · Σ‖w‖₂ per tensor, the paper's l2 form)."""
    return batch_objective(model, batch[0], batch[1], 0.05, "l2")


def tiny_problem(seed: int = 0) -> tuple[nn.Module, list[tuple[torch.Tensor, ...]]]:
    """A float64 MLP with a norm layer on 3x4x4 images, two batches of unequal size.

    Every parameter is random (the l2 penalty has no Hessian at a zero tensor).
    """
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 4), nn.LayerNorm(4), nn.Tanh(),
                          nn.Linear(4, 5)).to(F64).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.6)
    x = torch.randn(20, 3, 4, 4, dtype=F64)
    soft = soft_targets(torch.arange(20) % 5, 5, smoothing=0.1).to(F64)
    return model, [(x[:12], soft[:12]), (x[12:], soft[12:])]


@functools.lru_cache(maxsize=None)
def dense_hessian(seed: int = 0, batches_used: int = 2) -> np.ndarray:
    """torch.autograd.functional.hessian of the size-weighted objective over the batches."""
    model, batches = tiny_problem(seed)
    batches = batches[:batches_used]
    obj = _Objective(model, tiny_loss)
    names = ["model." + k for k, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    sizes = [len(b[0]) for b in batches]

    def f(flat: torch.Tensor) -> torch.Tensor:
        params = dict(zip(names, (t.view(s) for t, s in
                                  zip(torch.split(flat, [s.numel() for s in shapes]), shapes))))
        return sum(n / sum(sizes) * functional_call(obj, params, (b,))
                   for n, b in zip(sizes, batches))

    h = torch.autograd.functional.hessian(f, flat0, vectorize=True,
                                          outer_jacobian_strategy="forward-mode")
    return h.detach().numpy()


def dense_hessian_one_batch() -> np.ndarray:
    return dense_hessian(0, 1)


def tiny_penalty(model: nn.Module, _batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """tiny_loss's penalty term alone (it does not look at the batch)."""
    return 0.05 * penalty_tensor(model, "l2")


def dense_l2_penalty_hessian(model: nn.Module) -> np.ndarray:
    """The Hessian of tiny_penalty by hand: 0.05 (I − ŵŵᵀ) / ‖w‖ per tensor, block diagonal."""
    blocks = []
    for p in model.parameters():
        w = p.detach().reshape(-1).numpy()
        norm = np.linalg.norm(w)
        blocks.append(0.05 * (np.eye(len(w)) - np.outer(w, w) / norm ** 2) / norm)
    out = np.zeros((sum(len(b) for b in blocks),) * 2)
    at = 0
    for b in blocks:
        out[at:at + len(b), at:at + len(b)] = b
        at += len(b)
    return out


def rademacher_rows(n: int, seed: int, probes: int, batch: int) -> np.ndarray:
    """hutchinson_trace's probes: `batch` rows per draw from a CPU generator seeded `seed`."""
    gen = torch.Generator().manual_seed(seed)
    rows = [rademacher(n, gen, F64, torch.device("cpu"), rows=min(batch, probes - i))
            for i in range(0, probes, batch)]
    return torch.cat(rows).numpy()


def rel(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# --------------------------------------------------------------------------- exact answers


@pytest.mark.parametrize("method", HVP_METHODS)
def test_hvp_equals_dense_hessian_times_v(method):
    model, batches = tiny_problem()
    h = dense_hessian()
    # symmetric to the loss's precision (soft_cross_entropy takes log_softmax in float32)
    assert rel(h, h.T) < 1e-7
    op = HessianOperator(model, batches, tiny_loss, method=method)
    gen = torch.Generator().manual_seed(1)
    v = torch.randn(op.n, generator=gen, dtype=F64)
    assert rel(op.matvec(v), h @ v.numpy()) < 1e-6
    rows = torch.randn(3, op.n, generator=gen, dtype=F64)  # batched (vmap-ed) products
    assert rel(op.matmat(rows), rows.numpy() @ h) < 1e-6
    assert op.hvps == 4
    assert check_hvp(op, gen) < 1e-6


def test_lanczos_both_ends_match_eigvalsh():
    model, batches = tiny_problem()
    exact = np.linalg.eigvalsh(dense_hessian())
    op = HessianOperator(model, batches, tiny_loss)
    both = lanczos_eigs(op.matvec, op.n, k=5, which="both", tol=1e-8, max_iter=op.n,
                        dtype=F64, vectors=True)
    top = both.values[[e == "largest" for e in both.end]]
    bottom = both.values[[e == "smallest" for e in both.end]]
    assert np.all(np.abs(top - exact[::-1][:5]) <= 1e-4 * np.abs(exact[::-1][:5]))
    assert np.all(np.abs(bottom - exact[:5]) <= 1e-4 * np.abs(exact[:5]))
    assert exact[0] < 0 and both.converged.all() and both.steps < op.n
    # Ritz vectors are eigenvectors: ‖Hy − θy‖ within the reported residual bound
    h = torch.from_numpy(dense_hessian())
    for theta, y, r in zip(both.values, both.vectors, both.residuals):
        assert float((h @ y - theta * y).norm()) <= 2 * r + 1e-7 * float(h.norm())
    mag = lanczos_eigs(op.matvec, op.n, k=5, which="magnitude", tol=1e-8, max_iter=op.n,
                       dtype=F64)
    want = exact[np.argsort(-np.abs(exact))[:5]]
    assert np.all(np.abs(mag.values - want) <= 1e-4 * np.abs(want))


def test_float64_dot_is_exact_across_chunks():
    """dot64 / norm64 sum cache-sized float64 chunks on the CPU: equal to the float64 dot of the
    whole vector (and far closer to it than a float32 dot) on a vector of several chunks."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3 * DOT64_CHUNK + 17, generator=g)
    b = torch.randn(3 * DOT64_CHUNK + 17, generator=g) + 0.1
    exact = float(torch.dot(a.double(), b.double()))
    assert dot64(a, b) == pytest.approx(exact, rel=1e-13, abs=1e-9)
    assert norm64(a) == pytest.approx(float(a.double().norm()), rel=1e-13)


def test_gram_schmidt_coefficients_are_summed_in_float64():
    """rows_dot64 equals the float64 product on rows whose entries share a sign over long
    stretches (as Lanczos vectors' do), where a float32 matrix-vector sum drifts."""
    g = torch.Generator().manual_seed(0)
    n = 3 * (1 << 16) + 5
    rows = torch.randn(6, n, generator=g)
    rows[:, : n // 2] += 0.3
    w = torch.randn(n, generator=g) + 0.05 * rows[3]
    exact = rows.double() @ w.double()
    got = rows_dot64(rows, w)
    assert got.dtype == torch.float64
    assert float((got - exact).abs().max()) <= 1e-12 * float(w.double().norm())


def test_float32_lanczos_reaches_float32_accuracy_on_a_million_parameters():
    """The Ritz values of a float32 run on n = 10⁶ (diagonal operator, smooth start: the
    Lanczos vectors' entries are correlated) reach 1e-7 · λmax, as a float64 basis does; with
    Gram–Schmidt sums in float32 the same run stalled at 4.4e-7."""
    n = 1_000_000
    d = torch.linspace(0.0, 1.0, n) ** 3
    d[-5:] = torch.tensor([1.05, 1.1, 1.2, 1.35, 1.5])
    v0 = 1.0 + 0.01 * torch.randn(n, generator=torch.Generator().manual_seed(0))
    res = lanczos_eigs(lambda v: d * v, n, k=5, which="largest", tol=1e-8, max_iter=200, v0=v0)
    truth = np.array([1.5, 1.35, 1.2, 1.1, 1.05], dtype=np.float32).astype(np.float64)
    assert np.max(np.abs(np.sort(res.values)[::-1] - truth)) <= 1e-7 * 1.5


def test_lanczos_ritz_vectors_stay_orthogonal_with_one_pass_where_it_suffices():
    """The second Gram–Schmidt pass runs only after cancellation (DGKS): the Ritz vectors of a
    well-separated spectrum still come back orthonormal to float32 precision."""
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(400, 400, generator=g, dtype=torch.float64))
    d = torch.cat([torch.linspace(-1.0, 1.0, 395, dtype=torch.float64),
                   torch.tensor([1.5, 2.0, 2.5, 3.0, 3.5], dtype=torch.float64)])
    h = ((q * d) @ q.T).float()
    res = lanczos_eigs(lambda v: h @ v, 400, k=5, which="magnitude", tol=1e-6, vectors=True,
                       max_iter=400, generator=torch.Generator().manual_seed(2))
    assert res.converged.all()
    gram = res.vectors.double() @ res.vectors.double().T
    assert torch.allclose(gram, torch.eye(5, dtype=torch.float64), atol=1e-5)
    assert np.allclose(np.sort(res.values), np.sort(d.numpy()[-5:]), atol=1e-4)


def test_lanczos_finds_repeated_eigenvalues_after_a_breakdown():
    """An operator with few distinct eigenvalues exhausts its Krylov space; the restart
    continues orthogonally and finds every copy (PyHessian's deflation would too, slowly)."""
    d = torch.tensor([5.0, 5.0, 5.0, 3.0, 1.0, 1.0, -2.0, -2.0] + [0.5] * 12, dtype=F64)
    res = lanczos_eigs(lambda v: d * v, len(d), k=5, which="largest", tol=1e-10,
                       max_iter=len(d), dtype=F64)
    assert np.allclose(res.values, [5, 5, 5, 3, 1], atol=1e-8)


def test_a_repeated_top_eigenvalue_is_found_with_every_copy():
    """Issue 14 §1: diag([5, 5, 5] + 20 distinct values in [0.1, 4]). One start vector's Krylov
    space holds one copy of 5; once it is invariant to the tolerance its Ritz pairs are locked
    and Lanczos restarts orthogonally until the space is exhausted. The reported residuals are
    the true ones (checked against ‖Hy − θy‖ of the returned vectors), not a breakdown's 0."""
    d = torch.tensor([5.0, 5.0, 5.0] + np.linspace(0.1, 4.0, 20).tolist(), dtype=F64)
    res = lanczos_eigs(lambda v: d * v, len(d), k=5, which="largest", tol=1e-8, dtype=F64,
                       vectors=True)
    exact = np.sort(d.numpy())[::-1][:5]
    assert np.allclose(res.values, exact, atol=1e-8) and res.converged.all()
    assert np.allclose(exact, [5, 5, 5, 4.0, 3.7947368], atol=1e-7)
    for theta, y, r in zip(res.values, res.vectors, res.residuals):
        assert float((d * y - theta * y).norm()) <= 2 * r + 1e-13
    # three orthonormal eigenvectors of 5, not one found three times
    assert float((res.vectors @ res.vectors.T - torch.eye(5, dtype=F64)).abs().max()) < 1e-10


def test_locking_stops_when_the_vector_budget_is_all_locked():
    """One eigenvalue far above the rest: tol · max|θ| covers the whole remaining spectrum, so
    every restarted space converges at once and its pairs are locked; when the budget holds no
    room for another restart the locked pairs are the answer (this raised IndexError, first seen
    on the demo's ViT Hessians). Within tol · λmax they are the top-5."""
    d = torch.tensor([1000.0] + np.linspace(0.01, 1.0, 400).tolist(), dtype=F64)
    for which in ("largest", "magnitude"):
        res = lanczos_eigs(lambda v: d * v, len(d), k=5, which=which, tol=1e-3, dtype=F64,
                           generator=torch.Generator().manual_seed(0))
        exact = np.sort(d.numpy())[::-1][:5]
        assert res.values[0] == pytest.approx(1000.0, rel=1e-3) and res.converged.all()
        assert np.all(np.abs(np.sort(res.values)[::-1] - exact) <= 1e-3 * 1000.0)
        assert res.state_vectors <= 24


def test_restart_vectors_come_from_their_own_stream():
    """A caller that seeds the start vector's generator and the solver's alike (the task does)
    must not get the start vector back as the restart vector."""
    gen = torch.Generator().manual_seed(7)
    again = restart_generator(torch.Generator().manual_seed(7))
    assert again.initial_seed() != gen.initial_seed()
    assert not torch.equal(torch.randn(8, generator=gen), torch.randn(8, generator=again))
    d = torch.tensor([3.0, 3.0, 2.0, 1.0, 1.0, 0.5], dtype=F64)
    v0 = gaussian(len(d), torch.Generator().manual_seed(7), F64, torch.device("cpu"))
    res = lanczos_eigs(lambda v: d * v, len(d), k=3, which="largest", tol=1e-10, dtype=F64,
                       v0=v0, generator=torch.Generator().manual_seed(7))
    assert np.allclose(res.values, [3, 3, 2], atol=1e-9)


def test_thick_restart_bounds_the_vectors_and_matches_a_full_basis():
    """A budget of 12 vectors for the top-3 of a clustered 400-dim spectrum: the solver restarts
    thick several times, holds 12 vectors, and finds what a full-basis run and eigvalsh find,
    within tol; `both` keeps both ends in its restarts."""
    gen = torch.Generator().manual_seed(0)
    d = torch.cat([torch.tensor([3.0, 2.9, 2.85, -2.7]),
                   2.6 * torch.rand(396, generator=gen, dtype=F64) - 1.3]).to(F64)
    exact = np.sort(d.numpy())
    for which, want in (("largest", exact[::-1][:3]), ("magnitude", exact[::-1][:3]),
                        ("both", np.concatenate([exact[::-1][:3], exact[:3]]))):
        small = lanczos_eigs(lambda v: d * v, len(d), k=3, which=which, tol=1e-6,
                             max_iter=400, dtype=F64, max_vectors=12 if which != "both" else 16)
        full = lanczos_eigs(lambda v: d * v, len(d), k=3, which=which, tol=1e-6, max_iter=400,
                            dtype=F64, max_vectors=len(d) + 1)
        assert small.state_vectors == (12 if which != "both" else 16)
        assert small.steps > small.state_vectors  # it did restart
        assert small.converged.all() and full.converged.all()
        assert np.allclose(small.values, want, atol=1e-5 * 3), which
        assert np.allclose(small.values, full.values, atol=1e-5 * 3), which
    with pytest.raises(ValueError, match="max_vectors 6 is too small"):
        lanczos_eigs(lambda v: d * v, len(d), k=3, max_vectors=6, dtype=F64)


def test_error_estimates_use_the_gap_to_the_nearest_ritz_value():
    theta = np.array([1.0, 2.0, 2.5, 10.0])
    res = np.array([0.1, 0.1, 0.2, 1e-3])
    # gaps 1, 0.5, 0.5, 7.5: min(r, r²/gap) = 0.01, 0.02, 0.08, 1.33e-7
    assert np.allclose(error_estimates(theta, res), [0.01, 0.02, 0.08, 1e-6 / 7.5])
    # a repeated Ritz value with nothing outside its cluster: the residual stands
    assert np.allclose(error_estimates(np.array([3.0, 3.0]), np.array([0.1, 0.2])), [0.1, 0.2])
    # two copies of 5 (intervals overlap) are one cluster: Σr² over its distance 1 to the 4
    est = error_estimates(np.array([5.0, 5.0 + 1e-12, 4.0]), np.array([1e-7, 2e-7, 1e-9]))
    assert np.allclose(est, [5e-14, 5e-14, 1e-18], rtol=1e-6)


def test_gap_aware_stop_meets_tol_and_a_start_vector_hides_nothing():
    """A clustered spectrum (like a fresh network's): at tol 1e-3 the gap-aware rule stops
    before the plain residual rule would, every reported value is within tol·λ_max of the
    truth, and a start vector that is exactly the top eigenvector still finds the rest."""
    gen = torch.Generator().manual_seed(0)
    d = torch.cat([torch.tensor([3.0, 2.9, 2.85, 2.8, 2.7]),
                   2.6 * torch.rand(400, generator=gen, dtype=F64)]).to(F64)
    exact = np.sort(d.numpy())[::-1][:5]
    e0 = torch.zeros(len(d), dtype=F64)
    e0[0] = 1.0
    for start in (None, e0):
        res = lanczos_eigs(lambda v: d * v, len(d), k=5, which="largest", tol=1e-3,
                           max_iter=300, dtype=F64, start=start,
                           generator=torch.Generator().manual_seed(1))
        assert res.converged.all()
        assert np.all(np.abs(res.values - exact) <= 1e-3 * exact[0])
        tri = lanczos(lambda v: d * v, gaussian(len(d), torch.Generator().manual_seed(1), F64,
                                                torch.device("cpu")), res.steps)
        theta, s = tri.eig()
        top = np.argsort(-theta)[:5]
        plain = np.abs(tri.last_beta * s[-1, top]) <= 1e-3 * theta.max()
        if start is None:
            assert not plain.all()  # the residual rule alone would have gone on


def test_no_misconvergence_from_a_start_that_leans_away_from_an_eigenvalue():
    """A start leaning into the eigenvectors of 10, 9, 8, 7 and 6 but not 6.5 (as the gradient
    leans unevenly into the top eigenspace): tested after 12 steps (the old default) the
    space holds five converged true eigenpairs and 6.5 has not emerged — 6.0 is returned as
    the 5th, "converged". One default basis (23 steps) before any test finds 6.5, and so
    does a Gaussian start, for every seed."""
    n = 2000
    d = torch.cat([torch.tensor([10.0, 9.0, 8.0, 7.0, 6.5, 6.0], dtype=F64),
                   5 * torch.rand(n - 6, generator=torch.Generator().manual_seed(0), dtype=F64)])
    lean = torch.zeros(n, dtype=F64)
    lean[[0, 1, 2, 3, 5]] = 1.0
    truth = np.array([10.0, 9.0, 8.0, 7.0, 6.5])
    for seed in range(5):
        def solve(direction: torch.Tensor | None, **kw: int) -> Any:
            v0 = start_vector(n, torch.Generator().manual_seed(seed), F64, direction=direction)
            return lanczos_eigs(lambda v: d * v, n, k=5, which="largest", tol=1e-3,
                                max_iter=300, v0=v0, dtype=F64, **kw)
        early = solve(lean, min_iter=12)
        assert early.converged.all() and abs(early.values[-1] - 6.0) <= 1e-3 * 10  # the trap
        for res in (solve(lean), solve(None)):
            assert res.steps >= 23 and res.converged.all()
            assert np.all(np.abs(res.values - truth) <= 1e-3 * 10), (seed, res.values)


def test_float32_residuals_bound_the_true_error():
    """A float32 run on a dense 3000-dim matrix: each reported residual bounds the distance of
    its value to the float32 matrix's eigenvalue (float64 eigvalsh). The projection alone
    claimed ~1e-19 for values ~1e-6 off; the rounding floor steps · eps · max|θ| holds."""
    n = 3000
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    d = torch.cat([torch.tensor([100.0, 90.0, 80.0, 70.0, 60.0], dtype=F64),
                   10 * torch.rand(n - 5, generator=g, dtype=F64)])
    h = ((q * d) @ q.T).float()
    truth = np.sort(np.linalg.eigvalsh(h.double().numpy()))[::-1][:5]
    res = lanczos_eigs(lambda v: h @ v, n, k=5, which="largest", tol=1e-6, max_iter=300,
                       generator=torch.Generator().manual_seed(1))
    err = np.abs(res.values - truth)
    assert np.all(err <= res.residuals), (err, res.residuals)
    assert err.max() > 1e-7  # float32 rounding is really there to bound
    assert np.all(res.residuals <= 1e-5 * 100)  # and the floor stays far below any usual tol


def test_the_checked_product_is_the_first_lanczos_step():
    """The HVP check's product of the start vector serves as Lanczos's first step: the same
    eigenvalues as a run that computes it again, one product fewer."""
    model, batches = tiny_problem()
    op = HessianOperator(model, batches, tiny_loss)
    v0 = start_vector(op.n, torch.Generator().manual_seed(4), F64, direction=op.gradient())
    assert abs(float(v0.norm()) - 1) < 1e-12 and float(v0 @ op.gradient()) > 0
    hv0, diff = checked_product(op, v0)
    assert diff < 1e-6 and op.hvps == 2  # the operator's product and a fresh one
    reused = lanczos_eigs(op.matvec, op.n, k=3, tol=1e-8, max_iter=op.n, dtype=F64, v0=v0,
                          first_product=hv0)
    used = op.hvps - 2
    again = lanczos_eigs(op.matvec, op.n, k=3, tol=1e-8, max_iter=op.n, dtype=F64, v0=v0)
    assert op.hvps - 2 - used == used + 1 == again.steps == reused.steps
    assert np.allclose(reused.values, again.values, rtol=1e-10)


def test_hutchinson_trace_within_three_standard_errors():
    model, batches = tiny_problem()
    exact = float(np.trace(dense_hessian()))
    op = HessianOperator(model, batches, tiny_loss)
    est = hutchinson_trace(op, probes=200, generator=torch.Generator().manual_seed(4), batch=8)
    assert est.probes == 200 and est.se > 0
    assert abs(est.value - exact) <= 3 * est.se


def test_trace_of_the_nll_alone_takes_the_penalty_out_per_probe():
    """tr(H) − tr(H_penalty) on the same probes against the dense trace minus the penalty's by
    hand: 0.05 · Σ_t (d_t − 1) / ‖w_t‖ for the l2 penalty Σ‖w_t‖ ((I − ŵŵᵀ)/‖w‖ per tensor)."""
    model, batches = tiny_problem()
    pen_trace = 0.05 * sum((p.numel() - 1) / float(p.detach().norm())
                          for p in model.parameters())
    exact = float(np.trace(dense_hessian())) - pen_trace
    op = HessianOperator(model, batches, tiny_loss)
    pen_op = HessianOperator(model, batches[:1], lambda m, b: 0.05 * penalty_tensor(m, "l2"),
                             "double_backward", weights=[1.0])
    full = hutchinson_trace(op, probes=200, generator=torch.Generator().manual_seed(4), batch=8)
    pen = hutchinson_trace(pen_op, probes=200, generator=torch.Generator().manual_seed(4),
                           batch=8)
    nll = trace_difference(full, pen)
    assert abs(pen.value - pen_trace) <= 3 * pen.se
    assert abs(nll.value - exact) <= 3 * nll.se and nll.se < full.se
    assert full.converged is None and nll.probes == 200  # tol 0: no target, none claimed
    with pytest.raises(ValueError, match="same probes"):
        trace_difference(full, hutchinson_trace(pen_op, probes=20))


def test_slq_density_integrates_to_one_and_its_mean_is_trace_over_n():
    model, batches = tiny_problem()
    h = dense_hessian()
    n = h.shape[0]
    op = HessianOperator(model, batches, tiny_loss)
    q = slq(op, starts=30, steps=40, generator=torch.Generator().manual_seed(5))
    grid, dens = broaden(q.nodes, q.weights, num_bins=20000, normalize=False)
    assert np.trapezoid(dens, grid) == pytest.approx(1.0, abs=2e-3)
    assert np.trapezoid(grid * dens, grid) == pytest.approx(q.mean(), rel=1e-3, abs=1e-6)
    # Gauss quadrature is exact for λ: its mean is vᵀHv / n of the same Rademacher probes,
    # i.e. Hutchinson on those probes / n ...
    same = hutchinson_trace(op, probes=30, generator=torch.Generator().manual_seed(5))
    assert q.mean() == pytest.approx(same.value / n, rel=1e-8)
    # ... which is within 3 standard errors of tr(H) / n
    assert abs(q.mean() - np.trace(h) / n) <= 3 * same.se / n
    grid, dens = broaden(q.nodes, q.weights, num_bins=500)  # PyHessian's normalisation
    assert np.sum(dens) * (grid[1] - grid[0]) == pytest.approx(1.0)


# --------------------------------------------------------------------------- other tools


PYHESSIAN_GRAPH_WARNING = "ignore:Using backward\\(\\) with create_graph"  # PyHessian's own call


@pytest.mark.filterwarnings(PYHESSIAN_GRAPH_WARNING)
def test_eigenvalues_and_trace_agree_with_pyhessian():
    model, batches = tiny_problem()
    op = HessianOperator(model, batches[:1], tiny_loss)
    ours = lanczos_eigs(op.matvec, op.n, k=3, which="magnitude", tol=1e-8, max_iter=op.n,
                        dtype=F64)
    wrapper = PyHessianObjective(model, batches[:1], tiny_loss)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(F64)  # PyHessian draws its vectors in the default dtype
    try:
        torch.manual_seed(0)
        with pyhessian_compat() as counter:
            ph = wrapper.pyhessian()
            values, _ = ph.eigenvalues(maxIter=2000, tol=1e-9, top_n=3)
            samples = ph.trace(maxIter=300, tol=0.0)
            nodes, weights = ph.density(iter=20, n_v=2)
    finally:
        torch.set_default_dtype(previous)
        for p in model.parameters():
            p.grad = None
    assert counter["hvps"] > 0
    assert np.allclose(np.sort(values), np.sort(ours.values), rtol=1e-3)
    ph_mean, ph_se = np.mean(samples), np.std(samples, ddof=1) / np.sqrt(len(samples))
    ours_tr = hutchinson_trace(op, probes=300, generator=torch.Generator().manual_seed(6))
    assert abs(ph_mean - ours_tr.value) <= 3 * np.hypot(ph_se, ours_tr.se)
    # PyHessian's density() (torch.eig shimmed): Ritz nodes lie inside the spectrum
    nodes = np.concatenate([np.asarray(t) for t in nodes])
    exact1 = np.linalg.eigvalsh(dense_hessian_one_batch())
    assert exact1[0] - 1e-6 <= nodes.min() and nodes.max() <= exact1[-1] + 1e-6
    # the same objective both ways: PyHessian's product equals ours on a single batch
    v = torch.randn(op.n, dtype=F64)
    params = [p for p in model.parameters()]
    parts = [t.view_as(p) for t, p in zip(torch.split(v, [p.numel() for p in params]), params)]
    g = torch.autograd.grad(wrapper(wrapper.index_batches[0][0]), params, create_graph=True)
    ph_hv = torch.cat([t.reshape(-1) for t in torch.autograd.grad(g, params, parts)])
    assert rel(ph_hv, op.matvec(v)) < 1e-10


@pytest.mark.filterwarnings(PYHESSIAN_GRAPH_WARNING)
def test_pyhessian_trace_of_the_nll_alone_redraws_its_own_probes():
    """solver pyhessian's trace_nll: PyHessian's trace() over both batches (its dataloader
    path), the penalty taken out on PyHessian's own probes — per probe exactly vᵀ H_nll v
    of the dense Hessians (probes redrawn here by PyHessian's recipe), and its mean within
    3 standard errors of tr(H_nll)."""
    from tasks.hessian import pyhessian_trace

    model, batches = tiny_problem()
    h = dense_hessian()
    h_pen = dense_l2_penalty_hessian(model)
    h_nll = h - h_pen
    pen_op = HessianOperator(model, batches[:1], tiny_penalty, "double_backward",
                             weights=[1.0])
    wrapper = PyHessianObjective(model, batches, tiny_loss)
    torch.manual_seed(11)
    try:
        with pyhessian_compat():
            ph = wrapper.pyhessian()
            tr, nll = pyhessian_trace(ph, 150, 0.0, pen_op)
            alone, none = pyhessian_trace(ph, 3, 0.0)
    finally:
        for p in model.parameters():
            p.grad = None
    after = torch.rand(4)  # the caller's RNG stream goes on from where trace() left it
    torch.manual_seed(11)
    probes = []
    for _ in range(153):  # pyhessian.hessian.trace: randint_like(p, high=2), 0 -> -1
        probes.append(torch.cat([(2 * torch.randint_like(p, high=2) - 1).reshape(-1)
                                 for p in model.parameters()]).numpy())
    v = np.stack(probes)
    assert torch.equal(after, torch.rand(4))
    np.testing.assert_allclose(tr.samples, np.einsum("ij,jk,ik->i", v[:150], h, v[:150]),
                               rtol=1e-9)  # the reference draws PyHessian's probes
    np.testing.assert_allclose(alone.samples, np.einsum("ij,jk,ik->i", v[150:], h, v[150:]),
                               rtol=1e-9)
    exact_nll = np.einsum("ij,jk,ik->i", v[:150], h_nll, v[:150])
    np.testing.assert_allclose(nll.samples, exact_nll, rtol=1e-9, atol=1e-12)
    assert nll.value == pytest.approx(exact_nll.mean(), rel=1e-10)
    assert abs(nll.value - np.trace(h_nll)) <= 3 * nll.se
    # the penalty really is out: its trace (hand formula) separates the two by many errors
    pen = np.einsum("ij,jk,ik->i", v[:150], h_pen, v[:150])
    pen_trace = float(np.trace(h_pen))
    assert tr.value - nll.value == pytest.approx(pen.mean(), rel=1e-9)
    assert abs(pen.mean() - pen_trace) <= 3 * pen.std(ddof=1) / np.sqrt(150)
    assert pen_trace > 10 * nll.se and abs(tr.value - np.trace(h_nll)) > 10 * tr.se
    assert none is None and tr.probes == nll.probes == 150 and tr.converged is False


def test_hvp_agrees_with_curvlinops_on_a_conv_net():
    from curvlinops import HessianLinearOperator

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 5)).to(F64).eval()
    x = torch.randn(14, 3, 6, 6, dtype=F64)
    soft = soft_targets(torch.arange(14) % 5, 5, smoothing=0.1).to(F64)
    data = [(x[:9], soft[:9]), (x[9:], soft[9:])]
    params = list(model.parameters())
    theirs = HessianLinearOperator(model, nn.CrossEntropyLoss(reduction="mean"), params, data,
                                   check_deterministic=False)
    def nll(m: nn.Module, b: tuple[torch.Tensor, ...]) -> torch.Tensor:  # curvlinops: no penalty
        return batch_objective(m, b[0], b[1], 0.0, "l2")

    ours = HessianOperator(model, data, nll)
    v = torch.randn(ours.n, dtype=F64)
    out = theirs @ v
    assert rel(ours.matvec(v), out) < 1e-6


# --------------------------------------------------------------------------- guards


def test_hvp_check_catches_a_nondeterministic_objective_and_bad_models():
    model, batches = tiny_problem()

    def noisy(m: nn.Module, b: tuple[torch.Tensor, ...]) -> torch.Tensor:  # dropout left on
        return tiny_loss(m, (nn.functional.dropout(b[0], 0.3, training=True), b[1]))

    with pytest.raises(RuntimeError, match="not deterministic"):
        check_hvp(HessianOperator(model, batches, noisy), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="train mode"):
        HessianOperator(model.train(), batches, tiny_loss)
    model.eval()
    with torch.no_grad():
        model[1].bias.zero_()  # the l2 penalty Σ‖w‖ has no Hessian at a zero tensor
    with pytest.raises(FloatingPointError, match="1.bias"):
        check_hvp(HessianOperator(model, batches, tiny_loss), torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name,args", [
    ("vit_ti", SMALL_VIT["model_args"]),
    ("swin_ti", {"embed_dim": 12, "depths": [1, 2, 2, 1], "num_heads": [1, 2, 2, 4]}),
])
def test_hvps_run_on_zoo_transformers_with_fused_attention_off(name, args, sdpa_calls):
    torch.manual_seed(0)
    model = build_model(name, 10, **args).eval()  # fused_attn left at its default
    x = torch.randn(4, 3, 32, 32)
    batch = (x, soft_targets(torch.arange(4), 10))

    def loss(m: nn.Module, b: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return batch_objective(m, b[0], b[1], 0.05, "half_sq")

    flags = [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")]
    with explicit_attention(model) as count:
        assert count == len(flags) > 0
        op = HessianOperator(model, [batch], loss)
        assert check_hvp(op, torch.Generator().manual_seed(0)) < 1e-4
        v = torch.randn(op.n, generator=torch.Generator().manual_seed(1))
        a = op.matvec(v)
        b = HessianOperator(model, [batch], loss, method="forward_over_reverse").matvec(v)
        assert torch.isfinite(a).all() and rel(a, b) < 1e-3
    assert not sdpa_calls  # no fused kernel ran
    assert [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")] == flags


# --------------------------------------------------------------------------- the task


HESSIAN_COMMON = {"dataset": "digits", "num_samples": 48, "batch_size": 24,
                  "penalty": "half_sq", "hvp_method": "retained"}


def hessian_doc(**extra) -> dict:
    return {"name": "hs", "tasks": {"hessian": [{**SMALL_RESNET, **HESSIAN_COMMON, **extra}]}}


@pytest.mark.filterwarnings(PYHESSIAN_GRAPH_WARNING)
def test_task_rows_for_each_minibatch_with_both_solvers(tmp_path):
    doc = hessian_doc(solver=["lanczos", "pyhessian"],
                      compute=[["eigenvalues", "trace", "density"]], trace_probes=6,
                      density_iter=12, density_bins=64, max_iter=60)
    doc["tasks"]["hessian"].append({**SMALL_VIT, **HESSIAN_COMMON, "batch": 1,
                                    "which": "both", "top_k": 2, "eigenvectors": True})
    units = validate(doc).units()
    assert sorted(u.params["batch"] for u in units) == [0, 0, 1, 1, 1]  # batch -1 expanded
    summary = run_units(units, str(tmp_path), RunConfig(kind="local", device="cpu"))
    assert (summary.done, summary.failed) == (5, 0), summary.errors
    df = harness.load(str(tmp_path), task="hessian")
    eig = df[df.quantity == "eigenvalue"]
    res = eig[eig.model == "resnet18"]
    assert res.groupby(["solver", "batch"]).size().tolist() == [5, 5, 5, 5]
    assert (res["end"] == "magnitude").all() and res["hvps"].gt(0).all()
    ours = res[res.solver == "lanczos"]
    assert ours["converged"].all() and (ours["hvp_method_used"] == "retained").all()
    assert set(df[df.solver == "pyhessian"]["hvp_method_used"]) == {"pyhessian"}
    # the two solvers see the same objective: the largest |λ| agrees where PyHessian converged
    top = res[res["rank"] == 0].pivot(index="batch", columns="solver", values="value")
    assert np.allclose(top["pyhessian"], top["lanczos"], rtol=0.05)
    assert (df.loc[df.model == "resnet18", "explicit_attention"] == 0).all()
    vit = eig[eig.model == "vit_ti"]
    assert sorted(vit["end"]) == ["largest"] * 2 + ["smallest"] * 2
    assert (vit["explicit_attention"] == 2).all()
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / vit["eigenvector_file"].iloc[0]))  # rows: root-relative
    assert saved["vectors"].shape == (4, vit["n_params"].iloc[0])
    assert np.allclose(saved["eigenvalues"].numpy(), vit.sort_values(["end", "rank"])["value"])
    for (_, solver, batch), d in df[df.quantity == "density"].groupby(["model", "solver",
                                                                       "batch"]):
        assert np.sum(d["density"]) * np.diff(np.sort(d["value"]))[0] == pytest.approx(1.0)
    assert (df[df.quantity == "trace"]["error"] > 0).all()
    # the NLL's trace: the penalty's 0.05·numel (half_sq: 0.05·I on the penalized tensors,
    # exact per probe) taken out
    traces = df[df.quantity.isin(["trace", "trace_nll"])]
    both = traces.pivot(index=["model", "solver", "batch"], columns="quantity", values="value")
    assert len(both) == 4 and both.notna().all().all()  # both solvers' resnet units
    numel = traces.groupby(["model", "solver", "batch"])["penalty_numel"].first()
    assert (numel > 0).all()
    assert np.allclose(both["trace"] - both["trace_nll"], 0.05 * numel, rtol=1e-4)
    # no convergence test, no claim: trace (no target) and density rows are null
    assert df.loc[df.quantity.isin(["density", "slq_node"]), "converged"].isna().all()
    assert df.loc[(df.solver == "lanczos") & (df.quantity == "trace"), "converged"].isna().all()
    assert df["n_params"].gt(0).all() and df["loss"].gt(0).all()
    # a fresh model: the penalty covers timm's decay set (no biases, norm affine, pos_embed)
    assert df["penalty_set_used"].eq("timm").all() and df["precision"].eq("fp32").all()
    assert (df["penalty_numel"] < df["n_params"]).all() and df["penalty_numel"].gt(0).all()
    summary = nep_ape(ours["value"])
    assert 0.0 <= summary["nep"] <= 1.0 and summary["ape"] > 0 and summary["count"] == 10


def test_task_spec_errors():
    with pytest.raises(SpecError, match="norms.*allowed: any of eigenvalues"):
        validate(hessian_doc(compute=["norms"]))
    with pytest.raises(SpecError, match="largest .λ. only"):
        validate(hessian_doc(solver="pyhessian", which="both"))
    with pytest.raises(SpecError, match="scope full"):
        validate(hessian_doc(shards=2))
    with pytest.raises(SpecError, match="lanczos_vectors: 9 is too small .* at least 10"):
        validate(hessian_doc(lanczos_vectors=9, which="largest", top_k=6))


@pytest.mark.slow
def test_data_parallel_hvp_over_two_actors_equals_one(tmp_path, ray_session):
    from harness.analysis.hessian_parallel import ShardedHessian
    from tasks.hessian import shard_objective

    doc = hessian_doc(scope="full", num_samples=60, batch_size=16, augment="basic",
                      shard_num_cpus=0.5)
    (unit,) = validate(doc).units()
    builder = functools.partial(shard_objective, unit.params)
    model, batches, loss_fn, weights, penalty = builder(0, 1, torch.device("cpu"))
    local = HessianOperator(model, batches, loss_fn, weights=weights)
    assert [len(b[0]) for b in batches] == [16, 16, 16, 12]
    v = torch.randn(local.n, generator=torch.Generator().manual_seed(0))
    rows = torch.stack([v, -2 * v])
    with ShardedHessian(builder, 1, num_cpus=0.5) as one, \
            ShardedHessian(builder, 2, num_cpus=0.5) as two:
        assert (two.n, two.num_samples, one.num_samples) == (local.n, 60, 60)
        expected = one.matvec(v)
        assert rel(expected, local.matvec(v)) < 1e-5
        assert rel(two.matvec(v), expected) < 1e-5
        assert rel(two.matmat(rows), one.matmat(rows)) < 1e-5
        assert two.loss() == pytest.approx(local.loss(), rel=1e-6)
    # the task's large-batch mode: the same spectrum as the in-process operator
    local_eig = lanczos_eigs(local.matvec, local.n, k=5, tol=1e-4, max_iter=100)
    sharded = validate(hessian_doc(scope="full", num_samples=60, batch_size=16, augment="basic",
                                   shards=2, shard_num_cpus=0.5, tol=1e-4,
                                   compute=["eigenvalues", "trace"], trace_probes=4,
                                   probe_batch=2)).units()
    summary = run_units(sharded, str(tmp_path), RunConfig(kind="local", device="cpu"))
    assert (summary.done, summary.failed) == (1, 0), summary.errors
    df = harness.load(str(tmp_path), task="hessian")
    eig = df[df.quantity == "eigenvalue"].sort_values("rank")
    assert np.allclose(eig["value"], local_eig.values, rtol=1e-3)
    assert (df["hvp_method_used"] == "retained x2 shards").all() and (df["n_samples"] == 60).all()
    assert df.loc[df.quantity == "trace", "hvps"].item() == 4
    # the NLL's trace: half_sq's Hessian is 0.05·I on the penalized tensors, so exactly
    # 0.05 · their count per probe comes out (counted here on the local copy)
    names = set(penalty.keywords["names"])
    numel = sum(p.numel() for k, p in model.named_parameters() if k in names)
    assert 0 < numel < local.n
    value = df.set_index("quantity")["value"]
    assert value["trace"] - value["trace_nll"] == pytest.approx(0.05 * numel, rel=1e-4)


@pytest.mark.slow
def test_sharded_trace_of_the_nll_alone_against_the_dense_hessian(ray_session):
    """Sharded trace_nll: the objective's products over 2 shard actors, the penalty's on
    shard 0, on the same probes — per probe exactly vᵀ H_nll v of the dense Hessians, the
    mean within 3 standard errors of tr(H_nll), the penalty's trace separating it from
    tr(H)."""
    from harness.analysis.hessian_parallel import ShardedHessian

    def _tiny_shard_builder(shard, shards, device):  # a closure: pickled by value for Ray
        """tiny_problem's model and batches (float64; NLL + 0.05·Σ‖w‖) rebuilt in a shard
        actor, with the penalty term as the 5th item."""
        import torch
        from torch import nn

        from harness.analysis.hessian_parallel import shard_batches
        from harness.analysis.objective import batch_objective, penalty_tensor
        from harness.data.augment import soft_targets

        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(48, 4), nn.LayerNorm(4), nn.Tanh(),
                              nn.Linear(4, 5)).to(torch.float64).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.6)
        x = torch.randn(20, 3, 4, 4, dtype=torch.float64)
        soft = soft_targets(torch.arange(20) % 5, 5, smoothing=0.1).to(torch.float64)
        mine, weights = shard_batches([(x[:12], soft[:12]), (x[12:], soft[12:])], shard,
                                      shards)
        return (model, mine, lambda m, b: batch_objective(m, b[0], b[1], 0.05, "l2"),
                weights, lambda m, b: 0.05 * penalty_tensor(m, "l2"))

    def _without_penalty(shard, shards, device):
        return _tiny_shard_builder(shard, shards, device)[:4]

    model, batches = tiny_problem()  # the builder makes the same problem
    local_model, local_batches, *_ = _tiny_shard_builder(0, 1, torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), local_model.parameters()))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, local_batches))
    h, h_pen = dense_hessian(), dense_l2_penalty_hessian(model)
    with ShardedHessian(_tiny_shard_builder, 2, "retained", num_cpus=0.25) as op:
        pen = op.penalty_operator()
        assert (pen.n, pen.dtype, pen.device) == (op.n, F64, op.device)
        full = hutchinson_trace(op, 120, torch.Generator().manual_seed(4), batch=8)
        part = hutchinson_trace(pen, 120, torch.Generator().manual_seed(4), batch=8)
        v = torch.randn(op.n, dtype=F64)
        assert rel(pen.matvec(v), h_pen @ v.numpy()) < 1e-10
    nll = trace_difference(full, part)
    probes = rademacher_rows(len(h), 4, 120, 8)
    np.testing.assert_allclose(full.samples, np.einsum("ij,jk,ik->i", probes, h, probes),
                               rtol=1e-8)
    np.testing.assert_allclose(nll.samples,
                               np.einsum("ij,jk,ik->i", probes, h - h_pen, probes),
                               rtol=1e-8, atol=1e-12)
    assert abs(nll.value - np.trace(h - h_pen)) <= 3 * nll.se
    # the penalty really is out: what separates the two is its trace, well above the noise
    assert abs(part.value - np.trace(h_pen)) <= 3 * part.se
    assert np.trace(h_pen) > 10 * nll.se and abs(full.value - np.trace(h - h_pen)) > 10 * full.se
    with ShardedHessian(_without_penalty, 1, "retained", num_cpus=0.25) as bare:
        with pytest.raises(ValueError, match="no penalty term"):
            bare.penalty_operator()


@pytest.mark.slow
def test_sharded_hessian_cleans_up_and_names_too_many_shards(ray_session):
    from harness.analysis.hessian_parallel import ShardedHessian, shard_batches

    def loss(out, target):
        return torch.nn.functional.cross_entropy(out, target)

    def _disagreeing_builder(shard, shards, device):  # a closure: pickled by value for Ray
        """Shard 1 builds a wider model than shard 0: construction fails and cleans up."""
        batch = (torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
        return torch.nn.Linear(3, 2 + shard).eval(), [batch], loss, [0.5]

    def _one_batch_builder(shard, shards, device):
        mine, weights = shard_batches([(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))],
                                      shard, shards)
        return torch.nn.Linear(3, 2).eval(), mine, loss, weights

    def free_cpus() -> float:  # shard actors hold 0.25 CPU each while they live
        return ray_session.available_resources().get("CPU", 0)

    before = free_cpus()
    with pytest.raises(RuntimeError, match=r"disagree on the parameter count: \[8, 12\]"):
        ShardedHessian(_disagreeing_builder, 2, num_cpus=0.25)
    with pytest.raises(RuntimeError, match=r"shards=2 but the data make only 1 batch"):
        ShardedHessian(_one_batch_builder, 2, num_cpus=0.25)
    deadline = time.monotonic() + 30
    while free_cpus() < before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert free_cpus() >= before  # nothing leaked (a previous test's actors may free more)
    # and the sweep says so at validation, before any actor starts
    with pytest.raises(SpecError, match="shards: 4 shards need at least as many batches"):
        validate(hessian_doc(scope="full", num_samples=40, batch_size=16, shards=4))
