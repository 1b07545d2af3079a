"""The in-memory dataset every suite receives.

All built-in datasets are small, so splits are plain tensors. Shapes by modality:
- image:   x (N, C, H, W) float in `bounds`, y (N,) long
- tabular: x (N, F) float (built-ins: standardised with train statistics; user data: as given
  unless the plan asks for `standardize`), y (N,) long or (N,) float
- tokens:  x (N, T) long token ids in [0, vocab_size), y (N,) long
- lm:      x (N, T) long, y (N, T) long = x shifted by one (next-token targets)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from workbench.errors import DataError

Modality = Literal["image", "tabular", "tokens", "lm"]
Task = Literal["classification", "regression", "lm"]
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """Inputs and targets of one split. `meta` holds per-example extras
    (e.g. `noise_std` (N,) for heteroscedastic regression, `ood_mask` (N,) bool)."""

    x: torch.Tensor
    y: torch.Tensor
    meta: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, index: torch.Tensor | slice) -> "Split":
        return Split(self.x[index], self.y[index], {k: v[index] for k, v in self.meta.items()})


@dataclass(frozen=True)
class Dataset:
    """A named dataset with train/val/test splits and what suites need to know about it.

    bounds: (low, high) valid input range for attacks/corruptions (None for token inputs).
    ground_truth: known facts of synthetic tasks, e.g. {"relevant_features": [0, 3]},
      {"relevant_positions": [2, 5]}, {"entropy_rate_nats": 1.23}, {"ood_region": [lo, hi]}.
    """

    name: str
    modality: Modality
    task: Task
    train: Split
    val: Split
    test: Split
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    vocab_size: int | None = None
    bounds: tuple[float, float] | None = None
    feature_names: tuple[str, ...] | None = None
    ground_truth: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    source: str = ""
    seed: int = 0
    vocab: tuple[str, ...] | None = None  # token id -> string, for text display
    # How the data was made, for results.json provenance: "split" (who made the split and
    # how), "transforms" (every change to the values, in order; empty = as given),
    # "label_mapping" ({label string: id}), "user_split" (bool).
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input example, e.g. (1, 8, 8) or (30,) or (T,)."""
        return tuple(self.train.x.shape[1:])

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise DataError(f"Expected split in {SPLITS}, got {name!r}.")
        return getattr(self, name)

    def fingerprint(self) -> str:
        """A stable hash of the data, for the training cache."""
        import hashlib

        h = hashlib.sha256(self.name.encode())
        for s in SPLITS:
            sp = self.split(s)
            for t in (sp.x, sp.y):
                h.update(str(tuple(t.shape)).encode())
                h.update(str(t.dtype).encode())
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "modality": self.modality,
            "task": self.task,
            "n_train": len(self.train),
            "n_val": len(self.val),
            "n_test": len(self.test),
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "vocab_size": self.vocab_size,
            "bounds": list(self.bounds) if self.bounds else None,
            "source": self.source,
            **({"provenance": self.provenance} if self.provenance else {}),
        }
