"""The networks of the built-in systems: the seeds' MLPs, DCGAN, SN-GAN and class-conditional nets.

Every network here is a plain ``nn.Module``; funcgan runs it through
:func:`funcgan.nets.make_apply` like any user's module. Conventions:

* generators take ``G(z)``, ``G(z, cond)`` or, with no noise (pix2pix), ``G(cond)``;
* discriminators take ``D(x)`` or ``D(x, cond)`` and return ``(B, 1)``;
* ``probs=True`` ends a discriminator in a sigmoid (for objectives on
  probabilities such as the seeds' BCE); ``probs=False`` returns logits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

__all__ = [
    "mlp",
    "Seed000Generator",
    "Seed000Discriminator",
    "ConditionalDiscriminator",
    "DCGANGenerator",
    "DCGANDiscriminator",
    "SNGANGenerator",
    "SNGANDiscriminator",
    "ACTIVATIONS",
]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
}


def mlp(
    in_features: int,
    hidden: list[int] | tuple[int, ...],
    out_features: int,
    activation: str = "relu",
    out_activation: str | None = None,
    dropout: float = 0.0,
    out_bias: bool = True,
) -> nn.Sequential:
    """A multilayer perceptron ``Linear, act[, Dropout], ..., Linear[, out_act]`` as ``nn.Sequential``
    (``out_bias=False``: no bias in the last layer)."""
    if activation not in ACTIVATIONS or (out_activation is not None and out_activation not in ACTIVATIONS):
        raise ValueError(f"mlp: unknown activation; choose from {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, out_features, bias=out_bias))
    if out_activation is not None:
        layers.append(ACTIVATIONS[out_activation]())
    return nn.Sequential(*layers)


class Seed000Generator(nn.Module):
    """Seed 000's 1-D generator: ``Linear(10, 50), ReLU, Linear(50, 1)`` (names as in the seed)."""

    def __init__(self, latent_dim: int = 10, hidden: int = 50, out_features: int = 1):
        super().__init__()
        self.model = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_features))

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, Z) -> (B, 1)
        return self.model(z)


class Seed000Discriminator(nn.Module):
    """Seed 000's 1-D discriminator: ``Linear(1, 50), ReLU, Linear(50, 1), Sigmoid`` (no sigmoid with
    ``probs=False``)."""

    def __init__(self, in_features: int = 1, hidden: int = 50, probs: bool = True):
        super().__init__()
        layers = [nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, 1)] + ([nn.Sigmoid()] if probs else [])
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1) -> (B, 1)
        return self.model(x)


class ConditionalDiscriminator(nn.Module):
    """A pix2pix-style discriminator on ``(image, condition)`` pairs.

    Condition and image are concatenated along the last axis, condition first
    (pix2pix concatenates ``(real_A, fake_B)``), and scored by ``body``.
    """

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, image: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([condition, image], dim=-1))


def _as_map(z: torch.Tensor) -> torch.Tensor:
    return z.reshape(z.shape[0], -1, 1, 1) if z.dim() == 2 else z


