"""TOML plan -> validated, resolved `Plan`. Precedence: CLI (--set, flags) > file > defaults.

Every problem raises ConfigError naming the file, the key and the valid choices.
Nothing here imports torch.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import ConfigError, ParameterTypeError, did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RUN_KEYS = {
    "name": str, "seed": int, "device": str, "profile": str, "max_samples": int, "batch_size": int,
    "out": str, "store": str, "cache": str, "suites": list, "progress": bool, "description": str,
    "threads": int, "time_limit_minutes": int, "fit_budget": bool,
}
MODEL_KEYS = {
    "name": str, "dataset": str, "arch": str, "size": str, "factory": str, "checkpoint": str,
    "allow_pickle": bool, "options": dict, "train": dict, "task": str, "description": str, "untrained": bool,
    "embedding": str,
}
#: Dataset sources a `[datasets.NAME]` table can name (workbench.data.sources.SOURCES).
SOURCES = ("csv", "text", "tensors", "images", "callable", "hf_text")  # hf_text: workbench.hf.data
#: Dataset keys that hold file paths (a string, or a table of split -> path); relative
#: paths resolve against the plan file's folder.
PATH_KEYS = ("path", "split_files")
TOP_KEYS = {"run", "models", "datasets", "suites", "gates"}
PROFILES = ("quick", "full")
DEVICES = ("auto", "cpu", "cuda")
MAX_SAMPLES_LIMIT = 10_000_000


@dataclass
class RunSettings:
    name: str = "run"
    seed: int = 0
    device: str = "auto"
    profile: str = "quick"
    max_samples: int | None = None
    batch_size: int = 256
    out: str = "reports"
    store: str | None = None
    cache: str | None = None
    suites: list[str] | None = None
    progress: bool = True
    description: str = ""
    threads: int | None = None  # torch intra-op threads on CPU (None: torch's default)
    # The cost estimate warns past this; with fit_budget, the budget parameters a profile sets
    # (never those the plan sets) are scaled down so each job fits its share of it.
    time_limit_minutes: int = 30
    fit_budget: bool = True


@dataclass
class ModelSpec:
    """One model of a plan: a reference architecture (`arch`), a user factory
    ("module:function" returning an nn.Module) or a checkpoint."""

    name: str
    dataset: str
    arch: str | None = None
    size: str = "tiny"
    factory: str | None = None
    checkpoint: str | None = None
    allow_pickle: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    task: str | None = None
    description: str = ""
    untrained: bool = False  # evaluate with the initial weights, on purpose (shown in the report)
    embedding: str | None = None  # token models: the embedding layer's module path, when not found automatically


@dataclass
class Plan:
    run: RunSettings
    models: list[ModelSpec]
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    suites: dict[str, dict[str, Any]] = field(default_factory=dict)
    gates: dict[str, Any] = field(default_factory=dict)
    source: str = "<plan>"
    base_dir: str | None = None  # the plan file's folder: user modules import from here

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": asdict(self.run),
            "models": [asdict(m) for m in self.models],
            "datasets": copy.deepcopy(self.datasets),
            "suites": copy.deepcopy(self.suites),
            "gates": copy.deepcopy(self.gates),
            "source": self.source,
            "base_dir": self.base_dir,
        }

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise ConfigError(
            f"Unknown model {name!r} in plan.{did_you_mean(name, [m.name for m in self.models])} "
            f"Models in this plan: {', '.join(m.name for m in self.models)}."
        )


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file with errors that name the file."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"Plan file not found: {p}")
    if p.is_dir():
        raise ConfigError(f"Expected a plan file, got a directory: {p}")
    try:
        raw = p.read_bytes()
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start}).") from exc
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read ({exc.strerror}).") from exc
    if not text.strip():
        raise ConfigError(f"{p}: the plan is empty; it needs at least one [[models]] table.")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from exc
    except RecursionError:
        raise ConfigError(f"{p}: arrays or tables nested too deeply to read (Python's recursion limit); "
                          "a plan needs a few levels at most.") from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """"a.b.c=VALUE" -> (["a","b","c"], parsed VALUE). VALUE is read as TOML when it
    parses (numbers, booleans, lists, quoted strings), else kept as a plain string."""
    if "=" not in item:
        raise ConfigError(f"Expected --set KEY=VALUE (e.g. run.seed=3), got {item!r}.")
    key, _, value = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"Expected a dotted key such as run.seed or suites.robustness.eps, got {key!r}.")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    except RecursionError:
        raise ConfigError(f"--set {key}: the value is nested too deeply to read.") from None
    return key.split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply --set overrides; `models.NAME.key` or `models.INDEX.key` address one model."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        path, value = parse_override(item)
        if path[0] == "models":
            models = raw.get("models")
            if not isinstance(models, list) or len(path) < 3:
                raise ConfigError(f"--set {item}: use models.NAME.KEY=VALUE with a model of the plan.")
            sel = path[1]
            target = None
            for i, m in enumerate(models):
                if isinstance(m, dict) and (m.get("name") == sel or str(i) == sel):
                    target = m
            if target is None:
                names = [m.get("name", "?") for m in models if isinstance(m, dict)]
                raise ConfigError(f"--set {item}: no model {sel!r}.{did_you_mean(sel, names)} Models: {names}.")
            node, rest = target, path[2:]
        else:
            node, rest = raw, path
        for part in rest[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {item}: {part!r} is not a table.")
            node = nxt
        node[rest[-1]] = value
    return raw


def _check_keys(where: str, table: Any, allowed: dict[str, type] | set[str], source: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: expected [{where}] to be a table, got {type(table).__name__}.")
    for k, v in table.items():
        if k not in allowed:
            raise ConfigError(
                f"{source}: unknown key {k!r} in [{where}].{did_you_mean(k, allowed)} "
                f"Valid keys: {', '.join(sorted(allowed))}."
            )
        if isinstance(allowed, dict):
            want = allowed[k]
            ok = isinstance(v, want) and not (want is int and isinstance(v, bool))
            if want is int and isinstance(v, bool):
                ok = False
            if not ok:
                raise ConfigError(
                    f"{source}: [{where}] {k} must be {want.__name__}, got {type(v).__name__} {v!r}."
                )
    return table


def build_plan(raw: dict[str, Any], source: str = "<plan>") -> Plan:
    """Validate a parsed plan. Registry names (suites, datasets, architectures) are
    checked here; the models and data themselves are built by the runner."""
    from workbench.registry import DATASETS, MODELS, SUITES

    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a TOML table at the top level.")
    for k in raw:
        if k not in TOP_KEYS:
            raise ConfigError(
                f"{source}: unknown top-level key {k!r}.{did_you_mean(k, TOP_KEYS)} "
                f"Valid keys: {', '.join(sorted(TOP_KEYS))}."
            )
    run_raw = _check_keys("run", raw.get("run", {}), RUN_KEYS, source)
    run = RunSettings(**run_raw)
    if run.seed < 0 or run.seed >= 2**63:
        raise ConfigError(f"{source}: [run] seed must be in [0, 2**63), got {run.seed}.")
    if run.device not in DEVICES and not run.device.startswith("cuda:"):
        raise ConfigError(f"{source}: [run] device must be one of {DEVICES}, got {run.device!r}.{did_you_mean(run.device, DEVICES)}")
    if run.profile not in PROFILES:
        raise ConfigError(f"{source}: [run] profile must be one of {PROFILES}, got {run.profile!r}.{did_you_mean(run.profile, PROFILES)}")
    if run.max_samples is not None and not (0 < run.max_samples <= MAX_SAMPLES_LIMIT):
        raise ConfigError(f"{source}: [run] max_samples must be in [1, {MAX_SAMPLES_LIMIT}], got {run.max_samples}.")
    if run.threads is not None and not 0 < run.threads <= 1024:
        raise ConfigError(f"{source}: [run] threads must be in [1, 1024], got {run.threads}.")
    if not 0 < run.time_limit_minutes <= 100_000:
        raise ConfigError(f"{source}: [run] time_limit_minutes must be in [1, 100000], got {run.time_limit_minutes}.")
    if not 0 < run.batch_size <= 1_000_000:
        raise ConfigError(f"{source}: [run] batch_size must be in [1, 1000000], got {run.batch_size}.")
    if run.suites is not None:
        for s in run.suites:
            if not isinstance(s, str) or s not in SUITES:
                raise ConfigError(f"{source}: [run] suites: " + str(_unknown("suite", s, SUITES.names())))

    datasets = raw.get("datasets", {})
    if not isinstance(datasets, dict):
        raise ConfigError(f"{source}: expected [datasets] to be a table of tables.")
    for dname, dtable in datasets.items():
        if not isinstance(dtable, dict):
            raise ConfigError(f"{source}: [datasets.{dname}] must be a table.")
        if "source" in dtable and dtable["source"] not in SOURCES:
            src = dtable["source"]
            raise ConfigError(
                f"{source}: [datasets.{dname}] source must be one of {', '.join(SOURCES)}, got {src!r}."
                f"{did_you_mean(src, SOURCES) if isinstance(src, str) else ''}"
            )
        if "source" not in dtable and dname not in DATASETS:
            raise ConfigError(
                f"{source}: [datasets.{dname}] is neither a built-in dataset nor has a `source` "
                f"({', '.join(SOURCES)}).{did_you_mean(dname, DATASETS.names())} "
                f"Built-in datasets: {', '.join(DATASETS.names())}."
            )

    models_raw = raw.get("models")
    if not models_raw:
        raise ConfigError(f"{source}: the plan has no [[models]]; add at least one, e.g. name/arch/dataset.")
    if not isinstance(models_raw, list):
        raise ConfigError(f"{source}: expected [[models]] to be an array of tables.")
    models: list[ModelSpec] = []
    seen: set[str] = set()
    for i, m in enumerate(models_raw):
        where = f"models[{i}]"
        m = _check_keys(where, m, MODEL_KEYS, source)
        if "name" not in m or "dataset" not in m:
            raise ConfigError(f"{source}: [{where}] needs `name` and `dataset`.")
        spec = ModelSpec(**m)
        if (not spec.name.strip() or spec.name.strip(".") == "" or any(c in spec.name for c in "/\\")
                or not spec.name.isprintable() or len(spec.name) > 100):  # it names artifact and log files
            raise ConfigError(
                f"{source}: [{where}] name must be a printable name of at most 100 characters without '/' or '\\', "
                f"not '.' or '..' (it names files under the run directory), got {spec.name[:120]!r}."
            )
        if spec.name in seen:
            raise ConfigError(f"{source}: model name {spec.name!r} appears twice; names must be unique.")
        seen.add(spec.name)
        kinds = [k for k in ("arch", "factory") if getattr(spec, k)]
        if len(kinds) > 1:
            raise ConfigError(f"{source}: [{where}] {spec.name}: give `arch` or `factory`, not both.")
        if not kinds and not spec.checkpoint:
            raise ConfigError(
                f"{source}: [{where}] {spec.name}: needs `arch` (one of {', '.join(MODELS.names())}), "
                "`factory` (\"module:function\") or `checkpoint`."
            )
        if spec.arch and spec.arch not in MODELS:
            raise ConfigError(f"{source}: [{where}] " + str(_unknown("model architecture", spec.arch, MODELS.names())))
        if spec.factory and (":" not in spec.factory or spec.factory.startswith(":") or spec.factory.endswith(":")):
            raise ConfigError(f"{source}: [{where}] factory must look like 'package.module:function', got {spec.factory!r}.")
        if spec.untrained and (spec.checkpoint or spec.train):
            raise ConfigError(f"{source}: [{where}] {spec.name}: untrained = true contradicts "
                              f"`{'checkpoint' if spec.checkpoint else 'train'}`; remove one.")
        if spec.factory and not (spec.checkpoint or spec.train or spec.untrained):
            raise ConfigError(
                f"{source}: [{where}] {spec.name}: a factory model needs `checkpoint` (its trained weights) or "
                "`train` (train it here); to evaluate it with random initial weights on purpose, set untrained = true."
            )
        if spec.size not in ("tiny", "base"):
            raise ConfigError(f"{source}: [{where}] size must be 'tiny' or 'base', got {spec.size!r}.{did_you_mean(spec.size, ['tiny', 'base'])}")
        if spec.dataset not in datasets and spec.dataset not in DATASETS:
            raise ConfigError(
                f"{source}: [{where}] " + str(_unknown("dataset", spec.dataset, list(DATASETS.names()) + list(datasets)))
            )
        from workbench.train import TrainConfig

        try:
            TrainConfig.from_dict(spec.train)
        except (ConfigError, ParameterTypeError) as exc:  # both name the file and table
            raise type(exc)(f"{source}: [{where}.train] {exc}") from exc
        models.append(spec)

    suites = raw.get("suites", {})
    if not isinstance(suites, dict):
        raise ConfigError(f"{source}: expected [suites] to be a table of tables.")
    for sname, stable in suites.items():
        if sname not in SUITES:
            raise ConfigError(f"{source}: [suites.{sname}] " + str(_unknown("suite", sname, SUITES.names())))
        if not isinstance(stable, dict):
            raise ConfigError(f"{source}: [suites.{sname}] must be a table.")
        if "enabled" in stable and not isinstance(stable["enabled"], bool):
            raise ConfigError(f"{source}: [suites.{sname}] enabled must be true or false.")
        try:
            SUITES.get(sname).from_config(stable, profile=run.profile)
        except (ConfigError, ParameterTypeError) as exc:
            raise type(exc)(f"{source}: [suites.{sname}] {exc}") from exc
    gates = raw.get("gates", {})
    if not isinstance(gates, dict):
        raise ConfigError(f"{source}: expected [gates] to be a table (e.g. rules = [...]).")
    if gates:
        from workbench.gates import parse_gates

        parse_gates(gates, source=f"{source}: [gates]")
    return Plan(run=run, models=models, datasets=datasets, suites=suites, gates=gates, source=source)


def user_code_references(raw: dict[str, Any]) -> list[str]:
    """Where a raw (TOML-shaped) plan names code to import or a pickle to load: model
    factories, callable dataset sources, checkpoints with `allow_pickle`. Used to refuse
    running such a plan when it comes from the store or a results file rather than from a
    file the user handed over (nothing named there is ever imported)."""
    out: list[str] = []
    models = raw.get("models") if isinstance(raw, dict) else None
    for i, m in enumerate(models if isinstance(models, list) else []):
        if not isinstance(m, dict):
            continue
        name = m.get("name", f"models[{i}]")
        if m.get("factory"):
            out.append(f"model {name!r} factory {m['factory']!r}")
        if m.get("allow_pickle"):
            out.append(f"model {name!r} checkpoint {m.get('checkpoint')!r} loaded as a pickle")
    datasets = raw.get("datasets") if isinstance(raw, dict) else None
    for dname, table in (datasets.items() if isinstance(datasets, dict) else []):
        if isinstance(table, dict) and (table.get("source") == "callable" or "function" in table):
            out.append(f"dataset {dname!r} function {table.get('function')!r}")
    return out


def _unknown(kind: str, name: Any, choices: list[str]) -> str:
    from workbench.errors import unknown_name

    return str(unknown_name(kind, str(name), choices))


def resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """A copy of a raw plan with relative data paths (`[datasets.*] path`, `split_files`,
    also as tables of split -> path) and model checkpoints made absolute against `base`.
    Anything that is not a string is left for `build_plan` to report."""
    raw = copy.deepcopy(raw)

    def fix(v: Any) -> Any:
        if isinstance(v, str) and v and not Path(v).expanduser().is_absolute():
            return str((base / Path(v).expanduser()).resolve())
        if isinstance(v, str):
            return str(Path(v).expanduser())
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        return v

    datasets = raw.get("datasets")
    if isinstance(datasets, dict):
        for table in datasets.values():
            if isinstance(table, dict):
                for key in PATH_KEYS:
                    if key in table:
                        table[key] = fix(table[key])
    models = raw.get("models")
    if isinstance(models, list):
        for m in models:
            if isinstance(m, dict) and isinstance(m.get("checkpoint"), str):
                m["checkpoint"] = fix(m["checkpoint"])
    return raw


def load_plan(path: str | Path, overrides: list[str] | None = None) -> Plan:
    """Read, override and validate a plan file. Relative data paths and checkpoints in the
    file resolve against the file's folder; those given with --set against the current
    directory. `run.out`, `run.store` and `run.cache` stay relative to the current directory."""
    raw = read_toml(path)
    base = Path(path).resolve().parent
    raw = resolve_paths(raw, base)
    raw = apply_overrides(raw, overrides or [])
    raw = resolve_paths(raw, Path.cwd())  # paths that came from --set
    plan = build_plan(raw, source=str(path))
    plan.base_dir = str(base)
    return plan
