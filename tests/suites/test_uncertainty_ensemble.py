"""MC dropout and deep-ensemble evaluation: side-effect freedom (ModuleState), BatchNorm
in eval, the analytic mean and variance of dropout, vmap == loop, and the fallbacks."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from workbench.suites.uncertainty.ensemble import DeepEnsemble, mc_dropout_layers, mc_dropout_predict
from workbench.errors import ConfigError, ModelError
from workbench.torch_utils import ModuleState, limited_threads


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is faster, and much faster on a shared 2-core box."""
    with limited_threads(1):
        yield


class TinyCNN(nn.Module):
    output_kind = "logits"

    def __init__(self, p: float = 0.3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop2d = nn.Dropout2d(p)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(p), nn.Linear(4 * 8 * 8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop2d(torch.relu(self.bn(self.conv(x)))))


class TinyLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.lstm, self.head = nn.Embedding(11, 8), nn.LSTM(8, 8, batch_first=True), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.emb(x))
        return self.head(out[:, -1])


def _cnn(seed: int, p: float = 0.3) -> TinyCNN:
    torch.manual_seed(seed)
    m = TinyCNN(p)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 2.0)
    return m


def _images(n: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ MC dropout
@pytest.mark.parametrize("start_in_train_mode", [False, True])
def test_mc_dropout_leaves_model_unchanged_and_batchnorm_in_eval(start_in_train_mode: bool) -> None:
    model = _cnn(0)
    model.train(start_in_train_mode)
    model.conv.weight.grad = torch.ones_like(model.conv.weight)
    seen: dict[str, list[bool]] = {"bn": [], "dropout": [], "drop2d": []}
    model.bn.register_forward_hook(lambda m, i, o: seen["bn"].append(m.training))
    model.head[1].register_forward_hook(lambda m, i, o: seen["dropout"].append(m.training))
    model.drop2d.register_forward_hook(lambda m, i, o: seen["drop2d"].append(m.training))
    before = ModuleState.capture(model)
    rng_before = torch.get_rng_state()
    out = mc_dropout_predict(model, _images(), samples=5, seed=0, max_rows=20)
    assert out.shape == (5, 12, 3)
    assert seen["bn"] and not any(seen["bn"])
    assert all(seen["dropout"]) and all(seen["drop2d"])
    assert before.diff(model) == []
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's random stream is untouched


def test_mc_dropout_is_seeded_and_samples_differ() -> None:
    model = _cnn(1).eval()
    x = _images()
    a = mc_dropout_predict(model, x, samples=6, seed=3)
    b = mc_dropout_predict(model, x, samples=6, seed=3)
    c = mc_dropout_predict(model, x, samples=6, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (a[0] - a[1]).abs().max() > 0  # the repeated batch draws its own masks per copy


@pytest.mark.parametrize("batched", [True, False])
def test_mc_dropout_matches_analytic_mean_and_variance(batched: bool) -> None:
    """y = w . dropout(x): E[y] = w . x and Var[y] = p / (1 - p) sum_i w_i^2 x_i^2."""
    p = 0.3
    model = nn.Sequential(nn.Dropout(p), nn.Linear(6, 1, bias=False))
    torch.manual_seed(0)
    nn.init.normal_(model[1].weight)
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(1))
    t = 6000
    out = mc_dropout_predict(model, x, samples=t, seed=0, batched=batched, max_rows=4096).squeeze(-1).double()  # (T, 3)
    w = model[1].weight.detach().double().squeeze(0)
    mean = x.double() @ w
    var = p / (1 - p) * (x.double() ** 2 * w**2).sum(1)
    se_mean = (var / t).sqrt()
    assert torch.all((out.mean(0) - mean).abs() < 4 * se_mean)
    assert torch.allclose(out.var(0), var, rtol=0.08)


def test_mc_dropout_without_dropout_raises_and_p0_does_not_count() -> None:
    plain = nn.Sequential(nn.Linear(4, 2))
    assert mc_dropout_layers(plain) == []
    with pytest.raises(ModelError, match="no dropout layer"):
        mc_dropout_predict(plain, torch.zeros(2, 4), samples=3)
    assert mc_dropout_layers(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.0))) == []


def test_mc_dropout_defeats_the_transformer_fast_path() -> None:
    """In eval mode nn.TransformerEncoderLayer takes a fused path that skips its dropout;
    the layer itself is switched to training mode (nothing else changes there)."""
    torch.manual_seed(0)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, dropout=0.2, batch_first=True), 2).eval()
    names = mc_dropout_layers(enc)
    assert "layers.0" in names and "layers.0.self_attn" in names and "layers.0.dropout1" in names
    before = ModuleState.capture(enc)
    out = mc_dropout_predict(enc, torch.randn(3, 5, 16), samples=4, seed=0)
    assert (out[0] - out[1]).abs().max() > 1e-3
    assert before.diff(enc) == []


# ------------------------------------------------------------------ deep ensembles
def test_vmap_ensemble_equals_loop_with_batchnorm() -> None:
    members = [_cnn(s).eval() for s in range(4)]
    x = _images(37)
    fast = DeepEnsemble(members, vectorize=True)
    out = fast.predict(x, max_rows=40)  # several chunks of 10
    assert fast.path == "vmap" and fast.fallback_reason is None
    ref = torch.stack([m(x) for m in members]).detach()
    assert out.shape == (4, 37, 3)
    assert torch.allclose(out, ref, atol=1e-5, rtol=0)
    slow = DeepEnsemble(members, vectorize=False)
    assert slow.path == "loop" and torch.allclose(slow.predict(x), out, atol=1e-5, rtol=0)
    auto = DeepEnsemble(members)  # "auto": the loop on CPU, where it measured faster
    assert auto.path == "loop" and "auto" in (auto.fallback_reason or "")
    assert torch.equal(auto.predict(x), slow.predict(x))
    with pytest.raises(ConfigError, match="vectorize"):
        DeepEnsemble(members, vectorize="fast")


@pytest.mark.parametrize("vectorize", [True, False])
def test_ensemble_leaves_members_unchanged_even_in_train_mode(vectorize: bool) -> None:
    members = [_cnn(s) for s in range(3)]
    members[1].train()  # a member handed over in training mode is evaluated in eval mode
    states = [ModuleState.capture(m) for m in members]
    x = _images(8)
    out = DeepEnsemble(members, vectorize=vectorize).predict(x)
    with torch.no_grad():
        ref = torch.stack([copy.deepcopy(m).eval()(x) for m in members])
    assert torch.allclose(out, ref, atol=1e-5)
    assert all(s.diff(m) == [] for s, m in zip(states, members))
    assert members[1].training and members[1].bn.training


def test_ensemble_falls_back_to_loop_for_lstm() -> None:
    members = []
    for s in range(3):
        torch.manual_seed(s)
        members.append(TinyLSTM().eval())
    x = torch.randint(0, 11, (9, 5), generator=torch.Generator().manual_seed(0))
    ens = DeepEnsemble(members, vectorize=True)
    out = ens.predict(x)
    assert ens.path == "loop" and "vmap failed" in (ens.fallback_reason or "")
    with torch.no_grad():
        assert torch.allclose(out, torch.stack([m(x) for m in members]), atol=1e-6)


def test_ensemble_of_different_shapes_uses_loop() -> None:
    a, b = nn.Linear(4, 2), nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    ens = DeepEnsemble([a, b], vectorize=True)
    assert ens.path == "loop" and "differ" in (ens.fallback_reason or "")
    assert ens.predict(torch.zeros(5, 4)).shape == (2, 5, 2)
    with pytest.raises(ConfigError, match="at least one"):
        DeepEnsemble([])
