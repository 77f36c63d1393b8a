"""User-facing errors.

Every problem a user can cause (a wrong name, a bad file, an unreachable server) is raised as an
:class:`AutomlPruneError` carrying what is wrong and what to do. The CLI prints exactly these two
lines and exits with its ``exit_status``, so nobody has to read a traceback from deep inside a library.

Exit statuses of the CLI: 0 success; 1 an unexpected error (a bug: the traceback goes to a file);
2 bad input or environment (an :class:`AutomlPruneError`, found before any work wherever it can be);
3 a search (or ``prune``) whose every trial failed (:class:`SearchFailedError`, with the first
failure's reason); 130 interrupted.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class AutomlPruneError(Exception):
    """An error caused by the user's input, with a fix."""

    exit_status = 2  # what the CLI exits with

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.problem}\n  fix: {self.fix}" if self.fix else self.problem


class UnknownNameError(AutomlPruneError):
    """A strategy, model, dataset or task name that no plugin registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        known = sorted(known)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        super().__init__(
            f"unknown {kind} {name!r}",
            f"{hint}known names: {', '.join(known) or '(none)'}; "
            "`automl-prune plugins` lists them and where they come from",
        )
        self.name = name


class SpaceError(AutomlPruneError):
    """A search-space file or override with a wrong type, range or name."""


class BudgetError(AutomlPruneError):
    """A FLOPs budget that no architecture of the strategy can reach."""


class ModelError(AutomlPruneError):
    """A model that cannot be built, traced or loaded."""


class CheckpointError(AutomlPruneError):
    """A weights file or saved model that is missing or corrupt."""


class UntrustedCodeError(CheckpointError):
    """A saved model whose spec would import and run code that is not a registered model factory."""


class DataError(AutomlPruneError):
    """A dataset that cannot be found or read."""


class TrackingError(AutomlPruneError):
    """A tracking server that cannot be reached."""


class MetricError(AutomlPruneError):
    """Inputs a metric cannot be computed on (wrong rank, mismatched shapes, too few samples)."""


class TrainingDivergedError(AutomlPruneError):
    """Training whose loss or weights became NaN or infinite (a learning rate far too high)."""


class SearchFailedError(AutomlPruneError):
    """A search that ran, but every one of its trials failed: nothing to put on a front."""

    exit_status = 3
