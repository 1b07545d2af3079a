"""Randomized smoothing against closed forms and exact statistics.

A binary linear classifier f(x) = 1[w·x + b > 0] has P(f(x + ε) = f(x)) = Φ(|w·x + b| /
(σ‖w‖)) under ε ~ N(0, σ²I), so its smoothed classifier is f itself and the exact certified
radius σ·Φ⁻¹(p_A) is the distance to the hyperplane |w·x + b| / ‖w‖. CERTIFY's radius with
n samples must fall between the radii that the 0.05% and 99.95% binomial quantiles of n_A
give (computed here with scipy's binom and beta, independently of the code under test),
and never above the exact one except with probability alpha.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import beta, binom, binomtest, norm
from torch import nn

from workbench.errors import ConfigError, DataError, ModelError
from workbench.suites.certify import functional as C


class Linear2(nn.Module):
    """Two logits (0, w·x + b) of a flattened input: class 1 iff w·x + b > 0."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.flatten().double().float(), requires_grad=False)
        self.b = float(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1) @ self.w + self.b  # (B,)
        return torch.stack([torch.zeros_like(s), s], dim=1)  # (B, 2)


class TokenLinear(nn.Module):
    """Embedding (V, C) then a linear score of the flattened (T, C) embeddings."""

    def __init__(self, vocab: int, length: int, dim: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.token_embedding = nn.Embedding(vocab, dim)
        with torch.no_grad():
            self.token_embedding.weight.copy_(torch.randn(vocab, dim, generator=g))
        self.w = torch.randn(length * dim, generator=g)
        self.b = 0.1

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        s = self.token_embedding(ids).flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(s), s], dim=1)


def _radius_band(p_a: np.ndarray, n: int, alpha: float, sigma: float, tail: float = 5e-4) -> tuple[np.ndarray, np.ndarray]:
    """Radii CERTIFY gives at the `tail` and 1 − `tail` quantiles of n_A ~ Bin(n, p_A)."""
    out = []
    for q in (tail, 1 - tail):
        k = binom.ppf(q, n, p_a)
        lower = np.where(k == 0, 0.0, beta.ppf(alpha, np.maximum(k, 1), n - k + 1))
        out.append(sigma * norm.ppf(lower))
    return out[0], out[1]


def test_linear_classifier_certified_radius_matches_the_closed_form():
    g = torch.Generator().manual_seed(0)
    d, sigma, n, alpha = 6, 0.5, 20_000, 0.001
    w = torch.randn(d, generator=g)
    model = Linear2(w, 0.2)
    x = torch.randn(40, d, generator=g) * 0.6
    margin = (x @ model.w + 0.2).double().numpy()
    distance = np.abs(margin) / float(model.w.norm())
    p_a = norm.cdf(distance / sigma)
    cert = C.certify(model, x, sigma=sigma, n0=100, n=n, alpha=alpha, batch_size=4096,
                     generator=torch.Generator().manual_seed(1))
    base = torch.from_numpy((margin > 0).astype(np.int64))
    lo, hi = _radius_band(p_a, n, alpha, sigma)
    certified = cert.prediction != C.ABSTAIN
    # the smoothed prediction of a linear model is its base prediction
    assert torch.equal(cert.prediction[certified], base[certified])
    # away from the boundary everything is certified (n0 = 100 selection samples pick the
    # wrong class with probability < 1e-4 at p_A >= 0.75); near it abstaining is right
    assert bool(certified[torch.from_numpy(p_a >= 0.75)].all()) and int((p_a >= 0.75).sum()) >= 20
    r = cert.radius[certified.numpy()]
    assert np.all(r >= lo[certified.numpy()] - 1e-9) and np.all(r <= hi[certified.numpy()] + 1e-9)
    assert np.all(r <= distance[certified.numpy()])  # never above the exact radius here
    # and close to it: the Clopper-Pearson gap at n = 20,000 is small for moderate p_A
    mid = certified.numpy() & (p_a < 0.99)
    assert np.max(distance[mid] - cert.radius[mid]) < 0.1 * sigma


