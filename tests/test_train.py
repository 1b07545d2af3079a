import pytest
import torch

from tests.helpers import TinyMLP, blobs
from workbench.errors import ConfigError, UnknownNameError
from workbench.train import RECIPES, TrainConfig, cache_key, task_loss, train_cached, train_model

CPU = torch.device("cpu")


def test_trains_and_is_deterministic():
    data = blobs()
    cfg = TrainConfig(epochs=15, lr=1e-2, seed=1)
    torch.manual_seed(0)
    a = train_model(TinyMLP(), data, cfg, device=CPU)
    torch.manual_seed(0)
    b = train_model(TinyMLP(), data, cfg, device=CPU)
    assert a.history[-1]["val_score"] > 0.95
    for pa, pb in zip(a.module.parameters(), b.module.parameters()):
        assert torch.equal(pa, pb)
    assert not a.module.training


def test_early_stopping_keeps_best_epoch():
    data = blobs()
    res = train_model(TinyMLP(), data, TrainConfig(epochs=60, lr=1e-2, patience=2), device=CPU)
    assert len(res.history) < 60
    best = max(h["val_score"] for h in res.history)
    assert res.history[res.best_epoch]["val_score"] == best


def test_cache_hit_returns_identical_weights(tmp_path):
    data = blobs()
    cfg = TrainConfig(epochs=3, seed=2)
    spec = {"arch": "tiny", "options": {}}
    first = train_cached(TinyMLP, spec, data, cfg, device=CPU, cache_dir=tmp_path)
    second = train_cached(TinyMLP, spec, data, cfg, device=CPU, cache_dir=tmp_path)
    assert not first.cache_hit and second.cache_hit
    for pa, pb in zip(first.module.parameters(), second.module.parameters()):
        assert torch.equal(pa, pb)
    assert cache_key(spec, data, cfg) != cache_key(spec, data, TrainConfig(epochs=3, seed=3))


def test_recipe_hook_sees_every_batch_and_selects_epoch():
    calls = {"batches": 0}

    class Counting:
        name = "counting"

        def batch_loss(self, module, x, y, loss_fn):
            calls["batches"] += 1
            assert module.training
            return loss_fn(module(x), y)

        def epoch_end(self, module, data, epoch, device):
            return {"selection_score": -epoch}  # prefers the first epoch

    data = blobs()
    res = train_model(TinyMLP(), data, TrainConfig(epochs=3, batch_size=48, patience=None), device=CPU, recipe=Counting())
    assert calls["batches"] == 3 * 3  # 144 train rows / 48
    assert res.best_epoch == 0


def test_config_errors():
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="Did you mean 'epochs'"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(UnknownNameError):
        RECIPES.get("pgd_att")


def test_task_losses_match_closed_forms():
    out = torch.tensor([[1.0, 0.0], [0.5, 0.2]])
    y = torch.tensor([0.0, 1.0])
    nll = task_loss("mean_logvar")(out, y)
    var = out[:, 1].exp()
    ref = 0.5 * (torch.log(2 * torch.pi * var) + (y - out[:, 0]) ** 2 / var)
    assert torch.allclose(nll, ref.mean())
    assert torch.allclose(task_loss("mean")(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0])), torch.tensor(2.5))


def test_module_state_sees_added_parameters_and_frozen_eval_tolerates_them():
    from torch import nn

    from workbench.torch_utils import ModuleState, frozen_eval

    m = TinyMLP().train()
    before = ModuleState.capture(m)
    with frozen_eval(m):
        assert not m.training and not any(p.requires_grad for p in m.parameters())
        m.net[0].extra = nn.Parameter(torch.zeros(1))  # what shap's DeepExplainer does
    assert m.training and all(p.requires_grad for n, p in m.named_parameters() if n != "net.0.extra")
    assert any("added" in d for d in before.diff(m))


def test_predict_backs_off_on_cuda_out_of_memory(monkeypatch):
    """The CUDA branch of torch_utils.predict halves the batch on OOM (simulated on CPU)."""
    import workbench.torch_utils as tu

    calls = []
    real = tu._predict

    def flaky(module, x, *, batch_size, device):
        calls.append(batch_size)
        if batch_size > 16:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(module, x, batch_size=batch_size, device=torch.device("cpu"))

    monkeypatch.setattr(tu, "_predict", flaky)
    m = TinyMLP().eval()
    x = torch.randn(40, 4)
    out = tu.predict(m, x, batch_size=64, device=torch.device("cuda"))
    assert calls == [64, 32, 16]
    with torch.no_grad():
        assert torch.allclose(out, m(x))


def test_shard_weights_make_the_averaged_gradient_the_global_batch_gradient():
    """DDP averages the ranks' gradients; with uneven shards (7 rows on 2 ranks: 4 and 3)
    the weighted shard means must average to the global-batch mean, gradient included."""
    from workbench.train import shard_weight

    torch.manual_seed(0)
    w = torch.randn(3, requires_grad=True)
    x, y = torch.randn(7, 3), torch.randn(7)

    def mean_loss(rows):
        return ((x[rows] @ w - y[rows]) ** 2).mean()

    idx, world = torch.arange(7), 2
    (g_global,) = torch.autograd.grad(mean_loss(idx), w)
    weighted, plain = [], []
    for rank in range(world):
        local = idx[rank::world]
        (g,) = torch.autograd.grad(mean_loss(local) * shard_weight(local.numel(), idx.numel(), world), w)
        weighted.append(g)
        plain.append(torch.autograd.grad(mean_loss(local), w)[0])
    assert torch.allclose(sum(weighted) / world, g_global, atol=1e-6)
    assert not torch.allclose(sum(plain) / world, g_global, atol=1e-3)  # unweighted shard means are not it
    assert shard_weight(4, 7, 2) == 8 / 7 and shard_weight(5, 5, 1) == 1.0


def test_non_finite_weights_never_enter_the_cache(tmp_path):
    """A model whose buffer becomes NaN in training (finite loss throughout) is refused
    before the checkpoint is written: nothing loadable is left."""
    from workbench.errors import ModelError

    class NaNBuffer(TinyMLP):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("stat", torch.zeros(1))

        def forward(self, x):
            if self.training:
                self.stat.fill_(float("nan"))
            return super().forward(x)

    with pytest.raises(ModelError, match="non-finite values in stat"):
        train_cached(NaNBuffer, {"arch": "nan"}, blobs(), TrainConfig(epochs=1), device=CPU, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_train_step_refuses_a_non_finite_loss_before_any_change():
    from workbench.errors import ModelError
    from workbench.train import StandardRecipe, train_step

    m = TinyMLP()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    opt = torch.optim.AdamW(m.parameters(), lr=0.1)
    x = torch.full((4, 4), float("inf"))
    with pytest.raises(ModelError, match="non-finite.*at epoch 3"):
        train_step(m, x, torch.zeros(4, dtype=torch.long), recipe=StandardRecipe(), loss_fn=task_loss("logits"),
                   opt=opt, scaler=None, grad_clip=1.0, device=CPU, use_amp=False, where=" at epoch 3")
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
