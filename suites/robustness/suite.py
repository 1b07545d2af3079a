"""The robustness suite: adversarial attacks with a worst-case headline, gradient-masking
checks, adversarially trained variants side by side, and for token models a discrete
token-substitution attack. (Natural corruptions and input drift are the `corruptions` and
`drift` suites.)

The maths lives in `functional.py` / `blackbox.py` (attacks), `hotflip.py`, `masking.py`
and `training.py`; `report.py` turns outcomes into records. Token models are attacked
through a hook on their embedding layer (`workbench.embedding`), any nn.Module. This file
only wires them to the Suite protocol. See README.md (the suite card).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from workbench.errors import (ConfigError, ModelError, check_name_list, check_number, check_number_list,
                             check_positive_int)
from workbench.records import MetricRecord
from workbench.suite import ModelHandle, RunContext, Suite
from workbench.suites.robustness.report import adversarial_examples, append_curve, attack_metrics, attack_tags, fraction

ATTACKS: tuple[str, ...] = ("fgsm", "pgd", "apgd_ce", "apgd_dlr", "apgd_t", "random_search")
RECIPES: tuple[str, ...] = ("pgd_at", "fgsm_rs", "trades")


class RobustnessSuite(Suite):
    name: ClassVar[str] = "robustness"
    description: ClassVar[str] = (
        "Adversarial robustness (FGSM, PGD, APGD-CE, APGD-T; per-sample worst case), gradient-masking "
        "checks, adversarially trained variants; token models in embedding space and by token substitutions."
    )
    tasks: ClassVar[frozenset[str]] = frozenset({"classification"})
    modalities: ClassVar[frozenset[str] | None] = frozenset({"image", "tabular", "tokens"})

    @dataclass(frozen=True, kw_only=True)
    class Params:
        """n_samples: attacked test points. eps: the radius grid, in input units for images
        (pixel range of data.bounds) and standardised tabular features (train-std units),
        relative to the embedding scale for token models (workbench.embedding: RMS coordinate
        for L∞, mean sequence-embedding norm for L2). attacks run in the order given; the
        headline worst case is per sample over all of them (and, at masking_eps, the
        masking-check attacks). substitutions: token budgets k of the HotFlip search (token
        models; [] = off), hotflip_candidates: substitutions checked by a real forward per step."""

        n_samples: int = 500
        eps: tuple[float, ...] = (0.05, 0.1, 0.2)
        norm: str = "linf"
        attacks: tuple[str, ...] = ("fgsm", "pgd", "apgd_ce", "apgd_t")
        pgd_steps: int = 20
        apgd_steps: int = 50
        apgd_targets: int = 9
        restarts: int = 1
        masking_checks: bool = True
        masking_eps: float | None = None
        masking_tolerance: float = 0.02
        dlr_gap: float = 0.1
        random_search_queries: int = 300
        transfer_attack: bool = False
        n_examples: int = 8
        substitutions: tuple[int, ...] = (1, 2, 3)
        hotflip_candidates: int = 8
        adversarial_training: tuple[str, ...] = ()
        training_eps: float | None = None
        training_epochs: int | None = None

        def __post_init__(self) -> None:
            from workbench.errors import did_you_mean

            set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
            check_positive_int("n_samples", self.n_samples)
            set_("eps", tuple(sorted(check_number_list("eps", self.eps, low=0))))
            if self.norm not in ("linf", "l2"):
                raise ConfigError(f"Expected `norm` to be one of ['linf', 'l2'], got {self.norm!r}.")
            attacks = check_name_list("attacks", self.attacks)
            for a in attacks:
                if a not in ATTACKS:
                    raise ConfigError(f"Unknown attack {a!r}.{did_you_mean(a, ATTACKS)} Valid attacks: {', '.join(ATTACKS)}.")
            if not attacks:
                raise ConfigError(f"Expected at least one attack in `attacks`; valid attacks: {', '.join(ATTACKS)}.")
            set_("attacks", attacks)
            for k in ("pgd_steps", "apgd_steps", "apgd_targets", "restarts", "random_search_queries",
                      "hotflip_candidates"):
                check_positive_int(k, getattr(self, k))
            check_positive_int("n_examples", self.n_examples, allow_zero=True)
            if self.masking_eps is not None and not (isinstance(self.masking_eps, (int, float)) and self.masking_eps > 0):
                raise ConfigError(f"Expected `masking_eps` to be a float > 0 or absent, got {self.masking_eps!r}.")
            check_number("masking_tolerance", self.masking_tolerance, low=0, high=1, high_open=True)
            check_number("dlr_gap", self.dlr_gap, low=0, high=1, low_open=True, high_open=True)
            subs = check_number_list("substitutions", self.substitutions, low=1, integer=True, allow_empty=True)
            set_("substitutions", tuple(sorted(set(subs))))
            at = check_name_list("adversarial_training", self.adversarial_training)
            for r in at:
                if r not in RECIPES:
                    raise ConfigError(f"Unknown adversarial training recipe {r!r}.{did_you_mean(r, RECIPES)} "
                                      f"Valid recipes: {', '.join(RECIPES)}.")
            set_("adversarial_training", at)
            if self.training_eps is not None and not (isinstance(self.training_eps, (int, float)) and self.training_eps > 0):
                raise ConfigError(f"Expected `training_eps` to be a float > 0 or absent, got {self.training_eps!r}.")
            if self.training_epochs is not None:
                check_positive_int("training_epochs", self.training_epochs)

    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        # CPU quickstart: 100 attacked points, 3 eps, PGD-10, APGD-CE 20 steps + APGD-T
        # 3 targets x 20 steps: <= ~10 s CPU per tiny reference model.
        "quick": {"n_samples": 100, "eps": (0.05, 0.1, 0.2), "pgd_steps": 10, "apgd_steps": 20, "apgd_targets": 3,
                  "restarts": 1, "random_search_queries": 100, "adversarial_training": ()},
        # GPU: the whole test split, a finer eps grid, AutoAttack-strength settings, the three AT recipes.
        "full": {"n_samples": 10000, "eps": (0.02, 0.05, 0.1, 0.15, 0.2, 0.3), "pgd_steps": 50, "apgd_steps": 100,
                 "apgd_targets": 9, "restarts": 3, "random_search_queries": 1000, "transfer_attack": True,
                 "hotflip_candidates": 32, "adversarial_training": ("fgsm_rs", "pgd_at", "trades")},
    }

    def applicable(self, model: ModelHandle, data: Any) -> str | None:
        reason = super().applicable(model, data)
        if reason:
            return reason
        if model.output != "logits":
            return f"suite 'robustness' needs a classifier returning logits (B, K), got output {model.output!r}"
        return None

    # ------------------------------------------------------------------ run
    def run(self, model: ModelHandle, data: Any, ctx: RunContext) -> Any:
        from workbench.torch_utils import derive_seed

        reason = self.applicable(model, data)
        if reason:
            return ctx.skip(reason)
        p = self.params
        n = ctx.limit(len(data.test), p.n_samples)
        attacked = data.test.subset(ctx.sample_rows(len(data.test), n, 17))
        metrics: list[MetricRecord] = []
        summary: dict[str, Any] = {
            "modality": data.modality, "norm": p.norm, "eps": list(p.eps), "attacks": list(p.attacks),
            "class_names": list(data.class_names) if data.class_names else [str(k) for k in range(data.num_classes or 0)],
            "bounds": list(data.bounds) if data.bounds else None, "n": n, "n_attacked": n, "variants": {}, "notes": [],
        }
        if data.modality == "tabular" and data.bounds is None:
            summary["notes"].append("tabular inputs have no declared bounds: attacks are unbounded (eps in train-std units)")
        seed_of = lambda *keys: derive_seed(ctx.seed, *map(str, keys))  # noqa: E731

        transfer = None
        if p.transfer_attack and p.masking_checks and model.trainer is not None:
            try:
                transfer = model.trainer(seed=ctx.seed + 1)
            except Exception as exc:  # a failed copy only removes the transfer check
                summary["notes"].append(f"transfer attack skipped: training a copy failed ({exc})")
        elif p.transfer_attack and p.masking_checks:
            summary["notes"].append("transfer attack skipped: the model has no trainer (cannot train a copy)")

        variants: list[tuple[str, nn.Module | None, dict[str, Any]]] = [
            ("standard", model.module, {"train_seconds": model.train_seconds, "time_source": "trainer"})
        ]
        train_eps = p.training_eps if p.training_eps is not None else _middle(p.eps)
        for recipe in p.adversarial_training:
            info: dict[str, Any] = {"recipe": recipe, "training_eps": train_eps}
            if model.trainer is None:
                variants.append((recipe, None, {**info, "error": "the model has no trainer (a user model that cannot be retrained)"}))
                continue
            params = {"eps": train_eps, "norm": p.norm, "bounds": list(data.bounds) if data.bounds else None}
            if getattr(model, "embedding", None):  # the recipe hooks the layer the plan names
                params["embedding"] = model.embedding
            t0 = time.perf_counter()
            try:
                module_v = model.trainer(recipe=recipe, recipe_params=params, epochs=p.training_epochs)
            except Exception as exc:
                variants.append((recipe, None, {**info, "error": f"training failed: {type(exc).__name__}: {exc}"}))
                continue
            wall = time.perf_counter() - t0
            secs = getattr(module_v, "train_seconds", None)
            info.update(train_seconds=secs if secs is not None else wall,
                        time_source="trainer" if secs is not None else "wall clock of trainer() (a cache hit is fast)",
                        trained_with=_describe_recipe(recipe, params, p),
                        history=getattr(module_v, "train_history", None))
            variants.append((recipe, module_v, info))

        examples_saved = False
        for variant, module_v, info in variants:
            vtags = {"variant": variant}
            if module_v is None:
                metrics.append(MetricRecord.unavailable("robust_accuracy", info["error"], higher_is_better=True,
                                                        unit="fraction", tags={**vtags, "attack": "worst_case"}))
                summary["variants"][variant] = {"error": info["error"]}
                continue
            out = _attack_variant(module_v, data, attacked, p, ctx, variant, seed_of, transfer,
                                  save_examples=not examples_saved and p.n_examples > 0,
                                  embedding=getattr(model, "embedding", None),
                                  attack_fn=getattr(self, "_attack_replay", {}).get(variant))
            metrics += out["metrics"]
            if out.get("examples") is not None:
                ctx.save_artifact("adversarial_examples", out["examples"])
                examples_saved = True
            secs = info.get("train_seconds")
            if secs is None:
                metrics.append(MetricRecord.unavailable(
                    "training_time", "training time unknown (model loaded from a checkpoint or built by the user)",
                    higher_is_better=False, unit="s", tags=vtags))
            else:
                metrics.append(MetricRecord(name="training_time", value=float(secs), higher_is_better=False, unit="s",
                                            tags={**vtags, "source": info.get("time_source", "trainer")}))
            summary["variants"][variant] = {**out["summary"], "train_seconds": secs,
                                            "trained_with": info.get("trained_with", "standard training")}
            if variant != "standard":  # catastrophic overfitting, per training epoch
                from workbench.suites.robustness.training import overfitting_report

                co_records, co_summary = overfitting_report(info.get("history"), variant, info.get("recipe", variant))
                metrics += co_records
                summary["variants"][variant]["catastrophic_overfitting"] = co_summary
        if "masking" in summary["variants"].get("standard", {}):
            ctx.save_artifact("masking_flags", {v: s.get("masking", []) for v, s in summary["variants"].items()})

        if data.modality == "tokens":
            if "embedding_layer" in summary["variants"].get("standard", {}):
                summary["embedding_layer"] = summary["variants"]["standard"]["embedding_layer"]
                summary["eps_meaning"] = EPS_MEANING[p.norm]
            if p.substitutions:
                metrics += _token_substitutions(model, data, attacked, p, ctx, summary)
        ctx.save_artifact("robustness_summary", summary)
        return ctx.result(metrics, config=self.config())

    # Headline: robust accuracy at each eps > 0, the worst case over attacks (this suite
    # reports its own per-example worst case as attack="worst_case"); the masking-check
    # attacks and the clean point (eps = 0) stay in the full table.
    headline_metrics: ClassVar[tuple[str, ...]] = ("robust_accuracy",)
    headline_worst_case: ClassVar[dict[str, str]] = {"robust_accuracy": "attack"}
    headline_detail_tags: ClassVar[frozenset[str]] = frozenset(
        {"steps", "restarts", "targets", "role", "attacks", "eps_absolute"})

    @classmethod
    def is_headline(cls, metric: dict[str, Any]) -> bool:
        tags = metric.get("tags") or {}
        if tags.get("role") == "masking_check":
            return False
        try:
            if tags.get("eps") is not None and float(tags["eps"]) == 0.0:
                return False
        except (TypeError, ValueError):
            pass
        return super().is_headline(metric)

    def cost(self, model: ModelHandle, data: Any, ctx: RunContext) -> list:
        from workbench.suites.robustness.cost import robustness_cost

        return robustness_cost(self.params, model, data, ctx)

    # Sharding (Ray): one piece per group of (eps, attack) units of the standard model; the
    # driver replays their adversarial points, so the per-example worst case is unchanged.
    def shards(self, model: ModelHandle, data: Any, ctx: RunContext, n_shards: int) -> list[Any] | None:
        from workbench.suites.robustness import sharding

        return sharding.pieces(self, model, data, ctx, n_shards)

    def run_shard(self, model: ModelHandle, data: Any, ctx: RunContext, shard: Any) -> Any:
        from workbench.suites.robustness import sharding

        return sharding.run_piece(self, model, data, ctx, shard)

    def combine(self, model: ModelHandle, data: Any, ctx: RunContext, parts: Any) -> Any:
        from workbench.suites.robustness import sharding

        return sharding.combine(self, model, data, ctx, parts)

    @classmethod
    def figures(cls, result: dict[str, Any], run_dir: Path) -> list[tuple[str, Any]]:
        from workbench.suites.robustness.figures import robustness_figures

        return robustness_figures(result, Path(run_dir))


# ---------------------------------------------------------------------- helpers


def _middle(values: tuple[float, ...]) -> float:
    positive = [v for v in values if v > 0] or list(values)
    return positive[(len(positive) - 1) // 2]


def _describe_recipe(recipe: str, params: dict[str, Any], p: Any) -> str:
    steps = {"pgd_at": "PGD-7", "fgsm_rs": "FGSM-RS (1 step)", "trades": "TRADES PGD-7 on KL"}[recipe]
    return f"{steps} at eps={params['eps']:g} ({p.norm}); evaluated with {'+'.join(p.attacks)} (stronger)"


EPS_MEANING = {
    "linf": "token models: eps is relative to the root-mean-square coordinate of the clean embeddings of the attacked "
            "sample (eps_absolute = eps x RMS); each embedding coordinate moves by at most eps_absolute",
    "l2": "token models: eps is relative to the mean L2 norm of a whole embedded sequence (T x C values) of the "
          "attacked sample (eps_absolute = eps x mean norm); each sequence's embedding moves by at most eps_absolute",
}


def _attack_input(module: nn.Module, data: Any, x: torch.Tensor, norm: str, embedding: str | None,
                  batch_size: int | None = None) -> dict[str, Any]:
    """What the attacks see: the input itself, or the token embeddings through a hook on the
    model's embedding layer (`workbench.embedding`), for any nn.Module."""
    from workbench import embedding as E
    from workbench.torch_utils import frozen_eval

    if data.modality == "tokens":
        try:
            name, layer = E.find_embedding_layer(module, x[:8], path=embedding)
            space = E.TokenEmbeddingModel(module, layer, x, name)
            with frozen_eval(module):
                e = space.clean(batch_size)
        except ModelError as exc:
            return {"error": f"token model cannot be attacked in embedding space: {exc}"}
        scale = E.embedding_eps_scale(e, norm)
        relative_to = "rms_embedding_coordinate" if norm == "linf" else "mean_sequence_embedding_norm"
        return {"model": space, "x": e, "bounds": None, "scale": scale, "layer": name,
                "tags": {"space": "embedding", "eps_relative_to": relative_to}}
    bounds = tuple(data.bounds) if data.bounds else None
    return {"model": module, "x": x, "bounds": bounds, "scale": 1.0, "tags": {}}


