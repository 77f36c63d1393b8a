"""Write scikit-learn's digits as a class-per-folder image dataset, the layout of your own data.

    python examples/digit_folder.py data/digits_rgb            # 1797 RGB PNGs, 32x32, in 10 class folders

Used by the README's "Prune your own model" walk-through; any ImageFolder-style folder works the same.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to create (one subfolder per digit)")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    args = parser.parse_args()
    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        folder = args.out / f"digit_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = Image.fromarray((image * 255 / 16).astype(np.uint8)).resize((args.size, args.size))
        pixels.convert("RGB").save(folder / f"{i:04d}.png")
    print(f"wrote {len(digits.images)} images to {args.out}")


if __name__ == "__main__":
    main()
