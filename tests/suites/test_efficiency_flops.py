"""FLOP counts against closed forms worked out by hand (FLOPs = 2 x MACs)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from workbench.suites.efficiency.flops import (
    NO_FUSED_ATTENTION,
    count_flops,
    forward_backward_flops,
    forward_flops,
    is_zero_flop,
)
from workbench.data.base import Dataset, Split
from workbench.torch_utils import ModuleState

aten = torch.ops.aten


@pytest.fixture(autouse=True)
def _one_thread():
    # 2 intra-op threads on a contended 2-core box are ~15x slower than 1
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- encoder fixture
D, HEADS, FF, T, B, LAYERS = 64, 4, 256, 32, 8, 2


def encoder_closed_form(lengths: list[int]) -> int:
    """Per layer and sequence of length L: in_proj 2L*D*3D, scores + A V 2 * 2L^2 D,
    out_proj 2L*D*D, feed-forward 2 * 2L*D*FF."""
    per_layer = sum(2 * L * D * 3 * D + 2 * 2 * L * L * D + 2 * L * D * D + 2 * 2 * L * D * FF for L in lengths)
    return LAYERS * per_layer


def make_encoder() -> nn.TransformerEncoder:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(D, HEADS, FF, batch_first=True)
    return nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)


def test_encoder_fixture_closed_form_is_the_stated_number():
    assert encoder_closed_form([T] * B) == 54_525_952


@pytest.mark.parametrize("mode", ["train", "eval", "eval_no_grad"])
def test_encoder_fixture_counts_exactly_in_every_mode(mode):
    enc = make_encoder()
    x = torch.randn(B, T, D)
    enc.train(mode == "train")

    def run():
        with torch.no_grad() if mode == "eval_no_grad" else torch.enable_grad():
            enc(x)

    c = count_flops(run, root=enc)
    assert c.total == 54_525_952
    assert c.complete, c.uncounted
    expected_backend = {"train": NO_FUSED_ATTENTION, "eval": "sdpa_flash_cpu", "eval_no_grad": "encoder_fast_path"}
    assert c.attention_backend == expected_backend[mode]
    assert c.by_module["layers.0"] == c.by_module["layers.1"] == 54_525_952 // 2


def test_plain_flop_counter_mode_misses_what_we_count():
    """The gap this module closes: torch's own counter misses CPU SDPA and the fast path."""
    enc = make_encoder().eval()
    x = torch.randn(B, T, D)
    with FlopCounterMode(display=False) as fc:
        enc(x)
    assert fc.get_total_flops() == 54_525_952 - LAYERS * 2 * 2 * B * T * T * D  # attention missing
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        enc(x)
    assert fc.get_total_flops() == 0


def test_encoder_fast_path_with_padding_counts_each_sequence_length():
    torch.manual_seed(0)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(D, HEADS, FF, batch_first=True), LAYERS).eval()
    x = torch.randn(B, T, D)
    lengths = [T - 3 * i for i in range(B)]
    pad = torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None]  # True = padding
    with torch.no_grad():
        c = count_flops(lambda: enc(x, src_key_padding_mask=pad), root=enc)
    assert c.attention_backend == "encoder_fast_path"
    assert c.total == encoder_closed_form(lengths)


def test_encoder_forward_backward_closed_form():
    """Training mode (math attention): backward = 2 x forward for every matmul, except the
    first in_proj, whose input (the data) needs no gradient. Eval mode with grad runs CPU
    flash attention, whose backward also recomputes Q K^T (one more B*H*T*T*d matmul per layer)."""
    enc = make_encoder()
    x = torch.randn(B, T, D)
    fwd = 54_525_952
    in_proj_0 = 2 * B * T * D * 3 * D
    enc.train()
    c = count_flops(lambda: enc(x).sum().backward(), root=enc)
    assert c.total == fwd + (2 * fwd - in_proj_0) == 157_286_400
    enc.eval()
    before = ModuleState.capture(enc)
    c = forward_backward_flops(enc, x)
    assert before.diff(enc) == []  # no .grad written, flags restored
    recompute = LAYERS * 2 * B * T * T * D
    assert c.total == 157_286_400 + recompute
    assert c.attention_backend == "sdpa_flash_cpu"


