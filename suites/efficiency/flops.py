"""Exact FLOP counting on top of `torch.utils.flop_counter.FlopCounterMode`.

Convention (the one FlopCounterMode uses, stated with every figure):
  FLOPs = 2 x multiply-accumulates (MACs) of matrix products, linear layers,
  convolutions, recurrent-cell matmuls and attention (Q K^T and attention x V,
  over the full T x S score matrix even when a causal or padding mask hides part
  of it). Elementwise ops, activations, normalisation, softmax, pooling,
  reductions, embedding look-ups, copies and views count 0. Bias additions are
  not counted. Int8 (dynamically quantised) matmuls count like float ones.

FlopCounterMode alone gets four things wrong that this module fixes:
- the backward of a grouped (or depthwise) convolution: torch's `conv_backward_flop`
  ignores `groups`, so the weight gradient is counted `groups` times over (a depthwise
  3x3 layer on 64 channels: 64x); `_conv_backward_flop` divides by the groups;
- CPU scaled-dot-product attention (`aten._scaled_dot_product_flash_attention_for_cpu`
  and its backward) has no formula: an `nn.TransformerEncoder` in eval mode loses
  its attention FLOPs;
- the `nn.TransformerEncoder` / `nn.MultiheadAttention` inference fast paths
  (`aten._transformer_encoder_layer_fwd`, `aten._native_multi_head_attention`) are
  single fused ops with no formula: eval under `no_grad` counts 0;
- `nn.LSTM` on CPU runs `aten.mkldnn_rnn_layer` (and its backward), dynamically
  quantised layers run `quantized::linear_dynamic` / `aten.quantized_lstm`, and
  `mv`, `addmv`, `dot`, `addbmm`, `_addmm_activation`, `_int_mm` have no formula.

Any dispatched op that has neither a formula nor a place on the list of known
zero-FLOP ops is reported in `FlopCount.uncounted` with its call count, and the
count is marked partial (`complete=False`): never silently low.

The formulas for those ops live in `flop_formulas.py`; this file is the counter.
"""

from __future__ import annotations

import contextlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import os

import torch
from torch import nn

# The counter is built on torch's private dispatch API (`torch.utils._python_dispatch`) and
# `FlopCounterMode`'s formula registry, which change between releases. It is trusted only on
# the torch releases it is tested with (pyproject's range); elsewhere, or when those imports
# are gone, FLOPs are null with the reason instead of a crash or a silently wrong count.
TESTED_TORCH = ((2, 13), (2, 14))  # [low, high) as (major, minor)
try:
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    from workbench.suites.efficiency.flop_formulas import EXTRA_FORMULAS
    _IMPORT_PROBLEM: str | None = None
except ImportError as _exc:  # pragma: no cover - only on an untested torch
    TorchDispatchMode, FlopCounterMode, EXTRA_FORMULAS = object, None, {}  # type: ignore[assignment,misc]
    _IMPORT_PROBLEM = f"torch {torch.__version__} lacks the private API the FLOP counter uses ({_exc})"


class FlopCounterUnavailable(RuntimeError):
    """The FLOP counter cannot be trusted on this torch (see TESTED_TORCH)."""


def counter_problem(version: str | None = None) -> str | None:
    """Why FLOPs cannot be counted on this torch (None when they can).
    WORKBENCH_FLOPS_UNTESTED_TORCH=1 counts anyway on an untested release."""
    if _IMPORT_PROBLEM:
        return _IMPORT_PROBLEM
    version = version or torch.__version__
    try:
        major, minor = (int(v) for v in version.split("+")[0].split(".")[:2])
    except ValueError:
        return f"cannot read the torch version {version!r}"
    (lo, hi) = TESTED_TORCH
    if not lo <= (major, minor) < hi and os.environ.get("WORKBENCH_FLOPS_UNTESTED_TORCH") != "1":
        return (f"torch {version} is outside the range the FLOP counter is tested with "
                f"({lo[0]}.{lo[1]} <= torch < {hi[0]}.{hi[1]}); set WORKBENCH_FLOPS_UNTESTED_TORCH=1 to count anyway")
    return None


