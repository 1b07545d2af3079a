"""Compressed variants on digits, the KD loss by hand, and the Pareto front on fixed points."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workbench.suites.efficiency.compression import (
    distill,
    kd_loss,
    pareto_front,
    prunable_weights,
    prune_magnitude,
    quantize_dynamic_int8,
)
from workbench.suites.efficiency.functional import model_size_bytes, weight_density
from workbench.errors import ConfigError
from workbench.torch_utils import ModuleState

# Stated tolerances (accuracy points on the 359 digits test images, seed 0).
INT8_TOL = 0.01
UNSTRUCTURED_50_TOL = 0.03
STRUCTURED_30_TOL = 0.03


@pytest.fixture(scope="module")
def digits_model():
    from workbench.data.builtin import load_digits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    data = load_digits(seed=0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        perm = torch.randperm(len(data.train), generator=g)
        for i in range(0, len(perm), 128):
            idx = perm[i : i + 128]
            loss = F.cross_entropy(model(data.train.x[idx]), data.train.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    model.zero_grad(set_to_none=True)
    yield model, data
    torch.set_num_threads(before)


def _accuracy(model: nn.Module, data) -> float:
    with torch.no_grad():
        return float((model(data.test.x).argmax(1) == data.test.y).float().mean())


def test_int8_and_pruned_variants_keep_digits_accuracy(digits_model):
    model, data = digits_model
    before = ModuleState.capture(model)
    base = _accuracy(model, data)
    assert base > 0.93
    q, warns = quantize_dynamic_int8(model)
    assert abs(_accuracy(q, data) - base) <= INT8_TOL
    assert any("deprecated" in w for w in warns)  # torch 2.13 still warns; we capture it
    assert model_size_bytes(q)["total"] < model_size_bytes(model)["total"] / 2  # int8 weights
    u50 = prune_magnitude(model, 0.5, structured=False)
    assert abs(_accuracy(u50, data) - base) <= UNSTRUCTURED_50_TOL
    s30 = prune_magnitude(model, 0.3, structured=True)
    assert abs(_accuracy(s30, data) - base) <= STRUCTURED_30_TOL
    # the tolerance is not vacuous: 90% structured pruning breaks the model
    assert _accuracy(prune_magnitude(model, 0.9, structured=True), data) < base - 0.3
    assert before.diff(model) == []  # variants are copies


def test_unstructured_pruning_hits_the_global_sparsity(digits_model):
    model, _ = digits_model
    pruned = prune_magnitude(model, 0.7, structured=False)
    weights = [getattr(m, n) for m, n in prunable_weights(pruned, structured=False)]
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == round(0.7 * total)
    assert weight_density(pruned, weights) == pytest.approx(1 - zeros / total)
    # global magnitude: every kept weight is at least as large as every pruned one
    orig = torch.cat([getattr(m, n).detach().flatten() for m, n in prunable_weights(model, structured=False)])
    kept = torch.cat([w.detach().flatten() for w in weights]) != 0
    assert orig[kept].abs().min() >= orig[~kept].abs().max()
    assert not any(n.endswith("_orig") for n, _ in pruned.named_parameters())  # made permanent


def test_structured_pruning_zeroes_whole_rows_and_keeps_the_output_layer(digits_model):
    model, _ = digits_model
    pruned = prune_magnitude(model, 0.5, structured=True)
    layers = [m for m in pruned.modules() if isinstance(m, nn.Linear)]
    for m in layers[:-1]:
        dead = (m.weight == 0).all(dim=1)
        assert int(dead.sum()) == round(0.5 * m.out_features)
        assert torch.all(m.bias[dead] == 0)
    assert torch.equal(layers[-1].weight, [m for m in model.modules() if isinstance(m, nn.Linear)][-1].weight)


def test_tied_weights_are_not_pruned():
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.mid = nn.Linear(4, 4)
            self.out = nn.Linear(4, 10, bias=False)
            self.out.weight = self.emb.weight

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return self.out(self.mid(self.emb(idx)))

    model = Tied()
    targets = prunable_weights(model, structured=False)
    assert [id(m) for m, _ in targets] == [id(model.mid)]
    pruned = prune_magnitude(model, 0.5, structured=False)
    assert pruned.out.weight is pruned.emb.weight  # still tied
    assert model_size_bytes(pruned)["total"] == model_size_bytes(model)["total"] == (40 + 16 + 4) * 4


def test_bad_sparsity_is_rejected(digits_model):
    model, _ = digits_model
    with pytest.raises(ConfigError):
        prune_magnitude(model, 1.0, structured=False)
    with pytest.raises(TypeError):
        prune_magnitude(model, "half", structured=False)


def test_kd_loss_matches_the_formula_by_hand():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    y = torch.randint(0, 5, (6,), generator=g)
    T, alpha = 3.0, 0.7
    p_t = torch.softmax(t / T, dim=1)
    p_s = torch.softmax(s / T, dim=1)
    kl = (p_t * (p_t.log() - p_s.log())).sum(dim=1).mean()
    ce = -torch.log_softmax(s, dim=1)[torch.arange(6), y].mean()
    expected = alpha * T * T * kl + (1 - alpha) * ce
    assert kd_loss(s, t, y, temperature=T, alpha=alpha).item() == pytest.approx(expected.item(), rel=1e-5)
    assert kd_loss(s, t, y, alpha=0.0).item() == pytest.approx(ce.item(), rel=1e-5)
    assert kd_loss(t, t, y, alpha=1.0).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ConfigError):
        kd_loss(s, t[:, :4], y)
    with pytest.raises(ConfigError):
        kd_loss(s, t, y, temperature=0.0)


def test_distillation_trains_a_smaller_student(digits_model):
    model, data = digits_model
    before = ModuleState.capture(model)
    torch.manual_seed(1)
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    chance = _accuracy(student, data)
    distill(model, student, data.train.x, data.train.y, epochs=8, seed=0, lr=1e-2)
    assert not student.training
    assert _accuracy(student, data) > max(0.85, chance + 0.5)
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in model.parameters()) / 5
    assert before.diff(model) == []


FIXED = np.array([
    [0.95, 10.0, 100.0],  # 0: best metric
    [0.90, 5.0, 100.0],   # 1: faster
    [0.90, 6.0, 100.0],   # 2: dominated by 1
    [0.80, 5.0, 50.0],    # 3: smaller
    [0.80, 5.0, 50.0],    # 4: equal to 3: both stay
    [0.70, 20.0, 200.0],  # 5: dominated by everything
    [np.nan, 1.0, 1.0],   # 6: NaN metric: never on the front
])


def test_pareto_front_on_fixed_points():
    mask = pareto_front(FIXED, ["max", "min", "min"])
    assert mask.tolist() == [True, True, False, True, True, False, False]
    assert pareto_front(FIXED[:, :1], ["max"]).tolist() == [True, False, False, False, False, False, False]
    assert pareto_front(-FIXED[:6, :1], ["min"]).tolist() == [True, False, False, False, False, False]


def test_pareto_front_against_brute_force():
    rng = np.random.default_rng(0)
    pts = rng.integers(0, 5, size=(40, 3)).astype(float)  # many ties
    dirs = ["max", "min", "max"]
    sign = np.array([1, -1, 1])
    q = pts * sign
    expected = [
        not any(all(q[j] >= q[i]) and any(q[j] > q[i]) for j in range(len(q)) if j != i) for i in range(len(q))
    ]
    assert pareto_front(pts, dirs).tolist() == expected
    for i, j in itertools.combinations(np.flatnonzero(expected), 2):  # no front point dominates another
        assert not (all(q[i] >= q[j]) and any(q[i] > q[j]))


def test_pareto_front_bad_input():
    with pytest.raises(ConfigError):
        pareto_front(FIXED, ["max", "min"])
    with pytest.raises(ConfigError):
        pareto_front(FIXED, ["max", "min", "down"])
    with pytest.raises(ConfigError):
        pareto_front([1.0, 2.0], ["max"])
