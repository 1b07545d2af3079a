"""The drift suite: is the evaluation input distribution shifted from the training
inputs, and would the detector see known synthetic shifts?

Drift is about inputs only, so it applies to classifiers and regressors alike (the model is
not run). It compares a train sample with the clean test sample (the headline: a real
drift between the splits) and with each corrupted copy of the test sample (synthetic shifts
from the corruptions suite's functions: the detector's power). The statistics are in
`functional.py`; see README.md (the suite card).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from workbench.errors import (ConfigError, check_number, check_number_list, check_positive_int, check_probability,
                             did_you_mean)
from workbench.records import MetricRecord
from workbench.suite import ModelHandle, RunContext, Suite


class DriftSuite(Suite):
    name: ClassVar[str] = "drift"
    description: ClassVar[str] = (
        "Input drift between training and evaluation inputs (per-feature KS with BH, PSI, a permutation-"
        "calibrated verdict), and the detector's response to synthetic corruptions."
    )
    tasks: ClassVar[frozenset[str]] = frozenset({"classification", "regression"})
    modalities: ClassVar[frozenset[str] | None] = frozenset({"image", "tabular", "tokens"})
    headline_metrics: ClassVar[tuple[str, ...]] = ("drift_detected",)

    @dataclass(frozen=True, kw_only=True)
    class Params:
        """n_samples: test points (and as many train points); shifts: corruption names used
        as synthetic shifts (empty = every one of the modality); severities: their levels."""

        n_samples: int = 500
        shifts: tuple[str, ...] = ()
        severities: tuple[int, ...] = (1, 3, 5)
        alpha: float = 0.05
        permutations: int = 200
        psi_floor: float = 0.1
        psi_bins: int = 10

        def __post_init__(self) -> None:
            from workbench.suites.corruptions.functional import CORRUPTIONS

            check_positive_int("n_samples", self.n_samples)
            check_positive_int("permutations", self.permutations)
            check_positive_int("psi_bins", self.psi_bins)
            check_probability("alpha", self.alpha, open_low=True, open_high=True)
            check_number("psi_floor", self.psi_floor, low=0)
            if not isinstance(self.shifts, (list, tuple)) or any(s not in CORRUPTIONS for s in self.shifts):
                bad = next((s for s in self.shifts if s not in CORRUPTIONS), self.shifts) \
                    if isinstance(self.shifts, (list, tuple)) else self.shifts
                raise ConfigError(f"Unknown shift {bad!r}.{did_you_mean(str(bad), CORRUPTIONS)} "
                                  f"Valid shifts (corruption names): {', '.join(CORRUPTIONS)}.")
            object.__setattr__(self, "shifts", tuple(self.shifts))
            severities = check_number_list("severities", self.severities, low=1, high=5, integer=True, allow_empty=True)
            object.__setattr__(self, "severities", tuple(sorted(set(severities))))

    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {"n_samples": 200, "severities": (1, 3, 5), "permutations": 200},
        "full": {"n_samples": 10000, "severities": (1, 2, 3, 4, 5), "permutations": 1000},
    }

    @classmethod
    def is_headline(cls, metric: dict[str, Any]) -> bool:
        """Only the real question: does the clean evaluation sample drift from training?"""
        return metric.get("name") == "drift_detected" and (metric.get("tags") or {}).get("shift") == "none"

    def run(self, model: ModelHandle, data: Any, ctx: RunContext) -> Any:
        from workbench.suites.corruptions.functional import corrupt, corruptions_for
        from workbench.suites.corruptions.suite import _context
        from workbench.suites.drift.functional import detect_drift, drift_features, permutation_null, top_token_ids
        from workbench.torch_utils import derive_seed

        reason = self.applicable(model, data)
        if reason:
            return ctx.skip(reason)
        p = self.params
        n = ctx.limit(len(data.test), p.n_samples)
        test = data.test.subset(ctx.sample_rows(len(data.test), n, 17))
        train = data.train.subset(ctx.sample_rows(len(data.train), min(len(data.train), n), 23))
        valid = corruptions_for(data.modality)
        names = [c for c in (p.shifts or valid) if c in valid]
        token_ids = top_token_ids(data.train.x, 256) if data.modality == "tokens" else None
        feats = lambda xs: drift_features(xs, data.modality, vocab_size=data.vocab_size, token_ids=token_ids)  # noqa: E731
        ref, cur = feats(train.x), feats(test.x)
        # one permutation null per model: the train sample against the clean test sample, the
        # sizes of every shifted set; valid under the null hypothesis of no drift for all of them
        null = permutation_null(ref, cur, n_permutations=p.permutations, seed=derive_seed(ctx.seed, "drift-null"),
                                bins=p.psi_bins)
        context = _context(data)
        metrics: list[MetricRecord] = []
        rows: list[dict[str, Any]] = []
        sets = [("none", 0, test.x)] + [
            (name, s, corrupt(test.x, name, s, generator=torch.Generator().manual_seed(
                derive_seed(ctx.seed, "corruption", name, str(s))), **context))
            for name in names for s in p.severities]
        for name, s, xs in sets:
            rep = detect_drift(ref, feats(xs), alpha=p.alpha, psi_floor=p.psi_floor, bins=p.psi_bins, null=null)
            kind = ("statistical+practical" if rep.drift else "none" if not rep.statistically_significant
                    else "statistical_size_unknown" if rep.drift is None else "statistical_only")
            tags = {"shift": name, "severity": s}
            metrics += [
                # None (with the verdict as reason) when KS is significant but PSI is not estimable at this n
                MetricRecord(name="drift_detected", value=None if rep.drift is None else float(rep.drift),
                             reason=rep.verdict if rep.drift is None else None, higher_is_better=False, unit="flag",
                             n=rep.n_current, tags={**tags, "significance": kind}),
                MetricRecord(name="drift_p_value", value=rep.permutation_pvalue, higher_is_better=True, unit="p-value",
                             n=rep.n_current, tags={**tags, "test": "permutation_max_ks"}),
                MetricRecord(name="drifted_features", value=float(rep.n_significant_features), higher_is_better=False,
                             unit="features", n=len(rep.ks_statistic), tags={**tags, "test": "ks_bh", "alpha": p.alpha}),
                MetricRecord(name="max_psi", value=rep.max_psi, reason=rep.psi_reason, higher_is_better=False,
                             unit="psi", n=rep.n_current, tags=tags),
                MetricRecord(name="max_psi_corrected", value=rep.max_psi_corrected, reason=rep.psi_reason,
                             higher_is_better=False, unit="psi", n=rep.n_current, tags=tags),
            ]
            rows.append({"shift": name, "severity": s, "significance": kind, **rep.to_dict()})
        ctx.save_artifact("drift", rows)
        return ctx.result(metrics, config=self.config())

    def cost(self, model: ModelHandle, data: Any, ctx: RunContext) -> list:
        """No model pass: drift compares input distributions (its permutation tests run in
        NumPy and are not part of the model-pass estimate)."""
        return []

    @classmethod
    def figures(cls, result: dict[str, Any], run_dir: Path) -> list[tuple[str, Any]]:
        from workbench.suites.drift.figures import drift_figures

        return drift_figures(result, Path(run_dir))
