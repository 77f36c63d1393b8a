"""The ``automl-prune`` command line: plugins, search, prune, evaluate, export, promote, front."""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from automl_prune.errors import AutomlPruneError
from automl_prune.io import atomic_write_text, cache_dir

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="AutoML pruning of vision models: strategies as plugins, Optuna/Ray search under FLOPs budgets.",
)
console = Console()

ModelOpt = Annotated[
    str,
    typer.Option(help="Registered model, `torchvision:NAME`, `timm:NAME` or `package.module:factory`."),
]
DataOpt = Annotated[str, typer.Option(help="Dataset: `digits`, `fashion-mnist`, `folder:PATH`, ...")]
WeightsOpt = Annotated[
    str | None,
    typer.Option(
        help="Local weights of the base model (.safetensors or a torch state dict); a checkpoint for "
        "another number of classes gets a new classifier head, trained with the base recipe."
    ),
]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override a parameter: name=value or name=lo..hi.")
]
ModelArgOpt = Annotated[
    list[str] | None, typer.Option("--model-arg", help="Model factory argument key=value.")
]
DataArgOpt = Annotated[list[str] | None, typer.Option("--data-arg", help="Dataset option key=value.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars (CI).")]
BaseEpochsOpt = Annotated[
    int | None,
    typer.Option(
        help="Epochs to train the base model when no --weights, or after its head was replaced "
        "(default: the task's)."
    ),
]
BaseLrOpt = Annotated[float | None, typer.Option(help="Its learning rate (default: the task's).")]
BatchOpt = Annotated[
    int | None, typer.Option(help="Batch size of training, fine-tuning and evaluation (default: the task's).")
]


@app.command()
def plugins() -> None:
    """List strategies, models, datasets and tasks, and the plugin each comes from."""
    from automl_prune.plugins import get_plugins

    loaded = get_plugins()
    table = Table(title="strategies")
    for column in ("name", "tasks", "from", "description"):
        table.add_column(column)
    for entry in loaded.strategies:
        table.add_row(entry.name, ", ".join(entry.meta["tasks"]), entry.source, entry.obj.description)
    console.print(table)
    for title, registry in (("models", loaded.models), ("datasets", loaded.datasets)):
        table = Table(title=title)
        for column in ("name", "task", "from", "description"):
            table.add_column(column)
        for entry in registry:
            table.add_row(
                entry.name, entry.meta.get("task", ""), entry.source, entry.meta.get("description", "")
            )
        console.print(table)
    console.print(
        "tasks: " + ", ".join(f"{e.name} ({e.obj.quality_metric}; {e.source})" for e in loaded.tasks)
    )
    for failure in loaded.failures:
        console.print(f"[red]plugin {failure.name!r} ({failure.value}) failed to load:[/] {failure.error}")


def _config(**kwargs: object):
    from automl_prune.search.config import SearchConfig, parse_key_values

    kwargs["model_args"] = parse_key_values(kwargs.pop("model_arg"), "--model-arg")
    kwargs["data_args"] = parse_key_values(kwargs.pop("data_arg"), "--data-arg")
    kwargs["overrides"] = list(kwargs.pop("set") or [])
    return SearchConfig(**kwargs)


