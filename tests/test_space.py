"""Search spaces: validation errors, overrides, budget capping, Optuna and Ray conversion."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from automl_prune.errors import BudgetError, SpaceError
from automl_prune.flops import Budget
from automl_prune.space import builtin_space_path, load_space, parse_space

SPACE = {
    "strategy": "demo",
    "budget": "ratio",
    "params": {
        "ratio": {"type": "float", "low": 0.2, "high": 0.9, "default": 0.5},
        "lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True, "default": 0.01},
        "epochs": {"type": "int", "low": 1, "high": 4, "default": 2},
        "crit": {"type": "categorical", "choices": ["l1", "taylor"], "default": "l1"},
        "steps": {"type": "int", "value": 3},
    },
}


def test_builtin_spaces_are_valid() -> None:
    space = load_space(builtin_space_path("magnitude"))
    assert space.budget == "target_flops_ratio"
    assert space.fixed["finetune_epochs"] >= 1


def test_defaults_and_fixed() -> None:
    space = parse_space(SPACE)
    assert space.defaults() == {"ratio": 0.5, "lr": 0.01, "epochs": 2, "crit": "l1", "steps": 3}
    assert set(space.searched) == {"ratio", "lr", "epochs", "crit"}


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"ratio": {"type": "float", "low": 0.9, "high": 0.2}}, "low (0.9) must be below high"),
        ({"lr": {"type": "float", "low": 0, "high": 1, "log": True}}, "log-scale range must be positive"),
        ({"epochs": {"type": "int", "low": 1.5, "high": 4}}, "must be an integer"),
        ({"crit": {"type": "categorical"}}, "needs `choices`"),
        ({"crit": {"type": "categorical", "choices": ["a"], "default": "b"}}, "not one of"),
        ({"lr": {"type": "complex", "low": 1, "high": 2}}, "is not one of"),
        ({"lr": {"type": "float", "low": 1, "hihg": 2}}, "unknown keys"),
        ({"lr": {"type": "float", "low": 0.1, "high": 0.2, "default": 0.5}}, "outside"),
        ({"ratio": {"type": "float", "low": 0.5, "high": 2.0}}, "must lie in (0, 1]"),
    ],
)
def test_malformed_space_names_the_problem(patch: dict, message: str) -> None:
    data = {**SPACE, "params": {**SPACE["params"], **patch}}
    with pytest.raises(SpaceError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        parse_space(data, source="space.yaml")


def test_malformed_yaml_file(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("params: {ratio: [unclosed\n")
    with pytest.raises(SpaceError, match="not valid YAML"):
        load_space(bad)
    with pytest.raises(SpaceError, match="does not exist"):
        load_space(tmp_path / "missing.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text(yaml.safe_dump({"strategy": "x"}))
    with pytest.raises(SpaceError, match="non-empty `params:`"):
        load_space(empty)


def test_overrides_fix_and_narrow() -> None:
    space = parse_space(SPACE).with_overrides(["crit=taylor", "lr=0.002..0.02", "epochs=3"])
    assert space.fixed["crit"] == "taylor"
    assert space.fixed["epochs"] == 3
    assert (space.params["lr"].low, space.params["lr"].high) == (0.002, 0.02)
    assert space.params["lr"].default == 0.01
    with pytest.raises(SpaceError, match="has no parameter 'nope'"):
        parse_space(SPACE).with_overrides(["nope=1"])
    with pytest.raises(SpaceError, match="must be a number"):
        parse_space(SPACE).with_overrides(["lr=fast"])
    with pytest.raises(SpaceError, match="cannot read the override"):
        parse_space(SPACE).with_overrides(["lr"])


def test_budget_cap_clips_and_rejects_unreachable() -> None:
    space = parse_space(SPACE).with_budget_cap(0.4)
    assert space.params["ratio"].high == 0.4
    assert space.params["ratio"].default == 0.4
    with pytest.raises(BudgetError, match=r"below the lowest target 0\.2"):
        parse_space(SPACE).with_budget_cap(0.1)


def test_optuna_and_ray_conversion() -> None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from ray.tune.search.sample import Categorical, Float, Integer

    space = parse_space(SPACE)
    dists = space.to_optuna()
    assert isinstance(dists["ratio"], FloatDistribution) and not dists["ratio"].log
    assert isinstance(dists["lr"], FloatDistribution) and dists["lr"].log
    assert isinstance(dists["epochs"], IntDistribution) and (dists["epochs"].low, dists["epochs"].high) == (
        1,
        4,
    )
    assert isinstance(dists["crit"], CategoricalDistribution)
    assert "steps" not in dists
    domains = space.to_ray()
    assert isinstance(domains["lr"], Float) and isinstance(domains["epochs"], Integer)
    assert isinstance(domains["crit"], Categorical)
    assert domains["steps"] == 3
    samples = [domains["epochs"].sample() for _ in range(50)]
    assert min(samples) >= 1 and max(samples) <= 4


@pytest.mark.parametrize(
    ("text", "base", "expected"),
    [("0.5", 100.0, 50.0), ("25%", 100.0, 25.0), ("20M", 1e9, 20e6), ("1.5G", 1e12, 1.5e9), (0.3, 10.0, 3.0)],
)
def test_budget_parse(text, base, expected) -> None:
    assert Budget.parse(text).resolve(base) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["1.5", "0", "-2", "fast", "20X"])
def test_budget_parse_rejects(text) -> None:
    with pytest.raises(BudgetError):
        Budget.parse(text)


def test_a_wheel_ships_every_builtin_search_space(tmp_path: Path) -> None:
    """A non-editable install finds the spaces inside the package, so the wheel must carry them."""
    root = Path(__file__).resolve().parent.parent
    source = tmp_path / "src"
    for name in ("pyproject.toml", "README.md"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("automl_prune", "plugins", "search_spaces"):
        shutil.copytree(root / name, source / name, symlinks=True, ignore=ignore)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", "dist", "."],
        cwd=source,
        check=True,
        capture_output=True,
    )
    (wheel,) = (source / "dist").glob("automl_prune-*.whl")
    shipped = {
        Path(n).name for n in zipfile.ZipFile(wheel).namelist() if n.startswith("automl_prune/search_spaces/")
    }
    spaces = {p.name for p in (root / "search_spaces").glob("*.yaml")}
    assert spaces and shipped == spaces
    assert builtin_space_path("gan").parent == root / "automl_prune" / "search_spaces"
