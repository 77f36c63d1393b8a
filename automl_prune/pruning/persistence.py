"""Pruned models on disk without pickle: ``spec.json`` + ``model.safetensors`` in one directory.

A composite model (:class:`~automl_prune.pruning.composite.CompositeModel`) is a directory holding
``manifest.json`` (the router's config, the base model and data, metadata), ``router.safetensors`` for a
router with tensors (a prompt router's heads and codes), and one such directory per part (``part0``,
``part1``, ...); :func:`save_pruned` and :func:`load_pruned` handle both.

A pruned model is its base architecture (a ``ModelRef`` plus the ``DataInfo`` it was built for) with
some layers reshaped or dropped. The spec records, for every module that differs from a fresh base
build, its type and constructor arguments (the toolbox's table :data:`SHAPES` for convs, linears and
norms; a plugin's layer type through a registered ``LayerRule.rebuild``); loading builds the base, swaps
those modules for fresh ones of the recorded shape and loads the weights strictly. A library's subclass
of one of those layers (timm's ``BatchNormAct2d``, which holds its activation) is not rebuilt but resized
in place: the base build's module keeps its class and what else it holds, takes the recorded widths, and
its own tensors are re-allocated at the recorded shapes before the weights load. Nothing is
unpickled, and only registered model factories are built unless the caller trusts the spec
(``trust_code``): a spec naming a ``module:factory`` would otherwise import and call whatever an edited
file names. A pruned model whose class cannot rebuild itself (e.g. diffusers' ``from_pretrained``) still
loads.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from automl_prune.data.base import DataInfo
from automl_prune.errors import CheckpointError, UntrustedCodeError
from automl_prune.io import dir_mode, file_mode
from automl_prune.models.base import ModelRef
from automl_prune.models.registry import build_model, outside_code
from automl_prune.pruning.composite import CompositeModel
from automl_prune.pruning.depth import SkippedBlock
from automl_prune.pruning.layers import LayerRule, layer_rules, rule_of, type_name
from automl_prune.pruning.routers import router_from_config

FORMAT = "automl_prune.pruned"
COMPOSITE_FORMAT = "automl_prune.composite"
FORMAT_VERSION = 1
SPEC = "spec.json"
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
ROUTER_WEIGHTS = "router.safetensors"

_CONV = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias")
_CONV_ND = (*_CONV, "padding_mode")
_CONV_T = (*_CONV, "output_padding")
_NORM = ("num_features", "eps", "momentum", "affine", "track_running_stats")
# Constructor arguments read back from each layer type that pruning may reshape.
SHAPES: dict[type[nn.Module], tuple[str, ...]] = {
    nn.Conv1d: _CONV_ND,
    nn.Conv2d: _CONV_ND,
    nn.Conv3d: _CONV_ND,
    nn.ConvTranspose1d: _CONV_T,
    nn.ConvTranspose2d: _CONV_T,
    nn.ConvTranspose3d: _CONV_T,
    nn.Linear: ("in_features", "out_features", "bias"),
    nn.BatchNorm1d: _NORM,
    nn.BatchNorm2d: _NORM,
    nn.BatchNorm3d: _NORM,
    nn.InstanceNorm1d: _NORM,
    nn.InstanceNorm2d: _NORM,
    nn.InstanceNorm3d: _NORM,
    nn.GroupNorm: ("num_groups", "num_channels", "eps", "affine"),
    nn.LayerNorm: ("normalized_shape", "eps", "elementwise_affine", "bias"),
    nn.Identity: (),
    SkippedBlock: (),  # a block an elastic-depth model skips (see depth.py)
}
_BY_NAME = {cls.__name__: cls for cls in SHAPES}


def _shape_of(cls: type[nn.Module], rules: dict[str, LayerRule]) -> tuple[str, tuple[str, ...], bool] | None:
    """How the spec names ``cls``, which constructor arguments rebuild it, and whether it is resized in
    place instead: the toolbox's own table (:data:`SHAPES`), else a layer rule's ``rebuild`` (named by its
    class path), else a subclass of a :data:`SHAPES` layer (resized in place); None: not rebuildable."""
    if cls in SHAPES:
        return cls.__name__, SHAPES[cls], False
    rule = rules.get(type_name(cls))
    if rule is not None and rule.rebuild is not None:
        return rule.type, rule.rebuild, False
    base = next((b for b in cls.__mro__ if b in SHAPES), None)
    return (type_name(cls), SHAPES[base], True) if base is not None else None


def _class_named(name: str, rules: dict[str, LayerRule]) -> type[nn.Module]:
    """The layer class a spec names: one of :data:`SHAPES` or a type a layer rule can rebuild."""
    if name in _BY_NAME:
        return _BY_NAME[name]
    rule = rules.get(name)
    if rule is None or rule.rebuild is None:
        raise KeyError(f"{name} is neither a toolbox layer nor a type a registered layer rule rebuilds")
    module, _, qualname = name.rpartition(".")
    return getattr(importlib.import_module(module), qualname)


def save_pruned(
    model: nn.Module,
    path: str | Path,
    *,
    model_ref: ModelRef,
    info: DataInfo,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` to the directory ``path`` atomically (an existing one is replaced only once the
    new one is complete). ``metadata`` is free JSON kept in the spec (budget, trial, quality...).
    A composite model is written as its manifest and one directory per part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        if isinstance(model, CompositeModel):
            manifest = {
                "format": COMPOSITE_FORMAT,
                "format_version": FORMAT_VERSION,
                "model_ref": model_ref.to_dict(),
                "data_info": asdict(info),
                "router": model.router.to_config(),
                "parts": [f"part{i}" for i in range(len(model.parts))],
                "metadata": metadata or {},
            }
            for name, part in zip(manifest["parts"], model.parts, strict=True):
                _write_pruned(part, tmp / name, model_ref, info, {})
            if model.router.state_dict():
                save_model(model.router, str(tmp / ROUTER_WEIGHTS))
            (tmp / MANIFEST).write_text(_json(manifest, "manifest"))
        else:
            _write_pruned(model, tmp, model_ref, info, metadata or {})
        _ordinary_permissions(tmp)
        _swap_in(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _ordinary_permissions(folder: Path) -> None:
    """Give ``folder`` and all in it the modes ``mkdir`` and ``open`` give under the umask: ``mkdtemp``
    makes the folder 0o700 and safetensors writes its files 0o600."""
    files, dirs = file_mode(), dir_mode()
    os.chmod(folder, dirs)
    for item in folder.rglob("*"):
        os.chmod(item, dirs if item.is_dir() else files)


def _json(value: dict[str, Any], what: str) -> str:
    try:
        return json.dumps(value, indent=2)
    except TypeError as exc:
        raise CheckpointError(
            f"cannot write the {what} of a pruned model: {exc}",
            "metadata, model arguments and DataInfo.extra must be JSON values (str, number, list, dict)",
        ) from exc


def _write_pruned(
    model: nn.Module, folder: Path, model_ref: ModelRef, info: DataInfo, metadata: dict[str, Any]
) -> None:
    """``spec.json`` and ``model.safetensors`` of one (non-composite) pruned model into ``folder``."""
    base = build_model(model_ref, info)
    spec = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_ref": model_ref.to_dict(),
        "data_info": asdict(info),
        "modules": _changed_modules(model, base),
        "attributes": _changed_attributes(model, base),
        "metadata": metadata,
    }
    text = _json(spec, "spec")
    _check_rebuild(model, spec)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SPEC).write_text(text)
    save_model(model, str(folder / WEIGHTS), force_contiguous=True)


def _swap_in(new: Path, path: Path) -> None:
    """Rename ``new`` to ``path``; an existing ``path`` is moved aside first and put back on failure."""
    if not path.exists():
        new.rename(path)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
    path.rename(aside / path.name)
    try:
        new.rename(path)
    except OSError:
        (aside / path.name).rename(path)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def read_spec(path: str | Path) -> dict[str, Any]:
    """The parsed ``spec.json`` of a saved pruned model, or ``manifest.json`` of a saved composite (both
    hold the base architecture ``model_ref``, the data facts ``data_info`` and ``metadata``)."""
    composite = (Path(path) / MANIFEST).is_file()
    file = Path(path) / (MANIFEST if composite else SPEC)
    fix = "give the directory written by save_pruned; save the model again if the file is damaged"
    if not file.is_file():
        raise CheckpointError(f"{path} is not a saved pruned model: {SPEC} not found", fix)
    try:
        spec = json.loads(file.read_text())
        fields = ("router",) if composite else ("modules",)
        parts = [spec[key] for key in ("model_ref", "data_info", *fields)]
        expected = COMPOSITE_FORMAT if composite else FORMAT
        ok = spec["format"] == expected and all(isinstance(part, dict) for part in parts)
        ok = ok and (not composite or isinstance(spec["parts"], list))
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{file} is corrupt: {type(exc).__name__}: {exc}", fix) from exc
    if not ok:
        raise CheckpointError(f"{file} is not a pruned-model {'manifest' if composite else 'spec'}", fix)
    if spec.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{file} has format version {spec['format_version']}; this automl_prune reads up to "
            f"{FORMAT_VERSION}",
            "upgrade automl-prune",
        )
    return spec


def load_pruned(path: str | Path, *, trust_code: bool = False) -> nn.Module:
    """Rebuild a model saved by :func:`save_pruned` (a composite with all its parts), with its weights,
    in eval mode.

    Only registered model names are built unless ``trust_code``: a spec naming a ``module:factory`` (or
    a local diffusers directory) is refused before anything is imported, because a spec is a file anyone
    may have edited and building it would run what it names.
    """
    spec = read_spec(path)
    ref = ModelRef.from_dict(spec["model_ref"])
    if not trust_code and (code := outside_code(ref)) is not None:
        raise UntrustedCodeError(
            f"{path} was pruned from {ref.name!r}: loading it runs {code}, which is not a registered "
            "model, and the spec is a file anyone may have edited",
            "if you trust where this model comes from, load it with automl_prune.load(path, "
            "trust_code=True) or pass --trust-model-code",
        )
    if spec["format"] == COMPOSITE_FORMAT:
        parts = [load_pruned(Path(path) / name, trust_code=trust_code) for name in spec["parts"]]
        router = router_from_config(spec["router"])
        if router.state_dict():
            _load_weights(router, Path(path) / ROUTER_WEIGHTS)
        return CompositeModel(parts, router).eval()
    model = _rebuild(spec)
    _load_weights(model, Path(path) / WEIGHTS)
    return model.eval()


def _load_weights(module: nn.Module, weights: Path) -> None:
    """``module``'s tensors from ``weights``, strictly (every tensor, each of its recorded shape)."""
    try:
        load_model(module, str(weights), strict=True)
    except (OSError, SafetensorError, RuntimeError) as exc:
        raise CheckpointError(
            f"cannot load {weights}: {type(exc).__name__}: {str(exc)[:300].strip()}",
            "the weights file is missing, truncated or from another model; save the model again",
        ) from exc


