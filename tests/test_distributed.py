"""DDP training and sharded evaluation (workbench.distributed).

In-process checks (a one-process gloo group) prove the DDP loop reproduces
`train_model` bit for bit. One torchrun launch (2 gloo processes on CPU) trains every
registered architecture with every registered recipe (timm style: a new architecture or
recipe is tested for free) and checks identical weights and buffers on both ranks, the
cached checkpoint, exact sharded counts and the runner's accuracy of the checkpoint; a
second launch fails on purpose and must print one error line and cache nothing.
"""

from __future__ import annotations

import copy
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


class _BatchNormMLP(nn.Module):
    """TinyMLP's shape with BatchNorm: running statistics that every training step updates."""

    output_kind = "logits"

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 4) -> (B, 3)
        return self.net(x)


@pytest.mark.parametrize("model", [TinyMLP, _BatchNormMLP])
@pytest.mark.parametrize("recipe,params", [("standard", {}), ("fgsm_rs", {"eps": 0.1, "val_samples": 32})])
def test_ddp_loop_with_one_process_is_bitwise_train_model(one_process_group, recipe, params, model):
    """With world size 1 the DDP loop (DDP-wrapped module, all-reduces, sharded
    validation, broadcast epoch_end, buffer broadcast) must reproduce train_model exactly:
    same weights and buffers, same history. The models have dropout, so RNG use must
    match too."""
    data = blobs(n=180, seed=1)
    cfg = TrainConfig(epochs=3, batch_size=16, lr=0.01, seed=5, recipe=recipe, recipe_params=params)
    seed_everything(cfg.seed)
    a = train_model(model(), data, cfg, device=CPU)
    seed_everything(cfg.seed)
    b = ddp_train_model(model(), data, cfg, device=CPU)
    assert isinstance(b.module, model)  # unwrapped
    assert state_digest(a.module) == state_digest(b.module)
    assert a.history == b.history and a.best_epoch == b.best_epoch
    assert not b.module.training
    if model is _BatchNormMLP:  # the buffers did move: the comparison covers them
        assert int(b.module.net[1].num_batches_tracked) > 0


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
    assert wrapped.emb is wrapped.inner.emb  # public attributes reach the model (noise recipes hook its embedding)
    with pytest.raises(AttributeError):
        wrapped.no_such_attribute


# ----------------------------------------------------------------- failure records and the cache


def test_first_failure_is_the_earliest_rank_record_and_one_line(tmp_path):
    from workbench.launch import failure_line, first_failure

    assert first_failure(tmp_path) is None
    late = {"rank": 0, "world_size": 2, "time": 20.0, "model": "m", "type": "RuntimeError",
            "message": "Connection closed by peer", "exit_code": 3}
    root = {"rank": 1, "world_size": 2, "time": 10.0, "model": "m", "type": "ModelError",
            "message": "rank 1's own\nmessage", "exit_code": 2}
    (tmp_path / "rank0.error.json").write_text(json.dumps(late))
    (tmp_path / "rank1.error.json").write_text(json.dumps(root))
    (tmp_path / "rank2.error.json").write_text("{truncated")  # unreadable: ignored
    assert first_failure(tmp_path) == root
    line = failure_line(root, tmp_path)
    assert "\n" not in line and line.startswith("rank 1 of 2 failed training 'm': ModelError: rank 1's own message")
    assert str(tmp_path) in line


def test_rank_differences_names_the_tensors_that_differ():
    from workbench.distributed import rank_differences, tensor_digests

    seed_everything(0)
    a = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    b = copy.deepcopy(a)
    assert rank_differences([tensor_digests(a), tensor_digests(b)]) == []
    b.train()(torch.randn(4, 2))  # what a rank's own shard does to BatchNorm's running statistics
    assert rank_differences([tensor_digests(a), tensor_digests(b)]) == [
        "1.num_batches_tracked", "1.running_mean", "1.running_var"]


