"""FLOP formulas for the ops `torch.utils.flop_counter.FlopCounterMode` does not count,
or counts wrongly (see `flops.py` for the convention and the list of what is fixed).

`EXTRA_FORMULAS` maps each op overload packet to its formula; `flops.count_flops` hands it
to FlopCounterMode as `custom_mapping` (tests: tests/suites/test_efficiency_flops.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

aten = torch.ops.aten

# --------------------------------------------------------------------------- formulas
# Every formula is "raw": it receives the op's real arguments (tensors, not shapes), so
# nested tensors and packed quantised weights can be read.


def _raw(f: Callable[..., int]) -> Callable[..., int]:
    f._get_raw = True  # type: ignore[attr-defined]  # FlopCounterMode passes real args
    return f


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape)


def _seq_lengths(t: torch.Tensor) -> list[int]:
    """Sequence lengths of a (B, T, E) batch-first tensor, or of each entry of a nested one."""
    if getattr(t, "is_nested", False):
        sizes = t._nested_tensor_size()  # (B, 2): (T_i, E) per sequence
        return [int(s) for s in sizes[:, 0].tolist()]
    if t.dim() == 2:  # unbatched (T, E)
        return [int(t.shape[0])]
    return [int(t.shape[1])] * int(t.shape[0])


@_raw
def _sdpa_cpu_flop(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    return sdpa_flop_count(_shape(query), _shape(key), _shape(value))


@_raw
def _sdpa_cpu_backward_flop(
    grad_out: torch.Tensor, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any, out_val: Any = None, **kwargs: Any
) -> int:
    return sdpa_backward_flop_count(_shape(grad_out), _shape(query), _shape(key), _shape(value))


@_raw
def _encoder_layer_fast_path_flop(src: torch.Tensor, embed_dim: int, num_heads: int, qkv_weight: torch.Tensor,
                                  qkv_bias: torch.Tensor, proj_weight: torch.Tensor, proj_bias: torch.Tensor,
                                  use_gelu: bool, norm_first: bool, eps: float, norm_weight_1: torch.Tensor,
                                  norm_bias_1: torch.Tensor, norm_weight_2: torch.Tensor, norm_bias_2: torch.Tensor,
                                  ffn_weight_1: torch.Tensor, ffn_bias_1: torch.Tensor, ffn_weight_2: torch.Tensor,
                                  *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    """`aten._transformer_encoder_layer_fwd`: one whole encoder layer in one op.
    Per sequence of length L: 2L (qkv + proj + ffn weight elements) + 4 L^2 E (scores, A V)."""
    per_token = qkv_weight.numel() + proj_weight.numel() + ffn_weight_1.numel() + ffn_weight_2.numel()
    total = 0
    for L in _seq_lengths(src):
        total += 2 * L * per_token + 4 * L * L * int(embed_dim)
    return total


@_raw
def _native_mha_flop(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, embed_dim: int, num_head: int,
                     qkv_weight: torch.Tensor, qkv_bias: torch.Tensor, proj_weight: torch.Tensor,
                     *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    """`aten._native_multi_head_attention`: q/k/v projections, scores, A V, output projection."""
    E = int(embed_dim)
    total = 0
    for Lq, Lk in zip(_seq_lengths(query), _seq_lengths(key)):
        total += 2 * Lq * E * E + 2 * 2 * Lk * E * E  # q from query; k, v from key/value
        total += 2 * Lq * Lk * E * 2  # Q K^T and A V over all heads
        total += 2 * Lq * proj_weight.shape[0] * proj_weight.shape[1]
    return total


def _mm(m: int, k: int, n: int) -> int:
    return 2 * m * k * n


@_raw
def _addmm_activation_flop(bias: torch.Tensor, mat1: torch.Tensor, mat2: torch.Tensor, *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    return _mm(mat1.shape[0], mat1.shape[1], mat2.shape[1])


@_raw
def _mv_flop(mat: torch.Tensor, vec: torch.Tensor, *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    return _mm(mat.shape[0], mat.shape[1], 1)


@_raw
def _addmv_flop(bias: torch.Tensor, mat: torch.Tensor, vec: torch.Tensor, *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    return _mm(mat.shape[0], mat.shape[1], 1)


@_raw
def _dot_flop(a: torch.Tensor, b: torch.Tensor, *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    return 2 * a.numel()


@_raw
def _addbmm_flop(bias: torch.Tensor, b1: torch.Tensor, b2: torch.Tensor, *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    return b1.shape[0] * _mm(b1.shape[1], b1.shape[2], b2.shape[2])


@_raw
def _int_mm_flop(a: torch.Tensor, b: torch.Tensor, *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    return _mm(a.shape[0], a.shape[1], b.shape[1])


@_raw
def _weight_int8pack_mm_flop(a: torch.Tensor, w: torch.Tensor, *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    return _mm(a.shape[0], a.shape[1], w.shape[0])  # w is (N, K)


@_raw
def _mkldnn_linear_flop(x: torch.Tensor, w: torch.Tensor, *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    return 2 * (x.numel() // x.shape[-1]) * w.shape[0] * w.shape[1]


@_raw
def _mkldnn_conv_flop(x: torch.Tensor, w: torch.Tensor, *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    # same count as aten.convolution: 2 * output elements * (C_in / groups) * prod(kernel)
    return 2 * out_val.numel() * int(math.prod(w.shape[1:]))


def _conv_core(x_spatial: Sequence[int], w: Sequence[int], batch: int) -> int:
    """2 x MACs of a direct convolution whose spatial loop runs over `x_spatial`
    (the output positions of a convolution, the input positions of a transposed one),
    with weight (A, B, *kernel): every position meets A x B x prod(kernel) weights."""
    return 2 * batch * int(math.prod(x_spatial)) * int(math.prod(w))


@_raw
def _conv_backward_flop(grad_out: torch.Tensor, x: torch.Tensor, w: torch.Tensor, bias_sizes: Any, stride: Any,
                        padding: Any, dilation: Any, transposed: bool, output_padding: Any, groups: int,
                        output_mask: Sequence[bool], *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    """`aten.convolution_backward`, exact for any `groups`, stride, dilation and padding.

    Weight w: (C_out, C_in/g, *k) for a convolution, (C_in, C_out/g, *k) for a transposed
    one; the spatial loop of the forward runs over the output (convolution) or input
    (transposed) positions P. The forward is 2 * B * P * prod(w.shape) FLOPs; the input
    gradient (a transposed convolution of grad_out with w) is the same count, and so is
    the weight gradient (each of the prod(w.shape) entries sums B * P products; torch's
    own formula multiplies this by `groups`). Bias gradients are sums: 0 FLOPs."""
    b = int(x.shape[0])
    positions = (x.shape if transposed else grad_out.shape)[2:]
    per_pass = _conv_core(positions, w.shape, b)
    return per_pass * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, default: Any = None) -> Any:
    """Argument `name` at position `index` of `args` (counted after the named leading ones)."""
    return args[index] if len(args) > index else kwargs.get(name, default)


def _rnn_tokens(x: torch.Tensor, batch_sizes: Sequence[int] | torch.Tensor | None) -> int:
    """Time steps x batch of an RNN input (T, B, I) / (B, T, I), or of packed data (sum_T, I)."""
    if batch_sizes is not None and len(batch_sizes) > 0:
        return int(x.shape[0])
    return int(x.numel() // x.shape[-1])


@_raw
def _mkldnn_rnn_layer_flop(x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor,
                           hx: torch.Tensor, cx: torch.Tensor, reverse: bool, batch_sizes: Sequence[int],
                           *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    """One layer and direction of a CPU (oneDNN) RNN: per step x @ W_ih^T and h @ W_hh^T."""
    return 2 * _rnn_tokens(x, batch_sizes) * (w_ih.numel() + w_hh.numel())


@_raw
def _mkldnn_rnn_layer_backward_flop(x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, *args: Any,
                                    out_val: Any = None, **kwargs: Any) -> int:
    """Backward of one oneDNN RNN layer: gradients w.r.t. input, hidden state (2 x the matmuls'
    MACs) and both weights (2 x again); the kernel always computes all four."""
    batch_sizes = _arg(args, kwargs, 17, "batch_sizes")
    return 2 * 2 * _rnn_tokens(x, batch_sizes) * (w_ih.numel() + w_hh.numel())


def _cudnn_weight_elements(weights: Sequence[torch.Tensor]) -> int:
    return sum(int(w.numel()) for w in weights if w is not None and w.dim() == 2)


@_raw
def _cudnn_rnn_flop(x: torch.Tensor, weights: Sequence[torch.Tensor], *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    """cuDNN RNN: every 2-D weight (W_ih, W_hh, W_hr per layer and direction) is used once
    per time step and batch element."""
    return 2 * _rnn_tokens(x, _arg(args, kwargs, 12, "batch_sizes")) * _cudnn_weight_elements(weights)


@_raw
def _miopen_rnn_flop(x: torch.Tensor, weights: Sequence[torch.Tensor], *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    return 2 * _rnn_tokens(x, _arg(args, kwargs, 10, "batch_sizes")) * _cudnn_weight_elements(weights)


@_raw
def _cudnn_rnn_backward_flop(x: torch.Tensor, weights: Sequence[torch.Tensor], *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    batch_sizes = _arg(args, kwargs, 16, "batch_sizes")
    mask = _arg(args, kwargs, 19, "output_mask", (True, True, True, True))
    per_pass = 2 * _rnn_tokens(x, batch_sizes) * _cudnn_weight_elements(weights)
    # data gradients (input and hidden) always; weight gradients when requested
    return per_pass * (1 + (1 if mask[3] else 0))


@_raw
def _quantized_linear_dynamic_flop(x: torch.Tensor, packed: Any, *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    w = packed.unpack()[0]  # (N, K) qint8
    return 2 * (x.numel() // x.shape[-1]) * int(w.shape[0]) * int(w.shape[1])


@_raw
def _quantized_lstm_flop(x: torch.Tensor, hx: Sequence[torch.Tensor], params: Any, has_biases: bool, num_layers: int,
                         dropout: float, train: bool, bidirectional: bool, batch_first: bool = False,
                         *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    """Dynamically quantised LSTM (`aten.quantized_lstm.input`): 4 gates, no projection."""
    D = 2 if bidirectional else 1
    H = int(hx[0].shape[-1])
    tokens = int(x.numel() // x.shape[-1])
    total = 0
    in_size = int(x.shape[-1])
    for _ in range(int(num_layers)):
        total += D * 2 * tokens * (4 * H * in_size + 4 * H * H)
        in_size = D * H
    return total


def _extra_formulas() -> dict[Any, Callable[..., int]]:
    """Formulas for the ops FlopCounterMode (torch 2.13) does not count, or counts wrongly."""
    table: dict[str, Callable[..., int]] = {
        "_scaled_dot_product_flash_attention_for_cpu": _sdpa_cpu_flop,
        "_scaled_dot_product_flash_attention_for_cpu_backward": _sdpa_cpu_backward_flop,
        "_scaled_dot_product_fused_attention_overrideable": _sdpa_cpu_flop,
        "_scaled_dot_product_fused_attention_overrideable_backward": _sdpa_cpu_backward_flop,
        "_transformer_encoder_layer_fwd": _encoder_layer_fast_path_flop,
        "_native_multi_head_attention": _native_mha_flop,
        "_addmm_activation": _addmm_activation_flop,
        "mv": _mv_flop,
        "addmv": _addmv_flop,
        "dot": _dot_flop,
        "vdot": _dot_flop,
        "addbmm": _addbmm_flop,
        "_int_mm": _int_mm_flop,
        "_weight_int8pack_mm": _weight_int8pack_mm_flop,
        "mkldnn_linear": _mkldnn_linear_flop,
        "mkldnn_convolution": _mkldnn_conv_flop,
        "convolution_backward": _conv_backward_flop,
        "mkldnn_rnn_layer": _mkldnn_rnn_layer_flop,
        "mkldnn_rnn_layer_backward": _mkldnn_rnn_layer_backward_flop,
        "_cudnn_rnn": _cudnn_rnn_flop,
        "_cudnn_rnn_backward": _cudnn_rnn_backward_flop,
        "miopen_rnn": _miopen_rnn_flop,
        "quantized_lstm": _quantized_lstm_flop,
    }
    out: dict[Any, Callable[..., int]] = {}
    for name, f in table.items():
        packet = getattr(aten, name, None)
        if packet is not None:
            out[packet] = f
    try:
        out[torch.ops.quantized.linear_dynamic] = _quantized_linear_dynamic_flop
    except (AttributeError, RuntimeError):  # quantized backend not built in
        pass
    return out


EXTRA_FORMULAS: dict[Any, Callable[..., int]] = _extra_formulas()
