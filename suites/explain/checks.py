"""The quality checks that sit next to every explanation, run over all methods of one
model, with typed per-method results (`MethodQuality`) instead of a dict keyed by strings.

Deletion/insertion compare each method with a random control that is its expectation:
`random_orders` random unit orders per example, averaged (one random order per example
put the mean AUC of 8 examples up to 0.08 off its expectation, enough to flip a "beats
random" verdict); the spread over orders is kept beside it. The curves mean nothing, and
are null with the reason, when the input has fewer than two units (every order is the
same, so every method equals the random control) or when "lower after deletion is
better" is undefined (regression outputs can move either way).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from workbench.suite import RunContext

from .config import COMPLETE, GRADIENT, RANDOMISED, SAMPLING, ExplainParams, method_seed
from .methods import explain_method
from .setup import MethodOutput, Setup

if TYPE_CHECKING:
    import numpy as np
    import torch

CURVE_MODES = ("deletion", "insertion")


@dataclass
class MethodQuality:
    """Per-example (N,) quality arrays of one method; a `*_reason` says why its array is
    missing (not applicable, skipped, or failed)."""

    completeness_gap: "np.ndarray | None" = None
    surrogate_r2: "np.ndarray | None" = None
    local_prediction_error: "np.ndarray | None" = None
    auc: dict[str, dict[str, "np.ndarray"]] = field(default_factory=dict)  # mode -> replacement -> (N,)
    randomisation_rank_correlation: "np.ndarray | None" = None
    randomisation_reason: str | None = None
    seed_rank_correlation: "np.ndarray | None" = None
    seed_reason: str | None = None
    infidelity: "np.ndarray | None" = None
    max_sensitivity: "np.ndarray | None" = None
    max_sensitivity_reason: str | None = None
    top_k_precision: "np.ndarray | None" = None
    top_k_reason: str | None = None
    error_bound: "np.ndarray | None" = None  # sampled Shapley: its own 95% error bound per example

    def to_json(self) -> dict[str, Any]:
        """The `quality.json` entry: per-example lists, {replacement: list} for the AUCs,
        reasons as strings."""
        out: dict[str, Any] = {}
        arrays = {"completeness_gap": self.completeness_gap, "surrogate_r2": self.surrogate_r2,
                  "local_prediction_error": self.local_prediction_error,
                  "randomisation_rank_correlation": self.randomisation_rank_correlation,
                  "seed_rank_correlation": self.seed_rank_correlation, "infidelity": self.infidelity,
                  "max_sensitivity": self.max_sensitivity, "top_k_precision": self.top_k_precision,
                  "shapley_error_bound": self.error_bound}
        out.update({k: v.tolist() for k, v in arrays.items() if v is not None})
        for mode, reps in self.auc.items():
            out[f"{mode}_auc"] = {r: a.tolist() for r, a in reps.items()}
        reasons = {"randomisation_rank_correlation_reason": self.randomisation_reason,
                   "seed_rank_correlation_reason": self.seed_reason,
                   "max_sensitivity_reason": self.max_sensitivity_reason,
                   "top_k_precision_reason": self.top_k_reason}
        out.update({k: v for k, v in reasons.items() if v is not None})
        return out


@dataclass
class RandomControl:
    """The random-order control of one (mode, replacement): per example, the mean AUC over
    `orders` random orders (its expectation) and the SD over those orders (N,)."""

    auc: "np.ndarray"
    spread: "np.ndarray"
    orders: int


@dataclass
class Quality:
    """All checks of one run. curves: (mode, method, replacement) -> (N, S+1), with method
    "random" for the control's expected curve; curve_reason: why deletion/insertion are
    null (None when computed); relevant: ground-truth units when the data has them."""

    methods: dict[str, MethodQuality]
    random: dict[str, dict[str, RandomControl]] = field(default_factory=dict)
    curves: dict[tuple[str, str, str], "np.ndarray"] = field(default_factory=dict)
    curve_reason: str | None = None
    relevant: list[int] | None = None

    def to_json(self) -> dict[str, Any]:
        out = {m: q.to_json() for m, q in self.methods.items()}
        if self.random:
            out["random"] = {}
            for mode, reps in self.random.items():
                out["random"][f"{mode}_auc"] = {r: c.auc.tolist() for r, c in reps.items()}
                out["random"][f"{mode}_auc_spread"] = {r: c.spread.tolist() for r, c in reps.items()}
        return out


def replacement_kinds(s: Setup) -> list[str]:
    return [r for r in s.params.replacements if not (r == "blur" and s.modality != "image")]


def curve_reason(s: Setup, n_units: int) -> str | None:
    """Why deletion/insertion AUCs mean nothing here, or None."""
    if n_units < 2:
        return (f"deletion/insertion need at least 2 input units to order, this input has {n_units}: every "
                "order is the same, so every method equals the random control")
    if not s.classification:
        return ("deletion/insertion follow the regression output, which removing relevant units can raise or "
                "lower: 'lower after deletion is better' is undefined for regression")
    return None


def check_stages(outputs: dict[str, MethodOutput], s: Setup, p: ExplainParams, n_units: int,
                 curves: bool) -> list[tuple[str, float]]:
    """The steps of `run_checks` that call the model, in its order, each over the N examples:
    (what, forward-pass equivalents per example), the units of its progress."""
    from .cost import method_work, units

    checks, m = set(p.quality), units(p, s.data)
    out: list[tuple[str, float]] = []
    if curves:
        for rep in replacement_kinds(s):
            for mode in (c for c in CURVE_MODES if c in checks):
                out += [(f"{mode} {rep} {meth}", p.curve_steps + 1.0) for meth in outputs]
                out.append((f"{mode} {rep} random", (p.curve_steps + 1.0) * p.random_orders))
    if n_units >= 2 and "sanity" in checks:
        out += [(f"sanity {meth}", method_work(meth, p, m) if meth not in SAMPLING or p.sanity_sampling else 0.0)
                for meth in outputs]
    if n_units >= 2 and "stability" in checks:
        out += [(f"stability {meth}", method_work(meth, p, m)) for meth in outputs if meth in RANDOMISED]
    if "infidelity" in checks:
        out += [(f"infidelity {meth}", float(p.n_perturb)) for meth in outputs]
    if "sensitivity" in checks:
        out += [(f"sensitivity {meth}", p.n_perturb * method_work(meth, p, m) if meth in GRADIENT else 0.0)
                for meth in outputs]
    return out


def run_checks(outputs: dict[str, MethodOutput], s: Setup, ctx: RunContext, p: ExplainParams) -> Quality:
    """Every check in `p.quality` for every method in `outputs`, with its own progress
    (steps x examples, weighted by their model passes)."""
    n_units = int(s.units.max()) + 1
    if s.pad is not None:  # the units that count are the real tokens; the longest text decides
        n_units = int(s.n_players().max())
    modes = [mode for mode in CURVE_MODES if mode in p.quality]
    curves = bool(modes and outputs) and curve_reason(s, n_units) is None
    stages = check_stages(outputs, s, p, n_units, curves)
    work = s.n * sum(max(w, 1e-9) for _, w in stages)
    with ctx.progress(s.n * len(stages), "quality checks", unit="steps",
                      work_total=work if stages else None) as bar:
        weights = dict(stages)

        def stage(key: str) -> None:  # one step over the N examples begins
            bar.stage(s.n, max(weights.get(key, 0.0), 1e-9), note=key)

        q = _run_checks(outputs, s, ctx, p, n_units, modes, curves, stage, bar)
        bar.end_stage()
    return q


def _run_checks(outputs: dict[str, MethodOutput], s: Setup, ctx: RunContext, p: ExplainParams, n_units: int,
                modes: list[str], curves: bool, stage: Any, bar: Any) -> Quality:
    import numpy as np

    from .gradients import per_unit
    from .quality import completeness_gap

    view = s.model_view(s.module)
    q = Quality(methods={m: MethodQuality() for m in outputs})
    checks = set(p.quality)
    f_x = view.explained(view.z, s.target).numpy()
    unit_scores = {m: per_unit(o.attr, s.space, s.modality).double().numpy() for m, o in outputs.items()}
    for m, o in outputs.items():
        mq = q.methods[m]
        if "completeness" in checks and m in COMPLETE and o.ref is not None:
            total = o.attr.reshape(s.n, -1).double().sum(1).numpy()
            mq.completeness_gap = completeness_gap(total, f_x, o.ref)
        if m == "lime":
            mq.surrogate_r2 = o.extra["r2"]
            mq.local_prediction_error = o.extra["local_error"]
        if "error_bound" in o.extra:
            mq.error_bound = o.extra["error_bound"]
    real = s.real_units()  # (N, U) players, or None: every unit
    if modes and outputs:
        q.curve_reason = curve_reason(s, n_units)
        if curves:
            _curves(q, outputs, unit_scores, modes, s, ctx, p, stage)
    if n_units < 2:
        one = f"a rank correlation needs at least 2 units; this input has {n_units}"
        for m in outputs:
            if "sanity" in checks:
                q.methods[m].randomisation_reason = one
            if "stability" in checks and m in RANDOMISED:
                q.methods[m].seed_reason = one
        checks -= {"sanity", "stability"}
    if "sanity" in checks and outputs:
        _sanity(q, outputs, unit_scores, s, ctx, p, stage, bar)
    if "stability" in checks:
        _stability(q, outputs, unit_scores, s, ctx, stage, bar)
    if "infidelity" in checks:
        from .quality import infidelity_scores

        for m, o in outputs.items():
            stage(f"infidelity {m}")
            q.methods[m].infidelity = infidelity_scores(view.em, view.z, o.attr.to(view.z.device), s.target,
                                                        noise_std=0.1 * s.scale, n_samples=p.n_perturb,
                                                        seed=ctx.seed + 17, mask=_player_elements(s))
    if "sensitivity" in checks:
        _sensitivity(q, outputs, s, ctx, p, stage)
    if "ground_truth" in checks:
        from .quality import top_k_precision

        gt = s.data.ground_truth or {}
        relevant = gt.get("relevant_features") if s.modality == "tabular" else gt.get("relevant_positions")
        if relevant and s.modality in ("tabular", "tokens"):
            q.relevant = list(relevant)
            for m in outputs:
                if len(set(relevant)) >= n_units:
                    q.methods[m].top_k_reason = (f"all {n_units} units are relevant: top-k precision is 1 "
                                                 "by construction")
                else:
                    q.methods[m].top_k_precision = top_k_precision(unit_scores[m], relevant, mask=real)
    return q


def _player_elements(s: Setup) -> "torch.Tensor | None":
    """(N, T, 1) 1.0 on real tokens, 0.0 on pads (what noise may touch); None without padding."""
    return None if s.pad is None else (~s.pad)[:, :, None].float()


def _curves(q: Quality, outputs: dict[str, MethodOutput], unit_scores: dict[str, "np.ndarray"], modes: list[str],
            s: Setup, ctx: RunContext, p: ExplainParams, stage: Any) -> None:
    """Deletion/insertion AUCs of every method and of the random control's expectation."""
    import numpy as np
    import torch

    from .quality import curve_auc, order_units, perturbation_curves, replacement_inputs

    view = s.model_view(s.module)
    rng = np.random.default_rng(ctx.seed + 7)
    real = s.real_units()  # (N, U) players (real tokens) or None
    players = None if real is None else real.sum(1)
    if real is None:
        orders = {m: order_units(sc, rng) for m, sc in unit_scores.items()}
    else:  # pads go last, after every player: the curves stop at the players (`n_players`)
        # a NaN score (an example the method could not explain; its AUCs are NaN) would sort
        # after the pads and put a pad among the units acted on: order it as a tie instead
        orders = {m: order_units(np.where(real, np.nan_to_num(sc, nan=0.0), -np.inf), rng)
                  for m, sc in unit_scores.items()}
    n_units = next(iter(unit_scores.values())).shape[1]

    def random_order(i: int) -> "np.ndarray":
        perm = rng.permutation(n_units)
        return perm if real is None else perm[np.argsort(~real[i][perm], kind="stable")]  # players first

    random_orders = [np.stack([random_order(i) for i in range(s.n)]) for _ in range(p.random_orders)]
    # an example with fewer than 2 players has one order: its AUCs are NaN (left out of the means)
    too_few = np.zeros(s.n, dtype=bool) if players is None else players < 2
    unexplained = {m: ~np.isfinite(sc).all(1) for m, sc in unit_scores.items()}  # NaN attributions: NaN AUCs

    def track(inputs: "torch.Tensor", tgt: "torch.Tensor") -> "torch.Tensor":
        with torch.no_grad():
            return view.tracked(inputs, tgt if s.target is not None else None)

    tgt = s.target if s.target is not None else torch.zeros(s.n, dtype=torch.long)

    def curves_of(order: "np.ndarray", rep: "torch.Tensor", mode: str) -> "np.ndarray":
        return perturbation_curves(track, view.z, tgt, order, s.units, rep, mode=mode, n_steps=p.curve_steps,
                                   batch_size=max(s.batch_size, 256), n_players=players)

    def auc(curves: "np.ndarray", leave_out: "np.ndarray" = too_few) -> "np.ndarray":
        a = curve_auc(curves)
        return np.where(leave_out, np.nan, a) if leave_out.any() else a

    for rep_kind in replacement_kinds(s):
        rep = replacement_inputs(rep_kind, view.z, train_z=view.train_z, modality=s.modality,
                                 rng=np.random.default_rng(ctx.seed + 11), train_pad=s.train_pad)
        for mode in modes:
            for m, order in orders.items():
                stage(f"{mode} {rep_kind} {m}")
                c = curves_of(order, rep, mode)
                q.curves[(mode, m, rep_kind)] = c
                q.methods[m].auc.setdefault(mode, {})[rep_kind] = auc(c, too_few | unexplained[m])
            stage(f"{mode} {rep_kind} random")
            per_order = np.stack([curves_of(o, rep, mode) for o in random_orders])  # (R, N, S+1)
            q.curves[(mode, "random", rep_kind)] = per_order.mean(0)
            aucs = auc(per_order)  # (R, N)
            spread = aucs.std(0, ddof=1) if len(random_orders) > 1 else np.full(s.n, np.nan)
            q.random.setdefault(mode, {})[rep_kind] = RandomControl(aucs.mean(0), spread, len(random_orders))


