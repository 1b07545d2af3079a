"""Shapley values: exact enumeration against shap's Exact explainer and a plain subset loop,
closed forms on linear models, the Kernel SHAP sampler's guarantees, and shap's
KernelExplainer through our wrapper."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from workbench.suites.explain.shapley import (
    all_coalitions,
    check_groups,
    coalition_values,
    exact_shapley,
    kernel_shapley,
    sample_coalitions,
    shap_kernel_explainer,
    shapley_from_values,
    shapley_values,
)
from workbench.errors import ConfigError, DataError

M = 8


def _numpy_mlp(seed: int = 0):
    """Weights of a small tanh MLP with 8 inputs, shared by our code and the shap subprocess."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(M, 6)), rng.normal(size=6), rng.normal(size=6), float(rng.normal())


def _torch_f(params):
    w1, b1, w2, b2 = (torch.as_tensor(p, dtype=torch.float64) for p in params)
    return lambda z: torch.tanh(z @ w1 + b1) @ w2 + b2


def test_shapley_from_values_matches_plain_subset_loop():
    rng = np.random.default_rng(1)
    m = 5
    v = rng.normal(size=2**m)
    got = shapley_from_values(v)

    def val(s):  # value of a coalition given as a set of players
        return v[sum(1 << j for j in s)]

    for i in range(m):
        others = [j for j in range(m) if j != i]
        want = 0.0
        for k in range(m):
            for s in itertools.combinations(others, k):
                w = math.factorial(k) * math.factorial(m - k - 1) / math.factorial(m)
                want += w * (val(set(s) | {i}) - val(s))
        assert got[i] == pytest.approx(want, abs=1e-12)


def test_all_coalitions_bits_and_limits():
    c = all_coalitions(3)
    assert c.shape == (8, 3)
    assert c[5].tolist() == [True, False, True]  # 5 = 0b101
    with pytest.raises(ConfigError):
        all_coalitions(21)


def _numba_as_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """shap's Exact explainer calls numba-compiled helpers whose first compile takes ~20 s on
    a busy 2-core machine; for this test swap each for its pure-Python original (.py_func),
    which computes the same thing."""
    import importlib

    for name in ("shap.explainers._exact", "shap.utils._masked_model", "shap.maskers._tabular",
                 "shap.utils._clustering"):
        mod = importlib.import_module(name)
        for attr, obj in list(vars(mod).items()):
            if callable(getattr(obj, "py_func", None)):
                monkeypatch.setattr(mod, attr, obj.py_func)


def test_exact_matches_shap_exact_explainer_interventional(monkeypatch):
    """shap.explainers.Exact with an Independent masker is E_b f(x_S, b_notS)."""
    import shap

    _numba_as_python(monkeypatch)
    params = _numpy_mlp()
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, M))
    bg = rng.normal(size=(5, M))
    w1, b1, w2, b2 = params
    ref = shap.explainers.Exact(lambda a: np.tanh(a @ w1 + b1) @ w2 + b2,
                                shap.maskers.Independent(bg, max_samples=100))(x)
    f = _torch_f(params)
    for i in range(len(x)):
        r = exact_shapley(f, torch.as_tensor(x[i]), torch.arange(M), torch.as_tensor(bg))
        np.testing.assert_allclose(r.values, ref.values[i], atol=1e-10)
        assert r.base_value == pytest.approx(float(np.ravel(ref.base_values)[i]), abs=1e-10)
        assert r.estimator == "exact" and r.n_coalitions == 2**M and r.n_evaluations == 2**M * 5


