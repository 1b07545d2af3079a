"""Plan -> datasets and model handles: load a plan's data, import and call the user's
factory, load checkpoints (weights only), train through the cache, and check that each
model's output fits its data before any suite runs. Every call into user code goes
through `workbench.usercode.call_user`, so its failures are one clear `UserCodeError`."""

from __future__ import annotations

import dataclasses
import inspect
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench.config import Plan
from workbench.errors import ConfigError, ModelError, UserCodeError, WorkbenchError
from workbench.usercode import call_user, import_reference


def load_plan_dataset(plan: Plan, name: str) -> Any:
    """A dataset by plan name: a `[datasets.NAME]` table with a `source`, a built-in
    with options from its table, or a plain built-in name. Validated before use."""
    from workbench.data import loaders
    from workbench.registry import DATASETS

    table = dict(plan.datasets.get(name, {}))
    try:
        if table.get("source") == "hf_text":  # text through a Hugging Face tokenizer (optional `hf` extra)
            from workbench.hf.data import load_hf_text

            table.pop("source")
            table.setdefault("name", name)
            data = load_hf_text(**table)
        elif "source" in table:
            table.setdefault("name", name)
            seed = table.pop("seed", 0)
            data = loaders.load_dataset(table, seed=seed)
        else:
            fn = DATASETS.get(name)
            try:
                data = fn(**table)
            except TypeError as exc:
                raise ConfigError(f"{exc}") from exc
        loaders.validate_dataset(data)
    except UserCodeError as exc:
        raise UserCodeError(f"[datasets.{name}]: {exc}", exc.details) from exc
    except WorkbenchError as exc:
        raise type(exc)(f"[datasets.{name}]: {exc}") from exc
    return data


def _import_callable(ref: str) -> Callable[..., Any]:
    return import_reference(ref, what="factory")


def load_checkpoint(path: str | Path, *, allow_pickle: bool = False) -> Any:
    """Load a checkpoint safely: `weights_only=True` unless the plan opts into pickles
    (`allow_pickle = true`), which prints a warning because a pickle can run code."""
    import torch

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"Checkpoint not found: {p}")
    if allow_pickle:
        warnings.warn(f"Loading {p} with weights_only=False: a pickle can execute arbitrary code. "
                      "Only do this for files you trust.", stacklevel=2)
        print(f"WARNING: loading {p} as a full pickle (allow_pickle=true); it can execute code.", file=sys.stderr)
        return torch.load(p, map_location="cpu", weights_only=False)
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(
            f"Checkpoint {p} could not be loaded with weights_only=True ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}). Save a state_dict, or set allow_pickle = true "
            "for this model if you trust the file."
        ) from exc


def _state_dict_of(blob: Any) -> dict[str, Any]:
    if isinstance(blob, dict) and "state_dict" in blob and isinstance(blob["state_dict"], dict):
        return blob["state_dict"]
    if isinstance(blob, dict):
        return blob
    raise ConfigError(f"Expected a state_dict (a dict of tensors) in the checkpoint, got {type(blob).__name__}.")


def model_factory(spec: Any, data: Any) -> tuple[Callable[..., Any], dict[str, Any], str]:
    """(make(**overrides) -> nn.Module, cache spec, source) for one model of a plan: a
    reference architecture, a user factory ("module:function", given `data=` when it takes
    it), or a checkpoint-only model (whose `make` raises: it cannot be rebuilt)."""
    from torch import nn

    from workbench.registry import MODELS

    if spec.arch:
        builder = MODELS.get(spec.arch)

        def make(**overrides: Any) -> nn.Module:
            return builder(data, size=spec.size, **{**spec.options, **overrides})

        return make, {"arch": spec.arch, "size": spec.size, "options": spec.options}, "reference"
    factory = _import_callable(spec.factory) if spec.factory else None

    def make(**overrides: Any) -> nn.Module:  # noqa: F811 (one of two builders)
        if factory is None:
            raise ConfigError(f"Model {spec.name!r} comes from a checkpoint only and cannot be rebuilt.")
        kwargs = {**spec.options, **overrides}
        try:
            params = inspect.signature(factory).parameters
        except (TypeError, ValueError):
            params = {}
        for key in ("data", "dataset"):
            if key in params and key not in kwargs:
                kwargs[key] = data
        module = call_user(f"model {spec.name!r}: factory {spec.factory!r}", factory, **kwargs)
        if not isinstance(module, nn.Module):
            raise ModelError(f"model {spec.name!r}: factory {spec.factory!r} returned {type(module).__name__}, "
                             "expected a torch.nn.Module.")
        return module

    return make, {"factory": spec.factory, "options": spec.options}, "factory" if spec.factory else "checkpoint"


