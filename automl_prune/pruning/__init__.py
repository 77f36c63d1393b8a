"""The pruning toolbox that strategies share.

``analyze`` finds the channel groups torch-pruning couples; ``ChannelGates`` masks them (after
normalisation, so masked == sliced); ``ArchitectureGenerator`` + ``gumbel_sigmoid`` propose gates;
``GatedFlops`` is a differentiable FLOPs count of gates, exact against fvcore for hard gates (one row
per architecture or one gate vector), ``OrderedDepthFlops`` the same with ordered depth keeps added;
``log_hinge``/``log_abs`` turn it into a budget loss; ``keep_for_target`` picks channels by importance
under a FLOPs target; ``slice_model`` removes channels physically;
``repair_to_budget``/``choose``/``slice_checked`` turn generator logits into a checked pruned model
(``exact_flops_of``: the exact FLOPs of hard keep masks); ``OFFSET``/``TEMPERATURE`` are the Gumbel
gates' defaults (gates start open, nearly binary); ``gumbel_softmax`` relaxes a choice among options
(an expert's configuration), cooled by ``annealed_temperature``; ``hard_threshold`` decides soft gates
with straight-through gradients; ``sinkhorn`` spreads samples evenly over options (balanced routing);
``relax`` (ordered on depth), ``routing_embedding``, ``routing_similarity`` and ``assign`` route
samples to architecture codes;
``recalibrate_batchnorm`` refreshes BatchNorm statistics after an architecture change;
``CompositeModel`` puts several pruned models behind a ``Router`` (``TimestepRouter``: by denoising
timestep; ``PromptRouter``: by the architecture code a prompt's predicted gates resemble);
``BlockSkips``/``SkippedBlock``/``remove_blocks`` skip blocks whose output has their input's shape
(``shape_preserving``: elastic depth; ``unet_stages``/``stage_blocks``: a diffusers UNet's stages and
their blocks); ``save_pruned``/``load_pruned`` store pruned and composite models without pickle;
``export_*`` write TorchScript/ONNX.
"""

from automl_prune.pruning.batchnorm import recalibrate_batchnorm
from automl_prune.pruning.composite import CompositeModel
from automl_prune.pruning.depth import (
    BlockSkips,
    SkippedBlock,
    remove_blocks,
    shape_preserving,
    stage_blocks,
    unet_stages,
)
from automl_prune.pruning.depth_flops import OrderedDepthFlops
from automl_prune.pruning.export import export_onnx, export_torchscript
from automl_prune.pruning.extraction import (
    SliceMismatchError,
    check_same_outputs,
    choose,
    exact_flops_of,
    masked_outputs,
    repair_to_budget,
    slice_checked,
)
from automl_prune.pruning.flops_model import GatedFlops, smallest_flops
from automl_prune.pruning.gates import ChannelGates
from automl_prune.pruning.generator import ArchitectureGenerator
from automl_prune.pruning.graph import ChannelGroup, DependencyAnalysis, Member, analyze
from automl_prune.pruning.gumbel import (
    OFFSET,
    TEMPERATURE,
    annealed_temperature,
    deterministic_gates,
    gumbel_sigmoid,
    gumbel_softmax,
    hard_threshold,
)
from automl_prune.pruning.persistence import load_pruned, read_spec, save_pruned
from automl_prune.pruning.resource import log_abs, log_hinge
from automl_prune.pruning.routers import PromptRouter, Router, TimestepRouter
from automl_prune.pruning.routing import (
    assign,
    relax,
    routing_consistency_loss,
    routing_embedding,
    routing_similarity,
    routing_weights,
)
from automl_prune.pruning.selection import (
    aligned_units,
    global_keep,
    keep_for_target,
    kept_indices,
    uniform_keep,
)
from automl_prune.pruning.surgery import hard_keep, slice_model
from automl_prune.pruning.transport import sinkhorn

__all__ = [
    "OFFSET",
    "TEMPERATURE",
    "ArchitectureGenerator",
    "BlockSkips",
    "ChannelGates",
    "ChannelGroup",
    "CompositeModel",
    "DependencyAnalysis",
    "GatedFlops",
    "Member",
    "OrderedDepthFlops",
    "PromptRouter",
    "Router",
    "SkippedBlock",
    "SliceMismatchError",
    "TimestepRouter",
    "aligned_units",
    "analyze",
    "annealed_temperature",
    "assign",
    "check_same_outputs",
    "choose",
    "deterministic_gates",
    "exact_flops_of",
    "export_onnx",
    "export_torchscript",
    "global_keep",
    "gumbel_sigmoid",
    "gumbel_softmax",
    "hard_keep",
    "hard_threshold",
    "keep_for_target",
    "kept_indices",
    "load_pruned",
    "log_abs",
    "log_hinge",
    "masked_outputs",
    "read_spec",
    "recalibrate_batchnorm",
    "relax",
    "remove_blocks",
    "repair_to_budget",
    "routing_consistency_loss",
    "routing_embedding",
    "routing_similarity",
    "routing_weights",
    "save_pruned",
    "shape_preserving",
    "sinkhorn",
    "slice_checked",
    "slice_model",
    "smallest_flops",
    "stage_blocks",
    "unet_stages",
    "uniform_keep",
]