@pytest.mark.parametrize("estimator", ["exact", "kernel", "shap"])
def test_linear_model_closed_forms(estimator):
    """phi = w * (x - b) with a baseline; phi = w * (x - E_w[b]) with a weighted background."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(M, dtype=torch.float64, generator=g)
    f = lambda z: z @ w + 0.5  # noqa: E731
    x = torch.randn(M, dtype=torch.float64, generator=g)
    b = torch.randn(1, M, dtype=torch.float64, generator=g)
    bg = torch.randn(6, M, dtype=torch.float64, generator=g)
    bw = torch.rand(6, dtype=torch.float64, generator=g)
    bw = bw / bw.sum()
    groups = torch.arange(M)

    def run(rep, weights):
        if estimator == "exact":
            return exact_shapley(f, x, groups, rep, weights=weights)
        if estimator == "kernel":
            return kernel_shapley(f, x, groups, rep, n_coalitions=40, seed=0, weights=weights)
        return shap_kernel_explainer(f, x, groups, rep, n_samples=40, seed=0, weights=weights)

    r = run(b, None)
    np.testing.assert_allclose(r.values, (w * (x - b[0])).numpy(), atol=1e-8)
    r = run(bg, bw)
    np.testing.assert_allclose(r.values, (w * (x - (bw[:, None] * bg).sum(0))).numpy(), atol=1e-8)
    assert r.efficiency_gap < 1e-8


def test_groups_of_a_linear_model_sum_their_members():
    """Superpixel-like groups on a (1, 4, 4) 'image': phi_g = sum over g of w * (x - b)."""
    g = torch.Generator().manual_seed(4)
    w = torch.randn(1, 4, 4, dtype=torch.float64, generator=g)
    f = lambda z: (z * w).flatten(1).sum(1)  # noqa: E731
    x = torch.rand(1, 4, 4, dtype=torch.float64, generator=g)
    groups = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 4, 4, 3]])[None]
    r = exact_shapley(f, x, groups, torch.zeros(1, 1, 4, 4, dtype=torch.float64))
    contrib = (w * x)[0]
    want = [float(contrib[groups[0] == k].sum()) for k in range(5)]
    np.testing.assert_allclose(r.values, want, atol=1e-10)


def test_kernel_sampler_is_exact_with_full_budget_and_close_with_less():
    params = _numpy_mlp(5)
    f = _torch_f(params)
    x = torch.as_tensor(np.random.default_rng(6).normal(size=M))
    bg = torch.as_tensor(np.random.default_rng(7).normal(size=(3, M)))
    exact = exact_shapley(f, x, torch.arange(M), bg)
    full = kernel_shapley(f, x, torch.arange(M), bg, n_coalitions=2**M - 2, seed=0)
    assert full.estimator == "exact"
    np.testing.assert_allclose(full.values, exact.values, atol=1e-12)
    errors = []
    for budget in (30, 120):
        k = kernel_shapley(f, x, torch.arange(M), bg, n_coalitions=budget, seed=0)
        assert k.estimator == "kernel" and k.n_coalitions <= budget + 2
        assert k.efficiency_gap < 1e-10  # the constraint holds exactly at any budget
        errors.append(np.abs(k.values - exact.values).max())
    scale = np.abs(exact.values).max()
    assert errors[1] < 0.1 * scale
    assert errors[1] <= errors[0] + 1e-12
    again = kernel_shapley(f, x, torch.arange(M), bg, n_coalitions=120, seed=0)
    np.testing.assert_array_equal(again.values, kernel_shapley(f, x, torch.arange(M), bg, n_coalitions=120,
                                                                seed=0).values)


def test_sample_coalitions_distinct_weighted_and_without_ends():
    rng = np.random.default_rng(0)
    coal, w = sample_coalitions(10, 300, rng)
    assert len(coal) <= 300
    keys = {row.tobytes() for row in np.packbits(coal, axis=1)}
    assert len(keys) == len(coal)  # no duplicate coalitions are evaluated
    sizes = coal.sum(1)
    assert sizes.min() >= 1 and sizes.max() <= 9
    assert (w > 0).all() and w.sum() == pytest.approx(1.0)
    # sizes 1 and 9 fit in the budget: enumerated completely
    assert (sizes == 1).sum() == 10 and (sizes == 9).sum() == 10


def test_coalition_values_independent_of_batch_size_and_budget_switch():
    params = _numpy_mlp(8)
    f = _torch_f(params)
    x = torch.as_tensor(np.random.default_rng(9).normal(size=M))
    bg = torch.as_tensor(np.random.default_rng(10).normal(size=(4, M)))
    coal = all_coalitions(M)[::7]
    a = coalition_values(f, x, torch.arange(M), bg, coal, batch_size=5)
    b = coalition_values(f, x, torch.arange(M), bg, coal, batch_size=4096)
    np.testing.assert_allclose(a, b, atol=1e-12)
    assert shapley_values(f, x, torch.arange(M), bg, max_evaluations=4 * 2**M, seed=0).estimator == "exact"
    assert shapley_values(f, x, torch.arange(M), bg, max_evaluations=4 * 100, seed=0).estimator == "kernel"


def test_bad_groups_are_clear_errors():
    with pytest.raises(DataError, match="every player index"):
        check_groups(torch.tensor([0, 2, 2]), (3,))
    with pytest.raises(DataError, match="broadcastable"):
        check_groups(torch.tensor([0, 1]), (3,))
    with pytest.raises(DataError, match="integer"):
        check_groups(torch.tensor([0.0, 1.0]), (2,))


def test_sampled_shapley_error_bound_covers_the_true_error():
    """The sampler's own 95% bound (1.96 x its bootstrap standard error) against exact
    enumeration: over 30 seeded cases (random tanh MLPs, M = 10, two budgets) it holds the
    true error of >= 90% of the players, and the worst player's error in >= 90% of cases."""
    m, player_hits, case_hits = 10, [], []
    for seed in range(15):
        rng = np.random.default_rng(100 + seed)
        w1, b1, w2 = (torch.as_tensor(a) for a in (rng.normal(size=(m, 6)), rng.normal(size=6), rng.normal(size=6)))

        def f(z, w1=w1, b1=b1, w2=w2):
            return torch.tanh(z.double() @ w1 + b1) @ w2

        x = torch.as_tensor(rng.normal(size=m))
        groups, rep = torch.arange(m), torch.zeros(1, m, dtype=torch.float64)
        exact = exact_shapley(f, x, groups, rep)
        assert np.all(exact.standard_error == 0)
        for budget in (60, 200):
            k = kernel_shapley(f, x, groups, rep, n_coalitions=budget, seed=seed)
            assert k.estimator == "kernel" and k.efficiency_gap < 1e-9  # zero by construction, says nothing
            err, bound = np.abs(k.values - exact.values), 1.96 * k.standard_error
            assert np.all(bound > 0)
            player_hits.append(np.mean(err <= bound))
            case_hits.append(err.max() <= bound.max())
    assert np.mean(player_hits) >= 0.9, np.mean(player_hits)
    assert np.mean(case_hits) >= 0.9, np.mean(case_hits)