def test_multihead_attention_fast_path_equals_slow_path_and_closed_form():
    torch.manual_seed(0)
    E, L, Bm = 16, 5, 3
    mha = nn.MultiheadAttention(E, 2, batch_first=True)
    x = torch.randn(Bm, L, E)
    closed = 2 * Bm * L * E * 3 * E + 2 * 2 * Bm * L * L * E + 2 * Bm * L * E * E
    slow = count_flops(lambda: mha(x, x, x), root=mha)
    mha.eval()
    with torch.no_grad():
        fast = count_flops(lambda: mha(x, x, x), root=mha)
    assert fast.attention_backend == "native_mha_fast_path"
    assert slow.total == fast.total == closed


# --------------------------------------------------------------------------- CNN fixture
class FixtureCNN(nn.Module):
    """1x8x8 -> conv3x3(61, pad 1) -> maxpool2 -> conv3x3(19, pad 1) -> maxpool2 -> linear(76, 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 61, 3, padding=1)
        self.conv2 = nn.Conv2d(61, 19, 3, padding=1)
        self.fc = nn.Linear(19 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)  # (B, 61, 4, 4)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)  # (B, 19, 2, 2)
        return self.fc(x.flatten(1))


def test_cnn_fixture_closed_form():
    Bc = 64
    conv1 = 2 * Bc * (8 * 8) * 61 * (1 * 3 * 3)  # output positions x out channels x (in x kernel)
    conv2 = 2 * Bc * (4 * 4) * 19 * (61 * 3 * 3)
    fc = 2 * Bc * 76 * 10
    assert conv1 + conv2 + fc == 25_957_376
    torch.manual_seed(0)
    model = FixtureCNN()
    x = torch.rand(Bc, 1, 8, 8)
    fwd = forward_flops(model, x)
    assert fwd.total == 25_957_376 and fwd.complete
    assert fwd.by_module == {"": 25_957_376, "conv1": conv1, "conv2": conv2, "fc": fc}
    fb = forward_backward_flops(model, x)
    # backward: weight gradients of every layer, input gradients of all but conv1
    assert fb.total == 25_957_376 + 2 * 25_957_376 - conv1
    # backward FLOPs are attributed to the module whose forward they differentiate
    assert fb.by_module == {"": fb.total, "conv1": 2 * conv1, "conv2": 3 * conv2, "fc": 3 * fc}


# --------------------------------------------------------------------------- other ops
def test_lstm_cpu_kernel_and_its_int8_version_are_counted():
    torch.manual_seed(0)
    I, H, Tl, Bl = 16, 32, 10, 4
    lstm = nn.LSTM(I, H, num_layers=2, batch_first=True)
    x = torch.randn(Bl, Tl, I)
    closed = 2 * Bl * Tl * (4 * H * I + 4 * H * H) + 2 * Bl * Tl * (4 * H * H + 4 * H * H)
    fwd = forward_flops(lstm, x)
    assert fwd.total == closed and fwd.complete
    fb = forward_backward_flops(lstm, x)
    assert fb.total == 3 * closed  # the oneDNN backward computes data and weight gradients
    from workbench.suites.efficiency.compression import quantize_dynamic_int8

    q, _ = quantize_dynamic_int8(lstm)
    assert forward_flops(q, x).total == closed


def test_int8_linear_counts_like_float():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 7), nn.ReLU(), nn.Linear(7, 3))
    from workbench.suites.efficiency.compression import quantize_dynamic_int8

    q, _ = quantize_dynamic_int8(model)
    x = torch.randn(5, 12)
    c = forward_flops(q, x)
    assert c.total == 2 * 5 * (12 * 7 + 7 * 3) and c.complete, c.uncounted


def test_vector_and_batched_ops_have_formulas():
    m, k, n, b = 3, 4, 5, 2
    cases = [
        (lambda: torch.mv(torch.randn(m, k), torch.randn(k)), 2 * m * k),
        (lambda: torch.addmv(torch.randn(m), torch.randn(m, k), torch.randn(k)), 2 * m * k),
        (lambda: torch.dot(torch.randn(k), torch.randn(k)), 2 * k),
        (lambda: torch.addbmm(torch.randn(m, n), torch.randn(b, m, k), torch.randn(b, k, n)), 2 * b * m * k * n),
        (lambda: torch.ops.aten._addmm_activation(torch.randn(n), torch.randn(m, k), torch.randn(k, n)), 2 * m * k * n),
        (lambda: torch.einsum("bij,bjk->bik", torch.randn(b, m, k), torch.randn(b, k, n)), 2 * b * m * k * n),
    ]
    for fn, expected in cases:
        c = count_flops(fn)
        assert (c.total, c.complete) == (expected, True), (expected, c.by_op, c.uncounted)


def test_unknown_op_makes_the_count_partial_not_silently_low():
    @torch.library.custom_op("wbtest_efficiency::mystery_matmul", mutates_args=())
    def mystery_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b

    class Mystery(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.inner = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.fc(x)
            return mystery_matmul(h, self.inner.weight)

    model = Mystery()
    c = forward_flops(model, torch.randn(2, 4))
    assert c.total == 2 * 2 * 4 * 4  # only fc
    assert not c.complete
    assert c.uncounted == {"wbtest_efficiency.mystery_matmul": 1}
    assert "wbtest_efficiency.mystery_matmul x1" in c.uncounted_reason()
    assert c.to_dict()["complete"] is False
    fft = count_flops(lambda: torch.fft.rfft(torch.randn(16)))
    assert not fft.complete and "aten._fft_r2c" in fft.uncounted


def test_zero_flop_convention():
    assert is_zero_flop(aten.add.Tensor) and is_zero_flop(aten.view.default)
    assert is_zero_flop(aten.native_layer_norm.default) and is_zero_flop(aten._softmax.default)
    assert is_zero_flop(aten.threshold_backward.default)  # pointwise tag
    assert not is_zero_flop(aten.mm.default)
    assert not is_zero_flop(aten._fft_r2c.default)


# --------------------------------------------------------------------------- reference models
def _data(modality: str, task: str, x: torch.Tensor, y: torch.Tensor, **kw) -> Dataset:
    s = Split(x, y)
    return Dataset(name="tiny", modality=modality, task=task, train=s, val=s, test=s, **kw)


def _closed_form(arch: str, m: nn.Module, Bn: int, Tn: int | None) -> tuple[int, int]:
    """(forward, forward+backward) FLOPs of a reference model from its config, by hand."""
    cfg = m.config
    if arch == "mlp":
        widths = [cfg.in_features, *cfg.hidden, cfg.num_classes]
        layers = [2 * Bn * a * b for a, b in zip(widths[:-1], widths[1:])]
        return sum(layers), 3 * sum(layers) - layers[0]  # first layer: no input gradient
    if arch == "cnn":
        (h, w), c_in, layers = cfg.image_size, cfg.in_channels, []
        for c in cfg.channels:
            for _ in range(cfg.convs_per_stage):
                layers.append(2 * Bn * h * w * c * c_in * 9)
                c_in = c
            h, w = h // 2, w // 2
        layers += [2 * Bn * c_in * h * w * cfg.hidden, 2 * Bn * cfg.hidden * cfg.num_classes]
        return sum(layers), 3 * sum(layers) - layers[0]
    if arch == "lstm":
        Dn, H, total, size_in = (2 if cfg.bidirectional else 1), cfg.hidden, 0, cfg.d_embed
        for _ in range(cfg.n_layer):
            total += Dn * 2 * Bn * Tn * (4 * H * size_in + 4 * H * H)
            size_in = Dn * H
        total += 2 * Bn * Dn * H * cfg.num_classes
        return total, 3 * total  # the embedding output needs gradients: every matmul 2x
    C, Ff = cfg.d_model, cfg.d_ff
    block = 2 * Bn * Tn * C * 4 * C + 2 * 2 * Bn * Tn * Tn * C + 2 * 2 * Bn * Tn * C * Ff  # qkv+proj, QK^T+AV, mlp
    head = 2 * Bn * C * cfg.num_classes if arch == "transformer" else 2 * Bn * Tn * C * cfg.vocab_size
    total = cfg.n_layer * block + head
    return total, 3 * total


REFERENCE = [
    ("mlp", "tabular"),
    ("mlp", "image"),
    ("cnn", "image"),
    ("lstm", "tokens"),
    ("transformer", "tokens"),
    ("gpt", "lm"),
]


@pytest.mark.parametrize("size", ["tiny", "base"])
@pytest.mark.parametrize("arch,modality", REFERENCE)
def test_reference_models_match_closed_forms(arch, modality, size):
    from workbench.registry import MODELS

    try:
        build = MODELS.get(arch)
    except (ImportError, AttributeError) as exc:  # pragma: no cover - models land in parallel
        pytest.skip(f"reference model {arch!r} not importable: {exc}")
    g = torch.Generator().manual_seed(0)
    Bn, Tn = 3, 12
    if modality == "image":
        data = _data("image", "classification", torch.rand(8, 1, 8, 8, generator=g), torch.arange(8) % 10,
                     num_classes=10, bounds=(0.0, 1.0))
    elif modality == "tabular":
        data = _data("tabular", "classification", torch.randn(8, 30, generator=g), torch.arange(8) % 2, num_classes=2)
    elif modality == "tokens":
        data = _data("tokens", "classification", torch.randint(0, 40, (8, Tn), generator=g), torch.arange(8) % 2,
                     num_classes=2, vocab_size=40)
    else:
        data = _data("lm", "lm", torch.randint(0, 40, (8, Tn), generator=g), torch.randint(0, 40, (8, Tn), generator=g),
                     vocab_size=40)
    torch.manual_seed(0)
    model = build(data, size=size)
    x = data.test.x[:Bn]
    fwd_closed, fb_closed = _closed_form(arch, model, Bn, Tn if modality in ("tokens", "lm") else None)
    model.train()
    before = ModuleState.capture(model)
    fwd = forward_flops(model, x)
    fb = forward_backward_flops(model, x)
    assert before.diff(model) == []
    assert (fwd.total, fwd.complete) == (fwd_closed, True), fwd.uncounted
    assert (fb.total, fb.complete) == (fb_closed, True), fb.uncounted


# --------------------------------------------------------------------------- convolutions
# Every convolution below against its closed form, by hand. A convolution with weight
# (C_out, C_in/g, *k) does 2 * B * C_out * (C_in/g) * prod(k) FLOPs per OUTPUT position;
# a transposed one, weight (C_in, C_out/g, *k), the same per INPUT position. The input
# gradient and the weight gradient each cost as much as the forward again.
CONVS = {
    # name: (kwargs, transposed)
    "grouped": (dict(in_channels=6, out_channels=9, kernel_size=3, groups=3, padding=1), False),
    "depthwise": (dict(in_channels=8, out_channels=8, kernel_size=3, groups=8), False),
    "dilated": (dict(in_channels=4, out_channels=5, kernel_size=3, dilation=2, padding=1), False),
    "strided": (dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, groups=2), False),
    "transposed": (dict(in_channels=6, out_channels=4, kernel_size=3, stride=2, padding=1, groups=2), True),
}
SPATIAL = 9  # input length (1-D) or side (2-D)
BATCH = 2


def _out_len(L: int, k: int, s: int, p: int, d: int) -> int:
    return (L + 2 * p - d * (k - 1) - 1) // s + 1


def _conv_closed_form(kw: dict, transposed: bool, dims: int) -> int:
    """Forward FLOPs of one convolution on a (BATCH, C_in, SPATIAL[, SPATIAL]) input."""
    c_in, c_out, k, g = kw["in_channels"], kw["out_channels"], kw["kernel_size"], kw.get("groups", 1)
    if transposed:
        positions = SPATIAL ** dims  # each input element meets (C_out/g) * k^dims weights
        return 2 * BATCH * positions * c_in * (c_out // g) * k ** dims
    L = _out_len(SPATIAL, k, kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1))
    return 2 * BATCH * L ** dims * c_out * (c_in // g) * k ** dims


def test_conv_closed_forms_are_the_stated_numbers():
    # depthwise 3x3 on 8 channels, 9x9 -> 7x7, batch 2: 2 * 2 * 49 * 8 * 9
    assert _conv_closed_form(*CONVS["depthwise"], 2) == 14_112
    # strided 1-D: length 9 -> 5; 2 * 2 * 5 * 6 out * 2 in-per-group * 3
    assert _conv_closed_form(*CONVS["strided"], 1) == 720


def _make_conv(name: str, dims: int) -> nn.Module:
    kw, transposed = CONVS[name]
    cls = {(1, False): nn.Conv1d, (2, False): nn.Conv2d, (1, True): nn.ConvTranspose1d, (2, True): nn.ConvTranspose2d}
    torch.manual_seed(0)
    return cls[(dims, transposed)](**kw)


@pytest.mark.parametrize("mode", ["train", "eval", "no_grad"])
@pytest.mark.parametrize("dims", [1, 2])
@pytest.mark.parametrize("name", list(CONVS))
def test_convolutions_count_exactly(name, dims, mode):
    kw, transposed = CONVS[name]
    conv = _make_conv(name, dims)
    fwd = _conv_closed_form(kw, transposed, dims)
    conv.train(mode == "train")
    x = torch.randn(BATCH, kw["in_channels"], *([SPATIAL] * dims))
    if mode == "no_grad":
        with torch.no_grad():
            c = count_flops(lambda: conv(x), root=conv)
        assert (c.total, c.complete) == (fwd, True), c.by_op
        assert forward_flops(conv, x).total == fwd
        return
    # weight gradient only (the data needs no gradient): forward + 1 x forward
    c = count_flops(lambda: conv(x).sum().backward(), root=conv)
    assert (c.total, c.complete) == (2 * fwd, True), c.by_op
    # input and weight gradients: forward + 2 x forward
    xg = x.clone().requires_grad_(True)
    c = count_flops(lambda: conv(xg).sum().backward(), root=conv)
    assert (c.total, c.complete) == (3 * fwd, True), c.by_op
    assert forward_backward_flops(conv, x).total == 2 * fwd


def test_torch_counter_overcounts_grouped_conv_backward_which_we_fix():
    """The gap this module closes: torch's conv_backward_flop multiplies the weight
    gradient of a grouped convolution by `groups` (here 8, depthwise)."""
    conv = _make_conv("depthwise", 2)
    x = torch.randn(BATCH, 8, SPATIAL, SPATIAL)
    fwd = _conv_closed_form(*CONVS["depthwise"], 2)
    with FlopCounterMode(display=False) as fc:
        conv(x).sum().backward()
    assert fc.get_total_flops() == fwd + 8 * fwd  # torch: weight gradient counted 8x
    assert count_flops(lambda: conv(x).sum().backward()).total == 2 * fwd


def test_small_model_with_depthwise_separable_block_counts_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 8x8 -> 8x8
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise
        nn.Conv2d(8, 16, 1),  # pointwise
        nn.Flatten(), nn.Linear(16 * 8 * 8, 5),
    )
    Bm = 4
    layers = [2 * Bm * 64 * 8 * 3 * 9, 2 * Bm * 64 * 8 * 1 * 9, 2 * Bm * 64 * 16 * 8, 2 * Bm * 16 * 64 * 5]
    x = torch.randn(Bm, 3, 8, 8)
    assert forward_flops(model, x).total == sum(layers)
    assert forward_backward_flops(model, x).total == 3 * sum(layers) - layers[0]


def test_an_untested_torch_gives_null_flops_with_the_reason(monkeypatch):
    """The counter leans on torch's private dispatch API: on a release outside the tested
    range it refuses (the suite then reports FLOPs null with this reason), unless forced."""
    import workbench.suites.efficiency.flops as F

    assert F.counter_problem() is None  # the torch this project is tested with
    assert "outside the range" in F.counter_problem("2.20.0+cu130")
    assert "outside the range" in F.counter_problem("2.3.1")
    monkeypatch.setattr(F.torch, "__version__", "2.99.0")
    with pytest.raises(F.FlopCounterUnavailable, match="2.99.0 is outside"):
        F.forward_flops(torch.nn.Linear(3, 2), torch.randn(1, 3))
    monkeypatch.setenv("WORKBENCH_FLOPS_UNTESTED_TORCH", "1")
    assert F.forward_flops(torch.nn.Linear(3, 2), torch.randn(1, 3)).total == 2 * 3 * 2
