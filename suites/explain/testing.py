"""Tiny hand-built models and datasets for the explain tests and benchmark.

Each model follows the reference conventions (`output_kind`; token models expose
`embed` / `forward_from_embeddings` / `token_embedding`; attention models accept
`return_attention=True`). Everything is seeded and trains in about a second on a CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from workbench.data.base import Dataset, Split


def _split(x: torch.Tensor, y: torch.Tensor, n_train: int, n_val: int) -> tuple[Split, Split, Split]:
    a, b = n_train, n_train + n_val
    return Split(x[:a], y[:a]), Split(x[a:b], y[a:b]), Split(x[b:], y[b:])


def digits_dataset(seed: int = 0) -> Dataset:
    """sklearn's bundled 8x8 digits as (N, 1, 8, 8) floats in (0, 1), 10 classes."""
    from sklearn.datasets import load_digits

    d = load_digits()
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(d.target), generator=g)
    x = torch.tensor(d.images, dtype=torch.float32)[perm].unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)[perm]
    tr, va, te = _split(x, y, 1200, 200)
    return Dataset(name="digits", modality="image", task="classification", train=tr, val=va, test=te,
                   num_classes=10, bounds=(0.0, 1.0), seed=seed)


def tabular_dataset(n: int = 600, n_features: int = 8, relevant: tuple[int, ...] = (0, 3), seed: int = 0,
                    task: str = "classification") -> Dataset:
    """Standard normal features; the label depends only on `relevant` features
    (classification: sign of their weighted sum; regression: the weighted sum)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_features, generator=g)
    w = torch.tensor([1.5, -1.0, 2.0, 1.0][: len(relevant)] + [1.0] * max(0, len(relevant) - 4))
    s = x[:, list(relevant)] @ w
    y = (s > 0).long() if task == "classification" else s
    tr, va, te = _split(x, y, int(n * 0.6), int(n * 0.2))
    return Dataset(name="synthetic_tabular", modality="tabular", task=task, train=tr, val=va, test=te,
                   num_classes=2 if task == "classification" else None,
                   feature_names=tuple(f"f{i}" for i in range(n_features)),
                   ground_truth={"relevant_features": list(relevant)}, seed=seed)


def tokens_dataset(n: int = 600, length: int = 10, vocab: int = 12, relevant: tuple[int, int] = (2, 6),
                   seed: int = 0) -> Dataset:
    """Random token ids; the label is 1 when the tokens at the two `relevant` positions
    are both in the upper half of the vocabulary."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (n, length), generator=g)
    hi = x[:, list(relevant)] >= vocab // 2
    y = (hi[:, 0] & hi[:, 1]).long()
    tr, va, te = _split(x, y, int(n * 0.6), int(n * 0.2))
    return Dataset(name="synthetic_tokens", modality="tokens", task="classification", train=tr, val=va, test=te,
                   num_classes=2, vocab_size=vocab, ground_truth={"relevant_positions": list(relevant)},
                   vocab=tuple(f"t{i}" for i in range(vocab)), seed=seed)


class LinearModel(nn.Module):
    """y = x W^T + b over flattened inputs; `output_kind` "logits" (K > 1) or "mean"."""

    def __init__(self, n_in: int, n_out: int = 1) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.output_kind = "logits" if n_out > 1 else "mean"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x.reshape(x.shape[0], -1))
        return out if self.output_kind == "logits" else out[:, 0]


class TinyMLP(nn.Module):
    output_kind = "logits"

    def __init__(self, n_in: int, n_out: int, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TinyCNN(nn.Module):
    """conv(8) - BN - ReLU - pool - linear over 1x8x8 images; pool "max" or "avg"."""

    output_kind = "logits"

    def __init__(self, n_classes: int = 10, pool: str = "max") -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class TinyLSTM(nn.Module):
    """Token classifier: embedding -> LSTM -> last hidden state -> linear."""

    output_kind = "logits"

    def __init__(self, vocab: int, n_classes: int = 2, d: int = 16) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, d)
        self.lstm = nn.LSTM(d, d, batch_first=True)
        self.head = nn.Linear(d, n_classes)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(idx)

    def forward_from_embeddings(self, e: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(e)  # (B, T, d)
        return self.head(h[:, -1])

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.forward_from_embeddings(self.embed(idx))


class FixedAttention(nn.Module):
    """A 'model' whose attention maps are given: forward(x, return_attention=True) returns
    (zeros (B, 2), [maps[l] expanded to (B, H, T, T)]). For rollout tests."""

    output_kind = "logits"

    def __init__(self, maps: list[torch.Tensor]) -> None:
        super().__init__()
        self.maps = maps
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, return_attention: bool = False):  # noqa: ANN201
        out = torch.zeros(x.shape[0], 2) + self.dummy
        if not return_attention:
            return out
        return out, [m.expand(x.shape[0], *m.shape[-3:]) for m in self.maps]


def quick_train(module: nn.Module, data: Dataset, *, epochs: int = 20, lr: float = 1e-2, seed: int = 0,
                batch_size: int = 64) -> nn.Module:
    """A few epochs of Adam on the train split (cross-entropy or MSE); returns the module in eval mode."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    x, y = data.train.x, data.train.y
    g = torch.Generator().manual_seed(seed)
    module.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            out = module(x[idx])
            loss = F.cross_entropy(out, y[idx]) if data.task == "classification" else F.mse_loss(out, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    module.zero_grad(set_to_none=True)
    return module.eval()
