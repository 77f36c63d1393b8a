"""Plugin discovery: built-in and third-party plugins, all through the ``automl_prune`` entry points.

Built-in strategies, models, datasets, tasks and the MLflow tracker are registered in pyproject.toml
exactly like a third-party package registers its own, so the third-party path runs on every call. A
plugin that fails to import is recorded (name and error) and reported; the others still load.
"""

from __future__ import annotations

import importlib.metadata
import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pluggy

from automl_prune import hookspecs
from automl_prune.errors import UnknownNameError
from automl_prune.registry import Registry

ENTRY_POINT_GROUP = "automl_prune"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded: its entry-point name, where it points, and why."""

    name: str
    value: str
    error: str


@dataclass
class Plugins:
    """The loaded plugin manager and the registries its plugins filled."""

    pm: pluggy.PluginManager
    strategies: Registry[Any] = field(default_factory=lambda: Registry("strategy"))
    models: Registry[Any] = field(default_factory=lambda: Registry("model"))
    datasets: Registry[Any] = field(default_factory=lambda: Registry("dataset"))
    tasks: Registry[Any] = field(default_factory=lambda: Registry("task"))
    layer_rules: list[Any] = field(default_factory=list)
    failures: list[PluginFailure] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # plugin name -> distribution

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def strategy(self, name: str) -> Any:
        """The strategy class ``name``; an unknown name also lists plugins that failed to load."""
        try:
            return self.strategies.get(name)
        except UnknownNameError as exc:
            if self.failures:
                broken = "; ".join(f"{f.name} ({f.error})" for f in self.failures)
                exc.fix += f"; plugins that failed to load: {broken}"
            raise


def _register_strategy(registry: Registry[Any], strategy_cls: Any, *, source: str) -> None:
    registry.register(strategy_cls.name, strategy_cls, source=source, tasks=tuple(strategy_cls.tasks))


def _register_named(registry: Registry[Any], name: str, obj: Any, *, source: str, **meta: Any) -> None:
    registry.register(name, obj, source=source, **meta)


def _register_task(registry: Registry[Any], task: Any, *, source: str) -> None:
    registry.register(task.name, task, source=source)


def _fill(plugins: Plugins) -> None:
    """Call each registration hook once per plugin, so every entry knows the plugin it came from."""
    calls = {
        "register_strategies": partial(_register_strategy, plugins.strategies),
        "register_models": partial(_register_named, plugins.models),
        "register_datasets": partial(_register_named, plugins.datasets),
        "register_tasks": partial(_register_task, plugins.tasks),
        "register_layer_rules": lambda rule, source: plugins.layer_rules.append(rule),
    }
    for hook_name, register in calls.items():
        for impl in getattr(plugins.pm.hook, hook_name).get_hookimpls():
            source = plugins.sources.get(impl.plugin_name, impl.plugin_name)
            impl.function(register=partial(register, source=source))


def load_plugins(extra: list[Any] | None = None) -> Plugins:
    """Load every ``automl_prune`` entry point (plus ``extra`` plugin objects) into a fresh manager."""
    pm = pluggy.PluginManager("automl_prune")
    pm.add_hookspecs(hookspecs)
    plugins = Plugins(pm=pm)
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if pm.get_plugin(ep.name) is not None:
            continue
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
        except Exception as exc:
            plugins.failures.append(PluginFailure(ep.name, ep.value, f"{type(exc).__name__}: {exc}"))
            log.warning("plugin %r (%s) failed to load: %s", ep.name, ep.value, exc)
            continue
        dist = getattr(ep, "dist", None)
        plugins.sources[ep.name] = f"{ep.name} ({dist.name})" if dist is not None else ep.name
    for obj in extra or []:
        pm.register(obj)
    _fill(plugins)
    return plugins


_PLUGINS: Plugins | None = None


def get_plugins() -> Plugins:
    """The process-wide plugin set, loaded on first use."""
    global _PLUGINS
    if _PLUGINS is None:
        _PLUGINS = load_plugins()
    return _PLUGINS


def reset_plugins() -> None:
    """Forget the loaded plugins (tests, or after installing a plugin in a running process)."""
    global _PLUGINS
    _PLUGINS = None
