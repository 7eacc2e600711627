"""The measured objective: fixed augmented batches, norm terms, weight decay resolution."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.data.datasets import load_dataset
from harness.analysis.objective import (batch_objective, fixed_batches, measure, norm_terms,
                               resolve_weight_decay)


def test_fixed_batches_are_deterministic_and_augmented():
    data = load_dataset("digits", "train")
    a = fixed_batches(data, 100, 32, "paper", {}, seed=3)
    b = fixed_batches(data, 100, 32, "paper", {}, seed=3)
    assert [len(y) for _, _, y in a] == [32, 32, 32, 4]
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    clean = fixed_batches(data, 100, 32, "none", {}, seed=3)
    assert not torch.equal(a[0][0], clean[0][0])  # augmented
    assert torch.equal(clean[0][1].argmax(1), clean[0][2])  # one-hot targets without smoothing
    other = fixed_batches(data, 100, 32, "paper", {}, seed=4)
    assert not torch.equal(a[0][2], other[0][2])  # another subset


def test_norm_terms_by_hand():
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, -4.0]]))
        model.bias.fill_(-2.0)
    terms = norm_terms(model)
    assert terms["l1"] == pytest.approx(3 + 4 + 2)
    assert terms["l2"] == pytest.approx(5 + 2)  # per-tensor norms, not squared
    assert terms["half_sq"] == pytest.approx(0.5 * (9 + 16 + 4))


def test_weight_decay_resolution():
    assert resolve_weight_decay({"weight_decay": 0.1}, {"recipe": {"weight_decay": 0.05}}) == 0.1
    assert resolve_weight_decay({"weight_decay": -1.0}, {"recipe": {"weight_decay": 0.3}}) == 0.3
    assert resolve_weight_decay({"weight_decay": -1.0}, None) == 0.05


def test_batch_objective_matches_measure_plus_penalty():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    data = load_dataset("digits", "test")
    batches = fixed_batches(data, 64, 64, "none", {}, seed=0)
    x, soft, _ = batches[0]
    with torch.no_grad():
        loss = float(batch_objective(model, x, soft, 0.05, "l2"))
    expected = measure(model, batches, torch.device("cpu"))["nll"] + 0.05 * norm_terms(model)["l2"]
    assert loss == pytest.approx(expected, rel=1e-6)
