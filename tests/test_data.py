"""Tests of workbench.data: built-in datasets, synthetic tasks (checked against their ground
truth by independent means) and user-data loaders (on files made in tmp_path)."""

from __future__ import annotations

import dataclasses
import functools
import math
import textwrap

import numpy as np
import pytest
import torch

from workbench.data import builtin, synthetic
from workbench.data.base import SPLITS, Dataset, Split
from workbench.data.loaders import (
    load_callable,
    load_csv,
    load_dataset,
    load_tensor_file,
    load_text,
    split_indices,
    validate_dataset,
)
from workbench.errors import ConfigError, DataError, ParameterTypeError, UnknownNameError
from workbench.registry import DATASETS

BUILTIN_NAMES = [
    "digits", "breast_cancer", "wine", "diabetes", "pydoc_text",
    "synthetic_hetero_regression", "synthetic_tabular", "synthetic_tokens", "synthetic_markov_lm",
]


@functools.lru_cache(maxsize=None)
def load(name: str, seed: int = 0) -> Dataset:
    return DATASETS.get(name)(seed=seed)


def row_keys(t: torch.Tensor) -> set[bytes]:
    a = t.reshape(t.shape[0], -1).contiguous().numpy()
    return {r.tobytes() for r in a}


# --------------------------------------------------------------------------------------
# Every registered dataset
# --------------------------------------------------------------------------------------


def test_registry_lists_the_builtin_names():
    assert set(BUILTIN_NAMES) <= set(DATASETS.names())


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_dataset_contract(name):
    ds = load(name)
    assert validate_dataset(ds) is ds
    assert ds.name == name and ds.seed == 0 and ds.source and ds.description
    for s in SPLITS:
        sp = ds.split(s)
        assert len(sp) > 0 and sp.y.shape[0] == len(sp)
        if ds.modality == "image":
            assert sp.x.dim() == 4 and sp.x.dtype == torch.float32
            lo, hi = ds.bounds
            assert float(sp.x.min()) >= lo and float(sp.x.max()) <= hi
        elif ds.modality == "tabular":
            assert sp.x.dim() == 2 and sp.x.dtype == torch.float32 and ds.bounds is None
            assert torch.isfinite(sp.x).all()
        else:
            assert sp.x.dim() == 2 and sp.x.dtype == torch.long
            assert 0 <= int(sp.x.min()) and int(sp.x.max()) < ds.vocab_size
            assert ds.vocab is not None and len(ds.vocab) == ds.vocab_size
        if ds.task == "classification":
            assert sp.y.dtype == torch.long and sp.y.dim() == 1
            assert 0 <= int(sp.y.min()) and int(sp.y.max()) < ds.num_classes
            assert len(ds.class_names) == ds.num_classes
        elif ds.task == "regression":
            assert sp.y.dtype == torch.float32 and sp.y.dim() == 1
            assert "target_std" in ds.ground_truth and "target_mean" in ds.ground_truth
        else:
            assert sp.y.shape == sp.x.shape and sp.y.dtype == torch.long
            # y is x shifted by one inside each window
            assert torch.equal(sp.y[:, :-1], sp.x[:, 1:])
            assert sp.meta["doc_id"].shape == (len(sp),) and sp.meta["doc_id"].dtype == torch.long


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_splits_disjoint_and_deterministic(name):
    ds = load(name)
    if ds.modality == "lm":
        docs = [set(ds.split(s).meta["doc_id"].tolist()) for s in SPLITS]
        assert not (docs[0] & docs[1]) and not (docs[0] & docs[2]) and not (docs[1] & docs[2])
    else:  # none of these sources has duplicate rows, so equal rows would mean a leak
        keys = [row_keys(ds.split(s).x) for s in SPLITS]
        assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    again = DATASETS.get(name)(seed=0)
    assert again.fingerprint() == ds.fingerprint()
    assert load(name, 1).fingerprint() != ds.fingerprint()


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_unknown_option_did_you_mean(name):
    fn = DATASETS.get(name)
    with pytest.raises(ConfigError, match="Did you mean 'val_fraction'|Did you mean 'n_train'") as e:
        fn(seed=0, val_fractoin=0.2) if "val_fraction" in fn.__code__.co_varnames else fn(seed=0, n_trian=5)
    assert "Valid options" in str(e.value)


def test_bad_option_values():
    with pytest.raises(ParameterTypeError, match="seed"):
        builtin.load_wine(seed="0")
    with pytest.raises(ConfigError, match="val_fraction.*test_fraction.*< 1"):
        builtin.load_wine(val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ConfigError, match="n_train"):
        synthetic.tabular_relevant(n_train=0)
    with pytest.raises(ConfigError, match="relevant"):
        synthetic.tabular_relevant(relevant=[0, 12])
    with pytest.raises(ConfigError, match="concentration.*finite"):
        synthetic.markov_lm(concentration=float("inf"))
    with pytest.raises(ConfigError, match="concentration"):
        synthetic.markov_lm(concentration=0)
    with pytest.raises(ConfigError, match="vocab_size \\*\\* order"):
        synthetic.markov_lm(vocab_size=16, order=3)


# --------------------------------------------------------------------------------------
# Built-in data
# --------------------------------------------------------------------------------------


def test_digits_values_and_stratification():
    from sklearn.datasets import load_digits

    raw = load_digits()
    ds = load("digits")
    assert ds.input_shape == (1, 8, 8) and ds.class_names == tuple("0123456789")
    assert sum(len(ds.split(s)) for s in SPLITS) == len(raw.target)
    # every image is the sklearn image / 16 with its label
    lookup = {(r / 16.0).astype(np.float32).tobytes(): t for r, t in zip(raw.images, raw.target)}
    for s in SPLITS:
        sp = ds.split(s)
        for xi, yi in zip(sp.x[:, 0].numpy(), sp.y.tolist()):
            assert lookup[xi.tobytes()] == yi
    # stratified 60/20/20: each class within two examples of its share in each split
    for c in range(10):
        n_c = int((raw.target == c).sum())
        for s, f in zip(SPLITS, (0.6, 0.2, 0.2)):
            assert abs(int((ds.split(s).y == c).sum()) - f * n_c) < 2


