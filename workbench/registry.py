"""One registry type: built-ins by name, third-party plug-ins through entry points.

>>> SUITES.get("robustnes")  # doctest: +SKIP
UnknownNameError: Unknown suite 'robustnes'. Did you mean 'robustness'? Valid suites: ...
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from workbench.errors import ConfigError, unknown_name


class RegistryClashError(ConfigError):
    """Two plug-ins (or a plug-in and a built-in) claim the same name."""

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object. Built-ins are registered lazily as "module:attr" strings so
    that listing names never imports torch; `entry_point_group` adds installed plug-ins."""

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._lazy: dict[str, str] = {}
        self._loaded: dict[str, T] = {}
        self._entry_points_scanned = False
        self._from_entry_points: set[str] = set()
        self._lock = threading.RLock()  # the dashboard lists suites from several threads

    def register(self, name: str, obj: T | str | None = None) -> Callable[[T], T] | T:
        """Register `obj` (or a "module:attr" path) under `name`; usable as a decorator.
        A duplicate name raises instead of silently overwriting."""
        if obj is None:
            def deco(o: T) -> T:
                self.register(name, o)
                return o
            return deco
        if name in self._lazy or name in self._loaded:
            existing = self._lazy.get(name) or self._loaded.get(name)
            if existing is not obj and existing != obj:
                raise RegistryClashError(
                    f"{self.kind} {name!r} is declared twice: {existing!r} (already registered) and {obj!r}. "
                    "Rename one of them."
                )
            return obj
        if isinstance(obj, str):
            self._lazy[name] = obj
        else:
            self._loaded[name] = obj
        return obj

    def _scan_entry_points(self) -> None:
        """Add every installed entry point of the group. Two distributions (or an entry
        point and an API registration) claiming one name is an error naming both, raised
        on every use (the scan counts as done only once it succeeded). Thread-safe: no
        caller ever sees a half-scanned registry."""
        if self._entry_points_scanned or not self.entry_point_group:
            return
        with self._lock:
            if self._entry_points_scanned:
                return
            from importlib.metadata import entry_points

            seen: dict[str, tuple[str, str]] = {}  # name -> (value, distribution)
            for ep in entry_points(group=self.entry_point_group):
                dist = getattr(getattr(ep, "dist", None), "name", None) or "an unknown distribution"
                if ep.name in seen:
                    if seen[ep.name][0] == ep.value:
                        continue  # the same distribution found twice on sys.path
                    raise RegistryClashError(
                        f"{self.kind} {ep.name!r} is declared twice: {seen[ep.name][0]!r} (from {seen[ep.name][1]}) "
                        f"and {ep.value!r} (from {dist}). Rename one of them or uninstall one distribution."
                    )
                seen[ep.name] = (ep.value, dist)
            for name, (value, dist) in seen.items():
                existing = self._lazy.get(name) or self._loaded.get(name)
                if existing is not None and existing != value and name not in self._from_entry_points:
                    raise RegistryClashError(
                        f"{self.kind} {name!r} is declared twice: {existing!r} (registered through the API) "
                        f"and {value!r} (entry point from {dist}). Rename one of them."
                    )
            for name, (value, _) in seen.items():
                self._lazy[name] = value
                self._from_entry_points.add(name)
            self._entry_points_scanned = True

    def refresh(self) -> None:
        """Forget what the entry points gave and scan them again on next use: for a process
        whose installed distributions changed (a plug-in installed or removed meanwhile).
        Names registered through the API stay."""
        with self._lock:
            for name in self._from_entry_points:
                self._lazy.pop(name, None)
                self._loaded.pop(name, None)
            self._from_entry_points = set()
            self._entry_points_scanned = False

    def names(self) -> list[str]:
        self._scan_entry_points()
        return sorted(set(self._lazy) | set(self._loaded))

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def get(self, name: str) -> T:
        """The registered object; unknown names fail with the valid choices."""
        if name in self._loaded:
            return self._loaded[name]
        self._scan_entry_points()
        if name not in self._lazy:
            raise unknown_name(self.kind, name, self.names())
        module, _, attr = self._lazy[name].partition(":")
        obj = getattr(importlib.import_module(module), attr)
        self._loaded[name] = obj
        return obj

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def suite_class(suites: Any, name: str | None) -> Any:
    """The suite class registered as `name` in `suites` (a mapping, or a Registry; None:
    the SUITES registry), or None when it is not installed or fails to import. What the
    core (reports, gates) uses to ask a result's suite through its hooks."""
    if suites is None:
        suites = SUITES
    if not name:
        return None
    try:
        return suites.get(name)
    except Exception:  # an unknown or broken plug-in loses what its hooks give, nothing else
        return None


# The three registries of the workbench. Suites, built-in or third-party, are discovered one
# way only: the "workbench.suites" entry-point group (pyproject.toml declares the built-ins).
# Models and datasets are declared here as strings; plug-ins may add more by entry point.
SUITES: Registry = Registry("suite", entry_point_group="workbench.suites")
MODELS: Registry = Registry("model architecture", entry_point_group="workbench.models")
DATASETS: Registry = Registry("dataset", entry_point_group="workbench.datasets")

for _name, _path in {
    "mlp": "workbench.models.mlp:build",
    "cnn": "workbench.models.cnn:build",
    "lstm": "workbench.models.lstm:build",
    "transformer": "workbench.models.transformer:build",
    "gpt": "workbench.models.gpt:build",
    "hf": "workbench.hf.model:build",  # a Hugging Face directory (optional `hf` extra)
}.items():
    MODELS.register(_name, _path)

for _name, _path in {
    "digits": "workbench.data.builtin:load_digits",
    "breast_cancer": "workbench.data.builtin:load_breast_cancer",
    "wine": "workbench.data.builtin:load_wine",
    "diabetes": "workbench.data.builtin:load_diabetes",
    "pydoc_text": "workbench.data.builtin:load_pydoc_text",
    "synthetic_hetero_regression": "workbench.data.synthetic:hetero_regression",
    "synthetic_tabular": "workbench.data.synthetic:tabular_relevant",
    "synthetic_tokens": "workbench.data.synthetic:tokens_relevant",
    "synthetic_markov_lm": "workbench.data.synthetic:markov_lm",
}.items():
    DATASETS.register(_name, _path)
