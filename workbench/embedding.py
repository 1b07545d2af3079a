"""Token models through their embedding layer: find it, read its output, replace it.

Attacks and gradient attributions on token models work in embedding space: the token ids
(B, T) are discrete, the output of the embedding layer e (B, T, C) is not. Any `nn.Module`
works, with no special methods: a forward hook on the embedding layer reads its output
(`embeddings`) or replaces it (`forward_with_embeddings`), the way captum's layer methods do.
The robustness suite's attacks and the explain suite's gradients on embeddings both use
this module (one mechanism, not two).

Which layer: the one named in the plan (`embedding = "module.path"` on the model,
`ModelHandle.embedding`), else the single `nn.Embedding` of the model, else, with sample ids,
the single `nn.Embedding` that is fed the token ids themselves (so a position embedding,
fed `arange(T)`, does not count). Two layers fed the ids (word + hashed-word tables, say)
are ambiguous: `find_embedding_layer` raises and asks the plan to name one.

What eps means in embedding space (`embedding_eps_scale`): the attacks take eps relative to
the size of the clean embeddings of the attacked sample, eps_absolute = eps · s with
  L∞: s = root-mean-square embedding coordinate, sqrt(mean over b, t, c of e²),
  L2:  s = mean over sequences of ||e_b||₂, the L2 norm of a whole embedded sequence (T·C values),
so eps = 0.1 lets each coordinate move by 10% of a typical coordinate (L∞), or the
sequence's embedding move by 10% of a typical sequence-embedding norm (L2). Such a point
is usually no token's embedding: the discrete attack (`suites/robustness/hotflip.py`)
answers the question in tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from workbench.errors import ModelError, did_you_mean
from workbench.torch_utils import frozen_eval


class _Captured(Exception):
    """Raised by a capture hook to stop a forward pass once the embeddings are read."""


def _embedding_names(module: nn.Module) -> list[str]:
    return [name for name, m in module.named_modules() if isinstance(m, nn.Embedding)]


def _resolve(module: nn.Module, path: str) -> nn.Module:
    names = [n for n, _ in module.named_modules() if n]
    try:
        return module.get_submodule(path)
    except AttributeError:
        emb = _embedding_names(module)
        raise ModelError(
            f"Expected `embedding = {path!r}` to name a submodule of {type(module).__name__}; it has none by that "
            f"name.{did_you_mean(path, names)} Embedding layers: {', '.join(emb) or '(none)'}."
        ) from None


def _fed_the_ids(module: nn.Module, ids: torch.Tensor, candidates: list[str]) -> list[str]:
    """Names of the candidate layers whose input in a forward pass of `module(ids)` is the
    token ids themselves (same shape and values)."""
    fed: list[str] = []
    handles = []

    def pre_hook(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
            a = args[0] if args else None
            if isinstance(a, torch.Tensor) and a.shape == ids.shape and torch.equal(a.to(ids.device), ids):
                fed.append(name)
        return hook

    for name in candidates:
        handles.append(module.get_submodule(name).register_forward_pre_hook(pre_hook(name)))
    try:  # eval mode, restored after: the probe must not update BatchNorm statistics
        with frozen_eval(module), torch.no_grad():
            module(ids)
    finally:
        for h in handles:
            h.remove()
    return list(dict.fromkeys(fed))


def find_embedding_layer(module: nn.Module, ids: torch.Tensor | None = None, *,
                         path: str | None = None) -> tuple[str, nn.Module]:
    """(name, layer) of the token embedding layer of `module` (see the module docstring).
    ids: sample token ids (B, T) long, used to tell the layer fed the ids from others
    (position embeddings) when the model has several `nn.Embedding`. Raises ModelError
    naming the candidates when none or several qualify."""
    if not isinstance(module, nn.Module):
        raise ModelError(f"Expected an nn.Module, got {type(module).__name__}.")
    if path is not None:
        return path, _resolve(module, path)
    cands = _embedding_names(module)
    if not cands:
        raise ModelError(
            f"Expected a token model with an nn.Embedding layer; {type(module).__name__} has none. Name the layer "
            "that maps token ids to vectors in the plan: `embedding = \"module.path\"` on the model."
        )
    if len(cands) == 1:
        return cands[0], module.get_submodule(cands[0])
    fed = _fed_the_ids(module, ids, cands) if ids is not None else cands
    if len(fed) == 1:
        return fed[0], module.get_submodule(fed[0])
    which = fed if fed else cands
    why = "are fed the token ids" if ids is not None and fed else "could be the token embedding"
    raise ModelError(
        f"{type(module).__name__} has {len(which)} embedding layers that {why}: {', '.join(which)}. Name the one "
        f"to attack and explain through in the plan: `embedding = \"{which[0]}\"` on the model."
    )


def embeddings(module: nn.Module, layer: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The output of `layer` (B, T, C) during `module(ids)`, detached. The forward pass
    stops at the layer. Raises ModelError if the layer is not called."""
    got: list[torch.Tensor] = []

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        got.append(out)
        raise _Captured

    h = layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            module(ids)
    except _Captured:
        pass
    finally:
        h.remove()
    if not got or not isinstance(got[0], torch.Tensor):
        raise ModelError(f"The embedding layer {type(layer).__name__} was not called (or returned no tensor) in a "
                         f"forward pass of {type(module).__name__}; name the right layer with `embedding = ...`.")
    return got[0].detach()


