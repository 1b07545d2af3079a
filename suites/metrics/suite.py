"""The metrics suite: task metrics with seeded bootstrap CIs (see README.md, the suite card).

classification: accuracy, precision/recall/F1 (macro and per class), confusion matrix
regression:     MSE, MAE, R² (+ MSE/MAE in original units when the dataset says how)
lm:             perplexity, NLL, bits per byte, word perplexity (text), the exact
                perplexity floor of synthetic data, BLEU and ROUGE-L of greedy continuations
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from workbench.errors import ConfigError, DataError, ModelError, check_positive_int, check_probability, did_you_mean
from workbench.records import MetricRecord, SuiteResult
from workbench.suite import ModelHandle, RunContext, Suite

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from workbench.data.base import Dataset, Split

_SPLITS = ("train", "val", "test")


def _record(name: str, value: float | None, ci: Any, *, method: str, tags: dict[str, Any],
            ci_reason: str | None = None, **kw: Any) -> MetricRecord:
    """A metric with its interval method in the `ci_method` tag; a value whose interval is
    missing (None or non-finite) carries the reason in `reason` (default: the degenerate
    bootstrap), so no reader mistakes the absent interval for certainty."""
    from workbench.stats import DEGENERATE_BOOTSTRAP, ci_is_missing

    if ci is not None:
        ci = (float(ci[0]), float(ci[1]))
    reason = None
    if value is not None and math.isfinite(float(value)) and ci_is_missing(ci):
        ci, reason = None, ci_reason or DEGENERATE_BOOTSTRAP
    return MetricRecord(name=name, value=value, ci=ci, reason=reason, tags={**tags, "ci_method": method}, **kw)


class MetricsSuite(Suite):
    """Task metrics on a held-out split, every one with `n` and a seeded 95% bootstrap CI."""

    name: ClassVar[str] = "metrics"
    description: ClassVar[str] = (
        "Accuracy, precision/recall/F1 and confusion matrix; MSE/MAE/R²; perplexity, bits per byte, "
        "word perplexity, BLEU (sacrebleu) and ROUGE-L (rouge-score), with seeded bootstrap CIs."
    )
    tasks: ClassVar[frozenset[str]] = frozenset({"classification", "regression", "lm"})

    @dataclass(frozen=True, kw_only=True)
    class Params:
        """n_boot: bootstrap resamples per CI. ci_level: CI coverage. split: evaluated split.
        max_examples: cap on evaluated rows (None = all). n_prompts: LM windows continued
        for BLEU/ROUGE-L (0 = skip generation). prompt_len / gen_len: tokens of prompt and
        continuation (None = first half of the window / the rest of it)."""

        n_boot: int = 1000
        ci_level: float = 0.95
        split: str = "test"
        max_examples: int | None = None
        n_prompts: int = 16
        prompt_len: int | None = None
        gen_len: int | None = None

        def __post_init__(self) -> None:
            check_positive_int("n_boot", self.n_boot)
            check_probability("ci_level", self.ci_level, open_low=True, open_high=True)
            if self.split not in _SPLITS:
                raise ConfigError(
                    f"Expected `split` in {_SPLITS}, got {self.split!r}.{did_you_mean(str(self.split), _SPLITS)}"
                )
            if self.max_examples is not None:
                check_positive_int("max_examples", self.max_examples)
            check_positive_int("n_prompts", self.n_prompts, allow_zero=True)
            for key in ("prompt_len", "gen_len"):
                if getattr(self, key) is not None:
                    check_positive_int(key, getattr(self, key))

    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {"n_boot": 500, "n_prompts": 8},
        "full": {"n_boot": 2000, "n_prompts": 64},
    }

    # ------------------------------------------------------------------ run

    def applicable(self, model: ModelHandle, data: "Dataset") -> str | None:
        reason = super().applicable(model, data)
        if reason:
            return reason
        if data.task == "classification" and not data.num_classes:
            return "classification dataset has no `num_classes`"
        if len(data.split(self.params.split)) == 0:
            return f"split {self.params.split!r} is empty"
        return None

    def run(self, model: ModelHandle, data: "Dataset", ctx: RunContext) -> SuiteResult:
        reason = self.applicable(model, data)
        if reason:
            return ctx.skip(reason)
        split = data.split(self.params.split)
        n = ctx.limit(len(split), self.params.max_examples)
        split = split.subset(slice(0, n))
        if data.task == "classification":
            metrics = self._classification(model, data, split, ctx)
        elif data.task == "regression":
            metrics = self._regression(model, data, split, ctx)
        else:
            metrics = self._lm(model, data, split, ctx)
        return ctx.result(metrics, config=self.config())

    def _tags(self, **extra: Any) -> dict[str, Any]:
        tags: dict[str, Any] = {"split": self.params.split}
        if self.params.ci_level != 0.95:
            tags["ci_level"] = self.params.ci_level
        tags.update(extra)
        return tags

    def _boot(self, ctx: RunContext) -> dict[str, Any]:
        return {"n_boot": self.params.n_boot, "level": self.params.ci_level, "seed": int(ctx.seed)}

    def _outputs(self, module: "nn.Module", x: "torch.Tensor", ctx: RunContext) -> "torch.Tensor":
        from workbench.torch_utils import frozen_eval, predict

        with frozen_eval(module):
            return predict(module, x, batch_size=ctx.batch_size, device=ctx.device)

    def _classification(self, model: ModelHandle, data: "Dataset", split: "Split", ctx: RunContext) -> list[MetricRecord]:
        import numpy as np
        import torch

        from workbench.suites.metrics import functional as MF

        k = int(data.num_classes)
        logits = self._outputs(model.module, split.x, ctx)
        if logits.ndim != 2 or logits.shape[1] != k:
            raise ModelError(
                f"Expected classification logits of shape (N, {k}) for {k} classes, got {tuple(logits.shape)}."
            )
        probs = torch.softmax(logits.double(), dim=1)
        y_pred = logits.argmax(dim=1).numpy()
        y_true = split.y.long().numpy()
        rep = MF.classification_report(y_pred, y_true, k, **self._boot(ctx))
        names = list(data.class_names) if data.class_names else [str(i) for i in range(k)]
        if len(names) != k:
            raise DataError(f"Expected {k} class names, got {len(names)}: {names}.")

        ctx.save_artifact("confusion_matrix", {"matrix": rep.confusion, "class_names": np.array(names, dtype=str)})
        ctx.save_artifact(
            "predictions",
            {"y_true": y_true, "y_pred": y_pred, "probs": probs.float().numpy(), "index": np.arange(rep.n)},
        )
        methods = MF.CI_METHODS
        frac = {"unit": "fraction", "higher_is_better": True, "n": rep.n}
        out = [_record("accuracy", rep.accuracy, rep.accuracy_ci, method=methods["accuracy"], tags=self._tags(),
                       **frac)]
        for metric in ("precision", "recall", "f1"):
            out.append(_record(f"{metric}_macro", rep.macro[metric], rep.macro_ci[metric],
                               method=methods[f"{metric}_macro"], tags=self._tags(), **frac))
        for metric in ("precision", "recall", "f1"):
            for c, cname in enumerate(names):
                # n is the class support for recall; the number predicted as c for precision.
                n_c = int(rep.confusion[:, c].sum()) if metric == "precision" else int(rep.confusion[c].sum())
                why = None
                if n_c == 0:
                    why = ("no confidence interval: no example was " +
                           ("predicted as" if metric == "precision" else "labelled") + " this class (n = 0)")
                out.append(_record(
                    metric, float(rep.per_class[metric][c]), rep.per_class_ci[metric][c], method=methods[metric],
                    ci_reason=why, unit="fraction", higher_is_better=True, n=n_c,
                    tags=self._tags(**{"class": cname}),
                ))
        return out

    def _regression(self, model: ModelHandle, data: "Dataset", split: "Split", ctx: RunContext) -> list[MetricRecord]:
        from workbench.suites.metrics import functional as MF

        kind = model.output or getattr(model.module, "output_kind", "mean")
        out_t = self._outputs(model.module, split.x, ctx)
        arrays: dict[str, Any] = {}
        if kind == "mean_logvar":
            if out_t.ndim != 2 or out_t.shape[1] != 2:
                raise ModelError(f"Expected 'mean_logvar' output of shape (N, 2), got {tuple(out_t.shape)}.")
            mean = out_t[:, 0]
            arrays["pred_var"] = out_t[:, 1].double().exp().numpy()
        else:
            if not (out_t.ndim == 1 or (out_t.ndim == 2 and out_t.shape[1] == 1)):
                raise ModelError(f"Expected regression output of shape (N,) or (N, 1), got {tuple(out_t.shape)}.")
            mean = out_t.reshape(-1)
        y_pred = mean.double().numpy()
        y_true = split.y.double().reshape(-1).numpy()
        ctx.save_artifact("predictions", {"y_true": y_true, "y_pred": y_pred, **arrays})

        rep = MF.regression_report(y_pred, y_true, **self._boot(ctx))
        boot = MF.CI_METHODS["mse"]
        out = [
            _record("mse", rep.mse, rep.mse_ci, method=boot, unit="target units²", higher_is_better=False,
                    n=rep.n, tags=self._tags(units="model")),
            _record("mae", rep.mae, rep.mae_ci, method=boot, unit="target units", higher_is_better=False,
                    n=rep.n, tags=self._tags(units="model")),
        ]
        if math.isnan(rep.r2):
            out.append(MetricRecord.unavailable("r2", "R² is undefined: the targets are constant",
                                                unit="dimensionless", higher_is_better=True, n=rep.n, tags=self._tags()))
        else:
            out.append(_record("r2", rep.r2, rep.r2_ci, method=boot, unit="dimensionless",
                               higher_is_better=True, n=rep.n, tags=self._tags()))
        gt = data.ground_truth
        scale = gt.get("target_scale", gt.get("target_std"))
        if scale is not None and not (float(scale) == 1.0 and float(gt.get("target_mean", 0.0)) == 0.0):
            # y_original = y * target_scale + target_mean: errors scale, R² does not.
            s = abs(float(scale))
            out += [
                _record("mse", rep.mse * s * s, tuple(v * s * s for v in rep.mse_ci), method=boot,
                        unit="original units²", higher_is_better=False, n=rep.n, tags=self._tags(units="original")),
                _record("mae", rep.mae * s, tuple(v * s for v in rep.mae_ci), method=boot,
                        unit="original units", higher_is_better=False, n=rep.n, tags=self._tags(units="original")),
            ]
        return out

    # ------------------------------------------------------------------- LM

    def _lm(self, model: ModelHandle, data: "Dataset", split: "Split", ctx: RunContext) -> list[MetricRecord]:
        import numpy as np
        import torch

        from workbench.suites.metrics import functional as MF
        from workbench.stats import bootstrap_ratio_ci
        from workbench.torch_utils import frozen_eval, predict

        module = model.module
        x, y = split.x, split.y.long()
        if y.shape != x.shape:
            raise DataError(f"Expected LM targets y of shape {tuple(x.shape)} (next tokens), got {tuple(y.shape)}.")
        # Row by row NLL without materialising (N, T, V) logits for the whole split.
        nll_rows, tok_rows = [], []
        with frozen_eval(module):
            for i in range(0, x.shape[0], ctx.batch_size):
                xb, yb = x[i : i + ctx.batch_size], y[i : i + ctx.batch_size]
                logits = predict(module, xb, batch_size=xb.shape[0], device=ctx.device)
                nll = MF.token_nll(logits, yb)
                nll_rows.append(nll.double().sum(dim=1))
                tok_rows.append((yb != -100).sum(dim=1))
        row_nll = torch.cat(nll_rows).numpy()
        row_tok = torch.cat(tok_rows).double().numpy()
        doc_id = split.meta.get("doc_id")
        groups = None if doc_id is None else doc_id.reshape(-1).cpu().numpy()
        doc_nll, doc_ids = MF.group_sums(row_nll, groups)
        doc_tok, _ = MF.group_sums(row_tok, groups)
        total_nll, total_tok = float(doc_nll.sum()), float(doc_tok.sum())
        boot = self._boot(ctx)
        tags = self._tags()

        boot_method = MF.CI_METHODS["perplexity"]
        one_doc = ("no confidence interval: one document is one resampling unit" if doc_nll.size < 2 else None)

        def ratio_ci(num: "np.ndarray", den: "np.ndarray", **kw: Any) -> tuple[float, float] | None:
            # Documents are the resampling unit; one document gives no interval.
            return bootstrap_ratio_ci(num, den, **kw, **boot) if num.size > 1 else None

        def rec(name: str, value: float, ci: Any, **kw: Any) -> MetricRecord:
            return _record(name, value, ci, method=boot_method, ci_reason=one_doc, tags=tags, **kw)

        arrays: dict[str, Any] = {"doc_id": doc_ids, "doc_nll": doc_nll, "doc_tokens": doc_tok}

        out = [
            rec("perplexity", MF.perplexity(total_nll, total_tok), ratio_ci(doc_nll, doc_tok, transform=np.exp),
                unit="ppl", higher_is_better=False, n=int(total_tok)),
            rec("nll", total_nll / total_tok, ratio_ci(doc_nll, doc_tok),
                unit="nats/token", higher_is_better=False, n=int(total_tok)),
        ]

        row_bytes, why_no_bytes = self._row_bytes(data, y)
        if row_bytes is None:
            out.append(MetricRecord.unavailable("bits_per_byte", why_no_bytes, unit="bits/byte",
                                                higher_is_better=False, tags=tags))
        else:
            doc_bytes, _ = MF.group_sums(row_bytes, groups)
            arrays["doc_bytes"] = doc_bytes
            out.append(rec("bits_per_byte", MF.bits_per_byte(total_nll, float(doc_bytes.sum())),
                           ratio_ci(doc_nll / math.log(2), doc_bytes),
                           unit="bits/byte", higher_is_better=False, n=int(doc_bytes.sum())))

        vocab = data.vocab
        if MF.is_text_vocab(vocab):
            doc_words = self._doc_words(y, groups, doc_ids, vocab)
            arrays["doc_words"] = doc_words
            if doc_words.sum() > 0:
                out.append(rec("word_perplexity", MF.word_perplexity(total_nll, float(doc_words.sum())),
                               ratio_ci(doc_nll, doc_words, transform=np.exp),
                               unit="ppl", higher_is_better=False, n=int(doc_words.sum())))
            else:
                out.append(MetricRecord.unavailable("word_perplexity", "the evaluated text has no words",
                                                    unit="ppl", higher_is_better=False, tags=tags))

        floor = data.ground_truth.get("perplexity_floor")
        if floor is not None:
            out.append(MetricRecord(name="perplexity_floor", value=float(floor), unit="ppl",
                                    higher_is_better=False, tags={**tags, "source": "exact"}))
        ctx.save_artifact("lm_documents", arrays)
        out += self._generation(model, data, split, ctx)
        return out

    @staticmethod
    def _row_bytes(data: "Dataset", y: "torch.Tensor") -> tuple["np.ndarray | None", str]:
        """UTF-8 bytes of each row's target text, from ground_truth["bytes_per_token"]
        (a scalar or one value per token id) or else from the decoded vocab."""
        import numpy as np

        from workbench.suites.metrics import functional as MF

        mask = (y != -100).numpy()
        ids = y.clamp_min(0).numpy()
        bpt = data.ground_truth.get("bytes_per_token")
        if bpt is not None:
            arr = np.asarray(bpt, dtype=np.float64)
            if arr.ndim == 0:
                return mask.sum(axis=1) * float(arr), ""
            per_id = arr.ravel()
        elif data.vocab is not None:
            per_id = MF.token_bytes(data.vocab).astype(np.float64)
        else:
            return None, "the dataset gives neither ground_truth['bytes_per_token'] nor a vocab to decode bytes"
        if ids.size and ids.max() >= per_id.size:
            raise DataError(f"Expected bytes for {int(ids.max()) + 1} token ids, got {per_id.size}.")
        return (per_id[ids] * mask).sum(axis=1), ""

    @staticmethod
    def _doc_words(y: "torch.Tensor", groups: "np.ndarray | None", doc_ids: "np.ndarray", vocab) -> "np.ndarray":
        """Whitespace-separated words of each document's target text (rows concatenated in order)."""
        import numpy as np

        from workbench.suites.metrics import functional as MF

        texts = [MF.decode(row[row != -100], vocab) for row in y]
        if groups is None:
            return np.array([MF.count_words(t) for t in texts], dtype=np.float64)
        pos = {d: i for i, d in enumerate(doc_ids.tolist())}
        joined = [[] for _ in doc_ids]
        for g, t in zip(groups.tolist(), texts):
            joined[pos[g]].append(t)
        return np.array([MF.count_words("".join(parts)) for parts in joined], dtype=np.float64)

    def _generation(self, model: ModelHandle, data: "Dataset", split: "Split", ctx: RunContext) -> list[MetricRecord]:
        import numpy as np
        import torch

        from workbench.suites.metrics import functional as MF
        from workbench.stats import PROPORTION_METHOD, bootstrap_mean_ci, proportion_ci
        from workbench.torch_utils import frozen_eval

        tags = self._tags()
        module = model.module
        p = self.params

        def skipped(reason: str) -> list[MetricRecord]:
            return [
                MetricRecord.unavailable("bleu", reason, unit="bleu", higher_is_better=True, tags=tags),
                MetricRecord.unavailable("rouge_l", reason, unit="fraction", higher_is_better=True, tags=tags),
            ]

        if p.n_prompts == 0:
            return skipped("generation disabled (n_prompts = 0)")
        if not callable(getattr(module, "generate", None)):
            return skipped(f"the model ({type(module).__name__}) has no generate() method")
        # A window x (T,) plus its last next-token y[-1] is a true text of T + 1 tokens.
        seq = torch.cat([split.x, split.y[:, -1:]], dim=1).long()
        length = seq.shape[1]
        prompt_len = p.prompt_len if p.prompt_len is not None else split.x.shape[1] // 2
        gen_len = p.gen_len if p.gen_len is not None else length - prompt_len
        if prompt_len + gen_len > length:
            raise ConfigError(
                f"Expected prompt_len + gen_len <= {length} (window + 1 token), got {prompt_len} + {gen_len}."
            )
        if prompt_len < 1 or gen_len < 1:
            return skipped(f"windows of {length} tokens leave no room for a prompt and a continuation")
        n = min(p.n_prompts, seq.shape[0])
        rows = np.sort(ctx.rng(offset=1).choice(seq.shape[0], size=n, replace=False))
        prompts = seq[rows, :prompt_len]
        refs_ids = seq[rows, prompt_len : prompt_len + gen_len]
        try:
            with frozen_eval(module), torch.no_grad():
                gen = module.generate(prompts.to(ctx.device), gen_len, temperature=0.0)
        except Exception as exc:  # the model's own generate() failing is recorded, not hidden
            return skipped(f"generate() failed: {type(exc).__name__}: {exc}")
        gen = gen.detach().cpu()[:, prompt_len : prompt_len + gen_len]
        vocab = data.vocab
        hyps = [MF.decode(r, vocab) for r in gen]
        refs = [MF.decode(r, vocab) for r in refs_ids]
        prompt_texts = [MF.decode(r, vocab) for r in prompts]

        settings = {"decoding": "greedy", "temperature": 0.0, "prompt_len": prompt_len, "gen_len": gen_len,
                    "n_prompts": int(n)}
        shown = f"greedy decoding (temperature 0), {n} prompts of {prompt_len} tokens, {gen_len} new tokens"
        kinds = [MF.degenerate_kind(ids, h) for ids, h in zip(gen, hyps)]
        degenerate = MF.degenerate_generation_reason(kinds, shown)
        b = MF.bleu(hyps, refs, **self._boot(ctx))
        rl = MF.rouge_l(hyps, refs)
        ctx.save_artifact("generations", {
            "rows": rows.tolist(), "prompt_len": prompt_len, "gen_len": gen_len,
            "decoded_as": "token_ids" if vocab is None else ("text" if MF.is_text_vocab(vocab) else "tokens"),
            "prompts": prompt_texts, "references": refs, "hypotheses": hyps,
            "rouge_l": rl.tolist(), "bleu_signature": b.signature, "settings": settings,
            "degenerate": [k or "" for k in kinds],
        })
        gtags = {**tags, **settings}
        n_bad = sum(k is not None for k in kinds)
        rate_ci = proportion_ci(n_bad, n, p.ci_level)
        out = [_record("degenerate_generation_rate", n_bad / n, rate_ci, method=PROPORTION_METHOD, unit="fraction",
                       higher_is_better=False, n=n, tags=gtags)]
        if degenerate:
            return out + [
                MetricRecord.unavailable("bleu", degenerate, unit="bleu", higher_is_better=True, n=b.n,
                                         tags={**gtags, "signature": b.signature}),
                MetricRecord.unavailable("rouge_l", degenerate, unit="fraction", higher_is_better=True,
                                         n=int(rl.size), tags=gtags),
            ]
        return out + [
            _record("bleu", b.score, b.ci, method=MF.CI_METHODS["bleu"], unit="bleu", higher_is_better=True,
                    n=b.n, tags={**gtags, "signature": b.signature}),
            _record("rouge_l", float(rl.mean()), bootstrap_mean_ci(rl, **self._boot(ctx)),
                    method=MF.CI_METHODS["rouge_l"], unit="fraction", higher_is_better=True, n=int(rl.size),
                    tags=gtags),
        ]

    # ------------------------------------------------------ hooks for the core

    headline_metrics: ClassVar[tuple[str, ...]] = (
        "accuracy", "f1_macro", "mse", "mae", "r2", "perplexity", "bits_per_byte", "bleu", "rouge_l")

    @classmethod
    def is_headline(cls, metric: dict[str, Any]) -> bool:
        # errors in the model's own units (the original-units copies stay in the full table)
        return super().is_headline(metric) and (metric.get("tags") or {}).get("units", "model") == "model"

    @classmethod
    def per_example(cls, result: dict[str, Any], run_dir: Path) -> dict[str, "np.ndarray"]:
        from workbench.suites.metrics.hooks import per_example

        return per_example(result, run_dir)

    def shards(self, model: ModelHandle, data: "Dataset", ctx: RunContext, n_shards: int) -> list[slice] | None:
        from workbench.suites.metrics import hooks

        return hooks.shards(self, model, data, ctx, n_shards)

    def run_shard(self, model: ModelHandle, data: "Dataset", ctx: RunContext, rows: slice) -> dict[str, Any]:
        from workbench.suites.metrics import hooks

        return hooks.run_shard(self, model, data, ctx, rows)

    def combine(self, model: ModelHandle, data: "Dataset", ctx: RunContext, parts: Any) -> SuiteResult:
        from workbench.suites.metrics import hooks

        return hooks.combine(self, model, data, ctx, parts)

    # --------------------------------------------------------------- figures

    def cost(self, model: ModelHandle, data: "Dataset", ctx: RunContext) -> list:
        from workbench.suites.metrics.cost import metrics_cost

        return metrics_cost(self.params, model, data, ctx)

    @classmethod
    def figures(cls, result: dict[str, Any], run_dir: Path) -> list[tuple[str, Any]]:
        from workbench.suites.metrics.figures import metrics_figures

        return metrics_figures(result, Path(run_dir))
