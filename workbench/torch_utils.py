"""Small torch helpers shared by the core and the suites: seeding, devices, batched
inference, and a guard that proves a model comes back exactly as it went in."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from workbench.errors import ConfigError


def seed_everything(seed: int) -> None:
    """One seed drives Python, numpy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def derive_seed(base: int, *keys: str) -> int:
    """A per-job seed from the run seed and a job key, independent of execution order."""
    import hashlib

    h = hashlib.sha256(("/".join([str(base), *keys])).encode()).digest()
    return int.from_bytes(h[:4], "little")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """"auto" -> cuda if available else cpu; "cuda" without a GPU is a ConfigError."""
    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("Device 'cuda' was requested but torch.cuda.is_available() is False; use 'cpu' or 'auto'.")
    if device.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"Expected device in ('auto', 'cpu', 'cuda'), got {device!r}.")
    return torch.device(device)


@torch.no_grad()
def predict(
    module: nn.Module, x: torch.Tensor, *, batch_size: int = 512, device: torch.device | None = None
) -> torch.Tensor:
    """Concatenated `module(x[i:i+B])` outputs on CPU, computed without grad on `device`
    (default: the module's device). Does not change the module's train/eval mode. On CUDA
    an out-of-memory error is retried at half the batch (sound: each batch is independent
    under no_grad) until it fits; see workbench.oom."""
    device = device or module_device(module)
    if device.type == "cuda":
        from workbench.oom import run_with_oom_backoff

        return run_with_oom_backoff(lambda b: _predict(module, x, batch_size=b, device=device), batch_size).value
    return _predict(module, x, batch_size=batch_size, device=device)


@torch.no_grad()
def _predict(module: nn.Module, x: torch.Tensor, *, batch_size: int, device: torch.device) -> torch.Tensor:
    outs = []
    for i in range(0, x.shape[0], batch_size):
        out = module(x[i : i + batch_size].to(device))
        if isinstance(out, tuple):
            out = out[0]
        outs.append(out.float().cpu())
    if not outs:
        raise ConfigError("predict() got an empty input tensor.")
    return torch.cat(outs)


def module_device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


@dataclass
class ModuleState:
    """Snapshot of everything a side-effect-free evaluation must leave unchanged."""

    state: dict[str, torch.Tensor]
    training: dict[str, bool]
    requires_grad: dict[str, bool]
    grads: dict[str, torch.Tensor | None]

    @classmethod
    def capture(cls, module: nn.Module) -> "ModuleState":
        return cls(
            state={k: v.detach().clone() for k, v in module.state_dict(keep_vars=True).items()},
            training={n: m.training for n, m in module.named_modules()},
            requires_grad={n: p.requires_grad for n, p in module.named_parameters()},
            grads={n: (None if p.grad is None else p.grad.detach().clone()) for n, p in module.named_parameters()},
        )

    def diff(self, module: nn.Module) -> list[str]:
        """Human-readable differences between the snapshot and `module` now."""
        other = ModuleState.capture(module)
        out = []
        for k, v in self.state.items():
            w = other.state.get(k)
            if w is None or w.shape != v.shape or not torch.equal(w, v):
                out.append(f"state {k} changed")
        out += [f"state {k} added" for k in other.state if k not in self.state]
        out += [f"train flag of {k!r} changed" for k, v in self.training.items() if other.training.get(k) != v]
        out += [f"requires_grad of {k} changed" for k, v in self.requires_grad.items() if other.requires_grad.get(k) != v]
        for k, g in self.grads.items():
            h = other.grads.get(k)
            if (g is None) != (h is None) or (g is not None and not torch.equal(g, h)):
                out.append(f".grad of {k} changed")
        return out

    def restore(self, module: nn.Module) -> None:
        with torch.no_grad():
            current = module.state_dict(keep_vars=True)
            for k, v in self.state.items():
                current[k].copy_(v)
        for n, m in module.named_modules():
            m.training = self.training[n]
        for n, p in module.named_parameters():
            p.requires_grad_(self.requires_grad[n])
            p.grad = None if self.grads[n] is None else self.grads[n].clone()


@contextlib.contextmanager
def frozen_eval(module: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode and parameters to requires_grad=False for the
    duration, then restore each submodule's own flag and each parameter's flag.
    Parameter `.grad` is untouched (gradients are taken w.r.t. inputs only)."""
    training = {n: m.training for n, m in module.named_modules()}
    req = {n: p.requires_grad for n, p in module.named_parameters()}
    try:
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
        yield module
    finally:
        for n, m in module.named_modules():
            if n in training:  # a submodule added during the context keeps its own flag
                m.training = training[n]
        for n, p in module.named_parameters():
            if n in req:
                p.requires_grad_(req[n])


@contextlib.contextmanager
def limited_threads(n: int = 1) -> Iterator[None]:
    """Limit torch intra-op threads (small solves and surrogate fits are faster on one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


Forward = Callable[[torch.Tensor], torch.Tensor]
