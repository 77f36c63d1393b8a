"""Search spaces: one YAML file per strategy, validated, overridable, and converted for Optuna and Ray.

Format (see search_spaces/*.yaml)::

    strategy: magnitude
    budget: target_flops_ratio        # the parameter that sets each trial's FLOPs target (a ratio)
    params:
      target_flops_ratio: {type: float, low: 0.2, high: 0.9, default: 0.5}
      lr: {type: float, low: 1.0e-3, high: 0.1, log: true, default: 0.01}
      finetune_epochs: {type: int, value: 3}       # fixed: passed to every trial, not searched
      criterion: {type: categorical, choices: [l1, taylor], default: l1}

``--set name=value`` fixes a parameter; ``--set name=low..high`` sets a numeric range.

What a strategy accepts is declared by its built-in space file (``Strategy.space``/``space_for``): the
parameter names, their types, the categorical choices, the budget parameter and, for numbers, the values
it accepts: ``limits: [lo, hi]`` (either end may be ``null``: unbounded) where given, else the searched
range ``[low, high]``. So:

- a ``--set name=value`` fixed value must lie within the parameter's limits (else its range), and a
  ``--set name=lo..hi`` range within its ``limits`` when the space declares them (e.g.
  ``lr: {low: 1.0e-3, high: 0.1, limits: [1.0e-6, 1.0]}`` searches [0.001, 0.1] but accepts
  ``--set lr=2e-4``, while ``--set lr=50`` is an error); the budget parameter takes any FLOPs ratio in
  (0, 1] (within its limits, when declared);
- a user's space file (``--space``) must hold exactly the built-in's parameters (no unknown ones, none
  missing), of the same types, with choices among the built-in's and numbers within its ``limits``
  (:func:`conform_space`); its ranges may otherwise differ from the built-in's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from automl_prune.errors import BudgetError, SpaceError

TYPES = ("float", "int", "categorical")
_KEYS = {"type", "low", "high", "log", "step", "choices", "default", "value", "help", "limits"}


@dataclass(frozen=True)
class Param:
    """One hyperparameter: searched (a range or choices) or fixed (``value``)."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    default: Any = None
    value: Any = None
    help: str = ""
    limits: tuple[float | None, float | None] | None = None  # the values the strategy accepts

    @property
    def fixed(self) -> bool:
        return self.value is not None

    def initial(self) -> Any:
        """The value a single run uses: the fixed value, else the default."""
        return self.value if self.fixed else self.default

    def coerce(self, raw: Any, where: str) -> Any:
        """``raw`` as this parameter's type, or a SpaceError naming ``where`` it came from."""
        if self.type == "categorical":
            for choice in self.choices:
                if raw == choice or str(raw) == str(choice):
                    return choice
            raise SpaceError(
                f"{where}: {raw!r} is not one of {list(self.choices)} for {self.name!r}",
                f"use one of {list(self.choices)}",
            )
        try:
            number = float(raw)
        except (TypeError, ValueError):
            raise SpaceError(
                f"{where}: {self.name!r} must be a number, got {raw!r}", "give a number"
            ) from None
        if self.type == "int":
            if number != int(number):
                raise SpaceError(f"{where}: {self.name!r} must be an integer, got {raw!r}", "give an integer")
            return int(number)
        return number

    def accepted(self) -> tuple[float | None, float | None]:
        """The values a fixed ``--set`` may take: ``limits`` when declared, else the range ``[low, high]``
        (``(None, None)``: unchecked, for a fixed-only parameter without limits)."""
        if self.limits is not None:
            return self.limits
        return (self.low, self.high)

    def check_accepted(self, value: Any, where: str, bounds: tuple[float | None, float | None]) -> None:
        """A SpaceError unless the number ``value`` lies within ``bounds`` (``None``: unbounded)."""
        lo, hi = bounds
        inside = (lo is None or value >= lo) and (hi is None or value <= hi)
        if self.type == "categorical" or inside:
            return
        shown = f"[{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}]"
        raise SpaceError(
            f"{where}: {self.name!r} = {value:g} is outside the values the strategy accepts {shown}",
            f"choose a value in {shown}",
        )

    def check_in_range(self, value: Any, where: str) -> None:
        if self.type == "categorical" or self.low is None:
            return
        if not self.low <= value <= self.high:
            raise SpaceError(
                f"{where}: {self.name!r} = {value} is outside [{self.low}, {self.high}]",
                f"choose a value in [{self.low}, {self.high}] or widen the range in the space file",
            )


