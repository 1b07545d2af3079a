"""Distributed data-parallel training through `torchrun`, and exact sharded evaluation.

`workbench train PLAN --nproc N [--device cpu|cuda]` launches

    python -m torch.distributed.run --standalone --nproc_per_node N -m workbench.distributed ...

(gloo on CPU, NCCL on CUDA; one process per GPU) which trains the plan's models with
`DistributedDataParallel`, with the plan's training recipe (`workbench.train.RECIPES`).
With `--nproc 1` (the default) the models are trained in this process exactly as
`workbench run` trains them, into the same cache entries.

Training runs the one loop of `workbench.train.train_model` with `DDPParallel`: the same
seeded global permutation on every rank, the same global batch (`batch_size` rows, split
as batch[rank::world]), each rank's mean loss weighted by its share of the global batch so
the all-reduced gradient is that of the global-batch mean. With one process the weights
are bit-identical to `train_model`'s.

Buffers (BatchNorm running statistics): rank 0's are authoritative. DDP broadcasts rank
0's buffers before every forward pass, and `DDPParallel.after_steps` broadcasts them once
more after each epoch's last step, before validation and before the epoch's weights are
kept, so every rank validates, selects and ends with the same weights and buffers.
SyncBatchNorm (global-batch statistics) would be closer to one process, but torch
implements it for GPUs only ("SyncBatchNorm expected input tensor to be on GPU"), and the
same plan must mean the same thing on gloo/CPU and NCCL/GPU; see docs/scale-out.md for
what this means for the numbers.

A checkpoint enters the training cache (`<cache>/<arch>-ddp<N>-<key>.pt`, its own key,
which includes the world size) only after every check of the run passed on every rank:
identical weights and buffers (per-tensor SHA-256 digests, gathered), finite losses,
weights and buffers, and the sharded test evaluation. The entry records that it passed
and the digest of its weights; an entry without that record, or whose weights do not
match it, is never loaded (it is retrained).

A failing rank writes its traceback to `rank<R>.log` and a one-line record to
`rank<R>.error.json` in the launch's log directory; `workbench train` (workbench.launch)
prints the first failing rank's message on one `workbench: error:` line naming that
directory and exits with 2 when the rank failed with a workbench error (bad plan, data or
model, non-finite loss, ranks that ended different), 3 otherwise.

Evaluation under DDP shards rows as x[rank::world] without padding
(`torch.utils.data.DistributedSampler` repeats rows to even out shards, 1797 -> 1798 on
digits, which biases exact metrics) and all-reduces exact counts: the summed confusion
matrix equals the single-process one entry for entry.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.errors import ConfigError, ModelError, WorkbenchError
from workbench.launch import EXIT_INTERNAL, EXIT_OK, EXIT_USAGE, failure_line, launch_command, train_command

__all__ = ["shard_rows", "sharded_confusion", "wrap_ddp", "sync_buffers", "ddp_parallel", "ddp_train_model",
           "tensor_digests", "state_digest", "rank_differences", "model_builder", "ddp_checkpoint_path",
           "load_verified", "launch_command", "train_command"]

if TYPE_CHECKING:
    import torch
    from torch import nn

    from workbench.data.base import Dataset
    from workbench.train import Parallel, TrainConfig, TrainResult

CACHE_FORMAT = 2  # entries carry {"checks": {"passed": True, "digest": ...}}; older ones are retrained


# ----------------------------------------------------------------- sharding and counts


def shard_rows(n: int, rank: int, world: int) -> "torch.Tensor":
    """Row indices of `rank`'s shard: rank, rank + world, ... < n. The shards of all ranks
    partition range(n) exactly: no padding, no repeats (sizes differ by at most one)."""
    import torch

    for name, v in (("n", n), ("world", world)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "n" else 1):
            raise ConfigError(f"Expected `{name}` to be an int >= {0 if name == 'n' else 1}, got {v!r}.")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world:
        raise ConfigError(f"Expected `rank` to be an int in [0, {world}), got {rank!r}.")
    return torch.arange(rank, max(n, rank), world)  # empty when rank >= n


def _all_reduce_sum(t: "torch.Tensor") -> "torch.Tensor":
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _backend() -> str | None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_backend()
    return None


def _comm_device(device: "torch.device") -> "torch.device":
    """Where tensors for a collective live: NCCL needs the GPU, gloo the CPU."""
    import torch

    return device if _backend() == "nccl" else torch.device("cpu")


def sharded_confusion(
    module: "nn.Module", x: "torch.Tensor", y: "torch.Tensor", num_classes: int, *,
    device: "torch.device | None" = None, batch_size: int = 512,
) -> "torch.Tensor":
    """(K, K) int64 confusion matrix (rows = true class) of `module` on (x, y), each rank
    predicting its rows x[rank::world], the counts summed over ranks with all_reduce.
    Outside a process group it is the plain single-process matrix. Does not change the
    module's train/eval flags."""
    import torch

    from workbench.torch_utils import frozen_eval, module_device, predict

    rank, world = _rank_world()
    device = device or module_device(module)
    idx = shard_rows(int(x.shape[0]), rank, world)
    k = int(num_classes)
    cm = torch.zeros(k * k, dtype=torch.int64)
    if idx.numel():
        with frozen_eval(module), torch.no_grad():
            pred = predict(module, x[idx], batch_size=batch_size, device=device).argmax(dim=1)
        cm += torch.bincount(y[idx].long().cpu() * k + pred.long(), minlength=k * k)
    return _all_reduce_sum(cm.to(_comm_device(device))).cpu().reshape(k, k)  # gloo and NCCL reduce int64


