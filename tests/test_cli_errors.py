"""Bad input: one clear error naming the problem and the fix, exit status 2, no traceback, nothing lost."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.toy import cli

BASE = ["--data", "digits", "--base-epochs", "1", "--quiet"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli(*args), capture_output=True, text=True, timeout=300, cwd=cwd or Path(__file__).parents[1]
    )


def assert_clean_error(done: subprocess.CompletedProcess, *needles: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert "error:" in done.stderr and "fix:" in done.stderr, done.stderr
    for needle in needles:
        assert needle in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--strategy", "magnitud", "--model", "resnet20"], ["unknown strategy 'magnitud'", "did you mean"]),
        (["--strategy", "magnitude", "--model", "resnet2000"], ["unknown model 'resnet2000'", "resnet20"]),
        (
            ["--strategy", "magnitude", "--model", "resnet20", "--data", "digitz"],
            ["unknown dataset 'digitz'"],
        ),
        (
            ["--strategy", "magnitude", "--model", "resnet20", "--max-flops", "0.05"],
            ["below the lowest target"],
        ),
        (["--strategy", "magnitude", "--model", "resnet20", "--set", "criterion=biggest"], ["not one of"]),
        (["--strategy", "magnitude", "--model", "tests.fixtures.user_models:untraceable"], ["cannot trace"]),
    ],
)
def test_bad_search_input(tmp_path: Path, args: list[str], needles: list[str]) -> None:
    assert_clean_error(run("search", *BASE, *args, "--out", str(tmp_path / "run")), *needles)


def test_malformed_space_file(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("params:\n  target_flops_ratio: {type: float, low: 0.9, high: 0.1}\n")
    done = run(
        "search",
        *BASE,
        "--strategy",
        "magnitude",
        "--model",
        "resnet20",
        "--space",
        str(space),
        "--out",
        str(tmp_path / "run"),
    )
    assert_clean_error(done, str(space), "low (0.9) must be below high (0.1)")


def test_budget_below_what_the_strategy_reaches(tmp_path: Path) -> None:
    done = run(
        "search",
        *BASE,
        "--strategy",
        "magnitude",
        "--model",
        "resnet20",
        "--max-flops",
        "0.002",
        "--set",
        "target_flops_ratio=0.001..0.002",
        "--out",
        str(tmp_path / "run"),
    )
    assert_clean_error(done, "reaches at its smallest", "raise --max-flops")


def test_corrupt_checkpoint(tmp_path: Path) -> None:
    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(b"\x00garbage" * 100)
    done = run(
        "search",
        *BASE,
        "--strategy",
        "magnitude",
        "--model",
        "resnet20",
        "--weights",
        str(weights),
        "--out",
        str(tmp_path / "run"),
    )
    assert_clean_error(done, str(weights))


def test_unreachable_tracking_server_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    done = run(
        "search",
        *BASE,
        "--strategy",
        "magnitude",
        "--model",
        "resnet20",
        "--tracking-uri",
        "http://127.0.0.1:9",
        "--out",
        str(out),
    )
    assert_clean_error(done, "http://127.0.0.1:9")
    assert (out / "notes.txt").read_text() == "keep me"
