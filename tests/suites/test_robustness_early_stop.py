"""Early stop per example (issue 21): an iterative attack stops spending steps on a sample
once an iterate fools it, with identical results: the same adversarial points, hence the
same per-example success, robust accuracy and per-example worst case over attacks, as the
same attack stepping every sample to the end (`early_stop=False`). Checked on a trained CNN
at an eps where about half the points are fooled, and on a token model through its
embedding hook; the row count the model sees shows the saving."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workbench.suites.robustness import functional as A
from workbench.suites.robustness.testing import digits_dataset, trained_digits_cnn

torch.set_num_threads(1)


class RowCounter(nn.Module):
    """Counts the rows every forward pass sees (the work an attack spends), those with a
    graph for a backward pass (input requiring grad), and keeps each pass's predictions."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.rows = 0
        self.grad_rows = 0
        self.preds: list[torch.Tensor] = []

    def reset(self) -> None:
        self.rows, self.grad_rows, self.preds = 0, 0, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        self.grad_rows += x.shape[0] if x.requires_grad else 0
        out = self.module(x)
        self.preds.append(out.detach().argmax(1))
        return out


@pytest.fixture(scope="module")
def setting(shared_cache):
    cnn = trained_digits_cnn(shared_cache)
    d = digits_dataset()
    x, y = d.test.x[:120], d.test.y[:120]
    return RowCounter(cnn).eval(), x, y


ATTACKS = {
    "pgd": lambda m, x, y, eps, norm, es: A.pgd(m, x, y, eps=eps, norm=norm, steps=20, restarts=2, early_stop=es,
                                                  bounds=(0, 1), generator=torch.Generator().manual_seed(3)),
    "apgd_ce": lambda m, x, y, eps, norm, es: A.apgd(m, x, y, eps=eps, norm=norm, steps=20, early_stop=es,
                                                      bounds=(0, 1), generator=torch.Generator().manual_seed(3)),
    "apgd_dlr": lambda m, x, y, eps, norm, es: A.apgd(m, x, y, eps=eps, norm=norm, steps=20, loss="dlr", restarts=2,
                                                       early_stop=es, bounds=(0, 1),
                                                       generator=torch.Generator().manual_seed(3)),
    "apgd_t": lambda m, x, y, eps, norm, es: A.apgd_targeted(m, x, y, eps=eps, norm=norm, steps=20, n_targets=3,
                                                              early_stop=es, bounds=(0, 1),
                                                              generator=torch.Generator().manual_seed(3)),
}


def _fooled(model, x_adv, y):
    return A.predict_logits(model, x_adv).argmax(1) != y


@pytest.mark.parametrize("norm,eps", [("linf", 0.06), ("l2", 0.5)])
def test_early_stop_gives_identical_results_with_fewer_forward_rows(setting, norm, eps):
    model, x, y = setting
    worst = {True: torch.zeros_like(y, dtype=torch.bool), False: torch.zeros_like(y, dtype=torch.bool)}
    for name, attack in ATTACKS.items():
        rows, out = {}, {}
        for es in (True, False):
            model.rows = 0
            out[es] = attack(model, x, y, eps, norm, es)
            rows[es] = model.rows
        f_on, f_off = _fooled(model, out[True], y), _fooled(model, out[False], y)
        assert torch.equal(f_on, f_off), name  # per-example success, hence robust accuracy
        assert torch.equal(out[True], out[False]), name  # bitwise the same adversarial points
        worst[True] |= f_on
        worst[False] |= f_off
        assert rows[True] < rows[False], (name, rows)
    assert torch.equal(worst[True], worst[False])  # the per-example worst case over attacks
    frac = float(worst[True].float().mean())
    assert 0.2 < frac < 0.95, frac  # an eps where the early stop has work to skip


