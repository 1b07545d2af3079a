"""DDP training and sharded evaluation (workbench.distributed).

In-process checks (a one-process gloo group) prove the DDP loop reproduces
`train_model` bit for bit; one torchrun test (2 gloo processes on CPU) trains with an
adversarial recipe and checks identical weights on both ranks, accuracy, and that the
all-reduced sharded evaluation equals the single-process counts exactly.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion
from torch import nn

from tests.helpers import TinyMLP, blobs
from workbench.cli import main
from workbench.distributed import (ddp_checkpoint_path, ddp_train_model, shard_rows, sharded_confusion,
                                   state_digest, wrap_ddp)
from workbench.errors import ConfigError
from workbench.torch_utils import ModuleState, seed_everything
from workbench.train import TrainConfig, cache_key, train_model

CPU = torch.device("cpu")


@pytest.fixture
def one_process_group():
    """A real gloo process group of world size 1 in this process."""
    import torch.distributed as dist

    fd, path = tempfile.mkstemp(prefix="wb-pg-")
    os.close(fd)
    os.remove(path)
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()
        if os.path.exists(path):
            os.remove(path)


# ----------------------------------------------------------------- sharding


@pytest.mark.parametrize("n,world", [(1797, 2), (10, 3), (7, 7), (2, 5), (0, 2), (1, 1)])
def test_shard_rows_partition_without_padding(n, world):
    shards = [shard_rows(n, r, world) for r in range(world)]
    joined = torch.cat(shards).sort().values
    assert torch.equal(joined, torch.arange(n))  # every row once: no padding, no repeat
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= (1 if n else 0)


def test_distributed_sampler_pads_where_shard_rows_does_not():
    """The reason for shard_rows: DistributedSampler repeats rows (1797 -> 1798)."""
    from torch.utils.data.distributed import DistributedSampler

    data = list(range(1797))
    sampled = [i for r in range(2) for i in DistributedSampler(data, num_replicas=2, rank=r, shuffle=False)]
    ours = torch.cat([shard_rows(1797, r, 2) for r in range(2)]).tolist()
    assert len(sampled) == 1798 and len(set(sampled)) == 1797  # one row counted twice
    assert len(ours) == 1797 and len(set(ours)) == 1797


def test_shard_rows_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="rank"):
        shard_rows(10, 2, 2)
    with pytest.raises(ConfigError, match="world"):
        shard_rows(10, 0, 0)


def test_sharded_confusion_matches_sklearn_without_and_with_a_group(one_process_group):
    data = blobs(n=150, seed=3)
    seed_everything(0)
    model = TinyMLP()
    model.train()  # the evaluation must not leave it changed
    before = ModuleState.capture(model)
    cm = sharded_confusion(model, data.test.x, data.test.y, 3, batch_size=7)
    with torch.no_grad():
        model.eval()
        pred = model(data.test.x).argmax(1)
        model.train()
    expected = sk_confusion(data.test.y.numpy(), pred.numpy(), labels=[0, 1, 2])
    assert cm.dtype == torch.int64 and np.array_equal(cm.numpy(), expected)
    assert before.diff(model) == []


# ----------------------------------------------------------------- the DDP loop


@pytest.mark.parametrize("recipe,params", [("standard", {}), ("fgsm_rs", {"eps": 0.1, "val_samples": 32})])
def test_ddp_loop_with_one_process_is_bitwise_train_model(one_process_group, recipe, params):
    """With world size 1 the DDP loop (DDP-wrapped module, all-reduces, sharded
    validation, broadcast epoch_end) must reproduce train_model exactly: same weights,
    same history. The model has dropout, so RNG use must match too."""
    data = blobs(n=180, seed=1)
    cfg = TrainConfig(epochs=3, batch_size=16, lr=0.01, seed=5, recipe=recipe, recipe_params=params)
    seed_everything(cfg.seed)
    a = train_model(TinyMLP(), data, cfg, device=CPU)
    seed_everything(cfg.seed)
    b = ddp_train_model(TinyMLP(), data, cfg, device=CPU)
    assert isinstance(b.module, TinyMLP)  # unwrapped
    assert state_digest(a.module) == state_digest(b.module)
    assert a.history == b.history and a.best_epoch == b.best_epoch
    assert not b.module.training


class _TokenModel(nn.Module):
    """Tiny token classifier with the reference token-model interface."""

    output_kind = "logits"

    def __init__(self, vocab: int = 6, dim: int = 4, classes: int = 2) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, classes)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, C)
        return self.emb(idx)

    def forward_from_embeddings(self, e: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, K)
        return self.head(torch.tanh(e).mean(dim=1))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.forward_from_embeddings(self.embed(idx))


def _token_data():
    from workbench.data.base import Dataset, Split

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 6, (120, 5), generator=g)
    y = (x == 3).any(dim=1).long()
    parts = [slice(0, 80), slice(80, 100), slice(100, 120)]
    sp = [Split(x[p], y[p]) for p in parts]
    return Dataset(name="tok", modality="tokens", task="classification", train=sp[0], val=sp[1], test=sp[2],
                   num_classes=2, vocab_size=6)


def test_token_model_adversarial_recipe_through_ddp_wrapper(one_process_group):
    """Embedding-space adversarial training calls .embed / .forward_from_embeddings on the
    DDP-wrapped module; the wrapper must forward both and match train_model exactly."""
    data = _token_data()
    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.02, seed=2, recipe="fgsm_rs",
                      recipe_params={"eps": 0.2, "val_samples": 16})
    seed_everything(cfg.seed)
    a = train_model(_TokenModel(), data, cfg, device=CPU)
    seed_everything(cfg.seed)
    b = ddp_train_model(_TokenModel(), data, cfg, device=CPU)
    assert state_digest(a.module) == state_digest(b.module) and a.history == b.history
    wrapped = wrap_ddp(_TokenModel(), CPU)
    x = data.test.x[:4]
    assert torch.equal(wrapped.forward_from_embeddings(wrapped.embed(x)), wrapped.inner(x))


# ----------------------------------------------------------------- torchrun


def _write_plan(tmp_path: Path, model: dict, cache: Path) -> Path:
    import tomli_w

    raw = {"run": {"name": "ddp", "seed": 0, "device": "cpu", "cache": str(cache), "progress": False},
           "models": [model]}
    path = tmp_path / "plan.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


@pytest.mark.distributed
@pytest.mark.slow
def test_torchrun_two_gloo_ranks_adversarial_training(tmp_path, capfd):
    from workbench.registry import DATASETS, MODELS

    cache = tmp_path / "cache"
    model = {"name": "digits_at", "arch": "mlp", "dataset": "digits",
             "train": {"epochs": 3, "recipe": "fgsm_rs", "recipe_params": {"eps": 0.05, "val_samples": 128}}}
    plan = _write_plan(tmp_path, model, cache)
    assert main(["train", str(plan), "--nproc", "2", "--device", "cpu"]) == 0
    out = capfd.readouterr().out  # printed by rank 0 of the torchrun subprocess
    assert "ranks identical: True" in out

    summaries = sorted(cache.glob("mlp-ddp2-*.json"))
    assert len(summaries) == 1, list(cache.iterdir())
    s = json.loads(summaries[0].read_text())
    assert s["world_size"] == 2 and s["backend"] == "gloo" and s["recipe"] == "fgsm_rs" and not s["cached"]
    assert len(s["digests"]) == 2 and s["digests"][0] == s["digests"][1]

    # the checkpoint is the weights both ranks ended with
    data = DATASETS.get("digits")()
    module = MODELS.get("mlp")(data, size="tiny")
    blob = torch.load(s["checkpoint"], map_location="cpu", weights_only=True)
    module.load_state_dict(blob["state_dict"])
    module.eval()
    assert state_digest(module) == s["digests"][0]

    # sharded, all-reduced test counts == single-process counts, all 359 rows once
    with torch.no_grad():
        pred = module(data.test.x).argmax(1)
    expected = sk_confusion(data.test.y.numpy(), pred.numpy(), labels=list(range(10)))
    assert np.array_equal(np.array(s["test"]["confusion"]), expected)
    assert s["test"]["n"] == len(data.test) == int(expected.sum())
    assert s["test"]["correct"] == int(np.trace(expected))
    assert s["test"]["accuracy"] > 0.7, s["test"]

    # its own cache entry, never the single-process one
    from workbench.config import load_plan
    from workbench.distributed import _train_config

    spec = load_plan(plan).models[0]
    cfg = _train_config(spec, 0)
    cache_spec = {"arch": "mlp", "size": "tiny", "options": {}, "overrides": {}}
    assert Path(s["checkpoint"]) == ddp_checkpoint_path(cache, cache_spec, data, cfg, 2)
    assert cache_key(cache_spec, data, cfg) not in s["checkpoint"]


def test_train_command_one_process_fills_the_runner_cache(tmp_path):
    """--nproc 1 trains in-process into the cache entry `workbench run` reads."""
    from workbench.config import build_plan
    from workbench.registry import DATASETS
    from workbench.runner import Environment

    cache = tmp_path / "cache"
    model = {"name": "wine_mlp", "arch": "mlp", "dataset": "wine", "train": {"epochs": 2}}
    plan = _write_plan(tmp_path, model, cache)
    assert main(["train", str(plan), "--device", "cpu"]) == 0
    data = DATASETS.get("wine")()
    cfg = TrainConfig(epochs=2, seed=0)
    key = cache_key({"arch": "mlp", "size": "tiny", "options": {}, "overrides": {}}, data, cfg)
    assert (cache / f"mlp-{key}.pt").exists()
    logs: list[str] = []
    env = Environment(plan=build_plan({"run": {"cache": str(cache)}, "models": [model]}), device=CPU,
                      cache_dir=cache, log=logs.append)
    env.model("wine_mlp")
    assert any("loaded from cache" in line for line in logs), logs


def test_train_command_rejects_bad_nproc_and_models(tmp_path, capsys):
    plan = _write_plan(tmp_path, {"name": "m", "arch": "mlp", "dataset": "wine"}, tmp_path / "c")
    assert main(["train", str(plan), "--nproc", "0"]) == 2
    assert "--nproc" in capsys.readouterr().err
    assert main(["train", str(plan), "--model", "mm"]) == 2
    assert "Did you mean 'm'" in capsys.readouterr().err
