"""A demo run store with synthetic results and artifacts in the suites' formats, for
trying the dashboard without running a plan, for its tests and for its benchmark.

    python -m apps.demo /tmp/demo-store            # 2 runs, 4 models, every suite
    python -m workbench.apps.demo /tmp/big --examples 10000 --extra-runs 1000
    WORKBENCH_STORE=/tmp/demo-store/store.sqlite workbench ui

Every number is derived from the generated arrays (accuracy = mean(y_pred == y_true)
with its Wilson CI, confusion counts, per-class scores), so the tests can recompute it.
One class name of the image model is `<script>alert(1)</script>`: it must render as
text everywhere. Run B differs from run A by a seeded set of flipped predictions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np

from workbench.records import MetricRecord, RunRecord, SuiteResult
from workbench.stats import wilson_ci
from workbench.store import Store

EVIL = "<script>alert(1)</script>"
IMAGE_CLASSES = ["zero", "one", EVIL, "three", "four"]
TOKEN_VOCAB = list("abcdefghijklmnop")
IMAGE_METHODS = ("saliency", "integrated_gradients", "occlusion")
TOKEN_METHODS = ("saliency", "integrated_gradients", "rollout")


class _Writer:
    """Writes artifacts under run_dir/artifacts/<suite>/<model>/ and returns relative paths."""

    def __init__(self, run_dir: Path, suite: str, model: str) -> None:
        self.run_dir = run_dir
        self.dir = run_dir / "artifacts" / suite / model
        self.dir.mkdir(parents=True, exist_ok=True)
        self.paths: dict[str, str] = {}

    def npz(self, name: str, **arrays: Any) -> None:
        p = self.dir / f"{name}.npz"
        np.savez_compressed(p, **arrays)
        self.paths[name] = str(p.relative_to(self.run_dir))

    def json(self, name: str, obj: Any) -> None:
        p = self.dir / f"{name}.json"
        p.write_text(json.dumps(obj))
        self.paths[name] = str(p.relative_to(self.run_dir))


def _acc_record(correct: np.ndarray, **tags: Any) -> MetricRecord:
    k, n = int(correct.sum()), int(correct.size)
    return MetricRecord(name="accuracy", value=k / n, ci=wilson_ci(k, n), n=n, unit="fraction",
                        higher_is_better=True, tags={"split": "test", **tags})


def classification_predictions(n: int, k: int, seed: int, flip_seed: int | None = None,
                               flip_fraction: float = 0.1) -> dict[str, np.ndarray]:
    """y_true, y_pred, probs (softmax of noisy logits) and index for n examples; with
    `flip_seed`, a seeded fraction of predictions is changed to another class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), y] += 2.5
    if flip_seed is not None:
        r2 = np.random.default_rng(flip_seed)
        flip = r2.random(n) < flip_fraction
        logits[flip] = np.roll(logits[flip], r2.integers(1, k), axis=1)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    return {"y_true": y, "y_pred": probs.argmax(1), "probs": probs.astype(np.float32), "index": np.arange(n)}


def _metrics_result(w: _Writer, model: str, dataset: str, pred: dict[str, np.ndarray], names: list[str]) -> SuiteResult:
    y, p = pred["y_true"], pred["y_pred"]
    k = len(names)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y, p), 1)
    w.npz("confusion_matrix", matrix=cm, class_names=np.array(names, dtype=str))
    w.npz("predictions", **pred)
    metrics = [_acc_record(p == y)]
    for c, cname in enumerate(names):
        tp = int(cm[c, c])
        for metric, denom in (("precision", int(cm[:, c].sum())), ("recall", int(cm[c].sum()))):
            v = tp / denom if denom else None
            metrics.append(MetricRecord(name=metric, value=v, reason=None if denom else "no examples",
                                        ci=wilson_ci(tp, denom) if denom else None, n=denom, unit="fraction",
                                        higher_is_better=True, tags={"split": "test", "class": cname}))
        pr, rc = (tp / cm[:, c].sum() if cm[:, c].sum() else 0.0), (tp / cm[c].sum() if cm[c].sum() else 0.0)
        f1 = 2 * pr * rc / (pr + rc) if pr + rc else 0.0
        metrics.append(MetricRecord(name="f1", value=f1, n=int(cm[c].sum()), unit="fraction", higher_is_better=True,
                                    tags={"split": "test", "class": cname}))
    return SuiteResult(suite="metrics", model=model, dataset=dataset, status="ok", metrics=tuple(metrics),
                       artifacts=w.paths, config={"split": "test"}, seed=1, duration_s=0.1)


