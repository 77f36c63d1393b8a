"""How fast the command line answers: wall time of ``automl-prune --help``, ``automl-prune plugins`` and
``automl-prune front RUN_DIR``, each the median of ``--runs`` fresh processes (cold: nothing is imported
before the process starts; the OS file cache is warm after the first run).

``front`` needs a finished search; without ``--run-dir`` one is made first (one magnitude trial of
resnet20 on digits, no fine-tuning, about 10 s), in a temporary folder. Goals (issue 13): ``--help``
under 1 s, ``plugins`` under 3 s, ``front`` under 2 s.

    python benchmarks/cli_startup.py [--runs 5] [--run-dir runs/demo]

Writes ``benchmarks/results/cli_startup.csv`` (command, median_s, min_s, max_s, runs, goal_s).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GOALS = {"--help": 1.0, "plugins": 3.0, "front": 2.0}


def cli() -> list[str]:
    """The installed ``automl-prune`` script next to this interpreter, else ``python -m automl_prune``."""
    script = Path(sys.executable).with_name("automl-prune")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "automl_prune"]


def wall_time(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def make_run_dir(out: Path, env: dict[str, str]) -> None:
    args = [
        *cli(),
        *("search", "--strategy", "magnitude", "--model", "resnet20", "--data", "digits"),
        *("--trials", "1", "--base-epochs", "1", "--set", "finetune_epochs=0"),
        *("--out", str(out), "--quiet"),
    ]
    subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per command (median)")
    parser.add_argument("--run-dir", type=Path, help="a finished search for `front` (default: make one)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "cli_startup.csv")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    tmp = None
    run_dir = args.run_dir
    if run_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="cli_startup_"))
        run_dir = tmp / "run"
        make_run_dir(run_dir, env)
    commands = {"--help": ["--help"], "plugins": ["plugins"], "front": ["front", str(run_dir)]}
    rows = []
    try:
        for name, extra in commands.items():
            times = [wall_time([*cli(), *extra], env) for _ in range(args.runs)]
            median = statistics.median(times)
            rows.append(
                {
                    "command": name,
                    "median_s": f"{median:.2f}",
                    "min_s": f"{min(times):.2f}",
                    "max_s": f"{max(times):.2f}",
                    "runs": args.runs,
                    "goal_s": GOALS[name],
                }
            )
            verdict = "ok" if median < GOALS[name] else "over the goal"
            print(f"automl-prune {name}: median {median:.2f} s of {args.runs} ({verdict} of {GOALS[name]} s)")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