@pytest.mark.parametrize("name,loader", [("breast_cancer", "load_breast_cancer"), ("wine", "load_wine"),
                                         ("diabetes", "load_diabetes")])
def test_tabular_standardised_with_train_stats_only(name, loader):
    import sklearn.datasets as skd

    raw = getattr(skd, loader)(**({"scaled": False} if name == "diabetes" else {}))
    ds = load(name)
    assert ds.feature_names == tuple(raw.feature_names)
    tr = ds.train.x.double()
    assert tr.mean(0).abs().max() < 1e-5 and (tr.std(0, unbiased=False) - 1).abs().max() < 1e-4
    mean = np.array(ds.ground_truth["standardization"]["mean"])
    std = np.array(ds.ground_truth["standardization"]["std"])
    # undoing the transform gives back exact sklearn rows, and the stats are theirs alone
    back = ds.train.x.double().numpy() * std + mean
    scale = np.abs(raw.data).max(0) + 1e-12
    err = np.abs(back[:, None, :] - raw.data[None, :, :]) / scale  # (n_train, N, F)
    nearest = err.max(axis=2).min(axis=1)
    assert nearest.max() < 1e-5
    np.testing.assert_allclose(mean, back.mean(0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(mean, raw.data.mean(0))  # not the all-data mean
    assert ds.val.x.double().mean(0).abs().max() > 1e-3
    if name == "diabetes":
        y_back = ds.train.y.double().numpy() * ds.ground_truth["target_std"] + ds.ground_truth["target_mean"]
        assert abs(float(ds.train.y.double().mean())) < 1e-5
        assert set(np.round(y_back).astype(int)) <= set(raw.target.astype(int))
        raw_ds = builtin.load_diabetes(standardize_target=False)
        assert raw_ds.ground_truth["target_std"] == 1.0
        assert set(raw_ds.train.y.numpy().astype(int)) <= set(raw.target.astype(int))


def test_max_examples_subsample_is_stratified():
    ds = builtin.load_digits(max_examples=200)
    assert sum(len(ds.split(s)) for s in SPLITS) == 200
    counts = np.bincount(torch.cat([ds.split(s).y for s in SPLITS]).numpy(), minlength=10)
    assert counts.min() >= 18 and counts.max() <= 22


def test_pydoc_text_windows_decode_to_the_topics():
    from pydoc_data.topics import topics

    ds = load("pydoc_text")
    gt = ds.ground_truth
    assert ds.vocab[0] == "<unk>" and gt["unk_id"] == 0
    assert len(ds.train) + len(ds.val) + len(ds.test) <= 4000
    assert gt["n_documents"]["test"] >= 5  # enough documents to bootstrap over
    itos = ds.vocab
    total_bytes = total_chars = 0
    for s in SPLITS:
        sp = ds.split(s)
        for row in range(0, len(sp), 37):
            name = gt["documents"][int(sp.meta["doc_id"][row])]
            off = int(sp.meta["offset"][row])
            text = topics[name][off : off + ds.input_shape[0] + 1]
            decoded = "".join(itos[i] for i in sp.x[row].tolist())
            assert decoded == "".join(c if c in itos else "<unk>" for c in text[:-1])
    for d, o in zip(ds.test.meta["doc_id"].tolist(), ds.test.meta["offset"].tolist()):
        t = topics[gt["documents"][d]][o + 1 : o + 1 + ds.input_shape[0]]
        total_bytes += len(t.encode("utf-8"))
        total_chars += len(t)
    assert gt["bytes_per_token"] == pytest.approx(total_bytes / total_chars, rel=1e-12)
    assert gt["bytes_per_token"] >= 1.0


def test_pydoc_text_options():
    ds = builtin.load_pydoc_text(block_size=16, max_windows=300)
    assert ds.input_shape == (16,)
    assert [len(ds.split(s)) for s in SPLITS] == [180, 60, 60]
    assert builtin.load_pydoc_text(min_char_count=1).vocab_size >= load("pydoc_text").vocab_size


# --------------------------------------------------------------------------------------
# Synthetic tasks against their ground truth
# --------------------------------------------------------------------------------------


def test_markov_entropy_rate_closed_forms():
    v = 7
    assert synthetic.markov_entropy_rate(np.full((v, v), 1 / v)) == pytest.approx(math.log(v), abs=1e-12)
    assert synthetic.markov_entropy_rate(np.full((v * v, v), 1 / v)) == pytest.approx(math.log(v), abs=1e-12)
    # two-state chain: pi = (b, a) / (a + b), H = pi0 h(a) + pi1 h(b)
    a, b = 0.2, 0.7
    h = lambda p: -(p * math.log(p) + (1 - p) * math.log(1 - p))  # noqa: E731
    P = np.array([[1 - a, a], [b, 1 - b]])
    np.testing.assert_allclose(synthetic.stationary_distribution(P), [b / (a + b), a / (a + b)], atol=1e-12)
    assert synthetic.markov_entropy_rate(P) == pytest.approx((b * h(a) + a * h(b)) / (a + b), abs=1e-12)
    # a deterministic cycle has entropy rate 0
    assert synthetic.markov_entropy_rate(np.roll(np.eye(4), 1, axis=1)) == pytest.approx(0.0, abs=1e-12)


def test_markov_entropy_matches_monte_carlo():
    ds = load("synthetic_markov_lm")
    P = np.array(ds.ground_truth["transition_matrix"])
    H = ds.ground_truth["entropy_rate_nats"]
    assert ds.ground_truth["perplexity_floor"] == pytest.approx(math.exp(H))
    assert 0 < H < math.log(ds.vocab_size)
    # independent plain-loop sampler: one long chain, average surprisal of the true P
    rng = np.random.default_rng(123)
    cum = np.cumsum(P, axis=1)
    n = 60_000
    u = rng.random(n)
    s = 0
    logp = np.empty(n)
    for t in range(n):
        j = min(int(np.searchsorted(cum[s], u[t], side="right")), P.shape[1] - 1)
        logp[t] = math.log(P[s, j])
        s = j
    burn = logp[1000:]
    se = burn.std() / math.sqrt(len(burn))
    assert abs(-burn.mean() - H) < 5 * se + 1e-3, (-burn.mean(), H, se)
    # the dataset's own windows: surprisal of every target under the true P, and token frequencies
    x, y = ds.train.x.numpy(), ds.train.y.numpy()
    lp = -np.log(P[x, y])
    assert abs(lp.mean() - H) < 5 * lp.std() / math.sqrt(lp.size) * 3  # windows are correlated: x3
    freq = np.bincount(x.ravel(), minlength=ds.vocab_size) / x.size
    np.testing.assert_allclose(freq, ds.ground_truth["stationary_distribution"], atol=0.02)


def test_markov_order2_and_seeds():
    ds = synthetic.markov_lm(vocab_size=5, order=2, n_docs=60, doc_length=2001, block_size=50)
    P = np.array(ds.ground_truth["transition_matrix"])
    x, y = ds.train.x.numpy(), ds.train.y.numpy()
    ctx = x[:, :-1] * 5 + x[:, 1:]  # (oldest, newest) -> row of P
    lp = -np.log(P[ctx, y[:, 1:]])
    H = ds.ground_truth["entropy_rate_nats"]
    assert abs(lp.mean() - H) < 0.02, (lp.mean(), H)
    # the source is fixed by source_seed, sampling by seed
    other = synthetic.markov_lm(seed=3, vocab_size=5, order=2, n_docs=60, doc_length=2001, block_size=50)
    assert other.ground_truth["entropy_rate_nats"] == H
    assert not torch.equal(other.train.x, ds.train.x)
    assert synthetic.markov_lm(source_seed=1).ground_truth["entropy_rate_nats"] != load("synthetic_markov_lm").ground_truth["entropy_rate_nats"]


def test_hetero_regression_gap_and_noise():
    ds = synthetic.hetero_regression(n_train=20_000, n_val=500, n_test=2000)
    lo, hi = ds.ground_truth["gap"]
    for s in ("train", "val"):
        x0 = ds.split(s).x[:, 0]
        assert not ((x0 > lo) & (x0 < hi)).any()
        assert not ds.split(s).meta["in_gap"].any()
    t = ds.test
    assert torch.equal(t.meta["in_gap"], (t.x[:, 0] > lo) & (t.x[:, 0] < hi))
    assert 0.1 < float(t.meta["in_gap"].float().mean()) < 0.25  # about 1/6 of [-3, 3]
    # independent formulas: f(x) = sin 2x + 0.3x, sigma(x) = 0.1 + 0.2|x|
    x = ds.train.x[:, 0].double().numpy()
    resid = ds.train.y.double().numpy() - (np.sin(2 * x) + 0.3 * x)
    sigma = 0.1 + 0.2 * np.abs(x)
    np.testing.assert_allclose(ds.train.meta["noise_std"].double().numpy(), sigma, rtol=1e-6)
    edges = np.array([-3, -2, -1, 0, 1, 2, 3])
    checked = 0
    for a, b in zip(edges[:-1], edges[1:]):
        m = (x >= a) & (x < b)
        if m.sum() < 500:
            continue  # the gap bin
        assert resid[m].std() == pytest.approx(math.sqrt((sigma[m] ** 2).mean()), rel=0.06)
        assert abs(resid[m].mean()) < 4 * resid[m].std() / math.sqrt(m.sum())
        checked += 1
    assert checked == 5
    assert ds.ground_truth["bayes_mse_test"] == pytest.approx(float((t.meta["noise_std"].double() ** 2).mean()))


def test_hetero_regression_without_gap():
    ds = synthetic.hetero_regression(gap=None, n_train=3000)
    x0 = ds.train.x[:, 0]
    assert ((x0 > 1) & (x0 < 2)).float().mean() > 0.1
    assert ds.ground_truth["gap"] is None
    edge = synthetic.hetero_regression(gap=[-3.0, -1.0], n_train=500)
    assert float(edge.train.x[:, 0].min()) >= -1.0 and float(edge.test.x[:, 0].min()) < -2.5
    for bad in ([5.0, 6.0], [-3.0, 3.0], [2.0, 1.0]):
        with pytest.raises(ConfigError, match="gap"):
            synthetic.hetero_regression(gap=bad)


def _logreg_accuracy(xtr, ytr, xte, yte) -> float:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=2000, C=10.0).fit(xtr, ytr)
    return float((clf.predict(xte) == yte).mean())


def test_tabular_relevant_features_determine_the_label():
    ds = synthetic.tabular_relevant(n_train=2000, n_test=1000)
    rel = ds.ground_truth["relevant_features"]
    irr = ds.ground_truth["irrelevant_features"]
    assert rel == [0, 3, 7] and sorted(rel + irr) == list(range(10))
    xtr, ytr, xte, yte = ds.train.x.numpy(), ds.train.y.numpy(), ds.test.x.numpy(), ds.test.y.numpy()
    assert _logreg_accuracy(xtr[:, rel], ytr, xte[:, rel], yte) > 0.95
    assert _logreg_accuracy(xtr[:, irr], ytr, xte[:, irr], yte) < 0.6
    assert 0.4 < ytr.mean() < 0.6


def _one_hot(x: np.ndarray, v: int) -> np.ndarray:
    return np.eye(v)[x].reshape(len(x), -1)


def test_tokens_relevant_positions_determine_the_label():
    ds = synthetic.tokens_relevant(n_test=1000)
    rel = ds.ground_truth["relevant_positions"]
    irr = ds.ground_truth["irrelevant_positions"]
    assert rel == [2, 9] and len(irr) == 14
    v = ds.vocab_size
    xtr, ytr, xte, yte = ds.train.x.numpy(), ds.train.y.numpy(), ds.test.x.numpy(), ds.test.y.numpy()
    assert np.array_equal(ytr, (xtr[:, 2] > xtr[:, 9]).astype(int))
    assert _logreg_accuracy(_one_hot(xtr[:, rel], v), ytr, _one_hot(xte[:, rel], v), yte) > 0.97
    assert _logreg_accuracy(_one_hot(xtr[:, irr], v), ytr, _one_hot(xte[:, irr], v), yte) < 0.6


# --------------------------------------------------------------------------------------
# User-data loaders
# --------------------------------------------------------------------------------------


def _write_csv(path, rows, header="a,b,c,label"):
    path.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return path


@pytest.fixture
def csv_rows():
    rng = np.random.default_rng(0)
    return [[round(rng.normal(), 4), round(rng.normal() * 10 + 5, 4), i, "dog" if i % 3 else "cat"] for i in range(40)]


def test_load_csv_classification(tmp_path, csv_rows):
    p = _write_csv(tmp_path / "pets.csv", csv_rows)
    ds = load_csv(p, target="label", standardize=True)
    assert "standardize features" in ds.provenance["transforms"][-1]
    assert ds.name == "pets" and ds.class_names == ("cat", "dog") and ds.num_classes == 2
    assert ds.feature_names == ("a", "b", "c")
    assert [len(ds.split(s)) for s in SPLITS] == [24, 8, 8]
    mean = np.array(ds.ground_truth["standardization"]["mean"])
    std = np.array(ds.ground_truth["standardization"]["std"])
    by_c = {int(r[2]): r for r in csv_rows}
    for s in SPLITS:
        sp = ds.split(s)
        back = sp.x.double().numpy() * std + mean
        for row, label in zip(back, sp.y.tolist()):
            src = by_c[int(round(row[2]))]
            np.testing.assert_allclose(row, src[:3], atol=1e-4)
            assert ds.class_names[label] == src[3]
    assert torch.equal(load_csv(p, target="label", seed=0, standardize=True).train.x, ds.train.x)
    assert not torch.equal(load_csv(p, target="label", seed=1, standardize=True).train.x, ds.train.x)
    sub = load_csv(p, target="label", features=["b"], name="pets_b")
    assert sub.input_shape == (1,) and sub.name == "pets_b"


def test_load_csv_numeric_labels_sort_numerically(tmp_path):
    rows = [[i, i * 2, i % 5, (2, 10, 1)[i % 3]] for i in range(30)]
    ds = load_csv(_write_csv(tmp_path / "n.csv", rows), target="label")
    assert ds.class_names == ("1", "2", "10")


def test_load_csv_regression(tmp_path, csv_rows):
    rows = [[r[0], r[2], r[3] == "dog", r[1]] for r in csv_rows]
    p = _write_csv(tmp_path / "r.csv", [[a, b, int(c), d] for a, b, c, d in rows], header="a,c,isdog,target")
    ds = load_csv(p, target="target", task="regression", standardize_target=True)
    assert ds.task == "regression" and ds.train.y.dtype == torch.float32
    y_all = np.array([r[3] for r in rows])
    back = ds.test.y.double().numpy() * ds.ground_truth["target_std"] + ds.ground_truth["target_mean"]
    assert all(np.isclose(v, y_all, atol=1e-4).any() for v in back)
    raw = load_csv(p, target="target", task="regression")  # the default: the target as given
    assert raw.ground_truth["target_std"] == 1.0 and raw.provenance["transforms"] == []


def test_load_csv_errors(tmp_path, csv_rows):
    p = _write_csv(tmp_path / "pets.csv", csv_rows)
    with pytest.raises(ConfigError, match="Did you mean 'label'"):
        load_csv(p, target="lable")
    with pytest.raises(DataError, match="not found.*nope.csv"):
        load_csv(tmp_path / "nope.csv", target="label")
    with pytest.raises(ConfigError, match="Did you mean 'dropna'"):
        load_csv(p, target="label", drop_na=True)
    bad = [r[:] for r in csv_rows]
    bad[6][1] = ""
    q = _write_csv(tmp_path / "missing.csv", bad)
    with pytest.raises(DataError, match="row 7, column 'b': missing value.*dropna"):
        load_csv(q, target="label")
    assert sum(len(load_csv(q, target="label", dropna=True).split(s)) for s in SPLITS) == 39
    words = [r[:2] + ["x" if i == 3 else r[2], r[3]] for i, r in enumerate(csv_rows)]
    with pytest.raises(DataError, match="row 4, column 'c': expected a number, got 'x'"):
        load_csv(_write_csv(tmp_path / "w.csv", words), target="label")
    with pytest.raises(ConfigError, match="task"):
        load_csv(p, target="label", task="clasification")


def test_load_text(tmp_path):
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "café", "naïve", "delta", "x"]
    paras = [" ".join(rng.choice(words, 40)) for _ in range(15)] + ["short"]
    p = tmp_path / "corpus.txt"
    p.write_text("\n\n".join(paras), encoding="utf-8")
    ds = load_text(p, block_size=16, seed=0)
    assert ds.modality == "lm" and ds.input_shape == (16,) and ds.vocab[0] == "<unk>"
    docs = ds.ground_truth["documents"]
    merged = []  # rebuild the documents: "short" (< 17 chars) is merged into its neighbour
    cur = []
    for i, para in enumerate(paras):
        cur.append(para)
        if len("\n\n".join(cur)) >= 17:
            merged.append("\n\n".join(cur))
            cur = []
    merged[-1] += "\n\n" + "\n\n".join(cur) if cur else ""
    assert len(docs) == len(merged) == 15
    assert set(ds.vocab[1:]) == set("".join(merged))  # "\n" only from the merge
    nb = nc = 0
    for s in SPLITS:
        sp = ds.split(s)
        for xrow, d, o in zip(sp.x.tolist(), sp.meta["doc_id"].tolist(), sp.meta["offset"].tolist()):
            assert "".join(ds.vocab[i] for i in xrow) == merged[d][o : o + 16]
            if s == "test":
                t = merged[d][o + 1 : o + 17]
                nb += len(t.encode())
                nc += len(t)
    assert ds.ground_truth["bytes_per_token"] == pytest.approx(nb / nc)
    assert ds.ground_truth["bytes_per_token"] > 1.0  # é and ï take two bytes
    with pytest.raises(DataError, match="too short"):
        load_text(p, block_size=5000)
    capped = load_text(p, block_size=16, max_windows=20)
    assert [len(capped.split(s)) for s in SPLITS] == [12, 4, 4]


