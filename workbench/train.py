"""Training loop for the reference models: device auto, AMP on CUDA, full seeding,
early stopping on validation, progress (a bar on a terminal, lines in a log), checkpoints, a
content-addressed cache, and a recipe hook so adversarial training plugs in without touching the loop.

A recipe is any object with
    name: str
    batch_loss(module, x, y, loss_fn) -> Tensor        # module is in train mode
    epoch_end(module, data, epoch, device) -> dict     # may hold "selection_score" (higher is better)
registered by name in `RECIPES`.

One loop (`train_model`, one optimiser step in `train_step`) serves one process and a
DistributedDataParallel group alike; a `Parallel` object holds the few places where they
differ (see workbench.distributed.DDPParallel).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workbench.data.base import Dataset
from workbench.errors import ConfigError, ModelError, check_choice, check_positive_int
from workbench.progress import Progress, display_for
from workbench.registry import Registry
from workbench.torch_utils import seed_everything

RECIPES: Registry = Registry("training recipe", entry_point_group="workbench.recipes")
for _name, _path in {
    "standard": "workbench.train:StandardRecipe",
    "pgd_at": "workbench.suites.robustness.training:PGDAdversarialTraining",
    "fgsm_rs": "workbench.suites.robustness.training:FGSMRandomStartTraining",
    "trades": "workbench.suites.robustness.training:TRADESTraining",
    "gaussian_noise": "workbench.suites.certify.training:GaussianNoiseTraining",
}.items():
    RECIPES.register(_name, _path)


LR_SCHEDULES = ("one_cycle", "constant")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How to train. `patience` epochs without a better validation selection score stop
    training early (None: never); the best epoch's weights are kept. `lr_schedule`:
    "one_cycle" (warm-up to `lr` over 15% of the steps, then annealing) or "constant"."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    patience: int | None = 5
    amp: bool = True
    grad_clip: float | None = 1.0
    seed: int = 0
    recipe: str = "standard"
    recipe_params: dict[str, Any] = field(default_factory=dict)
    lr_schedule: str = "one_cycle"

    def __post_init__(self) -> None:
        check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        if self.epochs > 100_000:
            raise ConfigError(f"Expected `epochs` <= 100000, got {self.epochs}.")
        if self.batch_size > 10_000_000:
            raise ConfigError(f"Expected `batch_size` <= 10000000, got {self.batch_size}.")
        if self.patience is not None:
            check_positive_int("patience", self.patience)
        if not (isinstance(self.lr, (int, float)) and not isinstance(self.lr, bool) and 0 < self.lr < float("inf")):
            raise ConfigError(f"Expected `lr` to be a float > 0, got {self.lr!r}.")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ConfigError(f"Expected `weight_decay` to be a float >= 0, got {self.weight_decay!r}.")
        if self.grad_clip is not None and not (isinstance(self.grad_clip, (int, float)) and self.grad_clip > 0):
            raise ConfigError(f"Expected `grad_clip` to be a float > 0 or absent, got {self.grad_clip!r}.")
        if not isinstance(self.recipe, str):
            raise ConfigError(f"Expected `recipe` to be a str, got {self.recipe!r}.")
        if not isinstance(self.recipe_params, dict):
            raise ConfigError(f"Expected `recipe_params` to be a table, got {self.recipe_params!r}.")
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "TrainConfig":
        from workbench.errors import did_you_mean

        d = dict(d or {})
        names = {f.name for f in dataclasses.fields(cls)}
        for k in d:
            if k not in names:
                raise ConfigError(
                    f"Unknown training key {k!r}.{did_you_mean(k, names)} Valid keys: {', '.join(sorted(names))}."
                )
        try:
            return cls(**d)
        except TypeError as exc:
            raise ConfigError(f"Invalid training config: {exc}") from exc


@dataclass
class TrainResult:
    module: nn.Module
    history: list[dict[str, float]]
    best_epoch: int
    seconds: float
    cache_hit: bool = False


class StandardRecipe:
    """Plain empirical risk minimisation."""

    name = "standard"

    def batch_loss(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable) -> torch.Tensor:
        return loss_fn(module(x), y)

    def epoch_end(self, module: nn.Module, data: Dataset, epoch: int, device: torch.device) -> dict[str, float]:
        return {}


def make_recipe(name: str, params: dict[str, Any] | None = None) -> Any:
    cls = RECIPES.get(name)
    try:
        return cls(**(params or {}))
    except TypeError as exc:
        raise ConfigError(f"Invalid parameters for training recipe {name!r}: {exc}") from exc


def task_loss(output_kind: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss for a model's output kind (see ModelHandle.output)."""
    if output_kind == "logits":
        return lambda out, y: F.cross_entropy(out.float(), y)
    if output_kind == "mean":
        return lambda out, y: F.mse_loss(out.float().reshape(y.shape), y.float())
    if output_kind == "mean_logvar":
        def nll(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            out = out.float()
            return F.gaussian_nll_loss(out[:, 0], y.float(), out[:, 1].exp(), full=True)
        return nll
    if output_kind == "lm_logits":
        return lambda out, y: F.cross_entropy(out.float().reshape(-1, out.shape[-1]), y.reshape(-1))
    raise ConfigError(
        f"Unknown output kind {output_kind!r}; expected one of 'logits', 'mean', 'mean_logvar', 'lm_logits'."
    )


def output_kind_for(module: nn.Module, data: Dataset) -> str:
    """The module's declared `output_kind`, else the one the task implies."""
    kind = getattr(module, "output_kind", None)
    if kind:
        return kind
    return {"classification": "logits", "regression": "mean", "lm": "lm_logits"}[data.task]


def loss_sums(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor, output_kind: str, batch_size: int = 512
) -> tuple[float, int, int]:
    """(Σ batch-mean loss × batch rows, correct predictions, rows) of `module` on (x, y),
    in its current mode, without grad. `correct` counts argmax hits for "logits" and is 0
    otherwise. The sums of shards add up to the sums of the whole split."""
    loss_fn = task_loss(output_kind)
    total, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            out = module(xb)
            total += float(loss_fn(out, yb)) * xb.shape[0]
            if output_kind == "logits":
                correct += int((out.argmax(-1) == yb).sum())
            count += xb.shape[0]
    return total, correct, count


def loss_and_score(total: float, correct: int, count: int, output_kind: str) -> tuple[float, float]:
    """(mean loss, score) from `loss_sums`; score is accuracy for classifiers, −loss otherwise."""
    loss = total / max(count, 1)
    return loss, (correct / max(count, 1) if output_kind == "logits" else -loss)


def evaluate_loss(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor, output_kind: str, batch_size: int = 512
) -> tuple[float, float]:
    """(mean loss, score) on a split; score is accuracy for classifiers, −loss otherwise."""
    return loss_and_score(*loss_sums(module, x, y, output_kind, batch_size), output_kind)


def autocast(device: torch.device, enabled: bool) -> Any:
    """bf16 (or fp16) autocast on CUDA when `enabled`; a no-op context elsewhere."""
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)
    return torch.autocast(device_type="cpu", enabled=False)