def _regression_result(w: _Writer, model: str, n: int, seed: int) -> SuiteResult:
    rng = np.random.default_rng(seed)
    y = rng.normal(0, 1, n)
    pred = y + rng.normal(0, 0.3, n)
    var = np.full(n, 0.09)
    w.npz("predictions", y_true=y, y_pred=pred, pred_var=var)
    err = (pred - y) ** 2
    return SuiteResult(suite="metrics", model=model, dataset="synthetic_hetero_regression", status="ok", metrics=(
        MetricRecord(name="mse", value=float(err.mean()), n=n, unit="target units²", higher_is_better=False,
                     tags={"split": "test", "units": "model"}),
        MetricRecord(name="r2", value=float(1 - err.sum() / ((y - y.mean()) ** 2).sum()), n=n, unit="dimensionless",
                     higher_is_better=True, tags={"split": "test"}),
    ), artifacts=w.paths, seed=2, duration_s=0.1)


def _explain_image(w: _Writer, model: str, pred: dict[str, np.ndarray], n_ex: int, seed: int) -> SuiteResult:
    rng = np.random.default_rng(seed)
    x = rng.random((n_ex, 1, 8, 8)).astype(np.float32)
    arrays: dict[str, np.ndarray] = {
        "input": x, "label": pred["y_true"][:n_ex], "prediction": pred["y_pred"][:n_ex],
        "probability": pred["probs"][np.arange(n_ex), pred["y_pred"][:n_ex]].astype(np.float64),
        "explained_value": rng.normal(2, 0.5, n_ex),
    }
    for j, m in enumerate(IMAGE_METHODS):
        arrays[f"attr_{m}"] = (rng.normal(0, 1, (n_ex, 8, 8)) * (j + 1)).astype(np.float32)
    w.npz("examples", **arrays)
    frac = np.linspace(0, 1, 9)
    curves = {"fractions": frac}
    quality: dict[str, Any] = {}
    for m in (*IMAGE_METHODS, "random"):
        for rep in ("zero", "blur"):
            slope = rng.uniform(0.5, 1.5, (n_ex, 1))
            curves[f"deletion__{m}__{rep}"] = np.clip(1 - frac[None] * slope, 0, 1).astype(np.float32)
            curves[f"insertion__{m}__{rep}"] = np.clip(frac[None] * slope, 0, 1).astype(np.float32)
        quality[m] = {f"{mode}_auc": {rep: curves[f"{mode}__{m}__{rep}"].mean(1).tolist() for rep in ("zero", "blur")}
                      for mode in ("deletion", "insertion")}
        if m != "random":
            quality[m]["randomisation_rank_correlation"] = rng.uniform(-1, 1, n_ex).tolist()
    quality["integrated_gradients"]["completeness_gap"] = rng.uniform(0, 0.01, n_ex).tolist()
    w.npz("curves", **curves)
    w.json("quality", quality)
    w.json("meta", {"modality": "image", "task": "classification", "space": "input", "n_examples": n_ex,
                    "attributions": list(IMAGE_METHODS), "skipped": {"attention": "not a token model"},
                    "explained_output": "logit", "baseline": "zero input", "replacements": ["zero", "blur"],
                    "feature_names": None, "class_names": IMAGE_CLASSES, "tokens": None, "relevant": None,
                    "curve_unit": "probability"})
    metrics = []
    for m in IMAGE_METHODS:
        q = quality[m]
        metrics.append(MetricRecord(name="method_coverage", value=1.0, n=n_ex, unit="fraction", higher_is_better=True,
                                    tags={"method": m}))
        for rep, vals in q["deletion_auc"].items():
            v = np.asarray(vals)
            metrics.append(MetricRecord(name="deletion_auc", value=float(v.mean()), n=n_ex, unit="probability",
                                        higher_is_better=False, ci=(float(v.min()), float(v.max())),
                                        tags={"method": m, "replacement": rep}))
    g = np.asarray(quality["integrated_gradients"]["completeness_gap"])
    metrics.append(MetricRecord(name="completeness_gap", value=float(np.median(g)), n=n_ex, unit="fraction",
                                higher_is_better=False, tags={"method": "integrated_gradients", "verdict": "ok"}))
    return SuiteResult(suite="explain", model=model, dataset="digits", status="ok", metrics=tuple(metrics),
                       artifacts=w.paths, config={"methods": list(IMAGE_METHODS), "n_examples": n_ex}, seed=3,
                       duration_s=0.2)


