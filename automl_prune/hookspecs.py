"""The plugin contract: every hook a plugin may implement.

Registration hooks receive a ``register`` callback (as in llm and datasette) and call it once per thing
they provide. Lifecycle hooks are notifications for observers such as the MLflow tracker (``check_search``,
``search_started``, ``trial_finished``, then ``search_finished`` or ``search_failed``); only
``search_finished`` may return something: a line for the user's terminal. Implement them with
``hookimpl`` (plugins import it, like everything else they take from the core, from
:mod:`automl_prune.api`)::

    from automl_prune.api import hookimpl

    @hookimpl
    def register_strategies(register):
        register(MyStrategy)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from automl_prune.search.records import SearchInfo, TrialRecord

hookspec = pluggy.HookspecMarker("automl_prune")
hookimpl = pluggy.HookimplMarker("automl_prune")


@hookspec
def register_strategies(register: Any) -> None:
    """Register pruning strategies: call ``register(StrategyClass)`` for each.

    A strategy class subclasses :class:`automl_prune.api.Strategy` (the contract is in
    :mod:`automl_prune.strategy`); its ``name`` is what users pass to ``--strategy``.
    """


@hookspec
def register_models(register: Any) -> None:
    """Register model factories: ``register(name, factory, task=..., description=...)``.

    ``factory(info: DataInfo, **kwargs) -> nn.Module`` builds an untrained model for the data.
    """


@hookspec
def register_datasets(register: Any) -> None:
    """Register datasets: ``register(name, factory, task=..., description=...)``.

    ``factory(arg: str | None, **options) -> DataSplits`` returns train/val/test splits; ``arg`` is what
    follows the colon in ``--data name:arg`` (a folder, a torchvision class name, ...).
    """


@hookspec
def register_tasks(register: Any) -> None:
    """Register tasks (``classification``, ``image-translation``, ...): ``register(TaskInstance)``.

    A task knows how to train and evaluate a model for its kind of data and which metric is its
    quality, so the core treats classifiers, GANs and diffusion models alike.
    """


@hookspec
def register_layer_rules(register: Any) -> None:
    """Register how the pruning toolbox treats a module type it prunes: ``register(LayerRule(...))``.

    A rule says which child layers lose channels only in blocks (attention heads), how the module's own
    attributes follow new widths after slicing, and which attributes a saved model records (see
    :mod:`automl_prune.pruning.layers`).
    """


@hookspec
def check_search(search: SearchInfo) -> None:
    """Check, before any training and before anything is written, that what this plugin will need is
    there (a tracking server that answers, ...); raise an ``AutomlPruneError`` to stop the search."""


@hookspec
def search_started(search: SearchInfo) -> None:
    """A search is about to run its first trial (also called when a search is resumed); the base model
    is measured (``search.base``)."""


@hookspec
def trial_finished(search: SearchInfo, trial: TrialRecord) -> None:
    """A trial ended, completed or failed; ``trial.model_dir`` holds the saved pruned model."""


@hookspec
def search_failed(search: SearchInfo, error: BaseException) -> None:
    """The search stopped with ``error`` after ``search_started`` (every trial failed, a hook or the
    backend raised, or ``KeyboardInterrupt``): ``search_finished`` will not be called. Observers end
    what they opened (the MLflow tracker marks the parent run FAILED, or KILLED when interrupted).
    Must not raise: the orchestrator only logs what a hook raises here and re-raises ``error``."""


@hookspec
def search_finished(search: SearchInfo, trials: list[TrialRecord], front: list[TrialRecord]) -> str | None:
    """All trials ended; ``front`` is the Pareto front (quality max, FLOPs min) of the feasible trials.

    Return a one-line summary to print after the front (e.g. where the runs went), or None.
    """
