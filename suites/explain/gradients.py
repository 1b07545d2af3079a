"""Gradient attributions through captum, over the input or the token embeddings.

`ExplainedModel` wraps any reference model so that captum and shap see one function of
the attribution space:
  space "input"      z = x itself: images (B, C, H, W), tabular (B, F)
  space "embedding"  z = token embeddings (B, T, C) from `module.embed(ids)`, fed through
                     `module.forward_from_embeddings(z)` (or, for a model without it, a
                     forward hook that swaps the output of its nn.Embedding)
and returns the explained output: classification logits (B, K) or softmax probabilities
(B, K) (the class is chosen by captum's `target`), regression mean (B,).

Attributions have the shape of z; `per_unit` sums them to one score per pixel (over
channels), feature, or token (over the embedding dimension).
The attribution target is the model's predicted class (stated in every record).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from workbench.errors import ConfigError, DataError
from workbench.torch_utils import frozen_eval

GRADIENT_METHODS = ("saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "deeplift", "occlusion")
EXPLAINED_OUTPUTS = ("logit", "probability")
OUTPUT_KINDS = ("logits", "mean", "mean_logvar", "lm_logits")

# Methods whose summation property is sum(phi) = f(x) - f(baseline).
COMPLETE_METHODS = ("integrated_gradients", "deeplift")


@contextlib.contextmanager
def untouched(module: nn.Module) -> Iterator[nn.Module]:
    """Run explainers on `module` and hand it back exactly as it was.

    Every submodule in eval mode and parameters frozen for the duration (`frozen_eval`);
    afterwards each submodule's train flag, each parameter's requires_grad and its `.grad`
    (shap calls `model.zero_grad()`) are restored, and hooks an explainer left behind are
    removed, as are parameters, buffers and attributes it attached to layers. cuDNN is off
    on CUDA so RNNs can be differentiated in eval mode.
    """
    grads = {n: (None if p.grad is None else p.grad.detach().clone()) for n, p in module.named_parameters()}
    modules = dict(module.named_modules())
    hooks = {n: _hook_ids(m) for n, m in modules.items()}
    # shap's DeepExplainer stores inputs/outputs on layers as new nn.Parameters `x`, `y`
    # (and not always deletes them): remember what each layer had
    owned = {n: (set(m._parameters), set(m._buffers), set(vars(m))) for n, m in modules.items()}
    cudnn = torch.backends.cudnn.flags(enabled=False) if _on_cuda(module) else contextlib.nullcontext()
    try:
        with frozen_eval(module), cudnn:
            try:
                yield module
            finally:  # before frozen_eval restores flags, which knows only the original parameters
                for n, m in modules.items():
                    params, buffers, attrs = owned[n]
                    for k in [k for k in m._parameters if k not in params]:
                        del m._parameters[k]
                    for k in [k for k in m._buffers if k not in buffers]:
                        del m._buffers[k]
                    for k in [k for k in vars(m) if k not in attrs]:
                        delattr(m, k)
                    _drop_new_hooks(m, hooks[n])
    finally:
        for n, p in module.named_parameters():
            p.grad = grads[n]


def _on_cuda(module: nn.Module) -> bool:
    return any(p.is_cuda for p in module.parameters())


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _hook_ids(m: nn.Module) -> dict[str, set]:
    return {d: set(getattr(m, d, {}).keys()) for d in _HOOK_DICTS}


def _drop_new_hooks(m: nn.Module, before: dict[str, set]) -> None:
    for d in _HOOK_DICTS:
        hooks = getattr(m, d, None)
        if hooks is None:
            continue
        for k in [k for k in hooks if k not in before.get(d, set())]:
            del hooks[k]


def find_embedding(module: nn.Module, ids: torch.Tensor | None = None, path: str | None = None) -> nn.Module:
    """The token embedding layer, found by the helper the robustness suite uses
    (`workbench.embedding.find_embedding_layer`): the layer named in the plan (`path`), the
    only nn.Embedding, or (with sample `ids`) the only one fed the token ids."""
    from workbench.embedding import find_embedding_layer

    return find_embedding_layer(module, ids, path=path)[1]


def embed_tokens(module: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Token embeddings (B, T, C) of ids (B, T), detached: the embedding layer's output in a
    forward pass (`workbench.embedding.embeddings`), or the model's own `embed` shortcut."""
    from workbench.embedding import embeddings

    with torch.no_grad():
        if hasattr(module, "embed"):
            return module.embed(ids).detach()
        return embeddings(module, find_embedding(module, ids), ids)


