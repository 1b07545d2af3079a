"""What every explanation method of one run shares, as typed records: the explained
examples and their targets (`Setup`), one module seen in the attribution space (`View`:
the trained model, or its re-initialised copy for the sanity check), and one method's
attributions (`MethodOutput`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from workbench.suite import ModelHandle, RunContext

from .config import ATTENTION, ExplainParams

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from workbench.data.base import Dataset


def has_embedding(module: "nn.Module") -> bool:
    from torch import nn

    if hasattr(module, "forward_from_embeddings"):
        return True
    return isinstance(getattr(module, "token_embedding", None), nn.Embedding) or \
        sum(isinstance(m, nn.Embedding) for m in module.modules()) == 1


@dataclass
class Setup:
    """Everything the methods share for one model on one dataset.

    x: (N, *input) the explained inputs (token ids for token models); z: (N, *S) in the
    attribution space (inputs, or token embeddings); target: (N,) predicted classes (None
    for regression); f_x / f_base: explained output at x and at the baseline (N,);
    baseline: (1, *S) zeros; background: (R, *S) (+ weights) for SHAP; groups: one player
    map per example (superpixels / features / tokens); units: (*S) unit of each element
    for deletion and per-unit scores. pad: (N, T) bool, True at token padding (the
    dataset's ground_truth["pad_id"]); None when nothing explained is padding (images,
    tabular, unpadded tokens: every unit is a player). Pads are no players: groups map
    them to NOT_A_PLAYER, they keep their own value in every perturbation and baseline,
    and their attributions are exactly 0 (PAD_NOTE). train_pad: (R, T) bool, True at the
    padding of the training pool `train_raw` when the dataset declares a pad id (None
    otherwise, or when the pool has no pad): the `mean` / `sample` replacements of the
    deletion/insertion curves use real training tokens only. On padded token data the SHAP
    background (`background_raw`, training texts) has each pad replaced by a real training
    token (`quality.redraw_pads`: one real at that position in the pool, seeded), so an
    absent real token is replaced by a typical token, not deleted; and `scale` (the 1-99%
    quantile range of the pool's embedding coordinates, for SmoothGrad, infidelity and
    max-sensitivity noise) is taken over the real tokens only. Without pads both are as
    on unpadded data, bitwise.
    """

    handle: ModelHandle
    data: "Dataset"
    module: "nn.Module"
    params: ExplainParams
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
    views: dict[int, "View"] = field(default_factory=dict)
    pad: "torch.Tensor | None" = None
    train_pad: "torch.Tensor | None" = None

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    def real_units(self) -> "np.ndarray | None":
        """(N, U) bool: the units (tokens) that are players; None when every unit is one."""
        return None if self.pad is None else (~self.pad).cpu().numpy()

    def n_players(self) -> "np.ndarray":
        """(N,) players per example: real (non-pad) tokens, or every unit."""
        import numpy as np

        real = self.real_units()
        return np.full(self.n, int(self.units.max()) + 1) if real is None else real.sum(1)

    @classmethod
    def build(cls, handle: ModelHandle, data: "Dataset", ctx: RunContext, p: ExplainParams) -> "Setup":
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
        pad = train_pad = None
        rng = np.random.default_rng(ctx.seed)
        n_train = len(data.train)
        pool = torch.as_tensor(rng.choice(n_train, size=min(n_train, 512), replace=False))
        train_raw = data.train.x[pool]
        bg_idx = torch.as_tensor(rng.choice(n_train, size=min(n_train, p.shap_background), replace=False))
        background_raw = data.train.x[bg_idx]
        if modality == "tokens":
            from workbench.embedding import padding_mask

            from .quality import redraw_pads

            pad_id = (data.ground_truth or {}).get("pad_id")
            pad = padding_mask(x, pad_id)
            train_pad = padding_mask(train_raw, pad_id)
            bg_pad = padding_mask(background_raw, pad_id)
            if bg_pad is not None:  # an absent real token takes a real token's value, never a pad's (a deletion)
                pool_pad = train_pad if train_pad is not None else torch.zeros(train_raw.shape[:2], dtype=torch.bool)
                background_raw = redraw_pads(background_raw, bg_pad, train_raw, pool_pad, rng)
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
                    train_raw=train_raw, groups=groups, units=torch.zeros(0), segments=segments, scale=1.0,
                    pad=pad, train_pad=train_pad)
        view = setup.model_view(module)
        z = view.z
        shape = tuple(z.shape[1:])
        if space == "embedding" and pad is None:
            setup.groups = [torch.arange(shape[0])[:, None]] * n
        elif space == "embedding":  # real tokens are players 0..M_i-1 in order, pads none
            from .shapley import NOT_A_PLAYER

            real = ~pad
            setup.groups = [torch.where(r, r.long().cumsum(0) - 1, NOT_A_PLAYER)[:, None] for r in real]
        setup.units = unit_index(shape, space, modality)
        with torch.no_grad():
            out = view.em(z)
        if setup.classification:
            setup.target = out.argmax(1).cpu()
        train_z = view.train_z.float().cpu()
        if train_pad is not None:  # pads (zeros for the HF adapter) would shrink the scale of real embeddings
            train_z = train_z[~train_pad.cpu()]  # (K, C) the real training tokens
        lo, hi = np.quantile(train_z.numpy(), [0.01, 0.99])
        setup.scale = float(hi - lo) if hi > lo else 1.0
        if modality == "image" and data.bounds:
            setup.scale = float(data.bounds[1] - data.bounds[0])
        return setup

    def model_view(self, module: "nn.Module") -> "View":
        key = id(module)
        if key not in self.views:
            self.views[key] = View.build(self, module)
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
class View:
    """One module seen in the attribution space (the trained model, or its re-initialised
    copy for the sanity check: token models get their own embeddings)."""

    module: "nn.Module"
    em: Any  # ExplainedModel over the explained output
    # baseline: (1, *S) zeros, or (N, T, C) with each pad's own embedding when there is padding
    em_prob: Any  # ExplainedModel over the tracked score (probability) for curves
    z: "torch.Tensor"
    baseline: "torch.Tensor"
    background: "torch.Tensor"
    train_z: "torch.Tensor"

    @classmethod
    def build(cls, setup: Setup, module: "nn.Module") -> "View":
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
        if setup.pad is None:
            baseline = torch.zeros_like(z[:1])  # (1, *S)
        else:  # (N, T, C): zero embedding on real tokens, each pad keeps its own (it is no player)
            baseline = z * setup.pad.to(z.device)[..., None].to(z.dtype)
        return cls(module=module, em=em, em_prob=em_prob, z=z, baseline=baseline,
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
class MethodOutput:
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
