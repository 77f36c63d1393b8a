"""The ``image-translation`` task: how image-to-image GANs are trained and judged.

Quality is PSNR (dB) of the generator's output against the target on the split (maximised); L1 and SSIM
are reported beside it. Every image-translation dataset here has paired val/test splits (unpaired ones
pair only their evaluation images), so these are always defined.

Training follows the model's own objective (see :class:`~automl_prune_gan.models.TranslationGAN`):

- Pix2Pix: LSGAN loss of the conditional discriminator + 100 * L1 to the target;
- CycleGAN: LSGAN losses of both discriminators + 10 * cycle L1 + 5 * identity L1 (both directions);
- a bare generator (e.g. the zoo's ``unet``): L1 to the target alone.

Adam with betas (0.5, 0.999) for generators and discriminators; the learning rate is constant for the
first half of the steps and decays linearly to zero over the second half, as in the original recipes.
Choices made here: LSGAN for Pix2Pix as well (the original's vanilla GAN loss is one flag away there
too), no image pool for CycleGAN's discriminators. With a ``teacher`` (the unpruned base model), the
generator also matches the teacher's outputs: ``distill_weight`` * L1(G(x), G0(x)).

Every epoch appends the discriminator's accuracy on real and generated samples (patch scores above or
below 0.5) and the mean losses to ``model.history``: the G/D balance curve.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from automl_prune.api import (
    AutomlPruneError,
    DataSplits,
    Progress,
    SingleCallTask,
    count_params,
    eval_mode,
    split_dataset,
)
from automl_prune_gan.metrics import l1, psnr, ssim
from automl_prune_gan.models import TranslationGAN

BETAS = (0.5, 0.999)


def lsgan(scores: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss: patch scores pulled to 1 (real) or 0 (fake)."""
    return F.mse_loss(scores, torch.full_like(scores, 1.0 if real else 0.0))


def accuracy(scores: torch.Tensor, real: bool) -> float:
    """Fraction of patches the discriminator gets right (score >= 0.5 means "real")."""
    return float(((scores >= 0.5) == real).float().mean())


def linear_decay(step: int, total: int) -> float:
    """Learning-rate factor: 1 for the first half of ``total`` steps, then linearly down to 0."""
    half = total / 2
    return 1.0 if step < half else max(0.0, 1.0 - (step - half) / max(1.0, total - half))


@dataclass
class Meter:
    """Running means of named values over one epoch."""

    sums: dict[str, float] = field(default_factory=dict)
    count: int = 0

    def add(self, **values: float) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += 1

    def means(self) -> dict[str, float]:
        return {k: v / max(1, self.count) for k, v in self.sums.items()}