def build_handle(spec: Any, data: Any, *, device: Any, cache_dir: Path | None, run_seed: int,
                 log: Callable[[str], None] = print, progress: bool | str = False) -> Any:
    """Build (and train through the cache, where the plan says so) one model of a plan."""
    from torch import nn

    from workbench.suite import ModelHandle
    from workbench.train import TrainConfig, output_kind_for, train_cached

    train_dict = dict(spec.train)
    train_dict.setdefault("seed", run_seed)
    base_cfg = TrainConfig.from_dict(train_dict)

    make, base_spec, source = model_factory(spec, data)

    def trainer(seed: int | None = None, recipe: str | None = None, recipe_params: dict | None = None,
                epochs: int | None = None, **model_overrides: Any) -> nn.Module:
        cfg = dataclasses.replace(
            base_cfg,
            seed=base_cfg.seed if seed is None else int(seed),
            recipe=recipe or base_cfg.recipe,
            recipe_params=dict(recipe_params if recipe_params is not None else base_cfg.recipe_params),
            epochs=epochs or base_cfg.epochs,
        )
        s = {**base_spec, "overrides": model_overrides}
        res = train_cached(lambda: make(**model_overrides), s, data, cfg, device=device, cache_dir=cache_dir,
                           progress=progress, log=log)
        res.module.train_seconds = res.seconds  # the original training time, also on a cache hit
        res.module.train_history = res.history  # per-epoch rows (e.g. the catastrophic-overfitting check)
        return res.module

    train_seconds = None
    if spec.checkpoint and not spec.arch and not spec.factory:
        blob = load_checkpoint(spec.checkpoint, allow_pickle=spec.allow_pickle)
        if not isinstance(blob, nn.Module):
            raise ConfigError(
                f"Checkpoint {spec.checkpoint} holds a {type(blob).__name__}, not a whole module; "
                "give `arch` or `factory` so the workbench can build the module and load this state_dict."
            )
        module = blob
        handle_trainer = None
    elif spec.checkpoint:
        module = make()
        state = _state_dict_of(load_checkpoint(spec.checkpoint, allow_pickle=spec.allow_pickle))
        try:
            call_user(f"model {spec.name!r}: load_state_dict", module.load_state_dict, state)
        except UserCodeError as exc:
            raise ModelError(f"Checkpoint {spec.checkpoint} does not fit model {spec.name!r}: "
                             f"{str(exc).partition(': ')[2][:400]}") from exc
        handle_trainer = trainer
    elif spec.arch == "hf":  # a pretrained checkpoint: loaded as is; only a linear-probe head is trained
        from workbench.hf.model import prepare_pretrained

        module, train_seconds, handle_trainer = prepare_pretrained(make, spec, data, base_cfg, device=device,
                                                                   cache_dir=cache_dir, log=log)
    elif getattr(spec, "untrained", False):
        module = make()  # the plan says so: evaluated with its initial weights
        handle_trainer = trainer
    elif spec.arch or spec.train:
        res = train_cached(make, {**base_spec, "overrides": {}}, data, base_cfg, device=device,
                           cache_dir=cache_dir, progress=progress, log=log)
        module, train_seconds = res.module, res.seconds
        log(f"  {spec.name}: {'loaded from cache' if res.cache_hit else 'trained'} "
            f"(best epoch {res.best_epoch}, {res.seconds:.1f} s training)")
        handle_trainer = trainer
    else:
        raise ConfigError(f"Model {spec.name!r} has neither `checkpoint` nor `train`: it would be evaluated with "
                          "random weights. Give a checkpoint, a train table, or untrained = true to mean it.")
    module.to(device).eval()
    output = output_kind_for(module, data)
    cfg = getattr(module, "config", None)
    cfg_dict = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else {}
    return ModelHandle(
        name=spec.name, module=module, arch=spec.arch or "custom", task=data.task, output=output,
        config=cfg_dict, train_config=dataclasses.asdict(base_cfg), trainer=handle_trainer,
        train_seconds=train_seconds, source=source, embedding=getattr(spec, "embedding", None),
    )


