"""Out-of-memory back-off: run a batched computation, and after a CUDA out-of-memory error
free the cached memory and retry it at half the batch, down to `min_batch`.

    from workbench.oom import run_with_oom_backoff
    out = run_with_oom_backoff(lambda b: predict(module, x, batch_size=b), batch_size=512)
    out.value, out.batch_size, out.retries   # the result, the batch that worked, the OOMs seen

Retrying at a smaller batch is sound only when the result does not depend on the batch
size: inference in eval mode (`predict`, attacks and attributions computed per example),
not training steps or train-mode BatchNorm. `fn` is called again from the start at each
retry, so it must not have side effects that a failed attempt leaves half done.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from workbench.errors import ConfigError, ParameterTypeError, WorkbenchError

if TYPE_CHECKING:
    import torch
    from torch import nn

T = TypeVar("T")

_OOM_MARKERS = ("out of memory", "outofmemory")


class OutOfMemoryBackoffError(WorkbenchError, RuntimeError):
    """Even the smallest allowed batch ran out of memory. `retries` lists every attempt."""

    def __init__(self, message: str, retries: tuple["OOMRetry", ...]) -> None:
        super().__init__(message)
        self.retries = retries


@dataclass(frozen=True)
class OOMRetry:
    """One attempt that ran out of memory: the batch size it used and the error's first line."""

    batch_size: int
    error: str


@dataclass(frozen=True)
class BackoffResult(Generic[T]):
    """`value` returned by `fn(batch_size)` at the batch size that worked, after `retries`."""

    value: T
    batch_size: int
    retries: tuple[OOMRetry, ...] = ()


def is_oom_error(exc: BaseException) -> bool:
    """True for `torch.cuda.OutOfMemoryError` and for a RuntimeError whose message says
    "out of memory" (older torch, cuBLAS/cuDNN allocation failures, the MPS backend)."""
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):  # pragma: no cover - torch always present in practice
        pass
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc).lower()
    return any(m in text for m in _OOM_MARKERS)


def free_accelerator_memory() -> None:
    """Collect unreachable tensors (cycles through tracebacks) and return PyTorch's cached
    CUDA blocks to the driver. A no-op without CUDA: a full `gc.collect` costs up to a
    second with torch and plotly loaded, and host memory is not cached by PyTorch."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()


def _check_sizes(batch_size: object, min_batch: object) -> tuple[int, int]:
    for name, v in (("batch_size", batch_size), ("min_batch", min_batch)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ParameterTypeError(f"Expected `{name}` to be an int, got {type(v).__name__} {v!r}.")
        if v < 1:
            raise ConfigError(f"Expected `{name}` to be an int >= 1, got {v}.")
    if min_batch > batch_size:  # type: ignore[operator]
        raise ConfigError(f"Expected `min_batch` <= `batch_size`, got min_batch={min_batch} > batch_size={batch_size}.")
    return int(batch_size), int(min_batch)  # type: ignore[arg-type]


def run_with_oom_backoff(
    fn: Callable[[int], T],
    batch_size: int,
    min_batch: int = 1,
    *,
    log: Callable[[str], None] | None = None,
) -> BackoffResult[T]:
    """Call `fn(batch_size)`; on an out-of-memory error (see `is_oom_error`) free memory and
    call it again with the batch halved (never below `min_batch`). Any other exception
    propagates at once. Raises `OutOfMemoryBackoffError`, listing every attempt, when
    `fn(min_batch)` runs out of memory too.

    The failed attempt's exception (and the tensors its frames hold) is released before
    the cache is emptied, so the retry starts from the memory the caller had.
    """
    size, floor = _check_sizes(batch_size, min_batch)
    retries: list[OOMRetry] = []
    while True:
        error = None
        try:
            return BackoffResult(value=fn(size), batch_size=size, retries=tuple(retries))
        except Exception as exc:
            if not is_oom_error(exc):
                raise
            lines = str(exc).strip().splitlines()
            error = f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]
        # Outside the except block: `exc` and its traceback are gone, so gc can free the
        # activations of the failed attempt before the cached blocks are released.
        free_accelerator_memory()
        retries.append(OOMRetry(batch_size=size, error=error))
        if size <= floor:
            tried = ", ".join(str(r.batch_size) for r in retries)
            raise OutOfMemoryBackoffError(
                f"Out of memory even at batch size {size} (tried {tried}; last error: {error}). "
                "Lower [run] batch_size or max_samples, use a smaller model, or a device with more memory.",
                tuple(retries),
            )
        nxt = max(floor, size // 2)
        if log is not None:
            log(f"out of memory at batch size {size}; retrying at {nxt}")
        size = nxt


def predict_with_backoff(
    module: "nn.Module",
    x: "torch.Tensor",
    *,
    batch_size: int = 512,
    device: "torch.device | None" = None,
    min_batch: int = 1,
    log: Callable[[str], None] | None = None,
) -> "tuple[torch.Tensor, BackoffResult[None]]":
    """`workbench.torch_utils.predict` with OOM back-off. Returns the concatenated outputs
    (as `predict`: x (N, ...) -> (N, ...) on CPU) and a BackoffResult (value None) saying
    which batch size worked and which attempts ran out of memory.

    Sound because `predict` runs under no_grad per batch, so its output does not depend on
    the batch size (up to floating-point summation order on some kernels)."""
    from workbench.torch_utils import _predict, module_device

    dev = device or module_device(module)
    res = run_with_oom_backoff(lambda b: _predict(module, x, batch_size=b, device=dev), batch_size, min_batch,
                               log=log)
    return res.value, BackoffResult(value=None, batch_size=res.batch_size, retries=res.retries)
