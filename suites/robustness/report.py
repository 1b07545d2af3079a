"""How the robustness suite turns attack outcomes into records and artifacts: Wilson
fractions, robust-accuracy curves, per-attack metrics, the saved adversarial examples, and
the token-substitution (HotFlip) metrics and artifact. Pure functions of tensors."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from workbench.records import MetricRecord


def wilson(successes: int, n: int) -> tuple[float, float] | None:
    # the one proportion interval of workbench.stats (Clopper-Pearson; named in `ci_method`)
    from workbench.stats import proportion_ci

    return proportion_ci(successes, n) if n > 0 else None


def fraction(name: str, correct: torch.Tensor, tags: dict[str, Any], *, higher: bool = True,
              empty_reason: str = "no examples") -> MetricRecord:
    n = int(correct.numel())
    if n == 0:
        return MetricRecord.unavailable(name, empty_reason, higher_is_better=higher, unit="fraction", n=0, tags=tags)
    k = int(correct.sum())
    from workbench.stats import PROPORTION_METHOD

    return MetricRecord(name=name, value=k / n, higher_is_better=higher, unit="fraction", n=n,
                        ci=wilson(k, n), tags={**tags, "ci_method": PROPORTION_METHOD})



def attack_tags(attack: str, p: Any) -> dict[str, Any]:
    if attack == "fgsm":
        return {"steps": 1, "restarts": 1}
    if attack == "pgd":
        return {"steps": p.pgd_steps, "restarts": p.restarts}
    if attack in ("apgd_ce", "apgd_dlr"):
        return {"steps": p.apgd_steps, "restarts": p.restarts}
    if attack == "apgd_t":
        return {"steps": p.apgd_steps, "restarts": p.restarts, "targets": p.apgd_targets}
    return {"steps": p.random_search_queries, "restarts": 1}



def append_curve(curves: dict[str, dict[str, list[float]]], attack: str, eps: float, correct: torch.Tensor) -> None:
    n, k = int(correct.numel()), int(correct.sum())
    lo, hi = wilson(k, n) or (float("nan"), float("nan"))
    c = curves.setdefault(attack, {"eps": [], "accuracy": [], "ci_low": [], "ci_high": []})
    c["eps"].append(eps)
    c["accuracy"].append(k / n if n else float("nan"))
    c["ci_low"].append(lo)
    c["ci_high"].append(hi)


def attack_metrics(correct: torch.Tensor, clean: torch.Tensor, delta: torch.Tensor | None, y: torch.Tensor,
                    tags: dict[str, Any], class_names: list[str], norm: str, scale: float,
                    norm_unit: str) -> list[MetricRecord]:
    from workbench.suites.robustness import functional as A
    from workbench.stats import bootstrap_mean_ci

    out = [fraction("robust_accuracy", correct, tags)]
    fooled = clean & ~correct
    out.append(fraction("attack_success_rate", fooled[clean], tags, higher=False,
                         empty_reason="no correctly classified clean example to attack"))
    if delta is not None:
        norms = (A.perturbation_norm(delta, norm).cpu() / scale)[fooled].double().numpy()
        if norms.size == 0:
            out.append(MetricRecord.unavailable("mean_perturbation_norm", "the attack fooled no example",
                                                higher_is_better=True, unit=norm_unit, n=0, tags=tags))
        else:
            out.append(MetricRecord(name="mean_perturbation_norm", value=float(norms.mean()), higher_is_better=True,
                                    unit=norm_unit, n=int(norms.size), ci=bootstrap_mean_ci(norms, seed=0), tags=tags))
    for c, cname in enumerate(class_names):
        sel = y == c
        out.append(fraction("per_class_robust_accuracy", correct[sel], {**tags, "class": cname},
                             empty_reason=f"no test example of class {cname!r} in the sample"))
    return out


def adversarial_examples(model: Any, xin: torch.Tensor, y: torch.Tensor, clean: torch.Tensor, worst: torch.Tensor,
              first_fool: torch.Tensor, advs: dict[str, torch.Tensor], p: Any, data: Any, x_raw: torch.Tensor,
              scale: float, bs: int) -> dict[str, np.ndarray]:
    """A few adversarial examples at the masking eps: those the attacks fooled first, then others."""
    from workbench.suites.robustness import functional as A

    fooled = (clean & ~worst).nonzero().squeeze(1).tolist()
    fooled_set = set(fooled)
    rest = [i for i in range(len(y)) if i not in fooled_set]
    sel = torch.tensor((fooled + rest)[: p.n_examples], dtype=torch.long)
    names = list(p.attacks)
    chosen = []
    for i in sel.tolist():
        j = int(first_fool[i])
        chosen.append(advs[names[j]][i] if j >= 0 else advs[names[-1]][i])
    dev = xin.device
    adv = torch.stack(chosen).to(dev)
    cl = xin[sel.to(dev)]
    m = A.restrict(model, sel.to(dev))
    probs_clean = torch.softmax(A.predict_logits(m, cl, batch_size=bs).float(), dim=1).cpu()
    probs_adv = torch.softmax(A.predict_logits(m, adv, batch_size=bs).float(), dim=1).cpu()
    out: dict[str, np.ndarray] = {
        "label": y[sel.to(dev)].cpu().numpy(),
        "pred_clean": probs_clean.argmax(1).numpy(),
        "pred_adversarial": probs_adv.argmax(1).numpy(),
        "probs_clean": probs_clean.numpy(),
        "probs_adversarial": probs_adv.numpy(),
        "attack_index": first_fool[sel].numpy(),
    }
    if data.modality == "tokens":
        delta = (adv - cl).float()
        out["tokens"] = x_raw[sel.to(dev)].cpu().numpy()
        out["position_perturbation"] = (delta.norm(dim=-1) / scale).cpu().numpy()  # (k, T) relative L2 per position
    else:
        out["clean"] = cl.float().cpu().numpy()
        out["adversarial"] = adv.float().cpu().numpy()
        out["perturbation"] = (adv - cl).float().cpu().numpy()
    return out




def token_substitution_records(res: Any, substitutions: tuple[int, ...], tags: dict[str, Any]) -> list[MetricRecord]:
    """From a `hotflip.HotFlipResult` on n attacked sequences: per k in `substitutions`,
    `token_flip_rate` = fraction of the correctly classified sequences that a real forward
    misclassifies after at most k substitutions (n = those correct), and
    `token_robust_accuracy` = fraction of all n still correct after the search at k."""
    flips = res.flips_at.cpu()
    clean = flips != 0
    out: list[MetricRecord] = []
    for k in substitutions:
        flipped = res.flipped_within(k).cpu()
        ktags = {**tags, "substitutions": k}
        out.append(fraction("token_flip_rate", flipped[clean], ktags, higher=False,
                            empty_reason="no correctly classified sequence to attack"))
        out.append(fraction("token_robust_accuracy", clean & ~flipped, ktags))
    return out


def token_substitution_examples(res: Any, ids: torch.Tensor, y: torch.Tensor, clean_logits: torch.Tensor,
                                n_examples: int, vocab: tuple[str, ...] | None) -> dict[str, np.ndarray]:
    """The artifact `token_substitutions.npz`: up to `n_examples` sequences, those the search
    flipped first (fewest substitutions first), then the others. Arrays (k = examples, T = length):
    tokens, substituted (k, T) ids; changed (k, T) bool; substitutions_to_flip (k,) (-1: not
    within the budget); label, pred_clean, pred_substituted (k,); probs_clean,
    probs_substituted (k, K); with a vocabulary also token_text, substituted_text (k, T) str."""
    flips = res.flips_at.cpu()
    order = sorted(range(len(flips)), key=lambda i: (flips[i] < 1, int(flips[i]), i))
    sel = torch.tensor(order[:n_examples], dtype=torch.long)
    tok, sub = ids.cpu()[sel], res.substituted.cpu()[sel]
    out: dict[str, np.ndarray] = {
        "tokens": tok.numpy(), "substituted": sub.numpy(), "changed": (tok != sub).numpy(),
        "substitutions_to_flip": flips[sel].numpy(), "label": y.cpu()[sel].numpy(),
        "pred_clean": clean_logits.cpu()[sel].argmax(1).numpy(), "pred_substituted": res.logits.cpu()[sel].argmax(1).numpy(),
        "probs_clean": torch.softmax(clean_logits.cpu()[sel].float(), 1).numpy(),
        "probs_substituted": torch.softmax(res.logits.cpu()[sel].float(), 1).numpy(),
    }
    if vocab:
        text = np.asarray(list(vocab) + ["?"], dtype=str)
        clip = lambda t: t.clamp(0, len(vocab)).numpy()  # noqa: E731  (ids past the vocabulary show as "?")
        out["token_text"], out["substituted_text"] = text[clip(tok)], text[clip(sub)]
    return out