def validate_model_output(handle: Any, data: Any, *, device: Any) -> None:
    """Check before any suite runs that the model's output fits the dataset."""
    import torch

    x = data.test.x[:4].to(device)
    module = handle.module
    try:
        with torch.no_grad():
            out = call_user("forward", module, x)
    except UserCodeError as exc:
        raise UserCodeError(
            f"Model {handle.name!r} failed on a batch of {data.name!r} with input shape {tuple(x.shape)}: "
            f"{str(exc).removeprefix('forward ')}", exc.details
        ) from exc
    if isinstance(out, tuple):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"Model {handle.name!r} returned {type(out).__name__}, expected a tensor.")
    b = x.shape[0]
    expected: tuple[int | None, ...]
    kind = handle.output
    if kind == "logits":
        expected = (b, data.num_classes)
    elif kind == "mean":
        expected = (b,) if out.dim() == 1 else (b, 1)
    elif kind == "mean_logvar":
        expected = (b, 2)
    elif kind == "lm_logits":
        expected = (b, x.shape[1], data.vocab_size)
    else:
        raise ModelError(f"Model {handle.name!r} declares unknown output kind {kind!r}.")
    if tuple(out.shape) != expected:
        what = {"logits": f"{data.num_classes} classes", "lm_logits": f"vocab {data.vocab_size}"}.get(kind, kind)
        raise ModelError(
            f"Model {handle.name!r} outputs shape {tuple(out.shape)} on {data.name!r}, expected {expected} "
            f"({what}, output kind {kind!r})."
        )
    if not torch.isfinite(out).all():
        raise ModelError(f"Model {handle.name!r} produced non-finite outputs on {data.name!r}.")




def check_plan(plan: Plan, models: list[str] | None = None) -> list[str]:
    """Every problem `workbench validate` can find without training, for every model at
    once: each dataset loads and passes validation; each factory imports and builds; each
    checkpoint loads (weights only, unless the model says allow_pickle) into its model;
    each model's output fits its data on a few test rows (reference architectures are
    checked with their initial weights). Returns the problems, one line each."""
    from types import SimpleNamespace

    import torch

    from workbench.train import output_kind_for

    problems: list[str] = []
    datasets: dict[str, Any] = {}
    failed_data: set[str] = set()
    cpu = torch.device("cpu")
    for spec in plan.models:
        if models and spec.name not in models:
            continue
        if spec.dataset in failed_data:
            continue
        if spec.dataset not in datasets:
            try:
                datasets[spec.dataset] = load_plan_dataset(plan, spec.dataset)
            except WorkbenchError as exc:
                problems.append(str(exc))
                failed_data.add(spec.dataset)
                continue
        data = datasets[spec.dataset]
        try:
            if spec.checkpoint and not spec.arch and not spec.factory:
                from torch import nn

                module = load_checkpoint(spec.checkpoint, allow_pickle=spec.allow_pickle)
                if not isinstance(module, nn.Module):
                    raise ConfigError(
                        f"Model {spec.name!r}: checkpoint {spec.checkpoint} holds a {type(module).__name__}, not a whole "
                        "module; give `arch` or `factory` so the workbench can build the module and load this state_dict."
                    )
            else:
                make, _, _ = model_factory(spec, data)
                module = make()
                if spec.checkpoint:
                    state = _state_dict_of(load_checkpoint(spec.checkpoint, allow_pickle=spec.allow_pickle))
                    try:
                        call_user(f"model {spec.name!r}: load_state_dict", module.load_state_dict, state)
                    except UserCodeError as exc:
                        raise ModelError(f"Checkpoint {spec.checkpoint} does not fit model {spec.name!r}: "
                                         f"{str(exc).partition(': ')[2][:400]}") from exc
            module.to(cpu).eval()
            handle = SimpleNamespace(name=spec.name, module=module, output=output_kind_for(module, data))
            validate_model_output(handle, data, device=cpu)
        except WorkbenchError as exc:
            msg = str(exc)
            problems.append(msg if spec.name in msg else f"model {spec.name!r}: {msg}")
    return problems