def _attack_variant(module: nn.Module, data: Any, test: Any, p: Any, ctx: RunContext, variant: str, seed_of: Any,
                    transfer: nn.Module | None, *, save_examples: bool, embedding: str | None = None,
                    attack_fn: Any = None) -> dict[str, Any]:
    from workbench.suites.robustness import functional as A
    from workbench.suites.robustness.masking import gradient_masking_checks
    from workbench.suites.robustness.restarts import RANDOM_START_ATTACKS, attack_restart_records
    from workbench.torch_utils import module_device

    device = module_device(module)
    x, y = test.x.to(device), test.y.to(device)
    vt = {"variant": variant}
    metrics: list[MetricRecord] = []
    space = _attack_input(module, data, x, p.norm, embedding, ctx.batch_size)
    if "error" in space:
        metrics.append(MetricRecord.unavailable("robust_accuracy", space["error"], higher_is_better=True,
                                                unit="fraction", tags={**vt, "attack": "worst_case"}))
        return {"metrics": metrics, "summary": {"error": space["error"]}}
    model, xin, bounds, scale, stags = space["model"], space["x"], space["bounds"], space["scale"], space["tags"]
    bs = ctx.batch_size
    logits = A.predict_logits(model, xin, batch_size=bs)
    clean = (logits.argmax(1) == y).cpu()
    metrics.append(fraction("clean_accuracy", clean, {**vt}))
    idx = clean.nonzero().squeeze(1).to(device)  # only clean-correct points can be flipped
    k = data.num_classes or logits.shape[1]
    class_names = list(data.class_names) if data.class_names else [str(c) for c in range(k)]
    check_eps = p.masking_eps if p.masking_eps is not None else _middle(p.eps)
    if check_eps not in p.eps and p.masking_checks:
        ctx.log(f"robustness: masking_eps={check_eps} is not in the eps grid; the checks run at it separately")
    eps_list = sorted(set(p.eps) | ({check_eps} if p.masking_checks else set()))
    curves: dict[str, dict[str, list[float]]] = {}
    restart_rows: list[dict[str, Any]] = []
    masking_out: list[dict[str, Any]] = []
    examples = None
    norm_unit = f"{p.norm} norm, " + ("relative to the embedding scale" if stags else "input units")
    bar = ctx.progress(len(eps_list) * len(p.attacks) + int(p.masking_checks), f"attacks {variant}",
                       unit="(eps, attack)")
    for eps in eps_list:
        eps_abs = eps * scale
        etags = {**vt, "eps": eps, "norm": p.norm, **stags}
        if stags:
            etags["eps_absolute"] = round(eps_abs, 6)
        correct: dict[str, torch.Tensor] = {}
        advs: dict[str, torch.Tensor] = {}
        for attack in p.attacks:
            gen = torch.Generator().manual_seed(seed_of(variant, eps, attack))
            x_adv = xin.clone()
            if idx.numel() > 0 and eps > 0:
                # attack_fn: the adversarial points computed by the shards (see sharding.py)
                x_adv[idx] = (attack_fn or _run_attack)(attack, A.restrict(model, idx), xin[idx], y[idx], eps_abs,
                                                        bounds, p, gen, bs)
            c = clean.clone()
            if idx.numel() > 0:
                c[idx.cpu()] = (A.predict_logits(A.restrict(model, idx), x_adv[idx], batch_size=bs).argmax(1)
                                == y[idx]).cpu()
            correct[attack], advs[attack] = c, x_adv
            atags = {**etags, "attack": attack, **attack_tags(attack, p)}
            if eps in p.eps:
                metrics += attack_metrics(c, clean, x_adv - xin, y.cpu(), atags, class_names, p.norm, scale, norm_unit)
                append_curve(curves, attack, eps, c)
                if attack in RANDOM_START_ATTACKS:  # spread over random starts beside the sampling CI
                    r_recs, r_row = attack_restart_records(attack, model, xin, y, idx, clean, eps_abs, bounds, p,
                                                           seed_of(variant, eps, attack), bs, atags)
                    metrics += r_recs
                    restart_rows.append({"attack": attack, "eps": eps, **r_row})
            bar.update(note=f"{attack} eps={eps:g}")
        worst = clean.clone()
        first_fool = torch.full_like(y.cpu(), -1)
        for j, attack in enumerate(p.attacks):
            newly = worst & ~correct[attack]
            first_fool[newly] = j
            worst &= correct[attack]
        included = list(p.attacks)
        if p.masking_checks and eps == check_eps:
            gen = torch.Generator().manual_seed(seed_of(variant, eps, "masking"))
            known = {"clean": clean, **{a: correct[a] for a in ("fgsm", "pgd", "apgd_ce", "apgd_t") if a in correct}}
            curve_pts = {a: list(zip(c["eps"], c["accuracy"])) for a, c in curves.items()}
            tmodel = None
            if transfer is not None and not stags:
                tmodel = transfer
            rep = gradient_masking_checks(
                model, xin, y, eps=eps_abs, norm=p.norm, bounds=bounds, num_classes=k, known=known,
                curves=None, pgd_steps=p.pgd_steps, pgd_restarts=p.restarts, apgd_steps=p.apgd_steps,
                apgd_targets=min(p.apgd_targets, 3), queries=p.random_search_queries,
                tolerance=p.masking_tolerance, dlr_gap=p.dlr_gap, transfer_model=tmodel, generator=gen, batch_size=bs,
            )
            masking_eps_rep = (rep, curve_pts, etags)
            bar.update(note=f"masking checks eps={eps:g}")
            for extra, c in rep.correct.items():
                if extra == "pgd_unbounded":
                    continue
                metrics.append(fraction("robust_accuracy", c, {**etags, "attack": extra, "role": "masking_check"}))
                worst &= c
                included.append(extra)
        wtags = {**etags, "attack": "worst_case", "attacks": "+".join(included)}
        if eps in p.eps:
            metrics += attack_metrics(worst, clean, None, y.cpu(), wtags, class_names, p.norm, scale, norm_unit)
            append_curve(curves, "worst_case", eps, worst)
        if save_examples and eps == check_eps:
            examples = adversarial_examples(model, xin, y, clean, worst, first_fool, advs, p, data, x, scale, bs)
    bar.close()
    if p.masking_checks:
        from workbench.suites.robustness.masking import check_increasing

        rep, _, etags = masking_eps_rep
        tol = max(p.masking_tolerance, 2.0 / max(len(y), 1))
        mono = check_increasing({a: list(zip(c["eps"], c["accuracy"])) for a, c in curves.items()}, tol)
        checks = [mono if c.check == "accuracy_increases_with_eps" else c for c in rep.checks]
        for c in checks:
            tags = {**etags, "check": c.check, "reason": c.reason}
            if c.flagged is None:
                metrics.append(MetricRecord.unavailable("gradient_masking_flag", c.reason, higher_is_better=False,
                                                        unit="flag", tags=tags))
            else:
                metrics.append(MetricRecord(name="gradient_masking_flag", value=float(c.flagged), higher_is_better=False,
                                            unit="flag", n=len(y), tags=tags))
        n_flags = sum(1 for c in checks if c.flagged)
        metrics.append(MetricRecord(name="gradient_masking_flags", value=float(n_flags), higher_is_better=False,
                                    unit="checks", n=len(checks), tags={**vt, "eps": check_eps, "norm": p.norm, **stags}))
        masking_out = [c.to_dict() for c in checks]
    summary = {"clean_accuracy": float(clean.float().mean()), "n": int(clean.numel()), "curves": curves,
               "eps_scale": scale, "space": "embedding" if stags else "input", "check_eps": check_eps}
    if "layer" in space:
        summary["embedding_layer"] = space["layer"]
    if p.masking_checks:
        summary["masking"] = masking_out
    summary["restarts"] = restart_rows
    return {"metrics": metrics, "summary": summary, "examples": examples}


