"""The uncertainty maths against independent references: scikit-learn, scipy, plain
loops written here, exact enumeration and closed forms."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from workbench.suites.uncertainty import functional as F
from workbench.errors import ConfigError, DataError
from workbench.stats import bootstrap_indices
from workbench.torch_utils import limited_threads


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is faster, and much faster on a shared 2-core box."""
    with limited_threads(1):
        yield


def _probs(n: int, k: int, seed: int, s: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (n, k) if s is None else (s, n, k)
    return torch.softmax(torch.randn(shape, generator=g, dtype=torch.float64) * 2, -1)


def loop_ece(conf: list[float], correct: list[float], n_bins: int, binning: str) -> tuple[float, float]:
    """Straightforward ECE/MCE: explicit bins, the last closed on the right."""
    n = len(conf)
    if binning == "uniform":
        members = [[] for _ in range(n_bins)]
        for i, c in enumerate(conf):
            for b in range(n_bins):
                lo, hi = b / n_bins, (b + 1) / n_bins
                if lo <= c < hi or (b == n_bins - 1 and c == hi):
                    members[b].append(i)
                    break
    else:
        order = sorted(range(n), key=lambda i: conf[i])  # Python's sort is stable
        members = [[] for _ in range(n_bins)]
        for pos, i in enumerate(order):
            members[pos * n_bins // n].append(i)
    ece, mce = 0.0, 0.0
    for idx in members:
        if not idx:
            continue
        acc = sum(correct[i] for i in idx) / len(idx)
        cf = sum(conf[i] for i in idx) / len(idx)
        ece += len(idx) / n * abs(acc - cf)
        mce = max(mce, abs(acc - cf))
    return ece, mce


# ------------------------------------------------------------------ scoring rules
def test_nll_matches_sklearn_log_loss() -> None:
    probs = _probs(64, 5, seed=1)
    y = torch.randint(0, 5, (64,), generator=torch.Generator().manual_seed(2))
    ours = F.negative_log_likelihood(probs.log(), y).mean().item()
    ref = log_loss(y.numpy(), probs.numpy(), labels=list(range(5)))
    assert ours == pytest.approx(ref, rel=1e-12)


def test_brier_matches_sklearn_and_plain_formula() -> None:
    probs = _probs(64, 4, seed=3)
    y = torch.randint(0, 4, (64,), generator=torch.Generator().manual_seed(4))
    ours = F.brier_score(probs, y)
    ref = brier_score_loss(y.numpy(), probs.numpy(), labels=list(range(4)), scale_by_half=False)
    plain = np.mean([sum((probs[i, k].item() - (k == y[i].item())) ** 2 for k in range(4)) for i in range(64)])
    assert ours.mean().item() == pytest.approx(ref, rel=1e-12)
    assert ours.mean().item() == pytest.approx(plain, rel=1e-12)
    # binary: sklearn halves by default; ours keeps the multiclass [0, 2] range
    p2 = _probs(30, 2, seed=5)
    y2 = torch.randint(0, 2, (30,), generator=torch.Generator().manual_seed(6))
    assert F.brier_score(p2, y2).mean().item() == pytest.approx(2 * brier_score_loss(y2.numpy(), p2[:, 1].numpy()))


def test_brier_range_extremes() -> None:
    y = torch.tensor([0, 1])
    assert F.brier_score(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), y).tolist() == [0.0, 0.0]
    assert F.brier_score(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), y).tolist() == [2.0, 2.0]


def test_gaussian_nll_and_interval_against_scipy() -> None:
    g = torch.Generator().manual_seed(7)
    mean, var = torch.randn(50, generator=g), torch.rand(50, generator=g) + 0.1
    y = torch.randn(50, generator=g)
    ref = -norm.logpdf(y.numpy(), loc=mean.numpy(), scale=np.sqrt(var.numpy()))
    np.testing.assert_allclose(F.gaussian_nll(mean, var, y).numpy(), ref, rtol=1e-6)
    lo, hi = norm.interval(0.9, loc=mean.double().numpy(), scale=np.sqrt(var.double().numpy()))
    inside = (y.double().numpy() >= lo) & (y.double().numpy() <= hi)
    assert F.interval_hits(mean, var, y, 0.9).numpy().tolist() == inside.tolist()


