"""Distributed data-parallel training through `torchrun`, and exact sharded evaluation.

`workbench train PLAN --nproc N [--device cpu|cuda]` launches

    python -m torch.distributed.run --standalone --nproc_per_node N -m workbench.distributed ...

(gloo on CPU, NCCL on CUDA; one process per GPU) which trains the plan's models with
`DistributedDataParallel`, with the plan's training recipe (standard or adversarial:
`workbench.train.RECIPES`). With `--nproc 1` (the default) the models are trained in this
process exactly as `workbench run` trains them, into the same cache entries.

Training under DDP (`ddp_train_model`) mirrors `workbench.train.train_model` step for
step: the same seeded global permutation on every rank, the same global batch
(`batch_size` examples, split across ranks as batch[rank::world]), the same optimiser,
one-cycle schedule, gradient clipping and best-epoch selection. Each rank's mean loss is
weighted by its share of the global batch, so the all-reduced (averaged) gradient is the
gradient of the global batch mean; with one process the weights are bit-identical to
`train_model`'s. With more processes they differ numerically (reduction order, per-rank
dropout and attack noise), so the trained weights go into the training cache under their
own key, `cache_key(spec + {"distributed": {"world_size": N}}, data, cfg)`, in
`<cache>/<arch>-ddp<N>-<key>.pt` with a `.json` summary beside it. `workbench run` does
not pick them up implicitly; evaluate them by pointing the model's `checkpoint` at that
file (the printed path).

Evaluation under DDP shards rows as x[rank::world] without padding
(`torch.utils.data.DistributedSampler` repeats rows to even out shards, 1797 -> 1798 on
digits, which biases exact metrics) and all-reduces exact counts: the summed confusion
matrix equals the single-process one entry for entry.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.errors import ConfigError, ModelError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from workbench.data.base import Dataset
    from workbench.train import TrainConfig, TrainResult

EXIT_OK, EXIT_USAGE, EXIT_INTERNAL = 0, 2, 3


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
    # gloo and NCCL both reduce int64; NCCL needs the tensor on the GPU.
    comm_device = device if _backend() == "nccl" else torch.device("cpu")
    return _all_reduce_sum(cm.to(comm_device)).cpu().reshape(k, k)


def _backend() -> str | None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_backend()
    return None


def _sharded_loss(module: "nn.Module", x: "torch.Tensor", y: "torch.Tensor", output_kind: str,
                  device: "torch.device", batch_size: int = 512) -> tuple[float, float]:
    """(mean loss, score) like `workbench.train.evaluate_loss`, rows sharded over ranks
    and (loss sum, correct, count) all-reduced. Score: accuracy for classifiers, else −loss."""
    import torch

    from workbench.train import task_loss

    rank, world = _rank_world()
    idx = shard_rows(int(x.shape[0]), rank, world).to(x.device)
    xs, ys = x[idx], y[idx]
    loss_fn = task_loss(output_kind)
    total, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for i in range(0, xs.shape[0], batch_size):
            xb, yb = xs[i : i + batch_size], ys[i : i + batch_size]
            out = module(xb)
            total += float(loss_fn(out, yb)) * xb.shape[0]
            if output_kind == "logits":
                correct += int((out.argmax(-1) == yb).sum())
            count += xb.shape[0]
    comm_device = device if _backend() == "nccl" else torch.device("cpu")
    t = _all_reduce_sum(torch.tensor([total, float(correct), float(count)], dtype=torch.float64, device=comm_device))
    total, correct, count = float(t[0]), int(t[1]), int(t[2])
    loss = total / max(count, 1)
    return loss, (correct / max(count, 1) if output_kind == "logits" else -loss)


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
        """DistributedDataParallel that keeps the reference-model interface recipes use:
        `.embed(idx)` (token embeddings, no DDP bookkeeping: their gradient reaches the
        embedding weights through the forward pass that follows) and
        `.forward_from_embeddings(e)` (a DDP forward, so gradients are all-reduced)."""

        @property
        def inner(self) -> nn.Module:
            return self.module.inner

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


def _autocast(device: "torch.device", enabled: bool) -> Any:
    import torch

    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)
    return torch.autocast(device_type="cpu", enabled=False)


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
    identically initialised modules); returns the unwrapped best-epoch module in eval mode.

    Global batch: `cfg.batch_size` rows of a permutation every rank draws from the same
    seeded generator; rank r trains on rows r, r + world, ... of it, its mean loss
    weighted by (its rows × world / global rows). A final global batch with fewer rows
    than ranks is skipped (every rank must join each all-reduce). Validation is sharded
    and all-reduced; the recipe's `epoch_end` runs on rank 0 and its numbers are
    broadcast, so every rank keeps the same epoch and stops at the same time. Rank r seeds
    its RNGs with cfg.seed + r (dropout, random starts differ across ranks).
    """
    import torch
    import torch.distributed as dist
    from torch import nn

    from workbench.torch_utils import seed_everything
    from workbench.train import TrainResult, make_recipe, output_kind_for, task_loss

    rank, world = _rank_world()
    seed_everything(cfg.seed + rank)
    recipe = recipe if recipe is not None else make_recipe(cfg.recipe, cfg.recipe_params)
    output_kind = output_kind_for(module, data)
    loss_fn = task_loss(output_kind)
    module.to(device)
    model = wrap_ddp(module, device) if dist.is_available() and dist.is_initialized() else module
    xtr, ytr = data.train.x.to(device), data.train.y.to(device)
    xva, yva = data.val.x.to(device), data.val.y.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = xtr.shape[0]
    steps_per_epoch = max(1, -(-n // cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.15
    )
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported()) if use_amp else None
    gen = torch.Generator().manual_seed(cfg.seed)
    best_score, best_state, best_epoch, stale = -float("inf"), None, 0, 0
    history: list[dict[str, float]] = []
    comm_device = device if _backend() == "nccl" else torch.device("cpu")
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        perm = torch.randperm(n, generator=gen).to(device)
        running, seen = 0.0, 0
        for i in range(0, n, cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            if idx.numel() < world:
                sched.step()  # keep the schedule aligned with the single-process one
                continue
            local = idx[rank::world]
            xb, yb = xtr[local], ytr[local]
            with _autocast(device, use_amp):
                loss = recipe.batch_loss(model, xb, yb, loss_fn)
            if not torch.isfinite(loss):
                raise ModelError(f"Training loss became non-finite ({float(loss.detach())}) at epoch {epoch} "
                                 f"on rank {rank}; lower `lr`.")
            weighted = loss if world == 1 else loss * (local.numel() * world / idx.numel())
            opt.zero_grad(set_to_none=True)
            if scaler is not None and scaler.is_enabled():
                scaler.scale(weighted).backward()
                scaler.unscale_(opt)
            else:
                weighted.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            if scaler is not None and scaler.is_enabled():
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            sched.step()
            running += float(loss.detach()) * xb.shape[0]
            seen += xb.shape[0]
        tr = _all_reduce_sum(torch.tensor([running, float(seen)], dtype=torch.float64, device=comm_device))
        module.eval()
        val_loss, val_score = _sharded_loss(module, xva, yva, output_kind, device)
        extra: dict[str, Any] = {}
        if rank == 0:
            extra = recipe.epoch_end(module, data, epoch, device) or {}
            module.eval()
        if world > 1:
            box = [extra]
            dist.broadcast_object_list(box, src=0, device=comm_device if _backend() == "nccl" else None)
            extra = box[0]
        selection = float(extra.get("selection_score", val_score))
        row = {"epoch": epoch, "train_loss": float(tr[0]) / max(float(tr[1]), 1.0), "val_loss": val_loss,
               "val_score": val_score}
        row.update({k: float(v) for k, v in extra.items() if isinstance(v, (int, float))})
        history.append(row)
        if selection > best_score:
            best_score, best_epoch, stale = selection, epoch, 0
            best_state = copy.deepcopy(module.state_dict())
        else:
            stale += 1
            if cfg.patience is not None and stale >= cfg.patience:
                if log and rank == 0:
                    log(f"early stop at epoch {epoch} (best {best_epoch})")
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return TrainResult(module=module, history=history, best_epoch=best_epoch, seconds=time.perf_counter() - t0)


def state_digest(module: "nn.Module") -> str:
    """SHA-256 of the module's state_dict (names, dtypes, shapes and bytes), for checking
    that every rank ended with the same weights."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


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


def _worker_main(argv: list[str] | None = None) -> int:
    """One torchrun process: join the group, train the selected models, save (rank 0)."""
    import torch
    import torch.distributed as dist

    from workbench.config import build_plan
    from workbench.runner import load_plan_dataset
    from workbench.torch_utils import seed_everything
    from workbench.train import output_kind_for

    ap = argparse.ArgumentParser(prog="python -m workbench.distributed")
    ap.add_argument("--plan", required=True, help="resolved plan JSON (plan_to_raw)")
    ap.add_argument("--model", action="append", default=[])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--cache", required=True)
    args = ap.parse_args(argv)

    if "RANK" not in os.environ:
        raise ConfigError("`python -m workbench.distributed` runs under torchrun; use `workbench train --nproc N`.")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if args.device == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    dist.init_process_group(backend=backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    say = (lambda m: print(m, flush=True)) if rank == 0 else (lambda m: None)
    try:
        raw = json.loads(Path(args.plan).read_text())
        source = str(raw.pop("_source", args.plan))
        plan = build_plan(raw, source=source)
        names = args.model or [m.name for m in plan.models]
        cache_dir = Path(args.cache)
        for name in names:
            spec = plan.model(name)
            data = load_plan_dataset(plan, spec.dataset)
            make, cache_spec = model_builder(spec, data)
            cfg = _train_config(spec, plan.run.seed)
            path = ddp_checkpoint_path(cache_dir, cache_spec, data, cfg, world)
            seed_everything(cfg.seed)
            module = make()  # the same initial weights on every rank (DDP also broadcasts rank 0's)
            cached = path.exists()
            if cached:
                blob = torch.load(path, map_location="cpu", weights_only=True)
                module.load_state_dict(blob["state_dict"])
                module.to(device).eval()
                history, best_epoch, seconds = blob.get("history", []), int(blob.get("best_epoch", 0)), 0.0
            else:
                res = ddp_train_model(module, data, cfg, device=device, log=say)
                module, history, best_epoch, seconds = res.module, res.history, res.best_epoch, res.seconds
            digests: list[Any] = [None] * world
            dist.all_gather_object(digests, state_digest(module))
            test = _test_metrics(module, data, output_kind_for(module, data), device)
            summary = {
                "model": name, "world_size": world, "backend": backend, "device": str(device.type),
                "checkpoint": str(path), "cached": cached, "digests": digests,
                "identical": len(set(digests)) == 1, "best_epoch": best_epoch, "seconds": seconds,
                "history": history, "test": test, "recipe": cfg.recipe,
            }
            if rank == 0:
                if not cached:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_suffix(f".{os.getpid()}.tmp")
                    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
                    torch.save({"state_dict": state, "history": history, "best_epoch": best_epoch,
                                "seconds": seconds, "spec": json.dumps(cache_spec, default=str),
                                "world_size": world, "backend": backend}, tmp)
                    tmp.replace(path)
                path.with_suffix(".json").write_text(json.dumps(summary, indent=1, default=str))
                acc = (f", test accuracy {test['correct']}/{test['n']} = {test['accuracy']:.4f}"
                       if "correct" in test else f", test loss {test['loss']:.4f}")
                say(f"  {name}: {'loaded from cache' if cached else 'trained'} on {world} x {device.type} "
                    f"({backend}), best epoch {best_epoch}, {seconds:.1f} s{acc}; "
                    f"ranks identical: {summary['identical']}")
                say(f"    checkpoint {path}")
            dist.barrier()
            if len(set(digests)) != 1:
                raise ModelError(f"Ranks ended with different weights for {name!r}: {digests}.")
    finally:
        dist.destroy_process_group()
    return EXIT_OK


# ----------------------------------------------------------------- `workbench train`


def launch_command(plan_json: Path, models: list[str], nproc: int, device: str, cache_dir: Path) -> list[str]:
    """The torchrun command line `workbench train --nproc N` runs."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={int(nproc)}",
           "-m", "workbench.distributed", "--plan", str(plan_json), "--device", device, "--cache", str(cache_dir)]
    for m in models:
        cmd += ["--model", m]
    return cmd


