"""What ``--resume`` may change: a resumed search is the stored one, with only its running options new.

The options that define a search (:data:`SEARCH_DEFINING`) must be the stored ones or not given; those
that only say how it runs (:data:`RESUME_MAY_CHANGE`) may change; ``--trials`` only raises the count.
Paths outside the run directory are stored absolute, so a resume started from elsewhere finds them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import MISSING, fields, replace
from pathlib import Path
from typing import Any

from automl_prune.errors import AutomlPruneError
from automl_prune.flops import Budget
from automl_prune.search.config import SearchConfig
from automl_prune.search.records import load_info

# What defines a search: --resume refuses other values than the stored ones; not given, they are kept.
SEARCH_DEFINING = (
    "strategy",
    "model",
    "model_args",
    "data",
    "data_args",
    "weights",
    "space",
    "overrides",
    "max_flops",
    "seed",
    "base_epochs",
    "base_lr",
    "batch_size",
    "backend",
    "sampler",
    "name",
)
# What a resumed search may change (not given: the stored values); --trials only raises the count.
RESUME_MAY_CHANGE = (
    "trials",
    "workers",
    "address",
    "device",
    "tracking_uri",
    "registered_model",
    "compare",
    "quiet",
)
_OPTION = {"model_args": "--model-arg", "data_args": "--data-arg", "overrides": "--set", "name": "name"}


def _option(name: str) -> str:
    return _OPTION.get(name, "--" + name.replace("_", "-"))


def _same_path(a: str | None, b: str | None) -> bool:
    if a == b:
        return True
    if a is None or b is None:
        return False
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def _same(name: str, given: Any, stored: Any) -> bool:
    if name in ("weights", "space"):
        return _same_path(given, stored)
    if name == "max_flops":
        try:
            return given == stored or Budget.parse(given) == Budget.parse(stored)
        except AutomlPruneError:
            return False
    if name == "overrides":
        return _overridden(given) == _overridden(stored)
    return given == stored


def _overridden(items: list[str] | None) -> dict[str, str]:
    """What ``--set`` items set (the last one of a name wins)."""
    return {k.strip(): v.strip() for k, _, v in (str(i).partition("=") for i in items or [])}


def given_options(config: SearchConfig) -> dict[str, Any]:
    """The settings of ``config`` that a Python caller set: those that differ from the defaults, and
    ``trials`` and ``quiet`` (a resumed search tops up to ``trials``)."""
    out: dict[str, Any] = {}
    for f in fields(SearchConfig):
        value = getattr(config, f.name)
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = object()  # required: always given
        if value != default or f.name in ("trials", "quiet"):
            out[f.name] = value
    return out


def resume_config(run_dir: str | Path, given: Mapping[str, Any]) -> SearchConfig:
    """The search stored in ``run_dir`` with what ``given`` may change (:data:`RESUME_MAY_CHANGE`).

    ``given`` holds the options of this call that were given (the CLI leaves out those not on the
    command line). One that defines the search (:data:`SEARCH_DEFINING`) with another value than the
    stored search is refused, showing both; the stored ``out`` is replaced by ``run_dir`` (a moved or
    copied run directory resumes where it is now).
    """
    run_dir = Path(run_dir)
    info = load_info(run_dir)
    stored = SearchConfig.from_dict({**info.config, "out": str(run_dir)})
    stored = replace(stored, name=stored.name or info.name)
    differ = [
        (name, given[name], getattr(stored, name))
        for name in SEARCH_DEFINING
        if name in given and not _same(name, given[name], getattr(stored, name))
    ]
    if differ:
        shown = "; ".join(f"{_option(n)} {_show(g)} (stored: {_show(s)})" for n, g, s in differ)
        raise AutomlPruneError(
            f"--resume continues the search stored in {run_dir}, but this call changes it: {shown}",
            "drop these options to resume the stored search as it is, or give another --out to start a "
            "new search with them (nothing was changed)",
        )
    changes = {name: given[name] for name in RESUME_MAY_CHANGE if name in given}
    if "trials" in changes:
        changes["trials"] = max(int(changes["trials"]), stored.trials)
    return replace(stored, **changes)


def _show(value: Any) -> str:
    if value is None or value == [] or value == {}:
        return "none"
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return repr(value) if isinstance(value, str) else str(value)


def absolute_inputs(config: SearchConfig) -> SearchConfig:
    """``--weights``, ``--space`` and ``--compare`` as absolute paths (they lie outside the run directory
    and must not depend on the directory a resume is started from)."""
    return replace(
        config,
        weights=_absolute(config.weights),
        space=_absolute(config.space),
        compare=[_absolute(c) for c in config.compare],
    )


def _absolute(path: str | None) -> str | None:
    return str(Path(path).expanduser().resolve()) if path and Path(path).expanduser().exists() else path
