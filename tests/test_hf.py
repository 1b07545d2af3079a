"""Hugging Face directories (workbench/hf): tiny models written by the tests, offline.

References: transformers' own forward with attention_mask = (ids != pad) for outputs and
attention; the tokenizer called directly for the data; a closed form for BERT's FLOPs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")  # installed by the dev extra; the HF tests run by default

from hf_tiny import write_bert, write_gpt2  # noqa: E402

from workbench.errors import ConfigError, DataError, ModelError  # noqa: E402
from workbench.hf.data import load_hf_text, stdlib_docstrings  # noqa: E402
from workbench.hf.model import HFTokenModel, build, prepare_pretrained  # noqa: E402


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {"encoder": write_bert(root / "enc"), "classifier": write_bert(root / "cls", kind="classifier"),
            "gpt2": write_gpt2(root / "gpt2")}


@pytest.fixture(scope="module")
def docs(dirs: dict[str, Path]):  # noqa: ANN201
    return load_hf_text(tokenizer=str(dirs["encoder"]), corpus="stdlib_docstrings", max_length=24)


def test_tokenisation_matches_the_tokenizer_called_directly(dirs: dict[str, Path], docs) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(dirs["encoder"]), local_files_only=True)
    texts, labels, names = stdlib_docstrings()
    assert len(texts) == len(docs.train) + len(docs.val) + len(docs.test)
    assert docs.num_classes == len(names) == 5 and docs.class_names == names
    enc = tok(texts, truncation=True, max_length=24, padding="max_length")["input_ids"]
    rows = {tuple(r) for r in enc}
    assert all(tuple(r.tolist()) in rows for r in docs.test.x)
    assert docs.ground_truth["pad_id"] == tok.pad_token_id == 0
    full = tok(texts)["input_ids"]
    assert docs.ground_truth["n_truncated"] == sum(len(r) > 24 for r in full)
    x = docs.train.x
    first_pad = (x == 0).int().argmax(1)
    has_pad = (x == 0).any(1)
    # right padding: after the first pad, only pads
    for row, k, h in zip(x, first_pad, has_pad):
        if h:
            assert (row[k:] == 0).all() and row[k - 1] == tok.sep_token_id


def test_csv_text_column_and_errors(tmp_path: Path, dirs: dict[str, Path]) -> None:
    csv = tmp_path / "reviews.csv"
    rows = ["text,label"] + [f'"the file {i} was removed",files' for i in range(10)] + \
        [f'"return the sine of {i}",math' for i in range(10)]
    csv.write_text("\n".join(rows) + "\n")
    d = load_hf_text(tokenizer=str(dirs["encoder"]), path=str(csv), max_length=12)
    assert d.class_names == ("files", "math") and d.task == "classification"
    assert len(d.train) + len(d.val) + len(d.test) == 20
    with pytest.raises(ConfigError, match="Did you mean 'text'"):
        load_hf_text(tokenizer=str(dirs["encoder"]), path=str(csv), text_column="txt")
    with pytest.raises(ConfigError, match="exactly one of `corpus`"):
        load_hf_text(tokenizer=str(dirs["encoder"]))
    with pytest.raises(ConfigError, match="Unknown option 'max_len'"):
        load_hf_text(tokenizer=str(dirs["encoder"]), corpus="stdlib_docstrings", max_len=3)
    with pytest.raises(ConfigError, match="not a directory"):
        load_hf_text(tokenizer=str(tmp_path / "nowhere"), corpus="stdlib_docstrings")


def test_lm_windows_are_shifted_and_bytes_per_token(dirs: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    d = load_hf_text(tokenizer=str(dirs["gpt2"]), corpus="pydoc_topics", block_size=32, max_examples=200)
    assert d.task == "lm" and d.input_shape == (32,)
    assert torch.equal(d.train.x[:, 1:], d.train.y[:, :-1])
    tok = AutoTokenizer.from_pretrained(str(dirs["gpt2"]), local_files_only=True)
    y = d.test.y
    nbytes = sum(len(tok.decode(r.tolist()).encode("utf-8")) for r in y)
    assert d.ground_truth["bytes_per_token"] == pytest.approx(nbytes / y.numel())


@pytest.mark.parametrize("kind", ["encoder", "classifier"])
def test_adapter_equals_transformers_forward_with_mask(dirs: dict[str, Path], docs, kind: str) -> None:
    m = build(docs, path=str(dirs[kind]))
    assert isinstance(m, HFTokenModel) and m.output_kind == "logits"
    x = docs.test.x[:8]
    mask = (x != 0).long()
    with torch.no_grad():
        out = m(x)
        assert torch.equal(out, m.forward_from_embeddings(m.embed(x)))
        if kind == "classifier":
            ref = m.hf(input_ids=x, attention_mask=mask).logits
        else:
            h = m.hf(input_ids=x, attention_mask=mask).last_hidden_state
            w = mask.unsqueeze(-1).float()
            ref = m.head((h * w).sum(1) / w.sum(1))
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        logits, att = m(x, return_attention=True)
        ref_att = m.hf(input_ids=x, attention_mask=mask, output_attentions=True, return_dict=True)
    assert m.hf.config._attn_implementation == "sdpa"  # eager for that call only
    assert len(att) == 2 and att[0].shape == (8, 4, 24, 24)
    for a in att:
        torch.testing.assert_close(a.sum(-1), torch.ones(8, 4, 24))
        assert (a * (1 - mask)[:, None, None, :]).abs().max() == 0  # padded keys get no weight
    if ref_att.attentions is not None:
        for a, r in zip(att, ref_att.attentions):
            torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits, out, rtol=1e-5, atol=1e-5)


def test_causal_lm_equals_transformers(dirs: dict[str, Path]) -> None:
    d = load_hf_text(tokenizer=str(dirs["gpt2"]), corpus="pydoc_topics", block_size=32, max_examples=100)
    m = build(d, path=str(dirs["gpt2"]))
    assert m.config.kind == "causal_lm" and m.output_kind == "lm_logits"
    x = d.test.x[:3]
    with torch.no_grad():
        out, att = m(x, return_attention=True)
        torch.testing.assert_close(out, m.hf(input_ids=x).logits)
    assert out.shape == (3, 32, m.config.vocab_size)
    assert torch.triu(att[0], diagonal=1).abs().max() == 0  # causal


def test_bert_flops_equal_the_closed_form(dirs: dict[str, Path], docs) -> None:
    """Forward FLOPs (2 x MAC of matmuls) of BertForSequenceClassification, B x T tokens:
    per layer 4 projections 2 T d^2, scores and A V 2 x 2 T^2 d (full score matrix), FFN
    2 x 2 T d d_ff; then the pooler 2 d^2 and the classifier 2 d K on the [CLS] vector."""
    from workbench.suites.efficiency.flops import forward_flops

    m = build(docs, path=str(dirs["classifier"]))
    B, T = 4, 24
    d, L, dff, K = m.config.d_model, m.config.n_layer, m.config.d_ff, m.config.num_classes
    per_layer = 4 * 2 * T * d * d + 2 * 2 * T * T * d + 2 * 2 * T * d * dff
    expected = B * (L * per_layer + 2 * d * d + 2 * d * K)
    count = forward_flops(m, docs.test.x[:B])
    assert int(count.total) == expected


def test_errors_name_the_problem(tmp_path: Path, dirs: dict[str, Path], docs) -> None:
    with pytest.raises(ConfigError, match="needs options.path"):
        build(docs)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="lacks config.json"):
        build(docs, path=str(empty))
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(ConfigError, match="safetensors only"):
        build(docs, path=str(pickled))
    with pytest.raises(ConfigError, match="differs from the one in the model directory"):
        build(docs, path=str(dirs["gpt2"]))
    with pytest.raises(ConfigError, match="Did you mean 'pooling'"):
        build(docs, path=str(dirs["encoder"]), poling="cls")
    with pytest.raises(ConfigError, match="not installed"):
        build(docs, path="pkg:no_such_package_here/model")
    with pytest.raises(DataError, match="torch.long"):
        build(docs, path=str(dirs["encoder"]))(docs.test.x[:2].float())
    with pytest.raises(ModelError, match="labels"):
        build(docs, path=str(write_bert(tmp_path / "three", kind="classifier", num_labels=3)))


def test_linear_probe_trains_through_the_cache(tmp_path: Path, dirs: dict[str, Path], docs) -> None:
    from types import SimpleNamespace

    from workbench.train import TrainConfig, evaluate_loss

    cfg = TrainConfig(epochs=30, lr=1e-2, patience=10, seed=0)
    logs: list[str] = []
    make = lambda: build(docs, path=str(dirs["encoder"]))  # noqa: E731
    spec = SimpleNamespace(name="probe")
    m1, secs, trainer = prepare_pretrained(make, spec, docs, cfg, device=torch.device("cpu"),
                                           cache_dir=tmp_path, log=logs.append)
    assert secs is not None and trainer is not None
    assert sum(p.numel() for p in m1.parameters() if p.requires_grad) == 32 * 5 + 5  # the head only
    loss, acc = evaluate_loss(m1, docs.test.x, docs.test.y, "logits")
    untrained_loss, _ = evaluate_loss(make(), docs.test.x, docs.test.y, "logits")
    majority = max(docs.ground_truth["class_counts"].values()) / sum(docs.ground_truth["class_counts"].values())
    assert acc > majority and loss < untrained_loss - 0.05  # learnable even through a random tiny encoder
    m2, _, _ = prepare_pretrained(make, spec, docs, cfg, device=torch.device("cpu"), cache_dir=tmp_path,
                                  log=logs.append)
    assert any("loaded from cache" in line for line in logs)
    assert torch.equal(m1.head.weight, m2.head.weight)
    sibling = trainer(seed=1)
    assert sibling.hf is m1.hf and not torch.equal(sibling.head.weight, m1.head.weight)
    with pytest.raises(ModelError, match="not available for a linear probe"):
        trainer(recipe="pgd_at")


def _plan(tmp: Path, dirs: dict[str, Path]) -> Path:
    plan = f"""