def _sanity(q: Quality, outputs: dict[str, MethodOutput], unit_scores: dict[str, "np.ndarray"], s: Setup,
            ctx: RunContext, p: ExplainParams, stage: Any, bar: Any) -> None:
    """Model-parameter randomisation: rank correlation with a re-initialised copy's explanation."""
    from .gradients import per_unit
    from .quality import rank_correlation, randomised_copy

    rand = randomised_copy(s.module, seed=ctx.seed + 13)
    rview = s.model_view(rand)
    for m in outputs:
        mq = q.methods[m]
        stage(f"sanity {m}")
        if m in SAMPLING and not p.sanity_sampling:
            mq.randomisation_reason = "skipped: sanity_sampling is off in this profile"
            continue
        try:
            ro = explain_method(m, s, rview, method_seed(ctx.seed, m), progress=bar)
        except Exception as exc:  # noqa: BLE001 - a failure is the reason of a null record
            mq.randomisation_reason = f"{type(exc).__name__}: {exc}"
            continue
        if ro is None:
            continue
        mq.randomisation_rank_correlation = rank_correlation(
            unit_scores[m], per_unit(ro.attr, s.space, s.modality).double().numpy(), absolute=True,
            mask=s.real_units())
    s.views.pop(id(rand), None)


def _stability(q: Quality, outputs: dict[str, MethodOutput], unit_scores: dict[str, "np.ndarray"], s: Setup,
               ctx: RunContext, stage: Any, bar: Any) -> None:
    """Rank correlation of a randomised method's explanations under two seeds."""
    from .gradients import per_unit
    from .quality import rank_correlation

    view = s.model_view(s.module)
    for m, o in outputs.items():
        if m not in RANDOMISED:
            continue
        mq = q.methods[m]
        stage(f"stability {m}")
        if m == "shapley" and o.tags.get("estimator") == "exact":
            mq.seed_reason = "exact enumeration is deterministic (no sampling)"
            continue
        try:
            ro = explain_method(m, s, view, method_seed(ctx.seed, m) + 1, progress=bar)
        except Exception as exc:  # noqa: BLE001
            mq.seed_reason = f"{type(exc).__name__}: {exc}"
            continue
        mq.seed_rank_correlation = rank_correlation(
            unit_scores[m], per_unit(ro.attr, s.space, s.modality).double().numpy(), absolute=False,
            mask=s.real_units())


