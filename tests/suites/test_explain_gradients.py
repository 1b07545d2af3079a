"""captum wrappers: closed forms on linear models, IG completeness, embedding-space
attributions for token models, and the guarantee that the model comes back untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from workbench.suites.explain.gradients import (
    GRADIENT_METHODS,
    ExplainedModel,
    embed_tokens,
    gradient_attribution,
    per_unit,
    untouched,
)
from workbench.suites.explain.testing import LinearModel, TinyCNN, TinyLSTM, TinyMLP, digits_dataset, quick_train
from workbench.errors import ConfigError
from workbench.torch_utils import ModuleState

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def linear():
    torch.manual_seed(0)
    m = LinearModel(5, 3).eval()
    x = torch.randn(6, 5)
    return m, x


def _target_weights(m: LinearModel, target: torch.Tensor) -> torch.Tensor:
    return m.linear.weight.detach()[target]  # (N, F)


@pytest.mark.parametrize("method", ["input_x_gradient", "integrated_gradients", "deeplift", "occlusion"])
def test_linear_model_attributions_equal_w_times_x_minus_baseline(linear, method):
    m, x = linear
    em = ExplainedModel(m, "logits")
    target = em(x).argmax(1)
    base = torch.full((1, 5), 0.3) if method != "input_x_gradient" else torch.zeros(1, 5)
    with untouched(m):
        a = gradient_attribution(method, em, x, target=target, baseline=base, modality="tabular", n_steps=8)
    want = _target_weights(m, target) * (x - base)
    torch.testing.assert_close(a, want, atol=1e-5, rtol=1e-5)


def test_linear_saliency_is_abs_weight_and_smoothgrad_too(linear):
    m, x = linear
    em = ExplainedModel(m, "logits")
    target = em(x).argmax(1)
    with untouched(m):
        s = gradient_attribution("saliency", em, x, target=target, baseline=torch.zeros(1, 5), modality="tabular")
        sg = gradient_attribution("smoothgrad", em, x, target=target, baseline=torch.zeros(1, 5),
                                  modality="tabular", smoothgrad_samples=4, smoothgrad_stdev=0.5, seed=1)
    torch.testing.assert_close(s, _target_weights(m, target).abs())
    torch.testing.assert_close(sg, _target_weights(m, target).abs())  # the gradient of a linear map ignores noise


@pytest.fixture(scope="module")
def digits_cnn():
    data = digits_dataset()
    torch.manual_seed(0)
    m = quick_train(TinyCNN(pool="avg"), data, epochs=1, lr=1e-2)
    return m, data


def test_integrated_gradients_completeness_within_one_percent(digits_cnn):
    """Gauss-Legendre IG: |sum(phi) - (f(x) - f(0))| < 1% of |f(x) - f(0)| at 64 steps."""
    m, data = digits_cnn
    x = data.test.x[:16]
    em = ExplainedModel(m, "logits")
    with untouched(m), torch.no_grad():
        target = em(x).argmax(1)
    base = torch.zeros(1, 1, 8, 8)
    with untouched(m):
        a = gradient_attribution("integrated_gradients", em, x, target=target, baseline=base, modality="image",
                                 n_steps=64)
    with torch.no_grad():
        delta = em(x).gather(1, target[:, None])[:, 0] - em(base.expand_as(x)).gather(1, target[:, None])[:, 0]
    rel = (a.flatten(1).sum(1) - delta).abs() / delta.abs()
    assert float(rel.max()) < 0.01, rel


def test_token_model_embedding_path_equals_hook_path():
    """A model without forward_from_embeddings is explained through a hook on its
    nn.Embedding; both routes give the same attributions, summed per token."""
    torch.manual_seed(1)
    lstm = TinyLSTM(vocab=9).eval()

    class NoEmbedApi(nn.Module):  # same weights, only forward(ids)
        output_kind = "logits"

        def __init__(self, inner: TinyLSTM) -> None:
            super().__init__()
            self.token_embedding, self.lstm, self.head = inner.token_embedding, inner.lstm, inner.head

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            h, _ = self.lstm(self.token_embedding(idx))
            return self.head(h[:, -1])

    plain = NoEmbedApi(lstm).eval()
    ids = torch.randint(0, 9, (4, 7))
    outs = []
    for module in (lstm, plain):
        em = ExplainedModel(module, "logits", space="embedding")
        z = embed_tokens(module, ids)
        with untouched(module):
            target = em(z).argmax(1)
            outs.append(gradient_attribution("integrated_gradients", em, z, target=target,
                                             baseline=torch.zeros_like(z[:1]), modality="tokens", n_steps=16))
    torch.testing.assert_close(outs[0], outs[1])
    assert per_unit(outs[0], "embedding", "tokens").shape == (4, 7)
    torch.testing.assert_close(per_unit(outs[0], "embedding", "tokens"), outs[0].sum(-1))


def test_output_kinds():
    torch.manual_seed(2)
    net = nn.Linear(3, 2)
    x = torch.randn(5, 3)
    torch.testing.assert_close(ExplainedModel(net, "mean_logvar")(x), net(x)[:, 0])
    torch.testing.assert_close(ExplainedModel(net, "logits", explained="probability")(x), net(x).softmax(-1))
    with pytest.raises(ConfigError, match="output_kind"):
        ExplainedModel(net, "boxes")
    with pytest.raises(ConfigError, match="gradient method"):
        gradient_attribution("gradcam", ExplainedModel(net, "logits"), x, target=None, baseline=x[:1],
                             modality="tabular")


def test_every_method_leaves_the_model_untouched_in_train_mode():
    """Train mode, dropout, BatchNorm and filled .grad: captum and shap (which calls
    model.eval() and zero_grad()) run, and nothing of the model changes."""
    import shap

    torch.manual_seed(3)
    m = TinyMLP(6, 3)
    m.net.insert(2, nn.BatchNorm1d(32))
    m.net.insert(4, nn.Dropout(0.5))
    x = torch.randn(8, 6)
    m(x).sum().backward()  # .grad filled
    m.train()
    m.net[1].eval()  # a mixed train/eval state must come back as it was
    before = ModuleState.capture(m)
    keys = set(m.state_dict())
    attrs = {n: set(vars(mod)) for n, mod in m.named_modules()}
    em = ExplainedModel(m, "logits")
    with untouched(m):
        target = em(x).argmax(1)
        for method in GRADIENT_METHODS:
            gradient_attribution(method, em, x, target=target, baseline=torch.zeros(1, 6), modality="tabular",
                                 n_steps=4, smoothgrad_samples=2)
        shap.GradientExplainer(em, x[:4]).shap_values(x[:2], nsamples=4, rseed=0)
        shap.DeepExplainer(em, x[:4]).shap_values(x[:2], check_additivity=False)
    assert before.diff(m) == []
    assert set(m.state_dict()) == keys  # shap's DeepExplainer leaves `x`/`y` parameters on layers otherwise
    assert {n: set(vars(mod)) for n, mod in m.named_modules()} == attrs
    assert all(not mod._forward_hooks and not mod._backward_hooks for mod in m.modules())
    assert np.isfinite([p.grad.sum().item() for p in m.parameters()]).all()


def test_occlusion_scores_are_the_output_change_of_a_plain_loop():
    """Per token (embedding space), occlusion's unit score is
    f(x) - f(x with that unit at the baseline), recomputed here by a plain loop (captum
    alone would credit each of a token's C coordinates with the whole change: C times)."""
    torch.manual_seed(2)
    lstm = TinyLSTM(vocab=9).eval()
    ids = torch.randint(0, 9, (3, 6))
    em = ExplainedModel(lstm, "logits", space="embedding")
    z = embed_tokens(lstm, ids)  # (N, T, C)
    with untouched(lstm), torch.no_grad():
        target = em(z).argmax(1)
    base = torch.zeros(1, *z.shape[1:])
    with untouched(lstm):
        a = gradient_attribution("occlusion", em, z, target=target, baseline=base, modality="tokens")
    got = per_unit(a, "embedding", "tokens")  # (N, T)
    want = torch.zeros_like(got)
    with torch.no_grad():
        full = em(z).gather(1, target[:, None])[:, 0]
        for t in range(z.shape[1]):
            zt = z.clone()
            zt[:, t] = 0.0
            want[:, t] = full - em(zt).gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_occlusion_pixel_score_is_the_mean_change_of_the_patches_covering_it():
    """Images with 3 channels: a pixel's unit score (summed over channels) is the mean
    output change of the 2x2 patches (all channels, stride 1) that cover it, by a plain
    loop (captum alone would give 3 times that)."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 5 * 5, 3)).eval()
    x = torch.rand(2, 3, 5, 5)
    em = ExplainedModel(m, "logits", space="input")
    t = torch.tensor([0, 2])
    with untouched(m):
        a = gradient_attribution("occlusion", em, x, target=t, baseline=torch.zeros(1, 3, 5, 5), modality="image")
    got = per_unit(a, "input", "image").reshape(2, 5, 5)
    total, count = torch.zeros(2, 5, 5), torch.zeros(5, 5)
    with torch.no_grad():
        full = em(x).gather(1, t[:, None])[:, 0]
        for i in range(4):
            for j in range(4):
                z = x.clone()
                z[:, :, i:i + 2, j:j + 2] = 0.0
                total[:, i:i + 2, j:j + 2] += (full - em(z).gather(1, t[:, None])[:, 0])[:, None, None]
                count[i:i + 2, j:j + 2] += 1
    torch.testing.assert_close(got, total / count, atol=1e-5, rtol=1e-4)