[run]
name = "hf-tiny"
seed = 0
device = "cpu"
profile = "quick"
max_samples = 32
batch_size = 64
out = "{tmp / 'reports'}"
store = "{tmp / 'runs.sqlite'}"
cache = "{tmp / 'cache'}"
progress = false

[datasets.docs]
source = "hf_text"
tokenizer = "{dirs['encoder']}"
corpus = "stdlib_docstrings"
max_length = 16

[datasets.docs_cls]
source = "hf_text"
tokenizer = "{dirs['classifier']}"
corpus = "stdlib_docstrings"
max_length = 16

[datasets.pydoc]
source = "hf_text"
tokenizer = "{dirs['gpt2']}"
corpus = "pydoc_topics"
block_size = 16
max_examples = 200

[suites.explain]
n_examples = 4
methods = ["saliency", "integrated_gradients", "lime", "shapley", "attention", "rollout"]
lime_samples = 100
shap_budget = 256
rollout_pooling = "cls"

[suites.efficiency]
compression = false
repeats = 3

[[models]]
name = "probe"
arch = "hf"
dataset = "docs"
options = {{ path = "{dirs['encoder']}", kind = "linear_probe" }}
train = {{ epochs = 20, lr = 0.01 }}

[[models]]
name = "bertcls"
arch = "hf"
dataset = "docs_cls"
options = {{ path = "{dirs['classifier']}" }}