def _explain_tokens(w: _Writer, model: str, pred: dict[str, np.ndarray], n_ex: int, seed: int) -> SuiteResult:
    rng = np.random.default_rng(seed)
    t, layers, heads = 8, 2, 2
    x = rng.integers(0, len(TOKEN_VOCAB), (n_ex, t))
    att = rng.random((n_ex, layers, heads, t, t)).astype(np.float32)
    att /= att.sum(-1, keepdims=True)
    roll = att.mean(2)[:, 0] @ att.mean(2)[:, 1]
    arrays = {"input": x, "label": pred["y_true"][:n_ex], "prediction": pred["y_pred"][:n_ex],
              "probability": pred["probs"][np.arange(n_ex), pred["y_pred"][:n_ex]].astype(np.float64),
              "explained_value": rng.normal(1, 0.5, n_ex), "attention": att, "rollout": roll.astype(np.float32)}
    for m in TOKEN_METHODS:
        arrays[f"attr_{m}"] = rng.normal(0, 1, (n_ex, t)).astype(np.float32)
    w.npz("examples", **arrays)
    w.json("quality", {m: {"top_k_precision": rng.uniform(0, 1, n_ex).tolist()} for m in TOKEN_METHODS})
    w.json("meta", {"modality": "tokens", "task": "classification", "space": "embedding", "n_examples": n_ex,
                    "attributions": list(TOKEN_METHODS), "skipped": {}, "explained_output": "logit",
                    "class_names": ["neg", "pos"], "tokens": [[TOKEN_VOCAB[i] for i in row] for row in x],
                    "relevant": [2, 5], "replacements": ["zero"]})
    return SuiteResult(suite="explain", model=model, dataset="synthetic_tokens", status="ok", metrics=(
        MetricRecord(name="method_coverage", value=1.0, n=n_ex, unit="fraction", higher_is_better=True,
                     tags={"method": "saliency"}),), artifacts=w.paths, config={"n_examples": n_ex}, seed=4)


