"""The strategy contract: ``prepare`` once per search, ``run`` once per trial.

A strategy is a class registered through the ``register_strategies`` hook (plugins import everything
they need from :mod:`automl_prune.api`). The orchestrator builds a :class:`Context` (base model, data,
task, device, seed, run directory, progress, the search space's budget parameter), then:

- ``prepare(context, settings)`` does the work every trial shares (an explainer, reference features).
  ``settings`` holds the values of the space parameters the strategy names in ``prepare_params``: the
  parameters that shape ``prepare``, read from the space's fixed values or defaults. The result is
  cached on disk under a content key (strategy, ``version``, base weights, data, seed, ``settings`` and
  ``prepare_key``), so a second search on the same base model reuses it. A trial whose prepare-time
  values differ (a searched one, or ``--set`` on one) gets artifacts prepared for its own values,
  through the same cache, once per process (:meth:`Prepared.artifacts_for
  <automl_prune.search.setup.Prepared.artifacts_for>`).
- ``run(context, params, artifacts)`` is one trial, with the parameters the sampler drew from the
  strategy's search space and the artifacts prepared for them. It returns a :class:`Candidate`: the
  physically pruned model and its quality on the validation split. Most strategies end with
  :meth:`Context.finish`, the recipe every trial shares: fine-tune with the shared budget
  (``finetune_epochs``, ``lr``, ``distill``), score val and test, build the Candidate. The FLOPs target
  is :meth:`Context.target_flops` (the space's budget parameter, whatever its name), figures go to
  :meth:`Context.figure_path`.

The orchestrator measures FLOPs, parameters and latency itself, with one convention for every strategy.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader

from automl_prune.data.base import DataSplits
from automl_prune.errors import SpaceError
from automl_prune.latency import SEARCH_BUDGET_S
from automl_prune.model_io import Inputs, to_device
from automl_prune.models.base import ModelRef
from automl_prune.progress import Progress
from automl_prune.tasks.base import Task

#: The space parameters of the fine-tuning budget every compared strategy shares (:meth:`Context.finish`):
#: epochs, learning rate, and whether to distil from the base model (False when a space has no ``distill``).
FINETUNE_PARAMS = ("finetune_epochs", "lr", "distill")


@dataclass
class Context:
    """Everything a strategy may use. ``model`` is the trained base model: copy it before changing it.

    ``budget_param`` names the search space's budget parameter (``budget:`` in the space file), whose
    value is a trial's FLOPs target as a ratio of ``base_flops``; read it with :meth:`budget_ratio` or
    :meth:`target_flops`, never by name.
    """

    model: nn.Module
    model_ref: ModelRef
    data: DataSplits
    task: Task
    device: torch.device
    seed: int
    run_dir: Path
    cache_dir: Path
    progress: Progress
    base_flops: int
    max_flops: float | None = None
    batch_size: int = 64
    budget_param: str | None = None
    latency_budget_s: float = SEARCH_BUDGET_S  # timed seconds per model in a trial's latency

    def example_input(self, batch: int = 1) -> Inputs:
        """The task's example inputs of one model call (a tensor, tuple or dict) on the device."""
        return to_device(self.task.example_input(self.data, batch), self.device)

    def loader(self, split: str, *, shuffle: bool = False, batch_size: int | None = None) -> DataLoader:
        dataset = getattr(self.data, split)
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            dataset, batch_size=batch_size or self.batch_size, shuffle=shuffle, generator=generator
        )

    def first_batch(self, split: str, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` items of ``split`` (default: one batch), unshuffled, on the device: the same
        inputs on every call, for checks, figures and fixed evaluation sets."""
        x, y = next(iter(self.loader(split, batch_size=n)))
        return x.to(self.device), y.to(self.device)

    def flops(self, model: nn.Module) -> int:
        """FLOPs of ``model`` by the task's convention (fvcore, batch 1; per denoising step for diffusion)."""
        return self.task.flops(model.to(self.device), self.data)

    def evaluate(self, model: nn.Module, split: str = "val") -> dict[str, float]:
        return self.task.evaluate(model, self.data, split, batch_size=self.batch_size, device=self.device)

    def finetune(self, model: nn.Module, *, epochs: int, lr: float, distill: bool = False) -> nn.Module:
        """Fine-tune with the task's own recipe: the same budget for every strategy that is compared.

        With ``distill``, the base model is the teacher.
        """
        return self.task.train(
            model,
            self.data,
            epochs=epochs,
            lr=lr,
            batch_size=self.batch_size,
            device=self.device,
            seed=self.seed,
            progress=self.progress,
            teacher=self.model if distill else None,
        )

    def scores(self, model: nn.Module) -> tuple[float, dict[str, float]]:
        """Validation quality (what selection uses) and ``val_*``/``test_*`` metrics (test: reported only)."""
        val, test = self.evaluate(model, "val"), self.evaluate(model, "test")
        metrics = {**{f"val_{k}": v for k, v in val.items()}, **{f"test_{k}": v for k, v in test.items()}}
        return val[self.task.quality_metric], metrics

    def budget_ratio(self, params: Mapping[str, Any]) -> float:
        """The trial's budget as a ratio of the base model's: the value of the space's budget parameter."""
        if self.budget_param is None:
            raise SpaceError(
                "the search space names no budget parameter, so a trial has no FLOPs target",
                "add `budget: NAME` to the space file, NAME being the float parameter of the target ratio",
            )
        return float(params[self.budget_param])

    def target_flops(self, params: Mapping[str, Any]) -> float:
        """The trial's absolute FLOPs target in the task's unit: :meth:`budget_ratio` times ``base_flops``."""
        return self.budget_ratio(params) * self.base_flops

    def call_target_flops(self, params: Mapping[str, Any]) -> float:
        """The target in FLOPs of one model call at :meth:`example_input`: what a FLOPs model of the model
        (``GatedFlops``, ``count_flops``) counts. It is :meth:`target_flops` for a task whose unit is one
        call, half of it where a denoising step makes two (classifier-free guidance)."""
        return self.target_flops(params) / self.task.model_calls

    def figure_path(self, stem: str, suffix: str = ".png") -> Path:
        """A fresh path for a trial's figure: ``RUN_DIR/figures/STEM_<12 hex digits>SUFFIX``, unique per
        call, so trials running side by side (Ray) never overwrite each other's figures."""
        return Path(self.run_dir) / "figures" / f"{stem}_{uuid.uuid4().hex[:12]}{suffix}"

    def finetune_trial(self, model: nn.Module, params: Mapping[str, Any]) -> nn.Module:
        """:meth:`finetune` with the budget the trial's ``params`` give (:data:`FINETUNE_PARAMS`):
        ``finetune_epochs`` epochs at ``lr``, distilled from the base model when ``distill`` is true
        (False when the space has no ``distill``)."""
        return self.finetune(
            model,
            epochs=int(params["finetune_epochs"]),
            lr=float(params["lr"]),
            distill=bool(params.get("distill", False)),
        )

    def finish(
        self,
        model: nn.Module,
        params: Mapping[str, Any],
        *,
        target_flops: float | None,
        metrics: Mapping[str, float] | None = None,
        spec: Mapping[str, Any] | None = None,
        figures: Iterable[Path] = (),
        finetune: bool = True,
    ) -> Candidate:
        """The end every trial shares: fine-tune ``model`` in place with the shared budget
        (:meth:`finetune_trial`; ``finetune=False`` for a strategy that has trained it its own way), put
        it in eval mode, score it on val and test (:meth:`scores`) and build the :class:`Candidate`.

        ``metrics`` are added after the ``val_*``/``test_*`` scores; ``spec`` and ``figures`` go into the
        Candidate as they are. A strategy may add more to the returned Candidate (metrics measured on
        the fine-tuned model, figures of it).
        """
        if finetune:
            self.finetune_trial(model, params)
        model.eval()
        quality, scores = self.scores(model)
        return Candidate(
            model=model,
            quality=quality,
            target_flops=target_flops,
            metrics={**scores, **(metrics or {})},
            spec=dict(spec or {}),
            figures=list(figures),
        )


@dataclass
class Candidate:
    """One trial's result: a physically pruned model and its measurements.

    Strategies fill ``model``, ``quality`` (the task's quality metric on the validation split) and
    ``target_flops``; the orchestrator fills ``flops``, ``params`` and ``latency_ms``. ``spec`` holds
    architecture facts to store with the model (e.g. kernel sizes); ``figures`` are image files to log.
    """

    model: nn.Module
    quality: float
    target_flops: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    flops: int | None = None
    params: int | None = None
    latency_ms: float | None = None
    spec: dict[str, Any] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)


class Strategy:
    """Base class of pruning strategies. Subclass it and register it with ``register_strategies``.

    Class attributes:
        name: what users pass to ``--strategy``.
        tasks: the task names it can prune (``classification``, ``image-translation``, ...).
        space: path of its default search-space YAML (``space_for`` finds a task-specific one). It is
            also the declaration of the parameters the strategy knows and needs and of the values it
            accepts (``limits``): a user's ``--space`` and ``--set`` are checked against it before any
            work (:mod:`automl_prune.space`).
        version: bump it when ``prepare`` changes, so cached artifacts are not reused.
        prepare_params: the names of its space parameters that shape ``prepare`` (an explainer's
            epochs, a reference set's size); ``prepare`` gets their values as ``settings``. Every space
            the strategy searches must hold them.
    """

    name: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]] = ("classification",)
    space: ClassVar[Path]
    version: ClassVar[str] = "1"
    description: ClassVar[str] = ""
    prepare_params: ClassVar[tuple[str, ...]] = ()

    def space_for(self, task: str) -> Path:
        """The default search space for pruning a ``task`` model: ``NAME.TASK.yaml`` beside ``space``
        when the strategy ships one (a diffusion UNet fine-tunes with Adam at other learning rates than a
        classifier with SGD), else ``space``."""
        specific = self.space.with_name(f"{self.space.stem}.{task}{self.space.suffix}")
        return specific if specific.is_file() else self.space

    def prepare_key(self, context: Context) -> dict[str, Any]:
        """Inputs of ``prepare`` that are neither the base model, the data, the seed nor ``settings`` (e.g. a
        file named by an environment variable): they go into the cache key. Most strategies need none."""
        return {}

    def prepare(self, context: Context, settings: dict[str, Any]) -> dict[str, Any]:
        """Work shared by all trials (an explainer, reference features), for the prepare-time parameter
        values ``settings`` (``{name: value}`` for each of ``prepare_params``). Must be torch.save-able
        (tensors, numbers, strings, lists and dicts of them): it is cached on disk."""
        return {}

    def run(self, context: Context, params: dict[str, Any], artifacts: dict[str, Any]) -> Candidate:
        """One trial: prune ``context.model`` as ``params`` say, fine-tune, and measure quality.
        ``artifacts`` are what ``prepare`` returned for the prepare-time values in ``params``."""
        raise NotImplementedError

    def min_flops(self, architecture: nn.Module, example: Inputs) -> float | None:
        """The fewest FLOPs this strategy can reach on ``architecture`` called with ``example`` (None if
        unknown). Called for every search on an untrained copy before any training, so an unreachable
        budget, and a model the strategy cannot trace or analyse (an exception here), fail early with
        ``error:``/``fix:`` instead of in every trial: only the architecture may matter, not the weights."""
        return None
