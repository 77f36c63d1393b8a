"""Tasks: how each kind of model is called, trained, costed and judged (see :mod:`.base`)."""

from __future__ import annotations

from automl_prune.tasks.base import Task


def task_for(model: str, data_task: str) -> Task:
    """The task of ``model`` on data registered for ``data_task``: the model's own registered task
    (a DDPM UNet is a diffusion model on any image data), else the data's."""
    from automl_prune.models.registry import model_task
    from automl_prune.plugins import get_plugins

    return get_plugins().tasks.get(model_task(model) or data_task)
