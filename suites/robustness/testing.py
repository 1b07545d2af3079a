"""Tiny hand-made models and data for the robustness tests, benchmark and README figures
(in the spirit of captum's `testing/helpers/basic_models.py`): independent of the
reference models so the attacks are checked against code written here, not against
themselves.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from workbench.data.base import Dataset, Split


def digits_dataset(seed: int = 0) -> Dataset:
    """sklearn's 8x8 digits scaled to [0, 1] as a workbench Dataset (60/20/20 split by a
    seeded permutation), x (N, 1, 8, 8) float32, bounds (0, 1)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n = len(y)
    parts = [perm[: n * 6 // 10], perm[n * 6 // 10 : n * 8 // 10], perm[n * 8 // 10 :]]
    tr, va, te = (Split(x[p], y[p]) for p in parts)
    return Dataset(name="digits_test", modality="image", task="classification", train=tr, val=va, test=te,
                   num_classes=10, class_names=tuple(str(i) for i in range(10)), bounds=(0.0, 1.0), seed=seed)


class SmallCNN(nn.Module):
    """conv(16)-BN-ReLU-pool, conv(32)-ReLU-pool, dropout, linear: (B, 1, 8, 8) -> (B, 10)."""

    output_kind = "logits"

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(32 * 2 * 2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.bn(self.conv1(x))), 2)  # (B, 16, 4, 4)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)  # (B, 32, 2, 2)
        return self.fc(self.drop(h.flatten(1)))  # (B, 10)


def train_plain(module: nn.Module, data: Dataset, *, epochs: int = 8, lr: float = 3e-3, batch_size: int = 64,
                seed: int = 0) -> nn.Module:
    """A plain Adam loop with the cross-entropy loss; returns the module in eval mode."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    x, y = data.train.x, data.train.y
    for _ in range(epochs):
        module.train()
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), batch_size):
            b = perm[i : i + batch_size]
            loss = F.cross_entropy(module(x[b]), y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return module.eval()


def trained_digits_cnn(cache_dir: Path | None = None, *, epochs: int = 8, seed: int = 0) -> nn.Module:
    """A SmallCNN trained on `digits_dataset()` (~97-99% test accuracy), cached on disk."""
    path = None if cache_dir is None else Path(cache_dir) / f"robustness-small-cnn-{epochs}-{seed}.pt"
    torch.manual_seed(seed)
    module = SmallCNN()
    if path is not None and path.exists():
        module.load_state_dict(torch.load(path, weights_only=True))
        return module.eval()
    train_plain(module, digits_dataset(), epochs=epochs, seed=seed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(module.state_dict(), path)
    return module


class ScaledLogits(nn.Module):
    """Gradient masking by saturation: logits multiplied by `scale` (1e4). Same predictions,
    but the softmax cross-entropy gradient underflows to exactly zero."""

    output_kind = "logits"

    def __init__(self, module: nn.Module, scale: float = 1e4) -> None:
        super().__init__()
        self.module = copy.deepcopy(module)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x) * self.scale


class QuantizedInput(nn.Module):
    """Gradient masking by a non-differentiable input layer: pixels rounded to `levels`
    values in [0, 1] (zero gradient almost everywhere)."""

    output_kind = "logits"

    def __init__(self, module: nn.Module, levels: int = 4) -> None:
        super().__init__()
        self.module = copy.deepcopy(module)
        self.levels = levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.levels - 1
        return self.module(torch.round(x * q) / q)


class TinyTokenClassifier(nn.Module):
    """Embedding -> positions -> mean-pool -> MLP, with the token-model interface
    (`embed`, `forward_from_embeddings`). (B, T) long -> (B, K)."""

    output_kind = "logits"

    def __init__(self, vocab: int = 12, length: int = 8, dim: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(length, dim) * 0.1)
        self.head = nn.Sequential(nn.Linear(dim, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, classes))

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(idx)  # (B, T, C)

    def forward_from_embeddings(self, e: torch.Tensor) -> torch.Tensor:
        h = e + self.pos[None, : e.shape[1]]  # (B, T, C)
        return self.head(h.mean(dim=1))  # (B, K)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.forward_from_embeddings(self.embed(idx))


class GRUTokenClassifier(nn.Module):
    """A user-style token model with no special methods: nn.Embedding -> Conv1d -> GRU ->
    linear on the last hidden state. (B, T) long -> (B, K). Its only embedding layer is
    found by `workbench.embedding.find_embedding_layer`."""

    output_kind = "logits"

    def __init__(self, vocab: int = 12, dim: int = 16, hidden: int = 24, classes: int = 3) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.conv = nn.Conv1d(dim, dim, 3, padding=1)
        self.gru = nn.GRU(dim, hidden, batch_first=True)
        self.out = nn.Linear(hidden, classes)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv(self.emb(idx).transpose(1, 2))).transpose(1, 2)  # (B, T, C)
        _, last = self.gru(h)  # (1, B, H)
        return self.out(last[0])  # (B, K)


class TwoEmbeddingClassifier(nn.Module):
    """Two embedding tables both fed the token ids, concatenated (as word + feature tables
    often are), and a position table: which table to attack is ambiguous, so the plan must
    name it."""

    output_kind = "logits"

    def __init__(self, vocab: int = 12, dim: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.words = nn.Embedding(vocab, dim)
        self.features = nn.Embedding(vocab, 4)
        self.pos = nn.Embedding(64, dim + 4)  # fed positions, not ids
        self.head = nn.Linear(dim + 4, classes)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        h = torch.cat([self.words(idx), self.features(idx)], dim=-1) + self.pos(pos)[None]  # (B, T, C + 4)
        return self.head(h.mean(1))


def token_dataset(n: int = 300, length: int = 8, vocab: int = 12, classes: int = 3, seed: int = 0) -> Dataset:
    """Label = (token at position 1) mod `classes`; tokens uniform."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (n, length), generator=g)
    y = x[:, 1] % classes
    a, b = n * 6 // 10, n * 8 // 10
    return Dataset(name="tokens_test", modality="tokens", task="classification", train=Split(x[:a], y[:a]),
                   val=Split(x[a:b], y[a:b]), test=Split(x[b:], y[b:]), num_classes=classes,
                   class_names=tuple(f"c{i}" for i in range(classes)), vocab_size=vocab, seed=seed)


def tabular_dataset(n: int = 400, features: int = 5, classes: int = 3, seed: int = 0) -> Dataset:
    """Gaussian blobs, standardised with train statistics; bounds None."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, features, generator=g) * 1.5
    y = torch.arange(n) % classes
    x = centres[y] + torch.randn(n, features, generator=g)
    a, b = n * 6 // 10, n * 8 // 10
    mu, sd = x[:a].mean(0), x[:a].std(0)
    x = (x - mu) / sd
    return Dataset(name="blobs_test", modality="tabular", task="classification", train=Split(x[:a], y[:a]),
                   val=Split(x[a:b], y[a:b]), test=Split(x[b:], y[b:]), num_classes=classes,
                   class_names=tuple(f"c{i}" for i in range(classes)), seed=seed)