def test_only_a_verified_cache_entry_loads(tmp_path):
    """What the failed run of issue 19 left behind (a checkpoint without the record of
    its checks) and an entry whose weights no longer match their digest are retrained."""
    from workbench.distributed import load_verified

    seed_everything(0)
    good = TinyMLP()
    path = tmp_path / "mlp-ddp2-x.pt"
    assert load_verified(path, TinyMLP()) == "no cache entry"
    torch.save({"state_dict": good.state_dict()}, path)
    assert "no record of passing its checks" in load_verified(path, TinyMLP())
    torch.save({"state_dict": good.state_dict(), "checks": {"passed": True, "digest": "0" * 64}}, path)
    assert "does not match its recorded digest" in load_verified(path, TinyMLP())
    torch.save({"state_dict": good.state_dict(), "checks": {"passed": True, "digest": state_digest(good)}}, path)
    fresh = TinyMLP()
    assert isinstance(load_verified(path, fresh), dict) and state_digest(fresh) == state_digest(good)
    path.write_bytes(b"not a checkpoint")
    assert "unreadable" in load_verified(path, TinyMLP())


# ----------------------------------------------------------------- torchrun: every architecture x recipe


def _write_plan(tmp_path: Path, models: list[dict], cache: Path, datasets: dict | None = None) -> Path:
    import tomli_w

    raw = {"run": {"name": "ddp", "seed": 0, "device": "cpu", "cache": str(cache), "progress": False},
           "models": models, "datasets": datasets or {}}
    path = tmp_path / "plan.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


# Small built-in data, first fit wins per architecture (a new architecture finds its own).
SMALL_DATA = {
    "digits": {"max_examples": 200},
    "synthetic_tokens": {"n_train": 96, "n_val": 32, "n_test": 40},
    "synthetic_markov_lm": {"n_docs": 8, "doc_length": 65, "block_size": 16},
    "synthetic_hetero_regression": {"n_train": 96, "n_val": 32, "n_test": 40},
    "synthetic_tabular": {"n_train": 96, "n_val": 32, "n_test": 40},
}
TRAIN = {"epochs": 2, "batch_size": 32}


def _fast_params(recipe: str) -> dict:
    """Cheap settings for the parameters a recipe has (adversarial: few validation rows
    and attack steps); any other recipe runs with its defaults."""
    import inspect

    from workbench.train import RECIPES

    accepted = inspect.signature(RECIPES.get(recipe)).parameters
    return {k: v for k, v in {"val_samples": 16, "steps": 2, "eps": 0.05}.items() if k in accepted}


def _dataset_for(arch: str):
    from workbench.registry import DATASETS, MODELS

    for name, options in SMALL_DATA.items():
        data = DATASETS.get(name)(**options)
        try:
            MODELS.get(arch)(data, size="tiny")
        except ConfigError:
            continue
        return name, data
    raise AssertionError(f"no small built-in dataset fits architecture {arch!r}; add one to SMALL_DATA")


def _is_reference(arch: str) -> bool:
    """A reference architecture: its module has tiny/base presets (workbench.models protocol)."""
    import sys

    from workbench.models import SIZES
    from workbench.registry import MODELS

    return set(getattr(sys.modules[MODELS.get(arch).__module__], "CONFIGS", {})) == set(SIZES)


def _cases() -> list[tuple[str, str, str]]:
    """(arch, size, recipe): every reference architecture x every recipe at the tiny size,
    and its base size with the standard recipe (what fits 2 shared CPU cores). Other
    registered architectures (built from a user's files, e.g. "hf") appear once, skipped."""
    from workbench.registry import MODELS
    from workbench.train import RECIPES

    archs = [a for a in MODELS.names() if _is_reference(a)]
    others = [(a, "-", "standard") for a in MODELS.names() if not _is_reference(a)]
    return [(a, "tiny", r) for a in archs for r in RECIPES.names()] + [(a, "base", "standard") for a in archs] + others


CASES = _cases()