def _robustness(w: _Writer, model: str, pred: dict[str, np.ndarray], n_ex: int, seed: int) -> SuiteResult:
    rng = np.random.default_rng(seed)
    eps = [0.0, 0.05, 0.1, 0.2]
    acc_std = [0.95, 0.7, 0.4, 0.05]
    acc_adv = [0.93, 0.85, 0.72, 0.4]
    n = 200

    def curve(acc: list[float]) -> dict[str, Any]:
        cis = [wilson_ci(int(round(a * n)), n) for a in acc]
        return {"eps": eps, "accuracy": acc, "ci_low": [c[0] for c in cis], "ci_high": [c[1] for c in cis]}

    summary = {"modality": "image", "norm": "linf", "eps": eps, "attacks": ["pgd"], "class_names": IMAGE_CLASSES,
               "bounds": [0, 1], "n": n, "notes": [f"demo note with a class name {EVIL}"], "variants": {
                   "standard": {"clean_accuracy": 0.95, "n": n, "curves": {"pgd": curve(acc_std)}},
                   "pgd_at": {"clean_accuracy": 0.93, "n": n, "curves": {"pgd": curve(acc_adv)},
                              "trained_with": "PGD-7 adversarial training", "train_seconds": 12.0}}}
    k = len(IMAGE_CLASSES)
    clean = rng.random((n_ex, 1, 8, 8)).astype(np.float32)
    pert = rng.uniform(-0.1, 0.1, clean.shape).astype(np.float32)
    pc = rng.dirichlet(np.ones(k), n_ex).astype(np.float32)
    pa = rng.dirichlet(np.ones(k), n_ex).astype(np.float32)
    w.npz("adversarial_examples", label=pred["y_true"][:n_ex], pred_clean=pc.argmax(1), pred_adversarial=pa.argmax(1),
          probs_clean=pc, probs_adversarial=pa, attack_index=np.zeros(n_ex, dtype=np.int64), clean=clean,
          adversarial=np.clip(clean + pert, 0, 1), perturbation=np.clip(clean + pert, 0, 1) - clean)
    w.json("masking_flags", {"standard": [{"check": "pgd_vs_apgd", "flagged": False, "reason": "gap 0.01"}]})
    rows = [{"corruption": "none", "severity": 0, "accuracy": 0.95, "n": n, "generalization_gap": 0.0}]
    rows += [{"corruption": "gaussian_noise", "severity": s, "accuracy": 0.95 - 0.1 * s, "n": n,
              "generalization_gap": 0.05 * s} for s in (1, 2, 3)]
    w.json("corruptions", rows)
    w.json("drift", [{"shift": "gaussian_noise", "severity": 2, "permutation_pvalue": 0.01, "max_ks": 0.3,
                      "threshold": 0.1, "max_psi": 0.4, "n_significant_features": 10, "ks_statistic": [0.3] * 64,
                      "drift": True, "statistically_significant": True}])
    w.json("robustness_summary", summary)
    metrics = [MetricRecord(name="robust_accuracy", value=a, n=n, ci=wilson_ci(int(round(a * n)), n), unit="fraction",
                            higher_is_better=True, tags={"variant": v, "attack": "pgd", "eps": e})
               for v, accs in (("standard", acc_std), ("pgd_at", acc_adv)) for e, a in zip(eps, accs)]
    return SuiteResult(suite="robustness", model=model, dataset="digits", status="ok", metrics=tuple(metrics),
                       artifacts=w.paths, seed=5, duration_s=1.0)


def _uncertainty(w: _Writer, model: str, pred: dict[str, np.ndarray], seed: int) -> SuiteResult:
    rng = np.random.default_rng(seed)
    n = len(pred["y_true"])
    conf = pred["probs"].max(1).astype(np.float64)
    correct = pred["y_pred"] == pred["y_true"]
    edges = np.linspace(0, 1, 11)

    def bins(c: np.ndarray) -> dict[str, Any]:
        b = np.clip(np.digitize(c, edges[1:-1]), 0, 9)
        acc = [float(correct[b == j].mean()) if (b == j).any() else None for j in range(10)]
        cf = [float(c[b == j].mean()) if (b == j).any() else None for j in range(10)]
        return {"uniform": {"lower": edges[:-1].tolist(), "upper": edges[1:].tolist(), "accuracy": acc,
                            "confidence": cf, "count": [int((b == j).sum()) for j in range(10)]}}

    w.json("reliability", {"n_bins": 10, "temperature": {"single": 1.5},
                           "methods": {"single": {"none": bins(conf), "temperature": bins(conf ** 1.5)}}})
    w.npz("per_example", y=pred["y_true"], single__confidence__none=conf, single__correct=correct,
          ensemble__aleatoric=rng.gamma(2, 0.1, n), ensemble__epistemic=rng.gamma(1, 0.05, n),
          ensemble__total=rng.gamma(2, 0.15, n))
    order = np.argsort(-conf)
    cov = np.arange(1, n + 1) / n
    risk = np.cumsum(~correct[order]) / np.arange(1, n + 1)
    w.npz("risk_coverage", single__none__coverage=cov, single__none__risk=risk)
    w.json("ood_roc", {"noise": {"single": {"max_prob": {"fpr": [0, 0.2, 1], "tpr": [0, 0.7, 1], "auroc": 0.75}}}})
    ece = MetricRecord(name="ece", value=0.05, n=n, ci=(0.03, 0.08), unit="fraction", higher_is_better=False,
                       tags={"method": "single", "calibration": "none"})
    return SuiteResult(suite="uncertainty", model=model, dataset="digits", status="ok", metrics=(ece,),
                       artifacts=w.paths, seed=6, duration_s=0.5)