class Parallel:
    """How the training loop is spread over processes. This base class is one process;
    `workbench.distributed.DDPParallel` spreads it over a torch.distributed group. The
    loop in `train_model` is the same for both: only these hooks differ."""

    rank: int = 0
    world: int = 1

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """The module the training steps call (DDP wraps it)."""
        return module

    def local_rows(self, idx: torch.Tensor) -> torch.Tensor | None:
        """This process's rows of a global batch `idx`; None skips the batch on every process."""
        return idx

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """`values` summed over processes."""
        return values

    def after_steps(self, module: nn.Module) -> None:
        """Called after each epoch's training steps, before validation and the snapshot."""

    def evaluate(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor, output_kind: str,
                 device: torch.device) -> tuple[float, float]:
        """(mean loss, score) on a split (see `evaluate_loss`)."""
        return evaluate_loss(module, x, y, output_kind)

    def epoch_end(self, recipe: Any, module: nn.Module, data: Dataset, epoch: int,
                  device: torch.device) -> dict[str, Any]:
        """The recipe's epoch-end numbers, the same on every process."""
        return recipe.epoch_end(module, data, epoch, device) or {}


def shard_weight(local_rows: int, global_rows: int, world: int) -> float:
    """The factor on a process's shard-mean loss such that the average over `world`
    processes of (factor × shard mean) is the mean over the global batch:
    local_rows × world / global_rows (1.0 for one process)."""
    return 1.0 if world == 1 else local_rows * world / global_rows


