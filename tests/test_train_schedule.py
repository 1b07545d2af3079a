"""The one training loop serves the robustness helper too: `train_with_recipe` is
`train_model` with a constant learning rate, and gives the very weights of a plain Adam
loop written out here (the reference); `lr_schedule` is checked and keeps old cache keys."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import TinyMLP, blobs
from workbench.errors import ConfigError
from workbench.suites.robustness.training import train_with_recipe
from workbench.train import TrainConfig, cache_key


class _ValAccuracy:
    """Plain cross-entropy; selects on validation accuracy."""

    def batch_loss(self, model, x, y, loss_fn):
        return loss_fn(model(x), y)

    def epoch_end(self, module, data, epoch, device):
        with torch.no_grad():
            acc = float((module(data.val.x).argmax(1) == data.val.y).float().mean())
        return {"selection_score": acc - 1e-3 * epoch}  # ties: the earlier epoch


def _plain_adam_loop(module, recipe, data, *, epochs, lr, batch_size, seed):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    xtr, ytr = data.train.x, data.train.y
    best, best_state, best_epoch = float("-inf"), None, 0
    for epoch in range(epochs):
        module.train()
        perm = torch.randperm(len(ytr), generator=gen)
        for i in range(0, len(ytr), batch_size):
            b = perm[i : i + batch_size]
            loss = recipe.batch_loss(module, xtr[b], ytr[b], lambda out, yy: F.cross_entropy(out.float(), yy))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        module.eval()
        score = recipe.epoch_end(module, data, epoch, None)["selection_score"]
        if score > best:
            best, best_epoch, best_state = score, epoch, copy.deepcopy(module.state_dict())
    module.load_state_dict(best_state)
    return module.eval(), best_epoch


def test_train_with_recipe_gives_the_weights_of_a_plain_adam_loop():
    data = blobs()
    torch.manual_seed(1)
    ref, ref_best = _plain_adam_loop(TinyMLP(), _ValAccuracy(), data, epochs=4, lr=3e-2, batch_size=32, seed=3)
    torch.manual_seed(1)
    got, history, best = train_with_recipe(TinyMLP(), _ValAccuracy(), data, epochs=4, lr=3e-2, batch_size=32, seed=3)
    assert best == ref_best and len(history) == 4
    for k, v in ref.state_dict().items():
        assert torch.equal(got.state_dict()[k], v), k
    assert not got.training


def test_lr_schedule_is_checked_and_default_cache_keys_do_not_move():
    with pytest.raises(ConfigError, match="Did you mean 'constant'"):
        TrainConfig(lr_schedule="constnat")
    data, spec = blobs(), {"arch": "mlp"}
    cfg = TrainConfig(epochs=2)
    # the key as it was computed before `lr_schedule` existed
    old = dataclasses.asdict(cfg)
    del old["lr_schedule"]
    payload = json.dumps({"spec": spec, "data": data.fingerprint(), "train": old, "torch": torch.__version__},
                         sort_keys=True, default=str)
    assert cache_key(spec, data, cfg) == hashlib.sha256(payload.encode()).hexdigest()[:20]
    assert cache_key(spec, data, dataclasses.replace(cfg, lr_schedule="constant")) != cache_key(spec, data, cfg)
