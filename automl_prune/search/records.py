"""Plain records of a search and its trials (what lifecycle hooks receive and what pareto.csv holds), and
their files in a run directory: ``search.json`` and ``trials.jsonl``, paths stored relative to it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from automl_prune.errors import AutomlPruneError
from automl_prune.io import atomic_write_text
from automl_prune.search.rundir import stored_origin

SEARCH_FILE = "search.json"
TRIALS_FILE = "trials.jsonl"


@dataclass
class TrialRecord:
    """One finished trial. ``state`` is "complete" or "failed"; failed trials carry ``error``.

    ``quality`` is the task's quality metric on the validation split (``quality_metric`` names it);
    ``metrics`` holds the rest (e.g. ``test_accuracy``, reported but never used for selection).
    ``latency_ms`` is the median of one call at batch 1 (:mod:`automl_prune.latency`), ``latency_iqr_ms``
    its interquartile range, ``speedup`` the base's median over it from the base timed interleaved with
    the trial, and ``latency_noisy`` says either spread was too large to trust (records written before
    these fields load with None / False).
    """

    number: int
    state: str
    params: dict[str, Any] = field(default_factory=dict)
    quality: float | None = None
    flops: int | None = None
    n_params: int | None = None
    latency_ms: float | None = None
    latency_iqr_ms: float | None = None
    speedup: float | None = None
    latency_noisy: bool = False
    target_flops: float | None = None
    feasible: bool = False
    metrics: dict[str, float] = field(default_factory=dict)
    model_dir: str | None = None
    figures: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialRecord:
        return cls(**d)

    def to_stored(self, run_dir: str | Path) -> dict[str, Any]:
        """The record as ``trials.jsonl`` keeps it: ``model_dir`` and ``figures`` relative to ``run_dir``."""
        from automl_prune.search.rundir import stored_path

        d = self.to_dict()
        d["model_dir"] = stored_path(self.model_dir, run_dir)
        d["figures"] = [stored_path(f, run_dir) for f in self.figures]
        return d

    @classmethod
    def from_stored(
        cls, d: dict[str, Any], run_dir: str | Path, origin: str | Path | None = None
    ) -> TrialRecord:
        """A record read from ``run_dir``'s ``trials.jsonl``, its paths rooted at ``run_dir``
        (``origin``: :func:`~automl_prune.search.rundir.stored_origin`, for older absolute paths)."""
        from automl_prune.search.rundir import loaded_path

        record = cls.from_dict(d)
        record.model_dir = loaded_path(record.model_dir, run_dir, origin)
        record.figures = [loaded_path(f, run_dir, origin) for f in record.figures]
        return record


@dataclass
class SearchInfo:
    """What observers need to know about a search.

    ``base`` holds the base model's measurements (quality, flops, n_params, latency_ms) at the
    convention in ``conventions``; ``max_flops`` is the absolute budget (None: unconstrained).
    """

    name: str
    strategy: str
    run_dir: Path
    quality_metric: str
    base: dict[str, float]
    max_flops: float | None
    config: dict[str, Any]
    conventions: dict[str, str]
    tracking_uri: str | None = None
    registered_model: str | None = None

    def to_json(self) -> str:
        """search.json: ``run_dir`` is stored as ``"."``, the directory the file is in, so a run
        directory can be moved or copied."""
        d = asdict(self)
        d["run_dir"] = "."
        return json.dumps(d, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, run_dir: str | Path | None = None) -> SearchInfo:
        """Read search.json; ``run_dir``: the directory it was read from (the run directory), which
        replaces the stored one (``"."``, or the absolute path older files hold)."""
        d = json.loads(text)
        d["run_dir"] = Path(run_dir if run_dir is not None else d["run_dir"])
        return cls(**d)


def load_records(run_dir: Path) -> list[TrialRecord]:
    """The trial records of ``run_dir``, their paths rooted at ``run_dir`` (they are stored relative)."""
    path = Path(run_dir) / TRIALS_FILE
    if not path.exists():
        return []
    records, origin = [], stored_origin(run_dir)
    for i, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(TrialRecord.from_stored(json.loads(line), run_dir, origin))
        except (json.JSONDecodeError, TypeError, KeyError, AttributeError) as exc:
            raise AutomlPruneError(
                f"{path} line {i} is not a trial record ({exc})",
                "restore the file from a copy of the run directory, or rerun the search to rewrite it",
            ) from None
    return records


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise AutomlPruneError(f"cannot read {path}: {exc}", "restore the file or rerun the search") from None


def save_records(run_dir: Path, records: list[TrialRecord]) -> None:
    text = "".join(json.dumps(r.to_stored(run_dir)) + "\n" for r in records)
    atomic_write_text(Path(run_dir) / TRIALS_FILE, text)


def load_info(run_dir: Path) -> SearchInfo:
    path = Path(run_dir) / SEARCH_FILE
    if not path.exists():
        raise AutomlPruneError(
            f"{run_dir} holds no search ({SEARCH_FILE} is missing)",
            "give the --out directory of an earlier `automl-prune search`",
        )
    try:
        return SearchInfo.from_json(_read_text(path), run_dir=Path(run_dir))
    except (json.JSONDecodeError, TypeError, KeyError, AttributeError) as exc:
        raise AutomlPruneError(
            f"{path} is not a search record ({exc})", "restore it from a copy of the run directory"
        ) from None