@app.command()
def search(
    out: Annotated[Path, typer.Option(help="Run directory: study, trials, Pareto front, MLflow store.")],
    strategy: Annotated[str | None, typer.Option(help="Strategy name (see `automl-prune plugins`).")] = None,
    model: Annotated[
        str | None, typer.Option(help="Registered model name or `package.module:factory`.")
    ] = None,
    data: Annotated[
        str | None, typer.Option(help="Dataset: `digits`, `fashion-mnist`, `folder:PATH`, ...")
    ] = None,
    trials: Annotated[
        int | None, typer.Option(help="Number of trials (default 8; with --resume: the stored count).")
    ] = None,
    max_flops: Annotated[
        str | None, typer.Option(help="FLOPs budget: ratio of the base model (0.5) or absolute (20M, 1.2G).")
    ] = None,
    weights: WeightsOpt = None,
    model_arg: ModelArgOpt = None,
    data_arg: DataArgOpt = None,
    space: Annotated[
        str | None, typer.Option(help="Search-space YAML (default: the strategy's own).")
    ] = None,
    set: SetOpt = None,
    backend: Annotated[
        str | None, typer.Option(help="optuna (in-process, the default) or ray (Ray Tune).")
    ] = None,
    sampler: Annotated[str | None, typer.Option(help="tpe (default), nsga2 or random.")] = None,
    workers: Annotated[int | None, typer.Option(help="Concurrent trials (ray backend; default 1).")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address (default: a local Ray).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default 0).")] = None,
    device: Annotated[str | None, typer.Option(help="cpu (default), cuda or auto.")] = None,
    base_epochs: BaseEpochsOpt = None,
    base_lr: BaseLrOpt = None,
    batch_size: BatchOpt = None,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking server (default: SQLite in the run directory).")
    ] = None,
    registered_model: Annotated[str | None, typer.Option(help="Registry name for the champion.")] = None,
    compare: Annotated[
        list[str] | None,
        typer.Option(help="Earlier search to draw on pareto.png as a baseline (repeatable)."),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue the search in --out without redoing trials. Options not given are the stored "
            "search's; strategy, model, data, space, budget and the other settings that define the search "
            "cannot change."
        ),
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Search a strategy's hyperparameters and budgets; print and save the Pareto front."""
    from automl_prune.search.config import SearchConfig, parse_key_values
    from automl_prune.search.orchestrator import run_search
    from automl_prune.search.resume import resume_config

    named = {
        "strategy": strategy,
        "model": model,
        "data": data,
        "trials": trials,
        "max_flops": max_flops,
        "weights": weights,
        "space": space,
        "backend": backend,
        "sampler": sampler,
        "workers": workers,
        "address": address,
        "seed": seed,
        "device": device,
        "base_epochs": base_epochs,
        "base_lr": base_lr,
        "batch_size": batch_size,
        "tracking_uri": tracking_uri,
        "registered_model": registered_model,
        "compare": None if compare is None else list(compare),
        "overrides": None if set is None else list(set),
        "model_args": None if model_arg is None else parse_key_values(model_arg, "--model-arg"),
        "data_args": None if data_arg is None else parse_key_values(data_arg, "--data-arg"),
    }
    given = {name: value for name, value in named.items() if value is not None}  # None: not given
    given["quiet"] = quiet
    if resume:
        config = resume_config(out, given)
    else:
        missing = [f"--{name}" for name in ("strategy", "model", "data") if name not in given]
        if missing:
            raise AutomlPruneError(
                f"a new search needs {', '.join(missing)}",
                f"give {', '.join(missing)}, or pass --resume to continue the search stored in {out}",
            )
        config = SearchConfig(out=str(out), **given)
    run_search(config, resume=resume, console=Console(quiet=False))