def _sharded_loss(module: "nn.Module", x: "torch.Tensor", y: "torch.Tensor", output_kind: str,
                  device: "torch.device", batch_size: int = 512) -> tuple[float, float]:
    """(mean loss, score) like `workbench.train.evaluate_loss`, rows sharded over ranks
    and (loss sum, correct, count) all-reduced. Score: accuracy for classifiers, else −loss."""
    import torch

    from workbench.train import loss_and_score, loss_sums

    rank, world = _rank_world()
    idx = shard_rows(int(x.shape[0]), rank, world).to(x.device)
    total, correct, count = loss_sums(module, x[idx], y[idx], output_kind, batch_size)
    t = _all_reduce_sum(torch.tensor([total, float(correct), float(count)], dtype=torch.float64,
                                     device=_comm_device(device)))
    return loss_and_score(float(t[0]), int(t[1]), int(t[2]), output_kind)


# ----------------------------------------------------------------- the DDP wrapper


def _ddp_classes() -> tuple[type, type]:
    import torch
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    class _Dispatch(nn.Module):
        """Routes DDP's forward to the model's forward or forward_from_embeddings, so
        token models' embedding-space training passes also go through DDP."""

        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any, _wb_method: str = "forward", **kwargs: Any) -> Any:
            return getattr(self.inner, _wb_method)(*args, **kwargs)

    class DDPModel(DistributedDataParallel):
        """DistributedDataParallel that keeps the reference-model interface recipes use
        (any public attribute of the model, e.g. `.token_embedding`), and
        `.embed(idx)` (token embeddings, no DDP bookkeeping: their gradient reaches the
        embedding weights through the forward pass that follows) and
        `.forward_from_embeddings(e)` (a DDP forward, so gradients are all-reduced)."""

        @property
        def inner(self) -> nn.Module:
            return self.module.inner

        def __getattr__(self, name: str) -> Any:
            # Public attributes of the model (e.g. `token_embedding`, where a recipe hooks
            # its noise in) are reachable through the wrapper as they are on the model.
            try:
                return super().__getattr__(name)
            except AttributeError:
                wrapped = self.__dict__.get("_modules", {}).get("module")
                if name.startswith("_") or wrapped is None:
                    raise
                return getattr(wrapped.inner, name)

        @property
        def output_kind(self) -> str | None:
            return getattr(self.module.inner, "output_kind", None)

        def embed(self, idx: torch.Tensor) -> torch.Tensor:
            return self.module.inner.embed(idx)

        def forward_from_embeddings(self, e: torch.Tensor) -> Any:
            return self(e, _wb_method="forward_from_embeddings")

    return _Dispatch, DDPModel


