"""The certify suite: randomized smoothing (Cohen, Rosenfeld & Kolter 2019) with certified
L2 radii, a standard and a noise-trained model side by side, and a consistency check
against an attack on the smoothed classifier in every run.

The maths lives in `functional.py` and `training.py`; this file only wires them to the
Suite protocol. See README.md (the suite card) for the guarantee, its limits, the metrics
and artifacts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from workbench.errors import ModelError, check_bool, check_number, check_number_list, check_positive_int
from workbench.records import MetricRecord
from workbench.suite import ModelHandle, RunContext, Suite


def _sorted_set(values: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(sorted(set(values)))


class CertifySuite(Suite):
    name: ClassVar[str] = "certify"
    description: ClassVar[str] = (
        "Certified L2 robustness by randomized smoothing (Cohen et al. 2019): certified accuracy vs radius with "
        "Clopper-Pearson bounds, abstain rate, smoothed accuracy, standard vs Gaussian-noise-trained models, and a "
        "consistency check against PGD on the smoothed classifier."
    )
    tasks: ClassVar[frozenset[str]] = frozenset({"classification"})
    modalities: ClassVar[frozenset[str] | None] = frozenset({"image", "tabular", "tokens"})

    @dataclass(frozen=True, kw_only=True)
    class Params:
        """n_samples: test examples certified. sigmas: noise levels (input units; relative to
        the RMS embedding coordinate for token models). n0 / n: selection / estimation noise
        samples per example; alpha: the certificate's failure probability. radii: the L2 grid
        of certified accuracy. noise_training: also train one Gaussian-noise-augmented
        sibling per sigma (recipe "gaussian_noise") and certify it at its own sigma.
        consistency_check: attack the smoothed classifier (PGD with expectation over
        `attack_noise_samples` noise draws, `attack_steps` steps) on `attack_samples`
        examples at every radius of `check_radii` (default: every radius > 0 of `radii`)
        where an attacked example is certified, evaluate g there with
        `attack_eval_samples` samples, and flag a certificate the attack contradicts beyond
        Monte Carlo error (one-sided binomial test, Bonferroni at `check_alpha`)."""

        n_samples: int = 500
        sigmas: tuple[float, ...] = (0.12, 0.25, 0.5, 1.0)
        n0: int = 100
        n: int = 100_000
        alpha: float = 0.001
        radii: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)
        noise_training: bool = True
        training_epochs: int | None = None
        consistency_check: bool = True
        check_radii: tuple[float, ...] | None = None
        attack_samples: int = 500
        attack_steps: int = 20
        attack_noise_samples: int = 32
        attack_eval_samples: int = 10_000
        check_alpha: float = 0.01

        def __post_init__(self) -> None:
            set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
            for k in ("n_samples", "n0", "n", "attack_samples", "attack_steps", "attack_noise_samples",
                      "attack_eval_samples"):
                check_positive_int(k, getattr(self, k))
            if self.training_epochs is not None:
                check_positive_int("training_epochs", self.training_epochs)
            set_("sigmas", _sorted_set(check_number_list("sigmas", self.sigmas, low=0, low_open=True)))
            set_("radii", _sorted_set(check_number_list("radii", self.radii, low=0)))
            if self.check_radii is not None:
                set_("check_radii", _sorted_set(check_number_list("check_radii", self.check_radii, low=0,
                                                                        low_open=True)))
            for k in ("alpha", "check_alpha"):
                check_number(k, getattr(self, k), low=0, high=0.5, low_open=True, high_open=True)
            for k in ("noise_training", "consistency_check"):
                check_bool(k, getattr(self, k))

    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        # CPU quickstart: 100 examples, one sigma (one noise-trained sibling), n0 = 32 and
        # n = 500 (R_max = 2.2 sigma at alpha = 0.001), 30 attacked examples, PGD-8 over 16
        # noise draws; the check at two radii.
        "quick": {"n_samples": 100, "sigmas": (0.25,), "n0": 32, "n": 500, "radii": (0.0, 0.125, 0.25, 0.375, 0.5),
                  "check_radii": (0.25, 0.5), "attack_samples": 30, "attack_steps": 8, "attack_noise_samples": 16, "attack_eval_samples": 500},
        # Cohen et al.'s protocol (n0 = 100, n = 100,000, alpha = 0.001, sigma in {0.12, 0.25,
        # 0.5, 1.0}, 500 test points) scaled to the data: at most 500 test points (all of a
        # small test split); the class defaults.
        "full": {},
    }

    #: scaled down (halved, never below the floor, never when the plan sets them) when the
    #: estimate says a profile's default would not fit the time limit on this device
    budget_parameters: ClassVar[tuple[tuple[str, int], ...]] = (
        ("attack_eval_samples", 1000), ("n", 1000), ("n_samples", 100))

    headline_metrics: ClassVar[tuple[str, ...]] = (
        "mean_certified_radius", "smoothed_accuracy", "certification_consistency_flags",
    )

    def applicable(self, model: ModelHandle, data: Any) -> str | None:
        reason = super().applicable(model, data)
        if reason:
            return reason
        if model.output != "logits":
            return f"suite 'certify' needs a classifier returning logits (B, K), got output {model.output!r}"
        if data.modality == "tokens":
            from workbench.embedding import find_embedding_layer
            from workbench.torch_utils import module_device

            try:
                ids = data.test.x[:8].to(module_device(model.module))
                find_embedding_layer(model.module, ids, path=getattr(model, "embedding", None))
            except ModelError as exc:
                return f"suite 'certify' adds noise to token embeddings: {exc}"
        return None

    # ------------------------------------------------------------------ run
    def run(self, model: ModelHandle, data: Any, ctx: RunContext) -> Any:
        from workbench.suites.certify import functional as C
        from workbench.torch_utils import module_device

        reason = self.applicable(model, data)
        if reason:
            return ctx.skip(reason)
        p = self.params
        n = ctx.limit(len(data.test), p.n_samples)
        order = ctx.sample_rows(len(data.test), n, 31)
        test = data.test.subset(order)
        device = module_device(model.module)
        x, y = test.x.to(device), test.y.cpu()
        units = _radius_units(data)
        summary: dict[str, Any] = {
            "modality": data.modality, "norm": "l2", "space": "embedding" if data.modality == "tokens" else "input",
            "radius_units": units, "alpha": p.alpha, "n0": p.n0, "n": p.n, "n_examples": n, "radii": list(p.radii),
            "n_attacked": min(p.attack_samples, n) if p.consistency_check else 0,
            "sigmas": list(p.sigmas), "variants": {}, "notes": [],
        }
        variants: list[tuple[str, Any, tuple[float, ...], dict[str, Any]]] = [
            ("standard", model.module, p.sigmas, {"trained_with": "as given"})]
        embedding = getattr(model, "embedding", None)  # the token-embedding layer named in the plan
        if p.noise_training:
            for s in p.sigmas:
                if model.trainer is None:
                    summary["notes"].append("noise training skipped: the model has no trainer (cannot be retrained)")
                    break
                try:
                    params = {"sigma": s, **({"embedding": embedding} if embedding else {})}
                    module_v = model.trainer(recipe="gaussian_noise", recipe_params=params, epochs=p.training_epochs)
                except Exception as exc:  # a failed sibling removes only its own rows
                    summary["notes"].append(f"noise training at sigma={s:g} failed: {type(exc).__name__}: {exc}")
                    continue
                variants.append(("gaussian_noise", module_v, (s,),
                                 {"trained_with": f"gaussian_noise(sigma={s:g})",
                                  "train_seconds": getattr(module_v, "train_seconds", None)}))

        metrics: list[MetricRecord] = []
        arrays: dict[str, np.ndarray] = {"label": y.numpy(), "example_index": order.numpy()}
        for variant, module_v, sigmas, info in variants:
            vs = summary["variants"].setdefault(variant, {})
            for s in sigmas:
                out = _certify_one(C, module_v, data, x, y, s, variant, p, ctx, units, embedding)
                metrics += out["metrics"]
                vs[f"{s:g}"] = {**out["summary"], **info}
                for k, v in out["arrays"].items():
                    arrays[f"{variant}_sigma{s:g}_{k}"] = v
        if p.consistency_check:
            flags = [m for m in metrics if m.name == "certification_consistency_flag" and m.value is not None]
            metrics.append(MetricRecord(
                name="certification_consistency_flags", value=float(sum(m.value for m in flags)),
                higher_is_better=False, unit="checks", n=len(flags),
                tags={"check": "certified_within_attacked", "check_alpha": p.check_alpha}))
        ctx.save_artifact("certificates", arrays)
        ctx.save_artifact("certify_summary", summary)
        return ctx.result(metrics, config=self.config())

    def cost(self, model: ModelHandle, data: Any, ctx: RunContext) -> list:
        from workbench.suites.certify.cost import certify_cost

        return certify_cost(self.params, model, data, ctx)

    @classmethod
    def is_headline(cls, metric: dict[str, Any]) -> bool:
        return metric.get("name") in cls.headline_metrics

    @classmethod
    def figures(cls, result: dict[str, Any], run_dir: Path) -> list[tuple[str, Any]]:
        from workbench.suites.certify.figures import certify_figures

        return certify_figures(result, Path(run_dir))


# ---------------------------------------------------------------------- helpers


def _radius_units(data: Any) -> str:
    """The units certified radii (and sigma) are in: the data's own, after its documented
    preprocessing."""
    if data.modality == "tokens":
        return "relative embedding units (RMS token-embedding coordinate)"
    if data.modality == "image":
        b = data.bounds
        return f"input units (pixels in [{b[0]:g}, {b[1]:g}])" if b else "input units"
    if (data.ground_truth or {}).get("standardization") is not None:
        return "train-std units (standardised features)"
    return "input units (features as given)"


def _cp(k: int, n: int) -> tuple[float, float] | None:
    from workbench.suites.certify.functional import clopper_pearson

    return clopper_pearson(k, n) if n else None


def _fraction(name: str, k: int, n: int, tags: dict[str, Any], *, higher: bool = True,
              empty_reason: str = "no example") -> MetricRecord:
    if n == 0:
        return MetricRecord.unavailable(name, empty_reason, higher_is_better=higher, unit="fraction", n=0, tags=tags)
    return MetricRecord(name=name, value=k / n, higher_is_better=higher, unit="fraction", n=n, ci=_cp(k, n),
                        tags={**tags, "ci_method": "clopper_pearson"})


def _certify_one(C: Any, module: Any, data: Any, x: torch.Tensor, y: torch.Tensor, sigma: float, variant: str,
                 p: Any, ctx: RunContext, units: str, embedding: str | None) -> dict[str, Any]:
    """Certify one (model variant, sigma): metrics, a summary row for the figures, and
    per-example arrays."""
    from workbench.stats import bootstrap_mean_ci
    from workbench.torch_utils import derive_seed, frozen_eval

    device = x.device
    bs = ctx.batch_size
    tags = {"variant": variant, "sigma": sigma, "norm": "l2", "space": "embedding" if data.modality == "tokens" else "input"}
    seed = lambda *k: derive_seed(ctx.seed, "certify", variant, f"{sigma:g}", *k)  # noqa: E731
    gen = torch.Generator(device=device).manual_seed(seed("noise"))
    with frozen_eval(module):
        if data.modality == "tokens":
            ref = data.train.x[: min(len(data.train), 1000)].to(device)
            space = C.embedding_space(module, ref, path=embedding)
        else:
            space = C.input_space(x)
        with ctx.progress(len(x) * (p.n0 + p.n), f"{variant} sigma={sigma:g}", unit="noisy copies") as bar:
            cert = C.certify(module, x, sigma=sigma, n0=p.n0, n=p.n, alpha=p.alpha, batch_size=bs, generator=gen,
                             space=space, num_classes=data.num_classes, progress=bar)
    n = len(y)
    pred_g = C.predict_from_counts(cert.counts_estimation, p.alpha)
    abstain_cert = int((cert.prediction == C.ABSTAIN).sum())
    abstain_pred = int((pred_g == C.ABSTAIN).sum())
    metrics: list[MetricRecord] = []
    curve: dict[str, list[float]] = {"radius": [], "accuracy": [], "ci_low": [], "ci_high": []}
    counts = C.certified_counts(cert, y, p.radii)
    for r, k in zip(p.radii, counts):
        rec = _fraction("certified_accuracy", k, n, {**tags, "radius": r, "radius_units": units.split(" (")[0]})
        metrics.append(rec)
        curve["radius"].append(r)
        curve["accuracy"].append(k / n)
        curve["ci_low"].append(rec.ci[0] if rec.ci else k / n)
        curve["ci_high"].append(rec.ci[1] if rec.ci else k / n)
    metrics.append(_fraction("abstain_rate", abstain_cert, n, {**tags, "procedure": "certify"}, higher=False))
    metrics.append(_fraction("smoothed_accuracy", int((pred_g == y).sum()), n, {**tags, "procedure": "predict"}))
    metrics.append(_fraction("abstain_rate", abstain_pred, n, {**tags, "procedure": "predict"}, higher=False))
    correct_radius = np.where((cert.prediction == y).numpy(), cert.radius, 0.0)
    metrics.append(MetricRecord(name="mean_certified_radius", value=float(correct_radius.mean()), higher_is_better=True,
                                unit=units.split(" (")[0], n=n, ci=bootstrap_mean_ci(correct_radius, seed=seed("acr") % 2**31),
                                tags=tags))
    r_max = C.max_certifiable_radius(sigma, p.n, p.alpha)
    summary: dict[str, Any] = {
        "curve": curve, "abstain_rate_certify": abstain_cert / n, "smoothed_accuracy": float((pred_g == y).float().mean()),
        "abstain_rate_predict": abstain_pred / n, "mean_certified_radius": float(correct_radius.mean()),
        "max_certifiable_radius": r_max, "noise_scale": space.scale,
        "noisy_accuracy": float((cert.counts_estimation.gather(1, y[:, None]).squeeze(1).float() / p.n).mean()),
    }
    if any(r > r_max for r in p.radii):
        summary["note"] = (f"radii above {r_max:.3g} cannot be certified with n={p.n} at alpha={p.alpha:g} "
                           "(a limit of n, not of the model)")
    arrays = {"prediction": cert.prediction.numpy(), "radius": cert.radius, "p_lower": cert.p_lower,
              "smoothed_prediction": pred_g.numpy()}
    if p.consistency_check:
        check = _consistency(C, module, x, y, cert, space, sigma, p, bs, gen, data, tags)
        metrics += check["metrics"]
        summary["empirical"] = check["curve"]
        summary["consistency"] = check["rows"]
    return {"metrics": metrics, "summary": summary, "arrays": arrays}


def _consistency(C: Any, module: Any, x: torch.Tensor, y: torch.Tensor, cert: Any, space: Any, sigma: float, p: Any,
                 bs: int, gen: torch.Generator, data: Any, tags: dict[str, Any]) -> dict[str, Any]:
    """Attack g at every radius > 0 where some example of the attacked subset is certified;
    flag a certified example whose attacked point has significantly fewer hits of its class
    than the certificate guarantees (Bonferroni over every certified example checked)."""
    from workbench.torch_utils import frozen_eval

    m_noise = min(p.attack_noise_samples, bs)  # one forward holds every noise draw of an example
    sub = torch.arange(min(p.attack_samples, len(y)))
    xs, ys = x[sub.to(x.device)], y[sub]
    clean_ok = (cert.counts_estimation[sub].argmax(1) == ys)  # g's Monte Carlo argmax is right at x
    bounds = tuple(data.bounds) if (data.bounds and space.kind == "input") else None
    atags = {**tags, "attack": "pgd_eot", "steps": p.attack_steps, "noise_samples": m_noise}
    pending: list[tuple[float, np.ndarray, np.ndarray | None, int]] = []
    curve: dict[str, list[float]] = {"radius": [], "accuracy": [], "ci_low": [], "ci_high": [], "certified": []}
    metrics: list[MetricRecord] = []
    for r in (p.check_radii if p.check_radii is not None else p.radii):
        if r <= 0:
            continue
        certified = cert.certified(y, r)[sub]
        if not bool(certified.any()):
            pending.append((r, np.zeros(0), None, 0))
            continue
        idx = clean_ok.nonzero().squeeze(1)
        adv_ok = torch.zeros(len(ys), dtype=torch.bool)
        hits = torch.zeros(len(ys), dtype=torch.long)
        with frozen_eval(module):
            delta = C.smoothed_pgd(module, xs[idx.to(x.device)], ys[idx].to(x.device), eps=r, sigma=sigma,
                                   steps=p.attack_steps, noise_samples=m_noise, batch_size=bs, generator=gen,
                                   space=space, bounds=bounds)
            counts = C.sample_noise(module, xs[idx.to(x.device)], num=p.attack_eval_samples, sigma=sigma,
                                    batch_size=bs, generator=gen, space=space, offset=delta,
                                    num_classes=cert.counts_estimation.shape[1]).cpu()
        adv_ok[idx] = counts.argmax(1) == ys[idx]
        hits[idx] = counts.gather(1, ys[idx][:, None]).squeeze(1)
        k = int(adv_ok.sum())
        rec = _fraction("smoothed_adversarial_accuracy", k, len(ys), {**atags, "radius": r})
        metrics.append(rec)
        curve["radius"].append(r)
        curve["accuracy"].append(k / len(ys))
        curve["ci_low"].append(rec.ci[0])
        curve["ci_high"].append(rec.ci[1])
        curve["certified"].append(float(certified.float().mean()))
        cidx = certified.nonzero().squeeze(1).numpy()
        pv = C.consistency_pvalues(cert.radius[sub.numpy()][cidx], sigma, r, hits.numpy()[cidx], p.attack_eval_samples)
        pending.append((r, pv, adv_ok.numpy()[cidx], int(certified.sum())))
    n_tests = max(1, sum(len(pv) for _, pv, _, _ in pending))
    rows = []
    for r, pv, ok, n_cert in pending:
        ftags = {**tags, "radius": r, "check": "certified_within_attacked"}
        if n_cert == 0:
            metrics.append(MetricRecord.unavailable(
                "certification_consistency_flag", f"no attacked example is certified at radius {r:g}: nothing to check",
                higher_is_better=False, unit="flag", tags=ftags))
            rows.append({"radius": r, "certified": 0, "flagged": None})
            continue
        flagged = bool((pv < p.check_alpha / n_tests).any())
        metrics.append(MetricRecord(name="certification_consistency_flag", value=float(flagged), higher_is_better=False,
                                    unit="flag", n=n_cert, tags=ftags))
        rows.append({"radius": r, "certified": n_cert, "flagged": flagged, "min_p_value": float(pv.min()),
                     "certified_but_attacked_wrong": int((~ok).sum()), "bonferroni_tests": n_tests})
    return {"metrics": metrics, "curve": curve, "rows": rows}
