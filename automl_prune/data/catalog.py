"""The built-in datasets, registered through the ``register_datasets`` hook like any plugin's."""

from __future__ import annotations

from typing import Any

from automl_prune.data.digits import digits
from automl_prune.data.fashion_mnist import fashion_mnist
from automl_prune.data.folders import image_folder, paired_folder
from automl_prune.data.torchvision_sets import torchvision_dataset
from automl_prune.hookspecs import hookimpl


@hookimpl
def register_datasets(register: Any) -> None:
    register(
        "digits",
        digits,
        task="classification",
        description="scikit-learn's 1797 real 8x8 digits, upsampled to 16x16 (offline)",
    )
    register(
        "fashion-mnist",
        fashion_mnist,
        task="classification",
        description="Fashion-MNIST 60k+10k, 28x28 grey (Debian dataset-fashion-mnist, else download)",
    )
    register(
        "torchvision",
        torchvision_dataset,
        task="classification",
        description="torchvision:NAME, e.g. torchvision:CIFAR10 (downloads into the cache)",
    )
    register(
        "folder",
        image_folder,
        task="classification",
        description="folder:PATH with one subfolder per class (optionally train/ val/ test/)",
    )
    register(
        "paired",
        paired_folder,
        task="image-translation",
        description="paired:PATH with A/ (inputs) and B/ (targets) under matching file names",
    )