def train_step(
    model: nn.Module,
    xb: torch.Tensor,
    yb: torch.Tensor,
    *,
    recipe: Any,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    opt: torch.optim.Optimizer,
    scaler: Any,
    grad_clip: float | None,
    device: torch.device,
    use_amp: bool,
    weight: float = 1.0,
    where: str = "",
) -> float:
    """One optimiser step on the batch (xb, yb) with the recipe's loss; returns the
    (unweighted) batch loss. The gradient is that of `weight` × loss: a process of a DDP
    group weights its shard's mean loss by its share of the global batch, so the averaged
    gradient is the gradient of the global-batch mean. A non-finite loss raises ModelError
    before any parameter changes."""
    with autocast(device, use_amp):
        loss = recipe.batch_loss(model, xb, yb, loss_fn)
    if not torch.isfinite(loss):
        raise ModelError(f"Training loss became non-finite ({float(loss.detach())}){where}; lower `lr`.")
    scaled = loss if weight == 1.0 else loss * weight
    opt.zero_grad(set_to_none=True)
    if scaler is not None and scaler.is_enabled():
        scaler.scale(scaled).backward()
        scaler.unscale_(opt)
    else:
        scaled.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler is not None and scaler.is_enabled():
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    return float(loss.detach())


def train_model(
    module: nn.Module,
    data: Dataset,
    cfg: TrainConfig,
    *,
    device: torch.device,
    recipe: Any = None,
    progress: bool | str = False,
    log: Callable[[str], None] | None = None,
    parallel: Parallel | None = None,
) -> TrainResult:
    """Train `module` on `data.train`, select the best epoch on `data.val`, return it in
    eval mode on `device`. Deterministic for `cfg.seed` on CPU.

    Every epoch draws a permutation from a generator seeded with `cfg.seed` (the same on
    every process) and walks it in global batches of `cfg.batch_size` rows; `parallel`
    (default: this process alone) says which rows of a batch this process trains on and
    how numbers are combined across processes (see `Parallel`). Process r seeds its own
    RNGs (dropout, attack noise) with `cfg.seed + r`.

    progress: per-epoch progress on rank 0 (`workbench.progress`): True a bar on a terminal
    and a line at most every 30 s in a log (through `log`), or a display name ("bar", "log",
    "off"); False off."""
    parallel = parallel or Parallel()
    rank, world = parallel.rank, parallel.world
    seed_everything(cfg.seed + rank)
    recipe = recipe if recipe is not None else make_recipe(cfg.recipe, cfg.recipe_params)
    if hasattr(recipe, "prepare"):  # e.g. adversarial recipes read the data's input bounds
        recipe.prepare(data)
    output_kind = output_kind_for(module, data)
    loss_fn = task_loss(output_kind)
    module.to(device)
    model = parallel.wrap(module, device)
    xtr, ytr = data.train.x.to(device), data.train.y.to(device)
    xva, yva = data.val.x.to(device), data.val.y.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = xtr.shape[0]
    steps_per_epoch = max(1, -(-n // cfg.batch_size))
    if cfg.lr_schedule == "constant":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    else:
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.15
        )
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported()) if use_amp else None
    gen = torch.Generator().manual_seed(cfg.seed)
    best_score, best_state, best_epoch, stale = -float("inf"), None, 0, 0
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    display = display_for(progress) if rank == 0 else "off"
    bar = Progress(cfg.epochs, f"train {type(module).__name__}", unit="epochs", log=log, display=display)
    on_rank = f" on rank {rank}" if world > 1 else ""
    for epoch in range(cfg.epochs):
        model.train()
        perm = torch.randperm(n, generator=gen).to(device)
        running, seen = 0.0, 0
        for i in range(0, n, cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            local = parallel.local_rows(idx)
            if local is not None:
                weight = shard_weight(local.numel(), idx.numel(), world)
                loss = train_step(model, xtr[local], ytr[local], recipe=recipe, loss_fn=loss_fn, opt=opt,
                                  scaler=scaler, grad_clip=cfg.grad_clip, device=device, use_amp=use_amp,
                                  weight=weight, where=f" at epoch {epoch}{on_rank}")
                running += loss * local.numel()
                seen += local.numel()
            sched.step()  # also for a skipped batch: the schedule stays the single-process one
        running, seen_f = parallel.sum([running, float(seen)], device)
        parallel.after_steps(module)
        module.eval()
        val_loss, val_score = parallel.evaluate(module, xva, yva, output_kind, device)
        extra = parallel.epoch_end(recipe, module, data, epoch, device)
        module.eval()
        selection = float(extra.get("selection_score", val_score))
        row = {"epoch": epoch, "train_loss": running / max(seen_f, 1.0), "val_loss": val_loss, "val_score": val_score}
        row.update({k: float(v) for k, v in extra.items() if isinstance(v, (int, float))})
        history.append(row)
        bar.update(note=f"loss {row['train_loss']:.3f}, val {val_score:.3f}")
        if selection > best_score:
            best_score, best_epoch, stale = selection, epoch, 0
            best_state = copy.deepcopy(module.state_dict())
        else:
            stale += 1
            if cfg.patience is not None and stale >= cfg.patience:
                if log and rank == 0:
                    log(f"early stop at epoch {epoch} (best {best_epoch})")
                break
    bar.close()
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return TrainResult(module=module, history=history, best_epoch=best_epoch, seconds=time.perf_counter() - t0)


def non_finite_tensors(module: nn.Module) -> list[str]:
    """Names of the module's floating-point parameters and buffers holding NaN or inf."""
    return [k for k, v in module.state_dict().items()
            if torch.is_floating_point(v) and not bool(torch.isfinite(v).all())]


def cache_key(spec: dict[str, Any], data: Dataset, cfg: TrainConfig) -> str:
    """Hash of (model spec, data, training config, seed, torch version)."""
    train = dataclasses.asdict(cfg)
    if train["lr_schedule"] == "one_cycle":  # the default: keys written before the field existed stay valid
        del train["lr_schedule"]
    payload = json.dumps(
        {"spec": spec, "data": data.fingerprint(), "train": train, "torch": torch.__version__},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def train_cached(
    build: Callable[[], nn.Module],
    spec: dict[str, Any],
    data: Dataset,
    cfg: TrainConfig,
    *,
    device: torch.device,
    cache_dir: Path | None,
    progress: bool | str = False,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train through the cache: a second call with the same (spec, data, cfg) loads the
    checkpoint (torch.load weights_only=True) instead of training. The checkpoint is
    written (atomically) only after training ended with finite loss, weights and buffers."""
    seed_everything(cfg.seed)
    module = build()
    path = None
    if cache_dir is not None:
        key = cache_key(spec, data, cfg)
        path = Path(cache_dir) / f"{spec.get('arch', 'model')}-{key}.pt"
        if path.exists():
            try:
                blob = torch.load(path, map_location="cpu", weights_only=True)
                module.load_state_dict(blob["state_dict"])
                module.to(device).eval()
                return TrainResult(
                    module=module, history=blob.get("history", []), best_epoch=int(blob.get("best_epoch", 0)),
                    seconds=float(blob.get("seconds", 0.0)), cache_hit=True,
                )
            except Exception as exc:  # a corrupt cache entry is retrained, not fatal
                if log:
                    log(f"cache entry {path.name} unreadable ({exc}); retraining")
    result = train_model(module, data, cfg, device=device, progress=progress, log=log)
    bad = non_finite_tensors(result.module)
    if bad:  # checked before caching: a cache entry is always a usable model
        raise ModelError(f"Training ended with non-finite values in {', '.join(bad[:5])}; lower `lr`.")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A name of its own per writer: two runs training the same model at once must not
        # write into (or rename away) each other's temporary file.
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        state = {k: v.detach().cpu() for k, v in result.module.state_dict().items()}
        try:
            torch.save(
                {"state_dict": state, "history": result.history, "best_epoch": result.best_epoch,
                 "seconds": result.seconds, "spec": json.dumps(spec, default=str)},
                tmp,
            )
            tmp.replace(path)  # atomic: a killed run never leaves a half-written checkpoint
        finally:
            tmp.unlink(missing_ok=True)
    return result