def train_command(args: argparse.Namespace) -> int:
    """`workbench train PLAN [--model NAME] [--set K=V] [--nproc N] [--device ...]`.

    --nproc 1: train in this process through the training cache, the same entries
    `workbench run` uses. --nproc N > 1: torchrun DDP (see module docstring); the
    checkpoints are cached under their own key and printed."""
    from workbench.config import load_plan
    from workbench.runner import Environment, plan_to_raw
    from workbench.torch_utils import resolve_device

    plan = load_plan(args.plan, list(getattr(args, "set", []) or []))
    nproc = getattr(args, "nproc", 1)
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"Expected --nproc to be an int >= 1, got {nproc!r}.")
    wanted = list(getattr(args, "model", []) or [])
    for m in wanted:
        plan.model(m)  # unknown names fail with did-you-mean
    names = []
    for spec in plan.models:
        if wanted and spec.name not in wanted:
            continue
        if not spec.arch and not spec.factory:
            print(f"  {spec.name}: checkpoint only, nothing to train (skipped)")
            continue
        names.append(spec.name)
    if not names:
        raise ConfigError("No trainable models selected: give models with `arch` or `factory`.")
    device_name = getattr(args, "device", None) or plan.run.device
    cache_dir = Path(plan.run.cache or os.environ.get("WORKBENCH_CACHE", ".workbench/cache")).resolve()

    if nproc == 1:
        env = Environment(plan=plan, device=resolve_device(device_name), cache_dir=cache_dir,
                          log=lambda m: print(m, flush=True), progress=plan.run.progress)
        for name in names:
            env.model(name)
        return EXIT_OK

    import torch

    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    device_type = device_name.split(":")[0]
    if device_type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was requested but torch.cuda.is_available() is False; use --device cpu.")
        if nproc > torch.cuda.device_count():
            raise ConfigError(f"--nproc {nproc} needs {nproc} GPUs on this node; it has {torch.cuda.device_count()}.")
    elif device_type != "cpu":
        raise ConfigError(f"Expected --device in ('auto', 'cpu', 'cuda'), got {device_name!r}.")
    if not torch.distributed.is_available():
        raise ConfigError("This torch build has no torch.distributed; DDP training is not possible.")
    raw = plan_to_raw(plan)
    payload = json.dumps({**raw, "_source": plan.source}, sort_keys=True, default=str)
    plan_dir = cache_dir / "plans"
    plan_dir.mkdir(parents=True, exist_ok=True)
    plan_json = plan_dir / f"plan-{hashlib.sha256(payload.encode()).hexdigest()[:16]}.json"
    plan_json.write_text(payload)
    cmd = launch_command(plan_json, names, nproc, device_type, cache_dir)
    print(f"launching {nproc} processes ({'nccl' if device_type == 'cuda' else 'gloo'}): {' '.join(cmd)}", flush=True)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    rc = subprocess.call(cmd, env=env)
    if rc != 0:
        print(f"workbench: error: torchrun exited with status {rc}", file=sys.stderr)
        return EXIT_INTERNAL
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    return _worker_main(argv)


if __name__ == "__main__":
    sys.exit(main())