def data_info(spec: dict[str, Any]) -> DataInfo:
    """The data facts a spec or manifest (:func:`read_spec`) records: what the model was trained on."""
    info = dict(spec["data_info"])
    info["image_size"] = tuple(info["image_size"])
    return DataInfo(**info)


def _rebuild(spec: dict[str, Any]) -> nn.Module:
    model = build_model(ModelRef.from_dict(spec["model_ref"]), data_info(spec))
    rules = layer_rules()
    for name, shape in spec["modules"].items():
        args = {k: v for k, v in shape.items() if k != "type"}
        try:
            if "tensors" in shape:
                _resize(model.get_submodule(name), shape)
            else:
                model.set_submodule(name, _class_named(shape["type"], rules)(**args))
        except (KeyError, TypeError, ValueError, AttributeError, ImportError) as exc:
            raise CheckpointError(
                f"the spec's entry for module {name!r} cannot be built: {type(exc).__name__}: {exc}",
                "install the plugin that registers its layer type; else the spec is damaged or from "
                "another model: save the model again",
            ) from exc
    modules = dict(model.named_modules())
    for name, values in spec.get("attributes", {}).items():
        if name not in modules:
            raise CheckpointError(
                f"the spec records attributes of module {name!r}, which the base model does not have",
                "the spec is damaged or from another model; save the model again",
            )
        for key, value in values.items():
            setattr(modules[name], key, value)
    return model


