"""The path a vision engineer takes with their own pretrained network (issue 13's done-when test).

An ImageNet-style torchvision checkpoint (1000 classes) is pruned through the CLI on a 10-class image
folder with ImageNet normalisation: the head is replaced, the base model is measured with that
normalisation, the search finishes and the MLflow champion loads as a pyfunc model that gives the same
outputs as ``automl_prune.load``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import automl_prune
from automl_prune.cli import app
from automl_prune.search.records import load_info

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def digit_folder(root: Path, per_class: int = 24) -> Path:
    """A 10-class folder of 32x32 RGB digit images (scikit-learn's digits, upscaled)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    counts = dict.fromkeys(range(10), 0)
    for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        if counts[int(label)] == per_class:
            continue
        counts[int(label)] += 1
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = Image.fromarray((image * 15).astype(np.uint8)).resize((32, 32)).convert("RGB")
        pixels.save(folder / f"{i}.png")
    return root


@pytest.mark.timeout(600)
def test_a_1000_class_torchvision_checkpoint_is_pruned_on_a_10_class_folder(tmp_path: Path) -> None:
    import mlflow
    import torchvision

    checkpoint = tmp_path / "resnet18_imagenet.pt"
    torch.save(torchvision.models.resnet18(weights=None, num_classes=1000).state_dict(), checkpoint)
    images = digit_folder(tmp_path / "images")
    out = tmp_path / "run"
    args = f"""search --strategy magnitude --model torchvision:resnet18 --weights {checkpoint}
        --data folder:{images} --data-arg norm=imagenet --data-arg augment=false --base-epochs 1
        --base-lr 0.01 --trials 2 --max-flops 0.5 --set finetune_epochs=1 --registered-model own-resnet18
        --out {out}""".split()
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "replaced the classifier head 'fc': checkpoint weight (1000, 512) -> (10, 512)" in result.output

    assert 0.0 <= load_info(out).base["quality"] <= 1.0

    uri = f"sqlite:///{out}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    champion = mlflow.MlflowClient().get_model_version_by_alias("own-resnet18", "champion")
    pyfunc = mlflow.pyfunc.load_model("models:/own-resnet18@champion")
    saved = out / "trials" / f"{int(champion.tags['trial_number']):04d}" / "model"
    extra = json.loads((saved / "spec.json").read_text())["data_info"]["extra"]
    assert extra["mean"] == pytest.approx(IMAGENET_MEAN) and extra["std"] == pytest.approx(IMAGENET_STD)
    model = automl_prune.load(saved)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(np.asarray(pyfunc.predict(x.numpy())), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("data_args", "mean", "crop_pct"),
    [
        ({}, [sum(IMAGENET_MEAN) / 3], 0.875),  # timm's convnext_atto config, averaged for grey digits
        ({"norm": "mnist", "crop_pct": 1.0}, [0.1307], 1.0),  # the user's options win
    ],
)
def test_timm_models_bring_their_preprocessing(data_args: dict, mean: list, crop_pct: float) -> None:
    pytest.importorskip("timm")
    from automl_prune.search.config import SearchConfig
    from automl_prune.search.setup import load_data

    config = SearchConfig(
        strategy="magnitude", model="timm:convnext_atto", data="digits", data_args=data_args, out="unused"
    )
    preprocessing = load_data(config).info.extra["preprocessing"]
    assert preprocessing["mean"] == pytest.approx(mean) and preprocessing["crop_pct"] == crop_pct