def _tensor_dict(n=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.rand(n, 1, 4, 4, generator=g), "y": torch.randint(0, 3, (n,), generator=g)}


def test_load_tensor_file_pt_and_npz(tmp_path):
    d = _tensor_dict()
    torch.save(d, tmp_path / "img.pt")
    ds = load_tensor_file(tmp_path / "img.pt", seed=0)
    assert (ds.modality, ds.task, ds.num_classes, ds.bounds) == ("image", "classification", 3, (0.0, 1.0))
    assert sum(len(ds.split(s)) for s in SPLITS) == 50
    assert row_keys(torch.cat([ds.split(s).x for s in SPLITS])) == row_keys(d["x"])
    np.savez(tmp_path / "img.npz", x=d["x"].numpy(), y=d["y"].numpy())
    from_npz = load_tensor_file(tmp_path / "img.npz", seed=0)
    assert from_npz.name == "img" and from_npz.fingerprint() == ds.fingerprint()
    # six keys are kept as given; tokens and regression inferred
    six = {"x_train": torch.randint(0, 9, (10, 5)), "y_train": torch.randn(10),
           "x_val": torch.randint(0, 9, (4, 5)), "y_val": torch.randn(4),
           "x_test": torch.randint(0, 9, (4, 5)), "y_test": torch.randn(4)}
    torch.save(six, tmp_path / "tok.pt")
    tok = load_tensor_file(tmp_path / "tok.pt", vocab_size=9)
    assert (tok.modality, tok.task, tok.vocab_size) == ("tokens", "regression", 9)
    assert torch.equal(tok.val.x, six["x_val"])
    tab = load_tensor_file(tmp_path / "tok.pt", modality="tabular", standardize=True)
    assert tab.train.x.dtype == torch.float32 and abs(float(tab.train.x.mean(0).abs().max())) < 1e-5


