"""Install the outside test plugin (tests/fixtures/toy_plugin) through a test-scoped entry point."""

from __future__ import annotations

import os
import sys
from pathlib import Path

FIXTURE = Path(__file__).parent / "fixtures" / "toy_plugin"


def make_distribution(root: Path, *, broken: bool = False) -> Path:
    """A dist-info in ``root`` declaring the toy plugin (and optionally one that cannot import)."""
    info = root / "automl_prune_toy-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: automl-prune-toy\nVersion: 0.1\n")
    lines = ["[automl_prune]", "toy = automl_prune_toy"]
    if broken:
        lines.append("broken = automl_prune_toy_missing_module")
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return root


def subprocess_env(root: Path, **extra: str) -> dict[str, str]:
    """Environment for a CLI subprocess that sees the toy plugin."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(FIXTURE), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "automl_prune", *args]