def test_early_stop_on_a_token_model_through_the_embedding_hook():
    from workbench import embedding as E
    from workbench.suites.robustness.testing import GRUTokenClassifier, token_dataset, train_plain

    data = token_dataset()
    torch.manual_seed(0)
    gru = train_plain(GRUTokenClassifier(), data, epochs=20)
    ids, y = data.test.x, data.test.y
    _, layer = E.find_embedding_layer(gru, ids)
    space = E.TokenEmbeddingModel(gru, layer, ids)
    e = space.clean()
    eps = 0.3 * E.embedding_eps_scale(e, "linf")
    for attack in (A.pgd, A.apgd):
        a = attack(space, e, y, eps=eps, steps=10, bounds=None, early_stop=True, batch_size=16,
                   generator=torch.Generator().manual_seed(0))
        b = attack(space, e, y, eps=eps, steps=10, bounds=None, early_stop=False, batch_size=16,
                   generator=torch.Generator().manual_seed(0))
        assert torch.equal(_fooled(space, a, y), _fooled(space, b, y))
        assert torch.equal(a, b)


def _first_success(preds: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """(N,) long: the first pass whose prediction is wrong, -1 if none; preds[j] (N,)."""
    wrong = torch.stack(preds) != y  # (passes, N)
    return torch.where(wrong.any(0), wrong.float().argmax(0), torch.full_like(y, -1))


def test_pgd_early_stop_costs_exactly_the_floor_in_forward_rows(setting):
    """A point first fooled at iterate t needs t+1 forwards (iterates 0..t), one never
    fooled `steps`; the first successes come from a plain loop written here. Backward rows:
    one per forward, i.e. the floor (t per fooled point) plus one per fooled point."""
    model, x, y = setting
    eps, steps = 0.06, 20
    alpha = 2.5 * eps / steps
    xa, preds = x.clone(), []
    for _ in range(steps):
        xa.requires_grad_(True)
        z = model.module(xa)
        preds.append(z.detach().argmax(1))
        (g,) = torch.autograd.grad(F.cross_entropy(z, y, reduction="sum"), xa)
        xa = torch.min(torch.max(xa.detach() + alpha * g.sign(), x - eps), x + eps).clamp(0, 1)
    first = _first_success(preds, y)
    fooled = first >= 0
    floor = int((first[fooled] + 1).sum()) + steps * int((~fooled).sum())
    assert 0.2 < float(fooled.float().mean()) < 0.9  # work to skip, and points that go all the way
    model.reset()
    A.pgd(model, x, y, eps=eps, steps=steps, random_start=False)
    assert model.rows == floor < steps * len(y)
    assert model.grad_rows == floor  # the floor is floor - fooled.sum(): the fooling step's backward is spent


def test_apgd_early_stop_costs_the_floor(setting):
    """APGD checks iterates 0..steps: a point first fooled at iterate t costs t+1 forwards
    and min(t+1, steps) backwards, a point never fooled steps+1 forwards (the last iterate
    is a forward only) and steps backwards, and no pass over the output follows. First
    successes from the run without early stop (all its passes see every row)."""
    model, x, y = setting
    eps, steps = 0.06, 20
    model.reset()
    A.apgd(model, x, y, eps=eps, steps=steps, early_stop=False, generator=torch.Generator().manual_seed(3))
    assert len(model.preds) == steps + 1 and model.rows == (steps + 1) * len(y)
    assert model.grad_rows == steps * len(y)
    first = _first_success(model.preds, y)
    fooled = first >= 0
    assert 0.2 < float(fooled.float().mean()) < 0.9
    model.reset()
    A.apgd(model, x, y, eps=eps, steps=steps, generator=torch.Generator().manual_seed(3))
    fwd = int((first[fooled] + 1).sum()) + (steps + 1) * int((~fooled).sum())
    bwd = int((first[fooled] + 1).clamp(max=steps).sum()) + steps * int((~fooled).sum())
    assert (model.rows, model.grad_rows) == (fwd, bwd)
