"""Certifying test examples in blocks, each block with its own noise seeds: the unit of work
of the unsharded run and of the Ray shards alike, so that both give the same bits.

Why blocks: the noise of randomized smoothing is most of the work (n = 100,000 copies per
example in the full profile) and a torch generator cannot skip ahead, so a shard starting at
example 250 could not draw "the noise example 250 had in the unsharded run" without drawing
the noise of examples 0..249 first. Instead, the sampled test examples are cut into blocks of
`block_size` consecutive examples (the suite's `block_examples`, 16 by default: a parameter of
the suite, so the blocks never depend on the batch size or the device); each block draws from its
own generators, seeded by (run seed, variant, sigma, block index) for CERTIFY and by (...,
radius, block index) for the consistency attack at that radius, and every forward pass holds
rows of one block only. A block's certificates therefore depend on nothing but the block, and
a shard (a run of whole blocks, `shard_ranges`) computes exactly the rows the unsharded run
computes for them. The records are then built from the concatenated per-example arrays
(`report.py`), never from shard summaries.

The consistency attack is batch-size free the same way: each PGD step draws the noise of all
the block's attacked examples (at most `block_size` × `attack_noise_samples` copies) in one
call, in example order, and only then cuts the copies into forwards of `batch_size` rows
(`functional.smoothed_pgd`). Its memory: that one step's noise (reused for the per-copy
gradients) plus one batch of noisy copies and its backward pass.

Cost: a block pays at most one partly filled forward per stage (selection, estimation, each
PGD step, the attack's evaluation): at most one forward in `ceil(block_size * n0 / batch)` for
selection and negligible for the n estimation copies.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from workbench.distributed import state_digest
from workbench.errors import DataError
from workbench.suite import shard_slices

if TYPE_CHECKING:
    from workbench.suite import ModelHandle, RunContext

#: offset of the test-row sample (RunContext.sample_rows), as before sharding existed
SAMPLE_OFFSET = 31


def n_examples(p: Any, data: Any, ctx: "RunContext") -> int:
    """How many test examples are certified: min(test size, run max_samples, n_samples)."""
    return ctx.limit(len(data.test), p.n_samples)


def attack_noise_samples(p: Any) -> int:
    """Noise draws per example and PGD step: the suite's `attack_noise_samples`, never capped
    by the batch size (a batch smaller than the draws just means more forwards per step)."""
    return int(p.attack_noise_samples)


def block_size(p: Any) -> int:
    """Examples per block: the suite's `block_examples` (16 by default). A parameter of
    the suite, not of the run, so that the blocks and their noise seeds, and therefore the
    certificates, never change with the batch size (a speed setting) or the device."""
    return int(p.block_examples)


def shard_ranges(n: int, block: int, n_shards: int) -> list[slice]:
    """About `n_shards` contiguous example ranges made of whole blocks, covering [0, n) in
    order (sizes differ by at most one block)."""
    n_blocks = math.ceil(n / block)
    return [slice(s.start * block, min(s.stop * block, n)) for s in shard_slices(n_blocks, n_shards)]


def check_rows(rows: Any, n: int, block: int) -> tuple[int, int]:
    """(start, stop) of a shard's example range; DataError unless it is made of whole blocks."""
    if not isinstance(rows, slice) or not isinstance(rows.start, int) or not isinstance(rows.stop, int):
        raise DataError(f"Expected a certify shard as a slice of example indices, got {rows!r}.")
    start, stop = rows.start, rows.stop
    if not (0 <= start < stop <= n) or start % block or (stop % block and stop != n):
        raise DataError(f"Expected a certify shard of whole blocks of {block} examples inside [0, {n}), "
                        f"got [{start}, {stop}).")
    return start, stop


