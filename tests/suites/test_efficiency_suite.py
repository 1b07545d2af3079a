"""The efficiency suite end to end on tiny hand-made models and data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from workbench.suites.efficiency.suite import EfficiencySuite
from workbench.data.base import Dataset, Split
from workbench.errors import ConfigError
from workbench.suite import ModelHandle, RunContext
from workbench.torch_utils import ModuleState

FAST = {"batch_sizes": [1, 4], "repeats": 5, "warmup": 1, "compression_repeats": 3, "n_boot": 100,
        "gen_tokens": 4, "gen_repeats": 2}


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _blobs(n: int = 60, features: int = 6, classes: int = 3) -> Dataset:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(classes, features, generator=g) * 4
    y = torch.arange(n) % classes
    x = centres[y] + torch.randn(n, features, generator=g)
    s = Split(x, y)
    return Dataset(name="blobs", modality="tabular", task="classification", train=s, val=s, test=s,
                   num_classes=classes)


class Net(nn.Module):
    output_kind = "logits"

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 8))
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(x)))


def _ctx(tmp: Path, name: str = "net") -> RunContext:
    return RunContext(run_id="t", run_dir=tmp, seed=7, device=torch.device("cpu"), suite="efficiency",
                      model_name=name, dataset_name="blobs", batch_size=64, log=lambda m: None)


def _run(module: nn.Module, data: Dataset, tmp: Path, arch: str = "user", output: str = "logits", **overrides):
    suite = EfficiencySuite.from_config({**FAST, **overrides}, profile="quick")
    handle = ModelHandle(name="net", module=module, arch=arch, task=data.task, output=output)
    assert suite.applicable(handle, data) is None
    return suite.run(handle, data, _ctx(tmp))


def test_suite_on_a_tiny_classifier(tmp_path: Path):
    data, model = _blobs(), Net()
    model.train()
    model.head.weight.grad = torch.ones_like(model.head.weight)  # must survive untouched
    before = ModuleState.capture(model)
    res = _run(model, data, tmp_path / "a")
    assert before.diff(model) == []
    assert res.status == "ok"

    # size and FLOPs against hand counts
    n_params = sum(p.numel() for p in model.parameters())
    assert res.metric("parameters", kind="total").value == n_params
    # + BatchNorm buffers: running mean and var (float32), num_batches_tracked (int64)
    assert res.metric("model_size", dtype="float32", variant="base").value == 4 * (n_params + 16 + 16)
    assert res.metric("model_size", dtype="int64", variant="base").value == 8
    assert res.metric("model_size", dtype="total", variant="base").value == 4 * (n_params + 32) + 8
    fwd = 2 * (6 * 16 + 16 * 8 + 8 * 3)
    f = res.metric("flops", **{"pass": "forward"}, batch_size=1, variant="base")
    assert f.value == fwd and f.tags["counted"] == "complete" and f.unit == "FLOPs (2*MAC)"
    assert {"torch", "threads", "attention_backend"} <= set(f.tags)
    assert res.metric("flops", **{"pass": "forward_backward"}, batch_size=1, variant="base").value == 3 * fwd - 2 * 6 * 16

    # latency sweep: three quantiles per batch size with CIs; throughput and achieved FLOP/s agree
    for b in (1, 4):
        p50 = res.metric("latency", batch_size=b, quantile="p50", variant="base")
        blocks = EfficiencySuite.from_config({**FAST}, profile="quick").params.blocks
        assert p50.n == 5 * blocks and p50.ci[0] <= p50.value <= p50.ci[1] and p50.unit == "s"
        assert p50.tags["spread"] == "per_call" and p50.tags["ci_method"] == "bootstrap_percentile"
        # run-to-run spread beside it: the mean of the block medians, a t-interval over blocks
        run = res.metric("latency_between_blocks", batch_size=b, variant="base")
        assert run.n == blocks and run.tags["ci_method"] == "student_t_over_blocks"
        assert run.ci[0] <= run.value <= run.ci[1]
        assert res.metric("latency", batch_size=b, quantile="p99", variant="base").value >= p50.value
        thr = res.metric("throughput", batch_size=b)
        assert thr.value == pytest.approx(b / p50.value)
        assert res.metric("achieved_flops", batch_size=b).value == pytest.approx(fwd * thr.value)
        frac = res.metric("achieved_flops_fraction", batch_size=b)
        assert frac.value is None and "cpu" in frac.reason

    # energy: null with the reason on this machine
    e = res.metric("energy_per_sample")
    if e.value is None:
        assert e.reason and e.tags["status"] == "unavailable"
        assert res.metric("metric_per_joule").reason == e.reason
    mem = res.metric("peak_memory", mode="inference")
    assert mem.value is not None and mem.value >= 0 and mem.unit == "bytes"
    assert res.metric("peak_memory", mode="training").value is not None

    # compression variants and the frontier
    variants = {(m.tags["variant"], m.tags.get("sparsity")) for m in res.metrics
                if m.name == "accuracy"}
    assert variants == {("base", None), ("int8_dynamic", None), ("prune_unstructured", 0.5),
                        ("prune_unstructured", 0.9), ("prune_structured", 0.5), ("prune_structured", 0.9)}
    base_acc = res.metric("accuracy", variant="base").value
    assert res.metric("accuracy_change", variant="int8_dynamic").value == pytest.approx(
        res.metric("accuracy", variant="int8_dynamic").value - base_acc)
    comp = json.loads((tmp_path / "a" / res.artifacts["compression"]).read_text())
    assert any(r["pareto"] for r in comp["rows"])
    u90 = next(r for r in comp["rows"] if r["variant"] == "prune_unstructured" and r["sparsity"] == 0.9)
    assert u90["weight_density"] == pytest.approx(0.1, abs=0.01)
    assert u90["nonzero_flops"] < u90["flops"] == fwd
    assert comp["rows"][0]["nonzero_flops"] == fwd  # the base is dense

    # artifacts the figures read, and the figures themselves
    lat = np.load(tmp_path / "a" / res.artifacts["latency"])
    blocks = EfficiencySuite.from_config({**FAST}, profile="quick").params.blocks
    assert lat["samples_s"].shape == (2, 5 * blocks) and lat["batch_sizes"].tolist() == [1, 4]
    assert lat["block_samples_s"].shape == (2, blocks, 5)
    np.testing.assert_array_equal(lat["block_samples_s"].reshape(2, -1), lat["samples_s"])
    figs = EfficiencySuite.figures(res.to_dict(), tmp_path / "a")
    assert [t for t, _ in figs][:3] == ["Compression variants", "Task metric vs cost (Pareto frontier filled)",
                                        "Latency vs batch size"]
    assert len(figs) == 4
    table, pareto, latency, per_module = (fig for _, fig in figs)
    assert len(table.data[0].cells.values[0]) == 6  # one row per variant
    front = [t for t in pareto.data if t.name == "Pareto-optimal"]
    assert sum(len(t.x) for t in front) == 3 * sum(r["pareto"] for r in comp["rows"])  # three cost panels
    assert list(latency.data[0].x) == [1, 4]
    assert list(latency.data[0].y) == pytest.approx(np.median(lat["samples_s"], axis=1).tolist())
    assert set(per_module.data[0].y) == {"body.0", "body.4", "head"}  # the leaf layers with FLOPs
    assert all(fig.to_json() for _, fig in figs)


def test_same_seed_same_numbers_except_timings(tmp_path: Path):
    data = _blobs()
    a = _run(Net().eval(), data, tmp_path / "a", compression=False)
    b = _run(Net().eval(), data, tmp_path / "b", compression=False)
    timing = {"latency", "latency_between_blocks", "throughput", "achieved_flops", "peak_memory"}
    da = [m.to_dict() for m in a.metrics if m.name not in timing]
    db = [m.to_dict() for m in b.metrics if m.name not in timing]
    assert da == db


def test_partially_counted_model_is_marked_not_silently_low(tmp_path: Path):
    class Spectral(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.fft.rfft(x, n=10).abs())  # (B, 6) -> rfft (B, 6) -> (B, 3)

    res = _run(Spectral(), _blobs(), tmp_path, compression=False)
    f = res.metric("flops", **{"pass": "forward"}, variant="base")
    assert f.tags["counted"] == "partial" and "aten._fft_r2c" in f.reason
    assert f.value == 2 * 6 * 3  # what was counted is still reported, as a lower bound
    assert res.metric("achieved_flops", batch_size=4).value is None


def test_language_model_generation_and_perplexity(tmp_path: Path):
    from workbench.registry import MODELS

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 30, (12, 10), generator=g)
    s = Split(x, torch.roll(x, -1, dims=1))
    data = Dataset(name="lm", modality="lm", task="lm", train=s, val=s, test=s, vocab_size=30)
    torch.manual_seed(0)
    model = MODELS.get("gpt")(data, size="tiny")
    before = ModuleState.capture(model)
    res = _run(model, data, tmp_path, arch="gpt", output="lm_logits", compression=False)
    assert before.diff(model) == []
    for flag in ("true", "false"):  # bool tags are stored as "true"/"false"
        m = res.metric("generation_throughput", kv_cache=flag)
        assert m.value > 0 and m.unit == "tokens/s" and m.tags["new_tokens"] == 4
    f = res.metric("flops", **{"pass": "forward"}, variant="base")
    assert f.tags["seq_len"] == 10 and f.tags["counted"] == "complete"


def test_distilled_variant_for_a_registered_architecture(tmp_path: Path):
    from workbench.registry import MODELS

    data = _blobs(90)
    torch.manual_seed(0)
    model = MODELS.get("mlp")(data, size="tiny")
    res = _run(model, data, tmp_path, arch="mlp", distill=True, kd_epochs=2, sparsities=[0.5], structured=False,
               quantize=False)
    comp = json.loads((tmp_path / res.artifacts["compression"]).read_text())
    assert [r["variant"] for r in comp["rows"]] == ["base", "prune_unstructured", "distilled"]
    student = comp["rows"][-1]
    assert student["size_bytes"] < comp["rows"][0]["size_bytes"]
    assert student["flops"] < comp["rows"][0]["flops"]


def test_parameters_are_validated():
    with pytest.raises(ConfigError, match="Did you mean 'batch_sizes'"):
        EfficiencySuite.from_config({"batch_size": [1]})
    with pytest.raises(ConfigError, match="sparsities"):
        EfficiencySuite.from_config({"sparsities": [0.5, 1.0]})
    with pytest.raises(ConfigError, match="batch_sizes"):
        EfficiencySuite.from_config({"batch_sizes": []})
    with pytest.raises(ConfigError):
        EfficiencySuite.from_config({"repeats": 0})
    with pytest.raises(TypeError):
        EfficiencySuite.from_config({"distill": "yes"})
    quick = EfficiencySuite.from_config({}, profile="quick").params
    full = EfficiencySuite.from_config({}, profile="full").params
    assert quick.batch_sizes == (1, 32) and not quick.distill
    assert full.distill and len(full.batch_sizes) > len(quick.batch_sizes)
    assert EfficiencySuite.from_config({"batch_sizes": [2, 8]}).params.batch_sizes == (2, 8)


def test_measured_energy_path_with_a_fake_rapl_tree(tmp_path: Path, monkeypatch):
    import workbench.suites.efficiency.energy as energy

    root = tmp_path / "powercap"
    zone = root / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "energy_uj").write_text("0\n")
    (zone / "max_energy_range_uj").write_text("1000000000\n")
    reads = iter([1_000_000, 1_600_000])  # start and end of the metered window: 0.6 J
    monkeypatch.setattr(energy, "POWERCAP", root)
    monkeypatch.setattr(energy.RaplMeter, "read", lambda self: {"intel-rapl:0": next(reads)})
    res = _run(Net().eval(), _blobs(), tmp_path / "run", compression=False)
    e = res.metric("energy_per_sample")
    assert e.tags["status"] == "measured" and e.tags["source"] == "rapl"
    assert e.value == pytest.approx(0.6 / (5 * 4))  # 5 timed calls of the largest batch (4)
    acc = res.metric("accuracy", variant="base").value
    assert res.metric("metric_per_joule").value == pytest.approx(acc / e.value)
