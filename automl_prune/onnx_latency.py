"""Latency of a model as many users deploy it: exported to ONNX and run by ONNX Runtime on the CPU.

The model (and the base it is compared with) is exported with the project's exporter to a temporary
file and timed by the same convention as eager PyTorch (:mod:`automl_prune.latency`), both sessions
interleaved, each with as many intra-op threads as torch uses, so the two runtimes' figures compare.
ONNX Runtime is the optional extra ``onnx``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from automl_prune.errors import AutomlPruneError
from automl_prune.latency import Latency, batch_of, measure_calls
from automl_prune.model_io import Inputs, positional
from automl_prune.pruning.export import export_onnx


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise AutomlPruneError(
            "timing with ONNX Runtime needs the onnxruntime package, which is not installed",
            "pip install 'automl-prune[onnx]' (the optional extra onnx), or leave out --onnxruntime",
        ) from None
    return onnxruntime


def onnxruntime_session(model: nn.Module, example_input: Inputs, folder: Path) -> Any:
    """An ONNX Runtime session of ``model`` exported into ``folder`` (dynamic batch axis) on
    ``example_input``: on the CPU whatever the model's device, with as many intra-op threads as torch
    uses."""
    ort = _onnxruntime()
    path = export_onnx(model, example_input, folder / "model.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def session_call(session: Any, inputs: Inputs) -> Callable[[], object]:
    """One call of ``session`` on ``inputs`` (tensors, fed in the session's input order)."""
    arrays = [t.detach().cpu().numpy() for t in positional(inputs)]
    feed = {i.name: a for i, a in zip(session.get_inputs(), arrays, strict=True)}
    return lambda: session.run(None, feed)


def onnxruntime_latency(
    model: nn.Module, example_input: Inputs, *, base: nn.Module | None = None, **timing: Any
) -> Latency:
    """The :class:`~automl_prune.latency.Latency` of ``model`` in ONNX Runtime on ``example_input``
    (CPU tensors), with ``base`` exported and timed interleaved when given. ``timing``:
    :func:`~automl_prune.latency.measure_calls`'s budget, repeats and warm-up."""
    _onnxruntime()  # before any export: a missing extra is said at once
    with tempfile.TemporaryDirectory(prefix="automl-prune-ort-") as tmp:
        folder = Path(tmp)
        run = session_call(onnxruntime_session(model, example_input, folder / "model"), example_input)
        base_run = (
            None
            if base is None
            else session_call(onnxruntime_session(base, example_input, folder / "base"), example_input)
        )
    return measure_calls(
        run,
        base_run=base_run,
        batch=batch_of(example_input),
        device=torch.device("cpu"),
        threads=torch.get_num_threads(),
        **timing,
    )