def _efficiency(w: _Writer, model: str, seed: int, scale: float = 1.0) -> SuiteResult:
    rng = np.random.default_rng(seed)
    bs = np.array([1, 8, 32])
    samples = np.abs(rng.normal(1e-3, 1e-4, (3, 20))) * bs[:, None] ** 0.5 * scale
    w.npz("latency", batch_sizes=bs, samples_s=samples)
    rows = [{"variant": v, "sparsity": s, "device": "cpu", "metric_name": "accuracy", "metric": a,
             "metric_ci": [a - 0.02, a + 0.02], "higher_is_better": True, "n": 200, "latency_p50_s": lat,
             "latency_ci": [lat * 0.9, lat * 1.1], "batch_size": 32, "size_bytes": size, "flops": 100000,
             "flops_complete": True, "nonzero_flops": nz, "weight_density": 1.0, "warnings": [], "pareto": par}
            for v, s, a, lat, size, nz, par in (("base", None, 0.95, 2e-3, 40000, 100000, True),
                                                  ("pruned", 0.5, 0.93, 1.9e-3, 40000, 50000, True),
                                                  ("int8", None, 0.90, 2.5e-3, 12000, 100000, False))]
    w.json("compression", {"rows": rows, "notes": []})
    w.json("flops", {"batch_size": 8, "forward": {"total": 100000, "by_module": {"conv": 60000, "fc": 40000}}})
    p50 = [float(np.quantile(s, 0.5)) for s in samples]
    metrics = [MetricRecord(name="parameters", value=10000 * scale, unit="count", higher_is_better=False,
                            tags={"kind": "total"}),
               MetricRecord(name="model_size", value=40000 * scale, unit="bytes", higher_is_better=False,
                            tags={"dtype": "total"}),
               MetricRecord(name="flops", value=100000 * scale, unit="FLOPs (2*MAC)", n=8, higher_is_better=False,
                            tags={"pass": "forward", "counted": "complete"})]
    for b, v in zip(bs.tolist(), p50):
        metrics.append(MetricRecord(name="latency", value=v, n=20, ci=(v * 0.95, v * 1.05), unit="s",
                                    higher_is_better=False,
                                    tags={"quantile": "p50", "variant": "base", "batch_size": b}))  # as the suite tags it
        metrics.append(MetricRecord(name="throughput", value=b / v, n=20, unit="samples/s", higher_is_better=True,
                                    tags={"variant": "base", "batch_size": b}))
    return SuiteResult(suite="efficiency", model=model, dataset="digits", status="ok", metrics=tuple(metrics),
                       artifacts=w.paths, seed=7, duration_s=2.0)


