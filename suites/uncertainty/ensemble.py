"""Sampling predictions: MC dropout and deep ensembles.

MC dropout (`mc_dropout_predict`): T stochastic passes with only the dropout layers in
training mode; every other submodule (BatchNorm above all) stays in eval mode, and every
train/eval flag and requires_grad flag is restored afterwards. The T passes run as one
forward on a T-times repeated batch (each row draws its own mask). The global RNG is
seeded for the call and restored after it, so the caller's random stream is untouched.

What is switched on: `nn.Dropout`, `Dropout1d/2d/3d`, `AlphaDropout`, `FeatureAlphaDropout`
with p > 0, `nn.MultiheadAttention` with dropout > 0, and `nn.TransformerEncoderLayer` /
`nn.TransformerDecoderLayer` that hold dropout (in eval mode they take a fused fast path
that skips their dropout layers entirely). Dropout written as `F.dropout(x, p,
training=self.training)` or `scaled_dot_product_attention(dropout_p=...)` inside a custom
module is controlled by that module's own flag, which also governs anything else the
module does in training mode, so it cannot be switched on safely and stays off.

Deep ensembles (`DeepEnsemble`): M members with identical architecture evaluated in one
vectorised call (`torch.func.stack_module_state` + `functional_call` + `vmap`); members
that do not vectorise (no batching rule, e.g. `nn.LSTM`; data-dependent control flow; or
an internal per-sample fallback that would only be slower) are evaluated by a plain loop.
`DeepEnsemble.path` says which ran and `fallback_reason` why.

`vectorize="auto"` (the default) picks vmap on CUDA and the loop on CPU: on CPU vmap turns
M small GEMMs/convolutions into one bmm / grouped convolution, which measured 1.2-2.1x
SLOWER than the loop for every reference model (benchmarks/bench_ensemble.py). The choice
is made by device, never by timing at run time, so two runs with one seed take the same
path and give bitwise-identical numbers (the paths agree to ~1e-6, not bitwise).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from workbench.errors import ConfigError, ModelError, check_positive_int
from workbench.torch_utils import frozen_eval, module_device

_FUSED_LAYERS = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


def default_max_rows(device: torch.device) -> int:
    """Rows per forward: 512 on CPU, 16384 on CUDA. On CPU a bigger batch buys nothing
    and falls out of cache (MC dropout T=20, process CPU time vs T passes of 512 rows:
    512 rows 0.90-1.04x, 2048 rows up to 1.41x for the transformer; bench_ensemble.py);
    on a GPU fewer, fuller kernels are the point of batching."""
    return 16384 if device.type == "cuda" else 512


def _has_dropout(m: nn.Module) -> bool:
    if isinstance(m, nn.modules.dropout._DropoutNd):
        return float(m.p) > 0
    if isinstance(m, nn.MultiheadAttention):
        return float(m.dropout) > 0
    return False


def mc_dropout_layers(module: nn.Module) -> list[str]:
    """Names of the submodules MC dropout puts in training mode (empty: no usable dropout).
    Dropout modules with p = 0 are not counted."""
    names = [n for n, m in module.named_modules() if _has_dropout(m)]
    for n, m in module.named_modules():
        if isinstance(m, _FUSED_LAYERS) and any(_has_dropout(c) for c in m.modules()):
            names.append(n)
    return sorted(set(names))


@contextlib.contextmanager
def mc_dropout_mode(module: nn.Module) -> Iterator[list[str]]:
    """Everything in eval mode with requires_grad off, except the layers from
    `mc_dropout_layers` (flag set on those modules only, not their children); all flags
    restored on exit. Yields the names switched on."""
    names = mc_dropout_layers(module)
    modules = dict(module.named_modules())
    with frozen_eval(module):
        for n in names:
            modules[n].training = True
        yield names


def _rows(out: object) -> torch.Tensor:
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"Expected the model to return a tensor, got {type(out).__name__}.")
    return out


@torch.no_grad()
def mc_dropout_predict(
    module: nn.Module,
    x: torch.Tensor,
    *,
    samples: int,
    seed: int = 0,
    device: torch.device | None = None,
    max_rows: int | None = None,
    batched: bool = True,
    progress: Any = None,
) -> torch.Tensor:
    """T = `samples` stochastic forward passes, outputs (T, N, ...) float32 on CPU.

    batched=True repeats each chunk of b inputs T times and runs one forward of T*b rows
    (b = max(1, max_rows // T); default `default_max_rows(device)`); batched=False runs T
    separate passes per chunk of `max_rows` (same distribution, different random draws).
    `progress` (a `workbench.progress.Progress`, optional) counts sampled predictions (T per
    input). Raises ModelError when the model has no dropout layer with p > 0."""
    check_positive_int("samples", samples)
    device = device or module_device(module)
    max_rows = check_positive_int("max_rows", max_rows) if max_rows is not None else default_max_rows(device)
    if not mc_dropout_layers(module):
        raise ModelError(f"{type(module).__name__} has no dropout layer with p > 0; MC dropout needs one.")
    if x.shape[0] == 0:
        raise ModelError("mc_dropout_predict() got an empty input tensor.")
    forked = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked), mc_dropout_mode(module):
        torch.manual_seed(int(seed))
        outs: list[torch.Tensor] = []
        if batched and samples <= max_rows:
            b = max(1, max_rows // samples)
            for i in range(0, x.shape[0], b):
                xb = x[i : i + b].to(device)
                rep = xb.unsqueeze(0).expand(samples, *xb.shape).reshape(samples * xb.shape[0], *xb.shape[1:])
                out = _rows(module(rep)).float()
                outs.append(out.reshape(samples, xb.shape[0], *out.shape[1:]).cpu())
                if progress is not None:
                    progress.update(samples * xb.shape[0])
        else:
            for i in range(0, x.shape[0], max_rows):
                xb = x[i : i + max_rows].to(device)
                outs.append(torch.stack([_rows(module(xb)).float() for _ in range(samples)]).cpu())
                if progress is not None:
                    progress.update(samples * xb.shape[0])
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)


def _structure(m: nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    return [(k, tuple(v.shape), v.dtype) for k, v in m.state_dict().items()]


class DeepEnsemble:
    """M trained members of one architecture, evaluated together.

    `vectorize`: "auto" (vmap on CUDA, loop elsewhere), True / "vmap", False / "loop".
    `predict(x)` returns (M, N, ...) float32 on CPU with every member in eval mode (their
    own flags are restored afterwards); members are never moved (the loop feeds each
    member on its own device; vmap stacks copies of the weights on `device`, default
    member 0's). The stacked copies are made once: members must not change afterwards.
    On the vmap path the first call checks vmap against the plain loop on a few rows
    (atol 1e-4) and watches for vmap's per-sample fallback warning; any failure switches
    to the loop for good and is recorded in `fallback_reason`."""

    def __init__(
        self, members: Sequence[nn.Module], *, device: torch.device | None = None, vectorize: bool | str = "auto"
    ) -> None:
        members = list(members)
        if not members:
            raise ConfigError("Expected at least one ensemble member, got none.")
        for i, m in enumerate(members):
            if not isinstance(m, nn.Module):
                raise ConfigError(f"Expected ensemble member {i} to be an nn.Module, got {type(m).__name__}.")
        if vectorize not in (True, False, "auto", "vmap", "loop"):
            raise ConfigError(f"Expected `vectorize` in (True, False, 'auto', 'vmap', 'loop'), got {vectorize!r}.")
        self.members = members
        self._devices = [module_device(m) for m in members]  # members are never moved
        self.device = device or self._devices[0]
        self.fallback_reason: str | None = None
        if vectorize == "auto":
            vectorize = self.device.type == "cuda"
            if not vectorize:
                self.fallback_reason = f"auto: on {self.device.type} the member loop is faster than vmap (bench_ensemble.py)"
        elif vectorize in ("vmap", "loop"):
            vectorize = vectorize == "vmap"
        if not vectorize and self.fallback_reason is None:
            self.fallback_reason = "loop requested"
        self.path = "vmap" if vectorize else "loop"
        self._stacked: tuple[dict, dict, nn.Module] | None = None
        self._checked = False
        if vectorize:
            kinds = {type(m) for m in members}
            if len(kinds) > 1 or any(_structure(m) != _structure(members[0]) for m in members[1:]):
                self._fallback("members differ in architecture or parameter shapes")

    def __len__(self) -> int:
        return len(self.members)

    def _fallback(self, reason: str) -> None:
        self.path, self.fallback_reason, self._stacked = "loop", reason, None

    def _stack(self) -> tuple[dict, dict, nn.Module]:
        if self._stacked is None:
            from torch.func import stack_module_state

            params, buffers = stack_module_state(self.members)
            params = {k: v.detach().to(self.device) for k, v in params.items()}
            buffers = {k: v.detach().to(self.device) for k, v in buffers.items()}
            base = copy.deepcopy(self.members[0]).to("meta").eval()
            self._stacked = (params, buffers, base)
        return self._stacked

    def _vmap(self, xb: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call, vmap

        params, buffers, base = self._stack()

        def one(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
            return _rows(functional_call(base, (p, b), (x,)))

        return vmap(one, in_dims=(0, 0, None))(params, buffers, xb)

    def _loop(self, xb: torch.Tensor) -> torch.Tensor:
        outs = []
        for m, dev in zip(self.members, self._devices):
            out = _rows(m(xb if xb.device == dev else xb.to(dev)))
            outs.append(out if out.device == self.device else out.to(self.device))
        return torch.stack(outs)

    def _check_vmap(self, xb: torch.Tensor) -> None:
        self._checked = True
        probe = xb[: min(8, xb.shape[0])]
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fast = self._vmap(probe)
        except Exception as exc:  # any op without a batching rule, data-dependent control flow...
            self._fallback(f"vmap failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            return
        slow_path = [str(w.message) for w in caught if "batching rule" in str(w.message)]
        if slow_path:
            self._fallback(f"vmap would loop per sample internally: {slow_path[0].split('.')[0][:200]}")
            return
        ref = self._loop(probe)
        if fast.shape != ref.shape or not torch.allclose(fast.float(), ref.float(), atol=1e-4, rtol=1e-4):
            self._fallback("vmap output differs from the member loop by more than 1e-4")

    @torch.no_grad()
    def predict(self, x: torch.Tensor, *, max_rows: int | None = None) -> torch.Tensor:
        """Outputs of every member, (M, N, ...) float32 on CPU. A vmap call sees chunks of
        max(1, max_rows // M) inputs (~max_rows rows in all), a member in the loop chunks of
        max_rows (default `default_max_rows(device)`)."""
        max_rows = check_positive_int("max_rows", max_rows) if max_rows is not None else default_max_rows(self.device)
        if x.shape[0] == 0:
            raise ModelError("DeepEnsemble.predict() got an empty input tensor.")
        # vmap evaluates M copies of a chunk at once; the loop feeds one member at a time
        chunk = max(1, max_rows // len(self.members)) if self.path == "vmap" else max_rows
        outs = []
        with contextlib.ExitStack() as stack:
            if self.path == "loop" or not self._checked:  # the vmap path runs an eval-mode copy only
                for m in self.members:
                    if any(sub.training for sub in m.modules()):  # under no_grad only the mode matters
                        stack.enter_context(frozen_eval(m))
            for i in range(0, x.shape[0], chunk):
                xb = x[i : i + chunk]
                xb = xb if xb.device == self.device else xb.to(self.device)
                if self.path == "vmap" and not self._checked:
                    self._check_vmap(xb)
                out = self._vmap(xb) if self.path == "vmap" else self._loop(xb)
                outs.append(out.float().cpu())
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
