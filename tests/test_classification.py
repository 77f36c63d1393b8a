"""The classification task (training, distillation, evaluation) and the cached base model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Subset

from automl_prune.data.base import DataSplits
from automl_prune.data.registry import load_dataset
from automl_prune.models.base import ModelRef
from automl_prune.models.pretrained import get_base_model
from automl_prune.models.registry import build_model
from automl_prune.plugins import get_plugins, reset_plugins
from automl_prune.progress import Progress
from automl_prune.tasks.base import Task
from automl_prune.tasks.classification import ClassificationTask

CPU = torch.device("cpu")
QUIET = Progress(quiet=True)
SMALL = ModelRef("resnet20", {"width": 4})


@pytest.fixture(scope="module")
def task() -> ClassificationTask:
    reset_plugins()
    return get_plugins().tasks.get("classification")


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    """Digits with a 256-image train split, so a training epoch takes a fraction of a second."""
    data = load_dataset("digits")
    return DataSplits(Subset(data.train, range(256)), data.val, data.test, data.info)


def test_task_is_registered(task: ClassificationTask) -> None:
    assert isinstance(task, Task) and task.quality_metric == "accuracy"


def _training_loss(model: nn.Module, data: DataSplits) -> float:
    """Cross-entropy on the train split with batch statistics, as the optimiser sees it.

    (In eval mode a model trained for only a few dozen steps is judged by BatchNorm running statistics
    that still lag behind its weights, so that loss says little about the optimisation.)
    """
    images, labels = (torch.stack([data.train[i][k] for i in range(len(data.train))]) for k in (0, 1))
    with torch.no_grad():
        return nn.functional.cross_entropy(model.train()(images), labels).item()


def test_training_drives_the_loss_down(task: ClassificationTask, digits: DataSplits) -> None:
    model = build_model(ModelRef("resnet20", {"width": 8}), digits.info)
    before = _training_loss(model, digits)
    task.train(model, digits, epochs=2, lr=0.05, batch_size=32, device=CPU, seed=0, progress=QUIET)
    assert _training_loss(model, digits) < 0.5 * before


def test_training_is_seeded(task: ClassificationTask, digits: DataSplits) -> None:
    def trained() -> nn.Module:
        torch.manual_seed(0)
        model = build_model(SMALL, digits.info)
        return task.train(model, digits, epochs=1, lr=0.05, batch_size=64, device=CPU, seed=1, progress=QUIET)

    first, second = trained(), trained()
    assert all(
        torch.equal(a, b)
        for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    )


def test_distillation_term(task: ClassificationTask, digits: DataSplits) -> None:
    logits = torch.randn(4, 10)
    assert task.distill_loss(logits, logits).abs().item() < 1e-6
    assert task.distill_loss(logits, torch.randn(4, 10)).item() > 0
    teacher = build_model(SMALL, digits.info).train()
    student = build_model(SMALL, digits.info)
    task.train(
        student,
        digits,
        epochs=1,
        lr=0.05,
        batch_size=128,
        device=CPU,
        seed=0,
        progress=QUIET,
        teacher=teacher,
    )
    assert teacher.training  # the teacher ran in eval mode and got its own mode back


def test_evaluate_restores_the_mode(task: ClassificationTask, digits: DataSplits) -> None:
    model = build_model(SMALL, digits.info).train()
    metrics = task.evaluate(model, digits, "val", batch_size=128, device=CPU)
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["loss"] > 0 and model.training
    model.eval()
    assert task.evaluate(model, digits, "val", batch_size=50, device=CPU) == pytest.approx(metrics)
    assert not model.training


def test_example_input(task: ClassificationTask, digits: DataSplits) -> None:
    x = task.example_input(digits, batch=3)
    assert x.shape == (3, 1, 16, 16) and not x.any()


def test_base_model_is_trained_once_then_cached(
    task: ClassificationTask, digits: DataSplits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kwargs = dict(weights=None, epochs=1, lr=0.05, batch_size=64, seed=0, device=CPU, progress=QUIET)
    monkeypatch.setenv("AUTOML_PRUNE_CACHE", str(tmp_path))
    first = get_base_model(SMALL, digits, task, **kwargs)  # cache_dir defaults to $AUTOML_PRUNE_CACHE
    assert not first.training and len(list(tmp_path.glob("base_models/*.safetensors"))) == 1

    def no_training(*args: object, **kw: object) -> None:
        raise AssertionError("the cached base model must not be trained again")

    monkeypatch.setattr(ClassificationTask, "train", no_training)
    second = get_base_model(SMALL, digits, task, cache_dir=tmp_path, **kwargs)
    x = task.example_input(digits, batch=2).normal_()
    torch.testing.assert_close(second(x), first(x))
    with pytest.raises(AssertionError, match="not be trained again"):  # another seed is another model
        get_base_model(SMALL, digits, task, cache_dir=tmp_path, **{**kwargs, "seed": 1})


def test_base_model_from_local_weights(task: ClassificationTask, digits: DataSplits, tmp_path: Path) -> None:
    source = build_model(SMALL, digits.info).eval()
    torch.save(source.state_dict(), tmp_path / "w.pt")
    model = get_base_model(
        SMALL,
        digits,
        task,
        weights=tmp_path / "w.pt",
        epochs=1,
        lr=0.1,
        batch_size=64,
        seed=0,
        device=CPU,
        progress=QUIET,
        cache_dir=tmp_path,
    )
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(model(x), source(x))
    assert not (tmp_path / "base_models").exists()


def test_weights_for_other_classes_are_fine_tuned_under_a_new_head_then_cached(
    task: ClassificationTask, digits: DataSplits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = dataclasses.replace(digits.info, num_classes=100)
    source = build_model(SMALL, other)
    torch.save(source.state_dict(), tmp_path / "w100.pt")
    kwargs = dict(weights=tmp_path / "w100.pt", epochs=1, lr=0.05, batch_size=64, seed=0, device=CPU)
    progress, messages = Progress(quiet=True), []
    monkeypatch.setattr(progress, "log", messages.append)
    model = get_base_model(SMALL, digits, task, progress=progress, cache_dir=tmp_path, **kwargs)
    assert any("replaced the classifier head 'fc'" in m for m in messages)
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 10)
    assert len(list(tmp_path.glob("base_models/*.safetensors"))) == 1
    assert not torch.equal(model.conv1.weight.cpu(), source.conv1.weight)  # the backbone was trained too

    monkeypatch.setattr(ClassificationTask, "train", lambda *a, **k: pytest.fail("trained again"))
    again = get_base_model(SMALL, digits, task, progress=QUIET, cache_dir=tmp_path, **kwargs)
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(again(x), model(x))
    torch.save(build_model(SMALL, other).state_dict(), tmp_path / "w100.pt")  # other weights, same path
    with pytest.raises(pytest.fail.Exception, match="trained again"):
        get_base_model(SMALL, digits, task, progress=QUIET, cache_dir=tmp_path, **kwargs)