[[models]]
name = "gpt2"
arch = "hf"
dataset = "pydoc"
options = {{ path = "{dirs['gpt2']}" }}
"""
    p = tmp / "plan.toml"
    p.write_text(plan)
    return p


@pytest.mark.slow
def test_every_applicable_suite_runs_through_the_cli(tmp_path: Path, dirs: dict[str, Path]) -> None:
    from workbench.cli import main
    from workbench.registry import SUITES

    plan = _plan(tmp_path, dirs)
    assert main(["run", str(plan)]) in (0, 1)  # 1: a gate failed (none here) or a suite errored (checked below)
    (run_dir,) = list((tmp_path / "reports").iterdir())
    results = json.loads((run_dir / "results.json").read_text())["results"]
    by = {(r["model"], r["suite"]): r for r in results}
    for model in ("probe", "bertcls", "gpt2"):
        for suite in SUITES.names():
            r = by[(model, suite)]
            assert r["status"] != "error", (model, suite, r.get("reason"))
    for model in ("probe", "bertcls"):
        for suite in ("metrics", "uncertainty", "efficiency", "explain"):
            assert by[(model, suite)]["status"] == "ok", (model, suite, by[(model, suite)].get("reason"))
    for suite in ("metrics", "efficiency", "explain"):
        assert by[("gpt2", suite)]["status"] == "ok"
    names = {m["name"] for m in by[("gpt2", "metrics")]["metrics"] if m["value"] is not None}
    assert {"perplexity", "bits_per_byte", "bleu"} <= names  # bleu: continuations from the adapter's generate()
    gen = [m for m in by[("gpt2", "efficiency")]["metrics"] if m["name"] == "generation_throughput"]
    assert {str(m["tags"]["kv_cache"]).lower() for m in gen if m["value"] is not None} == {"true", "false"}
    metrics = by[("probe", "explain")]["metrics"]
    covered = {m["tags"]["method"] for m in metrics if m["name"] == "method_coverage" and m["value"] == 1.0}
    assert {"saliency", "integrated_gradients", "lime", "shapley", "attention", "rollout"} <= covered
    shap_gap = [m["value"] for m in metrics if m["name"] == "completeness_gap" and m["tags"]["method"] == "shapley"]
    assert shap_gap and shap_gap[0] < 1e-5  # exact enumeration: efficiency holds
    eff = {m["name"]: m for m in by[("bertcls", "efficiency")]["metrics"] if m["tags"].get("variant") == "base"}
    assert eff["parameters"]["value"] == sum(
        p.numel() for p in build(_docs_cls(dirs), path=str(dirs["classifier"])).parameters())
    assert math.isfinite(eff["latency"]["value"])


def _docs_cls(dirs: dict[str, Path]):  # noqa: ANN202
    return load_hf_text(tokenizer=str(dirs["classifier"]), corpus="stdlib_docstrings", max_length=16)


def test_pkg_directory_is_found_without_importing_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.hf import resolve_dir

    pkg = tmp_path / "wb_fake_weights_pkg"
    (pkg / "model").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('imported')\n")  # importing it would fail
    monkeypatch.syspath_prepend(str(tmp_path))
    assert resolve_dir("pkg:wb_fake_weights_pkg/model", "model directory") == pkg / "model"
    with pytest.raises(ConfigError, match="not a directory"):
        resolve_dir("pkg:wb_fake_weights_pkg/nothing", "model directory")


def test_generate_greedy_matches_transformers_with_and_without_cache(dirs: dict[str, Path]) -> None:
    d = load_hf_text(tokenizer=str(dirs["gpt2"]), corpus="pydoc_topics", block_size=32, max_examples=100)
    m = build(d, path=str(dirs["gpt2"]))
    prompt = d.test.x[:2, :8]
    lengths: list[int] = []
    handle = m.hf.register_forward_pre_hook(lambda _m, _a, kw: lengths.append(kw["input_ids"].shape[1]),
                                            with_kwargs=True)
    try:
        cached = m.generate(prompt, 12, use_cache=True)
    finally:
        handle.remove()
    assert lengths == [8] + [1] * 11  # the KV cache is used: one new position per step
    assert torch.equal(cached, m.generate(prompt, 12, use_cache=False))
    eos = m.hf.config.eos_token_id
    ref = m.hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False,
                        pad_token_id=eos, eos_token_id=None)
    assert torch.equal(cached, ref)
    # past the 64 positions the window slides: still identical with and without the cache
    long = d.test.x[:1, :60]
    assert torch.equal(m.generate(long, 8, use_cache=True), m.generate(long, 8, use_cache=False))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(m.generate(prompt, 5, temperature=1.0, top_k=5, generator=g1),
                       m.generate(prompt, 5, temperature=1.0, top_k=5, generator=g2))
    with pytest.raises(ModelError, match="causal_lm"):
        build(load_hf_text(tokenizer=str(dirs["encoder"]), corpus="stdlib_docstrings", max_length=8),
              path=str(dirs["encoder"])).generate(prompt, 2)


def test_cls_pooling_reads_the_first_position(dirs: dict[str, Path], docs) -> None:
    m = build(docs, path=str(dirs["encoder"]), pooling="cls")
    x = docs.test.x[:4]
    with torch.no_grad():
        h = m.hf(input_ids=x, attention_mask=(x != 0).long()).last_hidden_state
        torch.testing.assert_close(m(x), m.head(h[:, 0]), rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="pooling"):
        build(docs, path=str(dirs["encoder"]), pooling="max")
