"""The corruptions suite: the model's task metric under natural corruptions at several
severities, for classifiers (accuracy, cross-entropy) and regressors (squared error).

The corruptions themselves are pure seeded functions in `functional.py`; this file wires
them to the Suite protocol. See README.md (the suite card) for metrics and artifacts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from workbench.errors import (ConfigError, check_name_list, check_number_list, check_positive_int, check_probability,
                             did_you_mean)
from workbench.records import MetricRecord
from workbench.suite import ModelHandle, RunContext, Suite, load_artifact

OUTPUTS: tuple[str, ...] = ("logits", "mean", "mean_logvar")


class CorruptionsSuite(Suite):
    name: ClassVar[str] = "corruptions"
    description: ClassVar[str] = (
        "Accuracy (classification) or squared error (regression) under natural corruptions per modality "
        "at severities 1-5, the generalisation gap and a performance-decay flag."
    )
    tasks: ClassVar[frozenset[str]] = frozenset({"classification", "regression"})
    modalities: ClassVar[frozenset[str] | None] = frozenset({"image", "tabular", "tokens"})
    headline_metrics: ClassVar[tuple[str, ...]] = ("mean_corrupted_accuracy", "mean_corrupted_mse")

    @dataclass(frozen=True, kw_only=True)
    class Params:
        """n_samples: test points; corruptions: names (empty = every one of the modality);
        severities: levels 1..5; decay_threshold: relative drop (accuracy) or rise (MSE) that
        sets `performance_decay`."""

        n_samples: int = 500
        corruptions: tuple[str, ...] = ()
        severities: tuple[int, ...] = (1, 2, 3, 4, 5)
        decay_threshold: float = 0.1

        def __post_init__(self) -> None:
            from workbench.suites.corruptions.functional import CORRUPTIONS

            check_positive_int("n_samples", self.n_samples)
            check_probability("decay_threshold", self.decay_threshold, open_low=True, open_high=True)
            corr = check_name_list("corruptions", self.corruptions)
            for c in corr:
                if c not in CORRUPTIONS:
                    raise ConfigError(f"Unknown corruption {c!r}.{did_you_mean(c, CORRUPTIONS)} "
                                      f"Valid corruptions: {', '.join(CORRUPTIONS)}.")
            object.__setattr__(self, "corruptions", corr)
            severities = check_number_list("severities", self.severities, low=1, high=5, integer=True)
            object.__setattr__(self, "severities", tuple(sorted(set(severities))))

    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {"n_samples": 200, "severities": (1, 3, 5)},
        "full": {"n_samples": 10000, "severities": (1, 2, 3, 4, 5)},
    }

    def applicable(self, model: ModelHandle, data: Any) -> str | None:
        reason = super().applicable(model, data)
        if reason:
            return reason
        if model.output not in OUTPUTS:
            return f"suite 'corruptions' needs outputs {list(OUTPUTS)}, got {model.output!r}"
        if data.task == "classification" and model.output != "logits":
            return f"a classifier must return logits (B, K), got output {model.output!r}"
        return None

    def run(self, model: ModelHandle, data: Any, ctx: RunContext) -> Any:
        from workbench.suites.corruptions.functional import corrupt, corruptions_for
        from workbench.torch_utils import derive_seed

        reason = self.applicable(model, data)
        if reason:
            return ctx.skip(reason)
        p = self.params
        n = ctx.limit(len(data.test), p.n_samples)
        order = ctx.sample_rows(len(data.test), n, 17)
        test = data.test.subset(order)
        train = data.train.subset(ctx.sample_rows(len(data.train), min(len(data.train), n), 23))
        valid = corruptions_for(data.modality)
        names = [c for c in (p.corruptions or valid) if c in valid]
        skipped = [c for c in p.corruptions if c not in valid]
        if skipped:
            ctx.log(f"corruptions: {skipped} do not apply to modality {data.modality!r}; skipped")
        score = _Scorer(model, data.task, ctx.batch_size)
        train_loss, _ = score(train.x, train.y)
        clean_loss, clean_score = score(test.x, test.y)
        context = _context(data)
        classification = data.task == "classification"
        metrics: list[MetricRecord] = []
        rows: list[dict[str, Any]] = []
        per_set: list[np.ndarray] = []
        sets = [("none", 0, test.x)] + [
            (name, s, corrupt(test.x, name, s, generator=torch.Generator().manual_seed(
                derive_seed(ctx.seed, "corruption", name, str(s))), **context))
            for name in names for s in p.severities]
        for name, s, xs in sets:
            tags = {"corruption": name, "severity": s}
            loss, sc = (clean_loss, clean_score) if name == "none" else score(xs, test.y)
            gap_seed = derive_seed(ctx.seed, "gap", name, str(s))
            gap, gap_ci = float(loss.mean() - train_loss.mean()), _gap_ci(loss, train_loss, gap_seed)
            row: dict[str, Any] = {"corruption": name, "severity": s, "n": len(loss), "loss": float(loss.mean()),
                                   "generalization_gap": gap}
            if classification:
                metrics.append(_fraction("corrupted_accuracy", sc, tags))
                row["accuracy"] = float(sc.mean())
                row["ci"] = list(_wilson(int(sc.sum()), len(sc)) or [])
                gap_unit = "nats"
            else:
                metrics += _mse_rows(sc, clean_score, tags, derive_seed(ctx.seed, "mse", name, str(s)))
                row["mse"] = float(sc.mean())
                gap_unit = "squared target units"
            metrics.append(MetricRecord(name="generalization_gap", value=gap, higher_is_better=False, unit=gap_unit,
                                        n=len(loss), ci=gap_ci, tags=tags))
            if name != "none":
                per_set.append(sc)
                change = _relative_change(float(clean_score.mean()), float(sc.mean()), classification)
                row["relative_drop" if classification else "relative_increase"] = change
                metrics.append(_decay(change, p.decay_threshold, len(loss), tags, classification))
            rows.append(row)
        metrics += _mean_over_sets(per_set, classification, names, p.severities, derive_seed(ctx.seed, "mean"))
        ctx.save_artifact("corruptions", rows)
        if per_set:
            ctx.save_artifact("per_example", {"example_id": order.numpy(), "mean_over_corruptions": np.mean(per_set, axis=0)})
        ctx.save_artifact("corruptions_summary", {"task": data.task, "modality": data.modality, "n": n,
                                                  "corruptions": names, "severities": list(p.severities)})
        return ctx.result(metrics, config=self.config())

    @classmethod
    def per_example(cls, result: dict[str, Any], run_dir: Path) -> dict[str, np.ndarray]:
        """`mean_corrupted_accuracy` / `mean_corrupted_mse`: per test example, its mean over
        every (corruption, severity) set of correctness (0/1) or squared error."""
        try:
            data = load_artifact(result, run_dir, "per_example", ".npz")
            summary = load_artifact(result, run_dir, "corruptions_summary", ".json") or {}
        except (OSError, ValueError):
            return {}
        if not data or "mean_over_corruptions" not in data:
            return {}
        name = "mean_corrupted_accuracy" if summary.get("task") == "classification" else "mean_corrupted_mse"
        return {name: data["mean_over_corruptions"].astype(float), "example_id": data["example_id"]}

    def cost(self, model: ModelHandle, data: Any, ctx: RunContext) -> list:
        from workbench.suites.corruptions.cost import corruptions_cost

        return corruptions_cost(self.params, model, data, ctx)

    @classmethod
    def figures(cls, result: dict[str, Any], run_dir: Path) -> list[tuple[str, Any]]:
        from workbench.suites.corruptions.figures import corruption_figures

        return corruption_figures(result, Path(run_dir))


# ---------------------------------------------------------------------- helpers


class _Scorer:
    """(per-example loss (N,), per-example score (N,)) of the model on (x, y): cross-entropy
    and correctness (0/1) for classifiers; squared error for both for regressors (the mean
    column of a mean+log-variance head). Evaluated in eval mode, the model's flags restored."""

    def __init__(self, model: ModelHandle, task: str, batch_size: int) -> None:
        self.model, self.task, self.batch_size = model, task, batch_size

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        import torch.nn.functional as F

        from workbench.torch_utils import frozen_eval, predict

        with frozen_eval(self.model.module):
            out = predict(self.model.module, x, batch_size=self.batch_size).float()
        if self.task == "classification":
            loss = F.cross_entropy(out, y.cpu(), reduction="none").double().numpy()
            return loss, (out.argmax(1) == y.cpu()).double().numpy()
        mean = out[:, 0] if self.model.output == "mean_logvar" else out.reshape(-1)
        se = (mean.double() - y.cpu().double().reshape(-1)).pow(2).numpy()
        return se, se


