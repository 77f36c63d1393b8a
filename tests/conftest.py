"""Shared test set-up: one thread, offline hubs, a private cache directory per test session."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # CLI subprocesses too: two cores, several processes
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Base models and prepared artifacts are cached per test session, never in the user's cache."""
    monkeypatch.setenv("AUTOML_PRUNE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def toy_plugin(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """The outside toy plugin installed in this process through a test-scoped entry point.

    Parametrise indirectly with ``{"broken": True}`` to also declare a plugin that cannot import.
    """
    from automl_prune.plugins import reset_plugins
    from tests.toy import FIXTURE, make_distribution

    root = make_distribution(tmp_path / "site", **getattr(request, "param", {}))
    monkeypatch.syspath_prepend(str(FIXTURE))
    monkeypatch.syspath_prepend(str(root))
    reset_plugins()
    yield root
    sys.modules.pop("automl_prune_toy", None)
    reset_plugins()
