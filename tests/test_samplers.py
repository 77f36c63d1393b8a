"""The search's samplers (each name builds its Optuna sampler, seeded; unknown names are refused) and the
objectives-only study that measures them."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from automl_prune.errors import AutomlPruneError
from automl_prune.search.config import SearchConfig
from automl_prune.search.optuna_backend import run_optuna
from automl_prune.search.records import TrialRecord
from automl_prune.search.samplers import CONSTRAINT, make_sampler
from automl_prune.search.setup import plan_search, prepare_search

SPACE = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}


def draws(name: str, seed: int, n: int = 6) -> list[float]:
    """The first ``n`` values of ``x`` the sampler proposes, each told back as a finished trial."""
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(name, seed, n))
    values = []
    for _ in range(n):
        trial = study.ask(SPACE)
        values.append(trial.params["x"])
        study.tell(trial, [trial.params["x"], 1.0 - trial.params["x"]])
    return values


def test_random_sampler_is_optunas_random_sampler_with_the_search_seed() -> None:
    assert isinstance(make_sampler("random", 0, 40), optuna.samplers.RandomSampler)
    assert draws("random", 3) == draws("random", 3)
    assert draws("random", 3) != draws("random", 4)


@pytest.mark.parametrize("name", ["nsga2", "tpe", "random"])
def test_every_listed_sampler_is_accepted(name: str) -> None:
    assert SearchConfig(strategy="magnitude", model="resnet20", data="digits", out="x", sampler=name)


def test_an_unknown_sampler_names_the_known_ones() -> None:
    with pytest.raises(AutomlPruneError, match="unknown sampler 'grid'") as err:
        SearchConfig(strategy="magnitude", model="resnet20", data="digits", out="x", sampler="grid")
    assert "nsga2, tpe, random" in err.value.fix


def test_an_objectives_only_study_tells_the_sampler_what_a_search_would(
    toy_plugin: Path, tmp_path: Path
) -> None:
    """``run_optuna(measure=False)``: the same study (defaults first, constraint, objectives), but no
    latency and no saved models."""
    out = tmp_path / "run"
    out.mkdir()
    config = SearchConfig(
        strategy="toy-keep-first",
        model="toy-cnn",
        data="digits",
        out=str(out),
        base_epochs=1,
        trials=3,
        max_flops="0.6",
        sampler="random",
        quiet=True,
    )
    prepared = prepare_search(plan_search(config))
    records: list[TrialRecord] = []
    run_optuna(prepared, records.append, measure=False)
    assert [r.state for r in records] == ["complete"] * 3
    assert records[0].params == prepared.plan.space.defaults()
    assert all(r.latency_ms is None and r.model_dir is None for r in records)
    assert not list(out.glob("trials/*/model"))
    study = optuna.load_study(study_name=config.search_name, storage=f"sqlite:///{out / 'study.db'}")
    told = [(t.values, t.constraints[CONSTRAINT] <= 0) for t in study.trials]
    assert told == [([r.quality, r.flops], r.feasible) for r in records]