def wrap_ddp(module: "nn.Module", device: "torch.device") -> "nn.Module":
    """`module` wrapped for DDP (see `DDPModel`); `.inner` is the original module."""
    dispatch, ddp_model = _ddp_classes()
    ids = [device.index if device.index is not None else 0] if device.type == "cuda" else None
    return ddp_model(dispatch(module), device_ids=ids)


def sync_buffers(module: "nn.Module", src: int = 0) -> None:
    """Overwrite every buffer of `module` with rank `src`'s (broadcast), on every rank."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return
    for b in module.buffers():
        dist.broadcast(b.data, src=src)


def ddp_parallel(device: "torch.device") -> "Parallel":
    """The `workbench.train.Parallel` of the current process group (one process outside one)."""
    import torch
    import torch.distributed as dist

    from workbench.train import Parallel

    class DDPParallel(Parallel):
        """DDP spread of `train_model`: rank r trains on rows r, r + world, ... of each
        global batch (a final global batch with fewer rows than ranks is skipped: every
        rank must join each all-reduce); sums and validation are all-reduced; the recipe's
        `epoch_end` runs on rank 0 and its numbers are broadcast, so every rank keeps the
        same epoch and stops at the same time; buffers are rank 0's after each epoch."""

        def __init__(self) -> None:
            self.rank, self.world = _rank_world()
            self.grouped = dist.is_available() and dist.is_initialized()

        def wrap(self, module: "nn.Module", device: "torch.device") -> "nn.Module":
            return wrap_ddp(module, device) if self.grouped else module

        def local_rows(self, idx: "torch.Tensor") -> "torch.Tensor | None":
            return None if idx.numel() < self.world else idx[self.rank :: self.world]

        def sum(self, values: list[float], device: "torch.device") -> list[float]:
            t = _all_reduce_sum(torch.tensor(values, dtype=torch.float64, device=_comm_device(device)))
            return [float(v) for v in t.cpu()]

        def after_steps(self, module: "nn.Module") -> None:
            sync_buffers(module, src=0)

        def evaluate(self, module: "nn.Module", x: "torch.Tensor", y: "torch.Tensor", output_kind: str,
                     device: "torch.device") -> tuple[float, float]:
            return _sharded_loss(module, x, y, output_kind, device)

        def epoch_end(self, recipe: Any, module: "nn.Module", data: "Dataset", epoch: int,
                      device: "torch.device") -> dict[str, Any]:
            extra = (recipe.epoch_end(module, data, epoch, device) or {}) if self.rank == 0 else {}
            if self.world > 1:
                box = [extra]
                dist.broadcast_object_list(box, src=0, device=_comm_device(device) if _backend() == "nccl" else None)
                extra = box[0]
            return extra

    return DDPParallel()


def ddp_train_model(
    module: "nn.Module",
    data: "Dataset",
    cfg: "TrainConfig",
    *,
    device: "torch.device",
    recipe: Any = None,
    log: Callable[[str], None] | None = None,
) -> "TrainResult":
    """Train `module` with DDP in the current process group (call it on every rank with
    identically initialised modules): `workbench.train.train_model` with `ddp_parallel`.
    Returns the unwrapped best-epoch module in eval mode, with the same weights and
    buffers on every rank."""
    from workbench.train import train_model

    return train_model(module, data, cfg, device=device, recipe=recipe, log=log, parallel=ddp_parallel(device))