def _resize(module: nn.Module, shape: dict[str, Any]) -> None:
    """Give the base build's ``module`` the recorded widths and tensors of the recorded shapes (their
    values come with the weights)."""
    if type_name(type(module)) != shape["type"]:
        raise TypeError(f"the base model's module is a {type_name(type(module))}, not a {shape['type']}")
    for key, value in shape.items():
        if key not in ("type", "tensors", "bias"):  # bias is a tensor, resized below
            setattr(module, key, tuple(value) if isinstance(value, list) else value)
    for key, size in shape["tensors"].items():
        old = getattr(module, key)
        new = torch.empty(size, dtype=old.dtype)
        setattr(module, key, nn.Parameter(new, old.requires_grad) if isinstance(old, nn.Parameter) else new)


def _describe(module: nn.Module, rules: dict[str, LayerRule]) -> dict[str, Any] | None:
    """The constructor arguments that rebuild ``module``'s shape (plus its own tensors' shapes for a
    module resized in place), or None for a type not rebuildable."""
    known = _shape_of(type(module), rules)
    if known is None:
        return None
    name, keys, in_place = known
    shape: dict[str, Any] = {"type": name}
    for key in keys:
        value = getattr(module, key)
        if key == "bias":  # the constructor takes whether there is one
            value = value is not None
        shape[key] = list(value) if isinstance(value, tuple) else value
    if in_place:
        shape["tensors"] = {k: list(v) for k, v in _own_shapes(module).items()}
    return shape