def test_interval_coverage_of_a_correct_gaussian_is_nominal() -> None:
    g = torch.Generator().manual_seed(8)
    n = 20000
    mean, std = torch.randn(n, generator=g, dtype=torch.float64), torch.rand(n, generator=g, dtype=torch.float64) + 0.2
    y = mean + std * torch.randn(n, generator=g, dtype=torch.float64)
    cov = F.interval_hits(mean, std**2, y, 0.9).double().mean().item()
    assert abs(cov - 0.9) < 4 * math.sqrt(0.9 * 0.1 / n)


# ------------------------------------------------------------------ calibration
def test_ece_torchmetrics_regression_case() -> None:
    """torchmetrics 1.9 (#3510) gives 0.5250: it drops confidence 1.0 into its own bin."""
    conf, correct = torch.tensor([0.95, 1.0], dtype=torch.float64), torch.tensor([1.0, 0.0])
    assert F.expected_calibration_error(conf, correct, n_bins=15).item() == pytest.approx(0.4750, abs=1e-12)
    assert F.expected_calibration_error(conf.float(), correct).item() == pytest.approx(0.4750, abs=1e-7)
    assert loop_ece([0.95, 1.0], [1.0, 0.0], 15, "uniform")[0] == pytest.approx(0.4750)
    # the same case from a probability matrix and labels
    probs = torch.tensor([[0.05, 0.95], [0.0, 1.0]], dtype=torch.float64)
    c = probs.max(1).values
    ok = (probs.argmax(1) == torch.tensor([1, 0])).double()
    assert F.expected_calibration_error(c, ok).item() == pytest.approx(0.4750)


@pytest.mark.parametrize("binning", F.BINNINGS)
def test_ece_and_mce_match_loop(binning: str) -> None:
    g = torch.Generator().manual_seed(9)
    conf = torch.rand(300, generator=g, dtype=torch.float64) * 0.7 + 0.3
    correct = torch.bernoulli(conf**1.5, generator=g)
    ece, mce = loop_ece(conf.tolist(), correct.tolist(), 15, binning)
    assert F.expected_calibration_error(conf, correct, binning=binning).item() == pytest.approx(ece, abs=1e-12)
    assert F.maximum_calibration_error(conf, correct, binning=binning).item() == pytest.approx(mce, abs=1e-12)


def test_confidences_on_bin_edges_go_up_and_last_bin_is_closed() -> None:
    conf = torch.tensor([k / 15 for k in range(16)], dtype=torch.float64)
    ids = F.bin_ids(conf, n_bins=15).tolist()
    assert ids == list(range(15)) + [14]
    correct = torch.tensor([float(k % 2) for k in range(16)])
    ece, _ = loop_ece(conf.tolist(), correct.tolist(), 15, "uniform")
    assert F.expected_calibration_error(conf, correct).item() == pytest.approx(ece, abs=1e-12)


def test_equal_mass_bins_hold_equal_counts() -> None:
    conf = torch.rand(103, generator=torch.Generator().manual_seed(10))
    counts = torch.bincount(F.bin_ids(conf, n_bins=10, binning="equal_mass"), minlength=10)
    assert set(counts.tolist()) <= {10, 11} and counts.sum() == 103


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([0.0, 0.1, 1 / 3, 0.5, 0.95, 1.0]) | st.floats(0, 1), st.booleans()),
             min_size=1, max_size=40),
    st.integers(1, 20),
    st.sampled_from(F.BINNINGS),
)
def test_ece_matches_loop_property(pairs: list, n_bins: int, binning: str) -> None:
    conf = [c for c, _ in pairs]
    correct = [float(b) for _, b in pairs]
    ece, mce = loop_ece(conf, correct, n_bins, binning)
    t_conf, t_corr = torch.tensor(conf, dtype=torch.float64), torch.tensor(correct)
    assert F.expected_calibration_error(t_conf, t_corr, n_bins=n_bins, binning=binning).item() == pytest.approx(ece, abs=1e-12)
    assert F.maximum_calibration_error(t_conf, t_corr, n_bins=n_bins, binning=binning).item() == pytest.approx(mce, abs=1e-12)