class ExplainedModel(nn.Module):
    """f(z) over the attribution space (see module docstring).

    output_kind: "logits" | "mean" | "mean_logvar" | "lm_logits" (last position's logits).
    explained: "logit" | "probability" (classification only).
    """

    def __init__(self, module: nn.Module, output_kind: str, *, space: str = "input", explained: str = "logit") -> None:
        super().__init__()
        if output_kind not in OUTPUT_KINDS:
            raise ConfigError(f"Expected `output_kind` in {OUTPUT_KINDS}, got {output_kind!r}.")
        if space not in ("input", "embedding"):
            raise ConfigError(f"Expected `space` in ('input', 'embedding'), got {space!r}.")
        if explained not in EXPLAINED_OUTPUTS:
            raise ConfigError(f"Expected `explained_output` in {EXPLAINED_OUTPUTS}, got {explained!r}.")
        self.module = module
        self.output_kind = output_kind
        self.space = space
        self.explained = explained
        self._direct = space == "embedding" and hasattr(module, "forward_from_embeddings")
        # a module, not torch.softmax: DeepLift rules (captum, shap) exist for nn.Softmax only
        self.softmax = nn.Softmax(dim=-1)

    @property
    def classification(self) -> bool:
        return self.output_kind in ("logits", "lm_logits")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.space == "input":
            out = self.module(z)
        elif self._direct:
            out = self.module.forward_from_embeddings(z)
        else:
            out = self._through_embedding_hook(z)
        if isinstance(out, tuple):
            out = out[0]
        if self.output_kind == "lm_logits":
            out = out[:, -1, :]  # (B, V): next token after the sequence
        if self.output_kind == "mean":
            return out.reshape(-1)
        if self.output_kind == "mean_logvar":
            return out[:, 0]
        return self.softmax(out) if self.explained == "probability" else out

    def _through_embedding_hook(self, z: torch.Tensor) -> torch.Tensor:
        from workbench.embedding import forward_with_embeddings

        # zeros for the ids: captum expands the inputs, so the real ids are not row-aligned here
        return forward_with_embeddings(self.module, find_embedding(self.module), z)

    def scalar(self, target: int | None):  # noqa: ANN201 - returns a ScalarFn
        """f restricted to one class: z (B, ...) -> (B,)."""
        if self.classification:
            if target is None:
                raise ConfigError("Expected a target class for a classification output, got None.")
            return lambda z: self(z)[:, int(target)]
        return lambda z: self(z)


def per_unit(attr: torch.Tensor, space: str, modality: str) -> torch.Tensor:
    """Sum attributions to one score per unit: image (N, C, H, W) -> (N, H*W);
    tabular (N, F) -> (N, F); embeddings (N, T, C) -> (N, T)."""
    if space == "embedding":
        return attr.sum(-1)
    if modality == "image":
        return attr.sum(1).reshape(attr.shape[0], -1)
    return attr.reshape(attr.shape[0], -1)


