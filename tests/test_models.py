"""Reference models, tested over the registry itself (a new model is tested for free)
with one tiny hand-made Dataset per modality; closed-form parameter counts, an
nn.MultiheadAttention reference for the hand-written attention, and a digits smoke run."""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workbench.data.base import Dataset, Split
from workbench.errors import ConfigError, DataError, ParameterTypeError, WorkbenchError
from workbench.models import SIZES
from workbench.registry import MODELS
from workbench.torch_utils import ModuleState, limited_threads

OUTPUT_KINDS = {"logits", "mean", "mean_logvar", "lm_logits"}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a shared 2-core box: two intra-op threads made the digits run ~20x slower."""
    with limited_threads(1):
        yield


def _dataset(name: str, modality: str, task: str, x: torch.Tensor, y: torch.Tensor, **kw: object) -> Dataset:
    n = x.shape[0]
    cut = n // 2
    train, test = Split(x[:cut], y[:cut]), Split(x[cut:], y[cut:])
    return Dataset(name=name, modality=modality, task=task, train=train, val=test, test=test, **kw)


def fake_datasets() -> dict[str, Dataset]:
    g = torch.Generator().manual_seed(0)
    lm = torch.randint(0, 30, (16, 33), generator=g)
    return {
        "image": _dataset(
            "fake_image", "image", "classification", torch.rand(16, 1, 8, 8, generator=g),
            torch.arange(16) % 10, num_classes=10, bounds=(0.0, 1.0),
        ),
        "tabular": _dataset(
            "fake_tabular", "tabular", "classification", torch.randn(16, 12, generator=g),
            torch.arange(16) % 3, num_classes=3,
        ),
        "regression": _dataset(
            "fake_regression", "tabular", "regression", torch.randn(16, 12, generator=g), torch.randn(16, generator=g),
        ),
        "tokens": _dataset(
            "fake_tokens", "tokens", "classification", torch.randint(0, 20, (16, 16), generator=g),
            torch.arange(16) % 2, num_classes=2, vocab_size=20,
        ),
        "lm": _dataset("fake_lm", "lm", "lm", lm[:, :-1], lm[:, 1:], vocab_size=30),
    }


DATA = fake_datasets()


def build(name: str, data: Dataset, size: str = "tiny", seed: int = 0, **overrides: object) -> nn.Module:
    torch.manual_seed(seed)
    return MODELS.get(name)(data, size=size, **overrides)


@functools.lru_cache(maxsize=None)
def compatible(name: str) -> tuple[str, ...]:
    """Keys of the fake datasets this architecture accepts (ConfigError = not its modality/task)."""
    keys = []
    for key, data in DATA.items():
        try:
            MODELS.get(name)(data, size="tiny")
        except ConfigError:
            continue
        keys.append(key)
    return tuple(keys)


def task_loss(module: nn.Module, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    kind = module.output_kind
    if kind == "logits":
        return F.cross_entropy(out, y)
    if kind == "mean":
        return F.mse_loss(out, y)
    if kind == "mean_logvar":
        return F.gaussian_nll_loss(out[:, 0], y, out[:, 1].exp())
    return F.cross_entropy(out.flatten(0, 1), y.flatten())


def check_output(module: nn.Module, data: Dataset, x: torch.Tensor, out: torch.Tensor) -> None:
    B = x.shape[0]
    expected = {
        "logits": (B, data.num_classes),
        "mean": (B,),
        "mean_logvar": (B, 2),
        "lm_logits": (B, x.shape[1], data.vocab_size),
    }[module.output_kind]
    assert tuple(out.shape) == expected
    assert torch.isfinite(out).all()


# Architectures whose weights and shapes come from a directory the plan names (options.path),
# not from a preset: no size grid applies and no fake dataset can be built without files.
# Their own tests write tiny checkpoints (tests/test_hf.py); every other name is a reference model.
DIRECTORY_ARCHS = {"hf": "tests/test_hf.py"}
ARCHS = [n for n in MODELS.names() if n not in DIRECTORY_ARCHS]
GRID = [(name, size) for name in ARCHS for size in SIZES]
TOKEN_ARCHS = [n for n in ARCHS if any(DATA[k].modality in ("tokens", "lm") for k in compatible(n))]
ATTENTION_ARCHS = [n for n in ARCHS if n in ("transformer", "gpt")]


def test_registry_has_the_five_reference_models() -> None:
    assert {"mlp", "cnn", "lstm", "transformer", "gpt"} <= set(ARCHS)
    assert set(TOKEN_ARCHS) >= {"lstm", "transformer", "gpt"}


@pytest.mark.parametrize("name", sorted(DIRECTORY_ARCHS))
def test_directory_archs_need_a_path_and_take_no_size(name: str) -> None:
    with pytest.raises(ConfigError, match="options.path"):
        build(name, DATA["tokens"])
    with pytest.raises(ConfigError, match="`size` does not apply"):
        build(name, DATA["tokens"], size="small")


@pytest.mark.parametrize("name", ARCHS)
def test_presets_and_config(name: str) -> None:
    module = sys.modules[MODELS.get(name).__module__]
    assert set(module.CONFIGS) == set(SIZES)
    keys = compatible(name)
    assert keys, f"{name} accepts none of the fake datasets"
    for key in keys:
        m = build(name, DATA[key])
        assert dataclasses.is_dataclass(m.config)
        assert type(m.config) is type(module.CONFIGS["tiny"])
        assert m.output_kind in OUTPUT_KINDS
        # data-derived fields come from the dataset, not the preset
        for field, want in (("num_classes", DATA[key].num_classes), ("vocab_size", DATA[key].vocab_size)):
            if hasattr(m.config, field) and want is not None:
                assert getattr(m.config, field) == want


@pytest.mark.parametrize("name,size", GRID)
def test_forward_backward_and_determinism(name: str, size: str) -> None:
    for key in compatible(name):
        data = DATA[key]
        x, y = data.train.x[:4], data.train.y[:4]
        m = build(name, data, size)

        m.eval()
        out = m(x)
        check_output(m, data, x, out)
        assert torch.equal(out, m(x)), "eval mode must be deterministic"

        m.train()
        loss = task_loss(m, m(x), y)
        loss.backward()
        for pname, p in m.named_parameters():
            assert p.grad is not None, f"{name}/{key}: no grad for {pname}"
            assert torch.isfinite(p.grad).all(), f"{name}/{key}: non-finite grad for {pname}"
        assert any(p.grad.abs().sum() > 0 for p in m.parameters())

        # same seed -> same weights and outputs; another seed -> other weights
        a, b, c = build(name, data, size, seed=3).eval(), build(name, data, size, seed=3).eval(), build(name, data, size, seed=4)
        sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        assert not all(torch.equal(sa[k], sc[k]) for k in sa)
        assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("name", ARCHS)
def test_dropout_active_in_train_mode_only(name: str) -> None:
    """MC dropout needs Dropout layers that act in train mode."""
    for key in compatible(name):
        data = DATA[key]
        m = build(name, data)
        assert any(isinstance(mod, nn.Dropout) and mod.p > 0 for mod in m.modules())
        x = data.train.x[:8]
        m.train()
        torch.manual_seed(0)
        first = m(x)
        second = m(x)
        assert not torch.allclose(first, second)


@pytest.mark.parametrize("name", ARCHS)
def test_size_and_override_errors(name: str) -> None:
    data = DATA[compatible(name)[0]]
    builder = MODELS.get(name)
    with pytest.raises(ConfigError, match=r"Did you mean 'tiny'\?.*'tiny', 'base'"):
        builder(data, size="tiyn")
    with pytest.raises(ConfigError, match="Valid sizes: 'tiny', 'base'"):
        builder(data, size="huge")
    with pytest.raises(ConfigError, match=r"Unknown override 'not_a_key'.*Valid keys: "):
        builder(data, not_a_key=1)
    with pytest.raises(ConfigError, match=r"Did you mean 'dropout'\?"):
        builder(data, dropuot=0.2)
    with pytest.raises(ConfigError, match=r"expected `dropout` to be in \[0, 1\)"):
        builder(data, dropout=1.5)
    with pytest.raises(ParameterTypeError):
        builder(data, dropout="0.1")
    derived = "num_classes" if data.num_classes is not None else "vocab_size"
    with pytest.raises(ConfigError, match="derived from the dataset"):
        builder(data, **{derived: 7})
    # a model never accepts data of a modality it cannot read, and says which models do
    others = [k for k in DATA if k not in compatible(name) and DATA[k].modality not in {DATA[c].modality for c in compatible(name)}]
    with pytest.raises(ConfigError, match="Use '"):
        builder(DATA[others[0]])


def test_specific_override_checks() -> None:
    assert build("mlp", DATA["tabular"], hidden=[32]).config.hidden == (32,)  # TOML lists become tuples
    with pytest.raises(ParameterTypeError, match="hidden"):
        build("mlp", DATA["tabular"], hidden=("64",))
    with pytest.raises(ConfigError, match="divisible"):
        build("transformer", DATA["tokens"], d_model=30, n_head=4)
    with pytest.raises(ConfigError, match=r"`block_size` \(8\) must be >= .* 16"):
        build("transformer", DATA["tokens"], block_size=8)
    assert build("gpt", DATA["lm"], block_size=64).position_embedding.num_embeddings == 64
    with pytest.raises(ConfigError, match="pool"):
        build("cnn", DATA["image"], pool="min")
    with pytest.raises(ConfigError, match="too small"):
        build("cnn", DATA["image"], channels=(8, 8, 8, 8))
    with pytest.raises(ConfigError, match="Did you mean 'last'"):
        build("lstm", DATA["tokens"], pool="lats")
    with pytest.raises(ConfigError, match="regression"):
        build("mlp", DATA["tabular"], heteroscedastic=True)
    with pytest.raises(DataError, match="block_size"):
        build("gpt", DATA["lm"])(torch.zeros(1, 40, dtype=torch.long))
    assert all(issubclass(e, WorkbenchError) for e in (ConfigError, ParameterTypeError, DataError))


# ---- closed-form parameter counts (an independent reference for the wiring) -------------


def _linear(i: int, o: int, bias: bool = True) -> int:
    return i * o + (o if bias else 0)


def _block(d: int, ff: int) -> int:
    return 2 * 2 * d + 4 * _linear(d, d) + _linear(d, ff) + _linear(ff, d)


@pytest.mark.parametrize("size", SIZES)
def test_parameter_counts_match_closed_forms(size: str) -> None:
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731

    m = build("mlp", DATA["tabular"], size)
    widths = (12, *m.config.hidden)
    assert count(m) == sum(_linear(a, b) for a, b in zip(widths, widths[1:])) + _linear(widths[-1], 3)

    c = build("cnn", DATA["image"], size).config
    n, cin = 0, 1
    for ch in c.channels:
        for _ in range(c.convs_per_stage):
            n += cin * ch * 9 + 2 * ch  # conv without bias + BatchNorm affine
            cin = ch
    h, w = c.feature_size
    n += _linear(cin * h * w, c.hidden) + _linear(c.hidden, 10)
    assert count(build("cnn", DATA["image"], size)) == n

    m = build("lstm", DATA["tokens"], size)
    c, D = m.config, 2 if m.config.bidirectional else 1
    n = 20 * c.d_embed
    for layer in range(c.n_layer):
        n_in = c.d_embed if layer == 0 else D * c.hidden
        n += D * 4 * (n_in * c.hidden + c.hidden * c.hidden + 2 * c.hidden)  # W_ih, W_hh, b_ih, b_hh
    assert count(m) == n + _linear(D * c.hidden, 2)

    m = build("transformer", DATA["tokens"], size)
    c = m.config
    n = 20 * c.d_model + 16 * c.d_model + c.n_layer * _block(c.d_model, c.d_ff) + 2 * c.d_model + _linear(c.d_model, 2)
    assert count(m) == n

    m = build("gpt", DATA["lm"], size)
    c = m.config
    # lm_head is tied to the token embedding, so it adds no parameters
    assert m.lm_head.weight is m.token_embedding.weight
    assert count(m) == 30 * c.d_model + 32 * c.d_model + c.n_layer * _block(c.d_model, c.d_ff) + 2 * c.d_model


@pytest.mark.parametrize("name", ATTENTION_ARCHS)
def test_flop_counter_sees_every_matmul(name: str) -> None:
    """FlopCounterMode on the hand-written attention equals the closed-form count, also in
    eval + no_grad (where nn.TransformerEncoderLayer's fast path reports 0)."""
    from torch.utils.flop_counter import FlopCounterMode

    data = DATA[compatible(name)[0]]
    m = build(name, data).eval()
    c = m.config
    x = data.train.x[:8]
    B, T = x.shape
    d, H, ff = c.d_model, c.n_head, c.d_ff
    per_layer = 4 * 2 * B * T * d * d + 2 * (2 * B * H * T * T * (d // H)) + 2 * 2 * B * T * d * ff
    head = 2 * B * T * d * c.vocab_size if m.output_kind == "lm_logits" else 2 * B * d * c.num_classes
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        m(x)
    assert counter.get_total_flops() == c.n_layer * per_layer + head


# ---- token models -------------------------------------------------------------------


@pytest.mark.parametrize("name", TOKEN_ARCHS)
def test_embed_and_forward_from_embeddings(name: str) -> None:
    for key in compatible(name):
        data = DATA[key]
        m = build(name, data).eval()
        idx = data.train.x[:3]
        assert isinstance(m.token_embedding, nn.Embedding)
        e = m.embed(idx)
        assert e.shape == (*idx.shape, m.token_embedding.embedding_dim)
        assert torch.equal(e, m.token_embedding.weight[idx])  # token embedding only, no positions
        assert torch.equal(m(idx), m.forward_from_embeddings(e))
        # gradients flow to the embeddings (what embedding-space attacks need)
        e = e.detach().requires_grad_(True)
        m.forward_from_embeddings(e).sum().backward()
        assert e.grad is not None and e.grad.abs().sum() > 0


@pytest.mark.parametrize("causal", [False, True])
def test_attention_matches_nn_multihead_attention(causal: bool) -> None:
    """The hand-written attention against torch's own nn.MultiheadAttention with the same weights."""
    from workbench.models.transformer import SelfAttention

    torch.manual_seed(0)
    d, h, T = 32, 4, 7
    ours = SelfAttention(d, h, dropout=0.0, causal=causal).eval()
    ref = nn.MultiheadAttention(d, h, dropout=0.0, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.query.weight, ours.key.weight, ours.value.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.query.bias, ours.key.bias, ours.value.bias]))
        ref.out_proj.weight.copy_(ours.proj.weight)
        ref.out_proj.bias.copy_(ours.proj.bias)
    x = torch.randn(3, T, d)
    mask = torch.ones(T, T, dtype=torch.bool).triu(1) if causal else None
    want_y, want_att = ref(x, x, x, attn_mask=mask, need_weights=True, average_attn_weights=False)
    y, att, (k, v) = ours(x, extras=True)
    torch.testing.assert_close(y, want_y, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(att, want_att, atol=1e-6, rtol=1e-5)
    assert k.shape == v.shape == (3, h, T, d // h)


@pytest.mark.parametrize("name", ATTENTION_ARCHS)
def test_return_attention_rows_sum_to_one_and_hooks_see_them(name: str) -> None:
    data = DATA[compatible(name)[0]]
    m = build(name, data).eval()
    idx = data.train.x[:3]
    seen: list[torch.Tensor] = []
    hooks = [blk.attn.attn_probs.register_forward_hook(lambda mod, i, o: seen.append(o)) for blk in m.blocks]
    try:
        logits, atts = m(idx, return_attention=True)
    finally:
        for hk in hooks:
            hk.remove()
    T = idx.shape[1]
    assert len(atts) == m.config.n_layer
    for att, hooked in zip(atts, seen):
        assert att.shape == (3, m.config.n_head, T, T)
        assert (att >= 0).all()
        torch.testing.assert_close(att.sum(-1), torch.ones(3, m.config.n_head, T), atol=1e-5, rtol=0)
        assert torch.equal(att, hooked)
    assert torch.equal(logits, m(idx))


def test_gpt_is_causal() -> None:
    data = DATA["lm"]
    m = build("gpt", data).eval()
    idx = data.train.x[:2].clone()
    logits, atts = m(idx, return_attention=True)
    T = idx.shape[1]
    above = torch.ones(T, T, dtype=torch.bool).triu(1)
    for att in atts:
        assert (att[..., above] == 0).all()
        assert (att[..., ~above] > 0).all()
    k = 10
    changed = idx.clone()
    changed[:, k] = (changed[:, k] + 1) % data.vocab_size
    new = m(changed)
    torch.testing.assert_close(new[:, :k], logits[:, :k], atol=1e-6, rtol=0)
    assert not torch.allclose(new[:, k:], logits[:, k:])
    # the transformer classifier is bidirectional: the first position sees the last token
    cls = build("transformer", DATA["tokens"]).eval()
    _, catts = cls(DATA["tokens"].train.x[:2], return_attention=True)
    assert (catts[0][..., 0, -1] > 0).all()


def test_gpt_kv_cache_matches_full_recompute() -> None:
    data = DATA["lm"]
    m = build("gpt", data, size="tiny", seed=1).eval()
    state = ModuleState.capture(m)
    prompt = data.train.x[:3, :5]
    # 40 new tokens from a 5-token prompt crosses block_size (32): the window then slides
    cached = m.generate(prompt, 40)
    full = m.generate(prompt, 40, use_cache=False)
    assert cached.shape == (3, 45)
    assert torch.equal(cached[:, :5], prompt)
    assert torch.equal(cached, full)
    assert ((cached >= 0) & (cached < data.vocab_size)).all()
    # the same greedy tokens by hand, one full forward per step (nanoGPT's loop)
    idx = prompt
    for _ in range(40):
        nxt = m(idx[:, -m.config.block_size :])[:, -1].argmax(-1, keepdim=True)
        idx = torch.cat([idx, nxt], 1)
    assert torch.equal(idx, cached)
    # cached step logits equal the full forward's logits at the same positions
    seq = data.train.x[:2, :12]
    with torch.no_grad():
        logits, _, cache = m._run(m.embed(seq[:, :8]), None, False, want_cache=True)
        steps = [logits]
        for t in range(8, 12):
            step, _, cache = m._run(m.embed(seq[:, t : t + 1]), cache, False, want_cache=True)
            steps.append(step)
        torch.testing.assert_close(torch.cat(steps, 1), m(seq), atol=1e-5, rtol=1e-5)
    assert state.diff(m) == []
    # a prompt longer than block_size is cropped, not an error
    assert m.generate(data.train.x[:1].repeat(1, 2), 3).shape == (1, 67)


def test_gpt_sampling() -> None:
    data = DATA["lm"]
    m = build("gpt", data).eval()
    prompt = data.train.x[:2, :4]
    greedy = m.generate(prompt, 10)
    # top_k=1 keeps only the argmax, so sampling equals greedy decoding
    assert torch.equal(m.generate(prompt, 10, temperature=1.0, top_k=1, generator=torch.Generator().manual_seed(5)), greedy)
    a = m.generate(prompt, 10, temperature=2.0, generator=torch.Generator().manual_seed(7))
    b = m.generate(prompt, 10, temperature=2.0, generator=torch.Generator().manual_seed(7), use_cache=False)
    c = m.generate(prompt, 10, temperature=2.0, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # top_k restricts the support: every sampled token is among the k most likely
    g = torch.Generator().manual_seed(0)
    out = m.generate(prompt, 1, temperature=5.0, top_k=3, generator=g)
    top3 = m(prompt)[:, -1].topk(3).indices
    assert all(out[i, -1] in top3[i] for i in range(2))
    assert torch.equal(m.generate(prompt, 0), prompt)
    with pytest.raises(ConfigError, match="temperature"):
        m.generate(prompt, 3, temperature=-1.0)
    with pytest.raises(ConfigError, match="top_k"):
        m.generate(prompt, 3, temperature=1.0, top_k=0)
    with pytest.raises(ParameterTypeError, match=r"\(B, T\) long"):
        m.generate(prompt.float(), 3)


# ---- per-architecture details -------------------------------------------------------


def test_mlp_heteroscedastic_head() -> None:
    data = DATA["regression"]
    m = build("mlp", data, heteroscedastic=True)
    assert m.output_kind == "mean_logvar"
    x = data.train.x[:5]
    out = m(x)
    assert out.shape == (5, 2)
    # the log-variance stays inside (logvar_min, logvar_max) even for absurd inputs, with live gradients
    huge = (x * 1e4).requires_grad_(True)
    out = m(huge)
    lo, hi = m.config.logvar_min, m.config.logvar_max
    assert ((out[:, 1] >= lo) & (out[:, 1] <= hi)).all()
    assert torch.isfinite(out).all()
    F.gaussian_nll_loss(out[:, 0], data.train.y[:5], out[:, 1].exp()).backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())
    assert build("mlp", data).output_kind == "mean"
    # the squashing is the identity to first order at the midpoint and monotone
    from workbench.models.mlp import soft_clamp

    z = torch.linspace(-50, 50, 1001)
    s = soft_clamp(z, -10.0, 10.0)
    assert (s.diff() >= 0).all() and (s >= -10).all() and (s <= 10).all()
    z = torch.tensor([12.0, -12.0], requires_grad=True)
    soft_clamp(z, -10.0, 10.0).sum().backward()
    assert (z.grad > 0.01).all()  # just past a bound the gradient is alive (clamp's would be 0)
    torch.testing.assert_close(soft_clamp(torch.tensor([1e-3]), -10.0, 10.0), torch.tensor([1e-3]), atol=1e-9, rtol=1e-6)
    # images are flattened
    assert build("mlp", DATA["image"])(DATA["image"].train.x[:2]).shape == (2, 10)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_last_state_pooling_matches_h_n(bidirectional: bool) -> None:
    """'last' pooling against the final hidden states nn.LSTM returns itself (h_n)."""
    data = DATA["tokens"]
    m = build("lstm", data, pool="last", bidirectional=bidirectional, n_layer=2).eval()
    idx = data.train.x[:4]
    _, (h_n, _) = m.lstm(m.embed(idx))
    final = torch.cat([h_n[-2], h_n[-1]], 1) if bidirectional else h_n[-1]  # last layer, both directions
    torch.testing.assert_close(m(idx), m.head(final), atol=1e-6, rtol=1e-5)
    for pool in ("mean", "max"):
        assert build("lstm", data, pool=pool, bidirectional=bidirectional)(idx).shape == (4, 2)


def test_cnn_cam_layer_and_avg_pool() -> None:
    data = DATA["image"]
    m = build("cnn", data).eval()
    seen = []
    hook = m.cam_layer.register_forward_hook(lambda mod, i, o: seen.append(o.shape))
    m(data.train.x[:2])
    hook.remove()
    assert isinstance(m.cam_layer, nn.ReLU)
    assert seen == [torch.Size([2, m.config.channels[-1], 4, 4])]
    avg = build("cnn", data, pool="avg")
    assert any(isinstance(mod, nn.AvgPool2d) for mod in avg.modules())
    assert not any(isinstance(mod, nn.MaxPool2d) for mod in avg.modules())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_lstm_eval_mode_gradients_on_cuda() -> None:
    """cuDNN refuses RNN backward in eval mode; the model falls back to the native kernel."""
    data = DATA["tokens"]
    m = build("lstm", data, size="base").cuda().eval()
    before = torch.backends.cudnn.enabled
    e = m.embed(data.train.x[:4].cuda()).detach().requires_grad_(True)
    m.forward_from_embeddings(e).sum().backward()
    assert e.grad is not None and torch.isfinite(e.grad).all()
    assert torch.backends.cudnn.enabled == before
    cpu = build("lstm", data, size="base").eval()
    torch.testing.assert_close(m(data.train.x[:4].cuda()).cpu(), cpu(data.train.x[:4]), atol=1e-4, rtol=1e-4)


def test_tiny_cnn_learns_digits_quickly() -> None:
    """Smoke test: tiny CNN, plain Adam loop, 2 epochs on sklearn digits -> > 0.9 test accuracy."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(digits.target)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    data = _dataset("digits", "image", "classification", x, y, num_classes=10, bounds=(0.0, 1.0))
    t0 = time.perf_counter()
    m = build("cnn", data, seed=0)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    m.train()
    for _ in range(2):
        perm = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(xtr), 64):
            b = perm[i : i + 64]
            loss = F.cross_entropy(m(xtr[b]), ytr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    m.eval()
    with torch.no_grad():
        acc = (m(xte).argmax(1) == yte).float().mean().item()
    assert acc > 0.9, acc
    assert time.perf_counter() - t0 < 15
    assert math.isfinite(loss.item())