@app.command()
def prune(
    strategy: Annotated[str, typer.Option(help="Strategy name.")],
    model: ModelOpt,
    data: DataOpt,
    out: Annotated[Path, typer.Option(help="Where to write the pruned model.")],
    max_flops: Annotated[str | None, typer.Option(help="FLOPs budget (ratio or absolute).")] = None,
    weights: WeightsOpt = None,
    model_arg: ModelArgOpt = None,
    data_arg: DataArgOpt = None,
    space: Annotated[str | None, typer.Option(help="Search-space YAML for the defaults.")] = None,
    set: SetOpt = None,
    seed: int = 0,
    device: str = "cpu",
    base_epochs: BaseEpochsOpt = None,
    base_lr: BaseLrOpt = None,
    batch_size: BatchOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """One run with the space's defaults (and --set values): no search."""
    from automl_prune.errors import SearchFailedError
    from automl_prune.search.setup import plan_search, prepare_search
    from automl_prune.search.trial import run_trial
    from automl_prune.search.validate import check_output_dir

    config = _config(
        strategy=strategy,
        model=model,
        data=data,
        out=str(out),
        trials=1,
        max_flops=max_flops,
        weights=weights,
        model_arg=model_arg,
        data_arg=data_arg,
        space=space,
        set=set,
        seed=seed,
        device=device,
        base_epochs=base_epochs,
        base_lr=base_lr,
        batch_size=batch_size,
        quiet=quiet,
    )
    check_output_dir(out)
    prepared = prepare_search(plan_search(config))
    record = run_trial(prepared, prepared.plan.space.defaults(), 0, out=out)
    if record.state != "complete":  # exit 3, like a search whose every trial failed
        raise SearchFailedError(f"pruning failed: {record.error}", f"see {out / 'error.txt'}")
    base = prepared.base
    console.print_json(
        json.dumps(
            {
                "model_dir": record.model_dir,
                "params": record.params,
                f"val_{prepared.plan.task.quality_metric}": record.quality,
                "flops": record.flops,
                "flops_ratio": record.flops / base["flops"],
                "n_params": record.n_params,
                "latency_ms": record.latency_ms,
                "latency_iqr_ms": record.latency_iqr_ms,
                "speedup": record.speedup,
                "latency_noisy": record.latency_noisy,
                "base": base,
                **record.metrics,
            }
        )
    )


TrustOption = Annotated[
    bool,
    typer.Option(
        "--trust-model-code",
        help="Build a model pruned from a module:factory or a local diffusers directory: its spec names "
        "code to import or a folder to read, so only for files you trust.",
    ),
]


@app.command()
def evaluate(
    path: Annotated[Path, typer.Argument(help="A saved pruned model directory.")],
    data: Annotated[str | None, typer.Option(help="Dataset (default: the one it was pruned on).")] = None,
    split: Annotated[str, typer.Option(help="val or test.")] = "test",
    device: str = "cpu",
    batch_size: int = 64,
    data_arg: Annotated[
        list[str] | None,
        typer.Option(
            "--data-arg",
            help="Dataset option key=value, repeatable; added to (or overriding) the options the model "
            "was pruned with unless --data names another dataset.",
        ),
    ] = None,
    trust_model_code: TrustOption = False,
    base: Annotated[
        str,
        typer.Option(
            help="What the latency speed-up is against, timed interleaved with the model: `unpruned` "
            "(the architecture it was pruned from), `none`, or another saved model directory."
        ),
    ] = "unpruned",
    latency_budget: Annotated[
        float | None,
        typer.Option(help="Seconds of timed calls per model and timing (default 1; more: steadier)."),
    ] = None,
    onnxruntime: Annotated[
        bool,
        typer.Option(
            "--onnxruntime",
            help="Also export to ONNX and time it in ONNX Runtime (the optional extra `onnx`).",
        ),
    ] = False,
) -> None:
    """Quality, FLOPs, parameters and latency (median, IQR, speed-up) of a saved model."""
    from automl_prune.evaluation import evaluate_saved
    from automl_prune.latency import EVALUATE_BUDGET_S, NOISY_SPREAD
    from automl_prune.search.config import parse_key_values

    report = evaluate_saved(
        path,
        data=data,
        data_args=parse_key_values(data_arg, "--data-arg"),
        split=split,
        device=device,
        batch_size=batch_size,
        trust_code=trust_model_code,
        base=base,
        latency_budget_s=EVALUATE_BUDGET_S if latency_budget is None else latency_budget,
        onnxruntime=onnxruntime,
    )
    console.print_json(json.dumps(report))
    for name, timing in report["timings"].items():
        if timing["noisy"]:
            typer.echo(
                f"warning: {name} is noisy (interquartile range above {NOISY_SPREAD:g} x the median, "
                "or threads contending for a shared CPU, for the model or its base): rerun on an idle "
                "machine, with fewer threads "
                "(OMP_NUM_THREADS=1 steadies a shared CPU) or with a larger --latency-budget",
                err=True,
            )


@app.command()
def export(
    path: Annotated[Path, typer.Argument(help="A saved pruned model directory.")],
    format: Annotated[str, typer.Option(help="onnx or torchscript.")] = "onnx",
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output file (default: PATH/model.onnx or PATH/model.pt, inside the model directory; "
            "for a composite model, the folder PATH/export-FORMAT)."
        ),
    ] = None,
    trust_model_code: TrustOption = False,
) -> None:
    """Export a saved model to ONNX (any batch size) or TorchScript (traced at batch 1) at its recorded
    input shape."""
    from automl_prune.evaluation import export_saved

    console.print(f"wrote {export_saved(path, format, out, trust_code=trust_model_code)}")