def tensor_digests(module: "nn.Module") -> dict[str, str]:
    """SHA-256 of every state_dict entry (name, dtype, shape and bytes; a sparse tensor by
    its dense values, a quantized one by its dequantized values)."""
    import torch

    out = {}
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu()
        if t.is_sparse:
            t = t.to_dense()
        if t.is_quantized:
            t = t.dequantize()
        t = t.contiguous()
        h = hashlib.sha256(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        out[name] = h.hexdigest()
    return out


def state_digest(module: "nn.Module") -> str:
    """One SHA-256 over the module's whole state_dict (weights and buffers)."""
    return _combine(tensor_digests(module))


def _combine(digests: dict[str, str]) -> str:
    return hashlib.sha256("\n".join(f"{k} {v}" for k, v in sorted(digests.items())).encode()).hexdigest()


def rank_differences(per_rank: list[dict[str, str]]) -> list[str]:
    """Names of state_dict entries whose digest is not the same on every rank (an entry
    missing on some rank counts as different), sorted."""
    names = set().union(*per_rank) if per_rank else set()
    return sorted(n for n in names if len({d.get(n) for d in per_rank}) != 1)


# ----------------------------------------------------------------- plan -> modules


def model_builder(spec: Any, data: "Dataset") -> tuple[Callable[[], "nn.Module"], dict[str, Any]]:
    """(build, cache spec) for a plan model, as `workbench.runner.build_handle` builds and
    keys it: a reference architecture or a user factory. Checkpoint-only models cannot be
    trained and raise ConfigError."""
    from workbench.runner import model_factory

    if spec.arch or spec.factory:
        make, base_spec, _ = model_factory(spec, data)
        return make, {**base_spec, "overrides": {}}
    raise ConfigError(f"Model {spec.name!r} comes from a checkpoint only; there is nothing to train.")


def ddp_checkpoint_path(cache_dir: Path, spec: dict[str, Any], data: "Dataset", cfg: "TrainConfig",
                        world_size: int) -> Path:
    """Where a DDP-trained model is cached: its own key, which includes the world size."""
    from workbench.train import cache_key

    key = cache_key({**spec, "distributed": {"world_size": int(world_size)}}, data, cfg)
    return Path(cache_dir) / f"{spec.get('arch', 'model')}-ddp{int(world_size)}-{key}.pt"


def _train_config(spec: Any, run_seed: int) -> "TrainConfig":
    from workbench.train import TrainConfig

    d = dict(spec.train)
    d.setdefault("seed", run_seed)
    return TrainConfig.from_dict(d)


def _test_metrics(module: "nn.Module", data: "Dataset", output_kind: str, device: "torch.device") -> dict[str, Any]:
    """Sharded, all-reduced test-split numbers: exact counts for classifiers."""
    if output_kind == "logits":
        cm = sharded_confusion(module, data.test.x.to(device), data.test.y, int(data.num_classes), device=device)
        n, correct = int(cm.sum()), int(cm.trace())
        return {"n": n, "correct": correct, "accuracy": correct / max(n, 1), "confusion": cm.tolist()}
    loss, _ = _sharded_loss(module, data.test.x.to(device), data.test.y.to(device), output_kind, device)
    return {"n": len(data.test), "loss": loss}


def load_verified(path: Path, module: "nn.Module") -> dict[str, Any] | str:
    """Load a DDP cache entry into `module` if it records that every check passed and its
    weights still have the recorded digest: the blob, else the reason it is not usable."""
    import torch

    if not path.exists():
        return "no cache entry"
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        checks = blob.get("checks") if isinstance(blob, dict) else None
        if not (isinstance(checks, dict) and checks.get("passed") is True):
            return f"cache entry {path.name} has no record of passing its checks (an older or failed run)"
        module.load_state_dict(blob["state_dict"])
    except Exception as exc:  # a corrupt entry is retrained, not fatal
        return f"cache entry {path.name} unreadable ({type(exc).__name__}: {exc})"
    if state_digest(module) != checks.get("digest"):
        return f"cache entry {path.name} does not match its recorded digest"
    return blob


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _train_one(name: str, plan: Any, cache_dir: Path, device: "torch.device", backend: str,
               say: Callable[[str], None]) -> None:
    """Train (or load) one model on every rank, check it, and cache it (rank 0)."""
    import torch
    import torch.distributed as dist

    from workbench.runner import load_plan_dataset
    from workbench.torch_utils import seed_everything
    from workbench.train import non_finite_tensors, output_kind_for

    rank, world = _rank_world()
    spec = plan.model(name)
    data = load_plan_dataset(plan, spec.dataset)
    make, cache_spec = model_builder(spec, data)
    cfg = _train_config(spec, plan.run.seed)
    path = ddp_checkpoint_path(cache_dir, cache_spec, data, cfg, world)
    seed_everything(cfg.seed)
    module = make()  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    loaded = load_verified(path, module) if rank == 0 else None
    box = [isinstance(loaded, dict)]
    dist.broadcast_object_list(box, src=0)  # every rank must take the same branch
    cached = bool(box[0])
    if rank == 0 and isinstance(loaded, str) and path.exists():
        say(f"  {name}: {loaded}; retraining")
    if cached:
        blob = loaded if rank == 0 else load_verified(path, module)
        if not isinstance(blob, dict):
            raise ModelError(f"Rank {rank} cannot use the cache entry rank 0 loaded: {blob}.")
        module.to(device).eval()
        history, best_epoch, seconds = blob.get("history", []), int(blob.get("best_epoch", 0)), 0.0
    else:
        seed_everything(cfg.seed)
        module = make()
        res = ddp_train_model(module, data, cfg, device=device, log=say)
        module, history, best_epoch, seconds = res.module, res.history, res.best_epoch, res.seconds

    # Checks, every one on every rank; the cache is written only when all of them passed.
    per_rank: list[Any] = [None] * world
    dist.all_gather_object(per_rank, tensor_digests(module))
    differ = rank_differences(per_rank)
    if differ:
        raise ModelError(
            f"Ranks ended with different weights or buffers for {name!r}: {len(differ)} of {len(per_rank[0])} "
            f"tensors differ ({', '.join(differ[:6])}{', ...' if len(differ) > 6 else ''}); nothing was cached."
        )
    bad = non_finite_tensors(module)
    losses = [v for row in history for k, v in row.items() if k in ("train_loss", "val_loss")]
    if bad or not all(math.isfinite(v) for v in losses):
        raise ModelError(f"Training of {name!r} ended with non-finite "
                         f"{'values in ' + ', '.join(bad[:5]) if bad else 'losses'}; nothing was cached.")
    test = _test_metrics(module, data, output_kind_for(module, data), device)
    if not all(math.isfinite(float(test[k])) for k in ("accuracy", "loss") if k in test):
        raise ModelError(f"The test evaluation of {name!r} is not finite ({test}); nothing was cached.")
    digest = _combine(per_rank[0])
    dist.barrier()  # every rank passed every check: only now may rank 0 write
    if rank == 0:
        summary = {
            "model": name, "world_size": world, "backend": backend, "device": str(device.type),
            "checkpoint": str(path), "cached": cached, "digests": [_combine(d) for d in per_rank],
            "identical": True, "best_epoch": best_epoch, "seconds": seconds,
            "history": history, "test": test, "recipe": cfg.recipe,
        }
        if not cached:
            path.parent.mkdir(parents=True, exist_ok=True)
            state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
            blob = {"state_dict": state, "history": history, "best_epoch": best_epoch, "seconds": seconds,
                    "spec": json.dumps(cache_spec, default=str), "world_size": world, "backend": backend,
                    "format": CACHE_FORMAT,
                    "checks": {"passed": True, "ranks_identical": True, "finite": True, "digest": digest,
                               "test": {k: v for k, v in test.items() if k != "confusion"}}}
            _atomic_write(path.with_suffix(".json"), lambda p: p.write_text(json.dumps(summary, indent=1)))
            _atomic_write(path, lambda p: torch.save(blob, p))  # last: the .pt is what a later run loads
        else:
            _atomic_write(path.with_suffix(".json"), lambda p: p.write_text(json.dumps(summary, indent=1)))
        acc = (f", test accuracy {test['correct']}/{test['n']} = {test['accuracy']:.4f}"
               if "correct" in test else f", test loss {test['loss']:.4f}")
        say(f"  {name}: {'loaded from cache' if cached else 'trained'} on {world} x {device.type} "
            f"({backend}), best epoch {best_epoch}, {seconds:.1f} s{acc}; ranks identical: True")
        say(f"    checkpoint {path}")
    dist.barrier()


# ----------------------------------------------------------------- the torchrun worker


def _worker(args: argparse.Namespace, where: dict[str, Any]) -> int:
    """One torchrun process: join the group, train the selected models, save (rank 0)."""
    import torch
    import torch.distributed as dist

    from workbench.config import build_plan

    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if args.device == "cuda":
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    dist.init_process_group(backend=backend)
    rank = dist.get_rank()
    say = (lambda m: print(m, flush=True)) if rank == 0 else (lambda m: None)
    try:
        raw = json.loads(Path(args.plan).read_text())
        source = str(raw.pop("_source", args.plan))
        plan = build_plan(raw, source=source)
        for name in args.model or [m.name for m in plan.models]:
            where["model"] = name
            _train_one(name, plan, Path(args.cache), device, backend, say)
        where["model"] = None
    finally:
        dist.destroy_process_group()
    return EXIT_OK


def _worker_main(argv: list[str] | None = None) -> int:
    """`python -m workbench.distributed` under torchrun. A failure is written to the log
    directory (traceback in rank<R>.log, a record in rank<R>.error.json), stated on one
    stderr line, and ends the process with 2 (a workbench error) or 3 (anything else)."""
    ap = argparse.ArgumentParser(prog="python -m workbench.distributed")
    ap.add_argument("--plan", required=True, help="resolved plan JSON (plan_to_raw)")
    ap.add_argument("--model", action="append", default=[])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--cache", required=True)
    ap.add_argument("--error-dir", help="where ranks write tracebacks (default: <cache>/logs/ddp-<run id>)")
    args = ap.parse_args(argv)
    if "RANK" not in os.environ:
        print("workbench: error: `python -m workbench.distributed` runs under torchrun; "
              "use `workbench train --nproc N`.", file=sys.stderr)
        return EXIT_USAGE
    rank, world = int(os.environ["RANK"]), int(os.environ.get("WORLD_SIZE", 1))
    logs = Path(args.error_dir or Path(args.cache) / "logs" / f"ddp-{os.environ.get('TORCHELASTIC_RUN_ID', 'run')}")
    where: dict[str, Any] = {"model": None}
    try:
        return _worker(args, where)
    except Exception as exc:
        code = EXIT_USAGE if isinstance(exc, WorkbenchError) else EXIT_INTERNAL
        logs.mkdir(parents=True, exist_ok=True)
        log_file = logs / f"rank{rank}.log"
        log_file.write_text(traceback.format_exc())
        record = {"rank": rank, "world_size": world, "time": time.time(), "model": where["model"],
                  "type": type(exc).__name__, "message": str(exc), "exit_code": code, "log": str(log_file)}
        _atomic_write(logs / f"rank{rank}.error.json", lambda p: p.write_text(json.dumps(record)))
        print(f"workbench: error: {failure_line(record, logs)}", file=sys.stderr, flush=True)
        return code


def main(argv: list[str] | None = None) -> int:
    return _worker_main(argv)


if __name__ == "__main__":
    sys.exit(main())
