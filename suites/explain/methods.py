"""The attribution methods: captum's gradient methods, LIME, exact/sampled Shapley and
shap's explainers, attention rollout; each returns a `MethodOutput` in the attribution
space (element attributions; a group's value spread evenly over its elements)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workbench.errors import ConfigError, DataError

from .config import GRADIENT, KNOWN_NONLINEAR, PAD_NOTE
from .setup import MethodOutput, Setup, View

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

# z of a two-sided 95% normal interval: the sampled Shapley error bound is ERROR_Z x its standard error
ERROR_Z = 1.96


def _spread(values: "torch.Tensor", groups: "torch.Tensor", shape: tuple[int, ...]) -> "torch.Tensor":
    """Group values (M,) -> element attributions (*shape): value / group size on each element;
    exactly 0 on elements that are no player (group NOT_A_PLAYER: padding)."""
    import torch

    g = groups.expand(shape).reshape(-1)
    player = g >= 0
    counts = torch.bincount(g[player], minlength=values.shape[0]).clamp_min(1).to(values.dtype)
    out = torch.zeros(g.shape, dtype=values.dtype)
    out[player] = (values / counts)[g[player]]
    return out.reshape(shape)


def library_tag(method: str) -> str:
    from importlib.metadata import version

    if method in GRADIENT:
        return f"captum {version('captum')}"
    if method == "lime":
        return f"lime {version('lime')}"
    if method.startswith("shap_"):
        return f"shap {version('shap')}"
    if method == "shapley":
        return "workbench (exact enumeration / batched Kernel SHAP)"
    return "workbench"


def explain_method(method: str, s: Setup, view: View, seed: int, progress: Any = None) -> MethodOutput | None:
    """Attributions of `method` for the setup's N examples; `progress` (a
    `workbench.progress.Progress`, optional) is told of each example where a method
    explains them one at a time (Shapley values, Kernel SHAP).

    With token padding (`s.pad`), pads are no players: the perturbation methods never
    change them and give them nothing, the baseline methods (IG, DeepLift, occlusion)
    start from a baseline that keeps them (x - baseline = 0 there, so their share is
    exactly 0 and completeness holds), and whatever a gradient method puts on a pad
    (saliency, input x gradient, SmoothGrad, shap's gradient explainers) is set to 0;
    the tag `pads` says so."""
    out = _explain(method, s, view, seed, progress)
    if out is None or s.pad is None:
        return out
    pad = s.pad.to(out.attr.device)
    if out.attr.shape[:2] != pad.shape:
        raise DataError(f"Expected token attributions (N, T, ...) matching the pad mask {tuple(pad.shape)}, "
                        f"got {tuple(out.attr.shape)}.")
    out.attr = out.attr.masked_fill(pad.reshape(pad.shape + (1,) * (out.attr.dim() - 2)), 0.0)
    out.tags = {**out.tags, "pads": PAD_NOTE}
    empty = pad.all(1)  # (N,) a text of padding only: no player, nothing to explain
    if bool(empty.any()):
        out.attr[empty] = float("nan")
        ids = empty.nonzero().flatten().tolist()
        earlier = str(out.tags.get("unexplained", "")).removesuffix(UNEXPLAINED_NOTE).split("; ")  # e.g. LIME's
        others = [part for part in earlier if part and not any(part.startswith(f"example {i}:") for i in ids)]
        out.tags["unexplained"] = "; ".join(others + [f"example {i}: no real token (padding only)" for i in ids]) \
            + UNEXPLAINED_NOTE
    return out


UNEXPLAINED_NOTE = " (NaN, left out of the means)"


def pad_elements(s: Setup, z: "torch.Tensor") -> "torch.Tensor | None":
    """(N, T, 1) bool, True at pads (held fixed by SmoothGrad's noise); None without padding."""
    return None if s.pad is None else s.pad.to(z.device)[:, :, None]


def base_description(s: Setup) -> str:
    """The baseline in words (the `baseline` tag)."""
    if s.space != "embedding":
        return "zero input"
    return "zero embedding" if s.pad is None else "zero embedding (pads keep their own: not players)"


def _explain(method: str, s: Setup, view: View, seed: int, progress: Any = None) -> MethodOutput | None:
    import numpy as np
    import torch

    p = s.params
    z, target = view.z, s.target
    shape = tuple(z.shape[1:])
    base_desc = base_description(s)
    if method in GRADIENT:
        from .gradients import gradient_attribution

        attr = gradient_attribution(method, view.em, z, target=target, baseline=view.baseline, modality=s.modality,
                                    n_steps=p.ig_steps, smoothgrad_samples=p.smoothgrad_samples,
                                    smoothgrad_stdev=p.smoothgrad_noise * s.scale, seed=seed,
                                    batch_size=s.batch_size, keep=pad_elements(s, z)).float().cpu()
        tags: dict[str, Any] = {"baseline": base_desc} if method in ("integrated_gradients", "deeplift", "occlusion") else {}
        if method == "integrated_gradients":
            tags.update(n_steps=p.ig_steps, integration="gausslegendre")
        if method == "smoothgrad":
            tags.update(n_samples=p.smoothgrad_samples, noise=p.smoothgrad_noise, seed=seed)
        if method == "deeplift":
            missing = uncovered_layers(s.module, "captum")
            if missing:
                tags["unsupported_layers"] = ",".join(missing)
        ref = None
        if method in ("integrated_gradients", "deeplift"):
            ref = view.explained(view.baseline.expand_as(z), target).numpy()
        return MethodOutput(attr, ref, base_desc if ref is not None else "", tags)
    if method == "lime":
        return _explain_lime(s, view, seed)
    if method in ("shapley", "shap_kernel"):
        from .shapley import NOT_A_PLAYER, shap_kernel_explainer, shapley_values

        if p.shap_value_function == "baseline":
            rep, w = view.baseline, None
        else:
            rep, w = view.background, s.background_weights
        attrs, refs, estimators, n_coal, bounds = [], [], set(), 0, []
        for i in range(s.n):
            if not bool((s.groups[i] != NOT_A_PLAYER).any()):  # padding only: NaN (explain_method says why)
                attrs.append(torch.full(shape, float("nan")))
                refs.append(float("nan"))
                bounds.append(float("nan"))
                continue
            f = view.em.scalar(None if target is None else int(target[i]))
            # a per-example baseline (padding) keeps the pads; they are no players anyway
            rep_i = rep[i : i + 1] if p.shap_value_function == "baseline" and rep.shape[0] > 1 else rep
            if method == "shapley":
                r = shapley_values(f, z[i], s.groups[i], rep_i, max_evaluations=p.shap_budget, seed=seed + i,
                                   weights=w, batch_size=s.batch_size)
            else:
                r = shap_kernel_explainer(f, z[i], s.groups[i], rep_i,
                                          n_samples=max(8, p.shap_budget // rep_i.shape[0]),
                                          seed=seed + i, weights=w, batch_size=s.batch_size)
            attrs.append(_spread(torch.as_tensor(r.values, dtype=torch.float32), s.groups[i].cpu(), shape))
            refs.append(r.base_value)
            estimators.add(r.estimator)
            n_coal = max(n_coal, r.n_coalitions)
            # the sampler's own 95% error bound, worst player (0 for exact enumeration)
            se = r.standard_error
            bounds.append(float("nan") if se is None else ERROR_Z * float(np.max(se)))
            if progress is not None:
                progress.update()  # the caller named the stage
        ref_desc = base_desc if p.shap_value_function == "baseline" else f"E over {rep.shape[0]} background inputs"
        tags = {"value_function": p.shap_value_function, "estimator": "/".join(sorted(estimators)),
                "n_samples": n_coal, "seed": seed, "players": players_desc(s)}
        extra = {"error_bound": np.asarray(bounds)} if method == "shapley" else {}
        return MethodOutput(torch.stack(attrs), np.asarray(refs), ref_desc, tags, extra=extra)
    if method in ("shap_gradient", "shap_deep"):
        return _explain_shap_nn(method, s, view, seed)
    if method == "rollout":
        from .attention import attention_maps, attention_rollout, token_relevance

        maps = attention_maps(view.module, s.x, batch_size=s.batch_size)
        roll = attention_rollout(maps, causal=False)
        real = None if s.pad is None else ~s.pad
        if real is not None:  # a text of padding only reads all its rows (explain_method NaNs it)
            real = real | ~real.any(1, keepdim=True)
        rel = token_relevance(roll, p.rollout_pooling, real)  # (N, T)
        attr = (rel[:, :, None] / shape[-1]).expand(-1, -1, shape[-1]).contiguous()
        return MethodOutput(attr.float(), None, "", {"pooling": p.rollout_pooling, "head_fusion": "mean",
                                                      "residual": "true"},
                             maps=torch.stack(maps, 1), rollout=roll)
    raise ConfigError(f"Unknown method {method!r}.")


def players_desc(s: Setup) -> str:
    if s.modality == "tokens" and s.pad is not None:
        return "non-pad tokens"
    return {"image": "SLIC superpixels", "tabular": "features", "tokens": "tokens"}[s.modality]


def _explain_lime(s: Setup, view: View, seed: int) -> MethodOutput:
    import numpy as np
    import torch

    from .lime_methods import lime_image, lime_tabular, lime_tokens, numpy_fn

    p = s.params
    z, target = view.z, s.target
    shape = tuple(z.shape[1:])
    scalars = [view.em.scalar(None if target is None else int(target[i])) for i in range(s.n)]
    if s.modality == "tabular":
        fs = [numpy_fn(f, s.device, batch_size=s.batch_size) for f in scalars]
        res = lime_tabular(fs, z.cpu().numpy(), view.train_z.cpu().numpy(), num_samples=p.lime_samples, seed=seed,
                           feature_names=s.data.feature_names)
        attr = torch.as_tensor(res.attributions, dtype=torch.float32)
        tags = {"surrogate": "ridge on quartile-discretised features", "n_samples": p.lime_samples, "seed": seed}
    elif s.modality == "image":
        fs = [numpy_fn(f, s.device, batch_size=s.batch_size) for f in scalars]
        res = lime_image(fs, z.cpu().numpy(), s.segments, num_samples=p.lime_samples, seed=seed, hide_value=0.0)
        attr = torch.stack([_spread(torch.as_tensor(w, dtype=torch.float32), s.groups[i], shape)
                            for i, w in enumerate(res.unit_weights)])
        tags = {"surrogate": "ridge on SLIC superpixel presence", "segments": f"SLIC n_segments={p.n_segments}",
                "hide": "zero", "n_samples": p.lime_samples, "seed": seed}
    else:
        real = s.real_units()  # (N, T) players, or None: every token is one
        positions = [np.arange(shape[0]) if real is None else np.flatnonzero(real[i]) for i in range(s.n)]

        def masked(i: int):  # noqa: ANN202
            zi, bi = z[i], view.baseline[min(i, view.baseline.shape[0] - 1)]
            cols = torch.as_tensor(positions[i], device=zi.device)

            def g(mask: np.ndarray) -> np.ndarray:
                players = torch.as_tensor(mask, dtype=torch.bool, device=zi.device)  # (n, T_i)
                m = torch.ones(players.shape[0], shape[0], dtype=torch.bool, device=zi.device)  # pads stay
                m[:, cols] = players
                m = m[:, :, None]  # (n, T, 1)
                out = []
                with torch.no_grad():
                    for a in range(0, m.shape[0], s.batch_size):
                        out.append(scalars[i](torch.where(m[a : a + s.batch_size], zi[None], bi[None])).double().cpu())
                return torch.cat(out).numpy()

            return g

        res = lime_tokens([masked(i) for i in range(s.n)], [len(c) for c in positions], s.n,
                          num_samples=p.lime_samples, seed=seed)
        per_token = torch.zeros(s.n, shape[0], dtype=torch.float32)
        for i, w in enumerate(res.unit_weights):
            per_token[i, torch.as_tensor(positions[i])] = torch.as_tensor(w, dtype=torch.float32)
        attr = per_token[:, :, None].expand(-1, -1, shape[1]) / shape[1]
        tags = {"surrogate": "ridge on token presence (absent = zero embedding)", "n_samples": p.lime_samples,
                "seed": seed}
        if res.unexplained:  # e.g. a one-word text: NaN for it, the others explained as usual
            tags["unexplained"] = "; ".join(f"example {i}: {why}" for i, why in res.unexplained.items()) + \
                UNEXPLAINED_NOTE
    return MethodOutput(attr.contiguous(), None, "", tags, extra={"r2": res.r2, "local_error": res.local_error})


def _explain_shap_nn(method: str, s: Setup, view: View, seed: int) -> MethodOutput:
    import warnings

    import numpy as np
    import shap
    import torch

    p = s.params
    z, target = view.z, s.target
    bg = view.background

    def explain(zz: "torch.Tensor", background: "torch.Tensor") -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if method == "shap_gradient":
                ex = shap.GradientExplainer(view.em, background)
                return np.asarray(ex.shap_values(zz.clone(), nsamples=p.shap_gradient_samples, rseed=seed),
                                  dtype=np.float64)
            ex = shap.DeepExplainer(view.em, background)
            return np.asarray(ex.shap_values(zz.clone(), check_additivity=False), dtype=np.float64)

    if s.pad is None:
        sv = explain(z, bg)
        f_bg = view.em(bg).detach()  # (R, K) or (R,)
        f_bgs = []
    else:  # each example's own background keeps its pads (x - b = 0 there: no share, efficiency holds)
        keep = s.pad.to(z.device)[:, None, :, None]  # (N, 1, T, 1)
        bgs = torch.where(keep, z[:, None], bg[None])  # (N, R, T, C)
        sv = np.concatenate([explain(z[i : i + 1], bgs[i]) for i in range(s.n)])
        f_bgs = [view.em(b).detach() for b in bgs]
    shape = tuple(z.shape[1:])
    if sv.ndim == len(shape) + 2:  # (N, *S, K): pick the target class
        if target is None:
            sv = sv[..., 0]
        else:
            sv = np.take_along_axis(sv, target.numpy().reshape((-1,) + (1,) * (sv.ndim - 1)), axis=-1)[..., 0]
    if s.pad is None and target is not None:
        ref = f_bg[:, target.to(f_bg.device)].mean(0).double().cpu().numpy()  # (N,) E_b f_target(b)
    elif s.pad is None:
        ref = np.full(s.n, float(f_bg.double().mean()))
    elif target is not None:
        ref = np.array([float(f[:, int(t)].double().mean()) for f, t in zip(f_bgs, target)])
    else:
        ref = np.array([float(f.double().mean()) for f in f_bgs])
    tags: dict[str, Any] = {"value_function": "background", "background": int(bg.shape[0]), "seed": seed}
    if method == "shap_gradient":
        tags["n_samples"] = p.shap_gradient_samples
    else:
        missing = uncovered_layers(s.module, "shap")
        if missing:
            tags["unsupported_layers"] = ",".join(missing)
    return MethodOutput(torch.as_tensor(sv.reshape((s.n,) + shape), dtype=torch.float32), ref,
                         f"E over {int(bg.shape[0])} background inputs", tags)


def uncovered_layers(module: "nn.Module", library: str) -> list[str]:
    """Non-linear layer types in `module` that the library's DeepLift rules do not cover
    (they silently fall back to plain gradients there)."""
    names = {type(m).__name__ for m in module.modules()}
    if library == "shap":
        try:
            from shap.explainers._deep.deep_pytorch import op_handler

            covered = set(op_handler)
        except ImportError:  # pragma: no cover - private table moved
            return []
    else:
        try:
            from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR

            covered = {t.__name__ for t in SUPPORTED_NON_LINEAR}
        except ImportError:  # pragma: no cover
            return []
    return sorted(n for n in names if n in KNOWN_NONLINEAR and n not in covered)


def attention_stack(module: "nn.Module", x: "torch.Tensor", batch_size: int) -> "torch.Tensor":
    """Attention maps of every layer, (N, L, H, T, T)."""
    import torch

    from .attention import attention_maps

    return torch.stack(attention_maps(module, x, batch_size=batch_size), 1)