def _context(data: Any) -> dict[str, Any]:
    if data.modality == "image":
        return {"bounds": tuple(data.bounds) if data.bounds else None}
    if data.modality == "tabular":
        return {"fill": data.train.x.float().mean(dim=0)}
    return {"vocab_size": data.vocab_size,
            "pad_id": int(data.ground_truth.get("pad_id", 0)) if data.ground_truth else 0}


def _wilson(k: int, n: int) -> tuple[float, float] | None:
    # the one proportion interval of workbench.stats (Clopper-Pearson, see its docstring)
    from workbench.stats import proportion_ci

    return proportion_ci(k, n) if n > 0 else None


def _fraction(name: str, correct: np.ndarray, tags: dict[str, Any]) -> MetricRecord:
    n, k = int(correct.size), int(correct.sum())
    if n == 0:
        return MetricRecord.unavailable(name, "no examples", higher_is_better=True, unit="fraction", n=0, tags=tags)
    from workbench.stats import PROPORTION_METHOD

    return MetricRecord(name=name, value=k / n, higher_is_better=True, unit="fraction", n=n, ci=_wilson(k, n),
                        tags={**tags, "ci_method": PROPORTION_METHOD})


def _mse_rows(se: np.ndarray, clean_se: np.ndarray, tags: dict[str, Any], seed: int) -> list[MetricRecord]:
    """`corrupted_mse` (bootstrap CI) and `mse_change` = corrupted - clean MSE on the same
    examples (paired bootstrap CI of the per-example differences)."""
    from workbench.stats import bootstrap_mean_ci

    out = [MetricRecord(name="corrupted_mse", value=float(se.mean()), higher_is_better=False,
                        unit="squared target units", n=int(se.size), ci=bootstrap_mean_ci(se, seed=seed), tags=tags)]
    if tags["corruption"] != "none":
        d = se - clean_se
        out.append(MetricRecord(name="mse_change", value=float(d.mean()), higher_is_better=False,
                                unit="squared target units", n=int(d.size), ci=bootstrap_mean_ci(d, seed=seed + 1),
                                tags=tags))
    return out