FLOP_CONVENTION = (
    "FLOPs = 2 x multiply-accumulates of matmul, linear, convolution, RNN-cell and attention "
    "(QK^T and attention x V over the full score matrix) ops; elementwise, activation, "
    "normalisation, softmax, pooling, reduction, embedding, copy and view ops count 0 "
    "(the torch.utils.flop_counter convention); int8 MACs count like float MACs."
)

# --------------------------------------------------------------------------- zero-FLOP ops
# Ops that do no matmul-like work, by convention 0 FLOPs. Anything dispatched that is
# neither here nor in a formula table is reported as uncounted.
_ZERO_FLOP_NAMES = frozenset("""
abs absolute acos acosh adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d _adaptive_avg_pool2d
_adaptive_avg_pool2d_backward _adaptive_avg_pool3d _adaptive_avg_pool3d_backward adaptive_max_pool2d
adaptive_max_pool2d_backward adaptive_max_pool3d add add_ addcdiv addcdiv_ addcmul addcmul_ alias alias_copy
all allclose amax amin aminmax any arange argmax argmin argsort as_strided as_strided_ as_strided_scatter
as_strided_copy asin asinh atan atan2 atanh avg_pool1d avg_pool2d avg_pool2d_backward avg_pool3d
avg_pool3d_backward baddbmm_ batch_norm_backward bernoulli bernoulli_ binary_cross_entropy
binary_cross_entropy_backward binary_cross_entropy_with_logits bitwise_and bitwise_not bitwise_or
bitwise_xor bucketize cat ceil celu channel_shuffle clamp clamp_ clamp_max clamp_max_ clamp_min
clamp_min_ clip clone col2im complex constant_pad_nd contiguous copy copy_ cos cosh count_nonzero
cudnn_batch_norm cudnn_batch_norm_backward cummax cummin cumprod cumsum detach detach_ detach_copy diag
diag_embed diagonal diagonal_copy diagonal_scatter div div_ dropout elu elu_ elu_backward embedding
embedding_backward embedding_dense_backward embedding_renorm_ empty empty_like empty_strided eq eq_ equal
erf erfc erfinv exp exp2 expand expand_as expand_copy expm1 exponential_ eye fill fill_ flip floor
floor_divide fmax fmin fmod frac full full_like gather ge gelu gelu_ gelu_backward geometric_ glu
glu_backward gt hardshrink hardsigmoid hardsigmoid_backward hardswish hardswish_backward hardtanh
hardtanh_ hardtanh_backward histc im2col index index_add index_add_ index_copy index_copy_ index_fill
index_fill_ index_put index_put_ _index_put_impl_ index_reduce index_select isclose isfinite isinf isnan
item le leaky_relu leaky_relu_ leaky_relu_backward lerp lerp_ lift lift_fresh lift_fresh_copy linspace
log log10 log1p log2 log_normal_ log_sigmoid_backward log_sigmoid_forward _log_softmax
_log_softmax_backward_data logaddexp logical_and logical_not logical_or logical_xor logit logit_backward
logspace logsumexp lt masked_fill masked_fill_ masked_scatter masked_scatter_ masked_select max
max_pool2d_with_indices max_pool2d_with_indices_backward max_pool3d_with_indices
max_pool3d_with_indices_backward max_unpool2d maximum mean median min minimum mish mish_backward
mse_loss mse_loss_backward mul mul_ multinomial nan_to_num nanmean nansum narrow narrow_copy
native_batch_norm native_batch_norm_backward _native_batch_norm_legit _native_batch_norm_legit_functional
_native_batch_norm_legit_no_training native_dropout native_dropout_backward native_group_norm
native_group_norm_backward native_layer_norm native_layer_norm_backward ne neg neg_ new_empty
new_empty_strided new_full new_ones new_zeros nll_loss nll_loss_backward nll_loss_forward nll_loss2d_backward
nll_loss2d_forward nonzero norm normal normal_ ones ones_like permute permute_copy pixel_shuffle
pixel_unshuffle polar pow pow_ prod rand rand_like randint randint_like randn randn_like random_ randperm
reciprocal reciprocal_ reflection_pad1d reflection_pad2d reflection_pad2d_backward relu relu_ remainder
repeat repeat_interleave replication_pad1d replication_pad2d replication_pad2d_backward reshape
resize_ resize_as_ roll rot90 round rsqrt rsub _safe_softmax scalar_tensor scatter scatter_
scatter_add scatter_add_ scatter_reduce scatter_reduce_ searchsorted select select_backward select_copy
select_scatter selu set_ sgn sigmoid sigmoid_ sigmoid_backward sign silu silu_ silu_backward sin sinh slice
slice_backward slice_copy slice_scatter smooth_l1_loss smooth_l1_loss_backward soft_margin_loss _softmax
_softmax_backward_data softplus softplus_backward softshrink sort split split_copy split_with_sizes
split_with_sizes_copy sqrt square squeeze squeeze_ squeeze_copy stack std std_mean sub sub_ sum t t_copy
take tan tanh tanh_ tanh_backward threshold threshold_ threshold_backward _to_copy to topk trace
transpose transpose_ transpose_copy tril tril_ triu triu_ trunc unbind unbind_copy unfold unfold_backward
unfold_copy uniform_ unique_consecutive unique_dim _unique2 unsafe_split unsafe_split_with_sizes
unsqueeze unsqueeze_ unsqueeze_copy upsample_bilinear2d upsample_bilinear2d_backward upsample_nearest2d
upsample_nearest2d_backward _unsafe_view _unsafe_index var var_mean view view_as view_as_complex
view_as_real view_copy where xlogy zero_ zeros zeros_like _local_scalar_dense _assert_async
_assert_tensor_metadata _foreach_add _foreach_mul _foreach_div _foreach_sub _foreach_sqrt _foreach_lerp_
_foreach_add_ _foreach_mul_ _foreach_div_ _foreach_addcmul_ _foreach_addcdiv_ _foreach_sqrt_ _foreach_norm
_fused_adam _fused_adamw _fused_sgd _thnn_fused_lstm_cell _thnn_fused_gru_cell _thnn_fused_lstm_cell_backward_impl
_thnn_fused_gru_cell_backward _pack_padded_sequence _pad_packed_sequence _amp_foreach_non_finite_check_and_unscale_
_amp_update_scale_ _nested_tensor_from_mask _nested_tensor_from_mask_left_aligned _nested_tensor_size
_nested_tensor_strides _nested_tensor_storage_offsets _nested_from_padded _nested_view_from_buffer
to_padded_tensor _transform_bias_rescale_qkv _masked_softmax _masked_softmax_backward
_empty_affine_quantized _empty_per_channel_affine_quantized quantize_per_tensor quantize_per_tensor_dynamic quantize_per_channel dequantize _make_per_tensor_quantized_tensor
q_scale q_zero_point q_per_channel_scales q_per_channel_zero_points int_repr fake_quantize_per_tensor_affine
is_same_size sym_is_contiguous sym_size sym_stride sym_numel sym_storage_offset size stride numel dim is_contiguous
storage_offset is_strides_like_format is_non_overlapping_and_dense _has_compatible_shallow_copy_type
_reshape_alias _reshape_alias_copy _conj _neg_view _conj_physical conj_physical resolve_conj resolve_neg
_pin_memory pin_memory record_stream _fused_dropout _masked_scale huber_loss huber_loss_backward
kl_div _cdist_forward cross_entropy_loss
""".split())
_ZERO_FLOP_NAMESPACES = frozenset({"prim", "prims"})