def test_reliability_diagram_matches_loop() -> None:
    g = torch.Generator().manual_seed(11)
    conf = torch.rand(200, generator=g, dtype=torch.float64) * 0.5 + 0.5
    correct = torch.bernoulli(conf, generator=g)
    d = F.reliability_diagram(conf, correct, n_bins=10)
    assert sum(d["count"]) == 200
    for b in range(10):
        idx = [i for i in range(200) if b / 10 <= conf[i] < (b + 1) / 10 or (b == 9 and conf[i] == 1.0)]
        assert d["count"][b] == len(idx)
        if idx:
            assert d["accuracy"][b] == pytest.approx(float(correct[idx].mean()))
            assert d["confidence"][b] == pytest.approx(float(conf[idx].mean()))
        else:
            assert d["accuracy"][b] is None
    em = F.reliability_diagram(conf, correct, n_bins=10, binning="equal_mass")
    assert em["count"] == [20] * 10 and em["lower"][0] == pytest.approx(float(conf.min()))


def test_ece_bootstrap_rows_are_resampled_eces() -> None:
    g = torch.Generator().manual_seed(12)
    conf = torch.rand(80, generator=g, dtype=torch.float64)
    correct = torch.bernoulli(conf, generator=g)
    boots = F.ece_bootstrap(conf, correct, n_boot=50, seed=3, chunk=16)
    idx = bootstrap_indices(80, 50, 3)
    for r in (0, 17, 49):
        ece, _ = loop_ece(conf[idx[r]].tolist(), correct[idx[r]].tolist(), 15, "uniform")
        assert boots[r].item() == pytest.approx(ece, abs=1e-12)
    assert torch.equal(boots, F.ece_bootstrap(conf, correct, n_boot=50, seed=3))


def test_ece_perfectly_calibrated_matches_exact_enumeration() -> None:
    """Exact expectation over all 2^N outcomes of Bernoulli(confidence) correctness."""
    conf = [0.55, 0.62, 0.9, 0.97, 0.71]
    exact = 0.0
    for outcome in itertools.product([0.0, 1.0], repeat=len(conf)):
        prob = math.prod(c if o else 1 - c for c, o in zip(conf, outcome))
        exact += prob * loop_ece(conf, list(outcome), 15, "uniform")[0]
    sims = F.ece_perfectly_calibrated(torch.tensor(conf), n_sim=20000, seed=0)
    se = sims.std().item() / math.sqrt(sims.numel())
    assert abs(sims.mean().item() - exact) < 4 * se
    assert torch.equal(sims[:100], F.ece_perfectly_calibrated(torch.tensor(conf), n_sim=100, seed=0, chunk=256))


def test_ece_perfectly_calibrated_is_near_research_note_at_500() -> None:
    """research-notes: ~0.026 (15 bins) at n = 500; it depends on the confidences, so only
    the order of magnitude and the fall with n are checked."""
    conf = torch.rand(500, generator=torch.Generator().manual_seed(13), dtype=torch.float64) * 0.5 + 0.5
    small = F.ece_perfectly_calibrated(conf, n_sim=300, seed=1).mean().item()
    large = F.ece_perfectly_calibrated(conf.repeat(8), n_sim=100, seed=1).mean().item()
    assert 0.01 < small < 0.06 and large < small / 2


# ------------------------------------------------------------------ decomposition
def test_classification_decomposition_sums_and_matches_plain_formula() -> None:
    p = _probs(40, 6, seed=14, s=7)  # (S, N, K)
    dec = F.classification_decomposition(p.log())
    pn = p.numpy()
    mean = pn.mean(0)
    h = lambda q: -(q * np.log(q)).sum(-1)  # noqa: E731
    np.testing.assert_allclose(dec.total.numpy(), h(mean), rtol=1e-12)
    np.testing.assert_allclose(dec.aleatoric.numpy(), h(pn).mean(0), rtol=1e-12)
    np.testing.assert_allclose(dec.epistemic.numpy(), h(mean) - h(pn).mean(0), atol=1e-12)  # MI as H - E H
    np.testing.assert_allclose((dec.aleatoric + dec.epistemic).numpy(), dec.total.numpy(), atol=1e-12)
    assert bool((dec.epistemic <= math.log(7) + 1e-12).all())


