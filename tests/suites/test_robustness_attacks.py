"""Attacks (suites/robustness/functional.py) against independent references: FGSM on a
linear model against its closed form, PGD against a plain loop written here, attack
ordering (PGD ≥ FGSM, APGD ≥ PGD), invariants (eps=0, norms, bounds, determinism) and the
side-effect contract on models in train and eval mode with dropout and BatchNorm."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from workbench.suites.robustness import functional as A
from workbench.suites.robustness.testing import SmallCNN, TinyTokenClassifier, digits_dataset, trained_digits_cnn
from workbench.errors import ConfigError, DataError
from workbench.torch_utils import ModuleState

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    return digits_dataset()


@pytest.fixture(scope="module")
def cnn(shared_cache):
    return trained_digits_cnn(shared_cache)


@pytest.fixture(scope="module")
def batch(digits):
    return digits.test.x[:120].clone(), digits.test.y[:120].clone()


def _acc(model, x, y) -> float:
    return float((A.predict_logits(model, x).argmax(1) == y).float().mean())


def _linear(features: int = 6, classes: int = 4, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(features, classes)


# ----------------------------------------------------------------------------- references


def test_fgsm_linear_closed_form():
    """For f(x) = Wx + b, ∇_x CE = Wᵀ(softmax(f(x)) − e_y): FGSM is x + eps·sign(that)."""
    lin = _linear()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(32, 6, generator=g)
    y = torch.randint(0, 4, (32,), generator=g)
    with torch.no_grad():
        p = torch.softmax(lin(x), dim=1)
        grad = (p - F.one_hot(y, 4).float()) @ lin.weight  # (B, F)
    eps = 0.07
    expect = (x + eps * grad.sign()).clamp(0, 1)
    got = A.fgsm(lin, x, y, eps=eps, bounds=(0, 1))
    assert torch.allclose(got, expect, atol=1e-7)
    expect_l2 = x + eps * grad / grad.norm(dim=1, keepdim=True)
    got_l2 = A.fgsm(lin, x, y, eps=eps, norm="l2", bounds=None)
    assert torch.allclose(got_l2, expect_l2, atol=1e-6)
    # targeted: descend the CE of the target class
    t = (y + 1) % 4
    grad_t = (p - F.one_hot(t, 4).float()) @ lin.weight
    got_t = A.fgsm(lin, x, y, eps=eps, bounds=None, targeted=True, target=t)
    assert torch.allclose(got_t, x - eps * grad_t.sign(), atol=1e-7)


def _reference_pgd(model, x, y, eps, alpha, steps, norm):
    """The plain loop: k forward+backward passes, no random start."""
    xa = x.clone()
    for _ in range(steps):
        xa.requires_grad_(True)
        loss = F.cross_entropy(model(xa), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, xa)
        with torch.no_grad():
            if norm == "linf":
                xa = xa + alpha * g.sign()
                xa = torch.min(torch.max(xa, x - eps), x + eps).clamp(0, 1)
            else:
                gn = g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
                xa = xa + alpha * (g / (gn + 1e-12))
                d = xa - x
                dn = d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
                xa = (x + d * torch.clamp(eps / (dn + 1e-12), max=1.0)).clamp(0, 1)
    return xa.detach()


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.8)])
def test_pgd_matches_plain_loop(cnn, batch, norm, eps):
    x, y = batch
    alpha = 2.5 * eps / 10
    ref = _reference_pgd(cnn, x, y, eps, alpha, 10, norm)
    got = A.pgd(cnn, x, y, eps=eps, norm=norm, steps=10, random_start=False, keep="last")
    assert (got - ref).abs().max() <= 1e-6
    # the default keeps, per sample, the first iterate that fools it: the plain loop's last
    # iterate where no earlier iterate fooled the sample
    first = A.pgd(cnn, x, y, eps=eps, norm=norm, steps=10, random_start=False)
    fooled_first = A.predict_logits(cnn, first).argmax(1) != y
    fooled_last = A.predict_logits(cnn, ref).argmax(1) != y
    assert bool((fooled_first >= fooled_last).all())  # never weaker than the last iterate


def test_pgd_never_weaker_than_fgsm_and_apgd_at_least_pgd(cnn, batch):
    x, y = batch
    for eps in (0.05, 0.1, 0.15):
        gen = torch.Generator().manual_seed(0)
        a_fgsm = _acc(cnn, A.fgsm(cnn, x, y, eps=eps), y)
        a_pgd = _acc(cnn, A.pgd(cnn, x, y, eps=eps, steps=20, generator=gen), y)
        a_apgd = _acc(cnn, A.apgd(cnn, x, y, eps=eps, steps=20, generator=gen), y)
        assert a_pgd <= a_fgsm
        assert a_apgd <= a_pgd + 1.0 / len(y)
    # and the attacks actually do something at eps=0.1 on a standard model
    assert a_pgd < _acc(cnn, x, y) - 0.2


def test_apgd_targeted_breaks_saturated_logits(cnn, batch):
    """Logits x1e4: CE gradients underflow (PGD-CE looks robust), targeted DLR is scale-free."""
    from workbench.suites.robustness.testing import ScaledLogits

    x, y = batch
    masked = ScaledLogits(cnn)
    gen = torch.Generator().manual_seed(0)
    a_pgd = _acc(masked, A.pgd(masked, x, y, eps=0.1, steps=10, generator=gen), y)
    a_apgdt = _acc(masked, A.apgd_targeted(masked, x, y, eps=0.1, steps=20, n_targets=3, generator=gen), y)
    a_std = _acc(cnn, A.apgd_targeted(cnn, x, y, eps=0.1, steps=20, n_targets=3,
                                      generator=torch.Generator().manual_seed(0)), y)
    assert a_pgd > 0.9
    assert a_apgdt < a_pgd - 0.25
    assert abs(a_apgdt - a_std) <= 0.1  # same network underneath


def test_apgd_checkpoints_follow_the_paper():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06): w_j = ceil(p_j N)
    p, out = [0.0, 0.22], []
    while p[-1] <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    expected = [round(q * 100) - 1 for q in p[1:] if q * 100 <= 100]
    assert A.apgd_checkpoints(100) == expected == [21, 40, 56, 69, 79, 86, 92, 98]
    assert A.apgd_checkpoints(20)[0] == 3  # floor(0.22 * 20) = 4 steps, 0-based index 3


def test_apgd_first_step_is_a_2eps_signed_step():
    """With one step, APGD = Π(x0 + 2·eps·sign(∇L(x0))) from its random start x0."""
    lin = _linear()
    g = torch.Generator().manual_seed(2)
    x = torch.rand(16, 6, generator=g)
    y = torch.randint(0, 4, (16,), generator=g)
    eps = 0.05
    x0 = (x + A._random_start_apgd(x, eps, "linf", torch.Generator().manual_seed(5))).clamp(0, 1)
    x0r = x0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(lin(x0r), y, reduction="sum"), x0r)
    x1 = A.project(x0 + 2 * eps * grad.sign(), x, eps, "linf", (0.0, 1.0))
    with torch.no_grad():
        l0 = F.cross_entropy(lin(x0), y, reduction="none")
        l1 = F.cross_entropy(lin(x1), y, reduction="none")
        fooled1 = lin(x1).argmax(1) != y
        fooled0 = lin(x0).argmax(1) != y
    # the first fooling iterate is kept (a start that fools stays), else the higher-loss one
    expect = torch.where((~fooled0 & (fooled1 | (l1 > l0)))[:, None], x1, x0)
    got = A.apgd(lin, x, y, eps=eps, steps=1, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(got, expect, atol=1e-7)


def test_dlr_losses_are_scale_and_shift_invariant():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(20, 6, generator=g)
    y = torch.randint(0, 6, (20,), generator=g)
    t = (y + 2) % 6
    for f in (lambda a: A.dlr_loss(a, y), lambda a: A.dlr_targeted_loss(a, y, t)):
        assert torch.allclose(f(z), f(37.0 * z + 5.0), atol=1e-5)
    # hand example: z = [3, 1, 0, -1], y = 1: -(1 - 3) / (3 - 0) = 2/3
    assert torch.allclose(A.dlr_loss(torch.tensor([[3.0, 1.0, 0.0, -1.0]]), torch.tensor([1])), torch.tensor([2 / 3]))
    # targeted, y = 0, t = 3: -(3 - (-1)) / (3 - (0 - 1)/2) = -4 / 3.5
    got = A.dlr_targeted_loss(torch.tensor([[3.0, 1.0, 0.0, -1.0]]), torch.tensor([0]), torch.tensor([3]))
    assert torch.allclose(got, torch.tensor([-4 / 3.5]))


# ----------------------------------------------------------------------------- invariants

ATTACKS = {
    "fgsm": lambda m, x, y, eps, norm, g: A.fgsm(m, x, y, eps=eps, norm=norm),
    "pgd": lambda m, x, y, eps, norm, g: A.pgd(m, x, y, eps=eps, norm=norm, steps=5, restarts=2, generator=g),
    "apgd_ce": lambda m, x, y, eps, norm, g: A.apgd(m, x, y, eps=eps, norm=norm, steps=6, generator=g),
    "apgd_dlr": lambda m, x, y, eps, norm, g: A.apgd(m, x, y, eps=eps, norm=norm, steps=6, loss="dlr", generator=g),
    "apgd_t": lambda m, x, y, eps, norm, g: A.apgd_targeted(m, x, y, eps=eps, norm=norm, steps=6, n_targets=2,
                                                            generator=g),
    "random_search": lambda m, x, y, eps, norm, g: A.random_search(m, x, y, eps=eps, norm=norm, queries=15,
                                                                   generator=g),
    "random_noise": lambda m, x, y, eps, norm, g: A.random_noise(x, eps=eps, norm=norm, generator=g),
}


@pytest.mark.parametrize("name", list(ATTACKS))
@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.9)])
def test_norm_bounds_device_dtype_and_input_untouched(cnn, batch, name, norm, eps):
    x, y = batch[0][:40], batch[1][:40]
    x_before = x.clone()
    out = ATTACKS[name](cnn, x, y, eps, norm, torch.Generator().manual_seed(0))
    assert torch.equal(x, x_before)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert not out.requires_grad and out.grad_fn is None
    assert float(A.perturbation_norm(out - x, norm).max()) <= eps + 1e-6
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    if name != "random_noise":
        assert not torch.equal(out, x)


@pytest.mark.parametrize("name", [n for n in ATTACKS if n != "random_noise"])
def test_eps_zero_returns_input_and_clean_accuracy(cnn, batch, name):
    x, y = batch
    out = ATTACKS[name](cnn, x, y, 0.0, "linf", torch.Generator().manual_seed(0))
    assert torch.equal(out, x)
    assert _acc(cnn, out, y) == _acc(cnn, x, y)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_deterministic_for_a_seed(cnn, batch, name):
    x, y = batch[0][:30], batch[1][:30]
    a = ATTACKS[name](cnn, x, y, 0.1, "linf", torch.Generator().manual_seed(3))
    b = ATTACKS[name](cnn, x, y, 0.1, "linf", torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    if name not in ("fgsm",):
        c = ATTACKS[name](cnn, x, y, 0.1, "linf", torch.Generator().manual_seed(4))
        assert not torch.equal(a, c)


def test_restarts_keep_the_per_sample_worst_case(cnn, batch):
    x, y = batch
    one = A.pgd(cnn, x, y, eps=0.08, steps=3, restarts=1, generator=torch.Generator().manual_seed(9))
    three = A.pgd(cnn, x, y, eps=0.08, steps=3, restarts=3, generator=torch.Generator().manual_seed(9))
    c1 = A.predict_logits(cnn, one).argmax(1) == y
    c3 = A.predict_logits(cnn, three).argmax(1) == y
    assert bool((c3 <= c1).all())  # every point fooled by the first restart stays fooled
    assert int(c3.sum()) < int(c1.sum())  # and further restarts fool more at this budget


@pytest.mark.parametrize("attack", ["pgd", "apgd"])
def test_restarts_keep_the_first_success_else_the_highest_loss_run(cnn, batch, attack):
    """Two restarts equal two single-start runs composed by hand, drawing from the same
    generator: the second run only on the points the first left standing; per point the
    first run's point if it fools, else the second's if it fools or has the higher CE loss
    (the loss both attacks maximise here), else the first's."""
    x, y = batch
    kw = dict(eps=0.05, steps=5) if attack == "pgd" else dict(eps=0.05, steps=5, loss="ce")
    fn = getattr(A, attack)
    two = fn(cnn, x, y, restarts=2, generator=torch.Generator().manual_seed(9), **kw)
    gen = torch.Generator().manual_seed(9)
    first = fn(cnn, x, y, generator=gen, **kw)
    z1 = A.predict_logits(cnn, first)
    standing = (z1.argmax(1) == y).nonzero().squeeze(1)
    assert 0 < standing.numel() < len(y)
    second = fn(cnn, x[standing], y[standing], generator=gen, **kw)
    z2 = A.predict_logits(cnn, second)
    take = (z2.argmax(1) != y[standing]) | (A.ce_loss(z2, y[standing]) > A.ce_loss(z1[standing], y[standing]))
    expected = first.clone()
    expected[standing[take]] = second[take]
    assert 0 < int(take.sum()) < standing.numel()  # both branches are exercised
    assert torch.equal(two, expected)