def forward_with_embeddings(module: nn.Module, layer: nn.Module, e: torch.Tensor,
                            ids: torch.Tensor | None = None) -> Any:
    """`module(ids)` with the output of `layer` replaced by e (B, T, C) (gradients flow to e).
    ids (B, T): the token ids the rest of the model may also read (padding masks, a second
    embedding); None runs it on zeros, for models that read the ids only through `layer`."""
    if ids is None:
        ids = torch.zeros(e.shape[:2], dtype=torch.long, device=e.device)
    elif ids.shape[0] != e.shape[0]:
        raise ModelError(f"Expected token ids for the {e.shape[0]} embedded sequences, got ids of shape "
                         f"{tuple(ids.shape)}.")
    calls = [0]

    def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        if out.shape != e.shape:
            raise ModelError(f"Expected the embedding layer to output {tuple(e.shape)}, got {tuple(out.shape)}.")
        return e.to(out.dtype)

    h = layer.register_forward_hook(hook)
    try:
        out = module(ids)
    finally:
        h.remove()
    if calls[0] == 0:
        raise ModelError(f"The embedding layer {type(layer).__name__} was not called in a forward pass of "
                         f"{type(module).__name__}; name the right layer with `embedding = ...`.")
    return out


def forward_with_offset(module: nn.Module, layer: nn.Module, delta: torch.Tensor, ids: torch.Tensor) -> Any:
    """`module(ids)` with `delta` (B, T, C) added to the output of `layer`. Unlike
    `forward_with_embeddings`, the layer's own output stays in the graph, so a loss on the
    result also reaches the embedding weights (adversarial training)."""
    calls = [0]

    def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        if out.shape != delta.shape:
            raise ModelError(f"Expected the embedding layer to output {tuple(delta.shape)}, got {tuple(out.shape)}.")
        return out + delta.to(out.dtype)

    h = layer.register_forward_hook(hook)
    try:
        out = module(ids)
    finally:
        h.remove()
    if calls[0] == 0:
        raise ModelError(f"The embedding layer {type(layer).__name__} was not called in a forward pass of "
                         f"{type(module).__name__}; name the right layer with `embedding = ...`.")
    return out


class TokenEmbeddingModel(nn.Module):
    """A token model as a function of its embeddings for fixed token ids:
    f(e) = module(ids) with the embedding layer's output replaced by e (B, T, C).
    `rows(index)` restricts it to some sequences (attacks that work on subsets call it);
    `clean()` gives the clean embeddings (B, T, C)."""

    def __init__(self, module: nn.Module, layer: nn.Module, ids: torch.Tensor, name: str = "") -> None:
        super().__init__()
        self.module = module
        self.layer_name = name
        object.__setattr__(self, "_layer", layer)  # a submodule of `module`: not registered twice
        self.ids = ids

    def rows(self, index: slice | torch.Tensor) -> "TokenEmbeddingModel":
        return TokenEmbeddingModel(self.module, self._layer, self.ids[index], self.layer_name)

    def clean(self, batch_size: int | None = None) -> torch.Tensor:
        """The clean embeddings (B, T, C) of the bound ids, `batch_size` rows per forward pass."""
        n = self.ids.shape[0]
        step = batch_size or max(n, 1)
        return torch.cat([embeddings(self.module, self._layer, self.ids[i:i + step]) for i in range(0, n, step)])

    def forward(self, e: torch.Tensor) -> Any:
        if e.shape[0] != self.ids.shape[0]:
            raise ModelError(f"Expected embeddings of the {self.ids.shape[0]} bound sequences, got {e.shape[0]}; "
                             "restrict the model with `.rows(index)` first.")
        return forward_with_embeddings(self.module, self._layer, e, self.ids)


def restrict(model: Any, index: slice | torch.Tensor) -> Any:
    """`model.rows(index)` for models bound to per-row data (TokenEmbeddingModel), else the
    model itself: what every attack calls when it works on a subset of the rows."""
    rows = getattr(model, "rows", None)
    return rows(index) if callable(rows) else model


def padding_mask(ids: torch.Tensor, pad_id: object) -> torch.Tensor | None:
    """(B, T) bool, True at the padding positions of token ids (B, T): where the id equals the
    dataset's `pad_id` (its ground_truth["pad_id"]; the Hugging Face adapter embeds these as
    all-zero vectors and masks them out of attention). None when the data declare no pad id
    (`pad_id` None) or no position of `ids` is padding, so callers keep their unpadded path."""
    from workbench.errors import ParameterTypeError

    import operator

    from workbench.errors import DataError

    if pad_id is None:
        return None
    try:  # any integer: int, numpy.int64, a 0-d integer tensor (as the HF adapter accepts); never a bool
        if isinstance(pad_id, bool) or (isinstance(pad_id, torch.Tensor) and pad_id.dtype == torch.bool):
            raise TypeError
        pad = operator.index(pad_id)
    except TypeError:
        raise ParameterTypeError(f"Expected `pad_id` to be an integer token id or None, got {type(pad_id).__name__} "
                                 f"{pad_id!r}.") from None
    if ids.dim() != 2 or ids.dtype.is_floating_point:
        raise DataError(f"Expected integer token ids (B, T), got {ids.dtype} of shape {tuple(ids.shape)}.")
    mask = ids == pad
    return mask if bool(mask.any()) else None


def embedding_eps_scale(e: torch.Tensor, norm: str) -> float:
    """Scale turning a relative eps into an absolute one in embedding space (see the module
    docstring), measured on clean embeddings e (B, T, C): the RMS coordinate (L∞, "linf") or
    the mean L2 norm of a whole embedded sequence (L2, "l2")."""
    from workbench.errors import ConfigError

    if norm not in ("linf", "l2"):
        raise ConfigError(f"Expected `norm` to be one of ['linf', 'l2'], got {norm!r}.")
    e = e.detach().float()
    if norm == "linf":
        return float(e.pow(2).mean().sqrt())
    return float(e.reshape(e.shape[0], -1).norm(dim=1).mean())