def test_classification_decomposition_edge_cases() -> None:
    same = _probs(5, 3, seed=15).log().expand(4, 5, 3)
    dec = F.classification_decomposition(same)
    assert torch.allclose(dec.epistemic, torch.zeros(5, dtype=torch.float64), atol=1e-12)
    # members that are certain but disagree: aleatoric 0, all uncertainty epistemic (log 2)
    disagree = torch.tensor([[[0.0, -1e4]], [[-1e4, 0.0]]])
    dec = F.classification_decomposition(disagree)
    assert dec.aleatoric.item() == pytest.approx(0.0, abs=1e-9)
    assert dec.epistemic.item() == pytest.approx(math.log(2), abs=1e-9)


def test_regression_decomposition_ddof0_and_mixture_variance() -> None:
    g = torch.Generator().manual_seed(16)
    means = torch.randn(5, 30, generator=g, dtype=torch.float64)
    variances = torch.rand(5, 30, generator=g, dtype=torch.float64) + 0.05
    dec = F.regression_decomposition(means, variances)
    m, v = means.numpy(), variances.numpy()
    np.testing.assert_allclose(dec.epistemic.numpy(), np.var(m, axis=0, ddof=0), rtol=1e-12)
    assert not np.allclose(dec.epistemic.numpy(), np.var(m, axis=0, ddof=1))
    np.testing.assert_allclose(dec.aleatoric.numpy(), v.mean(0), rtol=1e-12)
    mixture_var = (v + m**2).mean(0) - m.mean(0) ** 2  # second moment of the mixture minus squared mean
    np.testing.assert_allclose(dec.total.numpy(), mixture_var, rtol=1e-10)
    mean_only = F.regression_decomposition(means, None)
    assert torch.isnan(mean_only.aleatoric).all() and torch.equal(mean_only.epistemic, dec.epistemic)


def test_predictive_log_probs_is_log_of_mean_softmax() -> None:
    logits = torch.randn(6, 10, 4, generator=torch.Generator().manual_seed(17), dtype=torch.float64) * 5
    ref = torch.softmax(logits, -1).mean(0).log()
    assert torch.allclose(F.predictive_log_probs(logits), ref, atol=1e-12)
    assert torch.allclose(F.predictive_log_probs(logits[0]), torch.log_softmax(logits[0], -1), atol=1e-12)


# ------------------------------------------------------------------ temperature scaling
def test_temperature_scaling_minimises_nll_and_recovers_known_temperature() -> None:
    g = torch.Generator().manual_seed(18)
    logits = torch.randn(4000, 5, generator=g, dtype=torch.float64) * 3
    y = torch.multinomial(torch.softmax(logits / 2.0, -1), 1, generator=g).squeeze(1)  # true T = 2
    t = F.fit_temperature(logits, y)
    assert t == pytest.approx(2.0, rel=0.1)

    def nll(temp: float) -> float:
        return F.negative_log_likelihood(F.apply_temperature(logits, temp), y).mean().item()

    best = nll(t)
    for temp in np.geomspace(0.2, 10, 60):
        assert best <= nll(float(temp)) + 1e-10
    assert best <= nll(1.0)
    assert best <= min(nll(t * 0.999), nll(t * 1.001)) + 1e-12


def test_temperature_bounds_and_errors() -> None:
    logits = torch.tensor([[5.0, -5.0], [-5.0, 5.0]])
    y = torch.tensor([0, 1])
    t = F.fit_temperature(logits, y)  # separable: the NLL keeps falling as T -> 0 until it underflows
    assert 0.01 <= t < 0.2
    assert F.negative_log_likelihood(F.apply_temperature(logits, t), y).max().item() < 1e-20
    with pytest.raises(ConfigError, match="temperature"):
        F.apply_temperature(logits, 0.0)