@pytest.fixture(scope="module")
def ddp_grid(tmp_path_factory):
    """One 2-rank torchrun launch trains every case that trains in one process (checked
    here first, with the same data and config); the runner then evaluates every checkpoint."""
    from workbench.config import build_plan
    from workbench.runner import run_plan
    from workbench.store import Store
    from workbench.train import TrainConfig, make_recipe, train_model
    from workbench.registry import MODELS
    from workbench.errors import WorkbenchError

    tmp = tmp_path_factory.mktemp("ddp-grid")
    cache = tmp / "cache"
    models, unsupported, where = [], {}, {}
    for arch, size, recipe in CASES:
        name = f"{arch}_{size}_{recipe}"
        if not _is_reference(arch):
            unsupported[name] = "not a reference architecture (no tiny/base presets): it is built from a user's files"
            continue
        ds, data = _dataset_for(arch)
        train = {**TRAIN, "recipe": recipe, "recipe_params": _fast_params(recipe)}
        seed_everything(0)
        try:  # the same training in one process: a recipe that does not fit the task fails here too
            train_model(MODELS.get(arch)(data, size=size), data, TrainConfig(**train, seed=0), device=CPU,
                        recipe=make_recipe(recipe, train["recipe_params"]))
        except WorkbenchError as exc:
            unsupported[name] = f"{type(exc).__name__}: {exc}"
            continue
        models.append({"name": name, "arch": arch, "size": size, "dataset": ds, "train": train})
        where[name] = (arch, size, ds, data)
    plan = _write_plan(tmp, models, cache, {k: SMALL_DATA[k] for k in {m["dataset"] for m in models}})
    assert main(["train", str(plan), "--nproc", "2", "--device", "cpu"]) == 0
    summaries = {}
    for p in cache.glob("*-ddp2-*.json"):
        s = json.loads(p.read_text())
        summaries[s["model"]] = s
    evaluated = [{"name": m["name"], "arch": m["arch"], "size": m["size"], "dataset": m["dataset"],
                  "checkpoint": summaries[m["name"]]["checkpoint"]} for m in models if m["name"] in summaries]
    eval_plan = build_plan({"run": {"name": "ddp-eval", "seed": 0, "device": "cpu", "cache": str(cache),
                                    "progress": False},
                            "models": evaluated, "datasets": {k: SMALL_DATA[k] for k in {m["dataset"] for m in models}},
                            "suites": {"metrics": {"n_boot": 50, "n_prompts": 0}}})
    outcome = run_plan(eval_plan, suites=["metrics"], out=tmp / "runs", store=Store(tmp / "store.sqlite"),
                       log=lambda m: None)
    runner = {r.model: {m.name: m.value for m in r.metrics if not m.tags.get("class")} for r in outcome.run.results}
    return {"summaries": summaries, "runner": runner, "unsupported": unsupported, "where": where, "cache": cache}


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("arch,size,recipe", CASES, ids=[f"{a}-{s}-{r}" for a, s, r in CASES])
def test_two_gloo_ranks_end_identical_and_the_runner_scores_the_checkpoint(ddp_grid, arch, size, recipe):
    """Real torchrun, 2 gloo ranks: identical weights AND buffers on both ranks (BatchNorm
    included), the cached checkpoint is those weights, the sharded test counts equal a
    single-process pass over the checkpoint, and the runner's accuracy of the checkpoint
    equals the one rank 0 reported."""
    from workbench.registry import MODELS

    name = f"{arch}_{size}_{recipe}"
    if name in ddp_grid["unsupported"]:
        pytest.skip(f"not trained in one process either: {ddp_grid['unsupported'][name][:200]}")
    s = ddp_grid["summaries"][name]
    assert s["world_size"] == 2 and s["backend"] == "gloo" and s["recipe"] == recipe and not s["cached"]
    assert len(s["digests"]) == 2 and s["digests"][0] == s["digests"][1] and s["identical"]

    _, _, ds, data = ddp_grid["where"][name]
    module = MODELS.get(arch)(data, size=size)
    blob = torch.load(s["checkpoint"], map_location="cpu", weights_only=True)
    module.load_state_dict(blob["state_dict"])
    module.eval()
    assert state_digest(module) == s["digests"][0] == blob["checks"]["digest"] and blob["checks"]["passed"]
    assert ddp_checkpoint_path(ddp_grid["cache"], {"arch": arch, "size": size, "options": {}, "overrides": {}}, data,
                               _config(recipe), 2) == Path(s["checkpoint"])

    runner = ddp_grid["runner"][name]
    if data.task == "classification":
        with torch.no_grad():
            pred = module(data.test.x).argmax(1)
        expected = sk_confusion(data.test.y.numpy(), pred.numpy(), labels=list(range(data.num_classes)))
        assert np.array_equal(np.array(s["test"]["confusion"]), expected)  # every row once, no padding
        assert s["test"]["n"] == len(data.test) and s["test"]["correct"] == int(np.trace(expected))
        assert runner["accuracy"] == s["test"]["accuracy"]
    else:  # lm: the runner's nats/token vs rank 0's all-reduced mean loss (summation order differs)
        assert runner["nll"] == pytest.approx(s["test"]["loss"], rel=1e-5)


