"""A discrete attack on token models: up to k token substitutions found by a gradient-guided
search (HotFlip, Ebrahimi et al. 2018), each checked by a real forward pass on the
substituted token ids.

Why: an eps-ball in embedding space (`functional.py` on `TokenEmbeddingModel`) mostly holds
points that are no token's embedding, so "robust at eps = 0.1" says little a person can
read. "The prediction flips when 2 tokens are replaced" does.

The search, per sequence, greedy, k rounds:
  1. the gradient g (T, C) of the cross-entropy w.r.t. the embeddings e (T, C) of the
     current tokens (through the embedding-layer hook, any nn.Module);
  2. the first-order gain of putting token v at position t: (w_v − e_t) · g_t, for every
     position not yet substituted and every allowed token v ≠ the current one (w_v: the
     embedding table's row v);
  3. the `candidates` best (t, v) pairs are each evaluated by a real forward pass on the
     substituted ids; the one with the largest margin max_{j≠y} z_j − z_y is applied;
  4. a sequence whose real forward misclassifies it is done (early stop): the number of
     substitutions it took is recorded.
So every reported flip is a real misclassification of real token ids, never a first-order
estimate; the search may miss flips (it is greedy), so the flip rate is a lower bound of
the true worst case at k substitutions.

A substitution can change what the sequence means (its true label): the search knows
nothing of meaning. Where the data says which positions carry the label
(`ground_truth["relevant_positions"]`, synthetic tasks), the suite freezes them
(`frozen_positions`), so a flip is a change of irrelevant tokens only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from workbench import embedding as E
from workbench.errors import DataError, ModelError, check_positive_int
from workbench.suites.robustness.attack_utils import attack_mode, logits_of, margin_loss


@dataclass(frozen=True)
class HotFlipResult:
    """substituted: (B, T) long, the ids after the search (the first misclassified sequence,
    else after `max_substitutions` substitutions); flips_at: (B,) long, the number of
    substitutions at which the real prediction became wrong (0: wrong already, -1: not
    within the budget); logits: (B, K) of the real forward on `substituted`."""

    substituted: torch.Tensor
    flips_at: torch.Tensor
    logits: torch.Tensor

    def flipped_within(self, k: int) -> torch.Tensor:
        """(B,) bool: misclassified after at most k substitutions (and correct before any)."""
        return (self.flips_at >= 1) & (self.flips_at <= k)


def vocabulary_embeddings(layer: nn.Module, vocab_size: int | None) -> torch.Tensor:
    """The embedding of every token id (V, C): an nn.Embedding's weight, else `layer` applied
    to 0..V-1 (then `vocab_size` is needed)."""
    if isinstance(layer, nn.Embedding):
        return layer.weight.detach()
    if not isinstance(vocab_size, int) or vocab_size < 2:
        raise DataError(f"Expected the dataset's `vocab_size` to embed every token with {type(layer).__name__}, "
                        f"got {vocab_size!r}.")
    dev = next((p.device for p in layer.parameters()), torch.device("cpu"))
    with torch.no_grad():
        return layer(torch.arange(vocab_size, device=dev)).detach()


def hotflip(
    module: nn.Module,
    layer: nn.Module,
    ids: torch.Tensor,
    y: torch.Tensor,
    *,
    max_substitutions: int = 3,
    candidates: int = 8,
    vocab_size: int | None = None,
    exclude_tokens: tuple[int, ...] = (),
    frozen_positions: tuple[int, ...] = (),
    batch_size: int | None = None,
) -> HotFlipResult:
    """Greedy HotFlip (module docstring) on ids (B, T) long with true labels y (B,).
    `module(ids)` returns logits (B, K); `layer` is its token embedding layer
    (`workbench.embedding.find_embedding_layer`). `exclude_tokens` are never inserted nor
    replaced (padding); `frozen_positions` are never changed. The module comes back as found."""
    if not isinstance(ids, torch.Tensor) or ids.dtype != torch.long or ids.dim() != 2:
        raise DataError(f"Expected token ids (B, T) long, got {getattr(ids, 'dtype', type(ids).__name__)} "
                        f"{tuple(getattr(ids, 'shape', ()))}.")
    if not isinstance(y, torch.Tensor) or y.dtype != torch.long or y.shape != ids.shape[:1]:
        raise DataError(f"Expected `y` to be a long tensor of shape ({ids.shape[0]},) with the true labels.")
    check_positive_int("max_substitutions", max_substitutions)
    check_positive_int("candidates", candidates)
    w = vocabulary_embeddings(layer, vocab_size)  # (V, C)
    allowed = torch.ones(w.shape[0], dtype=torch.bool, device=w.device)
    for t in exclude_tokens:
        if 0 <= int(t) < w.shape[0]:
            allowed[int(t)] = False
    if not bool(allowed.any()):
        raise ModelError("Expected at least one token allowed as a substitute; all are excluded.")
    frozen = torch.zeros(ids.shape[1], dtype=torch.bool, device=ids.device)
    for t in frozen_positions:
        if -ids.shape[1] <= int(t) < ids.shape[1]:
            frozen[int(t)] = True
    out_ids, flips, logits = [], [], []
    # the (rows, T, V) first-order gain table is the big tensor: at most ~2^25 entries per chunk
    # (a 30k-token vocabulary at T = 128 takes 8 sequences at a time)
    cap = max(1, (1 << 25) // max(1, ids.shape[1] * w.shape[0]))
    bs = min(batch_size or ids.shape[0], cap)
    with attack_mode(module):
        for i in range(0, ids.shape[0], bs):
            r = _hotflip_chunk(module, layer, ids[i:i + bs], y[i:i + bs], w, allowed, frozen, max_substitutions,
                               candidates, batch_size or ids.shape[0])
            out_ids.append(r[0])
            flips.append(r[1])
            logits.append(r[2])
    return HotFlipResult(torch.cat(out_ids), torch.cat(flips), torch.cat(logits))


def _hotflip_chunk(module: nn.Module, layer: nn.Module, ids: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
                   allowed: torch.Tensor, frozen: torch.Tensor, k_max: int, n_cand: int, fwd_rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b, t_len = ids.shape
    cur = ids.clone()
    with torch.no_grad():
        z = logits_of(module, cur)
    fooled = z.argmax(1) != y
    flips = torch.where(fooled, 0, -1).to(torch.long)
    used = torch.zeros(b, t_len, dtype=torch.bool, device=ids.device)
    blocked = frozen[None, :].expand(b, t_len)
    for step in range(1, k_max + 1):
        act = (~fooled).nonzero().squeeze(1)
        if act.numel() == 0:
            break
        ids_a = cur[act]
        model = E.TokenEmbeddingModel(module, layer, ids_a)
        e = model.clean().float().requires_grad_(True)  # (A, T, C)
        loss = F.cross_entropy(logits_of(model, e).float(), y[act], reduction="sum")
        (g,) = torch.autograd.grad(loss, e)  # (A, T, C)
        gain = g @ w.float().T - (e.detach() * g).sum(-1, keepdim=True)  # (A, T, V): first-order loss change
        gain[used[act] | blocked[act] | ~allowed[ids_a]] = float("-inf")  # once; not frozen; never padding
        gain[:, :, ~allowed] = float("-inf")
        gain.scatter_(2, ids_a[:, :, None], float("-inf"))
        c = min(n_cand, t_len * w.shape[0])
        top = gain.reshape(act.numel(), -1).topk(c, dim=1)  # (A, c)
        valid = torch.isfinite(top.values)
        pos, tok = top.indices // w.shape[0], top.indices % w.shape[0]
        cand = ids_a[:, None, :].repeat(1, c, 1)  # (A, c, T)
        cand.scatter_(2, pos[:, :, None], tok[:, :, None])
        flat = cand.reshape(-1, t_len)
        with torch.no_grad():  # the real forward on the substituted ids, at most fwd_rows at a time
            zc = torch.cat([logits_of(module, flat[j:j + fwd_rows]).float() for j in range(0, len(flat), fwd_rows)])
        margin = margin_loss(zc, y[act].repeat_interleave(c)).reshape(-1, c)
        margin[~valid] = float("-inf")
        best = margin.argmax(1)  # (A,)
        ok = torch.isfinite(margin.gather(1, best[:, None]).squeeze(1))
        rows, chosen = act[ok], best[ok]
        pick = torch.arange(rows.numel(), device=ids.device)
        cur[rows] = cand[ok][pick, chosen]
        used[rows, pos[ok][pick, chosen]] = True
        newly = margin[ok][pick, chosen] > 0
        fooled[rows[newly]] = True
        flips[rows[newly]] = step
    with torch.no_grad():
        z = logits_of(module, cur).float()  # the final check, on the returned ids
    wrong = z.argmax(1) != y
    if bool((wrong != fooled).any()):  # a tie in the margin, or a non-deterministic forward: trust the last one
        flips = torch.where(wrong, torch.where(flips >= 0, flips, used.sum(1)), torch.full_like(flips, -1))
    return cur, flips, z
