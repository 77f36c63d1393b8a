"""Checks that run before any work, so bad input costs seconds and leaves nothing behind.

Every check here raises an :class:`~automl_prune.errors.AutomlPruneError` (the CLI prints its
``error:``/``fix:`` lines and exits 2) and creates nothing: no run directory, no ``mlflow.db``.
:func:`~automl_prune.search.setup.plan_search` and
:func:`~automl_prune.search.orchestrator.run_search` call them before the base model is trained;
``evaluate``, ``export`` and ``front`` call them before loading a model or writing a file.

What is checked up front: counts and rates of the command line (``--batch-size``, ``--base-epochs``,
``--base-lr``), the device, output paths (``--out``, ``export --out``, ``front --plot``), ``--compare``
run directories, the split of ``evaluate``, the data (no empty split; the task's own check, e.g. at
least two classes), the weights file (read and fitted to the architecture), the search space (against
the strategy's built-in space: :func:`automl_prune.space.conform_space`; the shared fine-tuning budget)
and the model (its first conv takes the data's channels: :func:`check_input_channels`; the strategy
analyses the untrained architecture: :func:`check_model`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from automl_prune.errors import AutomlPruneError, DataError, ModelError, SpaceError
from automl_prune.tasks.base import SPLITS

if TYPE_CHECKING:
    from torch import nn

    from automl_prune.data.base import DataInfo, DataSplits
    from automl_prune.model_io import Inputs
    from automl_prune.space import SearchSpace
    from automl_prune.strategy import Strategy
    from automl_prune.tasks.base import Task


# ------------------------------------------------------------------------------ command-line numbers


def check_count(value: int | None, option: str, minimum: int) -> None:
    """``value`` (None: the default) is an integer of at least ``minimum``."""
    if value is not None and value < minimum:
        raise AutomlPruneError(
            f"{option} must be at least {minimum}, got {value}", f"give {option} {minimum} or more"
        )


def check_rate(value: float | None, option: str) -> None:
    """``value`` (None: the default) is a finite number above 0 (a learning rate)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise AutomlPruneError(
            f"{option} must be a finite number above 0, got {value}", f"give e.g. {option} 0.05"
        )


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise AutomlPruneError(f"unknown split {split!r}", f"use one of {', '.join(SPLITS)}")


# ---------------------------------------------------------------------------------------- paths


def _nearest_existing(path: Path) -> Path:
    for parent in (path, *path.parents):
        if parent.exists():
            return parent
    return Path(".")


def _check_creatable(path: Path, option: str, what: str) -> None:
    """``path`` (which does not exist) could be created: its nearest existing ancestor is a writable
    folder."""
    base = _nearest_existing(path.parent if path.parent != path else path)
    if not base.is_dir():
        raise AutomlPruneError(
            f"{option} {path} cannot be created: {base} is a file, not a folder", f"choose another {what}"
        )
    if not os.access(base, os.W_OK | os.X_OK):
        raise AutomlPruneError(
            f"{option} {path} cannot be created: {base} is not writable", f"choose a {what} you can write to"
        )


