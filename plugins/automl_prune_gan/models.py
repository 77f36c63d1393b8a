"""Image-to-image GANs: Pix2Pix U-Net and CycleGAN ResNet generators, PatchGAN discriminator.

The layouts follow Isola et al. 2017 (U-Net with skip concatenations, 4x4 stride-2 convs, LeakyReLU 0.2
down, ReLU up, no norm on the outermost and innermost down convs) and Zhu et al. 2017 (ResNet
generator: 7x7 stem, two stride-2 downsamplings, residual blocks with reflection padding, transposed-conv
upsampling). Widths are set by ``ngf``/``ndf`` and capped at 8x, as in the originals; defaults are small
enough to train on a CPU. Choices made here:

- Activations are never in place: a U-Net skip concatenates the pre-activation features that the next
  down block also reads.
- Every norm is affine (InstanceNorm too), so a pruned channel's scale and shift travel with it.
- Channel gates sit after each norm (or after a conv that no norm follows); LeakyReLU and ReLU map 0 to 0,
  so a closed gate is the same as a removed channel and masked == sliced.

A :class:`TranslationGAN` bundles the generator with what trains it: a discriminator, and for CycleGAN
the reverse generator and the second discriminator. Its ``forward`` is the generator's, so FLOPs,
latency and export see the generator only (the FLOPs convention for GANs); the image-translation task
counts the generator's parameters only, for the same reason.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from automl_prune.api import DataInfo, ModelError

NORMS = ("batch", "instance")
SLOPE = 0.2  # LeakyReLU slope of the U-Net encoder and the discriminator


def norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    raise ModelError(f"unknown norm {kind!r}", f"use one of {', '.join(NORMS)}")


def _width(base: int, level: int) -> int:
    return base * min(2**level, 8)


class UNetGenerator(nn.Module):
    """Pix2Pix U-Net: ``depth`` stride-2 down blocks, mirrored up blocks, skip concatenations, tanh.

    ``down[i]`` halves the resolution; ``up[i]`` doubles it and feeds ``up[i-1]`` after concatenation
    with ``down[i-1]``'s output. H and W must be divisible by 2**depth.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        ngf: int = 16,
        depth: int = 4,
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ModelError(f"a U-Net generator needs depth >= 2, got {depth}", "use depth 2 or more")
        widths = [_width(ngf, i) for i in range(depth)]
        self.depth = depth
        self.down = nn.ModuleList()
        for i, width in enumerate(widths):
            layers: list[nn.Module] = [] if i == 0 else [nn.LeakyReLU(SLOPE)]
            has_norm = 0 < i < depth - 1  # the outermost and innermost down convs have none
            source = in_channels if i == 0 else widths[i - 1]
            layers.append(nn.Conv2d(source, width, 4, 2, 1, bias=not has_norm))
            if has_norm:
                layers.append(norm_layer(norm, width))
            self.down.append(nn.Sequential(*layers))
        self.up = nn.ModuleList()
        for i in range(depth):
            inner = widths[i] if i == depth - 1 else 2 * widths[i]
            outermost = i == 0
            out = out_channels if outermost else widths[i - 1]
            layers = [nn.ReLU(), nn.ConvTranspose2d(inner, out, 4, 2, 1, bias=outermost)]
            if not outermost:
                layers.append(norm_layer(norm, out))
                if dropout and i >= depth - 3:
                    layers.append(nn.Dropout(dropout))
            self.up.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = self.up[-1](skips.pop())
        for i in reversed(range(self.depth - 1)):
            x = self.up[i](torch.cat([x, skips.pop()], dim=1))
        return torch.tanh(x)