@app.command()
def promote(
    run_dir: Annotated[Path, typer.Argument(help="Run directory of an earlier search.")],
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow server (default: the run's store).")
    ] = None,
    registered_model: Annotated[str | None, typer.Option(help="Registry name.")] = None,
) -> None:
    """Register an earlier search's best point under its budget; move `champion` if it is better."""
    from automl_prune.tracking.registry import promote_search

    decision = promote_search(run_dir, tracking_uri=tracking_uri, registered_model=registered_model)
    console.print(decision)


@app.command()
def front(
    run_dir: Annotated[Path, typer.Argument(help="Run directory of an earlier search.")],
    compare: Annotated[
        list[str] | None, typer.Option(help="Another search on the same base model to plot beside it.")
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the plot here (PNG).")] = None,
) -> None:
    """Print the Pareto front of an earlier search; optionally plot it against other searches."""
    from automl_prune.io import atomic_write_bytes
    from automl_prune.search.orchestrator import baseline_fronts
    from automl_prune.search.pareto import front_table, pareto_front, plot_front
    from automl_prune.search.records import load_info, load_records
    from automl_prune.search.validate import check_compare, check_output_file

    if plot is not None:
        check_output_file(plot, "--plot")
    info = load_info(run_dir)
    records = load_records(run_dir)
    check_compare(list(compare or []), info.config)
    front = pareto_front(records)
    console.print(front_table(front, info, len(records)))
    baselines = baseline_fronts(list(compare or []), info)
    for label, other in baselines:
        console.print(f"{label}: " + ", ".join(f"{r.quality:.4f} @ {r.flops / 1e6:.3f}M" for r in other))
    if plot is not None:
        console.print(f"wrote {atomic_write_bytes(plot, plot_front(records, front, info, baselines))}")


def _fail(problem: str, fix: str, status: int) -> None:
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    err.print(f"[bold red]error:[/] {problem}")
    if fix:
        err.print(f"  [bold]fix:[/] {fix}")
    sys.exit(status)


def main() -> None:
    """Console entry point: errors print what is wrong and how to fix it, never a traceback.

    Exit statuses: 0 success; 2 bad input (checked before any work wherever it can be); 3 a search or
    ``prune`` whose every trial failed (the first failure's reason is printed); 130 interrupted; 1 an
    unexpected error (a bug).

    An unexpected exception (a bug, or a model the strategy cannot handle) is reported the same way,
    with the full traceback written to a file for the bug report.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        app()
    except AutomlPruneError as exc:
        _fail(exc.problem, exc.fix, exc.exit_status)
    except KeyboardInterrupt:
        _fail("interrupted", "finished trials are kept: run the same command with --resume", 130)
    except Exception as exc:
        log = cache_dir() / "last_error.txt"
        atomic_write_text(log, traceback.format_exc())
        _fail(
            f"unexpected {type(exc).__name__}: {exc}",
            f"the full traceback is in {log}; if the input looks right, please report it",
            1,
        )
