from importlib.metadata import EntryPoint

import pytest

from workbench.errors import ConfigError, UnknownNameError
from workbench.registry import DATASETS, MODELS, SUITES, Registry


def test_builtin_suites_listed_without_import():
    assert {"metrics", "robustness", "uncertainty", "efficiency", "explain"} <= set(SUITES.names())
    assert {"mlp", "cnn", "lstm", "transformer", "gpt"} <= set(MODELS.names())
    assert "digits" in DATASETS.names()


def test_unknown_name_did_you_mean():
    with pytest.raises(UnknownNameError) as exc:
        SUITES.get("robustnes")
    msg = str(exc.value)
    assert "Did you mean 'robustness'?" in msg and "metrics" in msg
    assert isinstance(exc.value, ValueError)


def test_duplicate_name_is_an_error_not_an_overwrite():
    reg: Registry = Registry("thing")
    reg.register("a", object())
    with pytest.raises(ConfigError, match="already registered"):
        reg.register("a", object())


def test_entry_point_plugins(monkeypatch):
    reg: Registry = Registry("suite", entry_point_group="workbench.suites")
    ep = EntryPoint(name="my_suite", value="collections:OrderedDict", group="workbench.suites")

    def fake(group=None):
        return [ep] if group == "workbench.suites" else []

    monkeypatch.setattr("importlib.metadata.entry_points", fake)
    assert "my_suite" in reg.names()
    import collections

    assert reg.get("my_suite") is collections.OrderedDict


def test_refresh_rescans_entry_points_and_keeps_api_registrations(monkeypatch):
    reg: Registry = Registry("suite", entry_point_group="workbench.suites")
    reg.register("by_api", "collections:Counter")
    eps = [EntryPoint(name="plug", value="collections:OrderedDict", group="workbench.suites")]
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group=None: list(eps))
    assert reg.names() == ["by_api", "plug"]
    eps.clear()  # the plug-in was uninstalled
    assert "plug" in reg.names()  # scanned once per process ...
    reg.refresh()
    assert reg.names() == ["by_api"]  # ... until refreshed


def test_suite_class_is_none_for_missing_or_broken_suites():
    from workbench.registry import suite_class

    class Broken:
        def get(self, name):
            raise ImportError("plug-in failed to import")

    assert suite_class(None, "metrics") is SUITES.get("metrics")
    assert suite_class({"a": int}, "a") is int
    assert suite_class({}, "a") is None and suite_class(None, "no_such_suite") is None
    assert suite_class(Broken(), "x") is None and suite_class(None, None) is None


def test_a_clash_is_raised_on_every_use_and_threads_never_see_a_half_scan(monkeypatch):
    """A clash found while scanning is not remembered as a finished scan (it is raised again,
    never silently dropped); concurrent first uses all see every suite."""
    import threading
    from importlib import metadata

    from workbench.registry import Registry, RegistryClashError

    eps = metadata.EntryPoints([
        metadata.EntryPoint("dup", "a.mod:A", "workbench.test_group"),
        metadata.EntryPoint("dup", "b.mod:B", "workbench.test_group"),
    ])
    monkeypatch.setattr(metadata, "entry_points", lambda group=None: eps if group == "workbench.test_group" else [])
    reg = Registry("thing", entry_point_group="workbench.test_group")
    for _ in range(2):
        with pytest.raises(RegistryClashError, match="'dup' is declared twice: 'a.mod:A'.*'b.mod:B'"):
            reg.names()
    monkeypatch.undo()

    from workbench.registry import SUITES

    SUITES.refresh()
    seen: list[list[str]] = []
    threads = [threading.Thread(target=lambda: seen.append(SUITES.names())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 8 and all("metrics" in names and "explain" in names for names in seen)