@dataclass(frozen=True)
class ImageTranslationTask(SingleCallTask):
    """The ``image-translation`` task; its quality metric is PSNR in dB."""

    name: str = "image-translation"
    quality_metric: str = "psnr"
    # Measured on Pix2Pix photo-colour (one seed, benchmarks/README.md): at lr 2e-4 the val PSNR is flat
    # from 15 to 60 epochs (22.0-22.7 dB) and the colours come out blotchy; at 1e-4 it still rises at
    # 30 epochs (23.1 dB) with smoother, browner fur on the val cat.
    base_epochs: int = 30
    base_lr: float = 1e-4
    batch_size: int = 16
    l1_weight: float = 100.0
    cycle_weight: float = 10.0
    identity_weight: float = 5.0
    distill_weight: float = 10.0

    def train(
        self,
        model: nn.Module,
        data: DataSplits,
        *,
        epochs: int,
        lr: float,
        batch_size: int,
        device: torch.device,
        seed: int,
        progress: Progress,
        teacher: nn.Module | None = None,
    ) -> nn.Module:
        loader = DataLoader(
            data.train, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
        )
        model.to(device).train()
        if teacher is not None:
            teacher.to(device).eval()
        total = max(1, epochs * len(loader))
        if isinstance(model, TranslationGAN):
            generators = [model.generator] + ([model.reverse] if model.reverse is not None else [])
            critics = [model.discriminator] + ([model.discriminator_a] if model.discriminator_a else [])
            opt_g = torch.optim.Adam([p for g in generators for p in g.parameters()], lr=lr, betas=BETAS)
            opt_d = torch.optim.Adam([p for d in critics for p in d.parameters()], lr=lr, betas=BETAS)
            optimizers = [opt_g, opt_d]
        else:
            optimizers = [torch.optim.Adam(model.parameters(), lr=lr, betas=BETAS)]
        schedulers = [
            torch.optim.lr_scheduler.LambdaLR(o, lambda step: linear_decay(step, total)) for o in optimizers
        ]
        for _ in progress.bar(range(epochs), "epochs", total=epochs):
            meter = Meter()
            for a, b in loader:
                a, b = a.to(device), b.to(device)
                target = None
                if teacher is not None:
                    with eval_mode(teacher):
                        target = teacher(a)
                if isinstance(model, TranslationGAN):
                    step = self._pix2pix_step if model.objective == "pix2pix" else self._cyclegan_step
                    meter.add(**step(model, a, b, opt_g, opt_d, target))
                else:
                    out = model(a)
                    loss = F.l1_loss(out, b) + self._distill(out, target)
                    optimizers[0].zero_grad(set_to_none=True)
                    loss.backward()
                    optimizers[0].step()
                    meter.add(loss_g=loss.detach())
                for s in schedulers:
                    s.step()
            if isinstance(model, TranslationGAN):
                model.history.append(meter.means())
        return model

    def _distill(self, output: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        if target is None:
            return output.new_zeros(())
        return self.distill_weight * F.l1_loss(output, target)

    def _pix2pix_step(
        self,
        gan: TranslationGAN,
        a: torch.Tensor,
        b: torch.Tensor,
        opt_g: torch.optim.Optimizer,
        opt_d: torch.optim.Optimizer,
        teacher_out: torch.Tensor | None,
    ) -> dict[str, float]:
        fake = gan.generator(a)
        real_scores, fake_scores = gan.judge(a, b), gan.judge(a, fake.detach())
        loss_d = 0.5 * (lsgan(real_scores, True) + lsgan(fake_scores, False))
        _step(opt_d, loss_d)
        adversarial = lsgan(gan.judge(a, fake), True)
        l1_loss = F.l1_loss(fake, b)
        loss_g = adversarial + self.l1_weight * l1_loss + self._distill(fake, teacher_out)
        _step(opt_g, loss_g)
        return _stats(loss_d, loss_g, real_scores, fake_scores, l1=l1_loss)

    def _cyclegan_step(
        self,
        gan: TranslationGAN,
        a: torch.Tensor,
        b: torch.Tensor,
        opt_g: torch.optim.Optimizer,
        opt_d: torch.optim.Optimizer,
        teacher_out: torch.Tensor | None,
    ) -> dict[str, float]:
        g, f, d_b, d_a = gan.generator, gan.reverse, gan.discriminator, gan.discriminator_a
        fake_b, fake_a = g(a), f(b)
        real_scores, fake_scores = d_b(b), d_b(fake_b.detach())
        loss_d = 0.5 * (lsgan(real_scores, True) + lsgan(fake_scores, False))
        loss_d = loss_d + 0.5 * (lsgan(d_a(a), True) + lsgan(d_a(fake_a.detach()), False))
        _step(opt_d, loss_d)
        adversarial = lsgan(d_b(fake_b), True) + lsgan(d_a(fake_a), True)
        cycle = F.l1_loss(f(fake_b), a) + F.l1_loss(g(fake_a), b)
        identity = F.l1_loss(g(b), b) + F.l1_loss(f(a), a)
        loss_g = (
            adversarial
            + self.cycle_weight * cycle
            + self.identity_weight * identity
            + self._distill(fake_b, teacher_out)
        )
        _step(opt_g, loss_g)
        return _stats(loss_d, loss_g, real_scores, fake_scores, cycle=cycle)

    def evaluate(
        self, model: nn.Module, data: DataSplits, split: str, *, batch_size: int, device: torch.device
    ) -> dict[str, float]:
        dataset = split_dataset(data, split)
        sums = {"l1": 0.0, "psnr": 0.0, "ssim": 0.0}
        with eval_mode(model.to(device)):
            for a, b in DataLoader(dataset, batch_size=batch_size):
                out, b = model(a.to(device)), b.to(device)
                n = len(b)
                sums["l1"] += l1(out, b) * n
                sums["psnr"] += psnr(out, b) * n
                sums["ssim"] += ssim(out, b) * n
        return {k: v / len(dataset) for k, v in sums.items()}

    def loss(self, model: nn.Module, batch: Any, data: DataSplits, device: torch.device) -> torch.Tensor:
        """None to give: G and D train adversarially, so no single loss ranks the generator's channels."""
        raise AutomlPruneError(
            "image-translation GANs have no single training loss to rank channels by (G and D train "
            "adversarially against each other)",
            "use --set criterion=l1 (or l2, random) instead of taylor",
        )

    def n_params(self, model: nn.Module) -> int:
        """A GAN counts its generator only: the discriminator(s) and CycleGAN's reverse generator train
        it and are not deployed (the FLOPs convention for GANs)."""
        return count_params(model.generator if isinstance(model, TranslationGAN) else model)


def _step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _stats(
    loss_d: torch.Tensor,
    loss_g: torch.Tensor,
    real_scores: torch.Tensor,
    fake_scores: torch.Tensor,
    **terms: torch.Tensor,
) -> dict[str, float]:
    """One step's losses and the discriminator's accuracy on the real and the generated batch."""
    losses = {"loss_d": loss_d, "loss_g": loss_g, **terms}
    return {
        **{k: float(v.detach()) for k, v in losses.items()},
        "d_real_acc": accuracy(real_scores, True),
        "d_fake_acc": accuracy(fake_scores, False),
    }