# Fused attention kernels: the name reported as the "attention backend".
_ATTENTION_BACKENDS = {
    "_scaled_dot_product_flash_attention_for_cpu": "sdpa_flash_cpu",
    "_scaled_dot_product_flash_attention": "sdpa_flash",
    "_scaled_dot_product_efficient_attention": "sdpa_efficient",
    "_scaled_dot_product_cudnn_attention": "sdpa_cudnn",
    "_scaled_dot_product_fused_attention_overrideable": "sdpa_overrideable",
    "_flash_attention_forward": "flash",
    "_efficient_attention_forward": "efficient",
    "_transformer_encoder_layer_fwd": "encoder_fast_path",
    "_native_multi_head_attention": "native_mha_fast_path",
}
# No fused attention kernel ran: attention, if the model has any, ran as explicit matmuls
# (the reference transformer/gpt, or SDPA's math path) and is counted through them.
NO_FUSED_ATTENTION = "none"


def _op_name(func: Any) -> str:
    packet = getattr(func, "_overloadpacket", func)
    ns = getattr(func, "namespace", None) or getattr(packet, "_qualified_op_name", "?").split("::")[0]
    return f"{ns}.{getattr(packet, '__name__', str(packet))}"


def is_zero_flop(func: Any) -> bool:
    """True when `func` (an OpOverload) does no matmul-like work by the stated convention:
    it is on the zero-FLOP list, a view, pointwise, a reduction or a random fill."""
    ns = getattr(func, "namespace", "")
    if ns in _ZERO_FLOP_NAMESPACES:
        return True
    if ns != "aten":
        return False  # custom and quantized ops are unknown unless they have a formula
    name = func._overloadpacket.__name__
    if name in _ZERO_FLOP_NAMES:
        return True
    if getattr(func, "is_view", False):
        return True
    tags = set(getattr(func, "tags", ()))
    zero_tags = {torch.Tag.pointwise, torch.Tag.reduction, torch.Tag.nondeterministic_seeded, torch.Tag.inplace_view}
    return bool(tags & zero_tags)