def _config(recipe: str) -> TrainConfig:
    return TrainConfig(**TRAIN, recipe=recipe, recipe_params=_fast_params(recipe), seed=0)


class _DivergingMLP(nn.Module):
    """A model that changes a parameter outside autograd from its rank's own batches (a
    hand-written running statistic): only the rank-equality check can catch it."""

    output_kind = "logits"

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(13, 3)
        self.seen = nn.Parameter(torch.zeros(1), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 13) -> (B, 3)
        if self.training:
            self.seen.data += x.shape[0] * (1 + int(os.environ.get("RANK", "0")))
        return self.net(x)


def diverging_mlp() -> nn.Module:
    return _DivergingMLP()


@pytest.mark.distributed
@pytest.mark.slow
def test_a_failed_ddp_run_is_one_error_line_and_leaves_nothing_loadable(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                      os.environ.get("PYTHONPATH", "")]))
    cache = tmp_path / "cache"
    plan = _write_plan(tmp_path, [{"name": "drifting", "factory": "tests.test_distributed:diverging_mlp",
                                   "dataset": "wine", "train": {"epochs": 1}}], cache)
    assert main(["train", str(plan), "--nproc", "2", "--device", "cpu"]) == 2
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("workbench: error: rank "), err
    assert "failed training 'drifting': ModelError: Ranks ended with different weights or buffers" in lines[0]
    assert "(seen)" in lines[0] and "Traceback" not in err
    logs = Path(lines[0].rsplit("rank tracebacks in ", 1)[1].rstrip(")"))
    assert logs.is_dir() and logs.parent == cache / "logs"
    assert "Traceback" in (logs / "rank0.log").read_text() and "Traceback" in (logs / "rank1.log").read_text()
    assert not list(cache.glob("*.pt")) and not list(cache.glob(".*.tmp")), list(cache.iterdir())


def test_train_command_one_process_fills_the_runner_cache(tmp_path):
    """--nproc 1 trains in-process into the cache entry `workbench run` reads."""
    from workbench.config import build_plan
    from workbench.registry import DATASETS
    from workbench.runner import Environment

    cache = tmp_path / "cache"
    model = {"name": "wine_mlp", "arch": "mlp", "dataset": "wine", "train": {"epochs": 2}}
    plan = _write_plan(tmp_path, [model], cache)
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
    plan = _write_plan(tmp_path, [{"name": "m", "arch": "mlp", "dataset": "wine"}], tmp_path / "c")
    assert main(["train", str(plan), "--nproc", "0"]) == 2
    assert "--nproc" in capsys.readouterr().err
    assert main(["train", str(plan), "--model", "mm"]) == 2
    assert "Did you mean 'm'" in capsys.readouterr().err
