"""The explain suite's artifacts: what the report, the dashboard and external tools read
(the keys are listed in README.md, "Artifacts")."""

from __future__ import annotations

from typing import Any

from workbench.suite import RunContext

from .checks import Quality, replacement_kinds
from .config import PAD_NOTE, ExplainParams
from .methods import players_desc
from .setup import MethodOutput, Setup


def save_artifacts(outputs: dict[str, MethodOutput], q: Quality, s: Setup, skipped: dict[str, str],
                   timings: dict[str, float], ctx: RunContext, p: ExplainParams) -> None:
    """examples.npz, curves.npz, quality.json and meta.json (keys in README.md)."""
    import numpy as np
    import torch

    from .gradients import per_unit

    view = s.model_view(s.module)
    with torch.no_grad():
        raw = view.em_prob(view.z) if s.classification else view.em(view.z)
    arrays: dict[str, Any] = {"input": s.x.cpu().numpy(), "label": s.data.test.y[: s.n].cpu().numpy(),
                              "explained_value": view.explained(view.z, s.target).numpy()}
    if s.classification:
        arrays["prediction"] = s.target.numpy()
        arrays["probability"] = raw.gather(1, s.target.to(raw.device)[:, None])[:, 0].double().cpu().numpy()
    else:
        arrays["prediction"] = raw.double().cpu().numpy()
    methods = list(outputs)
    for m in methods:
        o = outputs[m]
        u = per_unit(o.attr, s.space, s.modality).float().numpy()
        if s.modality == "image":
            u = u.reshape(s.n, *s.x.shape[2:])
        arrays[f"attr_{m}"] = u
    if s.segments is not None:
        arrays["segments"] = s.segments
    roll = outputs.get("rollout")
    maps = s.attention if s.attention is not None else (roll.maps if roll is not None else None)
    if maps is not None:
        arrays["attention"] = maps.float().numpy()
    if roll is not None and roll.rollout is not None:
        arrays["rollout"] = roll.rollout.float().numpy()
    ctx.save_artifact("examples", arrays)
    if q.curves:
        carr = {"fractions": np.linspace(0, 1, p.curve_steps + 1)}
        for (mode, m, rep), c in q.curves.items():
            carr[f"{mode}__{m}__{rep}"] = c.astype(np.float32)
        ctx.save_artifact("curves", carr)
    ctx.save_artifact("quality", q.to_json())
    tokens = None
    if s.modality == "tokens":
        vocab = s.data.vocab
        tokens = [[vocab[int(t)] if vocab and int(t) < len(vocab) else str(int(t)) for t in row] for row in s.x]
    meta = {
        "modality": s.modality, "task": s.data.task, "space": s.space, "n_examples": s.n,
        "attributions": methods, "skipped": skipped, "seconds_per_example": timings,
        "explained_output": p.explained_output if s.classification else "regression mean",
        "target": "predicted class" if s.classification else None,
        "baseline": "zero embedding" if s.space == "embedding" else "zero input",
        "shap_value_function": p.shap_value_function, "replacements": replacement_kinds(s),
        "random_orders": p.random_orders, "curve_reason": q.curve_reason,
        "feature_names": list(s.data.feature_names) if s.data.feature_names else None,
        "class_names": list(s.data.class_names) if s.data.class_names else None,
        "tokens": tokens, "relevant": q.relevant, "tags": {m: outputs[m].tags for m in methods},
        "curve_unit": "probability" if s.classification else "output",
        "players": players_desc(s),
        # token padding: pads are no players (attributions 0, never perturbed, curves over real tokens)
        "pad_id": None if s.pad is None else int(s.data.ground_truth["pad_id"]),
        "n_players": s.n_players().tolist() if s.modality == "tokens" else None,
        "pad_note": None if s.pad is None else PAD_NOTE,
    }
    ctx.save_artifact("meta", meta)
