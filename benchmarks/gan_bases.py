"""The base GANs that gan_translation.py prunes: val and test PSNR/SSIM/L1 and FID, and a sample grid each.

Each base comes from the core's base-model cache (trained there on first use, with the task's recipe and
``--base-epochs``), the same one gan_translation.py loads, so the README can state what every comparison
starts from. FID uses the standard Inception network on the first ``--fid-images`` images of a split, as
the benchmark does on test; the grids show every ``n // 8``-th val and test patch.

    python benchmarks/gan_bases.py --threads 1
    python benchmarks/gan_bases.py --data fashion-edges --limit-train 5000 --base-epochs 10 --threads 1
    python benchmarks/gan_bases.py --data fashion-unpaired --limit-train 10000 --base-epochs 10 --threads 1
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from automl_prune_gan.figures import save_sample_grid
from gan_translation import add_base_arguments, prepare
from summary import write_csv

from automl_prune.api import InceptionEncoder, encode_in_batches, fid
from automl_prune.search.setup import Prepared

HERE = Path(__file__).parent
BASES = (
    ("pix2pix-unet", "photo-colour"),
    ("pix2pix-unet", "photo-edges"),
    ("cyclegan-resnet", "photo-unpaired"),
    ("pix2pix-unet", "fashion-edges"),
    ("cyclegan-resnet", "fashion-unpaired"),
)
COLUMNS = 8


def measure(prepared: Prepared, fid_images: int, figure: Path) -> dict[str, float]:
    """Val and test metrics of the prepared base model, and its sample grid written to ``figure``."""
    context = prepared.context
    encoder = InceptionEncoder(None, device=context.device)
    row: dict[str, float] = {}
    grid = []
    for split in ("val", "test"):
        row |= {f"{split}_{k}": v for k, v in context.evaluate(context.model, split).items()}
        x, y = context.first_batch(split, fid_images)
        with torch.no_grad():
            fake = context.model(x).cpu()
        row[f"{split}_fid"] = fid(encoder, fake, encode_in_batches(encoder, y.cpu()), method="svd")
        picks = slice(None, None, max(1, len(x) // COLUMNS))
        grid += [
            (f"{split} input", x[picks][:COLUMNS].cpu()),
            (f"{split} base", fake[picks][:COLUMNS]),
            (f"{split} target", y[picks][:COLUMNS].cpu()),
        ]
    save_sample_grid(figure, grid, title=f"{context.model_ref.name} on {context.data.info.name} (base)")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_base_arguments(parser)
    parser.add_argument("--fid-images", type=int, default=64)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--data",
        default=",".join(data for _, data in BASES if data.startswith("photo-")),
        help="which bases (the fashion ones on their own, with their --limit-train and --base-epochs)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "gan_bases.csv")
    args = parser.parse_args()
    args.finetune_epochs = 1  # prepare() sets a fine-tuning budget; no trial runs here
    torch.set_num_threads(args.threads)

    work = Path(tempfile.mkdtemp(prefix="bench-gan-bases-"))
    rows = []
    for model, data in [base for base in BASES if base[1] in args.data.split(",")]:
        args.model, args.data = model, data  # what prepare() reads
        prepared = prepare("gan", args, work / data)
        figure = args.out.with_name(f"gan_base_{data.replace('-', '_')}.png")
        row = {"model": model, "data": data, "base_epochs": args.base_epochs}
        rows.append(row | measure(prepared, args.fid_images, figure))
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
        write_csv(args.out, rows, list(rows[-1]))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