def _run_attack(attack: str, model: Any, x: torch.Tensor, y: torch.Tensor, eps: float, bounds: Any, p: Any,
                gen: torch.Generator, bs: int) -> torch.Tensor:
    from workbench.suites.robustness import functional as A

    common = dict(eps=eps, norm=p.norm, bounds=bounds, batch_size=bs)
    if attack == "fgsm":
        return A.fgsm(model, x, y, **common)
    if attack == "pgd":
        return A.pgd(model, x, y, steps=p.pgd_steps, restarts=p.restarts, generator=gen, **common)
    if attack == "apgd_ce":
        return A.apgd(model, x, y, steps=p.apgd_steps, restarts=p.restarts, loss="ce", generator=gen, **common)
    if attack == "apgd_dlr":
        return A.apgd(model, x, y, steps=p.apgd_steps, restarts=p.restarts, loss="dlr", generator=gen, **common)
    if attack == "apgd_t":
        return A.apgd_targeted(model, x, y, steps=p.apgd_steps, n_targets=p.apgd_targets, restarts=p.restarts,
                               generator=gen, **common)
    return A.random_search(model, x, y, queries=p.random_search_queries, generator=gen, **common)


def _token_substitutions(model: ModelHandle, data: Any, attacked: Any, p: Any, ctx: RunContext,
                         summary: dict[str, Any]) -> list[MetricRecord]:
    """The discrete attack on the standard model (`hotflip.py`): `token_flip_rate` and
    `token_robust_accuracy` per budget k, and the artifact `token_substitutions.npz`."""
    from workbench import embedding as E
    from workbench.suites.robustness import functional as A
    from workbench.suites.robustness.hotflip import hotflip
    from workbench.suites.robustness.report import token_substitution_examples, token_substitution_records
    from workbench.torch_utils import module_device

    module = model.module
    tags = {"variant": "standard", "attack": "hotflip", "candidates": p.hotflip_candidates, "space": "tokens"}
    device = module_device(module)
    x, y = attacked.x.to(device), attacked.y.to(device)
    try:
        _, layer = E.find_embedding_layer(module, x[:8], path=getattr(model, "embedding", None))
    except ModelError as exc:
        why = f"token model cannot be searched for substitutions: {exc}"
        return [MetricRecord.unavailable("token_flip_rate", why, higher_is_better=False, unit="fraction", tags=tags)]
    pad = (data.ground_truth or {}).get("pad_id")
    frozen = tuple(int(t) for t in (data.ground_truth or {}).get("relevant_positions", ()))
    if frozen:  # changing a token the label is defined by changes the true label: not an error of the model
        tags["positions"] = "irrelevant_only"
    res = hotflip(module, layer, x, y, max_substitutions=max(p.substitutions), candidates=p.hotflip_candidates,
                  vocab_size=data.vocab_size, exclude_tokens=() if pad is None else (int(pad),),
                  frozen_positions=frozen, batch_size=ctx.batch_size)
    summary["token_substitutions"] = {
        "budgets": list(p.substitutions), "candidates": p.hotflip_candidates, "excluded_tokens": [] if pad is None else [pad],
        "frozen_positions": list(frozen),
        "meaning": "fraction of correctly classified sequences misclassified by a real forward pass after at most k "
                   "token substitutions found by a greedy gradient-guided (HotFlip) search: a lower bound"}
    if p.n_examples > 0:
        clean_logits = A.predict_logits(module, x, batch_size=ctx.batch_size)
        ctx.save_artifact("token_substitutions", token_substitution_examples(
            res, x, y, clean_logits, p.n_examples, getattr(data, "vocab", None)))
    return token_substitution_records(res, p.substitutions, tags)
