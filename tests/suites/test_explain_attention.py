"""Attention maps of the reference Transformer/GPT and attention rollout (Abnar & Zuidema
2020) against hand computations and the properties it must keep."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.suites.explain.attention import (
    attention_entropy,
    attention_maps,
    attention_rollout,
    supports_attention,
    token_relevance,
)
from workbench.suites.explain.testing import FixedAttention, TinyMLP, tokens_dataset
from workbench.errors import ConfigError, DataError, ModelError

torch.set_num_threads(1)


def _random_attention(b: int, h: int, t: int, seed: int, causal: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, h, t, t, generator=g)
    if causal:
        logits = logits.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
    return logits.softmax(-1)


@pytest.mark.parametrize("arch", ["transformer", "gpt"])
def test_reference_model_attention_rows_sum_to_one(arch):
    from workbench.models import gpt, transformer

    data = tokens_dataset(n=40, length=9, vocab=11)
    torch.manual_seed(0)
    if arch == "transformer":
        model = transformer.TransformerClassifier(transformer.TransformerConfig(
            vocab_size=11, block_size=9, num_classes=2, n_layer=2, n_head=2, d_model=16, d_ff=32))
    else:
        model = gpt.GPT(gpt.GPTConfig(vocab_size=11, block_size=9, n_layer=2, n_head=2, d_model=16, d_ff=32))
    model.eval()
    assert supports_attention(model)
    maps = attention_maps(model, data.test.x[:5], batch_size=2)  # batches are stitched back together
    assert len(maps) == 2 and maps[0].shape == (5, 2, 9, 9)
    for a in maps:
        torch.testing.assert_close(a.sum(-1), torch.ones(5, 2, 9))
        if arch == "gpt":
            assert float(torch.triu(a, diagonal=1).abs().max()) == 0.0
    roll = attention_rollout(maps, causal=(arch == "gpt"))
    torch.testing.assert_close(roll.sum(-1), torch.ones(5, 9))
    if arch == "gpt":
        assert float(torch.triu(roll, diagonal=1).abs().max()) < 1e-7


def test_rollout_of_one_identity_layer_is_the_identity():
    eye = torch.eye(6).expand(3, 4, 6, 6)
    torch.testing.assert_close(attention_rollout([eye]), torch.eye(6).expand(3, 6, 6))
    torch.testing.assert_close(attention_rollout([eye], residual=False), torch.eye(6).expand(3, 6, 6))


def test_rollout_matches_a_hand_computation():
    """R = A2_hat @ A1_hat with A_hat = (mean_h A + I) / 2 (rows of mean_h A sum to 1)."""
    a1, a2 = _random_attention(2, 3, 5, 1), _random_attention(2, 3, 5, 2)
    want = []
    for b in range(2):
        h1 = (a1[b].mean(0).double().numpy() + np.eye(5)) / 2
        h2 = (a2[b].mean(0).double().numpy() + np.eye(5)) / 2
        want.append(h2 @ h1)
    np.testing.assert_allclose(attention_rollout([a1, a2]).numpy(), np.stack(want), atol=1e-6)
    stacked = torch.stack([a1, a2])  # one (L, B, H, T, T) tensor works too
    torch.testing.assert_close(attention_rollout(stacked), attention_rollout([a1, a2]))


def test_causal_rollout_stays_lower_triangular_and_rejects_leaks():
    layers = [_random_attention(2, 2, 7, s, causal=True) for s in range(3)]
    roll = attention_rollout(layers, causal=True)
    assert float(torch.triu(roll, diagonal=1).abs().max()) < 1e-7
    with pytest.raises(DataError, match="lower-triangular"):
        attention_rollout([_random_attention(1, 1, 4, 0)], causal=True)


def test_token_relevance_pooling_and_entropy():
    roll = attention_rollout([_random_attention(2, 2, 4, 3)])
    torch.testing.assert_close(token_relevance(roll, "mean"), roll.mean(1))
    torch.testing.assert_close(token_relevance(roll, "cls"), roll[:, 0])
    torch.testing.assert_close(token_relevance(roll, "last"), roll[:, -1])
    uniform = torch.full((1, 2, 4, 4), 0.25)
    torch.testing.assert_close(attention_entropy(uniform), torch.full((1, 2), float(np.log(4))))
    with pytest.raises(ConfigError, match="pooling"):
        token_relevance(roll, "max")
    with pytest.raises(ConfigError, match="head_fusion"):
        attention_rollout([uniform], head_fusion="median")


def test_attention_maps_need_a_model_that_returns_them():
    assert not supports_attention(TinyMLP(3, 2))
    with pytest.raises(ModelError, match="return_attention"):
        attention_maps(TinyMLP(3, 2), torch.zeros(2, 3))
    fixed = FixedAttention([torch.eye(3)[None, None]])
    maps = attention_maps(fixed, torch.zeros(2, 3, dtype=torch.long))
    assert maps[0].shape == (2, 1, 3, 3)