# ------------------------------------------------------------------ selective prediction
def test_risk_coverage_matches_loop_without_ties() -> None:
    g = torch.Generator().manual_seed(19)
    conf = torch.rand(50, generator=g, dtype=torch.float64)
    loss = torch.bernoulli(1 - conf, generator=g)
    cov, risk = F.risk_coverage(conf, loss)
    order = sorted(range(50), key=lambda i: -conf[i].item())
    for k in range(1, 51):
        assert risk[k - 1].item() == pytest.approx(sum(loss[i].item() for i in order[:k]) / k)
        assert cov[k - 1].item() == pytest.approx(k / 50)


def test_risk_coverage_ties_equal_average_over_all_orderings() -> None:
    conf = torch.tensor([0.9, 0.7, 0.7, 0.7, 0.7, 0.2], dtype=torch.float64)
    loss = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    _, risk = F.risk_coverage(conf, loss)
    curves = []
    for perm in itertools.permutations([1, 2, 3, 4]):
        order = [0, *perm, 5]
        curves.append([sum(loss[i].item() for i in order[:k]) / k for k in range(1, 7)])
    np.testing.assert_allclose(risk.numpy(), np.mean(curves, 0), atol=1e-12)


def test_aurc_prefers_a_good_ranking() -> None:
    loss = torch.tensor([0.0] * 8 + [1.0] * 2)
    good = torch.linspace(1, 0, 10)  # errors least confident
    assert F.aurc(good, loss) < F.aurc(-good, loss)
    assert F.aurc(good, loss) == pytest.approx(sum(max(0, k - 8) / k for k in range(1, 11)) / 10)


# ------------------------------------------------------------------ OOD detection
def test_ood_detection_and_bootstrap_match_sklearn() -> None:
    g = torch.Generator().manual_seed(20)
    s_in = torch.round(torch.randn(60, generator=g, dtype=torch.float64) * 4) / 4  # ties on purpose
    s_out = torch.round((torch.randn(45, generator=g, dtype=torch.float64) + 1) * 4) / 4
    det = F.ood_detection(s_in, s_out)
    labels = np.r_[np.zeros(60), np.ones(45)]
    assert det["auroc"] == pytest.approx(roc_auc_score(labels, np.r_[s_in.numpy(), s_out.numpy()]))
    boots = F.auroc_bootstrap(s_in, s_out, n_boot=30, seed=5)
    rng = np.random.default_rng(5)
    idx_in, idx_out = rng.integers(0, 60, (30, 60)), rng.integers(0, 45, (30, 45))
    for r in (0, 11, 29):
        ref = roc_auc_score(labels, np.r_[s_in.numpy()[idx_in[r]], s_out.numpy()[idx_out[r]]])
        assert boots[r].item() == pytest.approx(ref, abs=1e-12)
    sep = F.ood_detection(torch.zeros(5), torch.ones(5))
    assert sep["auroc"] == 1.0 and sep["aupr"] == 1.0


# ------------------------------------------------------------------ argument checks
def test_bad_arguments_say_what_was_expected() -> None:
    conf, ok = torch.tensor([0.5, 0.9]), torch.tensor([1.0, 0.0])
    with pytest.raises(ConfigError, match="n_bins"):
        F.expected_calibration_error(conf, ok, n_bins=0)
    with pytest.raises(ConfigError, match="Did you mean 'uniform'"):
        F.expected_calibration_error(conf, ok, binning="unifrom")  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"in \[0, 1\]"):
        F.expected_calibration_error(torch.tensor([1.5, 0.2]), ok)
    with pytest.raises(DataError, match="equal shape"):
        F.expected_calibration_error(conf, torch.tensor([1.0]))
    with pytest.raises(DataError, match=r"targets in \[0, 2\)"):
        F.negative_log_likelihood(torch.zeros(2, 2), torch.tensor([0, 2]))
    with pytest.raises(DataError, match="integer class"):
        F.brier_score(torch.full((2, 2), 0.5), torch.tensor([0.0, 1.0]))
    with pytest.raises(DataError, match="variance"):
        F.gaussian_nll(torch.zeros(2), torch.tensor([1.0, 0.0]), torch.zeros(2))
