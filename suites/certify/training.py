"""Gaussian noise augmentation (Cohen, Rosenfeld & Kolter 2019, Section 4): train the base
classifier on x + N(0, σ² I) so that the smoothed classifier at the same σ is accurate and
its top class wins the noise by a wide margin (large p_A, large certified radius). A model
trained without noise is usually wrong on most noisy copies of its inputs, so smoothing
it certifies little.

Registered in `workbench.train.RECIPES` as "gaussian_noise"; the certify suite trains one
sibling per σ through the model's trainer (and the training cache):
`trainer(recipe="gaussian_noise", recipe_params={"sigma": σ})`.

Noise goes where the certify suite puts it (`functional.NoiseSpace`): on float inputs
directly, and for token ids on the output of the token-embedding layer (a forward hook),
with σ relative to the root-mean-square coordinate of the batch's clean embeddings (as the
suite's relative σ). The epoch is selected on validation accuracy under the same noise
("selection_score": fraction of `val_copies` noisy copies of `val_samples` validation
points classified correctly, with the same fixed noise every epoch so epochs compare fairly).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from workbench.errors import check_positive_int
from workbench.suites.certify import functional as C


class GaussianNoiseTraining:
    """Train on x + σ·N(0, I) (inputs) or e + σ·rms(e)·N(0, I) (token embeddings e)."""

    name = "gaussian_noise"

    def __init__(self, *, sigma: float = 0.25, embedding: str | None = None, val_samples: int = 512,
                 val_copies: int = 4, seed: int = 0) -> None:
        self.sigma = C._check_sigma(sigma)
        self.embedding = embedding  # token models: the layer path named in the plan, else found
        self._layers: dict[int, nn.Module] = {}
        self.val_samples = check_positive_int("val_samples", val_samples)
        self.val_copies = check_positive_int("val_copies", val_copies)
        self.seed = int(seed)
        self._gen = torch.Generator().manual_seed(self.seed)
        self.history: list[dict[str, float]] = []

    def describe(self) -> str:
        return f"gaussian_noise(sigma={self.sigma:g})"

    def _noisy_logits(self, module: nn.Module, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if torch.is_floating_point(x):
            noise = torch.randn(tuple(x.shape), generator=gen).to(x) * self.sigma
            return C.logits_of(module, x + noise)
        from workbench import embedding as E

        layer = self._layers.get(id(module))
        if layer is None:
            layer = self._layers[id(module)] = E.find_embedding_layer(module, x, path=self.embedding)[1]
        e0 = E.embeddings(module, layer, x)  # (B, T, C), detached: only the noise's size
        scale = E.embedding_eps_scale(e0, "linf")  # RMS coordinate of this batch
        noise = torch.randn(tuple(e0.shape), generator=gen).to(e0) * (self.sigma * scale)
        out = E.forward_with_offset(module, layer, noise, x)
        return out[0] if isinstance(out, tuple) else out

    def batch_loss(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable) -> torch.Tensor:
        return loss_fn(self._noisy_logits(module, x, self._gen), y)

    @torch.no_grad()
    def epoch_end(self, module: nn.Module, data: Any, epoch: int, device: torch.device) -> dict[str, float]:
        n = min(self.val_samples, len(data.val))
        xv, yv = data.val.x[:n].to(device), data.val.y[:n].to(device)
        gen = torch.Generator().manual_seed(self.seed + 1)  # the same noise every epoch
        was = module.training
        module.eval()
        try:
            hits = sum(int((self._noisy_logits(module, xv, gen).argmax(1) == yv).sum()) for _ in range(self.val_copies))
        finally:
            module.train(was)
        row = {"val_noisy_accuracy": hits / (n * self.val_copies)}
        row["selection_score"] = row["val_noisy_accuracy"]
        self.history.append({"epoch": float(epoch), **row})
        return row
