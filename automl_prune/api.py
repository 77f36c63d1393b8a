"""The public API for plugins: everything a plugin imports from the core comes from here.

A plugin module imports only from ``automl_prune.api``, from the pruning toolbox
:mod:`automl_prune.pruning` and from its own package (a test checks the built-in plugins). What is here
is the contract the core keeps stable; the modules behind it may move.

- the strategy contract: :class:`Strategy`, :class:`Context`, :class:`Candidate`, :data:`FINETUNE_PARAMS`
  and :data:`hookimpl` (the decorator of hook implementations);
- the task contract: :class:`Task`, :class:`SingleCallTask` (one forward pass per call),
  :func:`eval_mode`, :func:`split_dataset`, :data:`SPLITS`, :data:`Inputs` (what a model is called
  with: a tensor, a tuple or a dict of tensors), and what ``Task.latency`` returns: :class:`Latency`
  records, made by :func:`measure_latency` (a model call) or :func:`measure_calls` (any callable);
- data: :class:`DataInfo`, :class:`DataSplits`, and the helpers of file-backed datasets
  (:func:`dataset_folder`, :func:`image_files`, :func:`first_image`, :func:`read_image`,
  :class:`PairedImages`, :func:`image_size_of`, :func:`file_transform`, :func:`file_extra`), and the
  in-memory :func:`fashion_mnist` a plugin may derive its own dataset from;
- errors (each carries the problem and how to fix it): :class:`AutomlPruneError` and its kinds;
- :class:`Progress`; search spaces (:func:`builtin_space_path`, :func:`load_space`); files
  (:func:`atomic_write_bytes`, :func:`png_bytes`, :func:`save_sample_grid`); counting
  (:func:`count_flops`, :func:`count_params`);
- Frechet distances and FID (:func:`frechet_distance`, :func:`fid`, :class:`InceptionEncoder`, ...).
- diffusion sampling: :func:`noise_scheduler` (the training scheduler that noises images at a
  timestep) and :func:`sampler_timesteps` (the training timesteps a sampler visits).
"""

from __future__ import annotations

from automl_prune.data.base import DataInfo, DataSplits
from automl_prune.data.common import file_extra, file_transform, image_size_of
from automl_prune.data.fashion_mnist import fashion_mnist
from automl_prune.data.folders import PairedImages, dataset_folder, first_image, image_files, read_image
from automl_prune.diffusion.sampling import noise_scheduler, sampler_timesteps
from automl_prune.errors import (
    AutomlPruneError,
    BudgetError,
    CheckpointError,
    DataError,
    MetricError,
    ModelError,
    SpaceError,
    TrackingError,
    UnknownNameError,
)
from automl_prune.feature_encoders import (
    DEFAULT_INCEPTION_NAME,
    INCEPTION_DIM,
    INCEPTION_SIZE,
    FeatureEncoder,
    FunctionEncoder,
    InceptionEncoder,
    InceptionUnavailableError,
    default_inception_path,
    tf_bilinear_resize,
)
from automl_prune.figures import save_sample_grid
from automl_prune.flops import count_flops, count_params
from automl_prune.frechet import encode_in_batches, fid, frechet_distance
from automl_prune.hookspecs import hookimpl
from automl_prune.io import atomic_write_bytes, png_bytes
from automl_prune.latency import Latency, measure_calls, measure_latency
from automl_prune.model_io import Inputs
from automl_prune.progress import Progress
from automl_prune.space import builtin_space_path, load_space
from automl_prune.strategy import FINETUNE_PARAMS, Candidate, Context, Strategy
from automl_prune.tasks.base import SPLITS, SingleCallTask, Task, eval_mode, split_dataset

__all__ = [
    "DEFAULT_INCEPTION_NAME",
    "FINETUNE_PARAMS",
    "INCEPTION_DIM",
    "INCEPTION_SIZE",
    "SPLITS",
    "AutomlPruneError",
    "BudgetError",
    "Candidate",
    "CheckpointError",
    "Context",
    "DataError",
    "DataInfo",
    "DataSplits",
    "FeatureEncoder",
    "FunctionEncoder",
    "InceptionEncoder",
    "InceptionUnavailableError",
    "Inputs",
    "Latency",
    "MetricError",
    "ModelError",
    "PairedImages",
    "Progress",
    "SingleCallTask",
    "SpaceError",
    "Strategy",
    "Task",
    "TrackingError",
    "UnknownNameError",
    "atomic_write_bytes",
    "builtin_space_path",
    "count_flops",
    "count_params",
    "dataset_folder",
    "default_inception_path",
    "encode_in_batches",
    "eval_mode",
    "fashion_mnist",
    "fid",
    "file_extra",
    "file_transform",
    "first_image",
    "frechet_distance",
    "hookimpl",
    "image_files",
    "image_size_of",
    "load_space",
    "measure_calls",
    "measure_latency",
    "noise_scheduler",
    "png_bytes",
    "read_image",
    "sampler_timesteps",
    "save_sample_grid",
    "split_dataset",
    "tf_bilinear_resize",
]