class DCGANGenerator(nn.Module):
    """The pytorch/examples DCGAN generator at 32x32 (Radford et al. 2016), optionally class-conditional.

    ``ConvT(Z, 4w, 4, 1, 0)-BN-ReLU`` (4x4), ``ConvT(4w, 2w, 4, 2, 1)-BN-ReLU`` (8x8),
    ``ConvT(2w, w, 4, 2, 1)-BN-ReLU`` (16x16), ``ConvT(w, C, 4, 2, 1)-Tanh`` (32x32); no
    biases before BatchNorm. With ``n_classes``, the label's embedding (``n_classes``
    wide, as a learned one-hot) is concatenated with ``z`` (Mirza & Osindero 2014).

    Args:
        latent_dim: noise size (``z`` is ``(B, Z)`` or ``(B, Z, 1, 1)``).
        width: base width ``w`` (ngf; 64 in the example).
        channels: image channels.
        n_classes: 0 for an unconditional G.
    """

    def __init__(self, latent_dim: int = 100, width: int = 64, channels: int = 1, n_classes: int = 0):
        super().__init__()
        self.n_classes = n_classes
        self.embed = nn.Embedding(n_classes, n_classes) if n_classes else None
        w, z_in = width, latent_dim + n_classes
        self.main = nn.Sequential(
            nn.ConvTranspose2d(z_in, 4 * w, 4, 1, 0, bias=False),
            nn.BatchNorm2d(4 * w),
            nn.ReLU(True),
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(True),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(True),
            nn.ConvTranspose2d(w, channels, 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # -> (B, C, 32, 32)
        z = _as_map(z)
        if self.embed is not None:
            if y is None:
                raise ValueError("DCGANGenerator: a class-conditional generator needs labels y")
            z = torch.cat([z, self.embed(y)[:, :, None, None]], dim=1)
        return self.main(z)


class DCGANDiscriminator(nn.Module):
    """The pytorch/examples DCGAN discriminator at 32x32, optionally a projection discriminator.

    ``Conv(C, w, 4, 2, 1)-LReLU(0.2)``, ``Conv(w, 2w, 4, 2, 1)-BN-LReLU``,
    ``Conv(2w, 4w, 4, 2, 1)-BN-LReLU``, ``Conv(4w, 1, 4, 1, 0)`` [``-Sigmoid`` with ``probs``].
    ``norm="none"`` drops BatchNorm (WGAN-GP's critic must not couple examples),
    ``norm="layer"`` uses per-example LayerNorm (``GroupNorm(1, c)``). With
    ``n_classes``, the output adds the projection ``<embed(y), h>`` of the 4x4x4w
    features (Miyato & Koyama 2018).
    """

    def __init__(self, width: int = 64, channels: int = 1, probs: bool = True, norm: str = "batch", n_classes: int = 0):
        super().__init__()
        if norm not in ("batch", "none", "layer"):
            raise ValueError(f"DCGANDiscriminator: norm must be batch, none or layer, got {norm!r}")
        if probs and n_classes:
            raise ValueError("DCGANDiscriminator: a projection discriminator outputs logits (probs=False)")
        w = width

        def normed(c: int) -> list[nn.Module]:
            if norm == "batch":
                return [nn.BatchNorm2d(c)]
            return [nn.GroupNorm(1, c)] if norm == "layer" else []

        self.features = nn.Sequential(
            nn.Conv2d(channels, w, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False),
            *normed(2 * w),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1, bias=False),
            *normed(4 * w),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.out = nn.Conv2d(4 * w, 1, 4, 1, 0, bias=False)
        self.probs = nn.Sigmoid() if probs else None
        self.embed = nn.Embedding(n_classes, 4 * w * 16) if n_classes else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # -> (B, 1)
        h = self.features(x)
        out = self.out(h).flatten(1)
        if self.embed is not None:
            if y is None:
                raise ValueError("DCGANDiscriminator: a projection discriminator needs labels y")
            out = out + (self.embed(y) * h.flatten(1)).sum(1, keepdim=True)
        return self.probs(out) if self.probs is not None else out


class SNGANGenerator(nn.Module):
    """SN-GAN's standard CNN generator (Miyato et al. 2018, Table 3(a)) at 32x32.

    ``z -> Linear(Z, 4*4*8w)``, reshape, three ``ConvT(4, 2, 1)-BN-ReLU`` halving the
    width (8w -> 4w -> 2w -> w), ``Conv3x3(w, C)-Tanh``; ``w = 64`` in the paper.
    """

    def __init__(self, latent_dim: int = 128, width: int = 64, channels: int = 1):
        super().__init__()
        w = width
        self.w = w
        self.fc = nn.Linear(latent_dim, 4 * 4 * 8 * w)
        self.main = nn.Sequential(
            nn.BatchNorm2d(8 * w),
            nn.ReLU(),
            nn.ConvTranspose2d(8 * w, 4 * w, 4, 2, 1),
            nn.BatchNorm2d(4 * w),
            nn.ReLU(),
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1),
            nn.BatchNorm2d(w),
            nn.ReLU(),
            nn.Conv2d(w, channels, 3, 1, 1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, Z) -> (B, C, 32, 32)
        return self.main(self.fc(z.flatten(1)).reshape(z.shape[0], 8 * self.w, 4, 4))


class SNGANDiscriminator(nn.Module):
    """SN-GAN's standard CNN discriminator (Miyato et al. 2018, Table 3(b)), every layer spectral-normed.

    ``Conv3x3(C, w)``, ``Conv4x4/2(w, w)``, ``Conv3x3(w, 2w)``, ``Conv4x4/2(2w, 2w)``,
    ``Conv3x3(2w, 4w)``, ``Conv4x4/2(4w, 4w)``, ``Conv3x3(4w, 8w)``, each followed by
    ``LeakyReLU(0.1)``, then ``Linear(4*4*8w, 1)``: logits; ``w = 64`` in the paper.
    """

    def __init__(self, width: int = 64, channels: int = 1):
        super().__init__()
        w = width
        chans = [
            (channels, w, 3, 1),
            (w, w, 4, 2),
            (w, 2 * w, 3, 1),
            (2 * w, 2 * w, 4, 2),
            (2 * w, 4 * w, 3, 1),
            (4 * w, 4 * w, 4, 2),
            (4 * w, 8 * w, 3, 1),
        ]
        layers: list[nn.Module] = []
        for c_in, c_out, k, s in chans:
            layers += [spectral_norm(nn.Conv2d(c_in, c_out, k, s, 1)), nn.LeakyReLU(0.1)]
        self.features = nn.Sequential(*layers)
        self.out = spectral_norm(nn.Linear(4 * 4 * 8 * w, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, 32, 32) -> (B, 1)
        return self.out(self.features(x).flatten(1))
