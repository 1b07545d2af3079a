import re
from pathlib import Path

import pytest

from workbench.config import apply_overrides, build_plan, load_plan, parse_override
from workbench.errors import ConfigError

GOOD = """
[run]
name = "t"
seed = 3

[[models]]
name = "m"
arch = "mlp"
dataset = "wine"
train = { epochs = 2 }

[suites.metrics]
n_boot = 50
"""


def write(tmp_path: Path, text: str | bytes, name: str = "plan.toml") -> Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def test_good_plan(tmp_path):
    plan = load_plan(write(tmp_path, GOOD))
    assert plan.run.seed == 3 and plan.models[0].arch == "mlp" and plan.suites["metrics"]["n_boot"] == 50


def test_cli_overrides_win(tmp_path):
    plan = load_plan(write(tmp_path, GOOD), ["run.seed=7", "models.m.train.epochs=5", "suites.metrics.n_boot=20"])
    assert plan.run.seed == 7 and plan.models[0].train["epochs"] == 5 and plan.suites["metrics"]["n_boot"] == 20


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty"),
        (GOOD.replace('name = "t"', 'nmae = "t"'), "Did you mean 'name'"),
        (GOOD.replace('arch = "mlp"', 'arch = "mpl"'), "Did you mean 'mlp'"),
        (GOOD.replace('dataset = "wine"', 'dataset = "wne"'), "Did you mean 'wine'"),
        (GOOD.replace("[suites.metrics]", "[suites.metircs]"), "Did you mean 'metrics'"),
        (GOOD.replace("seed = 3", 'seed = "three"'), "seed must be int"),
        (GOOD.replace("seed = 3", "seed = -1"), "seed"),
        (GOOD.replace("epochs = 2", "epochs = 0"), "epochs"),
        (GOOD.replace("n_boot = 50", "n_bot = 50"), "n_boot"),
        (GOOD + "\n[run2]\n", "unknown top-level key"),
        ("[run]\nname='x'\n", "no [[models]]"),
        ("this is = = not toml", "invalid TOML"),
    ],
)
def test_bad_plans_name_the_problem(tmp_path, text, fragment):
    with pytest.raises(ConfigError) as exc:
        load_plan(write(tmp_path, text))
    assert fragment in str(exc.value)


def test_directory_missing_and_binary(tmp_path):
    with pytest.raises(ConfigError, match="directory"):
        load_plan(tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        load_plan(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_plan(write(tmp_path, b"\xff\xfe\x00bad"))


def test_parse_override_values():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=[0.1, 0.2]") == (["a"], [0.1, 0.2])
    assert parse_override("a=hello") == (["a"], "hello")
    with pytest.raises(ConfigError):
        parse_override("novalue")
    with pytest.raises(ConfigError):
        apply_overrides({"models": [{"name": "m"}]}, ["models.x.size=base"])


def test_factory_reference_shape():
    raw = {"models": [{"name": "m", "factory": "no_colon", "dataset": "wine"}]}
    with pytest.raises(ConfigError, match="module:function"):
        build_plan(raw)


def test_relative_paths_resolve_against_the_plan_folder_and_set_paths_against_cwd(tmp_path, monkeypatch):
    """Data paths, split files and checkpoints in a plan file are relative to the file;
    a path given with --set is relative to the current directory (issue 14)."""
    from workbench.config import load_plan

    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "p.toml").write_text(
        '[datasets.d]\nsource = "csv"\npath = "data/x.csv"\ntarget = "y"\n'
        'split_files = { test = "rows/test.txt" }\n'
        '[datasets.e]\nsource = "csv"\npath = { train = "tr.csv", test = "/abs/te.csv" }\ntarget = "y"\n'
        '[[models]]\nname = "m"\nfactory = "mod:build"\ncheckpoint = "w.pt"\ndataset = "d"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    plan = load_plan(plans / "p.toml")
    assert plan.datasets["d"]["path"] == str(plans / "data" / "x.csv")
    assert plan.datasets["d"]["split_files"] == {"test": str(plans / "rows" / "test.txt")}
    assert plan.datasets["e"]["path"] == {"train": str(plans / "tr.csv"), "test": "/abs/te.csv"}
    assert plan.models[0].checkpoint == str(plans / "w.pt") and plan.base_dir == str(plans)
    plan = load_plan(plans / "p.toml", ["models.m.checkpoint=other.pt"])
    assert plan.models[0].checkpoint == str(elsewhere / "other.pt")


@pytest.mark.parametrize("text, fragment", [
    ('[datasets.d]\nsource = "parquet"\npath = "x"\n[[models]]\nname = "m"\narch = "mlp"\ndataset = "d"\n',
     "source must be one of csv, text, tensors, images, callable"),
    ('[[models]]\nname = "m"\nfactory = "a:b"\ndataset = "wine"\n', "untrained = true"),
    ('[[models]]\nname = "m"\nfactory = "a:b"\ncheckpoint = "w.pt"\nuntrained = true\ndataset = "wine"\n',
     "contradicts `checkpoint`"),
])
def test_sources_and_untrained_models_are_checked(tmp_path, text, fragment):
    p = tmp_path / "p.toml"
    p.write_text(text)
    from workbench.config import load_plan

    with pytest.raises(ConfigError, match=re.escape(fragment)):
        load_plan(p)