class PinnedModel(nn.Module):
    """f(z) with the elements in `keep` held at the explained input's values whatever the
    caller passes there: SmoothGrad's noisy copies (captum's NoiseTunnel repeats each of
    the N inputs k times in a row) then never move a pad. inputs (N, *S); keep (N, *S) or
    broadcastable, True = held."""

    def __init__(self, model: nn.Module, inputs: torch.Tensor, keep: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.inputs = inputs.detach()
        self.keep = keep.to(inputs.device).expand_as(inputs)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        k = z.shape[0] // self.inputs.shape[0]
        if k * self.inputs.shape[0] != z.shape[0]:
            raise DataError(f"Expected k x {self.inputs.shape[0]} rows (each input repeated in a row), got {z.shape[0]}.")
        held = self.inputs.repeat_interleave(k, 0).to(z.dtype)
        return self.model(torch.where(self.keep.repeat_interleave(k, 0), held, z))


def occlusion_window(z_shape: tuple[int, ...], space: str, modality: str, patch: int = 2) -> tuple[tuple, tuple]:
    """(sliding_window_shapes, strides) for captum's Occlusion: patch x patch pixels (all
    channels) with stride 1 for images; one feature for tabular; one token for embeddings."""
    if space == "embedding":
        return (1, z_shape[-1]), (1, z_shape[-1])
    if modality == "image":
        c = z_shape[0]
        return (c, patch, patch), (c, 1, 1)
    return (1,), (1,)


def occlusion_shared(z_shape: tuple[int, ...], space: str, modality: str) -> int:
    """How many elements of one unit share one occlusion window's change: the embedding
    size for tokens, the channels for images, 1 for tabular features."""
    if space == "embedding":
        return int(z_shape[-1])
    if modality == "image":
        return int(z_shape[0])
    return 1


def gradient_attribution(
    method: str,
    model: ExplainedModel,
    inputs: torch.Tensor,
    *,
    target: torch.Tensor | None,
    baseline: torch.Tensor,
    modality: str,
    n_steps: int = 50,
    smoothgrad_samples: int = 16,
    smoothgrad_stdev: float = 0.1,
    seed: int = 0,
    batch_size: int = 256,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attributions (N, *S) of `method` for inputs z (N, *S) towards `target` (N,) (None
    for regression). `baseline` (1 or N, *S) is the reference for integrated gradients
    (Gauss-Legendre, `n_steps`), DeepLift and occlusion. SmoothGrad averages |grad| over
    `smoothgrad_samples` copies with N(0, smoothgrad_stdev^2) noise, seeded by `seed`;
    `keep` (N, *S) bool (token padding) holds those elements at z in every noisy copy.
    Call inside `untouched(module)`."""
    if method not in GRADIENT_METHODS:
        raise ConfigError(f"Expected a gradient method in {GRADIENT_METHODS}, got {method!r}.")
    import warnings

    with warnings.catch_warnings():
        # captum says it set requires_grad on the inputs (our private copies) and, for DeepLift,
        # that it sets hooks it removes again; neither concerns the caller
        warnings.simplefilter("ignore", UserWarning)
        return _attribute(method, model, inputs, target=target, baseline=baseline, modality=modality,
                          n_steps=n_steps, smoothgrad_samples=smoothgrad_samples,
                          smoothgrad_stdev=smoothgrad_stdev, seed=seed, batch_size=batch_size, keep=keep)


def _attribute(method: str, model: ExplainedModel, inputs: torch.Tensor, *, target: torch.Tensor | None,
               baseline: torch.Tensor, modality: str, n_steps: int, smoothgrad_samples: int,
               smoothgrad_stdev: float, seed: int, batch_size: int,
               keep: torch.Tensor | None = None) -> torch.Tensor:
    from captum.attr import (
        DeepLift,
        InputXGradient,
        IntegratedGradients,
        NoiseTunnel,
        Occlusion,
        Saliency,
    )

    z = inputs.detach().clone()  # captum sets requires_grad on what it gets
    base = baseline.detach().clone().to(z.device)
    if base.shape[0] == 1 and z.shape[0] > 1:
        base = base.expand_as(z).contiguous()
    if base.shape != z.shape:
        raise DataError(f"Expected a baseline of shape {tuple(z.shape)} or (1, ...), got {tuple(baseline.shape)}.")
    t = None if target is None else target.to(z.device)
    if method == "saliency":
        return Saliency(model).attribute(z, target=t, abs=True).detach()
    if method == "input_x_gradient":
        return InputXGradient(model).attribute(z, target=t).detach()
    if method == "integrated_gradients":
        ig = IntegratedGradients(model)
        per_call = max(1, batch_size // max(1, n_steps))
        parts = []
        for i in range(0, z.shape[0], per_call):
            parts.append(
                ig.attribute(z[i : i + per_call], baselines=base[i : i + per_call],
                             target=None if t is None else t[i : i + per_call], n_steps=n_steps,
                             method="gausslegendre", internal_batch_size=batch_size).detach()
            )
        return torch.cat(parts)
    if method == "smoothgrad":
        devices = [z.device.index or 0] if z.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            noisy = model if keep is None else PinnedModel(model, z, keep)
            nt = NoiseTunnel(Saliency(noisy))
            return nt.attribute(z, nt_type="smoothgrad", nt_samples=smoothgrad_samples,
                                nt_samples_batch_size=batch_size, stdevs=float(smoothgrad_stdev),
                                target=t, abs=True).detach()
    if method == "deeplift":
        return DeepLift(model).attribute(z, baselines=base, target=t).detach()
    window, strides = occlusion_window(tuple(z.shape[1:]), model.space, modality)
    occ = Occlusion(model).attribute(z, sliding_window_shapes=window, strides=strides, baselines=base,
                                     target=t, perturbations_per_eval=max(1, batch_size // z.shape[0])).detach()
    # captum credits EVERY element of a window with the window's whole output change, so a
    # token's C embedding coordinates (an image's c channels) would sum to C (c) times it.
    # Spread it evenly instead: a token's score (`per_unit`) is then the output change when
    # it is replaced by the baseline; a pixel's, the mean change of the patches covering it.
    return occ / occlusion_shared(tuple(z.shape[1:]), model.space, modality)
