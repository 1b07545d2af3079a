"""The explain suite's model passes, for `workbench.estimate` (no model call is made).

Per explained example and method: a gradient method is a few forward+backward passes
(IG: `ig_steps`, SmoothGrad: `smoothgrad_samples`), occlusion one forward per unit, LIME
`lime_samples` forwards, Shapley min(2^M x R, shap_budget) forwards (R background inputs
with the interventional value function); quality checks re-evaluate the model on every
curve point, random order, perturbation and randomised model. Upper end: a method that
does not apply to the model is counted as if it ran."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workbench.estimate import Work, passes

from .config import GRADIENT, RANDOMISED

if TYPE_CHECKING:
    from workbench.data.base import Dataset
    from workbench.suite import ModelHandle, RunContext

# forward+backward passes per example of each gradient method (occlusion is forwards)
_GRADIENT_PASSES = {"saliency": 1, "input_x_gradient": 1, "deeplift": 2}


def units(p: Any, data: "Dataset") -> int:
    """The players M of an explanation: superpixels, features or tokens."""
    shape = tuple(data.test.x.shape[1:]) if len(data.test) else tuple(data.train.x.shape[1:])
    if data.modality == "image":
        return int(p.n_segments)
    return int(shape[0]) if shape else 1


def method_passes(method: str, p: Any, m: int) -> tuple[float, float, str]:
    """(forward, backward, driver) per example of one method."""
    r = p.shap_background if p.shap_value_function == "background" else 1
    if method == "integrated_gradients":
        return 0.0, float(p.ig_steps), "ig_steps"
    if method == "smoothgrad":
        return 0.0, float(p.smoothgrad_samples), "smoothgrad_samples"
    if method == "occlusion":
        return float(m + 1), 0.0, "n_segments"
    if method in _GRADIENT_PASSES:
        return 0.0, float(_GRADIENT_PASSES[method]), ""
    if method == "lime":
        return float(p.lime_samples), 0.0, "lime_samples"
    if method in ("shapley", "shap_kernel"):
        return float(min(2.0 ** min(m, 60) * r, p.shap_budget)), 0.0, "shap_budget"
    if method == "shap_gradient":
        return 0.0, float(p.shap_gradient_samples), "shap_gradient_samples"
    if method == "shap_deep":
        return 0.0, float(p.shap_background), "shap_background"
    return 1.0, 0.0, ""  # attention, rollout: one forward with the maps


#: a forward+backward pass counted as this many forwards in progress weights
BACKWARD_WEIGHT = 3.0


def method_work(method: str, p: Any, m: int) -> float:
    """Forward-pass equivalents of explaining one example with `method` (a forward+backward
    counts BACKWARD_WEIGHT): the weight of its units in the suite's progress ETA."""
    fwd, bwd, _ = method_passes(method, p, m)
    return max(1.0, fwd + BACKWARD_WEIGHT * bwd)


def method_progress(ctx: "RunContext", p: Any, setup: Any, methods: Any, what: str) -> Any:
    """The progress of explaining `setup`'s N examples with each of `methods` in turn, its
    ETA weighted by `method_work` (open each method with `stage(N, method_work(...))`)."""
    m = units(p, setup.data)
    work = setup.n * sum(method_work(x, p, m) for x in methods)
    return ctx.progress(len(methods) * setup.n, what, unit="explanations", work_total=work or None)


def explain_cost(p: Any, model: "ModelHandle", data: "Dataset", ctx: "RunContext") -> list[Work]:
    n = ctx.limit(len(data.test), p.n_examples)
    m = units(p, data)
    bs = ctx.batch_size
    methods = [x for x in p.methods if data.modality == "tokens" or x not in ("attention", "rollout")]
    work: list[Work] = []
    for method in methods:
        fwd, bwd, driver = method_passes(method, p, m)
        reruns = 1
        if "sanity" in p.quality and (method in GRADIENT or p.sanity_sampling):
            reruns += 1
        if "stability" in p.quality and method in RANDOMISED:
            reruns += 1
        if "sensitivity" in p.quality and method in GRADIENT:
            reruns += p.n_perturb
        work += passes("forward", n * fwd * reruns, bs, driver or "n_examples")
        work += passes("backward", n * bwd * reruns, bs, driver or "n_examples")
    curves = sum(1 for c in ("deletion", "insertion") if c in p.quality)
    if curves:
        per_curve = (p.curve_steps + 1) * len(p.replacements)
        work += passes("forward", n * curves * per_curve * len(methods), bs, "curve_steps")
        work += passes("forward", n * curves * per_curve * p.random_orders, bs, "random_orders")
    if "infidelity" in p.quality:
        work += passes("forward", n * p.n_perturb * len(methods), bs, "n_perturb")
    return work
