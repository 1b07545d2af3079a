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

from workbench.errors import ModelError, check_bool, check_number, check_number_list, check_positive_int
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
        examples (those the smoothed classifier gets right) at every radius of `check_radii`
        (default: every radius > 0 of `radii`), evaluate g there with
        `attack_eval_samples` samples, and flag a certificate the attack contradicts beyond
        Monte Carlo error (one-sided binomial test, Bonferroni at `check_alpha`).
        block_examples: consecutive examples that share noise seeds (blocks.py): the unit
        of Ray sharding. The numbers depend on it and on the seed, never on the batch size
        or the number of shards."""

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
        block_examples: int = 16

        def __post_init__(self) -> None:
            set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
            for k in ("n_samples", "n0", "n", "attack_samples", "attack_steps", "attack_noise_samples",
                      "attack_eval_samples", "block_examples"):
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
        "mean_certified_radius", "smoothed_accuracy", "certification_consistency_flags", "sibling_training_failed",
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
        from workbench.suites.certify import blocks

        reason = self.applicable(model, data)
        if reason:
            return ctx.skip(reason)
        n = blocks.n_examples(self.params, data, ctx)
        if n == 0:
            return ctx.skip("no test example to certify (empty test split or max_samples = 0)")
        return self._report(model, data, ctx, [(slice(0, n), blocks.certify_rows(self.params, model, data, ctx,
                                                                                  slice(0, n)))])

    def _report(self, model: ModelHandle, data: Any, ctx: RunContext, parts: Any) -> Any:
        """The result from the per-example arrays of every example (one part or the shards')."""
        from workbench.suites.certify import blocks, report

        p = self.params
        n = blocks.n_examples(p, data, ctx)
        merged = report.merge(parts, n, f"{ctx.model_name}/{self.name}")
        order = ctx.sample_rows(len(data.test), n, blocks.SAMPLE_OFFSET)
        y = data.test.subset(order).y.cpu().numpy()
        units = _radius_units(data)
        metrics, variants, arrays = report.records(p, merged, y, data, ctx, units)
        summary: dict[str, Any] = {
            "modality": data.modality, "norm": "l2", "space": "embedding" if data.modality == "tokens" else "input",
            "radius_units": units, "alpha": p.alpha, "n0": p.n0, "n": p.n, "n_examples": n, "radii": list(p.radii),
            "n_attacked": min(p.attack_samples, n) if p.consistency_check else 0,
            "sigmas": list(p.sigmas), "variants": variants, "notes": merged["notes"],
            "block_size": blocks.block_size(p),
        }
        ctx.save_artifact("certificates", {"label": y, "example_index": order.numpy(), **arrays})
        ctx.save_artifact("certify_summary", summary)
        return ctx.result(metrics, config=self.config())

    # Sharding (Ray): whole blocks of examples per shard, each block with its own noise seeds
    # (blocks.py), so a shard computes the very rows of the unsharded run; `combine` recounts
    # every metric from the concatenated per-example arrays (report.py).

    def shards(self, model: ModelHandle, data: Any, ctx: RunContext, n_shards: int) -> list[slice] | None:
        from workbench.suites.certify import blocks

        if self.applicable(model, data):
            return None
        n = blocks.n_examples(self.params, data, ctx)
        ranges = blocks.shard_ranges(n, blocks.block_size(self.params), n_shards)
        if len(ranges) < 2:
            return None
        # Train the noise-trained siblings here, on the driver, once: the shards then load
        # them from the training cache instead of each training the same sibling at once.
        blocks.variants(model, self.params)
        return ranges

    def run_shard(self, model: ModelHandle, data: Any, ctx: RunContext, shard: Any) -> dict[str, Any]:
        from workbench.suites.certify import blocks

        return blocks.certify_rows(self.params, model, data, ctx, shard)

    def combine(self, model: ModelHandle, data: Any, ctx: RunContext, parts: Any) -> Any:
        return self._report(model, data, ctx, list(parts))

    def cost(self, model: ModelHandle, data: Any, ctx: RunContext) -> list:
        from workbench.suites.certify.cost import certify_cost

        return certify_cost(self.params, model, data, ctx)

    @classmethod
    def is_headline(cls, metric: dict[str, Any]) -> bool:
        return metric.get("name") in cls.headline_metrics

    @classmethod
    def per_example(cls, result: dict[str, Any], run_dir: Path) -> dict[str, np.ndarray]:
        """Per test example, for paired significance tests (gate rules with `significant`):
        "smoothed_accuracy" (1.0 when PREDICT returned the label, 0.0 when wrong or
        abstaining) and "mean_certified_radius" (CERTIFY's radius when it returned the label,
        else 0), of the model as given ("standard") at the smallest sigma, the row of each
        name these average to; with "y_true" and "example_id". A name has one row per
        (variant, sigma) and the hook maps a name to one array, so the model under test at
        its least noisy smoothing is the one described; `certified_accuracy` (one row per
        radius too) is left out: `mean_certified_radius` is the area under its curve."""
        from workbench.suite import load_artifact

        try:
            arrays = load_artifact(result, run_dir, "certificates", ".npz")
        except (OSError, ValueError):
            return {}
        sigmas = (result.get("config") or {}).get("sigmas") or []
        if not arrays or not sigmas or "label" not in arrays:
            return {}
        prefix = f"standard_sigma{min(float(s) for s in sigmas):g}_"
        keys = [prefix + k for k in ("prediction", "radius", "smoothed_prediction")]
        if not all(k in arrays for k in keys):
            return {}
        y = arrays["label"]
        pred, radius, smoothed = (arrays[k] for k in keys)
        if not all(a.shape == y.shape and a.ndim == 1 for a in (pred, radius, smoothed)):
            return {}
        out = {"smoothed_accuracy": (smoothed == y).astype(np.float64),
               "mean_certified_radius": np.where(pred == y, radius, 0.0).astype(np.float64), "y_true": y}
        if arrays.get("example_index") is not None and arrays["example_index"].shape == y.shape:
            out["example_id"] = arrays["example_index"]
        return out

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
