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
        frac = {"unit": "fraction", "higher_is_better": True, "n": rep.n}
        out = [MetricRecord(name="accuracy", value=rep.accuracy, ci=rep.accuracy_ci, tags=self._tags(), **frac)]
        for metric in ("precision", "recall", "f1"):
            out.append(MetricRecord(name=f"{metric}_macro", value=rep.macro[metric], ci=rep.macro_ci[metric],
                                    tags=self._tags(), **frac))
        for metric in ("precision", "recall", "f1"):
            for c, cname in enumerate(names):
                # n is the class support for recall; the number predicted as c for precision.
                n_c = int(rep.confusion[:, c].sum()) if metric == "precision" else int(rep.confusion[c].sum())
                out.append(MetricRecord(
                    name=metric, value=float(rep.per_class[metric][c]), ci=tuple(rep.per_class_ci[metric][c]),
                    unit="fraction", higher_is_better=True, n=n_c, tags=self._tags(**{"class": cname}),
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
        out = [
            MetricRecord(name="mse", value=rep.mse, ci=rep.mse_ci, unit="target units²", higher_is_better=False,
                         n=rep.n, tags=self._tags(units="model")),
            MetricRecord(name="mae", value=rep.mae, ci=rep.mae_ci, unit="target units", higher_is_better=False,
                         n=rep.n, tags=self._tags(units="model")),
        ]
        if math.isnan(rep.r2):
            out.append(MetricRecord.unavailable("r2", "R² is undefined: the targets are constant",
                                                unit="dimensionless", higher_is_better=True, n=rep.n, tags=self._tags()))
        else:
            out.append(MetricRecord(name="r2", value=rep.r2, ci=rep.r2_ci, unit="dimensionless",
                                    higher_is_better=True, n=rep.n, tags=self._tags()))
        gt = data.ground_truth
        scale = gt.get("target_scale", gt.get("target_std"))
        if scale is not None and not (float(scale) == 1.0 and float(gt.get("target_mean", 0.0)) == 0.0):
            # y_original = y * target_scale + target_mean: errors scale, R² does not.
            s = abs(float(scale))
            out += [
                MetricRecord(name="mse", value=rep.mse * s * s, ci=tuple(v * s * s for v in rep.mse_ci),
                             unit="original units²", higher_is_better=False, n=rep.n,
                             tags=self._tags(units="original")),
                MetricRecord(name="mae", value=rep.mae * s, ci=tuple(v * s for v in rep.mae_ci),
                             unit="original units", higher_is_better=False, n=rep.n,
                             tags=self._tags(units="original")),
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

        def ratio_ci(num: "np.ndarray", den: "np.ndarray", **kw: Any) -> tuple[float, float] | None:
            # Documents are the resampling unit; one document gives no interval.
            return bootstrap_ratio_ci(num, den, **kw, **boot) if num.size > 1 else None

        arrays: dict[str, Any] = {"doc_id": doc_ids, "doc_nll": doc_nll, "doc_tokens": doc_tok}

        out = [
            MetricRecord(name="perplexity", value=MF.perplexity(total_nll, total_tok),
                         ci=ratio_ci(doc_nll, doc_tok, transform=np.exp),
                         unit="ppl", higher_is_better=False, n=int(total_tok), tags=tags),
            MetricRecord(name="nll", value=total_nll / total_tok, ci=ratio_ci(doc_nll, doc_tok),
                         unit="nats/token", higher_is_better=False, n=int(total_tok), tags=tags),
        ]

        row_bytes, why_no_bytes = self._row_bytes(data, y)
        if row_bytes is None:
            out.append(MetricRecord.unavailable("bits_per_byte", why_no_bytes, unit="bits/byte",
                                                higher_is_better=False, tags=tags))
        else:
            doc_bytes, _ = MF.group_sums(row_bytes, groups)
            arrays["doc_bytes"] = doc_bytes
            out.append(MetricRecord(
                name="bits_per_byte", value=MF.bits_per_byte(total_nll, float(doc_bytes.sum())),
                ci=ratio_ci(doc_nll / math.log(2), doc_bytes),
                unit="bits/byte", higher_is_better=False, n=int(doc_bytes.sum()), tags=tags,
            ))

        vocab = data.vocab
        if MF.is_text_vocab(vocab):
            doc_words = self._doc_words(y, groups, doc_ids, vocab)
            arrays["doc_words"] = doc_words
            if doc_words.sum() > 0:
                out.append(MetricRecord(
                    name="word_perplexity", value=MF.word_perplexity(total_nll, float(doc_words.sum())),
                    ci=ratio_ci(doc_nll, doc_words, transform=np.exp),
                    unit="ppl", higher_is_better=False, n=int(doc_words.sum()), tags=tags,
                ))
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
        from workbench.stats import bootstrap_mean_ci
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

        b = MF.bleu(hyps, refs, **self._boot(ctx))
        rl = MF.rouge_l(hyps, refs)
        ctx.save_artifact("generations", {
            "rows": rows.tolist(), "prompt_len": prompt_len, "gen_len": gen_len,
            "decoded_as": "token_ids" if vocab is None else ("text" if MF.is_text_vocab(vocab) else "tokens"),
            "prompts": prompt_texts, "references": refs, "hypotheses": hyps,
            "rouge_l": rl.tolist(), "bleu_signature": b.signature,
        })
        return [
            MetricRecord(name="bleu", value=b.score, ci=b.ci, unit="bleu", higher_is_better=True, n=b.n,
                         tags={**tags, "signature": b.signature}),
            MetricRecord(name="rouge_l", value=float(rl.mean()), ci=bootstrap_mean_ci(rl, **self._boot(ctx)),
                         unit="fraction", higher_is_better=True, n=int(rl.size), tags=tags),
        ]

    # --------------------------------------------------------------- figures

    @classmethod
    def figures(cls, result: dict[str, Any], run_dir: Path) -> list[tuple[str, Any]]:
        from workbench.suites.metrics.figures import metrics_figures

        return metrics_figures(result, Path(run_dir))