def test_targeted_pgd_reaches_the_target(cnn, batch):
    x, y = batch
    t = (y + 1) % 10
    xa = A.pgd(cnn, x, y, eps=0.3, steps=30, targeted=True, target=t, generator=torch.Generator().manual_seed(0))
    hit = (A.predict_logits(cnn, xa).argmax(1) == t).float().mean()
    assert hit > 0.8


@settings(max_examples=25, deadline=None)
@given(eps=st.floats(0.0, 2.0), norm=st.sampled_from(["linf", "l2"]), steps=st.integers(1, 4),
       bounded=st.booleans())
def test_projection_property_on_a_linear_model(eps, norm, steps, bounded):
    lin = _linear(seed=3)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 6, generator=g)
    y = torch.randint(0, 4, (8,), generator=g)
    bounds = (0.0, 1.0) if bounded else None
    out = A.pgd(lin, x, y, eps=eps, norm=norm, steps=steps, bounds=bounds, generator=g)
    assert float(A.perturbation_norm(out - x, norm).max()) <= eps + 1e-6
    if bounded:
        assert float(out.min()) >= 0 and float(out.max()) <= 1


# ----------------------------------------------------------------------------- side effects


def _prepare_side_effect_model(mode: str) -> nn.Module:
    torch.manual_seed(0)
    m = SmallCNN()
    # some BN statistics and a leftover .grad, one frozen parameter, one submodule in the other mode
    m.train()
    with torch.no_grad():
        m(torch.rand(32, 1, 8, 8))
    m.fc.weight.grad = torch.full_like(m.fc.weight, 0.5)
    m.conv2.bias.requires_grad_(False)
    m.train(mode == "train")
    m.drop.train(mode != "train")
    return m


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", list(ATTACKS) + ["input_gradient", "zero_gradient_fraction"])
def test_attack_leaves_model_exactly_as_found(mode, name):
    m = _prepare_side_effect_model(mode)
    before = ModuleState.capture(m)
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(16) % 10
    if name == "input_gradient":
        A.input_gradient(m, x, y)
    elif name == "zero_gradient_fraction":
        A.zero_gradient_fraction(m, x, y)
    else:
        ATTACKS[name](m, x, y, 0.1, "linf", torch.Generator().manual_seed(0))
    assert before.diff(m) == []
    assert m.training == (mode == "train") and m.drop.training == (mode != "train")