class _OpRecorder(TorchDispatchMode):
    """Sees every op FlopCounterMode finally executes (it sits below it on the mode stack,
    so decomposed ops arrive as their parts) and notes those without a formula."""

    def __init__(self, registry: dict[Any, Any], counter: FlopCounterMode) -> None:
        super().__init__()
        self.registry = registry
        self.counter = counter
        self.calls: Counter[str] = Counter()
        self.uncounted: Counter[str] = Counter()
        self.uncounted_in: dict[str, set[str]] = defaultdict(set)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = _op_name(func)
        self.calls[name] += 1
        packet = getattr(func, "_overloadpacket", None)
        if packet not in self.registry and not is_zero_flop(func):
            self.uncounted[name] += 1
            parents = getattr(self.counter.mod_tracker, "parents", ())
            self.uncounted_in[name].update(p for p in parents if p != "Global")
        return func(*args, **(kwargs or {}))


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one call, by the convention in `FLOP_CONVENTION`.

    total:       all counted FLOPs
    by_module:   module path -> FLOPs of ops run inside it (children included); "" is the root
    by_op:       "aten.mm" -> FLOPs
    calls:       every dispatched op -> call count
    uncounted:   ops with no formula that are not known to be zero-FLOP -> call count
    uncounted_modules: op -> module paths where it ran
    attention_backends: fused attention kernels that ran ("sdpa_flash_cpu", ...)
    """

    total: int
    by_module: dict[str, int] = field(default_factory=dict)
    by_op: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    uncounted: dict[str, int] = field(default_factory=dict)
    uncounted_modules: dict[str, list[str]] = field(default_factory=dict)
    attention_backends: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """False when some op that may do matmul-like work had no formula."""
        return not self.uncounted

    @property
    def attention_backend(self) -> str:
        return ",".join(self.attention_backends) if self.attention_backends else NO_FUSED_ATTENTION

    def uncounted_reason(self) -> str | None:
        if self.complete:
            return None
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(self.uncounted.items()))
        return f"partially counted: no FLOP formula for {ops}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "complete": self.complete,
            "by_module": dict(self.by_module),
            "by_op": dict(self.by_op),
            "calls": dict(self.calls),
            "uncounted": dict(self.uncounted),
            "uncounted_modules": {k: list(v) for k, v in self.uncounted_modules.items()},
            "attention_backend": self.attention_backend,
            "convention": FLOP_CONVENTION,
        }


def _module_key(name: str, root_name: str | None) -> str:
    """ModuleTracker names are "<RootClass>.child.grandchild"; return "child.grandchild"."""
    if root_name is None:
        return name
    if name == root_name:
        return ""
    if name.startswith(root_name + "."):
        return name[len(root_name) + 1 :]
    return name


def count_flops(fn: Callable[[], Any], *, root: nn.Module | None = None) -> FlopCount:
    """Run `fn()` once and count its FLOPs (forward, and backward if `fn` runs one).

    `root` names the model whose submodules appear in `by_module` (paths as in
    `root.named_modules()`, "" for the root itself). Raises FlopCounterUnavailable on a
    torch the counter is not tested with (`counter_problem`).
    """
    problem = counter_problem()
    if problem:
        raise FlopCounterUnavailable(problem)
    counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS)
    recorder = _OpRecorder(counter.flop_registry, counter)
    # recorder first: it sits under FlopCounterMode and sees the ops FlopCounterMode runs
    with recorder, counter:
        fn()
    counts = counter.get_flop_counts()
    total = int(counter.get_total_flops())
    root_name = type(root).__name__ if root is not None else None
    by_module: dict[str, int] = {}
    for mod, ops in counts.items():
        if mod == "Global":
            continue
        key = _module_key(mod, root_name)
        by_module[key] = by_module.get(key, 0) + int(sum(ops.values()))
    if root is not None:
        by_module[""] = total
    by_op: Counter[str] = Counter()
    for packet, v in counts.get("Global", {}).items():
        by_op[_op_name(packet)] += int(v)
    ran = {n.split(".", 1)[1] for n in recorder.calls}
    backends = sorted(_ATTENTION_BACKENDS[n] for n in ran if n in _ATTENTION_BACKENDS)
    return FlopCount(
        total=total,
        by_module=by_module,
        by_op=dict(by_op),
        calls=dict(recorder.calls),
        uncounted=dict(recorder.uncounted),
        uncounted_modules={k: sorted(_module_key(m, root_name) for m in v) for k, v in recorder.uncounted_in.items()},
        attention_backends=tuple(backends),
    )


@contextlib.contextmanager
def eval_flags(module: nn.Module, requires_grad: bool | None) -> Iterator[None]:
    """Every submodule in eval mode (no BatchNorm statistic updates, dropout off) and,
    when `requires_grad` is given, every floating parameter's flag set to it; both restored."""
    training = {n: m.training for n, m in module.named_modules()}
    req = {n: p.requires_grad for n, p in module.named_parameters()}
    try:
        module.eval()
        if requires_grad is not None:
            for p in module.parameters():
                if p.is_floating_point():
                    p.requires_grad_(requires_grad)
        yield
    finally:
        for n, m in module.named_modules():
            m.training = training[n]
        for n, p in module.named_parameters():
            p.requires_grad_(req[n])


