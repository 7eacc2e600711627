"""The measured objective: fixed augmented batches, norm terms, weight decay resolution."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.analysis.objective import (batch_objective, fixed_batches, measure, norm_terms,
                                        penalty_set, resolve_weight_decay)
from harness.analysis.training import Recipe, decay_names, make_optimizer
from harness.data.datasets import load_dataset
from harness.models.registry import build_model


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


# --------------------------------------------------------------------------- penalty set


class _TokenNet(nn.Module):
    """A tiny model with every kind of tensor: a position table, norm affine, weight, bias."""

    def __init__(self) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn(2, 3, dtype=torch.float64))
        self.norm = nn.LayerNorm(3).double()
        self.fc = nn.Linear(3, 2).double()
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.normal_()

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x + self.pos_embed)).mean(1)


def test_decay_sets_by_rule():
    model = _TokenNet()
    assert decay_names(model, "timm") == ["fc.weight"]
    assert decay_names(model, "ndim2") == ["pos_embed", "fc.weight"]
    assert decay_names(model, "all") == ["pos_embed", "norm.weight", "norm.bias", "fc.weight",
                                         "fc.bias"]
    with pytest.raises(ValueError, match="decay_set: unknown rule 'most'; allowed: timm"):
        decay_names(model, "most")


@pytest.mark.parametrize("name,args", [
    ("vit_ti", {"embed_dim": 48, "depth": 2, "num_heads": 3, "patch_size": 4}),
    ("pit_ti", {}),
    ("swin_ti", {"embed_dim": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]}),
    ("resnet18", {"width": 8, "layers": [1, 1, 1, 1]}),
])
def test_training_decays_what_timms_optimizer_factory_decays(name, args):
    """The train task's groups equal timm's create_optimizer_v2 (the library we claim to match)."""
    import timm.optim

    model = build_model(name, 10, **args)
    ours = make_optimizer(model, Recipe(weight_decay=0.05))
    theirs = timm.optim.create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05)

    def decayed(opt: torch.optim.Optimizer) -> set[int]:
        return {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}

    assert decayed(ours) == decayed(theirs)
    names = dict(model.named_parameters())
    assert decayed(ours) == {id(names[n]) for n in decay_names(model, "timm")}
    excluded = set(names) - set(decay_names(model, "timm"))
    assert not any(n.endswith(("pos_embed", "cls_token", "relative_position_bias_table"))
                   for n in decay_names(model, "timm"))
    assert any(names[n].ndim >= 2 for n in excluded) == (name != "resnet18")


def test_alternet_keeps_its_relative_position_tables_out_of_decay():
    model = build_model("alternet", 10, width=8, depth=[1, 1, 1, 2], msas=[0, 0, 0, 1],
                        heads=[1, 1, 1, 1], head_dim=8)
    tables = [n for n, _ in model.named_parameters() if "relative_position" in n]
    assert tables and not set(tables) & set(decay_names(model, "timm"))
    assert set(tables) <= set(decay_names(model, "ndim2"))


def test_penalty_set_resolution_from_the_sidecar():
    model = _TokenNet()
    fresh = penalty_set(model, "trained", None)
    assert (fresh.rule, fresh.names) == ("timm", ("fc.weight",)) and fresh.numel(model) == 6
    legacy = penalty_set(model, "trained", {"recipe": {"weight_decay": 0.05}})  # no rule recorded
    assert (legacy.rule, legacy.names) == ("ndim2", ("pos_embed", "fc.weight"))
    recorded = penalty_set(model, "trained", {"recipe": {"decay_set": "timm"},
                                              "decayed_params": ["fc.weight", "norm.weight"]})
    assert (recorded.rule, recorded.names) == ("timm", ("fc.weight", "norm.weight"))
    assert penalty_set(model, "all", {"decayed_params": ["fc.weight"]}).names == \
        tuple(decay_names(model, "all"))  # a rule by name ignores the record
    with pytest.raises(ValueError, match=r"decayed_params name tensors the model lacks "
                                         r"\(\['blocks.0.w'\]\); pick a rule"):
        penalty_set(model, "trained", {"recipe": {}, "decayed_params": ["blocks.0.w"]})


def test_penalty_adds_weight_decay_only_on_the_decayed_directions_of_the_dense_hessian():
    """Hessian(NLL + wd·½Σ_decayed w²) − Hessian(NLL) = wd on the decayed entries, 0 elsewhere."""
    torch.manual_seed(0)
    model = _TokenNet()
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    soft = torch.softmax(torch.randn(4, 2, dtype=torch.float64), 1)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])
    covered = penalty_set(model, "trained", None)

    def objective(flat: torch.Tensor, wd: float) -> torch.Tensor:
        params = dict(zip(names, torch.split(flat, [s.numel() for s in shapes])))
        params = {n: v.reshape(s) for (n, v), s in zip(params.items(), shapes)}
        with torch.nn.utils.stateless._reparametrize_module(model, params):
            return batch_objective(model, x, soft, wd, "half_sq", covered.names)

    h = torch.autograd.functional.hessian(lambda f: objective(f, 0.05), flat0)
    h_nll = torch.autograd.functional.hessian(lambda f: objective(f, 0.0), flat0)
    mask = torch.cat([torch.full((p.numel(),), float(n == "fc.weight"), dtype=torch.float64)
                      for n, p in model.named_parameters()])
    assert torch.allclose(h - h_nll, torch.diag(0.05 * mask), atol=1e-12)
    # the values by hand: ½‖W‖² and ‖W‖ of the one decayed tensor
    w = model.fc.weight.detach()
    assert norm_terms(model, covered.names)["half_sq"] == pytest.approx(0.5 * float((w * w).sum()))
    nll = float(objective(flat0, 0.0))
    with torch.no_grad():
        assert float(batch_objective(model, x, soft, 0.05, "l2", covered.names)) == \
            pytest.approx(nll + 0.05 * float(w.norm()), rel=1e-12)