@dataclass(frozen=True)
class SearchSpace:
    """A strategy's validated hyperparameters, with the budget parameter named."""

    strategy: str
    params: dict[str, Param]
    budget: str | None = None
    source: str = "<memory>"

    @property
    def searched(self) -> dict[str, Param]:
        return {n: p for n, p in self.params.items() if not p.fixed}

    @property
    def fixed(self) -> dict[str, Any]:
        return {n: p.value for n, p in self.params.items() if p.fixed}

    def defaults(self) -> dict[str, Any]:
        return {n: p.initial() for n, p in self.params.items()}

    def with_overrides(self, overrides: list[str] | dict[str, Any]) -> SearchSpace:
        """Apply ``--set`` overrides: ``name=value`` fixes, ``name=low..high`` sets a range; both within
        the values the strategy accepts (module doc)."""
        items = overrides.items() if isinstance(overrides, dict) else (_split_override(o) for o in overrides)
        params = dict(self.params)
        for name, raw in items:
            where = f"--set {name}={raw}"
            if name not in params:
                raise SpaceError(
                    f"{where}: the {self.strategy!r} space has no parameter {name!r}",
                    f"known parameters: {', '.join(sorted(params))}",
                )
            p = params[name]
            # the budget parameter is a FLOPs ratio: within (0, 1] whatever its searched range
            ratio = name == self.budget
            checks = [p.limits or (None, None)]
            if isinstance(raw, str) and ".." in raw and p.type != "categorical":
                values = [p.coerce(v, where) for v in raw.split("..", 1)]
            else:
                values = [p.coerce(raw, where)]
                if not ratio:
                    checks.append(p.accepted())
            if ratio:
                _check_ratio(values, where)
            for bounds in checks:
                for v in values:
                    p.check_accepted(v, where, bounds)
            if len(values) == 2:
                lo, hi = values
                params[name] = _validated(
                    replace(p, low=lo, high=hi, value=None, default=_clip(p.default, lo, hi)), where
                )
            else:
                params[name] = replace(p, value=values[0])
        return replace(self, params=params)

    def with_budget_cap(self, max_ratio: float) -> SearchSpace:
        """Clip the budget parameter to at most ``max_ratio`` of the base FLOPs (the search's budget)."""
        if self.budget is None:
            return self
        p = self.params[self.budget]
        if p.fixed:
            if p.value > max_ratio + 1e-12:
                raise BudgetError(
                    f"{self.budget} is fixed at {p.value:g} but the FLOPs budget allows at most "
                    f"{max_ratio:.3g}",
                    f"raise --max-flops or --set {self.budget}={max_ratio:.3g}",
                )
            return self
        if max_ratio < p.low:
            raise BudgetError(
                f"the FLOPs budget ({max_ratio:.3g} of the base model) is below the lowest target "
                f"{p.low:g} that the {self.strategy!r} space searches",
                "raise --max-flops, or lower the range: "
                f"--set {self.budget}={max_ratio / 2:.3g}..{max_ratio:.3g}",
            )
        high = min(p.high, max_ratio)
        capped = replace(p, high=high, default=_clip(p.default, p.low, high))
        return replace(self, params={**self.params, self.budget: capped})

    def to_optuna(self) -> dict[str, Any]:
        """Optuna distributions of the searched parameters."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        out: dict[str, Any] = {}
        for n, p in self.searched.items():
            if p.type == "categorical":
                out[n] = CategoricalDistribution(list(p.choices))
            elif p.type == "int":
                out[n] = IntDistribution(int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
            else:
                out[n] = FloatDistribution(p.low, p.high, log=p.log, step=None if p.log else p.step)
        return out

    def to_ray(self) -> dict[str, Any]:
        """Ray Tune domains of the searched parameters (fixed ones are passed as plain values)."""
        from ray import tune

        out: dict[str, Any] = dict(self.fixed)
        for n, p in self.searched.items():
            if p.type == "categorical":
                out[n] = tune.choice(list(p.choices))
            elif p.type == "int":
                out[n] = (tune.lograndint if p.log else tune.randint)(int(p.low), int(p.high) + 1)
            elif p.log:
                out[n] = tune.loguniform(p.low, p.high)
            elif p.step:
                out[n] = tune.quniform(p.low, p.high, p.step)
            else:
                out[n] = tune.uniform(p.low, p.high)
        return out


def _split_override(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise SpaceError(
            f"cannot read the override {text!r}", "write --set name=value or --set name=low..high"
        )
    return name.strip(), value.strip()


def _check_ratio(values: list[float], where: str) -> None:
    """The budget parameter is a FLOPs ratio: in (0, 1]."""
    if not all(0 < v <= 1 for v in values):
        raise SpaceError(
            f"{where}: the budget parameter is a ratio of the base model's FLOPs, in (0, 1]",
            "give ratios in (0, 1] (--max-flops caps them further)",
        )


def _clip(value: Any, low: float, high: float) -> Any:
    return None if value is None else min(max(value, low), high)


def _limits(p: Param, where: str) -> Param:
    """``p`` with its ``limits`` read as a ``(lo, hi)`` pair of numbers or None."""
    if p.limits is None:
        return p
    raw = p.limits
    if p.type == "categorical" or not isinstance(raw, list | tuple) or len(raw) != 2:
        raise SpaceError(
            f"{where}: `limits` must be [lo, hi] (null for no bound) on a float or int parameter",
            "write e.g. limits: [1.0e-6, 1.0] or limits: [0, null]",
        )
    lo, hi = (None if v is None else float(p.coerce(v, f"{where} limits")) for v in raw)
    if lo is not None and hi is not None and lo > hi:
        raise SpaceError(f"{where}: limits [{lo:g}, {hi:g}] are reversed", "write limits: [lo, hi]")
    return replace(p, limits=(lo, hi))


def _validated(p: Param, where: str) -> Param:
    if p.type not in TYPES:
        raise SpaceError(f"{where}: type {p.type!r} is not one of {TYPES}", "use float, int or categorical")
    p = _limits(p, where)
    if p.limits is not None:
        for v in (p.value, p.low, p.high, p.default):
            if v is not None:
                p.check_accepted(p.coerce(v, where), f"{where} (its limits)", p.limits)
    if p.type == "categorical":
        if not p.choices and not p.fixed:
            raise SpaceError(f"{where}: a categorical parameter needs `choices`", "add choices: [a, b]")
        if p.default is not None:
            p.coerce(p.default, where)
        return p
    if p.fixed:
        return replace(p, value=p.coerce(p.value, where))
    if p.low is None or p.high is None:
        raise SpaceError(
            f"{where}: a searched {p.type} parameter needs `low` and `high`",
            "add low and high, or give a fixed `value`",
        )
    low, high = p.coerce(p.low, where), p.coerce(p.high, where)
    if not low < high:
        raise SpaceError(f"{where}: low ({low}) must be below high ({high})", "swap or fix the bounds")
    if p.log and low <= 0:
        raise SpaceError(
            f"{where}: a log-scale range must be positive, got low={low}", "use low > 0 or log: false"
        )
    p = replace(p, low=low, high=high, default=low if p.default is None else p.coerce(p.default, where))
    p.check_in_range(p.default, f"{where} default")
    if p.type == "float" and not all(math.isfinite(v) for v in (low, high)):
        raise SpaceError(f"{where}: bounds must be finite", "use finite numbers")
    return p


def parse_space(data: Any, source: str = "<memory>") -> SearchSpace:
    """Validate a loaded YAML mapping into a :class:`SearchSpace`."""
    if not isinstance(data, dict) or not isinstance(data.get("params"), dict) or not data["params"]:
        raise SpaceError(
            f"{source}: a search space needs a non-empty `params:` mapping",
            "see search_spaces/magnitude.yaml for the format",
        )
    params: dict[str, Param] = {}
    for name, spec in data["params"].items():
        where = f"{source}: parameter {name!r}"
        if not isinstance(spec, dict):
            raise SpaceError(
                f"{where} must be a mapping like {{type: float, low: 0, high: 1}}",
                "write the parameter as a mapping",
            )
        unknown = set(spec) - _KEYS
        if unknown:
            raise SpaceError(f"{where} has unknown keys {sorted(unknown)}", f"allowed keys: {sorted(_KEYS)}")
        kwargs = {k: v for k, v in spec.items() if k != "choices"}
        kwargs.setdefault("type", "float")
        params[name] = _validated(Param(name=name, choices=tuple(spec.get("choices") or ()), **kwargs), where)
    budget = data.get("budget")
    if budget is not None:
        p = params.get(budget)
        if p is None or p.type != "float":
            raise SpaceError(
                f"{source}: `budget: {budget}` must name a float parameter of the space",
                "name the parameter that holds the FLOPs target ratio",
            )
        lo, hi = (p.value, p.value) if p.fixed else (p.low, p.high)
        if not 0 < lo <= hi <= 1:
            raise SpaceError(
                f"{source}: the budget parameter {budget!r} must lie in (0, 1]",
                "it is a ratio of the base model's FLOPs",
            )
    return SearchSpace(strategy=str(data.get("strategy", "?")), params=params, budget=budget, source=source)


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space YAML file."""
    path = Path(path)
    if path.is_dir():
        raise SpaceError(f"search-space path {path} is a folder, not a file", "give --space a YAML file")
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise SpaceError(
            f"search-space file {path} does not exist", "check the path given to --space"
        ) from None
    except UnicodeDecodeError as exc:
        raise SpaceError(
            f"search-space file {path} is not UTF-8 text (byte {exc.start} cannot be decoded)",
            "give --space a YAML text file (search_spaces/*.yaml show the format)",
        ) from None
    except OSError as exc:
        raise SpaceError(
            f"cannot read search-space file {path}: {exc.strerror or exc}",
            "check the path and its permissions",
        ) from None
    except yaml.YAMLError as exc:
        raise SpaceError(
            f"search-space file {path} is not valid YAML: {exc}", "fix the YAML syntax"
        ) from None
    return parse_space(data, source=str(path))


