"""The built-in tasks, registered through the ``register_tasks`` hook like any plugin's."""

from __future__ import annotations

from typing import Any

from automl_prune.hookspecs import hookimpl
from automl_prune.tasks.classification import ClassificationTask


@hookimpl
def register_tasks(register: Any) -> None:
    register(ClassificationTask())
