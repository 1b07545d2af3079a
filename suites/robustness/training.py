"""Adversarial training recipes for `workbench.train.train_model` (registered in
`workbench.train.RECIPES` as "pgd_at", "fgsm_rs", "trades").

A recipe has `name`, `batch_loss(module, x, y, loss_fn) -> Tensor` (called with the module
in train mode) and `epoch_end(module, data, epoch, device) -> dict` whose
"selection_score" (validation accuracy under a PGD attack STRONGER than the training
attack) makes the trainer keep the most robust epoch — guarding against robust
overfitting and catastrophic overfitting alike.

  PGDAdversarialTraining   Madry et al. (2018): train on PGD-k examples (random start,
                           step 2.5·eps/k).
  FGSMRandomStartTraining  Wong, Rice & Kolter (2020) "fast" AT: uniform random start in
                           the eps-ball, one signed-gradient step of alpha = 1.25·eps,
                           projected. Catastrophic overfitting is detected at each
                           epoch end on a validation batch: PGD accuracy collapsing
                           (dropping by more than `collapse_drop` from its best) or a
                           FGSM−PGD accuracy gap above `collapse_gap` flags the epoch
                           ("catastrophic_overfitting": 1.0); the best epoch is kept.
  TRADESTraining           Zhang et al. (2019): CE(f(x), y) + β·KL(f(x) ‖ f(x')) with x'
                           maximising the KL by k signed steps from x + 0.001·N(0, I).

Attack generation runs in EVAL mode (`frozen_eval`): BatchNorm uses its running
statistics and is not updated by the attack's forward passes, dropout is off, parameters
are frozen and their `.grad` untouched; every flag is restored before the training
forward pass, which runs in the caller's (train) mode. Madry et al. generate in train mode;
we choose eval mode so the attack sees the same function the evaluation attacks, and so
the attack steps do not pollute BatchNorm statistics (TRADES's reference code does the
same). Token models (long inputs) are attacked in embedding space through a hook on their
embedding layer (`workbench.embedding`; `.embed` / `.forward_from_embeddings` are used as a
shortcut when the model has them), with eps relative to the RMS embedding coordinate (L∞)
or the mean sequence-embedding norm (L2), as in the suite; the training forward adds the
perturbation to the layer's output, so the gradient still reaches the embedding weights.
`embedding`: the layer's name when the model has several (the plan's `embedding`).

`bounds`: the valid input range, e.g. (0, 1) for digits, or None (unbounded). The trainer
builds a recipe from `recipe_params` only, so pass `bounds` there (the robustness suite
does); with the default "auto" the recipe uses the dataset's bounds once it has seen the
dataset (`prepare(data)`, or the first `epoch_end`) and clips to nothing before that.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workbench import embedding as E
from workbench.suites.robustness import functional as A
from workbench.errors import ConfigError, check_number, check_positive_int
from workbench.torch_utils import frozen_eval, module_device


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


class _MethodsModel(nn.Module):
    """A model with `forward_from_embeddings` as a function of its embeddings (the shortcut)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return _first(self.module.forward_from_embeddings(e))