def conform_space(space: SearchSpace, declared: SearchSpace, strategy: str) -> SearchSpace:
    """Check a user's ``space`` against ``declared``, the strategy's built-in space (module doc): the same
    parameter names, types and budget parameter, choices among the declared ones, numbers within the
    declared ``limits``. Returns ``space`` with the declared ``limits`` on parameters that give none."""
    where = space.source
    builtin = declared.source
    unknown = sorted(set(space.params) - set(declared.params))
    if unknown:
        raise SpaceError(
            f"{where}: the {strategy!r} strategy does not know the parameters {', '.join(unknown)}",
            f"remove them or fix their names; it knows {', '.join(declared.params)} (see {builtin})",
        )
    missing = [name for name in declared.params if name not in space.params]
    if missing:
        raise SpaceError(
            f"{where}: the {strategy!r} strategy needs the parameters {', '.join(missing)}, "
            "which the space lacks",
            f"add them (a fixed `value:` is enough); see {builtin}",
        )
    if space.budget != declared.budget:
        raise SpaceError(
            f"{where}: the budget parameter is {space.budget!r}, but the {strategy!r} strategy reads "
            f"its FLOPs target from {declared.budget!r}",
            f"write `budget: {declared.budget}` in the space file",
        )
    params = dict(space.params)
    for name, p in space.params.items():
        d = declared.params[name]
        at = f"{where}: parameter {name!r}"
        if p.type != d.type:
            raise SpaceError(
                f"{at} is {p.type}, but {strategy!r} takes a {d.type}", f"declare it `type: {d.type}`"
            )
        if p.type == "categorical":
            known = [str(c) for c in d.choices]
            stray = [c for c in (*p.choices, *(() if p.value is None else (p.value,))) if str(c) not in known]
            if stray:
                raise SpaceError(
                    f"{at}: {', '.join(map(repr, stray))} not among the choices {strategy!r} knows",
                    f"use choices from {list(d.choices)}",
                )
            continue
        if d.limits is not None:
            for v in (p.value, p.low, p.high):
                if v is not None:
                    p.check_accepted(v, at, d.limits)
            if p.limits is None:
                params[name] = replace(p, limits=d.limits)
    return replace(space, params=params)


def builtin_space_path(name: str) -> Path:
    """The built-in search space of a strategy: search_spaces/ at the repository root, which the package
    links to (automl_prune/search_spaces) so that wheels ship it too."""
    return Path(__file__).resolve().parent / "search_spaces" / f"{name}.yaml"
