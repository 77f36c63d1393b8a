"""Plugin discovery: built-in and third-party plugins, all through the ``automl_prune`` entry points.

Built-in strategies, models, datasets, tasks and the MLflow tracker are registered in pyproject.toml
exactly like a third-party package registers its own, so the third-party path runs on every call.

A plugin fails alone: one that cannot be imported, whose registration hook raises, that registers a name
another plugin already holds, or whose object breaks the contract (a strategy that is not a
:class:`~automl_prune.strategy.Strategy` subclass, a task without the :class:`~automl_prune.tasks.base.Task`
members, a factory that is not callable) is recorded with its name and the reason, listed by
``automl-prune plugins`` and named in the error of a command that asks for a missing name; everything
else still loads.
"""

from __future__ import annotations

import importlib.metadata
import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pluggy

from automl_prune import hookspecs
from automl_prune.errors import AutomlPruneError
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

    def __post_init__(self) -> None:
        for registry in (self.strategies, self.models, self.datasets, self.tasks):
            registry.failures = self.failures  # an unknown name's error lists the plugins that failed

    @property
    def hook(self) -> Any:
        return self.pm.hook


class ContractError(AutomlPruneError):
    """A plugin registered something that does not keep the plugin contract."""


def _register_strategy(registry: Registry[Any], strategy_cls: Any, *, source: str) -> None:
    from automl_prune.strategy import Strategy

    if not (isinstance(strategy_cls, type) and issubclass(strategy_cls, Strategy)):
        raise ContractError(f"register_strategies got {strategy_cls!r}, not a subclass of Strategy")
    name, tasks = getattr(strategy_cls, "name", None), getattr(strategy_cls, "tasks", None)
    if not isinstance(name, str) or not name or not isinstance(tasks, tuple):
        raise ContractError(f"strategy {strategy_cls.__name__} needs a `name` string and a `tasks` tuple")
    registry.register(name, strategy_cls, source=source, tasks=tasks)


def _register_named(registry: Registry[Any], name: str, obj: Any, *, source: str, **meta: Any) -> None:
    if not isinstance(name, str) or not name or not callable(obj):
        raise ContractError(f"a {registry.kind} is registered as (name, factory), got ({name!r}, {obj!r})")
    registry.register(name, obj, source=source, **meta)


def _register_task(registry: Registry[Any], task: Any, *, source: str) -> None:
    from automl_prune.tasks.base import Task

    if not isinstance(task, Task):
        members = {*Task.__annotations__, *(m for m in vars(Task) if not m.startswith("_"))}
        missing = [m for m in members if not hasattr(task, m)]
        raise ContractError(f"task {task!r} lacks the Task members {', '.join(sorted(missing))}")
    registry.register(task.name, task, source=source)


def _register_layer_rule(rules: list[Any], rule: Any, *, source: str) -> None:
    from automl_prune.pruning.layers import LayerRule

    if not isinstance(rule, LayerRule):
        raise ContractError(f"register_layer_rules got {rule!r}, not a LayerRule")
    rules.append(rule)


def _fill(plugins: Plugins) -> None:
    """Call each registration hook once per plugin, so every entry knows the plugin it came from; what
    a plugin gets wrong is recorded as its failure and the rest goes on."""
    calls = {
        "register_strategies": partial(_register_strategy, plugins.strategies),
        "register_models": partial(_register_named, plugins.models),
        "register_datasets": partial(_register_named, plugins.datasets),
        "register_tasks": partial(_register_task, plugins.tasks),
        "register_layer_rules": partial(_register_layer_rule, plugins.layer_rules),
    }
    for hook_name, register in calls.items():
        for impl in getattr(plugins.pm.hook, hook_name).get_hookimpls():
            guarded = partial(_register_or_fail, plugins, register, impl.plugin_name, hook_name)
            try:
                impl.function(register=guarded)
            except Exception as exc:
                _fail(plugins, impl.plugin_name, hook_name, exc)


def _register_or_fail(
    plugins: Plugins, register: Any, name: str, hook_name: str, *args: Any, **kw: Any
) -> None:
    """One registration; a bad entry is the plugin's failure, and its other entries still count."""
    try:
        register(*args, source=plugins.sources.get(name, name), **kw)
    except AutomlPruneError as exc:
        _fail(plugins, name, hook_name, exc)


def _fail(plugins: Plugins, name: str, hook_name: str, exc: Exception) -> None:
    value = plugins.sources.get(name, name)
    message = exc.problem if isinstance(exc, AutomlPruneError) else f"{type(exc).__name__}: {exc}"
    plugins.failures.append(PluginFailure(name, value, f"{hook_name}: {message}"))
    log.warning("plugin %r: %s failed: %s", name, hook_name, message)


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
