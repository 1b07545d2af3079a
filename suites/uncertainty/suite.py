"""The uncertainty suite: MC dropout, deep ensembles, temperature scaling, calibration,
the aleatoric/epistemic decomposition, selective prediction and OOD detection.

Thin orchestration over `functional.py` (the maths) and `ensemble.py` (sampling);
see README.md for definitions, metrics and artifacts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from workbench.suites.uncertainty import functional as F
from workbench.suites.uncertainty.ensemble import DeepEnsemble, mc_dropout_layers, mc_dropout_predict
from workbench.data.base import Dataset, Split
from workbench.errors import (ConfigError, ModelError, check_name_list, check_number, check_positive_int,
                             did_you_mean)
from workbench.records import MetricRecord, SuiteResult
from workbench.stats import PROPORTION_METHOD, bootstrap_mean_ci, proportion_ci
from workbench.suite import ModelHandle, RunContext, Suite
from workbench.torch_utils import frozen_eval, predict

METHODS: tuple[str, ...] = ("single", "mc_dropout", "ensemble")
ENSEMBLE_EVAL: tuple[str, ...] = ("auto", "vmap", "loop")
# OOD input sets and the modalities they apply to (see README "OOD sets").
OOD_SETS: dict[str, tuple[str, ...]] = {
    "gaussian_noise": ("image",),
    "uniform_noise": ("image", "tabular"),
    "scaled_features": ("tabular",),
    "random_tokens": ("tokens",),
}
SCALED_FEATURES_FACTOR = 5.0
GAUSSIAN_NOISE_STD = 0.5  # as a fraction of the input range
COVERAGE_LEVELS = tuple(round(0.05 * i, 2) for i in range(1, 20)) + (0.99,)
_SEP = "__"  # artifact keys are "{method}__{quantity}"


class UncertaintySuite(Suite):
    name: ClassVar[str] = "uncertainty"
    description: ClassVar[str] = (
        "MC dropout, deep ensembles and temperature scaling; NLL, Brier, ECE (with the ECE of a perfectly "
        "calibrated model at the same n), aleatoric/epistemic decomposition, risk-coverage, OOD detection."
    )
    tasks: ClassVar[frozenset[str]] = frozenset({"classification", "regression"})

    @dataclass(frozen=True, kw_only=True)
    class Params:
        """mc_samples: MC-dropout passes T; ensemble_size: members M (member 0 is the handed
        model when it can be one); ece_bins: bins of both ECE variants; n_boot: bootstrap
        resamples for CIs; n_calibrated_sims: simulations for `ece_perfectly_calibrated`;
        ood: OOD sets to try (those that do not fit the data's modality are skipped);
        max_test: cap on test (and validation) examples; interval_level: nominal coverage of
        the regression predictive interval; methods: which of single, mc_dropout, ensemble run;
        ensemble_eval: "auto" (vmap on CUDA, member loop on CPU, where it is faster), "vmap", "loop"."""

        mc_samples: int = 20
        ensemble_size: int = 5
        ece_bins: int = 15
        n_boot: int = 1000
        n_calibrated_sims: int = 1000
        ood: tuple[str, ...] = tuple(OOD_SETS)
        max_test: int | None = None
        interval_level: float = 0.9
        methods: tuple[str, ...] = METHODS
        ensemble_eval: str = "auto"

        def __post_init__(self) -> None:
            for key in ("mc_samples", "ensemble_size"):
                check_positive_int(key, getattr(self, key))
                if getattr(self, key) < 2:
                    raise ConfigError(f"Expected `{key}` to be an int >= 2 (a spread needs two samples), got {getattr(self, key)}.")
            check_positive_int("ece_bins", self.ece_bins)
            check_positive_int("n_boot", self.n_boot)
            check_positive_int("n_calibrated_sims", self.n_calibrated_sims)
            if self.max_test is not None:
                check_positive_int("max_test", self.max_test)
            check_number("interval_level", self.interval_level, low=0, high=1, low_open=True, high_open=True)
            for key, valid in (("ood", tuple(OOD_SETS)), ("methods", METHODS)):
                values = check_name_list(key, getattr(self, key))
                for v in values:
                    if v not in valid:
                        raise ConfigError(
                            f"Unknown {key[:-1] if key == 'methods' else 'OOD set'} {v!r} in `{key}`.{did_you_mean(v, valid)} "
                            f"Valid: {', '.join(valid)}."
                        )
                object.__setattr__(self, key, values)
            if self.ensemble_eval not in ENSEMBLE_EVAL:
                raise ConfigError(
                    f"Expected `ensemble_eval` in {list(ENSEMBLE_EVAL)}, got {self.ensemble_eval!r}."
                    f"{did_you_mean(str(self.ensemble_eval), ENSEMBLE_EVAL)}"
                )
            if not self.methods:
                raise ConfigError(f"Expected at least one of {list(METHODS)} in `methods`, got none.")

    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {"mc_samples": 10, "ensemble_size": 3, "n_boot": 200, "n_calibrated_sims": 200, "max_test": 500},
        "full": {"mc_samples": 50, "ensemble_size": 5, "n_boot": 1000, "n_calibrated_sims": 1000, "max_test": None},
    }

    # ------------------------------------------------------------------ run
    def run(self, model: ModelHandle, data: Dataset, ctx: RunContext) -> SuiteResult:
        reason = self.applicable(model, data)
        if reason:
            return ctx.skip(reason)
        p = self.params
        n_test = ctx.limit(len(data.test), p.max_test)
        n_val = ctx.limit(len(data.val), p.max_test)
        if n_test < 2 or n_val < 2:
            return ctx.skip(f"needs at least 2 test and 2 validation examples, got {n_test} and {n_val}")
        test = data.test if n_test >= len(data.test) else data.test.subset(ctx.sample_rows(len(data.test), n_test, 101))
        val = data.val if n_val >= len(data.val) else data.val.subset(ctx.sample_rows(len(data.val), n_val, 102))
        run = _Run(self, model, data, ctx, test, val)
        if data.task == "classification":
            metrics = run.classification()
        else:
            metrics = run.regression()
        return ctx.result(metrics, config={**self.config(), **run.info})

    # Headline: calibration of the single model as trained (no recalibration, uniform bins);
    # ensembles, MC dropout and temperature-scaled rows stay in the full table.
    headline_metrics: ClassVar[tuple[str, ...]] = ("ece", "nll", "brier", "interval_coverage", "ensemble_weaker_members")

    @classmethod
    def is_headline(cls, metric: dict[str, Any]) -> bool:
        tags = metric.get("tags") or {}
        if metric.get("name") == "ensemble_weaker_members":  # the ensemble's own row (0 or a warning)
            return True
        return (super().is_headline(metric) and tags.get("calibration", "none") == "none"
                and tags.get("binning", "uniform") == "uniform" and tags.get("method", "single") == "single")

    def cost(self, model: ModelHandle, data: Dataset, ctx: RunContext) -> list:
        from workbench.suites.uncertainty.cost import uncertainty_cost
        return uncertainty_cost(self.params, model, data, ctx)

    @classmethod
    def per_example(cls, result: dict[str, Any], run_dir: Path) -> dict[str, np.ndarray]:
        """Per-example values of the headline rows (single model, uncalibrated) for paired tests:
        nll, brier (classification); nll, interval hits averaging to interval_coverage (regression)."""
        from workbench.suite import load_artifact
        try:
            arrays = load_artifact(result, run_dir, "per_example", ".npz") or {}
        except (OSError, ValueError):
            return {}
        wanted = {"nll": f"single{_SEP}nll{_SEP}none", "brier": f"single{_SEP}brier{_SEP}none",
                  "interval_coverage": f"single{_SEP}interval_hits"}
        return {name: np.asarray(arrays[key], dtype=np.float64) for name, key in wanted.items() if key in arrays}

    @classmethod
    def figures(cls, result: dict[str, Any], run_dir: Path) -> list[tuple[str, Any]]:
        from workbench.suites.uncertainty.figures import figures

        return figures(result, run_dir)


def make_ood(name: str, x: torch.Tensor, data: Dataset, gen: torch.Generator) -> torch.Tensor:
    """An OOD input set the size of `x` (the test inputs):
    gaussian_noise   images + N(0, (0.5 (hi - lo))^2) noise, clipped to the bounds (corrupted digits)
    uniform_noise    images: uniform in the bounds; tabular: uniform in each feature's training [min, max]
    scaled_features  tabular test features times 5 (far outside the training range)
    random_tokens    uniformly random token ids of the same length"""
    if name not in OOD_SETS:
        raise ConfigError(f"Unknown OOD set {name!r}.{did_you_mean(name, OOD_SETS)} Valid: {', '.join(OOD_SETS)}.")
    if data.modality not in OOD_SETS[name]:
        raise ConfigError(f"OOD set {name!r} applies to {list(OOD_SETS[name])} data, not {data.modality!r}.")
    if name in ("gaussian_noise", "uniform_noise") and data.modality == "image":
        lo, hi = data.bounds if data.bounds is not None else (float(data.train.x.min()), float(data.train.x.max()))
        if name == "uniform_noise":
            return lo + (hi - lo) * torch.rand(x.shape, generator=gen, dtype=x.dtype)
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype) * GAUSSIAN_NOISE_STD * (hi - lo)
        return (x + noise).clamp(lo, hi)
    if name == "uniform_noise":
        lo, hi = data.train.x.min(0).values, data.train.x.max(0).values
        return lo + (hi - lo) * torch.rand(x.shape, generator=gen, dtype=x.dtype)
    if name == "scaled_features":
        return x * SCALED_FEATURES_FACTOR
    if data.vocab_size is None:
        raise ConfigError(f"OOD set 'random_tokens' needs the dataset's vocab_size; {data.name!r} has none.")
    return torch.randint(0, int(data.vocab_size), x.shape, generator=gen, dtype=x.dtype)


class _Run:
    """State of one suite run: predictions per method on [test | val | ood...] and the records."""

    def __init__(self, suite: UncertaintySuite, model: ModelHandle, data: Dataset, ctx: RunContext, test: Split, val: Split) -> None:
        self.p = suite.params
        self.model, self.data, self.ctx = model, data, ctx
        self.test, self.val = test, val
        self.metrics: list[MetricRecord] = []
        self.per_example: dict[str, np.ndarray] = {}
        self.skipped: dict[str, str] = {}
        self.info: dict[str, Any] = {"n_test": len(test), "n_val": len(val)}
        self.ood: dict[str, torch.Tensor] = {}
        not_applicable = []
        for name in self.p.ood:
            if data.modality in OOD_SETS[name]:
                try:  # seeds keyed by the set's name, not by which other sets are configured
                    self.ood[name] = make_ood(name, test.x, data, ctx.generator(200 + list(OOD_SETS).index(name)))
                except ConfigError as exc:
                    not_applicable.append(f"{name}: {exc}")
            else:
                not_applicable.append(name)
        self.info["ood_sets"] = list(self.ood)
        self.info["ood_not_applicable"] = not_applicable
        parts = [("test", test.x), ("val", val.x), *[(f"ood:{k}", v) for k, v in self.ood.items()]]
        self.x_all = torch.cat([x for _, x in parts])
        self.slices: dict[str, slice] = {}
        start = 0
        for key, x in parts:
            self.slices[key] = slice(start, start + x.shape[0])
            start += x.shape[0]

    # ---------------------------------------------------------------- helpers
    def add(self, name: str, value: float | None, *, reason: str | None = None, **kw: Any) -> None:
        if value is not None and not math.isfinite(float(value)):
            reason, value = reason or f"non-finite value ({value})", None
        if value is None and not reason:
            reason = "not measurable here"
        self.metrics.append(MetricRecord(name=name, value=value, reason=reason if value is None else None, **kw))

    def mean_metric(self, name: str, values: torch.Tensor, *, unit: str, hib: bool | None, tags: dict, offset: int = 0) -> None:
        v = values.detach().double().numpy()
        from workbench.stats import BOOTSTRAP, DEGENERATE_BOOTSTRAP, ci_is_missing

        ci = bootstrap_mean_ci(v, n_boot=self.p.n_boot, seed=self.ctx.seed + offset)
        tags = {**tags, "ci_method": BOOTSTRAP}
        if ci_is_missing(ci) and v.size and math.isfinite(float(v.mean())):
            # a degenerate bootstrap is not certainty: the value stays, the reason says why no CI
            self.metrics.append(MetricRecord(name=name, value=float(v.mean()), reason=DEGENERATE_BOOTSTRAP,
                                             higher_is_better=hib, unit=unit, n=v.size, tags=tags))
            return
        self.add(name, float(v.mean()), higher_is_better=hib, unit=unit, n=v.size, ci=ci, tags=tags)

    def part(self, out: torch.Tensor, key: str) -> torch.Tensor:
        return out[:, self.slices[key]]

    def _check_output(self, out: torch.Tensor, kind: str) -> None:
        n = self.x_all.shape[0]
        if kind == "logits":
            k = self.data.num_classes
            if out.ndim != 3 or out.shape[1] != n or (k is not None and out.shape[2] != k):
                raise ModelError(f"Expected logits of shape (S, {n}, {k}), got {tuple(out.shape)}.")
        elif kind == "mean_logvar":
            if out.ndim != 3 or out.shape[2] != 2:
                raise ModelError(f"Expected mean/log-variance outputs of shape (S, {n}, 2), got {tuple(out.shape)}.")
        elif kind == "mean" and out.reshape(out.shape[0], n, -1).shape[2] != 1:
            raise ModelError(f"Expected mean outputs of shape (S, {n}), got {tuple(out.shape)}.")
        if not bool(torch.isfinite(out).all()):
            raise ModelError("The model returned non-finite outputs.")

    # ---------------------------------------------------------------- sampling
    def sample_single(self) -> torch.Tensor:
        with frozen_eval(self.model.module):
            out = predict(self.model.module, self.x_all, batch_size=self.ctx.batch_size, device=self.ctx.device)
        return out.unsqueeze(0)

    def sample_mc(self, module: torch.nn.Module) -> torch.Tensor | str:
        layers = mc_dropout_layers(module)
        self.info["mc_dropout_layers"] = layers
        if not layers:
            return f"{type(module).__name__} has no dropout layer with p > 0, so MC dropout cannot sample"
        total = self.p.mc_samples * int(self.x_all.shape[0])
        with self.ctx.progress(total, "MC dropout", unit="sampled predictions") as bar:
            out = mc_dropout_predict(module, self.x_all, samples=self.p.mc_samples, seed=self.ctx.seed,
                                     device=self.ctx.device, max_rows=self.ctx.batch_size, progress=bar)
        if float((out.amax(0) - out.amin(0)).abs().max()) == 0.0:
            return (
                f"dropout layers {layers} had no effect on the outputs (dropout applied functionally or inside a "
                "fused kernel cannot be switched on from outside)"
            )
        return out

    def train_members(self, heteroscedastic: bool) -> list[torch.nn.Module] | str:
        """Ensemble members: the handed model (when it has the right head) plus siblings from
        `model.trainer(seed=...)`, seeds base+1, base+2, ... (base = the handed model's seed)."""
        trainer = self.model.trainer
        if trainer is None:
            return "the model has no trainer (a user model cannot be retrained), so no deep ensemble"
        base = int((self.model.train_config or {}).get("seed", 0) or 0)
        use_handed = not heteroscedastic or self.model.output == "mean_logvar"
        members: list[torch.nn.Module] = [self.model.module] if use_handed else []
        seeds: list[int | str] = ["handed"] if use_handed else []
        overrides = {"heteroscedastic": True} if heteroscedastic and self.model.output != "mean_logvar" else {}
        first = base + 1 if use_handed else base
        n_train = self.p.ensemble_size - len(members)
        with self.ctx.progress(n_train, "ensemble", unit="members trained") as bar:
            for seed in range(first, first + n_train):
                try:
                    m = trainer(seed=seed, **overrides)
                except Exception as exc:  # a sibling that cannot be trained must not sink the suite
                    extra = f" {overrides}" if overrides else ""
                    return f"training ensemble member with seed {seed}{extra} failed: {type(exc).__name__}: {exc}"
                if m is None:
                    return "the model's trainer returned no module, so no deep ensemble"
                members.append(m)
                seeds.append(seed)
                bar.update(note=f"seed {seed}")
        self.info["ensemble_member_seeds"] = seeds
        if overrides:
            self.info["ensemble_members"] = "heteroscedastic siblings (trainer(heteroscedastic=True))"
        return members

    def sample_ensemble(self, members: list[torch.nn.Module]) -> torch.Tensor:
        ens = DeepEnsemble(members, device=self.ctx.device, vectorize=self.p.ensemble_eval)
        out = ens.predict(self.x_all, max_rows=self.ctx.batch_size)
        self.info["ensemble_eval_path"] = ens.path
        self.info["ensemble_fallback_reason"] = ens.fallback_reason
        return out

    def _guarded(self, method: str, fn: Any, *args: Any) -> torch.Tensor | None:
        try:
            out = fn(*args)
        except ModelError as exc:
            out = str(exc)
        if isinstance(out, str):
            self.skipped[method] = out
            return None
        return out

    # ---------------------------------------------------------------- classification
    def classification(self) -> list[MetricRecord]:
        outputs: dict[str, torch.Tensor] = {}
        for method in self.p.methods:
            if method == "single":
                out = self._guarded(method, self.sample_single)
            elif method == "mc_dropout":
                out = self._guarded(method, self.sample_mc, self.model.module)
            else:
                members = self.train_members(heteroscedastic=False)
                out = self._guarded(method, lambda: members if isinstance(members, str) else self.sample_ensemble(members))
            if out is not None:
                self._check_output(out, "logits")
                outputs[method] = out
        y_test, y_val = self.test.y.long(), self.val.y.long()
        reliability: dict[str, Any] = {}
        risk: dict[str, np.ndarray] = {}
        roc: dict[str, Any] = {}
        temperatures: dict[str, float] = {}
        self.per_example["y"] = y_test.numpy()
        for method, out in outputs.items():
            mi = METHODS.index(method)  # seeds depend on the method, not on which others ran
            tags = {"method": method}
            test_logits, val_logits = self.part(out, "test"), self.part(out, "val")
            logp = F.predictive_log_probs(test_logits)
            correct = (logp.argmax(1) == y_test)
            k = int(correct.sum())
            self.add("accuracy", k / len(y_test), higher_is_better=True, unit="fraction", n=len(y_test),
                     ci=proportion_ci(k, len(y_test)), tags={**tags, "ci_method": PROPORTION_METHOD})
            temperature = F.fit_temperature(F.predictive_log_probs(val_logits), y_val)
            temperatures[method] = temperature
            self.add("temperature", temperature, higher_is_better=None, unit="dimensionless", n=len(y_val),
                     tags={**tags, "fitted_on": "val"})
            reliability[method] = {}
            for calibration, lp in (("none", logp), ("temperature", F.apply_temperature(logp, temperature))):
                ctags = {**tags, "calibration": calibration}
                probs = lp.exp()
                conf = probs.max(1).values
                nll, brier = F.negative_log_likelihood(lp, y_test), F.brier_score(probs, y_test)
                self.mean_metric("nll", nll, unit="nats", hib=False, tags=ctags, offset=mi)
                self.mean_metric("brier", brier, unit="score [0, 2]", hib=False, tags=ctags, offset=mi)
                self.per_example[f"{method}{_SEP}nll{_SEP}{calibration}"] = nll.detach().double().numpy()
                self.per_example[f"{method}{_SEP}brier{_SEP}{calibration}"] = brier.detach().double().numpy()
                reliability[method][calibration] = self.calibration_metrics(conf, correct, ctags, offset=mi)
                cov, rsk = F.risk_coverage(conf, (~correct).double())
                self.add("aurc", float(rsk.mean()), higher_is_better=False, unit="error rate", n=len(y_test),
                         tags={**ctags, "score": "max_prob"})
                risk[f"{method}{_SEP}{calibration}{_SEP}coverage"] = cov.numpy()
                risk[f"{method}{_SEP}{calibration}{_SEP}risk"] = rsk.numpy()
                self.per_example[f"{method}{_SEP}confidence{_SEP}{calibration}"] = conf.numpy()
            self.per_example[f"{method}{_SEP}correct"] = correct.numpy()
            scores_for = self.classification_scores(method, test_logits)
            roc[method] = self.ood_metrics(method, out, scores_for)
        if "ensemble" in outputs:  # unequal members (a user checkpoint's siblings) are counted and named
            from workbench.suites.uncertainty.members import member_records

            self.metrics += member_records(self.part(outputs["ensemble"], "test"), y_test,
                                           self.info.get("ensemble_member_seeds", []))
        self.null_for_skipped(("nll", "ece", "aleatoric", "epistemic", "total"))
        self.info["temperature"] = temperatures
        self.info["skipped_methods"] = dict(self.skipped)
        self.ctx.save_artifact("per_example", self.per_example)
        self.ctx.save_artifact("reliability", {"n_bins": self.p.ece_bins, "temperature": temperatures, "methods": reliability})
        if risk:
            self.ctx.save_artifact("risk_coverage", risk)
        self.ctx.save_artifact("ood_roc", _by_ood(roc))
        return self.metrics

    def classification_scores(self, method: str, test_logits: torch.Tensor) -> Any:
        """Records the decomposition (sampling methods) and returns a function giving the
        uncertainty scores (higher = more uncertain) of any slice of the outputs."""
        if method != "single":
            dec = F.classification_decomposition(test_logits)
            for qi, q in enumerate(("total", "aleatoric", "epistemic")):
                values = getattr(dec, q)
                self.per_example[f"{method}{_SEP}{q}"] = values.numpy()
                self.mean_metric(q, values, unit="nats", hib=None, tags={"method": method}, offset=10 + qi)

        def scores(logits: torch.Tensor) -> dict[str, torch.Tensor]:
            probs = F.predictive_log_probs(logits).exp()
            out = {"max_prob": 1.0 - probs.max(1).values, "entropy": F.entropy(probs)}
            if method != "single":
                out["mutual_information"] = F.classification_decomposition(logits).epistemic
            return out

        return scores

    def calibration_metrics(self, conf: torch.Tensor, correct: torch.Tensor, tags: dict, offset: int) -> dict:
        p, seed = self.p, self.ctx.seed + offset
        n = conf.numel()
        diagrams = {}
        for binning in F.BINNINGS:
            btags = {**tags, "binning": binning, "n_bins": p.ece_bins}
            ece = float(F.expected_calibration_error(conf, correct, n_bins=p.ece_bins, binning=binning))
            boots = F.ece_bootstrap(conf, correct, n_bins=p.ece_bins, binning=binning, n_boot=p.n_boot, seed=seed)
            ci = basic_bootstrap_ci(ece, boots.numpy())
            self.add("ece", ece, higher_is_better=False, unit="probability", n=n, ci=ci, tags=btags)
            sims = F.ece_perfectly_calibrated(conf, n_bins=p.ece_bins, binning=binning, n_sim=p.n_calibrated_sims, seed=seed)
            for stat, value in (("mean", float(sims.mean())), ("q95", float(torch.quantile(sims, 0.95)))):
                self.add("ece_perfectly_calibrated", value, higher_is_better=None, unit="probability", n=n,
                         tags={**btags, "statistic": stat, "simulations": p.n_calibrated_sims})
            mce = float(F.maximum_calibration_error(conf, correct, n_bins=p.ece_bins, binning=binning))
            self.add("mce", mce, higher_is_better=False, unit="probability", n=n, tags=btags)
            diagrams[binning] = F.reliability_diagram(conf, correct, n_bins=p.ece_bins, binning=binning)
        return diagrams

    def ood_metrics(self, method: str, out: torch.Tensor, scores_for: Any) -> dict[str, Any]:
        """AUROC (with a stratified bootstrap CI) and AUPR of each score, OOD = positive."""
        roc: dict[str, Any] = {}
        s_in = scores_for(self.part(out, "test"))
        for ood in self.ood:
            oi = list(OOD_SETS).index(ood)
            s_out = scores_for(self.part(out, f"ood:{ood}"))
            roc[ood] = {}
            for score in s_in:
                tags = {"method": method, "ood": ood, "score": score}
                det = F.ood_detection(s_in[score], s_out[score])
                n = s_in[score].numel() + s_out[score].numel()
                boots = F.auroc_bootstrap(s_in[score], s_out[score], n_boot=self.p.n_boot, seed=self.ctx.seed + 30 + oi)
                ci = tuple(np.quantile(boots.numpy(), [0.025, 0.975]).tolist())
                self.add("ood_auroc", det["auroc"], higher_is_better=True, unit="score [0, 1]", n=n, ci=ci, tags=tags)
                self.add("ood_aupr", det["aupr"], higher_is_better=True, unit="score [0, 1]", n=n, tags=tags)
                roc[ood][score] = det
        return roc

    def null_for_skipped(self, names: tuple[str, ...]) -> None:
        for method, reason in self.skipped.items():
            for name in names:
                if method == "single" and name in ("aleatoric", "epistemic", "total"):
                    continue
                self.add(name, None, reason=reason, tags={"method": method})

    # ---------------------------------------------------------------- regression
    def regression(self) -> list[MetricRecord]:
        handed_kind = self.model.output
        if handed_kind not in ("mean", "mean_logvar"):
            raise ModelError(f"Expected a regression model with output 'mean' or 'mean_logvar', got {handed_kind!r}.")
        members: list[torch.nn.Module] | str | None = None
        if "ensemble" in self.p.methods or ("mc_dropout" in self.p.methods and handed_kind == "mean"):
            members = self.train_members(heteroscedastic=True)
        outputs: dict[str, tuple[torch.Tensor, str]] = {}
        for method in self.p.methods:
            if method == "single":
                out = self._guarded(method, self.sample_single)
                kind = handed_kind
            elif method == "mc_dropout":
                module, kind = self.model.module, handed_kind
                if handed_kind == "mean" and not isinstance(members, str) and members:
                    module, kind = members[0], "mean_logvar"
                    self.info["mc_dropout_model"] = "heteroscedastic sibling (ensemble member 0)"
                else:
                    self.info["mc_dropout_model"] = "handed model"
                out = self._guarded(method, self.sample_mc, module)
            else:
                kind = "mean_logvar"
                out = self._guarded(method, lambda: members if isinstance(members, str) else self.sample_ensemble(members))
            if out is not None:
                self._check_output(out, kind)
                outputs[method] = (out, kind)
        y = self.test.y.double()
        self.per_example["y"] = y.numpy()
        risk: dict[str, np.ndarray] = {}
        roc: dict[str, Any] = {}
        coverage_curves: dict[str, Any] = {}
        for method, (out, kind) in outputs.items():
            mi = METHODS.index(method)
            tags = {"method": method}
            means, variances = _gaussian(self.part(out, "test"), kind)
            dec = F.regression_decomposition(means, variances)
            mean = means.mean(0)
            has_var = variances is not None
            self.per_example[f"{method}{_SEP}mean"] = mean.numpy()
            no_var = f"{method}: the model predicts a mean only (output 'mean'), so there is no aleatoric variance"
            if method != "single":
                for qi, q in enumerate(("total", "aleatoric", "epistemic")):
                    values = getattr(dec, q)
                    if q != "epistemic" and not has_var:
                        self.add(q, None, reason=no_var, tags=tags)
                        continue
                    self.per_example[f"{method}{_SEP}{q}"] = values.numpy()
                    self.mean_metric(q, values, unit="squared target units", hib=None, tags=tags, offset=10 + qi)
            elif has_var:
                self.per_example[f"{method}{_SEP}total"] = dec.total.numpy()
            if has_var:
                nll = F.gaussian_nll(mean, dec.total, y)
                self.mean_metric("nll", nll, unit="nats", hib=False,
                                 tags={**tags, "predictive": "gaussian_total_variance"}, offset=mi)
                hits = F.interval_hits(mean, dec.total, y, self.p.interval_level)
                self.per_example[f"{method}{_SEP}nll{_SEP}none"] = nll.detach().double().numpy()
                self.per_example[f"{method}{_SEP}interval_hits"] = hits.detach().double().numpy()
                k = int(hits.sum())
                self.add("interval_coverage", k / len(y), higher_is_better=None, unit="fraction", n=len(y),
                         ci=proportion_ci(k, len(y)),
                         tags={**tags, "nominal": self.p.interval_level, "ci_method": PROPORTION_METHOD})
                coverage_curves[method] = {
                    "nominal": list(COVERAGE_LEVELS),
                    "empirical": [float(F.interval_hits(mean, dec.total, y, lvl).double().mean()) for lvl in COVERAGE_LEVELS],
                }
            else:
                for name in ("nll", "interval_coverage"):
                    self.add(name, None, reason=no_var, tags=tags)
            score_name = "total_variance" if has_var else "epistemic_variance"
            confidence = -(dec.total if has_var else dec.epistemic)
            if method == "single" and not has_var:
                self.add("aurc", None, reason=no_var, tags=tags)
            else:
                cov, rsk = F.risk_coverage(confidence, (mean - y) ** 2)
                self.add("aurc", float(rsk.mean()), higher_is_better=False, unit="squared error", n=len(y),
                         tags={**tags, "score": score_name})
                risk[f"{method}{_SEP}none{_SEP}coverage"] = cov.numpy()
                risk[f"{method}{_SEP}none{_SEP}risk"] = rsk.numpy()
            self.ground_truth_checks(method, dec, has_var)

            def scores(o: torch.Tensor, method: str = method, kind: str = kind) -> dict[str, torch.Tensor]:
                mu, var = _gaussian(o, kind)
                d = F.regression_decomposition(mu, var)
                s = {}
                if var is not None:
                    s["total_variance"] = d.total
                if method != "single":
                    s["epistemic_variance"] = d.epistemic
                    if var is not None:
                        s["aleatoric_variance"] = d.aleatoric
                return s

            if scores(self.part(out, "test")):
                roc[method] = self.ood_metrics(method, out, scores)
        self.null_for_skipped(("nll", "aleatoric", "epistemic", "total"))
        self.info["skipped_methods"] = dict(self.skipped)
        self.ctx.save_artifact("per_example", self.per_example)
        if risk:
            self.ctx.save_artifact("risk_coverage", risk)
        self.ctx.save_artifact("interval_coverage", coverage_curves)
        self.ctx.save_artifact("ood_roc", _by_ood(roc))
        return self.metrics

    def ground_truth_checks(self, method: str, dec: F.Decomposition, has_var: bool) -> None:
        """On synthetic data with known noise (test meta `noise_std`) and a region without
        training data (test meta `in_gap`): does aleatoric track sigma^2(x), is epistemic larger in the gap?"""
        meta = self.test.meta
        tags = {"method": method}
        if "noise_std" in meta and method != "single" and has_var:
            rho = F.spearman(dec.aleatoric, meta["noise_std"].double() ** 2)
            self.add("aleatoric_rank_correlation", rho, higher_is_better=True, unit="spearman rho", n=len(dec.aleatoric),
                     tags={**tags, "reference": "noise_variance"})
        if "in_gap" in meta and method != "single":
            gap = meta["in_gap"].bool()
            if 0 < int(gap.sum()) < gap.numel():
                inside = float(dec.epistemic[~gap].mean())
                ratio = float(dec.epistemic[gap].mean()) / inside if inside > 0 else float("nan")
                self.add("epistemic_gap_ratio", ratio, higher_is_better=True, unit="ratio", n=gap.numel(),
                         tags={**tags, "n_gap": int(gap.sum())})


def basic_bootstrap_ci(estimate: float, boots: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Reverse-percentile ("basic") bootstrap interval [2 t - q_hi, 2 t - q_lo], clipped to [0, 1].
    ECE is biased upwards and the ECE of a resample (which duplicates examples) more so, so the
    plain percentile interval sits above the estimate; the basic interval subtracts that bias."""
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return float(np.clip(2 * estimate - hi, 0, 1)), float(np.clip(2 * estimate - lo, 0, 1))


def _gaussian(out: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(S, N, 2) mean/log-variance -> means (S, N), variances (S, N); (S, N) or (S, N, 1) -> means, None."""
    out = out.double()
    if kind == "mean_logvar":
        return out[..., 0], out[..., 1].exp()
    return out.reshape(out.shape[0], out.shape[1]), None


def _by_ood(roc: dict[str, Any]) -> dict[str, Any]:
    """{method: {ood: {score: det}}} -> {ood: {method: {score: det}}} for the figures."""
    out: dict[str, Any] = {}
    for method, per_ood in roc.items():
        for ood, per_score in per_ood.items():
            out.setdefault(ood, {})[method] = per_score
    return out