def first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out:
        return first_tensor(out[0])
    if isinstance(out, dict) and out:
        return first_tensor(next(iter(out.values())))
    raise TypeError(f"Expected the model to return a tensor (or a tuple starting with one), got {type(out).__name__}.")


def forward_flops(module: nn.Module, x: torch.Tensor) -> FlopCount:
    """FLOPs of one inference forward `module(x)`: eval mode under `torch.no_grad()`
    (fused fast paths included, as deployed). Flags are restored afterwards."""
    with eval_flags(module, None), torch.no_grad():
        return count_flops(lambda: module(x), root=module)


def forward_backward_flops(module: nn.Module, x: torch.Tensor) -> FlopCount:
    """FLOPs of forward + backward of a training step: eval-mode forward (no BatchNorm
    statistic updates) then gradients of sum(output) w.r.t. every floating-point parameter
    via `torch.autograd.grad` (parameter `.grad` untouched), not w.r.t. the input, so the
    first layer's input gradient is not computed (as in training).

    Raises RuntimeError when the model has no differentiable parameter (e.g. int8)."""
    params = [p for p in module.parameters() if p.is_floating_point()]
    if not params:
        raise RuntimeError("the model has no floating-point parameters to differentiate")

    def step() -> None:
        out = first_tensor(module(x))
        if not out.requires_grad:
            raise RuntimeError("the model's output does not depend on any differentiable parameter")
        torch.autograd.grad(out.float().sum(), params, allow_unused=True)

    with eval_flags(module, True), torch.enable_grad():
        return count_flops(step, root=module)


def flop_environment() -> dict[str, Any]:
    """What a FLOP figure depends on: torch version, intra-op threads, enabled SDPA backends."""
    env: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    cuda_backends = torch.backends.cuda
    for flag in ("flash_sdp_enabled", "mem_efficient_sdp_enabled", "math_sdp_enabled", "cudnn_sdp_enabled"):
        fn = getattr(cuda_backends, flag, None)
        if fn is not None:
            env[flag.replace("_enabled", "")] = bool(fn())
    return env
