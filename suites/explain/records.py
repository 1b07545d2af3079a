"""Metric records of the explain suite: one `method_coverage` per method with its
settings, then its quality scores (mean or median over the explained examples with a
bootstrap CI), and the random control of deletion/insertion with its spread."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workbench.records import MetricRecord
from workbench.suite import RunContext

from .checks import CURVE_MODES, Quality, replacement_kinds
from .config import COMPLETE_BY_CONSTRUCTION, ExplainParams
from .methods import library_tag
from .setup import MethodOutput, Setup

if TYPE_CHECKING:
    import numpy as np

# deletion: a faithful attribution makes the tracked probability fall fast (lower AUC);
# insertion: rise fast (higher AUC)
_HIGHER_IS_BETTER = {"deletion": False, "insertion": True}


def mean_record(name: str, values: "np.ndarray", ctx: RunContext, *, higher_is_better: bool | None, unit: str,
                tags: dict[str, Any], stat: str = "mean") -> MetricRecord:
    """The mean (or median, or max) of per-example `values` with its bootstrap CI; a
    degenerate bootstrap (every example equal) gives no CI and says so."""
    import numpy as np

    from workbench.stats import BOOTSTRAP, DEGENERATE_BOOTSTRAP, bootstrap_mean_ci, bootstrap_stat_ci, ci_is_missing

    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return MetricRecord.unavailable(name, "no finite per-example values (e.g. constant attributions)",
                                        higher_is_better=higher_is_better, unit=unit, n=0, tags=tags)
    reason = None
    if stat == "median":
        value = float(np.median(v))
        ci = bootstrap_stat_ci(lambda idx: float(np.median(v[idx])), v.size, seed=ctx.seed)
        tags = {**tags, "statistic": "median", "ci_method": BOOTSTRAP}
    elif stat == "max":
        value, ci = float(v.max()), None
        tags = {**tags, "statistic": "max"}
    else:
        value = float(v.mean())
        ci = bootstrap_mean_ci(v, seed=ctx.seed)
        tags = {**tags, "ci_method": BOOTSTRAP}
    if stat != "max" and ci_is_missing(ci):
        ci, reason = None, DEGENERATE_BOOTSTRAP
    return MetricRecord(name=name, value=value, reason=reason, higher_is_better=higher_is_better, unit=unit,
                        n=int(v.size), ci=ci, tags=tags)


def vs_random(method_auc: "np.ndarray", random_auc: "np.ndarray", mode: str, seed: int) -> str:
    """"better", "worse" or "not distinguishable" than the random control's expectation:
    whether the bootstrap CI of the paired per-example difference excludes 0."""
    import numpy as np

    from workbench.stats import bootstrap_mean_ci, ci_is_missing

    d = np.asarray(method_auc, dtype=np.float64) - np.asarray(random_auc, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size and np.ptp(d) <= 1e-12:  # the same difference on every example: its sign is the verdict
        lo = hi = float(d.mean()) if abs(d.mean()) > 1e-12 else 0.0
    else:
        lo, hi = bootstrap_mean_ci(d, seed=seed)
    if ci_is_missing((lo, hi)) or lo <= 0 <= hi:
        return "not distinguishable"
    below = hi < 0
    return "better" if below != _HIGHER_IS_BETTER[mode] else "worse"


def build_metrics(outputs: dict[str, MethodOutput], q: Quality, s: Setup, failed: dict[str, str],
                  ctx: RunContext, p: ExplainParams) -> list[MetricRecord]:
    import numpy as np

    recs: list[MetricRecord] = []
    if s.classification:
        base_tags: dict[str, Any] = {"target": "predicted class", "explained": p.explained_output}
    else:
        base_tags = {"target": "regression mean"}
    out_unit = "logit" if (s.classification and p.explained_output == "logit") else (
        "probability" if s.classification else "output")
    curve_unit = "probability" if s.classification else "output"
    for m in p.methods:
        tags = {"method": m, **base_tags}
        if m in failed:
            recs.append(MetricRecord.unavailable("method_coverage", failed[m], higher_is_better=True,
                                                 unit="fraction", tags=tags))
            continue
        if m == "attention":
            recs += _attention_records(s, ctx, tags)
            continue
        o = outputs.get(m)
        if o is None:
            continue
        mt = {**tags, **dict(o.tags), "library": library_tag(m)}
        # the fraction of examples explained: an example whose attributions are NaN (LIME on a
        # text with one real token) is not
        explained = np.isfinite(o.attr.reshape(s.n, -1).double().numpy()).all(1)
        recs.append(MetricRecord(name="method_coverage", value=float(explained.mean()), higher_is_better=True,
                                 unit="fraction", n=s.n, tags=mt))
        mq = q.methods.get(m)
        if mq is None:
            continue
        plain = {"method": m, **base_tags}
        if mq.completeness_gap is not None:
            gap = mq.completeness_gap
            verdict = "ok" if float(np.median(gap)) <= p.completeness_tolerance else "breaks property"
            gtags = {**mt, "reference": o.reference, "verdict": verdict, "tolerance": p.completeness_tolerance}
            if m in COMPLETE_BY_CONSTRUCTION:
                gtags["note"] = "zero by construction of the solver; its accuracy is shapley_error_bound"
            recs.append(mean_record("completeness_gap", gap, ctx, higher_is_better=False, unit="fraction",
                                    tags=gtags, stat="median"))
        if mq.error_bound is not None:
            btags = {**plain, "estimator": str(o.tags.get("estimator")),
                     "bound": "95%, worst player, from the sampler's own bootstrap (0 when exact)"}
            if o.tags.get("estimator") == "exact":  # enumeration: no sampling error, exactly
                recs.append(MetricRecord(name="shapley_error_bound", value=0.0, higher_is_better=False,
                                         unit=out_unit, n=int(np.isfinite(mq.error_bound).sum()), tags=btags))
            else:
                recs.append(mean_record("shapley_error_bound", mq.error_bound, ctx, higher_is_better=False,
                                        unit=out_unit, tags=btags))
        recs += _curve_records(m, mq.auc, q, s, ctx, plain, curve_unit)
        if mq.randomisation_rank_correlation is not None:
            vals = mq.randomisation_rank_correlation
            st = {**plain, "threshold": p.sanity_threshold}
            if np.isfinite(vals).any():
                failed_check = float(np.nanmean(vals)) > p.sanity_threshold
                st["verdict"] = "fails (explanation barely depends on the weights)" if failed_check else "passes"
            recs.append(mean_record("randomisation_rank_correlation", vals, ctx, higher_is_better=False,
                                    unit="spearman", tags=st))
        elif mq.randomisation_reason is not None:
            recs.append(MetricRecord.unavailable("randomisation_rank_correlation", mq.randomisation_reason,
                                                 higher_is_better=False, unit="spearman", tags=plain))
        if mq.seed_rank_correlation is not None:
            recs.append(mean_record("seed_rank_correlation", mq.seed_rank_correlation, ctx, higher_is_better=True,
                                    unit="spearman", tags=plain))
        elif mq.seed_reason is not None:
            recs.append(MetricRecord.unavailable("seed_rank_correlation", mq.seed_reason, higher_is_better=True,
                                                 unit="spearman", tags=plain))
        if mq.infidelity is not None:
            recs.append(mean_record("infidelity", mq.infidelity, ctx, higher_is_better=False,
                                    unit=f"{out_unit}^2", tags={**plain, "normalised": "true"}))
        if mq.max_sensitivity is not None:
            recs.append(mean_record("max_sensitivity", mq.max_sensitivity, ctx, higher_is_better=False,
                                    unit="fraction", tags=plain))
        elif mq.max_sensitivity_reason is not None:
            recs.append(MetricRecord.unavailable("max_sensitivity", mq.max_sensitivity_reason,
                                                 higher_is_better=False, unit="fraction", tags=plain))
        k_tags = {**plain, "k": len(q.relevant or [])}
        if mq.top_k_precision is not None:
            recs.append(mean_record("top_k_precision", mq.top_k_precision, ctx, higher_is_better=True,
                                    unit="fraction", tags=k_tags))
        elif mq.top_k_reason is not None:
            recs.append(MetricRecord.unavailable("top_k_precision", mq.top_k_reason, higher_is_better=True,
                                                 unit="fraction", tags=k_tags))
        if mq.surrogate_r2 is not None:
            recs += _lime_records(mq.surrogate_r2, mq.local_prediction_error, ctx, p, plain, out_unit)
    recs += _random_records(q, s, ctx, base_tags, curve_unit)
    return recs


def _curve_records(m: str, auc: dict[str, dict[str, "np.ndarray"]], q: Quality, s: Setup, ctx: RunContext,
                   tags: dict[str, Any], unit: str) -> list[MetricRecord]:
    recs = []
    if q.curve_reason is not None:
        for mode in CURVE_MODES:
            if mode in s.params.quality:
                for rep in replacement_kinds(s):
                    recs.append(MetricRecord.unavailable(
                        f"{mode}_auc", q.curve_reason, higher_is_better=_HIGHER_IS_BETTER[mode], unit=unit,
                        tags={**tags, "replacement": rep, "order": "attribution"}))
        return recs
    for mode, reps in auc.items():
        for rep, vals in reps.items():
            rtags = {**tags, "replacement": rep, "order": "attribution"}
            control = q.random.get(mode, {}).get(rep)
            if control is not None:
                rtags["vs_random"] = vs_random(vals, control.auc, mode, ctx.seed)
            recs.append(mean_record(f"{mode}_auc", vals, ctx, higher_is_better=_HIGHER_IS_BETTER[mode], unit=unit,
                                    tags=rtags))
    return recs


def _random_records(q: Quality, s: Setup, ctx: RunContext, base_tags: dict[str, Any],
                    unit: str) -> list[MetricRecord]:
    """The control: its expected AUC (mean over orders, then examples) and, beside it, how
    far one random order strays (SD over orders, mean over examples)."""
    recs = []
    tags = {"method": "random", **base_tags}
    if q.curve_reason is not None and q.methods:
        for mode in CURVE_MODES:
            if mode in s.params.quality:
                for rep in replacement_kinds(s):
                    recs.append(MetricRecord.unavailable(
                        f"{mode}_auc", q.curve_reason, higher_is_better=_HIGHER_IS_BETTER[mode], unit=unit,
                        tags={**tags, "replacement": rep, "order": "random_expectation"}))
        return recs
    for mode, reps in q.random.items():
        for rep, c in reps.items():
            ctags = {**tags, "replacement": rep, "order": "random_expectation", "orders": c.orders}
            recs.append(mean_record(f"{mode}_auc", c.auc, ctx, higher_is_better=_HIGHER_IS_BETTER[mode], unit=unit,
                                    tags=ctags))
            recs.append(mean_record("random_order_spread", c.spread, ctx, higher_is_better=None, unit=unit,
                                    tags={**ctags, "mode": mode, "statistic_of": "SD of the AUC over orders"}))
    return recs


def _lime_records(r2: "np.ndarray", local_error: "np.ndarray | None", ctx: RunContext, p: ExplainParams,
                  tags: dict[str, Any], out_unit: str) -> list[MetricRecord]:
    import numpy as np

    fitted = np.isfinite(r2)  # NaN: an example LIME could not explain (not counted)
    low = np.where(fitted, r2 < p.lime_min_r2, np.nan)
    fidelity = "low" if fitted.any() and np.nanmean(low) > 0.5 else "ok"
    lt = {**tags, "fidelity": fidelity}
    recs = [mean_record("surrogate_r2", r2, ctx, higher_is_better=True, unit="r2", tags=lt)]
    if local_error is not None:
        recs.append(mean_record("local_prediction_error", local_error, ctx, higher_is_better=False, unit=out_unit,
                                tags=lt))
    recs.append(mean_record("low_fidelity_fraction", low, ctx, higher_is_better=False, unit="fraction",
                            tags={**lt, "min_r2": p.lime_min_r2}))
    if fidelity == "low":
        ctx.log(f"explain: LIME fidelity is low on {ctx.model_name} (median R² {np.nanmedian(r2):.2f} "
                f"< {p.lime_min_r2}); its attributions are unreliable here")
    return recs


def _attention_records(s: Setup, ctx: RunContext, tags: dict[str, Any]) -> list[MetricRecord]:
    if s.attention is None:
        return []
    from .attention import attention_entropy

    maps = s.attention
    row_err = (maps.double().sum(-1) - 1).abs().amax(dim=(1, 2, 3)).numpy()
    recs = [MetricRecord(name="method_coverage", value=1.0, higher_is_better=True, unit="fraction",
                         n=s.n, tags={**tags, "library": "workbench"}),
            mean_record("attention_row_sum_error", row_err, ctx, higher_is_better=False, unit="probability",
                        tags=tags, stat="max")]
    for layer in range(maps.shape[1]):
        ent = attention_entropy(maps[:, layer]).mean(1).double().numpy()
        recs.append(mean_record("attention_entropy", ent, ctx, higher_is_better=None, unit="nats",
                                tags={**tags, "layer": layer}))
    return recs