def test_linear_token_model_radius_in_relative_embedding_units():
    vocab, length, dim, sigma, n, alpha = 7, 4, 3, 0.5, 20_000, 0.001
    model = TokenLinear(vocab, length, dim)
    ids = torch.randint(0, vocab, (30, length), generator=torch.Generator().manual_seed(2))
    space = C.embedding_space(model, ids)
    emb = model.token_embedding(ids).detach()
    assert space.scale == pytest.approx(float(emb.pow(2).mean().sqrt()), rel=1e-6)
    margin = (emb.flatten(1) @ model.w + model.b).double().numpy()
    distance_rel = np.abs(margin) / float(model.w.norm()) / space.scale  # relative units
    p_a = norm.cdf(distance_rel / sigma)
    cert = C.certify(model, ids, sigma=sigma, n0=100, n=n, alpha=alpha, batch_size=4096,
                     generator=torch.Generator().manual_seed(3), space=space)
    lo, hi = _radius_band(p_a, n, alpha, sigma)
    ok = (cert.prediction != C.ABSTAIN).numpy()
    assert ok.sum() >= 20
    assert torch.equal(cert.prediction[torch.from_numpy(ok)], torch.from_numpy((margin[ok] > 0).astype(np.int64)))
    assert np.all(cert.radius[ok] >= lo[ok] - 1e-9) and np.all(cert.radius[ok] <= hi[ok] + 1e-9)
    # the hook is gone afterwards: the clean forward is unchanged
    assert not model.token_embedding._forward_hooks


def test_lower_confidence_bound_equals_scipy_exact_interval():
    for k, n in [(0, 10), (1, 10), (7, 10), (10, 10), (512, 1000), (99_990, 100_000)]:
        expected = binomtest(k, n).proportion_ci(confidence_level=1 - 2 * 0.001, method="exact").low
        assert C.lower_confidence_bound(k, n, 0.001) == pytest.approx(expected, abs=1e-12)
    lo, hi = C.clopper_pearson(3, 20)
    ci = binomtest(3, 20).proportion_ci(confidence_level=0.95, method="exact")
    assert (lo, hi) == pytest.approx((ci.low, ci.high))


@pytest.mark.parametrize("n", [20, 200])
@pytest.mark.parametrize("p", [0.55, 0.9, 0.995])
def test_clopper_pearson_lower_bound_covers_at_least_one_minus_alpha(n, p):
    """Monte Carlo coverage (20,000 binomial draws) and the exact coverage by enumeration;
    a normal-approximation bound, the usual mistake, is shown to under-cover."""
    alpha, trials = 0.05, 20_000
    rng = np.random.default_rng(0)
    k = rng.binomial(n, p, size=trials)
    coverage = float(np.mean(C.lower_confidence_bound(k, np.full(trials, n), alpha) <= p))
    mc_error = 3 * np.sqrt(alpha * (1 - alpha) / trials)
    assert coverage >= 1 - alpha - mc_error
    ks = np.arange(n + 1)
    exact = float(binom.pmf(ks, n, p)[C.lower_confidence_bound(ks, np.full(n + 1, n), alpha) <= p].sum())
    assert exact >= 1 - alpha - 1e-12


def test_a_normal_approximation_would_fail_the_coverage_check():
    """The coverage check can fail: the Wald bound at n = 20, p = 0.995 covers far less."""
    n, p, alpha = 20, 0.995, 0.05
    ks = np.arange(n + 1)
    ph = ks / n
    wald = ph - norm.ppf(1 - alpha) * np.sqrt(ph * (1 - ph) / n)
    assert float(binom.pmf(ks, n, p)[wald <= p].sum()) < 1 - alpha


