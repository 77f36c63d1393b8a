"""``timm:NAME``: any timm model, untrained (``pretrained=False``, nothing is downloaded), built by timm
for the data's classes (``num_classes``) and channels (``in_chans``). timm is the optional extra
``automl-prune[timm]``; without it, building (or loading a saved model pruned from) a timm model says
so. Model arguments pass through to ``timm.create_model`` (``img_size``, ``depth``, ...)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from torch import nn

from automl_prune.data.base import DataInfo
from automl_prune.errors import ModelError
from automl_prune.models.by_name import classifier_classes, unknown_model

EXTRA = "pip install 'automl-prune[timm]'"


def _timm(name: str) -> ModuleType:
    try:
        import timm
    except ImportError as exc:
        raise ModelError(f"model 'timm:{name}' needs timm, which is not installed", EXTRA) from exc
    return timm


def _known(timm: ModuleType, name: str) -> None:
    if not timm.is_model(name):
        raise unknown_model("timm", name, timm.list_models(), "timm.list_models('PATTERN*')")


def timm_family(info: DataInfo, name: str, **kwargs: Any) -> nn.Module:
    """``timm:NAME`` built for ``info``'s classes and input channels."""
    timm = _timm(name)
    _known(timm, name)
    return timm.create_model(
        name, pretrained=False, num_classes=classifier_classes(info), in_chans=info.in_channels, **kwargs
    )


def timm_preprocessing(name: str) -> dict[str, Any]:
    """The input preprocessing timm's pretrained config of ``name`` states (``input_size``,
    ``interpolation``, ``mean``, ``std``, ``crop_pct``, ``crop_mode``), as ``resolve_data_config`` gives
    it, read from timm's registry without building the model."""
    timm = _timm(name)
    _known(timm, name)
    from timm.data import resolve_data_config

    config = resolve_data_config(pretrained_cfg=timm.models.get_pretrained_cfg(name).to_dict())
    return {key: list(value) if isinstance(value, tuple) else value for key, value in config.items()}