def _changed_modules(model: nn.Module, base: nn.Module) -> dict[str, dict[str, Any]]:
    base_modules = dict(base.named_modules())
    rules = layer_rules()
    changed = {}
    for name, module in model.named_modules():
        if not name:
            continue
        shape = _describe(module, rules)
        original = base_modules.get(name)
        same = original is not None and type(module) is type(original)
        if same and shape == _describe(original, rules) and _own_shapes(module) == _own_shapes(original):
            continue
        if shape is None:
            raise CheckpointError(
                f"cannot save module {name!r} ({type(module).__name__}): it differs from the base "
                "architecture and only reshaped conv, linear and norm layers, Identity, or types a layer "
                "rule can rebuild are recorded",
                "prune with the toolbox's slice_model, register a LayerRule with `rebuild` for the type "
                "(register_layer_rules), or save a model whose other modules are unchanged",
            )
        changed[name] = shape
    return changed


def _own_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """Shapes of the tensors ``module`` holds itself (not its children's)."""
    tensors = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
    return {k: tuple(v.shape) for k, v in tensors}


def _changed_attributes(model: nn.Module, base: nn.Module) -> dict[str, dict[str, Any]]:
    """The attributes layer rules name (``LayerRule.attributes``) that differ from a fresh base build."""
    rules = layer_rules()
    base_modules = dict(base.named_modules())
    changed: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        rule = rule_of(module, rules)
        original = base_modules.get(name)
        if rule is None or original is None:
            continue
        values = {a: getattr(module, a) for a in rule.attributes}
        values = {a: v for a, v in values.items() if v != getattr(original, a)}
        if values:
            changed[name] = values
    return changed


def _check_rebuild(model: nn.Module, spec: dict[str, Any]) -> None:
    """Fail at save time, not at load time, when the spec cannot reproduce ``model``'s tensors."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    rebuilt = {k: tuple(v.shape) for k, v in _rebuild(spec).state_dict().items()}
    if rebuilt != expected:
        differ = sorted(set(expected.items()) ^ set(rebuilt.items()))[:3]
        raise CheckpointError(
            f"the pruned model cannot be rebuilt from its base architecture; tensors differ: {differ}",
            "check that model_ref and info describe the model this one was pruned from",
        )
