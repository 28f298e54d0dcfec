"""Toy games for dynamics: the Dirac-GAN and 2-D Gaussian mixtures (ring of 8, grid of 25)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from funcgan import losses, nets
from funcgan import random as fr
from funcgan.loops import Alternating
from funcgan.metrics import grid_means, ring_means
from funcgan.optim import OptimizerSpec
from funcgan.step import GAN, Batch
from funcgan.systems.base import System, resolve_loop

__all__ = ["DiracGenerator", "DiracDiscriminator", "dirac", "ring8", "grid25", "mixture_sampler"]


class DiracGenerator(nn.Module):
    """The Dirac-GAN generator: every sample is ``theta`` (initialised to ``theta0``)."""

    def __init__(self, theta0: float = 1.0):
        super().__init__()
        self.theta0 = theta0
        self.theta = nn.Parameter(torch.full((1,), float(theta0)))

    def funcgan_init(self, key: torch.Tensor, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        return {"theta": torch.full((1,), float(self.theta0), dtype=dtype)}

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, Z) -> (B, 1)
        return self.theta.expand(z.shape[0], 1)


class DiracDiscriminator(nn.Module):
    """The Dirac-GAN discriminator: the logit ``psi * x`` (``psi`` initialised to ``psi0``)."""

    def __init__(self, psi0: float = 1.0):
        super().__init__()
        self.psi0 = psi0
        self.psi = nn.Parameter(torch.full((1,), float(psi0)))

    def funcgan_init(self, key: torch.Tensor, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        return {"psi": torch.full((1,), float(self.psi0), dtype=dtype)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1) -> (B, 1) logits
        return self.psi * x


def _zeros(key, data, batch_shape, dtype=torch.float32):
    del key, data
    return Batch(torch.zeros((*batch_shape, 1), dtype=dtype))


def dirac(
    lr: float = 0.1,
    optimizer: str = "sgd",
    theta0: float = 1.0,
    psi0: float = 1.0,
    batch_size: int = 1,
    gen_lr: float | None = None,
    disc_lr: float | None = None,
    loop: Any = None,
    objective: Any = None,
    penalties: Any = None,
    n_disc: int | None = None,
    loop_options: dict | None = None,
    scheme: Any = None,
    ema: float | None = None,
) -> System:
    """The Dirac-GAN (Mescheder et al. 2018): data at 0, G = delta at theta, D(x) = psi x (logits); plain
    gradient descent with step ``lr`` by default, started at ``(theta0, psi0) = (1, 1)``; equilibrium (0, 0)."""
    lp = resolve_loop(
        Alternating(objective=losses.nonsaturating()), loop, objective, penalties, n_disc, loop_options, scheme
    )
    betas = (0.0, 0.999) if optimizer == "adam" else (0.9, 0.999)
    gan = GAN(
        gen=DiracGenerator(theta0),
        disc=DiracDiscriminator(psi0),
        loop=lp,
        sample_real=_zeros,
        latent_dim=1,
        batch_size=batch_size,
        gen_opt=OptimizerSpec(optimizer, gen_lr or lr, betas),
        disc_opt=OptimizerSpec(optimizer, disc_lr or lr, betas),
        name="dirac",
        ema=ema,
    )
    return System(
        gan,
        (),
        "dirac",
        500,
        f"Dirac-GAN, {lp.name}, {lp.objective.name}",
        data_source="generated",
        real_stats={"mean": 0.0, "std": 0.0},
    )


def mixture_sampler(means: torch.Tensor, std: float):
    """``sample_real`` of a 2-D Gaussian mixture with equal weights."""

    def sample(key, data, batch_shape, dtype=torch.float32):
        del data
        k_mode, k_noise = fr.split(key)
        idx = fr.randint(k_mode, batch_shape, 0, means.shape[0])
        return Batch(means.to(dtype)[idx] + std * fr.normal(k_noise, (*batch_shape, 2), dtype))

    return sample


def _mixture(
    name: str,
    means: torch.Tensor,
    std: float,
    lr,
    batch_size,
    latent_dim,
    hidden,
    gen_lr,
    disc_lr,
    loop,
    objective,
    penalties,
    n_disc,
    loop_options,
    scheme,
    ema,
) -> System:
    lp = resolve_loop(
        Alternating(objective=losses.nonsaturating()), loop, objective, penalties, n_disc, loop_options, scheme
    )
    gan = GAN(
        gen=nets.mlp(latent_dim, [hidden, hidden], 2, "relu"),
        disc=nets.mlp(2, [hidden, hidden], 1, "relu"),
        loop=lp,
        sample_real=mixture_sampler(means, std),
        latent_dim=latent_dim,
        batch_size=batch_size,
        gen_opt=OptimizerSpec("adam", gen_lr or lr, (0.5, 0.999)),
        disc_opt=OptimizerSpec("adam", disc_lr or lr, (0.5, 0.999)),
        name=name,
        ema=ema,
    )
    return System(
        gan,
        (),
        "mixture",
        2000,
        f"{name}: {means.shape[0]} Gaussians, {lp.name}, {lp.objective.name}",
        data_source="generated",
        mixture=(means, std),
    )


def ring8(
    lr: float = 1e-3,
    batch_size: int = 256,
    latent_dim: int = 16,
    hidden: int = 128,
    gen_lr: float | None = None,
    disc_lr: float | None = None,
    loop: Any = None,
    objective: Any = None,
    penalties: Any = None,
    n_disc: int | None = None,
    loop_options: dict | None = None,
    scheme: Any = None,
    ema: float | None = None,
) -> System:
    """8 Gaussians on a circle of radius 2, std 0.02 (the unrolled-GAN paper's ring); MLPs 2x128 on logits."""
    return _mixture(
        "ring8",
        ring_means(8, 2.0),
        0.02,
        lr,
        batch_size,
        latent_dim,
        hidden,
        gen_lr,
        disc_lr,
        loop,
        objective,
        penalties,
        n_disc,
        loop_options,
        scheme,
        ema,
    )


def grid25(
    lr: float = 1e-3,
    batch_size: int = 256,
    latent_dim: int = 16,
    hidden: int = 128,
    gen_lr: float | None = None,
    disc_lr: float | None = None,
    loop: Any = None,
    objective: Any = None,
    penalties: Any = None,
    n_disc: int | None = None,
    loop_options: dict | None = None,
    scheme: Any = None,
    ema: float | None = None,
) -> System:
    """A 5x5 grid of Gaussians at spacing 2 (-4..4), std 0.05 (the VEEGAN/PacGAN grid); MLPs 2x128 on logits."""
    return _mixture(
        "grid25",
        grid_means(5, 2.0),
        0.05,
        lr,
        batch_size,
        latent_dim,
        hidden,
        gen_lr,
        disc_lr,
        loop,
        objective,
        penalties,
        n_disc,
        loop_options,
        scheme,
        ema,
    )
