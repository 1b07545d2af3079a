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