def _relative_change(clean: float, corrupted: float, classification: bool) -> float:
    """Relative accuracy drop (clean - corrupted) / clean, or relative MSE rise
    (corrupted - clean) / clean; nan when the clean value is 0."""
    if clean <= 0:
        return float("nan")
    return (clean - corrupted) / clean if classification else (corrupted - clean) / clean


def _decay(change: float, threshold: float, n: int, tags: dict[str, Any], classification: bool) -> MetricRecord:
    key = "relative_drop" if classification else "relative_increase"
    if not math.isfinite(change):
        why = "clean accuracy is 0: no relative drop" if classification else "clean MSE is 0: no relative increase"
        return MetricRecord.unavailable("performance_decay", why, higher_is_better=False, unit="flag", tags=tags)
    return MetricRecord(name="performance_decay", value=float(change > threshold), higher_is_better=False, unit="flag",
                        n=n, tags={**tags, "threshold": threshold, key: round(change, 4)})


def _mean_over_sets(per_set: list[np.ndarray], classification: bool, names: list[str], severities: tuple[int, ...],
                    seed: int) -> list[MetricRecord]:
    """The headline: accuracy (or MSE) averaged over every corruption and severity (as
    ImageNet-C's mean corruption accuracy), CI by a bootstrap over test examples of each
    example's mean over the sets."""
    from workbench.stats import bootstrap_mean_ci

    name = "mean_corrupted_accuracy" if classification else "mean_corrupted_mse"
    unit = "fraction" if classification else "squared target units"
    tags = {"corruptions": "+".join(names), "severities": "+".join(map(str, severities))}
    if not per_set:
        return [MetricRecord.unavailable(name, "no corruption applies to this modality", higher_is_better=classification,
                                         unit=unit, tags=tags)]
    per_example = np.mean(per_set, axis=0)
    return [MetricRecord(name=name, value=float(per_example.mean()), higher_is_better=classification, unit=unit,
                         n=int(per_example.size), ci=bootstrap_mean_ci(per_example, seed=seed), tags=tags)]


def _gap_ci(test_loss: np.ndarray, train_loss: np.ndarray, seed: int, n_boot: int = 1000) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(test_loss) - mean(train_loss), resampling both
    (independent) samples, through the one memory-bounded bootstrap of workbench.stats."""
    from workbench.stats import bootstrap_mean_diff_ci

    return bootstrap_mean_diff_ci(test_loss, train_loss, n_boot=n_boot, seed=seed)
