"""Training loop for the reference models: device auto, AMP on CUDA, full seeding,
early stopping on validation, progress bar, checkpoints, a content-addressed cache,
and a recipe hook so adversarial training plugs in without touching the loop.

A recipe is any object with
    name: str
    batch_loss(module, x, y, loss_fn) -> Tensor        # module is in train mode
    epoch_end(module, data, epoch, device) -> dict     # may hold "selection_score" (higher is better)
registered by name in `RECIPES`.
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
from workbench.errors import ConfigError, ModelError, check_positive_int
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


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How to train. `patience` epochs without a better validation selection score stop
    training early (None: never); the best epoch's weights are kept."""

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


@torch.no_grad()
def evaluate_loss(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor, output_kind: str, batch_size: int = 512
) -> tuple[float, float]:
    """(mean loss, score) on a split; score is accuracy for classifiers, −loss otherwise."""
    loss_fn = task_loss(output_kind)
    total, correct, count = 0.0, 0, 0
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        out = module(xb)
        total += float(loss_fn(out, yb)) * xb.shape[0]
        if output_kind == "logits":
            correct += int((out.argmax(-1) == yb).sum())
        count += xb.shape[0]
    loss = total / max(count, 1)
    score = correct / max(count, 1) if output_kind == "logits" else -loss
    return loss, score


def _autocast(device: torch.device, enabled: bool) -> Any:
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)
    return torch.autocast(device_type="cpu", enabled=False)


def train_model(
    module: nn.Module,
    data: Dataset,
    cfg: TrainConfig,
    *,
    device: torch.device,
    recipe: Any = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train `module` on `data.train`, select the best epoch on `data.val`, return it in
    eval mode on `device`. Deterministic for `cfg.seed` on CPU."""
    seed_everything(cfg.seed)
    recipe = recipe if recipe is not None else make_recipe(cfg.recipe, cfg.recipe_params)
    if hasattr(recipe, "prepare"):  # e.g. adversarial recipes read the data's input bounds
        recipe.prepare(data)
    output_kind = output_kind_for(module, data)
    loss_fn = task_loss(output_kind)
    module.to(device)
    xtr, ytr = data.train.x.to(device), data.train.y.to(device)
    xva, yva = data.val.x.to(device), data.val.y.to(device)
    opt = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, -(-xtr.shape[0] // cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.15
    )
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported()) if use_amp else None
    gen = torch.Generator().manual_seed(cfg.seed)
    best_score, best_state, best_epoch, stale = -float("inf"), None, 0, 0
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    epochs = range(cfg.epochs)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(epochs, desc=f"train {type(module).__name__}", leave=False, unit="ep")
        epochs = bar
    for epoch in epochs:
        module.train()
        perm = torch.randperm(xtr.shape[0], generator=gen).to(device)
        running, seen = 0.0, 0
        for i in range(0, xtr.shape[0], cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            xb, yb = xtr[idx], ytr[idx]
            with _autocast(device, use_amp):
                loss = recipe.batch_loss(module, xb, yb, loss_fn)
            if not torch.isfinite(loss):
                raise ModelError(f"Training loss became non-finite ({float(loss.detach())}) at epoch {epoch}; lower `lr`.")
            opt.zero_grad(set_to_none=True)
            if scaler is not None and scaler.is_enabled():
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            else:
                loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
            if scaler is not None and scaler.is_enabled():
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            sched.step()
            running += float(loss.detach()) * xb.shape[0]
            seen += xb.shape[0]
        module.eval()
        val_loss, val_score = evaluate_loss(module, xva, yva, output_kind)
        extra = recipe.epoch_end(module, data, epoch, device) or {}
        module.eval()
        selection = float(extra.get("selection_score", val_score))
        row = {"epoch": epoch, "train_loss": running / max(seen, 1), "val_loss": val_loss, "val_score": val_score}
        row.update({k: float(v) for k, v in extra.items() if isinstance(v, (int, float))})
        history.append(row)
        if bar is not None:
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", val=f"{val_score:.3f}")
        if selection > best_score:
            best_score, best_epoch, stale = selection, epoch, 0
            best_state = copy.deepcopy(module.state_dict())
        else:
            stale += 1
            if cfg.patience is not None and stale >= cfg.patience:
                if log:
                    log(f"early stop at epoch {epoch} (best {best_epoch})")
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return TrainResult(module=module, history=history, best_epoch=best_epoch, seconds=time.perf_counter() - t0)


def cache_key(spec: dict[str, Any], data: Dataset, cfg: TrainConfig) -> str:
    """Hash of (model spec, data, training config, seed, torch version)."""
    payload = json.dumps(
        {"spec": spec, "data": data.fingerprint(), "train": dataclasses.asdict(cfg), "torch": torch.__version__},
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
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train through the cache: a second call with the same (spec, data, cfg) loads the
    checkpoint (torch.load weights_only=True) instead of training."""
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