class _AdversarialRecipe:
    """Shared parts: parameters, bounds, embedding space, validation at epoch end."""

    name = ""

    def __init__(
        self,
        *,
        eps: float = 0.1,
        norm: str = "linf",
        bounds: Any = "auto",
        val_samples: int = 256,
        val_steps: int | None = None,
        seed: int = 0,
        embedding: str | None = None,
    ) -> None:
        self.eps = check_number("eps", eps, low=0, low_open=True)
        self.embedding = embedding
        self._layers: dict[int, nn.Module] = {}
        self.norm = A._check_norm(norm)
        if isinstance(bounds, str):
            if bounds != "auto":
                raise ConfigError(f"Expected `bounds` to be 'auto', None or a (low, high) pair, got {bounds!r}.")
            self.bounds: A.Bounds = None
            self._auto_bounds = True
        else:
            self.bounds = A._check_bounds(bounds)
            self._auto_bounds = False
        self.val_samples = check_positive_int("val_samples", val_samples)
        self.val_steps = None if val_steps is None else check_positive_int("val_steps", val_steps)
        self.seed = int(seed)
        self._gen = torch.Generator().manual_seed(self.seed)
        self.history: list[dict[str, float]] = []

    # -- configuration
    def prepare(self, data: Any) -> None:
        """Adopt the dataset's bounds when `bounds="auto"`."""
        if self._auto_bounds:
            self.bounds = A._check_bounds(getattr(data, "bounds", None))
            self._auto_bounds = False

    @property
    def train_steps(self) -> int:
        """Gradient steps of the training attack."""
        return 1

    @property
    def eval_steps(self) -> int:
        """Steps of the validation PGD: always more than the training attack."""
        return self.val_steps if self.val_steps is not None else max(10, 2 * self.train_steps)

    def describe(self) -> str:
        return f"{self.name}(eps={self.eps:g}, norm={self.norm}, steps={self.train_steps})"

    # -- input space
    def _space(self, module: nn.Module, x: torch.Tensor) -> tuple[A.Model, torch.Tensor, float, A.Bounds,
                                                                   Callable[[torch.Tensor], torch.Tensor]]:
        """(attack model, attack input x0 detached, eps, bounds, forward) where forward(x_adv)
        is the training forward pass at an attack point: the input itself for float inputs;
        for token ids, the embedding layer's output moved by x_adv - x0 (its gradient still
        reaches the embedding weights)."""
        if torch.is_floating_point(x):
            return module, x.detach(), self.eps, self.bounds, lambda xa: _first(module(xa))
        if callable(getattr(module, "embed", None)) and callable(getattr(module, "forward_from_embeddings", None)):
            e = module.embed(x)  # (B, T, C), keeps the path to the embedding weights
            e0 = e.detach()
            return (_MethodsModel(module), e0, self.eps * E.embedding_eps_scale(e0, self.norm), None,
                    lambda xa: _first(module.forward_from_embeddings(e + (xa - e0))))
        layer = self._layers.get(id(module))
        if layer is None:
            layer = self._layers[id(module)] = E.find_embedding_layer(module, x, path=self.embedding)[1]
        e0 = E.embeddings(module, layer, x)
        return (E.TokenEmbeddingModel(module, layer, x), e0, self.eps * E.embedding_eps_scale(e0, self.norm), None,
                lambda xa: _first(E.forward_with_offset(module, layer, xa - e0, x)))

    def _adversarial(self, model: A.Model, x0: torch.Tensor, y: torch.Tensor, eps: float, bounds: A.Bounds) -> torch.Tensor:
        raise NotImplementedError

    def batch_loss(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable) -> torch.Tensor:
        model, x0, eps, bounds, forward = self._space(module, x)
        x_adv = self._adversarial(model, x0, y, eps, bounds)
        return loss_fn(forward(x_adv), y)

    # -- validation
    def _val_batch(self, data: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        n = min(self.val_samples, len(data.val))
        return data.val.x[:n].to(device), data.val.y[:n].to(device)

    def _val_attack_accuracies(self, module: nn.Module, data: Any, device: torch.device) -> dict[str, float]:
        self.prepare(data)
        xv, yv = self._val_batch(data, device)
        with frozen_eval(module), torch.no_grad():
            model, x0, eps, bounds, _ = self._space(module, xv)
        gen = torch.Generator().manual_seed(self.seed + 1)

        def acc(xa: torch.Tensor) -> float:
            return float((A.predict_logits(model, xa).argmax(1) == yv).float().mean())

        x_pgd = A.pgd(model, x0, yv, eps=eps, norm=self.norm, steps=self.eval_steps, bounds=bounds, generator=gen)
        x_fgsm = A.fgsm(model, x0, yv, eps=eps, norm=self.norm, bounds=bounds)
        return {"val_clean_accuracy": acc(x0), "val_pgd_accuracy": acc(x_pgd), "val_fgsm_accuracy": acc(x_fgsm)}

    def epoch_end(self, module: nn.Module, data: Any, epoch: int, device: torch.device) -> dict[str, float]:
        row = self._val_attack_accuracies(module, data, device)
        row["selection_score"] = row["val_pgd_accuracy"]
        self.history.append({"epoch": float(epoch), **row})
        return row


class PGDAdversarialTraining(_AdversarialRecipe):
    """PGD adversarial training (Madry et al. 2018): PGD-`steps` with random start and step
    `alpha` (default 2.5·eps/steps)."""

    name = "pgd_at"

    def __init__(self, *, eps: float = 0.1, steps: int = 7, alpha: float | None = None, norm: str = "linf",
                 bounds: Any = "auto", val_samples: int = 256, val_steps: int | None = None, seed: int = 0,
                 embedding: str | None = None) -> None:
        super().__init__(eps=eps, norm=norm, bounds=bounds, val_samples=val_samples, val_steps=val_steps, seed=seed,
                         embedding=embedding)
        self.steps = check_positive_int("steps", steps)
        self.alpha = None if alpha is None else check_number("alpha", alpha, low=0, low_open=True)

    @property
    def train_steps(self) -> int:
        return self.steps

    def _adversarial(self, model: A.Model, x0: torch.Tensor, y: torch.Tensor, eps: float, bounds: A.Bounds) -> torch.Tensor:
        alpha = None if self.alpha is None else self.alpha * eps / self.eps
        return A.pgd(model, x0, y, eps=eps, norm=self.norm, steps=self.steps, step_size=alpha, bounds=bounds,
                     generator=self._gen, keep="last")


class FGSMRandomStartTraining(_AdversarialRecipe):
    """Fast adversarial training (Wong et al. 2020): FGSM from a uniform random start with
    step `alpha` (default 1.25·eps), with catastrophic-overfitting detection."""

    name = "fgsm_rs"

    def __init__(self, *, eps: float = 0.1, alpha: float | None = None, norm: str = "linf", bounds: Any = "auto",
                 collapse_drop: float = 0.2, collapse_gap: float = 0.3, val_samples: int = 256,
                 val_steps: int | None = None, seed: int = 0, embedding: str | None = None) -> None:
        super().__init__(eps=eps, norm=norm, bounds=bounds, val_samples=val_samples, val_steps=val_steps, seed=seed,
                         embedding=embedding)
        self.alpha = 1.25 * self.eps if alpha is None else check_number("alpha", alpha, low=0, low_open=True)
        self.collapse_drop = check_number("collapse_drop", collapse_drop, low=0, low_open=True)
        self.collapse_gap = check_number("collapse_gap", collapse_gap, low=0, low_open=True)
        self.best_pgd = float("-inf")
        self.collapsed_epochs: list[int] = []

    def _adversarial(self, model: A.Model, x0: torch.Tensor, y: torch.Tensor, eps: float, bounds: A.Bounds) -> torch.Tensor:
        # FGSM-RS is PGD with one step of size alpha from a uniform random start
        return A.pgd(model, x0, y, eps=eps, norm=self.norm, steps=1, step_size=self.alpha * eps / self.eps, keep="last",
                     random_start=True, bounds=bounds, generator=self._gen)

    def epoch_end(self, module: nn.Module, data: Any, epoch: int, device: torch.device) -> dict[str, float]:
        row = self._val_attack_accuracies(module, data, device)
        row["selection_score"] = row["val_pgd_accuracy"]
        row["fgsm_pgd_gap"] = row["val_fgsm_accuracy"] - row["val_pgd_accuracy"]
        collapsed = catastrophic_overfitting(row["val_pgd_accuracy"], row["val_fgsm_accuracy"], self.best_pgd,
                                             drop=self.collapse_drop, gap=self.collapse_gap)
        row["catastrophic_overfitting"] = 1.0 if collapsed else 0.0
        if collapsed:
            self.collapsed_epochs.append(int(epoch))
        self.best_pgd = max(self.best_pgd, row["val_pgd_accuracy"])
        self.history.append({"epoch": float(epoch), **row})
        return row


def catastrophic_overfitting(pgd_acc: float, fgsm_acc: float, best_pgd_acc: float, *, drop: float = 0.2,
                             gap: float = 0.3) -> bool:
    """Catastrophic overfitting (Wong et al. 2020): validation PGD accuracy fell more than
    `drop` below its best so far, or FGSM accuracy exceeds PGD accuracy by more than `gap`
    (the model resists the single step it is trained on but not a multi-step attack)."""
    return (pgd_acc < best_pgd_acc - drop) or (fgsm_acc - pgd_acc > gap)


CO_RULE = "val PGD accuracy more than collapse_drop below its best, or FGSM - PGD accuracy > collapse_gap"


def overfitting_report(history: list[dict[str, Any]] | None, variant: str, recipe: str) -> tuple[list[Any], dict[str, Any]]:
    """The catastrophic-overfitting check of one adversarially trained variant, per epoch,
    from the trainer's history (it lives in the training cache, so a cache hit has it too).

    Returns (records, summary): one `catastrophic_overfitting` record per epoch (1.0 =
    flagged, tags variant/epoch, with the validation PGD and FGSM accuracies and their gap
    in the summary), or one null record with the reason when the recipe does not run the
    check or no history survived; summary {"epochs": [...], "flagged_epochs": [...], "rule"}.
    """
    from workbench.records import MetricRecord

    tags = {"variant": variant, "recipe": recipe}
    rows = [h for h in (history or []) if "catastrophic_overfitting" in h]
    if not rows:
        reason = ("no training history (the model was not trained by the workbench)" if not history else
                  f"recipe {recipe!r} does not run the check (it applies to single-step training, fgsm_rs)")
        rec = MetricRecord.unavailable("catastrophic_overfitting", reason, higher_is_better=False, unit="flag",
                                       tags=tags)
        return [rec], {"checked": False, "reason": reason}
    records, epochs = [], []
    for h in rows:
        flag = float(h["catastrophic_overfitting"])
        epoch = int(h.get("epoch", len(epochs)))
        records.append(MetricRecord(name="catastrophic_overfitting", value=flag, higher_is_better=False,
                                    unit="flag", tags={**tags, "epoch": epoch}))
        epochs.append({"epoch": epoch, "flagged": bool(flag),
                       **{k: float(h[k]) for k in ("val_pgd_accuracy", "val_fgsm_accuracy", "fgsm_pgd_gap",
                                                   "val_clean_accuracy") if k in h}})
    summary = {"checked": True, "rule": CO_RULE, "epochs": epochs,
               "flagged_epochs": [e["epoch"] for e in epochs if e["flagged"]]}
    return records, summary


class TRADESTraining(_AdversarialRecipe):
    """TRADES (Zhang et al. 2019): CE(f(x), y) + beta·KL(softmax f(x) ‖ softmax f(x')), x'
    found by `steps` signed-gradient steps of `alpha` (default 2.5·eps/steps) on that KL,
    starting from x + 0.001·N(0, I)."""

    name = "trades"

    def __init__(self, *, eps: float = 0.1, beta: float = 6.0, steps: int = 7, alpha: float | None = None,
                 norm: str = "linf", bounds: Any = "auto", val_samples: int = 256, val_steps: int | None = None,
                 seed: int = 0, embedding: str | None = None) -> None:
        super().__init__(eps=eps, norm=norm, bounds=bounds, val_samples=val_samples, val_steps=val_steps, seed=seed,
                         embedding=embedding)
        self.beta = check_number("beta", beta)
        self.steps = check_positive_int("steps", steps)
        self.alpha = None if alpha is None else check_number("alpha", alpha, low=0, low_open=True)

    @property
    def train_steps(self) -> int:
        return self.steps

    def _adversarial(self, model: A.Model, x0: torch.Tensor, y: torch.Tensor, eps: float, bounds: A.Bounds) -> torch.Tensor:
        alpha = 2.5 * eps / self.steps if self.alpha is None else self.alpha * eps / self.eps
        with A.attack_mode(model):
            with torch.no_grad():
                p_clean = F.softmax(A.logits_of(model, x0).float(), dim=1)
            start = 0.001 * torch.randn(tuple(x0.shape), generator=self._gen).to(x0)
            x_adv = A.project(x0 + start, x0, eps, self.norm, bounds)
            for _ in range(self.steps):
                xa = x_adv.detach().requires_grad_(True)
                kl = F.kl_div(F.log_softmax(A.logits_of(model, xa).float(), dim=1), p_clean, reduction="sum")
                (g,) = torch.autograd.grad(kl, xa)
                x_adv = A.project(x_adv + alpha * A._ascent(g, self.norm), x0, eps, self.norm, bounds)
        return x_adv.detach()

    def batch_loss(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable) -> torch.Tensor:
        model, x0, eps, bounds, forward = self._space(module, x)
        x_adv = self._adversarial(model, x0, y, eps, bounds)
        logits = forward(x0)
        logits_adv = forward(x_adv)
        kl = F.kl_div(F.log_softmax(logits_adv.float(), dim=1), F.softmax(logits.float(), dim=1), reduction="batchmean")
        return loss_fn(logits, y) + self.beta * kl


def train_with_recipe(
    module: nn.Module,
    recipe: _AdversarialRecipe | Any,
    data: Any,
    *,
    epochs: int,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
) -> tuple[nn.Module, list[dict[str, float]], int]:
    """`workbench.train.train_model` with a recipe object, for scripts and tests: the one
    training loop with Adam's update (AdamW without weight decay) at a constant `lr`, no
    clipping, no AMP, no early stop, keeping the epoch with the best "selection_score".
    A recipe that reports none keeps the FIRST epoch (score -epoch), as this helper always
    did when it had a loop of its own. Returns (module in eval mode, history, best epoch)."""
    from workbench.train import TrainConfig, train_model

    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=0.0, patience=None, amp=False,
                      grad_clip=None, seed=seed, lr_schedule="constant")
    res = train_model(module, data, cfg, device=module_device(module), recipe=_ScoredRecipe(recipe))
    return res.module, res.history, res.best_epoch


class _ScoredRecipe:
    """A recipe whose epoch-end numbers always carry a "selection_score" (its own, else
    -epoch); everything else is the recipe's."""

    def __init__(self, recipe: Any) -> None:
        self._recipe = recipe

    def __getattr__(self, name: str) -> Any:
        return getattr(self._recipe, name)

    def epoch_end(self, module: nn.Module, data: Any, epoch: int, device: torch.device) -> dict[str, Any]:
        row = dict(self._recipe.epoch_end(module, data, epoch, device) or {})
        row.setdefault("selection_score", -float(epoch))
        return row
