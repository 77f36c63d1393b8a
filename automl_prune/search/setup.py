"""Turn a :class:`SearchConfig` into a ready search: resolved plugins, base model, context, artifacts.

Two phases, so mistakes surface before any training: :func:`plan_search` resolves names, the search
space and the budget in seconds (an untrained copy of the architecture is enough to count FLOPs and the
fewest the strategy can reach);
:func:`prepare_search` then trains or loads the base model, builds the :class:`Context`, and runs the
strategy's cached ``prepare`` with the space's initial prepare-time settings (fixed values or defaults of
``Strategy.prepare_params``). Both are memoised per process, so Ray workers build them once; a trial
whose prepare-time values differ gets its own artifacts through :meth:`Prepared.artifacts_for`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

import torch

from automl_prune.data.base import DataSplits
from automl_prune.data.preprocessing import override_options
from automl_prune.data.registry import load_dataset, parse_spec
from automl_prune.errors import AutomlPruneError, BudgetError, SpaceError
from automl_prune.flops import Budget
from automl_prune.io import atomic_write_bytes, cache_dir, content_key
from automl_prune.latency import latency_metrics
from automl_prune.models.base import ModelRef
from automl_prune.models.checkpoints import load_pretrained
from automl_prune.models.pretrained import get_base_model
from automl_prune.models.registry import build_model, default_preprocessing
from automl_prune.plugins import get_plugins
from automl_prune.progress import Progress
from automl_prune.search import validate
from automl_prune.search.config import SearchConfig
from automl_prune.space import SearchSpace, conform_space, load_space
from automl_prune.strategy import Context, Strategy
from automl_prune.tasks import task_for
from automl_prune.tasks.base import Task

log = logging.getLogger(__name__)
MODEL_PREPROCESSING = ("mean", "std", "crop_pct", "interpolation")  # what a model's own config may set


@dataclass
class Plan:
    """A search whose names, space and budget are valid; nothing trained yet."""

    config: SearchConfig
    strategy: Strategy
    task: Task
    data: DataSplits
    model_ref: ModelRef
    space: SearchSpace
    base_flops: int
    max_flops: float | None


@dataclass
class Prepared:
    """A search ready to run trials: ``artifacts`` are what ``prepare`` returned for ``settings``, the
    space's initial prepare-time values; ``key`` is their cache key."""

    plan: Plan
    context: Context
    artifacts: dict[str, Any]
    base: dict[str, float]
    settings: dict[str, Any] = field(default_factory=dict)
    key: str = ""
    _weights: str = field(default="", repr=False)
    _others: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def artifacts_for(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The prepared artifacts for a trial's ``params``: :attr:`artifacts` when its prepare-time values
        (and the strategy's ``prepare_key``) are the search's, else ``prepare`` for its own values,
        through the same disk cache, kept in memory for the later trials of this process."""
        strategy, context = self.plan.strategy, self.context
        settings = prepare_settings(strategy, params)
        self._weights = self._weights or weights_digest(context.model)
        key = prepared_key(strategy, context, settings, self._weights)
        if key == self.key:
            return self.artifacts
        if key not in self._others:
            context.progress.log(f"{strategy.name}: preparing for {settings}")
            self._others[key] = cached_prepare(strategy, context, settings, key=key)
        return self._others[key]


DEVICES = "cpu, cuda, cuda:N, mps or auto"


def resolve_device(name: str) -> torch.device:
    """The torch device for ``--device`` (cpu, cuda, cuda:N, mps or auto), checked to exist here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise AutomlPruneError(f"unknown device {name!r}", f"use {DEVICES}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise AutomlPruneError(f"device {name!r} requested but CUDA is not available", "use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise AutomlPruneError(
                f"device {name!r} requested but there are {torch.cuda.device_count()} CUDA devices",
                f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}, or cuda",
            )
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise AutomlPruneError(f"device {name!r} requested but MPS is not available", "use --device cpu")
    elif device.type != "cpu":
        raise AutomlPruneError(f"device {name!r} is not supported", f"use {DEVICES}")
    return device


def load_data(config: SearchConfig) -> DataSplits:
    """The search's data: the dataset with the user's options, over the preprocessing the model's family
    states (a timm model's pretrained mean, std, crop_pct and interpolation) where the dataset takes those
    options. Statistics for other channels than the data's (RGB ones on grey data) are averaged to one
    value: the channel-adapted stem sees the mean of what the colour stem saw."""
    data = load_dataset(config.data, **config.data_args)
    accepted = inspect.signature(get_plugins().datasets.get(parse_spec(config.data)[0])).parameters
    stated = {
        k: v
        for k, v in default_preprocessing(config.model).items()
        if k in MODEL_PREPROCESSING and k in accepted and k not in config.data_args
    }
    for key in ("mean", "std"):
        if key in stated and len(stated[key]) != data.info.in_channels:
            stated[key] = [sum(stated[key]) / len(stated[key])]
    options = override_options(stated, dict(config.data_args))
    return data if options == dict(config.data_args) else load_dataset(config.data, **options)


def plan_search(config: SearchConfig) -> Plan:
    """Resolve strategy, data, task, model and space; check everything that can be checked before any
    training (:mod:`automl_prune.search.validate`), the budget included."""
    plugins = get_plugins()
    strategy: Strategy = plugins.strategies.get(config.strategy)()
    resolve_device(config.device)
    data = load_data(config)
    task = task_for(config.model, data.info.task)
    validate.check_data(task, data)
    if task.name not in strategy.tasks:
        raise AutomlPruneError(
            f"strategy {strategy.name!r} prunes {', '.join(strategy.tasks)} models, "
            f"but {config.model!r} on {config.data!r} is a {task.name} model",
            "pick a strategy for this task (`automl-prune plugins` lists each strategy's tasks)",
        )
    model_ref = ModelRef(config.model, dict(config.model_args))
    architecture = build_model(model_ref, data.info)
    validate.check_input_channels(architecture, task.example_input(data, 1), data.info, model_ref.name)
    if config.weights is not None:  # read and fitted now, on the untrained copy, not after minutes
        load_pretrained(architecture, config.weights)
    base_flops = task.flops(architecture, data)
    smallest_call = validate.check_model(strategy, architecture, task.example_input(data, 1), model_ref.name)
    reachable = None if smallest_call is None else smallest_call * task.model_calls  # in the task's unit
    space = declared = load_space(strategy.space_for(task.name))
    if config.space:
        space = conform_space(load_space(config.space), declared, strategy.name)
    space = space.with_overrides(config.overrides)
    validate.check_finetune_values(space)
    missing = [name for name in strategy.prepare_params if name not in space.params]
    if missing:
        raise SpaceError(
            f"{space.source}: the {strategy.name!r} strategy prepares with the parameters "
            f"{', '.join(missing)}, which the space lacks",
            f"add them to the space file (see {strategy.space_for(task.name)})",
        )
    budget = Budget.parse(config.max_flops)
    max_flops = budget.resolve(base_flops) if budget else None
    if max_flops is not None:
        if reachable is not None and reachable > max_flops:
            raise BudgetError(
                f"the FLOPs budget {max_flops / 1e6:.3g}M is below the {reachable / 1e6:.3g}M that "
                f"{strategy.name!r} reaches at its smallest on {model_ref.name}",
                f"raise --max-flops to at least {reachable / base_flops:.3f} (ratio) or use a smaller model",
            )
        space = space.with_budget_cap(max_flops / base_flops)
    return Plan(config, strategy, task, data, model_ref, space, base_flops, max_flops)


def weights_digest(model: torch.nn.Module) -> str:
    """A short hash of ``model``'s weights and buffers, for cache keys."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def prepare_settings(strategy: Strategy, params: Mapping[str, Any]) -> dict[str, Any]:
    """The values in ``params`` (a trial's, or the space's defaults) of ``strategy.prepare_params``."""
    missing = [name for name in strategy.prepare_params if name not in params]
    if missing:
        raise SpaceError(
            f"the {strategy.name!r} strategy prepares with {', '.join(missing)}, which the parameters lack",
            "give every parameter of the strategy's search space",
        )
    return {name: params[name] for name in strategy.prepare_params}


def prepared_key(
    strategy: Strategy, context: Context, settings: Mapping[str, Any], weights: str | None = None
) -> str:
    """The content key of ``strategy.prepare(context, settings)``: everything it depends on (``weights``:
    :func:`weights_digest` of the base model, computed when not given)."""
    return content_key(
        strategy.name,
        strategy.version,
        weights or weights_digest(context.model),
        context.data.info,
        context.seed,
        dict(settings),
        strategy.prepare_key(context),
    )


def cached_prepare(
    strategy: Strategy, context: Context, settings: Mapping[str, Any], *, key: str | None = None
) -> dict[str, Any]:
    """``strategy.prepare(context, settings)``, cached on disk under its :func:`prepared_key`."""
    key = key or prepared_key(strategy, context, settings)
    path = context.cache_dir / "prepared" / f"{strategy.name}-{key}.pt"
    if path.exists():
        log.info("reusing prepared artifacts %s", path)
        return torch.load(path, map_location=context.device, weights_only=True)
    artifacts = strategy.prepare(context, dict(settings))
    buffer = BytesIO()
    torch.save(artifacts, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return artifacts


def prepare_search(plan: Plan) -> Prepared:
    """Load or train the base model, build the context, run the cached ``prepare``, measure the base."""
    config = plan.config
    device = resolve_device(config.device)
    progress = Progress(quiet=config.quiet)
    batch_size = plan.task.batch_size if config.batch_size is None else config.batch_size
    model = get_base_model(
        plan.model_ref,
        plan.data,
        plan.task,
        weights=config.weights,
        epochs=plan.task.base_epochs if config.base_epochs is None else config.base_epochs,
        lr=plan.task.base_lr if config.base_lr is None else config.base_lr,
        batch_size=batch_size,
        seed=config.seed,
        device=device,
        progress=progress,
    )
    context = Context(
        model=model.to(device).eval(),
        model_ref=plan.model_ref,
        data=plan.data,
        task=plan.task,
        device=device,
        seed=config.seed,
        run_dir=config.run_dir,
        cache_dir=cache_dir(),
        progress=progress,
        base_flops=plan.base_flops,
        max_flops=plan.max_flops,
        batch_size=batch_size,
        budget_param=plan.space.budget,
        **({} if config.latency_budget_s is None else {"latency_budget_s": config.latency_budget_s}),
    )
    settings = prepare_settings(plan.strategy, plan.space.defaults())
    weights = weights_digest(context.model)
    key = prepared_key(plan.strategy, context, settings, weights)
    artifacts = cached_prepare(plan.strategy, context, settings, key=key)
    base = {
        "quality": context.evaluate(model)[plan.task.quality_metric],
        "flops": float(plan.base_flops),
        "n_params": float(plan.task.n_params(model)),
        **plan.task.cost(model, plan.data, plan.base_flops),
        **latency_metrics(plan.task.latency(model, plan.data, device, budget_s=context.latency_budget_s)),
        **plan.task.report(model, plan.data, device, progress),
    }
    return Prepared(plan, context, artifacts, base, settings, key, weights)


_CACHE: dict[str, Prepared] = {}


def prepared_for(config: SearchConfig) -> Prepared:
    """The prepared search for ``config``, built once per process (Ray workers call this)."""
    key = json.dumps(config.to_dict(), sort_keys=True, default=str)
    if key not in _CACHE:
        _CACHE[key] = prepare_search(plan_search(config))
    return _CACHE[key]