def variants(model: "ModelHandle", p: Any) -> tuple[list[tuple[str, Any, tuple[float, ...], dict[str, Any]]], list[str]]:
    """[(variant, module, sigmas, info)] to certify, and notes: the model as given at every
    sigma, and (noise_training) one Gaussian-noise-trained sibling per sigma through the
    model's trainer and the training cache, certified at its own sigma."""
    out: list[tuple[str, Any, tuple[float, ...], dict[str, Any]]] = [
        ("standard", model.module, p.sigmas, {"trained_with": "as given"})]
    notes: list[str] = []
    embedding = getattr(model, "embedding", None)  # the token-embedding layer named in the plan
    if p.noise_training:
        for s in p.sigmas:
            if model.trainer is None:
                notes.append("noise training skipped: the model has no trainer (cannot be retrained)")
                break
            try:
                params = {"sigma": s, **({"embedding": embedding} if embedding else {})}
                module_v = model.trainer(recipe="gaussian_noise", recipe_params=params, epochs=p.training_epochs)
            except Exception as exc:  # a failed sibling removes only its own rows
                notes.append(f"noise training at sigma={s:g} failed: {type(exc).__name__}: {exc}")
                continue
            out.append(("gaussian_noise", module_v, (s,),
                        {"trained_with": f"gaussian_noise(sigma={s:g})",
                         "train_seconds": getattr(module_v, "train_seconds", None)}))
    return out, notes


def certify_rows(p: Any, model: "ModelHandle", data: Any, ctx: "RunContext", rows: slice) -> dict[str, Any]:
    """Certify examples [start, stop) of the run's sample (whole blocks) for every variant
    and sigma. Plain picklable data:
    {"rows": (start, stop), "notes": [...], "results": [{"variant", "sigma", "info",
     "weights" (fingerprint), "noise_scale", "arrays": per-example arrays (see
     `_certify_blocks`)}]}."""
    from workbench.torch_utils import module_device

    n = n_examples(p, data, ctx)
    block = block_size(p)
    start, stop = check_rows(rows, n, block)
    order = ctx.sample_rows(len(data.test), n, SAMPLE_OFFSET)
    test = data.test.subset(order[start:stop])
    x, y = test.x.to(module_device(model.module)), test.y.cpu()
    found, notes = variants(model, p)
    results = []
    for variant, module_v, sigmas, info in found:
        fingerprint = state_digest(module_v)
        for s in sigmas:
            arrays, scale = _certify_blocks(module_v, data, x, y, start, n, s, variant, p, ctx,
                                            getattr(model, "embedding", None))
            results.append({"variant": variant, "sigma": s, "info": info, "weights": fingerprint,
                            "noise_scale": scale, "arrays": arrays})
    return {"rows": (start, stop), "notes": notes, "results": results}


def check_radii(p: Any) -> tuple[float, ...]:
    """The radii > 0 the consistency check attacks at, in order."""
    return tuple(r for r in (p.check_radii if p.check_radii is not None else p.radii) if r > 0)


