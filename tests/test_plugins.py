"""Plugin discovery: an outside package is found through its entry point, and a broken one is isolated."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from automl_prune import hookimpl
from automl_prune.api import Strategy
from automl_prune.errors import UnknownNameError
from automl_prune.plugins import get_plugins, load_plugins
from tests.toy import cli, make_distribution, subprocess_env


def test_builtins_are_registered_as_entry_points() -> None:
    plugins = load_plugins()
    assert plugins.strategies.entry("magnitude").source.startswith("magnitude (automl-prune)")
    assert {"resnet20", "resnet56", "resnet18", "mobilenet_v2"} <= set(plugins.models.names())
    assert {"digits", "fashion-mnist"} <= set(plugins.datasets.names())
    assert "classification" in plugins.tasks
    assert plugins.pm.get_plugin("mlflow") is not None


@pytest.mark.parametrize("toy_plugin", [{"broken": True}], indirect=True)
def test_outside_plugin_is_discovered_and_a_broken_one_reported(toy_plugin: Path) -> None:
    plugins = get_plugins()
    entry = plugins.strategies.entry("toy-keep-first")
    assert entry.source == "toy (automl-prune-toy)"
    assert entry.meta["tasks"] == ("classification",)
    assert plugins.models.entry("toy-cnn").source == "toy (automl-prune-toy)"
    [failure] = plugins.failures
    assert failure.name == "broken" and "ModuleNotFoundError" in failure.error
    assert "magnitude" in plugins.strategies  # the others still load


def test_plugins_command_lists_sources_and_failures(tmp_path: Path) -> None:
    root = make_distribution(tmp_path / "site", broken=True)
    out = subprocess.run(
        cli("plugins"), env=subprocess_env(root, COLUMNS="200"), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "toy-keep-first" in out.stdout and "automl-prune-toy" in out.stdout
    assert "magnitude" in out.stdout and "classification" in out.stdout
    assert "plugin 'broken'" in out.stdout and "failed to load" in out.stdout


#: The core modules plugins may import: the plugin API and the pruning toolbox.
PLUGIN_API = {"automl_prune.api", "automl_prune.pruning"}


def _core_imports(path: Path) -> list[str]:
    """``file:line module`` for every import of a core module in ``path`` outside :data:`PLUGIN_API`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
            if node.module == "automl_prune":  # from automl_prune import api, pruning, Strategy...
                modules = [f"automl_prune.{alias.name}" for alias in node.names]
        else:
            continue
        found += [
            f"{path.parent.name}/{path.name}:{node.lineno} {m}"
            for m in modules
            if (m == "automl_prune" or m.startswith("automl_prune.")) and m not in PLUGIN_API
        ]
    return found


def test_plugins_import_the_core_only_through_the_plugin_api() -> None:
    """Built-in plugins use only ``automl_prune.api`` and ``automl_prune.pruning`` (and their own
    package), like a third-party plugin would: no private helper or internal module of the core."""
    files = sorted((Path(__file__).parents[1] / "plugins").rglob("*.py"))
    assert files
    offending = [hit for path in files for hit in _core_imports(path)]
    assert not offending, "plugins import core modules other than the plugin API:\n" + "\n".join(offending)


class RaisingPlugin:
    """Its registration hook raises after registering one good model."""

    @staticmethod
    @hookimpl
    def register_models(register):
        register("good-cnn", lambda info: torch.nn.Conv2d(1, 1, 1), task="classification")
        raise RuntimeError("boom in register_models")


class SquattingPlugin:
    """Takes a name a built-in holds, registers a non-strategy and a task without the Task members."""

    @staticmethod
    @hookimpl
    def register_strategies(register):
        class Magnitude(Strategy):
            name = "magnitude"
            tasks = ("classification",)

        register(Magnitude)
        register(object)

    @staticmethod
    @hookimpl
    def register_tasks(register):
        register(type("HalfTask", (), {"name": "half"})())


def test_plugins_fail_alone_and_are_named_where_a_name_is_missing() -> None:
    plugins = load_plugins(extra=[RaisingPlugin, SquattingPlugin])
    failures = {(f.name, f.error.split(":")[0]) for f in plugins.failures}
    assert ("RaisingPlugin", "register_models") in failures
    errors = " | ".join(f.error for f in plugins.failures)
    assert "boom in register_models" in errors
    assert "'magnitude' is registered by both" in errors
    assert "not a subclass of Strategy" in errors
    assert "lacks the Task members" in errors and "quality_metric" in errors
    assert plugins.strategies.entry("magnitude").source.startswith("magnitude (automl-prune)")  # kept
    assert "good-cnn" in plugins.models and "resnet20" in plugins.models  # the rest still loads
    assert "half" not in plugins.tasks
    with pytest.raises(UnknownNameError, match="half") as info:
        plugins.tasks.get("half")
    assert "SquattingPlugin" in info.value.fix and "lacks the Task members" in info.value.fix


#: Libraries that only a command's work needs, never the registration of the plugins.
HEAVY = ("torchvision", "sklearn", "mlflow", "optuna", "diffusers", "ray")


def _imported_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(','.join(m for m in {(*HEAVY, 'torch')!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return [m for m in out.stdout.strip().split(",") if m]


def test_the_cli_and_plugin_registration_import_nothing_heavy() -> None:
    """``automl-prune --help`` answers at once: the CLI and the package import no torch; registering
    every plugin imports none of the heavy libraries (torch itself does load then: strategy classes
    subclass :class:`Strategy` and tasks are registered as instances, both defined with torch)."""
    assert _imported_after("import automl_prune, automl_prune.cli, automl_prune.plugins") == []
    loaded = _imported_after("import automl_prune.plugins as p\nassert p.get_plugins().strategies")
    assert [m for m in loaded if m in HEAVY] == []