def test_sample_noise_matches_a_plain_loop_and_counts_every_sample():
    model = Linear2(torch.tensor([1.0, -2.0, 0.5]), 0.1)
    x = torch.tensor([[0.3, 0.1, -0.2], [1.0, 0.0, 0.0]])
    counts = C.sample_noise(model, x, num=1000, sigma=0.4, batch_size=300, generator=torch.Generator().manual_seed(5))
    assert counts.shape == (2, 2) and counts.sum(1).tolist() == [1000, 1000]
    # the same noise drawn by hand: pages of PAGE_NUMBERS // 3 rows (here one page of all
    # 2,000 rows), example-major, cut into forwards of 300 rows
    g = torch.Generator().manual_seed(5)
    assert C.PAGE_NUMBERS // 3 >= 2000
    noise = torch.randn((2000, 3), generator=g)
    rows = x.repeat_interleave(1000, dim=0)
    expected = torch.zeros(2, 2, dtype=torch.long)
    for s in range(0, 2000, 300):
        xb = rows[s : s + 300]
        pred = model(xb + noise[s : s + 300] * 0.4).argmax(1)
        for i, c in zip(torch.arange(s, s + xb.shape[0]) // 1000, pred):
            expected[i, c] += 1
    assert torch.equal(counts, expected)


def test_predict_abstains_on_a_tie_and_returns_a_clear_winner():
    counts = torch.tensor([[50, 50, 0], [90, 5, 5], [3, 40, 57]])
    out = C.predict_from_counts(counts, 0.001)
    assert out.tolist() == [C.ABSTAIN, 0, C.ABSTAIN]  # 57 vs 40 is not significant at 0.001
    for row, o in zip(counts.tolist(), out.tolist()):
        top = sorted(row, reverse=True)
        assert (binomtest(top[0], top[0] + top[1], 0.5).pvalue <= 0.001) == (o != C.ABSTAIN)


def test_max_certifiable_radius_and_abstain():
    assert C.max_certifiable_radius(0.5, 1000, 0.001) == pytest.approx(0.5 * norm.ppf(0.001 ** (1 / 1000)))
    model = Linear2(torch.tensor([1.0]), 0.0)
    cert = C.certify(model, torch.zeros(3, 1), sigma=1.0, n0=10, n=100, alpha=0.001, batch_size=64,
                     generator=torch.Generator().manual_seed(0))
    assert cert.prediction.tolist() == [C.ABSTAIN] * 3  # on the boundary p_A = 1/2
    assert cert.radius.tolist() == [0.0] * 3


def test_smoothed_pgd_moves_a_linear_model_across_its_boundary():
    """For a linear model the attack's optimum is the hyperplane's normal: at eps beyond the
    distance, g's Monte Carlo prediction flips; the perturbation stays inside the ball."""
    model = Linear2(torch.tensor([3.0, 4.0]), 0.0)  # ‖w‖ = 5
    x = torch.tensor([[0.6, 0.8]])  # margin 5, distance 1
    y = torch.tensor([1])
    gen = torch.Generator().manual_seed(0)
    for eps, flips in ((0.5, False), (1.5, True)):
        d = C.smoothed_pgd(model, x, y, eps=eps, sigma=0.25, steps=20, noise_samples=32, batch_size=256, generator=gen)
        assert float(d.norm()) <= eps + 1e-5
        counts = C.sample_noise(model, x, num=2000, sigma=0.25, batch_size=2000, generator=gen, offset=d)
        assert (int(counts.argmax(1)) != 1) == flips


def _plain_smoothed_pgd(model, x, y, *, eps, sigma, steps, m, generator, bounds=None):
    """SmoothAdv written the plain way: every step all B·m noisy copies in one forward (the
    step's noise drawn in one call, example-major), loss −Σ_i log(mean_j softmax_y + 1e-12)
    through autograd, normalised step 2.5·eps/steps, projection on the ball and the box."""
    b = x.shape[0]
    delta = torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        noise = torch.randn((b * m, *x.shape[1:]), generator=generator) * sigma
        z = model(x.repeat_interleave(m, 0) + delta.repeat_interleave(m, 0) + noise).float()
        p = torch.softmax(z, 1).view(b, m, -1).mean(1).gather(1, y[:, None]).squeeze(1)
        (g,) = torch.autograd.grad(-torch.log(p + 1e-12).sum(), delta)
        with torch.no_grad():
            delta = delta.detach() + 2.5 * eps / steps * g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1)
            delta = delta * torch.clamp(eps / (delta.flatten(1).norm(dim=1) + 1e-12), max=1.0).view(-1, 1)
            if bounds is not None:
                delta = (x + delta).clamp(*bounds) - x
    return delta.detach()