def _lm(run_dir: Path, model: str, seed: int) -> list[SuiteResult]:
    """A character LM: perplexity with its floor and greedy generations (metrics), and
    attention maps + rollout only (explain on a language model)."""
    rng = np.random.default_rng(seed)
    w = _Writer(run_dir, "metrics", model)
    docs_nll, docs_tok = rng.uniform(50, 80, 6), np.full(6, 40.0)
    w.npz("lm_documents", doc_id=np.arange(6), doc_nll=docs_nll, doc_tokens=docs_tok)
    hyps = ["the cat", "a dog <b>", "def f():"]
    w.json("generations", {"rows": [0, 2, 4], "prompt_len": 8, "gen_len": 8, "decoded_as": "text",
                           "prompts": ["once upo", "in the p", "import o"],
                           "references": ["n a time", "ark we ", "s\nimpo"],
                           "hypotheses": hyps, "rouge_l": [0.2, 0.1, 0.0], "bleu_signature": "demo"})
    ppl = float(np.exp(docs_nll.sum() / docs_tok.sum()))
    metrics = SuiteResult(suite="metrics", model=model, dataset="pydoc_text", status="ok", metrics=(
        MetricRecord(name="perplexity", value=ppl, ci=(ppl * 0.9, ppl * 1.1), n=240, unit="ppl", higher_is_better=False,
                     tags={"split": "test"}),
        MetricRecord(name="perplexity_floor", value=1.5, unit="ppl", higher_is_better=False,
                     tags={"split": "test", "source": "exact"}),
    ), artifacts=w.paths, seed=10)
    w = _Writer(run_dir, "explain", model)
    n, layers, heads, t = 3, 2, 2, 6
    att = np.tril(rng.random((n, layers, heads, t, t))).astype(np.float32)
    att /= att.sum(-1, keepdims=True)
    roll = np.tril(att.mean(2)[:, 0] @ att.mean(2)[:, 1]).astype(np.float32)
    x = rng.integers(0, len(TOKEN_VOCAB), (n, t))
    w.npz("examples", input=x, attention=att, rollout=roll)
    w.json("meta", {"modality": "lm", "task": "lm", "space": "embedding", "methods": ["attention", "rollout"],
                    "attributions": [], "tokens": [[TOKEN_VOCAB[i] for i in row] for row in x], "causal": True,
                    "n_examples": n, "note": "language model: attention maps and rollout only"})
    explain = SuiteResult(suite="explain", model=model, dataset="pydoc_text", status="ok", metrics=(
        MetricRecord(name="causality_violation", value=0.0, unit="probability", higher_is_better=False,
                     tags={"method": "attention", "statistic": "max"}),), artifacts=w.paths, seed=11)
    return [metrics, explain]


