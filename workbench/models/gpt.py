"""A tiny causal language model in the style of nanoGPT: (B, T) token ids -> logits (B, T, V).

  token embedding + learned position embedding -> dropout
  -> n_layer pre-LN causal blocks (the attention of transformer.py, causal=True)
  -> LN -> lm_head, whose weight is the token embedding's (weight tying)

`forward` returns logits only; the caller computes the loss. `generate` extends a
prompt greedily (temperature 0) or by sampling, with a KV cache that gives the same
tokens as recomputing the whole context every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from workbench.data.base import Dataset
from workbench.errors import ConfigError, DataError, ParameterTypeError
from workbench.models import check_data, check_dropout, check_int, make_config
from workbench.models.transformer import (
    Block,
    KVCache,
    check_block_size,
    check_shape_config,
    init_weights,
    token_derived,
)

ARCH = "gpt"
MODALITIES = ("lm",)
TASKS = ("lm",)


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 64  # from the data
    block_size: int = 32  # from the data (T); may be set larger
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 64
    d_ff: int = 256
    dropout: float = 0.1

    def __post_init__(self) -> None:
        check_int(ARCH, "vocab_size", self.vocab_size, minimum=2)
        check_int(ARCH, "block_size", self.block_size)
        check_int(ARCH, "n_layer", self.n_layer)
        check_shape_config(ARCH, self.d_model, self.n_head)
        check_int(ARCH, "d_ff", self.d_ff)
        check_dropout(ARCH, "dropout", self.dropout)


CONFIGS: dict[str, GPTConfig] = {
    "tiny": GPTConfig(n_layer=2, n_head=4, d_model=64, d_ff=256, dropout=0.1),
    "base": GPTConfig(n_layer=6, n_head=8, d_model=256, d_ff=1024, dropout=0.1),
}


class GPT(nn.Module):
    output_kind = "lm_logits"

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.position_embedding = nn.Embedding(config.block_size, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(config.d_model, config.n_head, config.d_ff, config.dropout, causal=True)
            for _ in range(config.n_layer)
        )
        self.ln_f = nn.LayerNorm(config.d_model)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        init_weights(self, config.n_layer)
        self.lm_head.weight = self.token_embedding.weight  # tied after init: one (V, C) parameter

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Token embeddings only: (B, T) long -> (B, T, C)."""
        return self.token_embedding(idx)

    def _run(
        self, e: torch.Tensor, past: list[KVCache] | None, want_attention: bool, want_cache: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[KVCache]]:
        """Embeddings (B, T, C) of positions P..P+T-1 (P = cached length) -> logits (B, T, V),
        attention per layer (B, H, T, P+T), updated cache."""
        B, T, C = e.shape
        start = 0 if past is None else past[0][0].size(2)
        if start + T > self.config.block_size:
            raise DataError(
                f"Sequence length {start + T} exceeds the model's block_size {self.config.block_size}."
            )
        pos = torch.arange(start, start + T, device=e.device)
        x = self.drop(e + self.position_embedding(pos))  # (B, T, C)
        attentions, present = [], []
        plain = past is None and not (want_attention or want_cache)
        for i, block in enumerate(self.blocks):
            if plain:  # plain tensors through every block, so forward hooks see (B, T, C)
                x = block(x)
                continue
            x, att, kv = block(x, past=None if past is None else past[i], extras=True)
            attentions.append(att)
            present.append(kv)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        return logits, attentions, present

    def forward_from_embeddings(
        self, e: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, T, C) token embeddings -> logits (B, T, V) [, attention (B, H, T, T) per layer,
        zero above the diagonal]."""
        logits, attentions, _ = self._run(e, None, return_attention, want_cache=False)
        return (logits, attentions) if return_attention else logits

    def forward(
        self, idx: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, T) token ids -> next-token logits (B, T, V) [, attention per layer]."""
        return self.forward_from_embeddings(self.embed(idx), return_attention=return_attention)

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: int | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Extend `idx` (B, T) by `max_new_tokens` tokens -> (B, T + max_new_tokens).

        temperature == 0 picks the argmax (greedy); > 0 samples from softmax(logits / temperature),
        restricted to the `top_k` most likely tokens when given (`generator` seeds the sampling).
        The context is cropped to the last `block_size` tokens. With `use_cache` the keys and
        values of earlier positions are reused while the sequence fits in `block_size`; past that
        the window slides, every position shifts, and the context is recomputed (as without
        the cache). Runs in the module's current train/eval mode: call `.eval()` first for
        deterministic output.
        """
        check_int(ARCH, "max_new_tokens", max_new_tokens, minimum=0)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature < 0:
            raise ConfigError(f"Expected `temperature` to be a float >= 0 (0 = greedy), got {temperature!r}.")
        if top_k is not None:
            check_int(ARCH, "top_k", top_k)
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.dtype != torch.long:
            got = f"{tuple(idx.shape)} {idx.dtype}" if isinstance(idx, torch.Tensor) else type(idx).__name__
            raise ParameterTypeError(f"Expected `idx` to be a (B, T) long tensor with T >= 1, got {got}.")
        if idx.size(1) == 0:
            raise DataError("Expected a prompt of at least one token, got T = 0.")
        block = self.config.block_size
        cache: list[KVCache] | None = None
        for _ in range(max_new_tokens):
            L = idx.size(1)
            if use_cache and cache is not None and L <= block:
                # the cache holds positions 0..L-2: feed only the newest token
                logits, _, cache = self._run(self.embed(idx[:, -1:]), cache, False, want_cache=True)
            elif use_cache and L <= block:
                logits, _, cache = self._run(self.embed(idx), None, False, want_cache=True)
            else:
                logits, cache = self(idx[:, -block:]), None  # (B, T', V)
            logits = logits[:, -1, :]  # (B, V)
            if temperature == 0:
                next_token = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]  # (B, 1)
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = F.softmax(logits, dim=-1)
                next_token = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
            idx = torch.cat([idx, next_token], dim=1)
        return idx


def build(data: Dataset, size: str = "tiny", **overrides: object) -> GPT:
    """A causal LM for `data`: vocab_size and block_size = T from the dataset."""
    check_data(ARCH, data, MODALITIES, TASKS)
    config = make_config(ARCH, CONFIGS, size, token_derived(ARCH, data), overrides, adjustable=("block_size",))
    check_block_size(ARCH, config, data)
    return GPT(config)