def test_smoothed_pgd_does_not_depend_on_the_batch_size_and_equals_the_plain_loop():
    """The batch size is a speed setting: a nonlinear model (where the noise steers the
    gradient) gets bitwise the same δ at batch 2, 5, 16 and 1,000 rows, with 6 noise draws per
    example (a batch of 2 or 5 splits an example's draws over forwards; 16 mixes examples),
    and the same δ as the plain one-forward-per-step SmoothAdv up to float rounding; and the
    generator is left where the plain loop leaves it (the evaluation's noise follows)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 4)).eval()
    x = torch.rand(5, 3) * 1.6 - 0.8  # inside the box [-1, 1]
    y = net(x).argmax(1)
    kw = dict(eps=0.5, sigma=0.4, steps=6)
    outs, after = {}, {}
    for bs in (2, 5, 16, 1000):
        g = torch.Generator().manual_seed(3)
        outs[bs] = C.smoothed_pgd(net, x, y, noise_samples=6, batch_size=bs, generator=g, bounds=(-1.0, 1.0), **kw)
        after[bs] = torch.randn(4, generator=g)
    assert all(torch.equal(outs[2], d) and torch.equal(after[2], a) for d, a in zip(outs.values(), after.values()))
    g = torch.Generator().manual_seed(3)
    ref = _plain_smoothed_pgd(net, x, y, m=6, generator=g, bounds=(-1.0, 1.0), **kw)
    torch.testing.assert_close(outs[2], ref, rtol=0, atol=1e-5)
    assert torch.equal(after[2], torch.randn(4, generator=g))
    assert float(ref.abs().max()) > 0.05 and not torch.equal(ref, _plain_smoothed_pgd(
        net, x, y, m=6, generator=torch.Generator().manual_seed(4), **kw))  # the noise does steer δ here
    assert torch.all(outs[2].norm(dim=1) <= 0.5 + 1e-5) and torch.all((x + outs[2]).abs() <= 1.0 + 1e-6)


def test_consistency_pvalue_flags_a_contradiction_only():
    radius = 0.5 * norm.ppf(np.array([0.99, 0.99]))  # sigma = 0.5, p_A_lower = 0.99
    # r = 0.25: P(A) at the attacked point must be >= Φ(Φ⁻¹(.99) - .5) ≈ 0.966
    p_min = norm.cdf(norm.ppf(0.99) - 0.25 / 0.5)
    assert C.probability_lower_bound_at(radius, 0.5, 0.25) == pytest.approx([p_min, p_min])
    pv = C.consistency_pvalues(radius, 0.5, 0.25, np.array([round(1000 * p_min), 500]), 1000)
    assert pv[0] > 0.3 and pv[1] < 1e-10
    assert pv[1] == pytest.approx(binom.cdf(500, 1000, p_min))


def test_bad_arguments_raise_clear_errors():
    model = Linear2(torch.tensor([1.0]), 0.0)
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ConfigError, match="sigma"):
        C.sample_noise(model, torch.zeros(1, 1), num=10, sigma=0.0, batch_size=4, generator=gen)
    with pytest.raises(ConfigError, match="alpha"):
        C.lower_confidence_bound(1, 2, 0.7)
    with pytest.raises(ConfigError, match="k <= n"):
        C.lower_confidence_bound(3, 2, 0.01)
    with pytest.raises(TypeError, match="generator"):
        C.sample_noise(model, torch.zeros(1, 1), num=10, sigma=0.1, batch_size=4, generator=0)
    with pytest.raises(DataError, match="float input"):
        C.input_space(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ModelError, match="nn.Embedding"):
        C.embedding_space(nn.Linear(2, 2), torch.zeros(2, 3, dtype=torch.long))


def test_predict_pvalue_equals_scipy_binomtest_on_every_small_count():
    """Exhaustive over n_A + n_B <= 40 (the vectorised p-value against binomtest)."""
    rows = [(a, b) for t in range(1, 41) for a in range(t + 1) for b in [t - a] if a >= b]
    counts = torch.tensor([[a, b, 0] for a, b in rows])
    for alpha in (0.001, 0.05):
        out = C.predict_from_counts(counts, alpha).tolist()
        expected = [0 if binomtest(a, a + b, 0.5).pvalue <= alpha else C.ABSTAIN for a, b in rows]
        assert out == expected


def test_sample_noise_counts_do_not_depend_on_the_batch_size():
    """3 features (rows of 3 numbers: torch's CPU sampler is cut-invariant only in pieces of
    16 numbers): the counts are the same at every batch size, because the noise is drawn in
    fixed pages whatever the cut into forwards."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4)).eval()
    x = torch.randn(5, 3)
    counts = [C.sample_noise(model, x, num=37, sigma=0.7, batch_size=b, generator=torch.Generator().manual_seed(3))
              for b in (1, 7, 8, 16, 100, 10_000)]
    assert all(torch.equal(c, counts[0]) for c in counts) and counts[0].sum() == 5 * 37
    assert (counts[0].max(1).values < 37).sum() >= 3  # the noise matters: most examples get several classes