def demo_run(run_dir: Path, run_id: str, *, variant: int, n_examples: int, n_explained: int) -> RunRecord:
    """One run of four models (image classifier, token classifier, regressor, character
    LM) with every suite's artifacts; `variant` 1 flips a seeded tenth of the image and
    token predictions."""
    run_dir.mkdir(parents=True, exist_ok=True)
    flip = None if variant == 0 else 100 + variant
    img = classification_predictions(n_examples, len(IMAGE_CLASSES), seed=10, flip_seed=flip)
    tok = classification_predictions(max(n_examples // 2, n_explained), 2, seed=11, flip_seed=flip)
    results = [
        _metrics_result(_Writer(run_dir, "metrics", "img_cnn"), "img_cnn", "digits", img, IMAGE_CLASSES),
        _explain_image(_Writer(run_dir, "explain", "img_cnn"), "img_cnn", img, n_explained, seed=12),
        _robustness(_Writer(run_dir, "robustness", "img_cnn"), "img_cnn", img, 4, seed=13),
        _uncertainty(_Writer(run_dir, "uncertainty", "img_cnn"), "img_cnn", img, seed=14),
        _efficiency(_Writer(run_dir, "efficiency", "img_cnn"), "img_cnn", seed=15),
        _metrics_result(_Writer(run_dir, "metrics", "tok_tr"), "tok_tr", "synthetic_tokens", tok, ["neg", "pos"]),
        _explain_tokens(_Writer(run_dir, "explain", "tok_tr"), "tok_tr", tok, min(n_explained, 6), seed=16),
        _efficiency(_Writer(run_dir, "efficiency", "tok_tr"), "tok_tr", seed=17, scale=3.0),
        _regression_result(_Writer(run_dir, "metrics", "reg_mlp"), "reg_mlp", max(n_examples, 10), seed=18 + variant),
        SuiteResult(suite="explain", model="reg_mlp", dataset="synthetic_hetero_regression", status="skipped",
                    reason="demo: explain was not applicable", seed=8),
        SuiteResult(suite="robustness", model="reg_mlp", dataset="synthetic_hetero_regression", status="error",
                    reason=f"demo failure mentioning {EVIL}", seed=9),
        *_lm(run_dir, "char_gpt", seed=19),
    ]
    created = (dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.timezone.utc) + dt.timedelta(days=variant)).isoformat()
    prov = {"seed": 0, "device": "cpu", "device_info": {"type": "cpu", "name": "demo"}, "git_sha": "0123456789abcdef",
            "versions": {"python": "3.11", "torch": "2.13.0"}, "profile": "quick",
            "plan": {"run": {"name": "demo", "seed": 0}, "models": [
                {"name": "img_cnn", "arch": "cnn", "dataset": "digits"}],
                "gates": {"rules": ["accuracy{model=img_cnn,suite=metrics} >= 0.8",
                                    "accuracy{model=img_cnn,suite=metrics} max_drop 0.0 test=mcnemar"]}},
            "timings_s": {"total": 12.5}}
    return RunRecord(run_id=run_id, created_at=created, provenance=prov, results=tuple(results))


def write_run(store: Store, record: RunRecord, run_dir: Path, gate_status: str | None = None) -> None:
    """Record a finished run in the store and write results.json (+ gate.json) beside it."""
    store.begin_run(record.run_id, record.created_at, record.provenance, run_dir)
    for r in record.results:
        store.add_result(record.run_id, r)
    (run_dir / "results.json").write_text(json.dumps(record.to_dict(), default=str))
    if gate_status:
        rule = {"rule": "accuracy{model=img_cnn} >= 0.9", "status": gate_status, "observed": 0.9, "threshold": 0.9,
                "message": f"demo gate ({gate_status})"}
        (run_dir / "gate.json").write_text(json.dumps({"run_id": record.run_id, "status": gate_status,
                                                       "rules": [rule]}))
    store.finish_run(record.run_id, "complete", record.created_at, gate_status=gate_status)


def light_run(store: Store, root: Path, i: int) -> None:
    """A small metrics-only run (for a store with many runs): two models, accuracy + f1."""
    run_id = f"hist-{i:05d}"
    run_dir = root / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(i)
    created = (dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(hours=7 * i)).isoformat()
    store.begin_run(run_id, created, {"seed": i, "device": "cpu", "plan": {"run": {"name": ["nightly", "ci"][i % 2]}}},
                    run_dir)
    for model, dataset in (("digits_cnn", "digits"), (f"mlp_{i % 5}", "breast_cancer")):
        k = int(rng.integers(150, 200))
        store.add_result(run_id, SuiteResult(suite="metrics", model=model, dataset=dataset, status="ok", metrics=(
            MetricRecord(name="accuracy", value=k / 200, n=200, ci=wilson_ci(k, 200), unit="fraction",
                         higher_is_better=True, tags={"split": "test"}),)))
    store.finish_run(run_id, "complete", created, gate_status=["pass", "fail", None][i % 3])


def write_demo_store(root: str | Path, *, n_examples: int = 60, n_explained: int = 8,
                     extra_runs: int = 0) -> dict[str, Any]:
    """Write store.sqlite and run directories under `root`: runs "demo-a" (gate pass) and
    "demo-b" (gate fail, a tenth of the image predictions flipped), plus `extra_runs`
    light metrics-only runs. Returns {"store": path, "runs": {id: run_dir}}."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    store = Store(root / "store.sqlite")
    runs = {}
    for variant, (run_id, gate) in enumerate((("demo-a", "pass"), ("demo-b", "fail"))):
        run_dir = root / "runs" / run_id
        rec = demo_run(run_dir, run_id, variant=variant, n_examples=n_examples, n_explained=n_explained)
        write_run(store, rec, run_dir, gate)
        runs[run_id] = run_dir
    for i in range(extra_runs):
        light_run(store, root / "runs", i)
    return {"store": store.path, "runs": runs}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", help="directory for store.sqlite and the run directories")
    ap.add_argument("--examples", type=int, default=60, help="test examples per demo run")
    ap.add_argument("--explained", type=int, default=8, help="examples with stored attributions")
    ap.add_argument("--extra-runs", type=int, default=0, help="extra light runs (history)")
    a = ap.parse_args(argv)
    out = write_demo_store(a.root, n_examples=a.examples, n_explained=a.explained, extra_runs=a.extra_runs)
    print(f"WORKBENCH_STORE={out['store']}")


if __name__ == "__main__":
    main()