def test_load_tensor_file_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_tensor_file(tmp_path / "missing.pt")
    torch.save({"x": torch.randn(5, 2), "y": torch.zeros(5, dtype=torch.long), "junk": torch.ones(1)}, tmp_path / "j.pt")
    with pytest.raises(DataError, match="unexpected key"):
        load_tensor_file(tmp_path / "j.pt")
    (tmp_path / "evil.pt").write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="weights_only=True"):
        load_tensor_file(tmp_path / "evil.pt")
    torch.save({"x": torch.rand(20, 1, 3, 3) * 5, "y": torch.zeros(20, dtype=torch.long)}, tmp_path / "b.pt")
    with pytest.raises(ConfigError, match="bounds"):
        load_tensor_file(tmp_path / "b.pt", task="classification", num_classes=2)
    ok = load_tensor_file(tmp_path / "b.pt", num_classes=2, bounds=[0, 5])
    assert ok.bounds == (0.0, 5.0)
    with pytest.raises(ConfigError, match="Did you mean 'modality'"):
        load_tensor_file(tmp_path / "b.pt", modalty="image")


def test_load_callable(tmp_path, monkeypatch):
    (tmp_path / "my_data_mod.py").write_text(textwrap.dedent("""
        import torch
        from workbench.data.synthetic import tabular_relevant

        def make_tuple(n=30, seed=0):
            g = torch.Generator().manual_seed(seed)
            return torch.randn(n, 4, generator=g), torch.randint(0, 2, (n,), generator=g)

        def make_dataset(seed=0):
            return tabular_relevant(seed=seed, n_train=20, n_val=10, n_test=10)

        def make_bad():
            return [1, 2, 3]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    ds = load_callable("my_data_mod:make_tuple", seed=2, n=40)
    assert (ds.modality, ds.task, ds.name) == ("tabular", "classification", "make_tuple")
    assert sum(len(ds.split(s)) for s in SPLITS) == 40
    assert not torch.equal(ds.train.x, load_callable("my_data_mod:make_tuple", seed=3, n=40).train.x)
    named = load_callable("my_data_mod:make_tuple", dataset_options={"name": "mine", "task": "regression"})
    assert named.name == "mine" and named.task == "regression"
    assert load_callable("my_data_mod:make_dataset", seed=1).fingerprint() == synthetic.tabular_relevant(
        seed=1, n_train=20, n_val=10, n_test=10).fingerprint()
    with pytest.raises(DataError, match="returned list"):
        load_callable("my_data_mod:make_bad")
    with pytest.raises(ConfigError, match="Did you mean 'make_tuple'"):
        load_callable("my_data_mod:make_tupel")
    with pytest.raises(ConfigError, match="module:function"):
        load_callable("my_data_mod.make_tuple")


def test_load_dataset_entry_point(tmp_path, csv_rows):
    assert load_dataset("wine", seed=0).fingerprint() == load("wine").fingerprint()
    with pytest.raises(UnknownNameError, match="Did you mean 'digits'"):
        load_dataset("digts")
    small = load_dataset({"name": "synthetic_tabular", "n_train": 30, "n_val": 10, "n_test": 10, "seed": 4})
    assert len(small.train) == 30 and small.seed == 4
    with pytest.raises(ConfigError, match="Did you mean 'n_train'"):
        load_dataset({"name": "synthetic_tabular", "ntrain": 30})
    p = _write_csv(tmp_path / "pets.csv", csv_rows)
    ds = load_dataset({"source": "csv", "path": str(p), "target": "label"}, seed=1)
    assert ds.seed == 1 and ds.class_names == ("cat", "dog")
    blobs = load_dataset({"source": "callable", "function": "workbench.data.synthetic:tabular_relevant",
                          "name": "plan_key", "n_train": 12, "n_val": 4, "n_test": 4}, seed=2)
    assert len(blobs.train) == 12 and blobs.seed == 2
    with pytest.raises(ConfigError, match="Did you mean 'csv'"):
        load_dataset({"source": "cvs", "path": str(p)})
    with pytest.raises(ConfigError, match="needs 'path'"):
        load_dataset({"source": "text"})
    with pytest.raises(ConfigError, match="'name'.*'source'"):
        load_dataset({"path": str(p)})


# --------------------------------------------------------------------------------------
# validate_dataset catches each bad case
# --------------------------------------------------------------------------------------


def _good(modality="tabular", task="classification") -> Dataset:
    g = torch.Generator().manual_seed(0)

    def split(n):
        if modality == "image":
            x = torch.rand(n, 1, 4, 4, generator=g)
        elif modality == "tabular":
            x = torch.randn(n, 3, generator=g)
        else:
            x = torch.randint(0, 6, (n, 5), generator=g)
        if task == "classification":
            y = torch.randint(0, 3, (n,), generator=g)
        elif task == "regression":
            y = torch.randn(n, generator=g)
        else:
            y = torch.randint(0, 6, (n, 5), generator=g)
        return Split(x, y, {"doc_id": torch.arange(n)})

    return Dataset(
        name="tiny", modality=modality, task=task, train=split(8), val=split(4), test=split(4),
        num_classes=3 if task == "classification" else None,
        vocab_size=6 if modality in ("tokens", "lm") else None,
        bounds=(0.0, 1.0) if modality == "image" else None,
    )


def _with(ds: Dataset, split: str, **kw) -> Dataset:
    sp = ds.split(split)
    return dataclasses.replace(ds, **{split: dataclasses.replace(sp, **kw)})


def test_validate_accepts_good_datasets():
    for m, t in [("image", "classification"), ("tabular", "regression"), ("tokens", "classification"), ("lm", "lm")]:
        validate_dataset(_good(m, t))


@pytest.mark.parametrize("case,pattern", [
    ("nan", r"split 'val'.*1 NaN/inf.*example 2"),
    ("inf", r"split 'test'.*NaN/inf"),
    ("int_tabular", r"split 'train'.*expects float inputs"),
    ("float_tokens", r"split 'train'.*torch.long"),
    ("float_labels", r"split 'train'.*labels must be \(N,\) torch.long"),
    ("label_range", r"split 'test'.*label out of range.*num_classes=3.*max 7"),
    ("token_range", r"split 'val'.*token id out of range.*vocab_size=6"),
    ("lm_target_range", r"split 'val'.*target token id out of range"),
    ("empty", r"split 'val' is empty"),
    ("length", r"split 'train'.*x has 8 examples but y has"),
    ("meta_length", r"split 'test'.*meta\['doc_id'\]"),
    ("lm_shape", r"split 'train'.*lm targets"),
    ("bounds", r"split 'train'.*outside bounds"),
    ("shape", r"split 'val'.*differs from train"),
    ("class_names", r"2 class_names for num_classes=3"),
    ("no_vocab", r"needs vocab_size"),
    ("regression_nan", r"split 'train'.*NaN/inf target"),
    ("task_mismatch", r"modality 'lm' goes with task 'lm'"),
])
def test_validate_catches(case, pattern):
    tab, tok, lm, img = _good(), _good("tokens"), _good("lm", "lm"), _good("image")
    bad: Dataset
    if case == "nan":
        x = tab.val.x.clone(); x[2, 1] = float("nan"); bad = _with(tab, "val", x=x)
    elif case == "inf":
        x = tab.test.x.clone(); x[0, 0] = float("inf"); bad = _with(tab, "test", x=x)
    elif case == "int_tabular":
        bad = _with(tab, "train", x=tab.train.x.long())
    elif case == "float_tokens":
        bad = _with(tok, "train", x=tok.train.x.float())
    elif case == "float_labels":
        bad = _with(tab, "train", y=tab.train.y.float())
    elif case == "label_range":
        y = tab.test.y.clone(); y[1] = 7; bad = _with(tab, "test", y=y)
    elif case == "token_range":
        x = tok.val.x.clone(); x[0, 0] = 6; bad = _with(tok, "val", x=x)
    elif case == "lm_target_range":
        y = lm.val.y.clone(); y[0, 0] = 99; bad = _with(lm, "val", y=y)
    elif case == "empty":
        bad = dataclasses.replace(tab, val=tab.val.subset(slice(0, 0)))
    elif case == "length":
        bad = _with(tab, "train", y=tab.train.y[:5])
    elif case == "meta_length":
        bad = _with(tab, "test", meta={"doc_id": torch.arange(2)})
    elif case == "lm_shape":
        bad = _with(lm, "train", y=lm.train.y[:, :-1])
    elif case == "bounds":
        x = img.train.x.clone(); x[0, 0, 0, 0] = 1.5; bad = _with(img, "train", x=x)
    elif case == "shape":
        bad = _with(tab, "val", x=torch.randn(4, 2))
    elif case == "class_names":
        bad = dataclasses.replace(tab, class_names=("a", "b"))
    elif case == "no_vocab":
        bad = dataclasses.replace(tok, vocab_size=None)
    elif case == "regression_nan":
        reg = _good("tabular", "regression")
        y = reg.train.y.clone(); y[3] = float("nan"); bad = _with(reg, "train", y=y)
    else:
        bad = dataclasses.replace(tab, modality="lm")
    with pytest.raises(DataError, match=pattern):
        validate_dataset(bad)


def test_split_indices_properties():
    labels = np.repeat(np.arange(4), [50, 30, 7, 3])
    parts = split_indices(len(labels), (0.6, 0.2, 0.2), seed=5, labels=labels)
    together = np.concatenate(parts)
    assert len(together) == len(labels) and len(np.unique(together)) == len(labels)
    for c, n_c in enumerate([50, 30, 7, 3]):
        for p, f in zip(parts, (0.6, 0.2, 0.2)):
            assert abs(int((labels[p] == c).sum()) - f * n_c) < 2
    assert [len(p) for p in parts] == [54, 18, 18]
    for n in (1, 2, 7, 13, 101):  # exact totals for any n, stratified or not
        y = np.arange(n) % 3
        for lab in (None, y):
            sizes = [len(p) for p in split_indices(n, (0.6, 0.2, 0.2), 0, labels=lab)]
            assert sum(sizes) == n and all(abs(s - f * n) < 1 for s, f in zip(sizes, (0.6, 0.2, 0.2)))
    again = split_indices(len(labels), (0.6, 0.2, 0.2), seed=5, labels=labels)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


# --------------------------------------------------------------------------------------
# User data as given: CSV options, user splits, tensors, text and image folders (issue 14)
# --------------------------------------------------------------------------------------


def test_csv_values_reach_the_model_as_written_with_the_label_mapping_recorded(tmp_path):
    rows = [[1000 + i, -0.5 * i, i % 7, ("yes", "no", "maybe")[i % 3]] for i in range(30)]
    p = _write_csv(tmp_path / "raw.csv", rows, header="income,delta,k,label")
    ds = load_csv(p, target="label", classes=["no", "maybe", "yes"])
    assert ds.provenance["transforms"][0].startswith("labels: strings mapped to class ids in the order of `classes`")
    assert ds.provenance["label_mapping"] == {"no": 0, "maybe": 1, "yes": 2} and ds.class_names == ("no", "maybe", "yes")
    assert "made by the workbench" in ds.provenance["split"] and ds.provenance["user_split"] is False
    by_income = {r[0]: r for r in rows}
    for s in SPLITS:  # every value exactly as in the file (float32 holds these exactly)
        for x, y in zip(ds.split(s).x.tolist(), ds.split(s).y.tolist()):
            src = by_income[int(x[0])]
            assert x == [float(v) for v in src[:3]] and ds.class_names[y] == src[3]
    with pytest.raises(DataError, match=r"label\(s\) \['yes'\] that are not in `classes`"):
        load_csv(p, target="label", classes=["no", "maybe"])


def test_csv_encoding_delimiter_duplicates_and_column_selection(tmp_path):
    latin = tmp_path / "latin.csv"
    latin.write_bytes("a;b;label\n1;2;caf\xe9\n3;4;th\xe9\n5;6;caf\xe9\n7;8;th\xe9\n9;1;caf\xe9\n2;2;th\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"line 2: byte \d+ .* not valid utf-8.*encoding = \"latin-1\""):
        load_csv(latin, target="label", delimiter=";")
    rows = "a;b;label\n" + "".join(f"{i};{i * 2};{('café', 'thé')[i % 2]}\n" for i in range(20))
    latin.write_bytes(rows.encode("latin-1"))
    ds = load_csv(latin, target="label", delimiter=";", encoding="latin-1")
    assert ds.class_names == ("café", "thé") and ds.feature_names == ("a", "b")
    with pytest.raises(ConfigError, match="Unknown `encoding`"):
        load_csv(latin, target="label", delimiter=";", encoding="latin-9000")
    with pytest.raises(ConfigError, match="one character"):
        load_csv(latin, target="label", delimiter=";;")
    dup = _write_csv(tmp_path / "dup.csv", [[1, 2, 3, "x"], [4, 5, 6, "y"]], header="a,b,a,label")
    with pytest.raises(DataError, match=r"column name 'a' appears 2 times \(columns 1, 3\)"):
        load_csv(dup, target="label")
    p = _write_csv(tmp_path / "sel.csv", [[i, i + 1, i + 2, "ab"[i % 2]] for i in range(20)])
    assert load_csv(p, target="label", features=["c", "a"]).feature_names == ("c", "a")
    assert load_csv(p, target="label", exclude=["b"]).feature_names == ("a", "c")
    with pytest.raises(ConfigError, match="Did you mean 'b'"):
        load_csv(p, target="label", exclude=["bb"])


def test_user_splits_column_files_and_index_files(tmp_path):
    rows = [[i, i * 3, i % 5, "ab"[i % 2], ("train", "test", "train", "validation", "train")[i % 5]] for i in range(50)]
    path = tmp_path / "s.csv"
    path.write_text("a,b,c,label,part\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    ds = load_csv(path, target="label", split_column="part")
    got = {s: sorted(int(v) for v in ds.split(s).x[:, 0].tolist()) for s in SPLITS}
    want = {"train": [r[0] for r in rows if r[4] == "train"], "val": [r[0] for r in rows if r[4] == "validation"],
            "test": [r[0] for r in rows if r[4] == "test"]}
    assert got == want and ds.provenance["user_split"] and "split column 'part'" in ds.provenance["split"]
    assert ds.feature_names == ("a", "b", "c")  # the split column is not a feature
    # without val: a seeded share of the user's train rows; the user's test rows untouched
    rows2 = [r[:4] + ["test" if r[4] == "test" else "train"] for r in rows]
    path.write_text("a,b,c,label,part\n" + "".join(",".join(map(str, r)) + "\n" for r in rows2))
    ds2 = load_csv(path, target="label", split_column="part")
    assert sorted(int(v) for v in ds2.test.x[:, 0].tolist()) == want["test"]
    assert len(ds2.train) + len(ds2.val) == 40 and len(ds2.val) == 8 and "val = a seeded random 20%" in ds2.provenance["split"]
    path.write_text("a,b,c,label,part\n1,2,3,a,train\n4,5,6,b,tset\n")
    with pytest.raises(DataError, match=r"unknown split 'tset'.*Did you mean 'test'"):
        load_csv(path, target="label", split_column="part")
    # separate files
    for name, lo, hi in (("tr", 0, 30), ("va", 30, 40), ("te", 40, 50)):
        _write_csv(tmp_path / f"{name}.csv", [[i, i, i, "ab"[i % 2]] for i in range(lo, hi)])
    ds3 = load_csv({"train": str(tmp_path / "tr.csv"), "val": str(tmp_path / "va.csv"),
                    "test": str(tmp_path / "te.csv")}, target="label")
    assert [sorted(int(v) for v in ds3.split(s).x[:, 0].tolist()) for s in SPLITS] == [
        list(range(0, 30)), list(range(30, 40)), list(range(40, 50))]
    _write_csv(tmp_path / "other.csv", [[1, 2, 3, "a"]], header="a,b,z,label")
    with pytest.raises(DataError, match="same header"):
        load_csv({"train": str(tmp_path / "tr.csv"), "test": str(tmp_path / "other.csv")}, target="label")
    # index files (0-based data rows)
    (tmp_path / "test_rows.txt").write_text("0 1 2\n3\n")
    np.save(tmp_path / "val_rows.npy", np.array([4, 5]))
    ds4 = load_csv(tmp_path / "tr.csv", target="label", split_files={"test": str(tmp_path / "test_rows.txt"),
                                                                    "val": str(tmp_path / "val_rows.npy")})
    assert sorted(int(v) for v in ds4.test.x[:, 0].tolist()) == [0, 1, 2, 3]
    assert sorted(int(v) for v in ds4.val.x[:, 0].tolist()) == [4, 5] and len(ds4.train) == 24
    (tmp_path / "bad_rows.txt").write_text("3 4 99\n")
    with pytest.raises(DataError, match=r"must be in \[0, 30\)"):
        load_csv(tmp_path / "tr.csv", target="label", split_files={"test": str(tmp_path / "bad_rows.txt")})
    (tmp_path / "overlap.txt").write_text("4\n")
    with pytest.raises(DataError, match="row 4 is in both 'val' and 'test'"):
        load_csv(tmp_path / "tr.csv", target="label",
                 split_files={"test": str(tmp_path / "overlap.txt"), "val": str(tmp_path / "val_rows.npy")})


def test_tensor_and_text_sources_take_the_users_split(tmp_path):
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 30), ("test", 10)):
        torch.save({"x": torch.randn(n, 3, generator=g, dtype=torch.float64), "y": torch.arange(n) % 2},
                   tmp_path / f"{split}.pt")
    ds = load_tensor_file({"train": str(tmp_path / "train.pt"), "test": str(tmp_path / "test.pt")})
    test_x = torch.load(tmp_path / "test.pt", weights_only=True)["x"]
    assert torch.equal(ds.test.x, test_x.float()) and len(ds.train) + len(ds.val) == 30
    assert ds.provenance["user_split"] and any("cast from torch.float64 to torch.float32" in t
                                               for t in ds.provenance["transforms"])
    docs = {s: "\n\n".join(f"{s} paragraph {i} " + "xyz " * 30 for i in range(4)) for s in SPLITS}
    for s, text in docs.items():
        (tmp_path / f"{s}.txt").write_text(text)
    lm = load_text({s: str(tmp_path / f"{s}.txt") for s in SPLITS}, block_size=16)
    names = lm.ground_truth["documents"]
    for s in SPLITS:  # every window of a split comes from that split's file
        assert all(names[d].startswith(s) for d in lm.split(s).meta["doc_id"].tolist())
    assert lm.provenance["transforms"][0].startswith("tokenize: character level")


def _png(path, size, color, mode="RGB"):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def test_image_folders_through_pillow(tmp_path):
    from workbench.data.loaders import load_image_folder

    root = tmp_path / "imgs"
    for k in range(6):
        _png(root / "cat" / f"{k}.png", (5, 4), (10 * k, 0, 255))
        _png(root / "dog" / f"{k}.png", (5, 4), (0, 255, 3 * k))
    ds = load_image_folder(root)
    assert ds.modality == "image" and ds.class_names == ("cat", "dog") and ds.input_shape == (3, 4, 5)
    assert ds.bounds == (0.0, 1.0) and ds.provenance["transforms"] == ["pixel values scaled from 0..255 to [0, 1] (x / 255)"]
    x = torch.cat([ds.split(s).x for s in SPLITS])
    # blue channel: cats 255, dogs 3k -> exactly the file's bytes / 255
    assert torch.equal(x[:, 2].unique(), torch.tensor(sorted({1.0, *(3 * k / 255 for k in range(6))}), dtype=torch.float32))
    _png(root / "dog" / "big.png", (8, 8), (1, 2, 3))
    with pytest.raises(DataError, match=r"differ in size: .* is 4x5 but .*big.png' is 8x8.*resize"):
        load_image_folder(root)
    resized = load_image_folder(root, resize=[6, 6], normalize={"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]})
    assert resized.input_shape == (3, 6, 6) and resized.bounds == (-1.0, 1.0)
    assert any("resized to 6x6" in t for t in resized.provenance["transforms"])
    assert any("normalized per channel" in t for t in resized.provenance["transforms"])
    _png(root / "cat" / "grey.png", (5, 4), 7, mode="L")
    (root / "dog" / "big.png").unlink()
    with pytest.raises(DataError, match="colour mode.*mode = \"RGB\""):
        load_image_folder(root)
    assert load_image_folder(root, mode="RGB").input_shape == (3, 4, 5)
    (root / "bird").mkdir()
    with pytest.raises(DataError, match="Class 'bird' .* is empty"):
        load_image_folder(root)
    (root / "bird").rmdir()
    (root / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="Cannot read image .*broken.png"):
        load_image_folder(root, mode="RGB")


def test_image_folders_one_root_per_split(tmp_path):
    from workbench.data.loaders import load_image_folder

    for split, n in (("train", 5), ("test", 2)):
        for k in range(n):
            _png(tmp_path / split / "a" / f"{k}.png", (3, 3), (k, 0, 0))
            _png(tmp_path / split / "b" / f"{k}.png", (3, 3), (0, k, 0))
    ds = load_image_folder({"train": str(tmp_path / "train"), "test": str(tmp_path / "test")})
    assert len(ds.test) == 4 and len(ds.train) + len(ds.val) == 10 and ds.provenance["user_split"]
    assert sorted(ds.test.x[:, :2].amax(dim=(2, 3)).sum(1).mul(255).round().tolist()) == [0, 0, 1, 1]
    (tmp_path / "test" / "c").mkdir()
    _png(tmp_path / "test" / "c" / "0.png", (3, 3), (0, 0, 0))
    with pytest.raises(DataError, match=r"class folder\(s\) \['c'\] not in `classes`"):
        load_image_folder({"train": str(tmp_path / "train"), "test": str(tmp_path / "test")})


def test_text_decode_errors_and_tensor_index_files(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes(("hello world\n\n" * 20 + "caf\xe9\n").encode("latin-1"))
    with pytest.raises(DataError, match=r"line 41: byte 263 is not valid utf-8.*encoding = \"latin-1\""):
        load_text(p, block_size=8)
    assert load_text(p, block_size=8, encoding="latin-1").vocab_size > 1
    np.savez(tmp_path / "xy.npz", x=np.arange(40, dtype=np.float32).reshape(20, 2), y=np.arange(20) % 2)
    (tmp_path / "test.txt").write_text("0 1 2 3 4")
    ds = load_tensor_file(tmp_path / "xy.npz", split_files={"test": str(tmp_path / "test.txt")})
    assert ds.test.x[:, 0].tolist() == [0.0, 2.0, 4.0, 6.0, 8.0] and ds.provenance["user_split"]
    np.save(tmp_path / "x.npy", np.zeros((3, 2)))
    with pytest.raises(ConfigError, match="single array.*numpy.savez"):
        load_tensor_file(tmp_path / "x.npy")