class ResnetBlock(nn.Module):
    """Two reflection-padded 3x3 conv-norm layers added to the input (the residual stream)."""

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=False),
            norm_layer(norm, channels),
            nn.ReLU(),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=False),
            norm_layer(norm, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """CycleGAN ResNet generator: c7s1-ngf, d(2x) downsamplings, residual blocks, mirrored up, c7s1, tanh.

    Every residual block adds to one stream, so torch-pruning ties the stream's channels across the
    last downsampling and all blocks: they are kept or removed together. H and W must be divisible by
    2**downsamplings.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        ngf: int = 16,
        blocks: int = 4,
        downsamplings: int = 2,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, 7, bias=False),
            norm_layer(norm, ngf),
            nn.ReLU(),
        ]
        for i in range(downsamplings):
            layers += [
                nn.Conv2d(_width(ngf, i), _width(ngf, i + 1), 3, 2, 1, bias=False),
                norm_layer(norm, _width(ngf, i + 1)),
                nn.ReLU(),
            ]
        layers += [ResnetBlock(_width(ngf, downsamplings), norm) for _ in range(blocks)]
        for i in reversed(range(downsamplings)):
            layers += [
                nn.ConvTranspose2d(_width(ngf, i + 1), _width(ngf, i), 3, 2, 1, output_padding=1, bias=False),
                norm_layer(norm, _width(ngf, i)),
                nn.ReLU(),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN: 4x4 convs (stride 2 for ``layers`` levels, then two stride-1), one logit per patch.

    The first conv has no norm and the last (1 output channel) is never pruned. Outputs are raw scores
    (LSGAN: real -> 1, fake -> 0).
    """

    def __init__(self, in_channels: int, ndf: int = 16, layers: int = 3, norm: str = "batch") -> None:
        super().__init__()
        body: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(SLOPE)]
        for i in range(1, layers + 1):
            stride = 2 if i < layers else 1
            body += [
                nn.Conv2d(_width(ndf, i - 1), _width(ndf, i), 4, stride, 1, bias=False),
                norm_layer(norm, _width(ndf, i)),
                nn.LeakyReLU(SLOPE),
            ]
        body.append(nn.Conv2d(_width(ndf, layers), 1, 4, 1, 1))
        self.model = nn.Sequential(*body)

    @property
    def first(self) -> nn.Conv2d:
        return self.model[0]

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Features before the last conv: a fixed encoder for Frechet distances."""
        return self.model[:-1](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class TranslationGAN(nn.Module):
    """A generator with its training companions; ``forward(x)`` is ``generator(x)``.

    Pix2Pix (``objective == "pix2pix"``): ``discriminator`` judges ``cat(input, output)``.
    CycleGAN (``objective == "cyclegan"``): ``discriminator`` judges domain-B images,
    ``reverse`` maps B -> A and ``discriminator_a`` judges domain-A images. Pruning touches
    ``generator`` and ``discriminator``; the reverse pair only serves the cycle loss.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: PatchDiscriminator,
        reverse: nn.Module | None = None,
        discriminator_a: PatchDiscriminator | None = None,
    ) -> None:
        super().__init__()
        if (reverse is None) != (discriminator_a is None):
            raise ModelError("a CycleGAN needs both a reverse generator and a second discriminator")
        self.generator = generator
        self.discriminator = discriminator
        self.reverse = reverse
        self.discriminator_a = discriminator_a
        self.history: list[dict[str, float]] = []  # per-epoch training curve, filled by the task

    @property
    def objective(self) -> str:
        return "pix2pix" if self.reverse is None else "cyclegan"

    def discriminator_input(self, inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        """What the discriminator sees of ``outputs``: conditioned on ``inputs`` for Pix2Pix."""
        return torch.cat([inputs, outputs], dim=1) if self.objective == "pix2pix" else outputs

    def judge(self, inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        """The discriminator's patch scores for generated or real ``outputs`` of ``inputs``."""
        return self.discriminator(self.discriminator_input(inputs, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(x)


def check_divisible(size: tuple[int, int], factor: int, what: str) -> None:
    if size[0] % factor or size[1] % factor:
        raise ModelError(
            f"{what} needs image sides divisible by {factor}, the data has {size[0]}x{size[1]}",
            f"use --data-arg size=<multiple of {factor}> or fewer levels (--model-arg depth=...)",
        )


def init_weights(module: nn.Module, std: float = 0.02) -> nn.Module:
    """N(0, 0.02) conv weights and N(1, 0.02) norm scales, the Pix2Pix/CycleGAN initialisation."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.affine:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
    return module


def discriminator_layers(size: tuple[int, int], requested: int) -> int:
    """Stride-2 levels that leave a patch map of at least 1x1 after the two stride-1 convs."""
    fits = int(math.log2(min(size))) - 2
    return max(1, min(requested, fits))


GENERATORS = ("unet", "resnet")


def build_generator(
    kind: str, in_channels: int, out_channels: int, size: tuple[int, int], **kw: int | str
) -> nn.Module:
    """A U-Net or ResNet generator for images of ``size``, checked against its downsampling."""
    if kind == "unet":
        depth = int(kw.get("depth", 4))
        check_divisible(size, 2**depth, f"a U-Net of depth {depth}")
        return UNetGenerator(
            in_channels, out_channels, int(kw["ngf"]), depth, str(kw["norm"]), float(kw.get("dropout", 0.0))
        )
    if kind == "resnet":
        downsamplings = int(kw.get("downsamplings", 2))
        check_divisible(size, 2**downsamplings, f"a ResNet generator with {downsamplings} downsamplings")
        return ResnetGenerator(
            in_channels,
            out_channels,
            int(kw["ngf"]),
            int(kw.get("blocks", 4)),
            downsamplings,
            str(kw["norm"]),
        )
    raise ModelError(f"unknown generator {kind!r}", f"use one of {', '.join(GENERATORS)}")


def _channels(info: DataInfo) -> tuple[int, int]:
    if info.task != "image-translation":
        raise ModelError(
            f"a GAN translates images, but dataset {info.name!r} is a {info.task} dataset",
            "use an image-translation dataset (photo-edges, photo-colour, photo-unpaired, paired:PATH)",
        )
    return info.in_channels, int(info.extra.get("out_channels", info.in_channels))


def pix2pix(
    info: DataInfo,
    *,
    generator: str = "unet",
    ngf: int = 16,
    ndf: int = 16,
    depth: int = 4,
    blocks: int = 4,
    d_layers: int = 3,
    norm: str = "batch",
    dropout: float = 0.0,
) -> TranslationGAN:
    """Pix2Pix: a generator and a conditional PatchGAN on ``cat(input, output)``."""
    cin, cout = _channels(info)
    g = build_generator(
        generator, cin, cout, info.image_size, ngf=ngf, depth=depth, blocks=blocks, norm=norm, dropout=dropout
    )
    d = PatchDiscriminator(cin + cout, ndf, discriminator_layers(info.image_size, d_layers), norm)
    return init_weights(TranslationGAN(g, d))


def cyclegan(
    info: DataInfo,
    *,
    generator: str = "resnet",
    ngf: int = 16,
    ndf: int = 16,
    depth: int = 4,
    blocks: int = 4,
    d_layers: int = 3,
    norm: str = "instance",
) -> TranslationGAN:
    """CycleGAN: generators A -> B and B -> A, an unconditional PatchGAN per domain."""
    cin, cout = _channels(info)
    if cin != cout:
        raise ModelError(
            f"CycleGAN's identity loss needs as many input as output channels, the data has {cin} -> {cout}",
            "use equal-channel data (photo-unpaired, fashion-unpaired) or pix2pix-* for paired data",
        )
    kw = {"ngf": ngf, "depth": depth, "blocks": blocks, "norm": norm}
    layers = discriminator_layers(info.image_size, d_layers)
    return init_weights(
        TranslationGAN(
            build_generator(generator, cin, cout, info.image_size, **kw),
            PatchDiscriminator(cout, ndf, layers, norm),
            build_generator(generator, cout, cin, info.image_size, **kw),
            PatchDiscriminator(cin, ndf, layers, norm),
        )
    )
