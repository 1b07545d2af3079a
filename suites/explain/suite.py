"""The explain suite: attributions from captum, LIME and SHAP (and our exact/batched
Shapley values), attention maps and rollout, each with quality scores beside it.

See README.md (the suite card) for the methods, baselines, value functions, quality
checks, known failures and the artifact keys read by the report and dashboard.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from workbench.errors import ConfigError, check_positive_int, check_probability, did_you_mean
from workbench.records import MetricRecord, SuiteResult
from workbench.suite import ModelHandle, RunContext, Suite

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from workbench.data.base import Dataset

GRADIENT = ("saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "deeplift", "occlusion")
SAMPLING = ("lime", "shapley", "shap_kernel", "shap_gradient", "shap_deep")
ATTENTION = ("attention", "rollout")
METHODS = GRADIENT + SAMPLING + ATTENTION
QUALITY_CHECKS = ("completeness", "deletion", "insertion", "sanity", "stability", "infidelity", "sensitivity",
                  "ground_truth")
REPLACEMENTS = ("zero", "mean", "blur", "sample")
# methods whose own property is sum(phi) = f(x) - f(reference)
COMPLETE = ("integrated_gradients", "deeplift", "shapley", "shap_kernel", "shap_gradient", "shap_deep")
# methods whose output depends on a seed (stability across two seeds is measured)
RANDOMISED = ("smoothgrad", "lime", "shapley", "shap_kernel", "shap_gradient")
# shap's DeepExplainer and captum's DeepLift rules do not cover these layers
KNOWN_NONLINEAR = ("GELU", "SiLU", "Mish", "Hardswish", "LayerNorm", "GroupNorm", "LSTM", "GRU", "RNN",
                   "MultiheadAttention", "Softsign", "Hardtanh", "PReLU", "ReLU6", "SELU", "CELU", "ELU",
                   "LeakyReLU", "Sigmoid", "Tanh", "Softplus", "Softmax", "MaxPool1d", "MaxPool2d", "MaxPool3d")


def _check_tuple(name: str, value: Any, choices: tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"Expected `{name}` to be a list of names from {list(choices)}, got {value!r}.")
    for v in value:
        if v not in choices:
            hint = did_you_mean(v, choices) if isinstance(v, str) else ""
            raise ConfigError(f"Unknown entry {v!r} in `{name}`.{hint} Valid: {', '.join(choices)}.")
    return tuple(value)


def _method_seed(seed: int, method: str) -> int:
    return int(seed) + zlib.crc32(method.encode()) % 100_000


class ExplainSuite(Suite):
    """Attributions with quality scores next to each one."""

    name: ClassVar[str] = "explain"
    description: ClassVar[str] = (
        "Saliency, input x gradient, integrated gradients, SmoothGrad, DeepLift, occlusion (captum); LIME; "
        "exact or sampled Shapley values and shap's Kernel/Gradient/Deep explainers; attention maps and "
        "rollout — each with completeness gap, deletion/insertion AUC vs random, model-randomisation "
        "sanity check, seed stability, infidelity, max-sensitivity and ground-truth top-k precision."
    )
    tasks: ClassVar[frozenset[str]] = frozenset({"classification", "regression", "lm"})

    @dataclass(frozen=True, kw_only=True)
    class Params:
        """methods: attribution methods to run (those that do not apply to a model are listed
        with the reason in meta.json and a null `method_coverage`). n_examples: test
        examples explained. explained_output: "logit" or "probability" of the predicted class
        (classification; regression explains the mean). ig_steps: Gauss-Legendre steps of
        integrated gradients. smoothgrad_samples / smoothgrad_noise: noisy copies and noise
        std as a fraction of the input range. shap_budget: model evaluations per example
        for Shapley methods (exact enumeration when 2^M x background fits). shap_value_function:
        "baseline" (absent = zero input) or "background" (interventional, E over
        `shap_background` training inputs). shap_gradient_samples: shap GradientExplainer
        nsamples. lime_samples: LIME neighbourhood size. lime_min_r2: below it LIME's fit is
        flagged low-fidelity. n_segments: SLIC superpixels asked for on images. quality:
        checks to run. replacements: removal values for deletion/insertion (those that apply
        to the modality). curve_steps: points of each curve. completeness_tolerance: median
        relative gap above which a method is flagged as breaking its own property.
        sanity_threshold: rank correlation above which a method fails the randomisation check.
        sanity_sampling: also run the randomisation check for LIME and the SHAP methods
        (doubles their cost; off in the quick profile).
        n_perturb: perturbations for infidelity and max-sensitivity. rollout_pooling: how the
        classifier reads out tokens ("mean" for the reference Transformer, "cls", "last")."""

        methods: tuple[str, ...] = METHODS
        n_examples: int = 32
        explained_output: str = "logit"
        ig_steps: int = 64
        smoothgrad_samples: int = 32
        smoothgrad_noise: float = 0.15
        shap_budget: int = 8192
        shap_value_function: str = "baseline"
        shap_background: int = 16
        shap_gradient_samples: int = 200
        lime_samples: int = 1000
        lime_min_r2: float = 0.5
        n_segments: int = 16
        quality: tuple[str, ...] = QUALITY_CHECKS
        replacements: tuple[str, ...] = ("zero", "blur", "sample")
        curve_steps: int = 16
        completeness_tolerance: float = 0.05
        sanity_threshold: float = 0.5
        sanity_sampling: bool = True
        n_perturb: int = 16
        rollout_pooling: str = "mean"

        def __post_init__(self) -> None:
            object.__setattr__(self, "methods", _check_tuple("methods", self.methods, METHODS))
            object.__setattr__(self, "quality", _check_tuple("quality", self.quality, QUALITY_CHECKS))
            object.__setattr__(self, "replacements", _check_tuple("replacements", self.replacements, REPLACEMENTS))
            if not self.methods:
                raise ConfigError("Expected at least one entry in `methods`, got none.")
            for key in ("n_examples", "ig_steps", "smoothgrad_samples", "shap_budget", "shap_background",
                        "shap_gradient_samples", "lime_samples", "n_segments", "curve_steps", "n_perturb"):
                check_positive_int(key, getattr(self, key))
            if self.lime_samples < 10:
                raise ConfigError(f"Expected `lime_samples` >= 10, got {self.lime_samples}.")
            if self.explained_output not in ("logit", "probability"):
                raise ConfigError(f"Expected `explained_output` in ('logit', 'probability'), got {self.explained_output!r}.")
            if self.shap_value_function not in ("baseline", "background"):
                raise ConfigError(
                    f"Expected `shap_value_function` in ('baseline', 'background'), got {self.shap_value_function!r}.")
            if self.rollout_pooling not in ("mean", "cls", "last"):
                raise ConfigError(f"Expected `rollout_pooling` in ('mean', 'cls', 'last'), got {self.rollout_pooling!r}.")
            for key in ("smoothgrad_noise", "lime_min_r2", "sanity_threshold"):
                check_probability(key, getattr(self, key))
            if isinstance(self.completeness_tolerance, bool) or not isinstance(self.completeness_tolerance, (int, float)) \
                    or self.completeness_tolerance <= 0:
                raise ConfigError(f"Expected `completeness_tolerance` to be a float > 0, got {self.completeness_tolerance!r}.")

    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {
            "methods": ["saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "occlusion",
                        "lime", "shapley", "attention", "rollout"],
            "n_examples": 8, "ig_steps": 32, "smoothgrad_samples": 8, "shap_budget": 1024,
            "lime_samples": 300, "quality": ["completeness", "deletion", "insertion", "sanity", "ground_truth"],
            "sanity_sampling": False,
            "replacements": ["zero", "blur", "sample"], "curve_steps": 16,
        },
        "full": {
            "methods": list(METHODS), "n_examples": 64, "ig_steps": 64, "smoothgrad_samples": 32,
            "shap_budget": 65536, "lime_samples": 1000, "quality": list(QUALITY_CHECKS),
            "shap_value_function": "background", "n_perturb": 16,
        },
    }

    # ------------------------------------------------------------------ run

    def applicable(self, model: ModelHandle, data: "Dataset") -> str | None:
        reason = super().applicable(model, data)
        if reason:
            return reason
        from .attention import supports_attention

        if data.task == "lm":
            if not supports_attention(model.module):
                return ("explain on a language model computes attention maps and rollout only, and this model's "
                        "forward does not accept return_attention=True")
            if not set(self.params.methods) & set(ATTENTION):
                return "explain on a language model computes attention maps and rollout only; neither is in `methods`"
            return None
        if data.modality == "image" and len(data.input_shape) != 3:
            return f"explain expects images (C, H, W), got input shape {data.input_shape}"
        if data.modality == "tokens" and not _has_embedding(model.module):
            return "token attributions need `embed`/`forward_from_embeddings` or an nn.Embedding, found neither"
        return None

    def run(self, model: ModelHandle, data: "Dataset", ctx: RunContext) -> SuiteResult:
        from .gradients import untouched

        with untouched(model.module):
            if data.task == "lm":
                return self._run_lm(model, data, ctx)
            return self._run(model, data, ctx)

    # ------------------------------------------------------------------ classification / regression

    def _run(self, model: ModelHandle, data: "Dataset", ctx: RunContext) -> SuiteResult:
        p = self.params
        setup = _Setup.build(model, data, ctx, p)
        outputs: dict[str, _MethodOutput] = {}
        skipped: dict[str, str] = {}  # not applicable to this model: listed in meta.json only
        failed: dict[str, str] = {}  # raised on this model: a null `method_coverage` with the error
        timings: dict[str, float] = {}
        for method in p.methods:
            why = setup.unavailable(method)
            if why:
                skipped[method] = why
                continue
            t0 = time.perf_counter()
            if method == "attention":
                setup.attention = _attention_stack(setup.module, setup.x, setup.batch_size)
                timings[method] = (time.perf_counter() - t0) / setup.n
                continue
            try:
                out = _explain(method, setup, setup.model_view(setup.module), _method_seed(ctx.seed, method))
            except Exception as exc:  # a method failing on an architecture is a finding, not a crash
                failed[method] = f"failed: {type(exc).__name__}: {exc}"[:500]
                ctx.log(f"explain: {method} failed on {ctx.model_name}: {failed[method]}")
                continue
            outputs[method] = out
            timings[method] = (time.perf_counter() - t0) / setup.n
        quality = _quality(outputs, setup, ctx, p)
        metrics = _metrics(outputs, quality, setup, failed, ctx, p)
        _save(outputs, quality, setup, {**skipped, **failed}, timings, ctx, p)
        return ctx.result(metrics, config=self.config())

    # ------------------------------------------------------------------ language models

    def _run_lm(self, model: ModelHandle, data: "Dataset", ctx: RunContext) -> SuiteResult:
        import numpy as np
        import torch

        from .attention import attention_entropy, attention_maps, attention_rollout

        p = self.params
        n = ctx.limit(min(p.n_examples, len(data.test)))
        x = data.test.x[:n]
        maps = attention_maps(model.module, x, batch_size=ctx.batch_size)  # L x (N, H, T, T)
        roll = attention_rollout(maps, causal=False)  # checked below instead of raising
        stacked = torch.stack(maps, 1)  # (N, L, H, T, T)
        metrics = []
        tags = {"method": "attention"}
        row_err = (stacked.double().sum(-1) - 1).abs().amax(dim=(1, 2, 3)).numpy()  # (N,)
        upper = torch.triu(stacked, diagonal=1).abs().amax(dim=(1, 2, 3, 4)).double().numpy()
        roll_upper = torch.triu(roll, diagonal=1).abs().amax(dim=(1, 2)).double().numpy()
        metrics.append(_mean_record("attention_row_sum_error", row_err, ctx, higher_is_better=False,
                                    unit="probability", tags=tags, stat="max"))
        metrics.append(_mean_record("causality_violation", upper, ctx, higher_is_better=False, unit="probability",
                                    tags=tags, stat="max"))
        metrics.append(_mean_record("causality_violation", roll_upper, ctx, higher_is_better=False,
                                    unit="probability", tags={"method": "rollout"}, stat="max"))
        for layer, a in enumerate(maps):
            ent = attention_entropy(a).mean(1).double().numpy()  # (N,)
            metrics.append(_mean_record("attention_entropy", ent, ctx, higher_is_better=None, unit="nats",
                                        tags={"method": "attention", "layer": layer}))
        vocab = data.vocab
        tokens = [[vocab[int(t)] if vocab and int(t) < len(vocab) else str(int(t)) for t in row] for row in x]
        ctx.save_artifact("examples", {"input": x.numpy(), "attention": stacked.numpy().astype(np.float32),
                                       "rollout": roll.numpy().astype(np.float32)})
        ctx.save_artifact("meta", {"modality": data.modality, "task": data.task, "space": "embedding",
                                   "methods": ["attention", "rollout"], "attributions": [], "tokens": tokens,
                                   "causal": True, "n_examples": n,
                                   "note": "language model: attention maps and rollout only"})
        return ctx.result(metrics, config=self.config())

    @classmethod
    def figures(cls, result: dict[str, Any], run_dir: Path) -> list[tuple[str, Any]]:
        from .figures import explain_figures

        return explain_figures(result, run_dir)


def _has_embedding(module: "nn.Module") -> bool:
    from torch import nn

    if hasattr(module, "forward_from_embeddings"):
        return True
    return isinstance(getattr(module, "token_embedding", None), nn.Embedding) or \
        sum(isinstance(m, nn.Embedding) for m in module.modules()) == 1


# ---------------------------------------------------------------------- setup


@dataclass
class _Setup:
    """Everything the methods share for one model on one dataset.

    x: (N, *input) the explained inputs (token ids for token models); z: (N, *S) in the
    attribution space (inputs, or token embeddings); target: (N,) predicted classes (None
    for regression); f_x / f_base: explained output at x and at the baseline (N,);
    baseline: (1, *S) zeros; background: (R, *S) (+ weights) for SHAP; groups: one player
    map per example (superpixels / features / tokens); units: (*S) unit of each element
    for deletion and per-unit scores.
    """

    handle: ModelHandle
    data: "Dataset"
    module: "nn.Module"
    params: Any
    seed: int
    batch_size: int
    device: "torch.device"
    modality: str
    space: str
    classification: bool
    x: "torch.Tensor"
    target: "torch.Tensor | None"
    background_raw: "torch.Tensor"
    background_weights: "torch.Tensor | None"
    train_raw: "torch.Tensor"
    groups: list["torch.Tensor"]
    units: "torch.Tensor"
    segments: "np.ndarray | None"
    scale: float
    attention: "torch.Tensor | None" = None
    views: dict[int, "_View"] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @classmethod
    def build(cls, handle: ModelHandle, data: "Dataset", ctx: RunContext, p: Any) -> "_Setup":
        import numpy as np
        import torch

        from workbench.torch_utils import module_device

        from .lime_methods import slic_segments
        from .quality import unit_index

        module = handle.module
        device = module_device(module)
        modality = data.modality
        space = "embedding" if modality == "tokens" else "input"
        n = ctx.limit(min(p.n_examples, len(data.test)))
        x = data.test.x[:n]
        rng = np.random.default_rng(ctx.seed)
        n_train = len(data.train)
        pool = torch.as_tensor(rng.choice(n_train, size=min(n_train, 512), replace=False))
        train_raw = data.train.x[pool]
        bg_idx = torch.as_tensor(rng.choice(n_train, size=min(n_train, p.shap_background), replace=False))
        background_raw = data.train.x[bg_idx]
        weights = None
        kernel_methods = {"shapley", "shap_kernel"} & set(p.methods)
        if modality == "tabular" and n_train > p.shap_background and kernel_methods \
                and p.shap_value_function == "background":  # importing shap costs seconds: only when used
            import shap

            from .shapley import _blas_one_thread

            with _blas_one_thread():
                summary = shap.kmeans(data.train.x.double().numpy(), p.shap_background)
            background_raw = torch.as_tensor(summary.data, dtype=data.train.x.dtype)
            weights = torch.as_tensor(summary.weights, dtype=torch.float64)
            weights = weights / weights.sum()
        segments = None
        if modality == "image":
            segments = np.stack([slic_segments(img.numpy(), n_segments=p.n_segments) for img in x])
            groups = [torch.as_tensor(s)[None] for s in segments]  # (1, H, W): all channels together
        elif modality == "tabular":
            groups = [torch.arange(x.shape[1])] * n
        else:
            groups = []  # token groups depend on the embedding width: set below
        setup = cls(handle=handle, data=data, module=module, params=p, seed=ctx.seed, batch_size=ctx.batch_size,
                    device=device, modality=modality, space=space,
                    classification=handle.output in ("logits",) and data.task == "classification",
                    x=x, target=None, background_raw=background_raw, background_weights=weights,
                    train_raw=train_raw, groups=groups, units=torch.zeros(0), segments=segments, scale=1.0)
        view = setup.model_view(module)
        z = view.z
        shape = tuple(z.shape[1:])
        if space == "embedding":
            setup.groups = [torch.arange(shape[0])[:, None]] * n
        setup.units = unit_index(shape, space, modality)
        with torch.no_grad():
            out = view.em(z)
        if setup.classification:
            setup.target = out.argmax(1).cpu()
        lo, hi = np.quantile(view.train_z.float().cpu().numpy(), [0.01, 0.99])
        setup.scale = float(hi - lo) if hi > lo else 1.0
        if modality == "image" and data.bounds:
            setup.scale = float(data.bounds[1] - data.bounds[0])
        return setup

    def model_view(self, module: "nn.Module") -> "_View":
        key = id(module)
        if key not in self.views:
            self.views[key] = _View.build(self, module)
        return self.views[key]

    def unavailable(self, method: str) -> str | None:
        """Why `method` does not apply here (None if it does)."""
        from .attention import supports_attention

        if method in ATTENTION:
            if self.modality != "tokens" or not supports_attention(self.module):
                return "needs a token model whose forward accepts return_attention=True"
            return None
        if method == "lime" and self.modality == "image" and self.x.shape[1] not in (1, 3):
            return f"LIME images need 1 or 3 channels, got {int(self.x.shape[1])}"
        if self.handle.output not in ("logits", "mean", "mean_logvar"):
            return f"model output {self.handle.output!r} is not explained by attribution methods"
        return None


@dataclass
class _View:
    """One module seen in the attribution space (the trained model, or its re-initialised
    copy for the sanity check: token models get their own embeddings)."""

    module: "nn.Module"
    em: Any  # ExplainedModel over the explained output
    em_prob: Any  # ExplainedModel over the tracked score (probability) for curves
    z: "torch.Tensor"
    baseline: "torch.Tensor"
    background: "torch.Tensor"
    train_z: "torch.Tensor"

    @classmethod
    def build(cls, setup: _Setup, module: "nn.Module") -> "_View":
        import torch

        from .gradients import ExplainedModel, embed_tokens

        kind = setup.handle.output
        em = ExplainedModel(module, kind, space=setup.space, explained=setup.params.explained_output)
        em_prob = ExplainedModel(module, kind, space=setup.space, explained="probability")

        def to_space(raw: torch.Tensor) -> torch.Tensor:
            raw = raw.to(setup.device)
            if setup.space == "embedding":
                return embed_tokens(module, raw).float()
            return raw.float()

        z = to_space(setup.x)
        return cls(module=module, em=em, em_prob=em_prob, z=z, baseline=torch.zeros_like(z[:1]),
                   background=to_space(setup.background_raw), train_z=to_space(setup.train_raw))

    def explained(self, z: "torch.Tensor", target: "torch.Tensor | None") -> "torch.Tensor":
        """f(z) of the explained output towards `target` (B,), on CPU as float64."""
        import torch

        with torch.no_grad():
            out = self.em(z)
            if target is not None:
                out = out.gather(1, target.to(out.device)[:, None])[:, 0]
        return out.double().cpu()

    def tracked(self, z: "torch.Tensor", target: "torch.Tensor | None") -> "torch.Tensor":
        """The score deletion/insertion follow: target probability (classification) or the output."""
        out = self.em_prob(z)
        if target is not None:
            out = out.gather(1, target.to(out.device)[:, None])[:, 0]
        return out


@dataclass
class _MethodOutput:
    """attr: (N, *S) element attributions on CPU (a group's value spread evenly over its
    elements); ref: (N,) f(reference) for the completeness property (None if the method has
    none); tags: record tags (value function, estimator, n_samples, library...);
    extra: per-example arrays (LIME r2 / local error); maps: attention (N, L, H, T, T)."""

    attr: "torch.Tensor"
    ref: "np.ndarray | None" = None
    reference: str = ""
    tags: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, "np.ndarray"] = field(default_factory=dict)
    maps: "torch.Tensor | None" = None
    rollout: "torch.Tensor | None" = None


# ---------------------------------------------------------------------- methods


def _spread(values: "torch.Tensor", groups: "torch.Tensor", shape: tuple[int, ...]) -> "torch.Tensor":
    """Group values (M,) -> element attributions (*shape): value / group size on each element."""
    import torch

    g = groups.expand(shape).reshape(-1)
    counts = torch.bincount(g, minlength=values.shape[0]).clamp_min(1).to(values.dtype)
    return (values / counts)[g].reshape(shape)


def _library_tag(method: str) -> str:
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


def _explain(method: str, s: _Setup, view: _View, seed: int) -> _MethodOutput | None:
    import numpy as np
    import torch

    p = s.params
    z, target = view.z, s.target
    shape = tuple(z.shape[1:])
    base_desc = "zero embedding" if s.space == "embedding" else "zero input"
    if method in GRADIENT:
        from .gradients import gradient_attribution

        attr = gradient_attribution(method, view.em, z, target=target, baseline=view.baseline, modality=s.modality,
                                    n_steps=p.ig_steps, smoothgrad_samples=p.smoothgrad_samples,
                                    smoothgrad_stdev=p.smoothgrad_noise * s.scale, seed=seed,
                                    batch_size=s.batch_size).float().cpu()
        tags: dict[str, Any] = {"baseline": base_desc} if method in ("integrated_gradients", "deeplift", "occlusion") else {}
        if method == "integrated_gradients":
            tags.update(n_steps=p.ig_steps, integration="gausslegendre")
        if method == "smoothgrad":
            tags.update(n_samples=p.smoothgrad_samples, noise=p.smoothgrad_noise, seed=seed)
        if method == "deeplift":
            missing = _uncovered_layers(s.module, "captum")
            if missing:
                tags["unsupported_layers"] = ",".join(missing)
        ref = None
        if method in ("integrated_gradients", "deeplift"):
            ref = view.explained(view.baseline.expand_as(z), target).numpy()
        return _MethodOutput(attr, ref, base_desc if ref is not None else "", tags)
    if method == "lime":
        return _explain_lime(s, view, seed)
    if method in ("shapley", "shap_kernel"):
        from .shapley import shap_kernel_explainer, shapley_values

        if p.shap_value_function == "baseline":
            rep, w = view.baseline, None
        else:
            rep, w = view.background, s.background_weights
        attrs, refs, estimators, n_coal = [], [], set(), 0
        for i in range(s.n):
            f = view.em.scalar(None if target is None else int(target[i]))
            if method == "shapley":
                r = shapley_values(f, z[i], s.groups[i], rep, max_evaluations=p.shap_budget, seed=seed + i,
                                   weights=w, batch_size=s.batch_size)
            else:
                r = shap_kernel_explainer(f, z[i], s.groups[i], rep, n_samples=max(8, p.shap_budget // rep.shape[0]),
                                          seed=seed + i, weights=w, batch_size=s.batch_size)
            attrs.append(_spread(torch.as_tensor(r.values, dtype=torch.float32), s.groups[i].cpu(), shape))
            refs.append(r.base_value)
            estimators.add(r.estimator)
            n_coal = max(n_coal, r.n_coalitions)
        ref_desc = base_desc if p.shap_value_function == "baseline" else f"E over {rep.shape[0]} background inputs"
        tags = {"value_function": p.shap_value_function, "estimator": "/".join(sorted(estimators)),
                "n_samples": n_coal, "seed": seed, "players": _players_desc(s)}
        return _MethodOutput(torch.stack(attrs), np.asarray(refs), ref_desc, tags)
    if method in ("shap_gradient", "shap_deep"):
        return _explain_shap_nn(method, s, view, seed)
    if method == "rollout":
        from .attention import attention_maps, attention_rollout, token_relevance

        maps = attention_maps(view.module, s.x, batch_size=s.batch_size)
        roll = attention_rollout(maps, causal=False)
        rel = token_relevance(roll, p.rollout_pooling)  # (N, T)
        attr = (rel[:, :, None] / shape[-1]).expand(-1, -1, shape[-1]).contiguous()
        return _MethodOutput(attr.float(), None, "", {"pooling": p.rollout_pooling, "head_fusion": "mean",
                                                      "residual": "true"},
                             maps=torch.stack(maps, 1), rollout=roll)
    raise ConfigError(f"Unknown method {method!r}.")


def _players_desc(s: _Setup) -> str:
    return {"image": "SLIC superpixels", "tabular": "features", "tokens": "tokens"}[s.modality]


def _explain_lime(s: _Setup, view: _View, seed: int) -> _MethodOutput:
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
        def masked(i: int):  # noqa: ANN202
            zi, bi = z[i], view.baseline[0]

            def g(mask: np.ndarray) -> np.ndarray:
                m = torch.as_tensor(mask, dtype=torch.bool, device=zi.device)[:, :, None]  # (n, T, 1)
                out = []
                with torch.no_grad():
                    for a in range(0, m.shape[0], s.batch_size):
                        out.append(scalars[i](torch.where(m[a : a + s.batch_size], zi[None], bi[None])).double().cpu())
                return torch.cat(out).numpy()

            return g

        res = lime_tokens([masked(i) for i in range(s.n)], shape[0], s.n, num_samples=p.lime_samples, seed=seed)
        attr = torch.as_tensor(res.attributions, dtype=torch.float32)[:, :, None].expand(-1, -1, shape[1]) / shape[1]
        tags = {"surrogate": "ridge on token presence (absent = zero embedding)", "n_samples": p.lime_samples,
                "seed": seed}
    return _MethodOutput(attr.contiguous(), None, "", tags, extra={"r2": res.r2, "local_error": res.local_error})


def _explain_shap_nn(method: str, s: _Setup, view: _View, seed: int) -> _MethodOutput:
    import warnings

    import numpy as np
    import shap
    import torch

    p = s.params
    z, target = view.z, s.target
    bg = view.background
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "shap_gradient":
            ex = shap.GradientExplainer(view.em, bg)
            sv = ex.shap_values(z.clone(), nsamples=p.shap_gradient_samples, rseed=seed)
        else:
            ex = shap.DeepExplainer(view.em, bg)
            sv = ex.shap_values(z.clone(), check_additivity=False)
    sv = np.asarray(sv, dtype=np.float64)
    shape = tuple(z.shape[1:])
    if sv.ndim == len(shape) + 2:  # (N, *S, K): pick the target class
        if target is None:
            sv = sv[..., 0]
        else:
            sv = np.take_along_axis(sv, target.numpy().reshape((-1,) + (1,) * (sv.ndim - 1)), axis=-1)[..., 0]
    f_bg = view.em(bg).detach()
    if target is not None:
        ref = f_bg[:, target.to(f_bg.device)].mean(0).double().cpu().numpy()  # (N,) E_b f_target(b)
    else:
        ref = np.full(s.n, float(f_bg.double().mean()))
    tags: dict[str, Any] = {"value_function": "background", "background": int(bg.shape[0]), "seed": seed}
    if method == "shap_gradient":
        tags["n_samples"] = p.shap_gradient_samples
    else:
        missing = _uncovered_layers(s.module, "shap")
        if missing:
            tags["unsupported_layers"] = ",".join(missing)
    return _MethodOutput(torch.as_tensor(sv.reshape((s.n,) + shape), dtype=torch.float32), ref,
                         f"E over {int(bg.shape[0])} background inputs", tags)


def _uncovered_layers(module: "nn.Module", library: str) -> list[str]:
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


# ---------------------------------------------------------------------- quality


def _replacement_kinds(s: _Setup) -> list[str]:
    return [r for r in s.params.replacements if not (r == "blur" and s.modality != "image")]


def _quality(outputs: dict[str, _MethodOutput], s: _Setup, ctx: RunContext, p: Any) -> dict[str, Any]:
    """Per-method, per-example quality arrays: {method: {check: (N,) or {replacement: (N,)}}},
    plus the curves {"curves": {(mode, method, replacement): (N, S+1)}}."""
    import numpy as np
    import torch

    from .quality import (
        completeness_gap,
        curve_auc,
        order_units,
        perturbation_curves,
        rank_correlation,
        randomised_copy,
        replacement_inputs,
        top_k_precision,
    )
    from .gradients import per_unit

    view = s.model_view(s.module)
    q: dict[str, Any] = {m: {} for m in outputs}
    curves: dict[tuple[str, str, str], np.ndarray] = {}
    checks = set(p.quality)
    f_x = view.explained(view.z, s.target).numpy()
    unit_scores = {m: per_unit(o.attr, s.space, s.modality).double().numpy() for m, o in outputs.items()}
    for m, o in outputs.items():
        if "completeness" in checks and m in COMPLETE and o.ref is not None:
            total = o.attr.reshape(s.n, -1).double().sum(1).numpy()
            q[m]["completeness_gap"] = completeness_gap(total, f_x, o.ref)
        if "lime" == m:
            q[m]["surrogate_r2"] = o.extra["r2"]
            q[m]["local_prediction_error"] = o.extra["local_error"]
    modes = [mode for mode in ("deletion", "insertion") if mode in checks]
    if modes and outputs:
        rng = np.random.default_rng(ctx.seed + 7)
        orders = {m: order_units(sc, rng) for m, sc in unit_scores.items()}
        n_units = next(iter(unit_scores.values())).shape[1]
        orders["random"] = np.stack([rng.permutation(n_units) for _ in range(s.n)])
        q.setdefault("random", {})

        def track(inputs: "torch.Tensor", tgt: "torch.Tensor") -> "torch.Tensor":
            with torch.no_grad():
                return view.tracked(inputs, tgt if s.target is not None else None)

        tgt = s.target if s.target is not None else torch.zeros(s.n, dtype=torch.long)
        for rep_kind in _replacement_kinds(s):
            rep = replacement_inputs(rep_kind, view.z, train_z=view.train_z, modality=s.modality,
                                     rng=np.random.default_rng(ctx.seed + 11))
            for mode in modes:
                for m, order in orders.items():
                    c = perturbation_curves(track, view.z, tgt, order, s.units, rep, mode=mode,
                                            n_steps=p.curve_steps, batch_size=max(s.batch_size, 256))
                    curves[(mode, m, rep_kind)] = c
                    q[m].setdefault(f"{mode}_auc", {})[rep_kind] = curve_auc(c)
    n_units = int(s.units.max()) + 1
    if n_units < 2:
        one = f"a rank correlation needs at least 2 units; this input has {n_units}"
        for m in outputs:
            if "sanity" in checks:
                q[m]["randomisation_rank_correlation_error"] = one
            if "stability" in checks and m in RANDOMISED:
                q[m]["seed_rank_correlation_error"] = one
        checks -= {"sanity", "stability"}
    if "sanity" in checks and outputs:
        rand = randomised_copy(s.module, seed=ctx.seed + 13)
        rview = s.model_view(rand)
        for m, o in outputs.items():
            if m in SAMPLING and not p.sanity_sampling:
                q[m]["randomisation_rank_correlation_error"] = "skipped: sanity_sampling is off in this profile"
                continue
            try:
                ro = _explain(m, s, rview, _method_seed(ctx.seed, m))
            except Exception as exc:  # noqa: BLE001
                q[m]["randomisation_rank_correlation_error"] = f"{type(exc).__name__}: {exc}"
                continue
            if ro is None:
                continue
            q[m]["randomisation_rank_correlation"] = rank_correlation(
                unit_scores[m], per_unit(ro.attr, s.space, s.modality).double().numpy(), absolute=True)
        s.views.pop(id(rand), None)
    if "stability" in checks:
        for m, o in outputs.items():
            if m not in RANDOMISED:
                continue
            if m == "shapley" and o.tags.get("estimator") == "exact":
                q[m]["seed_rank_correlation_reason"] = "exact enumeration is deterministic (no sampling)"
                continue
            try:
                ro = _explain(m, s, view, _method_seed(ctx.seed, m) + 1)
            except Exception as exc:  # noqa: BLE001
                q[m]["seed_rank_correlation_error"] = f"{type(exc).__name__}: {exc}"
                continue
            q[m]["seed_rank_correlation"] = rank_correlation(
                unit_scores[m], per_unit(ro.attr, s.space, s.modality).double().numpy(), absolute=False)
    if "infidelity" in checks:
        from .quality import infidelity_scores

        for m, o in outputs.items():
            q[m]["infidelity"] = infidelity_scores(view.em, view.z, o.attr.to(view.z.device), s.target,
                                                   noise_std=0.1 * s.scale, n_samples=p.n_perturb,
                                                   seed=ctx.seed + 17)
    if "sensitivity" in checks:
        from .gradients import gradient_attribution
        from .quality import max_sensitivity_scores

        for m in outputs:
            if m not in GRADIENT:
                q[m]["max_sensitivity_reason"] = "re-running a sampling explainer per perturbation is outside the budget"
                continue

            def explain(inputs: "torch.Tensor", target: Any = None, baselines: Any = None, _m: str = m):
                return gradient_attribution(_m, view.em, inputs, target=target, baseline=baselines,
                                            modality=s.modality, n_steps=p.ig_steps,
                                            smoothgrad_samples=p.smoothgrad_samples,
                                            smoothgrad_stdev=p.smoothgrad_noise * s.scale,
                                            seed=_method_seed(ctx.seed, _m), batch_size=s.batch_size)

            try:
                q[m]["max_sensitivity"] = max_sensitivity_scores(
                    explain, view.z, target=s.target, baselines=view.baseline, radius=0.02 * s.scale,
                    n_samples=p.n_perturb, seed=ctx.seed + 19)
            except Exception as exc:  # noqa: BLE001
                q[m]["max_sensitivity_reason"] = f"failed: {type(exc).__name__}: {exc}"
    if "ground_truth" in checks:
        gt = s.data.ground_truth or {}
        relevant = gt.get("relevant_features") if s.modality == "tabular" else gt.get("relevant_positions")
        if relevant and s.modality in ("tabular", "tokens"):
            q["_relevant"] = list(relevant)
            for m in outputs:
                if len(set(relevant)) >= n_units:
                    q[m]["top_k_precision_reason"] = (f"all {n_units} units are relevant: top-k precision is 1 "
                                                      "by construction")
                else:
                    q[m]["top_k_precision"] = top_k_precision(unit_scores[m], relevant)
    q["_curves"] = curves
    return q


# ---------------------------------------------------------------------- records


def _mean_record(name: str, values: "np.ndarray", ctx: RunContext, *, higher_is_better: bool | None, unit: str,
                 tags: dict[str, Any], stat: str = "mean") -> MetricRecord:
    import numpy as np

    from workbench.stats import bootstrap_mean_ci, bootstrap_stat_ci

    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return MetricRecord.unavailable(name, "no finite per-example values (e.g. constant attributions)",
                                        higher_is_better=higher_is_better, unit=unit, n=0, tags=tags)
    if stat == "median":
        value = float(np.median(v))
        ci = bootstrap_stat_ci(lambda idx: float(np.median(v[idx])), v.size, seed=ctx.seed)
        tags = {**tags, "statistic": "median"}
    elif stat == "max":
        value, ci = float(v.max()), None
        tags = {**tags, "statistic": "max"}
    else:
        value = float(v.mean())
        ci = bootstrap_mean_ci(v, seed=ctx.seed)
    return MetricRecord(name=name, value=value, higher_is_better=higher_is_better, unit=unit, n=int(v.size),
                        ci=ci, tags=tags)


def _metrics(outputs: dict[str, _MethodOutput], q: dict[str, Any], s: _Setup, failed: dict[str, str],
             ctx: RunContext, p: Any) -> list[MetricRecord]:
    import numpy as np

    recs: list[MetricRecord] = []
    base_tags: dict[str, Any] = {}
    if s.classification:
        base_tags = {"target": "predicted class", "explained": p.explained_output}
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
            if s.attention is None:
                continue
            from .attention import attention_entropy

            maps = s.attention
            row_err = (maps.double().sum(-1) - 1).abs().amax(dim=(1, 2, 3)).numpy()
            recs.append(MetricRecord(name="method_coverage", value=1.0, higher_is_better=True, unit="fraction",
                                     n=s.n, tags={**tags, "library": "workbench"}))
            recs.append(_mean_record("attention_row_sum_error", row_err, ctx, higher_is_better=False,
                                     unit="probability", tags=tags, stat="max"))
            for layer in range(maps.shape[1]):
                ent = attention_entropy(maps[:, layer]).mean(1).double().numpy()
                recs.append(_mean_record("attention_entropy", ent, ctx, higher_is_better=None, unit="nats",
                                         tags={**tags, "layer": layer}))
            continue
        o = outputs.get(m)
        if o is None:
            continue
        mt = {**tags, **{k: v for k, v in o.tags.items()}, "library": _library_tag(m)}
        recs.append(MetricRecord(name="method_coverage", value=1.0, higher_is_better=True, unit="fraction", n=s.n,
                                 tags=mt))
        qm = q.get(m, {})
        if "completeness_gap" in qm:
            gap = qm["completeness_gap"]
            med = float(np.median(gap))
            verdict = "ok" if med <= p.completeness_tolerance else "breaks property"
            recs.append(_mean_record("completeness_gap", gap, ctx, higher_is_better=False, unit="fraction",
                                     tags={**mt, "reference": o.reference, "verdict": verdict,
                                           "tolerance": p.completeness_tolerance}, stat="median"))
        for mode, hib in (("deletion", False), ("insertion", True)):
            for rep, vals in (qm.get(f"{mode}_auc") or {}).items():
                recs.append(_mean_record(f"{mode}_auc", vals, ctx, higher_is_better=hib, unit=curve_unit,
                                         tags={"method": m, **base_tags, "replacement": rep, "order": "attribution"}))
        if "randomisation_rank_correlation" in qm:
            vals = qm["randomisation_rank_correlation"]
            st = {"method": m, **base_tags, "threshold": p.sanity_threshold}
            if np.isfinite(vals).any():
                failed_check = float(np.nanmean(vals)) > p.sanity_threshold
                st["verdict"] = "fails (explanation barely depends on the weights)" if failed_check else "passes"
            recs.append(_mean_record("randomisation_rank_correlation", vals, ctx, higher_is_better=False,
                                     unit="spearman", tags=st))
        elif "randomisation_rank_correlation_error" in qm:
            recs.append(MetricRecord.unavailable("randomisation_rank_correlation",
                                                 qm["randomisation_rank_correlation_error"], higher_is_better=False,
                                                 unit="spearman", tags={"method": m, **base_tags}))
        if "seed_rank_correlation" in qm:
            recs.append(_mean_record("seed_rank_correlation", qm["seed_rank_correlation"], ctx, higher_is_better=True,
                                     unit="spearman", tags={"method": m, **base_tags}))
        for key in ("seed_rank_correlation_reason", "seed_rank_correlation_error"):
            if key in qm:
                recs.append(MetricRecord.unavailable("seed_rank_correlation", qm[key], higher_is_better=True,
                                                     unit="spearman", tags={"method": m, **base_tags}))
        if "infidelity" in qm:
            recs.append(_mean_record("infidelity", qm["infidelity"], ctx, higher_is_better=False,
                                     unit=f"{out_unit}^2", tags={"method": m, **base_tags, "normalised": "true"}))
        if "max_sensitivity" in qm:
            recs.append(_mean_record("max_sensitivity", qm["max_sensitivity"], ctx, higher_is_better=False,
                                     unit="fraction", tags={"method": m, **base_tags}))
        elif "max_sensitivity_reason" in qm:
            recs.append(MetricRecord.unavailable("max_sensitivity", qm["max_sensitivity_reason"],
                                                 higher_is_better=False, unit="fraction",
                                                 tags={"method": m, **base_tags}))
        if "top_k_precision" in qm:
            recs.append(_mean_record("top_k_precision", qm["top_k_precision"], ctx, higher_is_better=True,
                                     unit="fraction", tags={"method": m, **base_tags, "k": len(q["_relevant"])}))
        elif "top_k_precision_reason" in qm:
            recs.append(MetricRecord.unavailable("top_k_precision", qm["top_k_precision_reason"],
                                                 higher_is_better=True, unit="fraction",
                                                 tags={"method": m, **base_tags, "k": len(q["_relevant"])}))
        if m == "lime":
            r2 = qm["surrogate_r2"]
            low = (r2 < p.lime_min_r2).astype(np.float64)
            fidelity = "low" if low.mean() > 0.5 else "ok"
            lt = {"method": m, **base_tags, "fidelity": fidelity}
            recs.append(_mean_record("surrogate_r2", r2, ctx, higher_is_better=True, unit="r2", tags=lt))
            recs.append(_mean_record("local_prediction_error", qm["local_prediction_error"], ctx,
                                     higher_is_better=False, unit=out_unit, tags=lt))
            recs.append(_mean_record("low_fidelity_fraction", low, ctx, higher_is_better=False, unit="fraction",
                                     tags={**lt, "min_r2": p.lime_min_r2}))
            if fidelity == "low":
                ctx.log(f"explain: LIME fidelity is low on {ctx.model_name} (median R² {np.median(r2):.2f} "
                        f"< {p.lime_min_r2}); its attributions are unreliable here")
    if any(k[1] == "random" for k in q.get("_curves", {})):
        for mode, hib in (("deletion", False), ("insertion", True)):
            for rep, vals in (q.get("random", {}).get(f"{mode}_auc") or {}).items():
                recs.append(_mean_record(f"{mode}_auc", vals, ctx, higher_is_better=hib, unit=curve_unit,
                                         tags={"method": "random", **base_tags, "replacement": rep,
                                               "order": "random"}))
    return recs


def _attention_stack(module: "nn.Module", x: "torch.Tensor", batch_size: int) -> "torch.Tensor":
    """Attention maps of every layer, (N, L, H, T, T)."""
    import torch

    from .attention import attention_maps

    return torch.stack(attention_maps(module, x, batch_size=batch_size), 1)


# ---------------------------------------------------------------------- artifacts


def _save(outputs: dict[str, _MethodOutput], q: dict[str, Any], s: _Setup, skipped: dict[str, str],
          timings: dict[str, float], ctx: RunContext, p: Any) -> None:
    import numpy as np
    import torch

    from .gradients import per_unit

    view = s.model_view(s.module)
    with torch.no_grad():
        raw = view.em_prob(view.z) if s.classification else view.em(view.z)
    arrays: dict[str, Any] = {"input": s.x.cpu().numpy(), "label": s.data.test.y[: s.n].cpu().numpy(),
                              "explained_value": view.explained(view.z, s.target).numpy()}
    if s.classification:
        arrays["prediction"] = s.target.numpy()
        arrays["probability"] = raw.gather(1, s.target.to(raw.device)[:, None])[:, 0].double().cpu().numpy()
    else:
        arrays["prediction"] = raw.double().cpu().numpy()
    methods = list(outputs)
    for m in methods:
        o = outputs[m]
        u = per_unit(o.attr, s.space, s.modality).float().numpy()
        if s.modality == "image":
            u = u.reshape(s.n, *s.x.shape[2:])
        arrays[f"attr_{m}"] = u
    if s.segments is not None:
        arrays["segments"] = s.segments
    roll = outputs.get("rollout")
    maps = s.attention if s.attention is not None else (roll.maps if roll is not None else None)
    if maps is not None:
        arrays["attention"] = maps.float().numpy()
    if roll is not None and roll.rollout is not None:
        arrays["rollout"] = roll.rollout.float().numpy()
    ctx.save_artifact("examples", arrays)
    curves = q.get("_curves", {})
    if curves:
        carr = {"fractions": np.linspace(0, 1, p.curve_steps + 1)}
        for (mode, m, rep), c in curves.items():
            carr[f"{mode}__{m}__{rep}"] = c.astype(np.float32)
        ctx.save_artifact("curves", carr)
    quality_json: dict[str, Any] = {}
    for m, checks in q.items():
        if m.startswith("_"):
            continue
        quality_json[m] = {k: (v.tolist() if hasattr(v, "tolist") else
                               {r: a.tolist() for r, a in v.items()} if isinstance(v, dict) else v)
                           for k, v in checks.items()}
    ctx.save_artifact("quality", quality_json)
    tokens = None
    if s.modality == "tokens":
        vocab = s.data.vocab
        tokens = [[vocab[int(t)] if vocab and int(t) < len(vocab) else str(int(t)) for t in row] for row in s.x]
    meta = {
        "modality": s.modality, "task": s.data.task, "space": s.space, "n_examples": s.n,
        "attributions": methods, "skipped": skipped, "seconds_per_example": timings,
        "explained_output": p.explained_output if s.classification else "regression mean",
        "target": "predicted class" if s.classification else None,
        "baseline": "zero embedding" if s.space == "embedding" else "zero input",
        "shap_value_function": p.shap_value_function, "replacements": _replacement_kinds(s),
        "feature_names": list(s.data.feature_names) if s.data.feature_names else None,
        "class_names": list(s.data.class_names) if s.data.class_names else None,
        "tokens": tokens, "relevant": q.get("_relevant"), "tags": {m: outputs[m].tags for m in methods},
        "curve_unit": "probability" if s.classification else "output",
    }
    ctx.save_artifact("meta", meta)