def test_attack_is_deterministic_even_for_a_train_mode_dropout_model():
    """Attacks evaluate in eval mode: dropout is off, so two runs agree."""
    m = _prepare_side_effect_model("train")
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(16) % 10
    a = A.pgd(m, x, y, eps=0.1, steps=3, random_start=False)
    b = A.pgd(m, x, y, eps=0.1, steps=3, random_start=False)
    assert torch.equal(a, b)


def test_embedding_space_attack_on_a_token_model_through_the_hook():
    from workbench import embedding as E
    from workbench.errors import ModelError

    torch.manual_seed(0)
    tok = TinyTokenClassifier()
    idx = torch.randint(0, 12, (10, 8), generator=torch.Generator().manual_seed(0))
    y = torch.arange(10) % 3
    name, layer = E.find_embedding_layer(tok, idx)
    assert name == "token_embedding"
    space = E.TokenEmbeddingModel(tok, layer, idx, name)
    e = space.clean()
    tok.eval()
    assert torch.equal(e, tok.token_embedding(idx).detach())
    # the hook gives the same function as the model's own shortcut methods
    assert torch.allclose(A.predict_logits(space, e), A.predict_logits(tok, idx))
    e2 = e + 0.3 * torch.randn(e.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(space(e2), tok.forward_from_embeddings(e2), atol=1e-6)
    tok.train()
    before = ModuleState.capture(tok)
    scale = E.embedding_eps_scale(e, "linf")
    assert scale == pytest.approx(float(tok.token_embedding(idx).detach().pow(2).mean().sqrt()))
    assert E.embedding_eps_scale(e, "l2") == pytest.approx(float(e.reshape(10, -1).norm(dim=1).mean()))
    for attack in (A.pgd, A.apgd, A.apgd_targeted):
        ea = attack(space, e, y, eps=0.5 * scale, steps=5, bounds=None, batch_size=4)  # chunks restrict the ids
        assert float(A.perturbation_norm(ea - e, "linf").max()) <= 0.5 * scale + 1e-6
    assert before.diff(tok) == []
    with pytest.raises(ModelError, match="restrict"):
        space(e[:3])
    with pytest.raises(ModelError, match="no nn.Embedding|has none"):
        E.find_embedding_layer(nn.Linear(3, 3))


def test_bad_inputs_raise_clear_errors(cnn, batch):
    x, y = batch
    with pytest.raises(ConfigError, match="norm"):
        A.pgd(cnn, x, y, eps=0.1, norm="l3")
    with pytest.raises(ConfigError, match="eps"):
        A.fgsm(cnn, x, y, eps=-0.1)
    with pytest.raises(DataError, match="true labels"):
        A.fgsm(cnn, x, y.float(), eps=0.1)
    with pytest.raises(DataError, match="embedding space"):
        A.fgsm(cnn, torch.zeros(4, 8, dtype=torch.long), y[:4], eps=0.1)
    with pytest.raises(ConfigError, match="random_start"):
        A.pgd(cnn, x, y, eps=0.1, restarts=2, random_start=False)
    with pytest.raises(DataError, match="target"):
        A.pgd(cnn, x, y, eps=0.1, targeted=True)
    with pytest.raises(ConfigError, match="loss"):
        A.apgd(cnn, x, y, eps=0.1, loss="hinge")