def _sensitivity(q: Quality, outputs: dict[str, MethodOutput], s: Setup, ctx: RunContext,
                 p: ExplainParams, stage: Any) -> None:
    """captum's max-sensitivity for the gradient methods (re-running a sampler per
    perturbation is outside the budget)."""
    from .gradients import gradient_attribution
    from .quality import _noise_mask, max_sensitivity_scores

    view = s.model_view(s.module)
    for m in outputs:
        mq = q.methods[m]
        stage(f"sensitivity {m}")
        if m not in GRADIENT:
            mq.max_sensitivity_reason = "re-running a sampling explainer per perturbation is outside the budget"
            continue

        def explain(inputs: "torch.Tensor", target: Any = None, baselines: Any = None, _m: str = m):  # noqa: ANN202
            a = gradient_attribution(_m, view.em, inputs, target=target, baseline=baselines,
                                     modality=s.modality, n_steps=p.ig_steps,
                                     smoothgrad_samples=p.smoothgrad_samples,
                                     smoothgrad_stdev=p.smoothgrad_noise * s.scale,
                                     seed=method_seed(ctx.seed, _m), batch_size=s.batch_size,
                                     keep=None if real is None else _noise_mask(real, inputs) == 0)
            return a if real is None else a * _noise_mask(real, a)  # pads are 0, as in the explanation

        real = _player_elements(s)
        try:
            mq.max_sensitivity = max_sensitivity_scores(
                explain, view.z, target=s.target, baselines=view.baseline, radius=0.02 * s.scale,
                n_samples=p.n_perturb, seed=ctx.seed + 19, mask=real)
        except Exception as exc:  # noqa: BLE001
            mq.max_sensitivity_reason = f"failed: {type(exc).__name__}: {exc}"