def check_output_dir(path: str | Path, option: str = "--out") -> None:
    """``path`` is a writable folder, or one that can be created (nothing is created here)."""
    path = Path(path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise AutomlPruneError(
                f"{option} {path} is a file, not a folder", f"give {option} a folder (new or existing)"
            )
        if not os.access(path, os.W_OK | os.X_OK):
            raise AutomlPruneError(
                f"{option} {path} is not writable", f"choose a folder you can write to for {option}"
            )
        return
    _check_creatable(path, option, "folder")


def check_output_file(path: str | Path, option: str) -> None:
    """``path`` can be written as a file: not a folder, writable if it exists, else creatable."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise AutomlPruneError(f"{option} {path} is a folder", f"give {option} a file name")
    if path.exists():
        if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK | os.X_OK):
            raise AutomlPruneError(
                f"{option} {path} is not writable", f"choose a file you can write for {option}"
            )
        return
    _check_creatable(path, option, "path")


# ------------------------------------------------------------------------------------ --compare


def read_search_info(run_dir: str | Path, option: str) -> dict[str, Any]:
    """The ``search.json`` of an earlier run directory, as a dict; an error naming ``option`` otherwise."""
    path = Path(run_dir) / "search.json"
    if not path.is_file():
        raise AutomlPruneError(
            f"{option} {run_dir} holds no search ({path.name} is missing)",
            "give the --out directory of an earlier `automl-prune search`",
        )
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AutomlPruneError(
            f"{path} is not a search record ({exc})", "rerun that search to rewrite it"
        ) from None
    if not isinstance(info, dict) or not isinstance(info.get("config"), dict):
        raise AutomlPruneError(
            f"{path} is not a search record (no config)", "rerun that search to rewrite it"
        )
    return info


def check_compare(run_dirs: list[str], config: Mapping[str, Any], option: str = "--compare") -> None:
    """Each of ``run_dirs`` is an earlier search on the same model, data and weights as ``config``."""
    for run_dir in run_dirs:
        other = read_search_info(run_dir, option)["config"]
        if any(other.get(k) != config.get(k) for k in ("model", "data", "weights")):
            raise AutomlPruneError(
                f"{option} {run_dir} searched {other.get('model')} on {other.get('data')}, "
                f"not {config.get('model')} on {config.get('data')}",
                "compare only searches that pruned the same base model",
            )


# --------------------------------------------------------------------------- space, data, model


def check_finetune_values(space: SearchSpace) -> None:
    """The shared fine-tuning budget (:data:`automl_prune.strategy.FINETUNE_PARAMS`) is sane: every
    ``lr`` the space can give above 0, every ``finetune_epochs`` at least 0."""
    for name, low in (("lr", 0.0), ("finetune_epochs", 0)):
        p = space.params.get(name)
        if p is None or p.type == "categorical":
            continue
        values = [v for v in (p.value,) if v is not None] if p.fixed else [p.low, p.high]
        bad = [v for v in values if v is None or not math.isfinite(v) or v < low or (name == "lr" and v == 0)]
        if bad:
            rule = "above 0" if name == "lr" else "at least 0"
            raise SpaceError(
                f"{space.source}: {name} = {bad[0]} must be {rule}",
                f"give {name} values {rule} (--set {name}=...)",
            )


def check_data(task: Task, data: DataSplits) -> None:
    """No split is empty, and the task's own ``check_data`` (when it has one) accepts the data."""
    for split in SPLITS:
        try:
            n = len(getattr(data, split))
        except TypeError:  # an iterable dataset: its length is unknown
            continue
        if n == 0:
            raise DataError(f"the {split} split of {data.info.name!r} is empty", "use a larger dataset")
    check = getattr(task, "check_data", None)
    if check is not None:
        check(data)


def check_input_channels(architecture: nn.Module, example: Inputs, info: DataInfo, model_name: str) -> None:
    """A model whose first conv takes other channels than the data has (a user's 3-channel
    ``module:factory`` on 1-channel digits) fails here, naming both, instead of as a tracing error. The
    model is run only when the channels differ: its forward may adapt them itself."""
    import torch
    from torch import nn

    from automl_prune.model_io import call, evaluating

    stem = next((m for m in architecture.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    if stem is None or stem.in_channels == info.in_channels:
        return
    try:
        with torch.no_grad(), evaluating(architecture):
            call(architecture, example)
    except Exception as exc:  # the forward rejects the data's channels
        raise ModelError(
            f"{model_name} takes {stem.in_channels}-channel images (its first conv), but {info.name!r} has "
            f"{info.in_channels} channel(s): {type(exc).__name__}: {str(exc)[:200]}",
            "use --model torchvision:NAME or timm:NAME, which build the model for the data's channels, or "
            "let your factory take the channels; for an image folder, "
            f"--data-arg channels={stem.in_channels} loads the images with that many channels",
        ) from exc


def check_model(
    strategy: Strategy, architecture: nn.Module, example: Inputs, model_name: str
) -> float | None:
    """The strategy's analysis of the untrained ``architecture`` (:meth:`Strategy.min_flops`), run for
    every search: a model it cannot trace fails here, before any training, instead of in every trial.
    Returns the fewest FLOPs the strategy reaches (None: unknown)."""
    try:
        return strategy.min_flops(architecture, example)
    except AutomlPruneError:
        raise
    except Exception as exc:  # the strategy's analysis failed on this architecture: the model's problem
        raise ModelError(
            f"the {strategy.name!r} strategy cannot trace {model_name}: {type(exc).__name__}: {exc}",
            "the forward must run on the example input with autograd enabled, use nn.Module layers and "
            "return tensors; or choose another strategy or model",
        ) from exc