def _certify_blocks(module: Any, data: Any, x: torch.Tensor, y: torch.Tensor, start: int, n: int, sigma: float,
                    variant: str, p: Any, ctx: "RunContext", embedding: str | None) -> tuple[dict[str, np.ndarray], float]:
    """Per-example arrays of rows start.. (x, y: those rows), block by block:
    prediction (b,) int64 (-1 abstain), radius (b,) float64, p_lower (b,) float64,
    smoothed_prediction (b,) int64 (PREDICT on the n estimation counts, -1 abstain),
    noisy_hits (b,) int64 (estimation copies f got right), clean_prediction (b,) int64 (f's
    class at x, no noise), and for the consistency check at
    each of `check_radii` (R columns): adv_correct (b, R) bool (g's Monte Carlo argmax at
    the attacked point is the label; False for an example not attacked), adv_hits (b, R)
    int64 (copies of the label among `attack_eval_samples` at the attacked point; -1 where
    not attacked). Attacked: among the first `attack_samples` examples of the sample, those
    g's Monte Carlo argmax gets right at x. Also the noise scale (1 for inputs)."""
    from workbench.suites.certify import functional as C
    from workbench.torch_utils import derive_seed, frozen_eval

    device = x.device
    bs = ctx.batch_size
    block = block_size(p)
    radii = check_radii(p) if p.consistency_check else ()
    n_attacked = min(p.attack_samples, n)
    m_noise = attack_noise_samples(p)
    b_rows = len(y)
    out: dict[str, np.ndarray] = {
        "prediction": np.zeros(b_rows, np.int64), "radius": np.zeros(b_rows, np.float64),
        "p_lower": np.zeros(b_rows, np.float64), "smoothed_prediction": np.zeros(b_rows, np.int64),
        "noisy_hits": np.zeros(b_rows, np.int64), "clean_prediction": np.zeros(b_rows, np.int64),
        "adv_correct": np.zeros((b_rows, len(radii)), bool),
        "adv_hits": np.full((b_rows, len(radii)), -1, np.int64)}

    def gen(*keys: str) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(derive_seed(ctx.seed, "certify", variant, f"{sigma:g}", *keys))

    with frozen_eval(module):
        if data.modality == "tokens":
            ref = data.train.x[: min(len(data.train), 1000)].to(device)
            space = C.embedding_space(module, ref, path=embedding)
        else:
            space = C.input_space(x)
        bounds = tuple(data.bounds) if (data.bounds and space.kind == "input") else None
        with ctx.progress(b_rows * (p.n0 + p.n), f"{variant} sigma={sigma:g}", unit="noisy copies") as bar:
            for lo in range(0, b_rows, block):
                hi = min(lo + block, b_rows)
                index = str((start + lo) // block)
                xb, yb = x[lo:hi], y[lo:hi]
                with torch.no_grad():  # f itself, without noise (the base classifier's clean accuracy)
                    for c in range(0, hi - lo, bs):
                        xc = xb[c:c + bs]
                        zero = torch.zeros((len(xc), *space.shape), device=device,
                                           dtype=xc.dtype if xc.is_floating_point() else torch.float32)
                        out["clean_prediction"][lo + c:lo + c + len(xc)] = (
                            C.perturbed_logits(module, xc, zero, space).argmax(1).cpu().numpy())
                cert = C.certify(module, xb, sigma=sigma, n0=p.n0, n=p.n, alpha=p.alpha, batch_size=bs,
                                 generator=gen("noise", "block", index), space=space, num_classes=data.num_classes,
                                 progress=bar)
                counts = cert.counts_estimation
                out["prediction"][lo:hi] = cert.prediction.numpy()
                out["radius"][lo:hi] = cert.radius
                out["p_lower"][lo:hi] = cert.p_lower
                out["smoothed_prediction"][lo:hi] = C.predict_from_counts(counts, p.alpha).numpy()
                out["noisy_hits"][lo:hi] = counts.gather(1, yb[:, None]).squeeze(1).numpy()
                attacked = (torch.arange(start + lo, start + hi) < n_attacked) & (counts.argmax(1) == yb)
                idx = attacked.nonzero().squeeze(1)
                if not radii or idx.numel() == 0:
                    continue
                xs, ys = xb[idx.to(device)], yb[idx].to(device)
                for j, r in enumerate(radii):
                    g = gen("attack", f"{r:g}", "block", index)
                    delta = C.smoothed_pgd(module, xs, ys, eps=r, sigma=sigma, steps=p.attack_steps,
                                           noise_samples=m_noise, batch_size=bs, generator=g, space=space,
                                           bounds=bounds)
                    adv = C.sample_noise(module, xs, num=p.attack_eval_samples, sigma=sigma, batch_size=bs,
                                         generator=g, space=space, offset=delta,
                                         num_classes=counts.shape[1]).cpu()
                    rows = (lo + idx).numpy()
                    out["adv_correct"][rows, j] = (adv.argmax(1) == yb[idx]).numpy()
                    out["adv_hits"][rows, j] = adv.gather(1, yb[idx][:, None]).squeeze(1).numpy()
    return out, float(space.scale)
