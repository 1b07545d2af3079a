"""Efficiency suite: parameter count and FLOPs of an MLP by hand, and the latency and
throughput figures recomputed from the timed calls the suite saved (numpy's median)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.reference.refkit import ctx, handle, headline
from workbench.data.base import Dataset, Split
from workbench.suites.efficiency.suite import EfficiencySuite


def test_parameters_flops_latency_and_throughput(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=g)
    split = Split(x, (x[:, 0] > 0).long())
    data = Dataset(name="b", modality="tabular", task="classification", train=split, val=split, test=split,
                   num_classes=2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 2)).eval()
    suite = EfficiencySuite.from_config({"batch_sizes": [1, 4], "repeats": 5, "blocks": 2, "warmup": 1,
                                         "compression": False, "memory": False, "energy": False,
                                         "eval_samples": 32, "n_boot": 100}, profile="quick")
    res = suite.run(handle(model), data, ctx(tmp_path, "efficiency"))
    assert res.status == "ok", res.reason
    shown = headline(res, EfficiencySuite)
    params = [m for m in shown if m.name == "parameters"]
    assert params and params[0].value == (6 * 12 + 12) + (12 * 2 + 2)
    assert res.metric("flops", **{"pass": "forward"}, batch_size=1, variant="base").value == 2 * (6 * 12 + 12 * 2)
    with np.load(tmp_path / res.artifacts["latency"]) as lat:
        samples, sizes = lat["samples_s"], lat["batch_sizes"].tolist()
        blocks = lat["block_samples_s"]
    for j, b in enumerate(sizes):
        p50 = [m for m in shown if m.name == "latency" and m.tags["batch_size"] == b]
        assert len(p50) == 1 and p50[0].value == pytest.approx(float(np.median(samples[j])))
        thr = [m for m in shown if m.name == "throughput" and m.tags["batch_size"] == b]
        assert thr[0].value == pytest.approx(b / float(np.median(samples[j])))
        run = res.metric("latency_between_blocks", batch_size=b, variant="base")
        assert run.value == pytest.approx(float(np.median(blocks[j], axis=1).mean()))
