"""The certify suite's records, summary and artifact arrays, built from the per-example
arrays of every test example (`blocks.certify_rows`, concatenated over shards in order):
counts are recounted over all examples, intervals computed from those counts, never from
shard summaries. The unsharded run goes through the same code with one part."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.errors import DataError
from workbench.records import MetricRecord

if TYPE_CHECKING:
    from workbench.suite import RunContext


def merge(parts: Sequence[tuple[Any, dict[str, Any]]], n: int, what: str) -> dict[str, Any]:
    """One part covering [0, n) from shard parts (in order): the per-example arrays of each
    (variant, sigma) concatenated. DataError when the parts do not tile [0, n) in order, or
    disagree on what they certified (variants, sigmas, notes, the weights of each variant)."""
    from workbench.suite import check_tiling

    rows = []
    for piece, part in parts:
        got = tuple(part.get("rows", ()))
        if not isinstance(piece, slice) or got != (piece.start, piece.stop):
            raise DataError(f"Shard of {what} for {piece!r} reports rows {got}.")
        rows.append((piece, part))
    check_tiling(rows, n, what)
    first = parts[0][1]
    key = lambda part: [(r["variant"], r["sigma"], r["weights"]) for r in part["results"]]  # noqa: E731
    for piece, part in parts[1:]:
        if key(part) != key(first) or part["notes"] != first["notes"]:
            raise DataError(
                f"Shards of {what} certified different models: [{first['rows'][0]}, {first['rows'][1]}) has "
                f"{key(first)} (notes {first['notes']}), [{piece.start}, {piece.stop}) has {key(part)} (notes "
                f"{part['notes']}). Noise-trained siblings come from the training cache: give the workers one "
                "cache directory, or run without shards.")
    results = []
    for i, r in enumerate(first["results"]):
        arrays = {k: np.concatenate([np.asarray(part["results"][i]["arrays"][k]) for _, part in parts])
                  for k in r["arrays"]}
        results.append({**r, "arrays": arrays})
    return {"rows": (0, n), "notes": list(first["notes"]), "results": results}


def cp(k: int, n: int) -> tuple[float, float] | None:
    from workbench.suites.certify.functional import clopper_pearson

    return clopper_pearson(k, n) if n else None


def fraction(name: str, k: int, n: int, tags: dict[str, Any], *, higher: bool = True,
             empty_reason: str = "no example") -> MetricRecord:
    if n == 0:
        return MetricRecord.unavailable(name, empty_reason, higher_is_better=higher, unit="fraction", n=0, tags=tags)
    return MetricRecord(name=name, value=k / n, higher_is_better=higher, unit="fraction", n=n, ci=cp(k, n),
                        tags={**tags, "ci_method": "clopper_pearson"})


def clean_records(clean: np.ndarray, y: np.ndarray, variant: str, tags: dict[str, Any],
                  alpha: float = 0.05) -> list[MetricRecord]:
    """`clean_accuracy` of the base classifier f (no noise); for a noise-trained sibling
    also `sibling_training_failed`, from a one-sided exact binomial test of its clean
    accuracy against the majority class's share at `alpha`: 0 when significantly above it;
    1 when not above it at all (accuracy at or below the share: the sibling the workbench
    trained, with the plan's `train` settings or defaults, learned nothing and its
    certificates say nothing about noise training; the reason says so); null with the
    reason when above it but not significantly (too few examples to tell)."""
    from scipy.stats import binomtest

    n, k = len(y), int((clean == y).sum())
    out = [fraction("clean_accuracy", k, n, {**tags, "procedure": "base_classifier"})]
    if variant == "standard" or n == 0:
        return out
    majority = float(np.bincount(y).max() / n)
    pv = float(binomtest(k, n, majority, alternative="greater").pvalue) if majority < 1 else 1.0
    rtags = {**tags, "test": "binomial_vs_majority", "alpha": alpha}
    where = f"clean accuracy {k / n:.3g} on {n} examples against the majority class's share {majority:.3g}"
    if pv >= alpha and k / n > majority:
        out.append(MetricRecord.unavailable(
            "sibling_training_failed", f"the noise-trained sibling's {where} is higher but not significantly "
            f"(one-sided binomial p={pv:.2g}): too few examples to tell whether its training worked; certify more "
            "examples (`n_samples`).", higher_is_better=False, unit="flag", n=n, tags=rtags))
        return out
    failed = pv >= alpha
    reason = (f"the noise-trained sibling's {where} is not above it (one-sided binomial p={pv:.2g}): its training "
              "(the plan's `train` settings for this model, defaults when none) failed, so its certificates say "
              "nothing about noise training. Give the model a `train` table.") if failed else None
    out.append(MetricRecord(name="sibling_training_failed", value=float(failed), reason=reason, higher_is_better=False,
                            unit="flag", n=n, tags=rtags))
    return out


def certified(prediction: np.ndarray, radius: np.ndarray, y: np.ndarray, r: float) -> np.ndarray:
    """(N,) bool: CERTIFY returned the label with radius >= r (an abstention never counts)."""
    from workbench.suites.certify.functional import ABSTAIN

    return (prediction == y) & (prediction != ABSTAIN) & (radius >= r)


def records(p: Any, merged: dict[str, Any], y: np.ndarray, data: Any, ctx: "RunContext",
            units: str) -> tuple[list[MetricRecord], dict[str, Any], dict[str, np.ndarray]]:
    """Every record of the run, the per-(variant, sigma) summary rows for the figures (keyed
    variant -> "sigma" -> row) and the `certificates` artifact arrays, from `merged`."""
    metrics: list[MetricRecord] = []
    variants: dict[str, dict[str, Any]] = {}
    arrays: dict[str, np.ndarray] = {}
    for res in merged["results"]:
        variant, s, a = res["variant"], res["sigma"], res["arrays"]
        out = _one(p, variant, s, a, y, data, ctx, units, res["noise_scale"])
        metrics += out["metrics"]
        variants.setdefault(variant, {})[f"{s:g}"] = {**out["summary"], **res["info"]}
        for k in ("prediction", "radius", "p_lower", "smoothed_prediction"):
            arrays[f"{variant}_sigma{s:g}_{k}"] = a[k]
    if p.consistency_check:
        flags = [m for m in metrics if m.name == "certification_consistency_flag" and m.value is not None]
        metrics.append(MetricRecord(
            name="certification_consistency_flags", value=float(sum(m.value for m in flags)),
            higher_is_better=False, unit="checks", n=len(flags),
            tags={"check": "certified_within_attacked", "check_alpha": p.check_alpha}))
    return metrics, variants, arrays


def _one(p: Any, variant: str, sigma: float, a: dict[str, np.ndarray], y: np.ndarray, data: Any,
         ctx: "RunContext", units: str, noise_scale: float) -> dict[str, Any]:
    """Records and summary row of one (variant, sigma) over all N examples."""
    from workbench.stats import bootstrap_mean_ci
    from workbench.suites.certify import functional as C
    from workbench.torch_utils import derive_seed

    tags = {"variant": variant, "sigma": sigma, "norm": "l2", "space": "embedding" if data.modality == "tokens" else "input"}
    n = len(y)
    pred, radius, pred_g = a["prediction"], a["radius"], a["smoothed_prediction"]
    abstain_cert = int((pred == C.ABSTAIN).sum())
    abstain_pred = int((pred_g == C.ABSTAIN).sum())
    metrics: list[MetricRecord] = []
    curve: dict[str, list[float]] = {"radius": [], "accuracy": [], "ci_low": [], "ci_high": []}
    for r in p.radii:
        k = int(certified(pred, radius, y, r).sum())
        rec = fraction("certified_accuracy", k, n, {**tags, "radius": r, "radius_units": units.split(" (")[0]})
        metrics.append(rec)
        curve["radius"].append(r)
        curve["accuracy"].append(k / n)
        curve["ci_low"].append(rec.ci[0] if rec.ci else k / n)
        curve["ci_high"].append(rec.ci[1] if rec.ci else k / n)
    metrics.append(fraction("abstain_rate", abstain_cert, n, {**tags, "procedure": "certify"}, higher=False))
    metrics.append(fraction("smoothed_accuracy", int((pred_g == y).sum()), n, {**tags, "procedure": "predict"}))
    metrics.append(fraction("abstain_rate", abstain_pred, n, {**tags, "procedure": "predict"}, higher=False))
    if "clean_prediction" in a:
        metrics += clean_records(a["clean_prediction"], y, variant, tags)
    correct_radius = np.where(pred == y, radius, 0.0)
    seed = derive_seed(ctx.seed, "certify", variant, f"{sigma:g}", "acr") % 2**31
    metrics.append(MetricRecord(name="mean_certified_radius", value=float(correct_radius.mean()), higher_is_better=True,
                                unit=units.split(" (")[0], n=n, ci=bootstrap_mean_ci(correct_radius, seed=seed),
                                tags=tags))
    r_max = C.max_certifiable_radius(sigma, p.n, p.alpha)
    summary: dict[str, Any] = {
        "curve": curve, "abstain_rate_certify": abstain_cert / n, "smoothed_accuracy": float(np.mean(pred_g == y)),
        "abstain_rate_predict": abstain_pred / n, "mean_certified_radius": float(correct_radius.mean()),
        "max_certifiable_radius": r_max, "noise_scale": noise_scale,
        "noisy_accuracy": float(np.mean(a["noisy_hits"] / p.n)),
    }
    if any(r > r_max for r in p.radii):
        summary["note"] = (f"radii above {r_max:.3g} cannot be certified with n={p.n} at alpha={p.alpha:g} "
                           "(a limit of n, not of the model)")
    if p.consistency_check:
        check = _consistency(p, a, y, sigma, ctx, tags)
        metrics += check["metrics"]
        summary["empirical"] = check["curve"]
        summary["consistency"] = check["rows"]
    return {"metrics": metrics, "summary": summary}


def _consistency(p: Any, a: dict[str, np.ndarray], y: np.ndarray, sigma: float, ctx: "RunContext",
                 tags: dict[str, Any]) -> dict[str, Any]:
    """Accuracy of g under the attack at each checked radius (over the first `attack_samples`
    examples; one g gets wrong at x counts as wrong), and the flag: a certified example
    whose attacked point has significantly fewer hits of its class than the certificate
    promises (Bonferroni over every certified example checked for this variant and sigma)."""
    from workbench.suites.certify import functional as C
    from workbench.suites.certify.blocks import attack_noise_samples, check_radii

    n_att = min(p.attack_samples, len(y))
    ys, pred, radius = y[:n_att], a["prediction"][:n_att], a["radius"][:n_att]
    atags = {**tags, "attack": "pgd_eot", "steps": p.attack_steps,
             "noise_samples": attack_noise_samples(p)}
    curve: dict[str, list[float]] = {"radius": [], "accuracy": [], "ci_low": [], "ci_high": [], "certified": []}
    metrics: list[MetricRecord] = []
    pending: list[tuple[float, np.ndarray, np.ndarray]] = []
    for j, r in enumerate(check_radii(p)):
        ok = a["adv_correct"][:n_att, j]
        k = int(ok.sum())
        rec = fraction("smoothed_adversarial_accuracy", k, n_att, {**atags, "radius": r})
        metrics.append(rec)
        cert = certified(pred, radius, ys, r)
        curve["radius"].append(r)
        curve["accuracy"].append(k / n_att)
        curve["ci_low"].append(rec.ci[0])
        curve["ci_high"].append(rec.ci[1])
        curve["certified"].append(float(cert.mean()))
        cidx = cert.nonzero()[0]  # certified implies g's Monte Carlo argmax is right: all attacked
        hits = a["adv_hits"][:n_att, j][cidx]
        if np.any(hits < 0):
            raise DataError(f"certified examples {cidx[hits < 0].tolist()} were not attacked at radius {r:g}")
        pv = C.consistency_pvalues(radius[cidx], sigma, r, hits, p.attack_eval_samples)
        pending.append((r, pv, ok[cidx]))
    n_tests = max(1, sum(len(pv) for _, pv, _ in pending))
    rows = []
    for r, pv, ok in pending:
        ftags = {**tags, "radius": r, "check": "certified_within_attacked"}
        if len(pv) == 0:
            metrics.append(MetricRecord.unavailable(
                "certification_consistency_flag", f"no attacked example is certified at radius {r:g}: nothing to check",
                higher_is_better=False, unit="flag", tags=ftags))
            rows.append({"radius": r, "certified": 0, "flagged": None})
            continue
        flagged = bool((pv < p.check_alpha / n_tests).any())
        metrics.append(MetricRecord(name="certification_consistency_flag", value=float(flagged), higher_is_better=False,
                                    unit="flag", n=len(pv), tags=ftags))
        rows.append({"radius": r, "certified": len(pv), "flagged": flagged, "min_p_value": float(pv.min()),
                     "certified_but_attacked_wrong": int((~ok).sum()), "bonferroni_tests": n_tests})
    return {"metrics": metrics, "curve": curve, "rows": rows}
