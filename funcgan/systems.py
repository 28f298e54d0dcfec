"""The four seed systems, ready to train: networks, data, optimizers and loop.

===============  ======  ===========================================================
problem          seed    what
===============  ======  ===========================================================
``gaussian1d``   000     1-D GAN on N(0, 1): G Linear(10,50)-ReLU-Linear(50,1), D
                         Linear(1,50)-ReLU-Linear(50,1)-Sigmoid, Adam 1e-3, batch 100,
                         :class:`~funcgan.train.Alternating`.
``digits``       001     MLP GAN on 8x8 glyph digits with the reuse-fake loop
                         (:class:`~funcgan.train.ReuseFake`), Adam 1e-3.
``pix2pix``      002     conditional GAN on (digit, digit rotated 90 degrees) pairs,
                         D on (condition, image), BCE + 100 * L1, Adam 2e-4 (0.5, 0.999).
``dirac``        toy     Dirac-GAN (Mescheder et al. 2018): G = delta at theta, D(x) = psi x,
                         data at 0; any scheme, objective and penalty (``Game``).
``ring8``        toy     ring of 8 Gaussians (radius 2, std 0.02) with MLPs on logits.
``grid25``       toy     5x5 grid of Gaussians (spacing 2, std 0.05) with MLPs on logits.
``mnist``        003     MNIST MLP GAN (D: 2 Linear + LeakyReLU; G: 3 Linear + 2 ReLU),
                         clamped logs, clipping at 1, Adam 1e-4, the adaptive G
                         schedule (:class:`~funcgan.train.Adaptive`). Reads MNIST IDX
                         files from ``data_dir``; without one, scikit-learn's 8x8
                         digits stand in (or the built-in glyph digits).
===============  ======  ===========================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from funcgan import data as D
from funcgan import nets
from funcgan import random as fr
from funcgan.train import GAN, Adaptive, Alternating, OptimizerSpec, Pix2Pix, ReuseFake

__all__ = ["System", "PROBLEMS", "make_system", "gaussian1d", "digits", "pix2pix", "mnist", "dirac", "ring8",
           "grid25", "dataset_sampler", "DiracGenerator", "DiracDiscriminator"]


@dataclass(eq=False)
class System:
    """A GAN with its data and what the shell needs to report on it.

    Attributes:
        gan: the :class:`~funcgan.train.GAN`.
        data: the shared data tensors passed to every step (``()`` for generated data).
        kind: ``"1d"`` or ``"image"`` (for summaries and plots).
        image_shape: ``(H, W)`` for image systems.
        default_steps: what ``funcgan train`` runs by default.
        description: one line.
        data_source: where the data came from.
        real_stats: the data's mean and std (1-D systems), for the summary.
        mixture: ``(means, std)`` for 2-D mixture systems (their metrics).
    """

    gan: GAN
    data: tuple[torch.Tensor, ...]
    kind: str
    default_steps: int
    description: str
    data_source: str = "generated"
    image_shape: tuple[int, int] | None = None
    real_stats: dict[str, float] = field(default_factory=dict)
    mixture: tuple[torch.Tensor, float] | None = None

    @property
    def name(self) -> str:
        return self.gan.name

    def to(self, device: torch.device | str) -> "System":
        self.data = tuple(x.to(device) for x in self.data)
        return self


def dataset_sampler(n_tensors: int = 1) -> Callable:
    """A ``sample_real`` that draws a minibatch with replacement from the data tensors.

    Indices come from the key (``randint``), so each seed draws its own batches;
    with ``n_tensors=2`` it returns aligned pairs (pix2pix's ``(A, B)``).
    """

    def sample(key: torch.Tensor, data: tuple[torch.Tensor, ...], batch_shape: tuple[int, ...],
               dtype: torch.dtype = torch.float32):
        idx = fr.randint(key, batch_shape, 0, data[0].shape[0])
        return tuple(data[i][idx].to(dtype) for i in range(n_tensors))

    return sample


def _gaussian_sampler(mean: float, std: float, dim: int) -> Callable:
    def sample(key, data, batch_shape, dtype=torch.float32):
        del data
        x = fr.normal(key, (*batch_shape, dim), dtype)
        return (x * std + mean if (mean, std) != (0.0, 1.0) else x,)

    return sample


def gaussian1d(batch_size: int = 100, latent_dim: int = 10, hidden: int = 50, lr: float = 1e-3,
               n_disc: int = 1, mean: float = 0.0, std: float = 1.0, gen_lr: float | None = None,
               disc_lr: float | None = None, betas: tuple[float, float] = (0.9, 0.999)) -> System:
    """Seed 000: the 1-D GAN on N(mean, std^2) data (seed defaults: N(0, 1), batch 100, Adam 1e-3)."""
    gan = GAN(
        gen=nets.Seed000Generator(latent_dim, hidden),
        disc=nets.Seed000Discriminator(1, hidden),
        loop=Alternating(n_disc=n_disc),
        latent_dim=latent_dim,
        batch_size=batch_size,
        sample_real=_gaussian_sampler(mean, std, 1),
        gen_opt=OptimizerSpec("adam", gen_lr or lr, betas),
        disc_opt=OptimizerSpec("adam", disc_lr or lr, betas),
        name="gaussian1d",
    )
    return System(gan, (), "1d", 1000, f"seed 000: 1-D GAN on N({mean}, {std}^2)",
                  real_stats={"mean": mean, "std": std})


def digits(batch_size: int = 64, latent_dim: int = 16, hidden: int = 128, lr: float = 1e-3,
           n_examples: int = 4096, gen_lr: float | None = None, disc_lr: float | None = None) -> System:
    """Seed 001: MLP GAN on 8x8 glyph digits, one G forward reused by D and G."""
    x, _ = D.glyph_digits(fr.key(2024), n_examples)
    gan = GAN(
        gen=nets.mlp(latent_dim, [hidden], 64, "relu", "sigmoid"),
        disc=nets.mlp(64, [hidden], 1, "leaky_relu", "sigmoid"),
        loop=ReuseFake(),
        latent_dim=latent_dim,
        batch_size=batch_size,
        sample_real=dataset_sampler(1),
        gen_opt=OptimizerSpec("adam", gen_lr or lr),
        disc_opt=OptimizerSpec("adam", disc_lr or lr),
        name="digits",
    )
    return System(gan, (x,), "image", 2000, "seed 001: MLP GAN on 8x8 glyph digits (reuse-fake loop)",
                  data_source="built-in glyph digits", image_shape=(8, 8))


def pix2pix(batch_size: int = 32, hidden: int = 128, lr: float = 2e-4, l1_weight: float = 100.0,
            n_examples: int = 2048, gen_lr: float | None = None, disc_lr: float | None = None) -> System:
    """Seed 002: conditional GAN translating a glyph digit into the digit rotated by 90 degrees."""
    a, b = D.paired_digits(fr.key(2002), n_examples)
    gan = GAN(
        gen=nets.mlp(64, [hidden, hidden], 64, "relu", "sigmoid"),
        disc=nets.ConditionalDiscriminator(nets.mlp(128, [hidden], 1, "leaky_relu", "sigmoid")),
        loop=Pix2Pix(),
        latent_dim=0,
        batch_size=batch_size,
        sample_real=dataset_sampler(2),
        gen_opt=OptimizerSpec("adam", gen_lr or lr, (0.5, 0.999)),
        disc_opt=OptimizerSpec("adam", disc_lr or lr, (0.5, 0.999)),
        hparams={"l1_weight": l1_weight},
        conditional=True,
        name="pix2pix",
    )
    return System(gan, (a, b), "image", 1500, "seed 002: pix2pix-style digit -> rotated digit",
                  data_source="built-in paired glyph digits", image_shape=(8, 8))


def mnist(data_dir: str | None = None, batch_size: int = 64, latent_dim: int = 64, hidden: int = 256,
          lr: float = 1e-4, max_gen_steps: int = 5, clip_norm: float = 1.0,
          gen_lr: float | None = None, disc_lr: float | None = None) -> System:
    """Seed 003: the MNIST MLP GAN with clamped logs, clipping and the adaptive G schedule.

    With ``data_dir`` the MNIST IDX files are read (a clear error if missing);
    without, scikit-learn's bundled 8x8 digits stand in, or the built-in glyph
    digits when scikit-learn is not installed.
    """
    if data_dir is not None:
        x = D.load_mnist(data_dir)
        source, shape = f"MNIST IDX files in {data_dir}", (28, 28)
    else:
        try:
            x = D.load_digits()
            source = "scikit-learn 8x8 digits (MNIST stand-in; pass --data-dir for MNIST)"
        except ImportError:
            x, _ = D.glyph_digits(fr.key(3003), 4096)
            source = "built-in glyph digits (MNIST stand-in; pass --data-dir for MNIST)"
        shape = (8, 8)
    n_pix = x.shape[1]
    gan = GAN(
        gen=nets.mlp(latent_dim, [hidden, hidden], n_pix, "relu", None),
        disc=nn.Sequential(nn.Linear(n_pix, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1), nn.Sigmoid()),
        loop=Adaptive(max_gen_steps=max_gen_steps),
        latent_dim=latent_dim,
        batch_size=batch_size,
        sample_real=dataset_sampler(1),
        gen_opt=OptimizerSpec("adam", gen_lr or lr, clip_norm=clip_norm),
        disc_opt=OptimizerSpec("adam", disc_lr or lr, clip_norm=clip_norm),
        name="mnist",
    )
    return System(gan, (x,), "image", 3000, "seed 003: MNIST MLP GAN, adaptive G schedule",
                  data_source=source, image_shape=shape)


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


def _game(scheme: str, loss: str, r1: float, r2: float, gp: float, penalty_every: int, n_disc: int,
          unroll: int, unroll_stop_opt_grad: bool, consensus: float):
    from funcgan.dynamics import Game, Penalties

    return Game(scheme=scheme, objective=loss, penalties=Penalties(r1, r2, gp, penalty_every), n_disc=n_disc,
                unroll=unroll, unroll_stop_opt_grad=unroll_stop_opt_grad, consensus=consensus)


def dirac(scheme: str = "alternating", loss: str = "nonsaturating", lr: float = 0.1, optimizer: str = "sgd",
          r1: float = 0.0, r2: float = 0.0, gp: float = 0.0, penalty_every: int = 1, n_disc: int = 1,
          unroll: int = 5, unroll_stop_opt_grad: bool = False, consensus: float = 1.0, theta0: float = 1.0,
          psi0: float = 1.0, batch_size: int = 1, ema: float | None = None,
          gen_lr: float | None = None, disc_lr: float | None = None) -> System:
    """The Dirac-GAN: data at 0, G = delta at theta, D(x) = psi x (logits); plain gradient descent
    with step ``lr`` by default, started at ``(theta0, psi0) = (1, 1)``. The equilibrium is (0, 0)."""

    def zeros(key, data, batch_shape, dtype=torch.float32):
        del key, data
        return (torch.zeros((*batch_shape, 1), dtype=dtype),)

    gan = GAN(gen=DiracGenerator(theta0), disc=DiracDiscriminator(psi0),
              loop=_game(scheme, loss, r1, r2, gp, penalty_every, n_disc, unroll, unroll_stop_opt_grad, consensus),
              latent_dim=1, batch_size=batch_size, sample_real=zeros,
              gen_opt=OptimizerSpec(optimizer, gen_lr or lr, (0.0, 0.999) if optimizer == "adam" else (0.9, 0.999)),
              disc_opt=OptimizerSpec(optimizer, disc_lr or lr, (0.0, 0.999) if optimizer == "adam" else (0.9, 0.999)),
              name="dirac", ema_decay=ema)
    return System(gan, (), "dirac", 500, f"Dirac-GAN, {scheme}, {loss}", real_stats={"mean": 0.0, "std": 0.0})


def _mixture(name: str, means: torch.Tensor, std: float, scheme, loss, lr, r1, r2, gp, penalty_every, n_disc,
             unroll, unroll_stop_opt_grad, consensus, batch_size, latent_dim, hidden, ema, gen_lr, disc_lr) -> System:
    def sample(key, data, batch_shape, dtype=torch.float32):
        del data
        k_mode, k_noise = fr.split(key)
        idx = fr.randint(k_mode, batch_shape, 0, means.shape[0])
        return (means.to(dtype)[idx] + std * fr.normal(k_noise, (*batch_shape, 2), dtype),)

    gan = GAN(gen=nets.mlp(latent_dim, [hidden, hidden], 2, "relu"),
              disc=nets.mlp(2, [hidden, hidden], 1, "relu"),
              loop=_game(scheme, loss, r1, r2, gp, penalty_every, n_disc, unroll, unroll_stop_opt_grad, consensus),
              latent_dim=latent_dim, batch_size=batch_size, sample_real=sample,
              gen_opt=OptimizerSpec("adam", gen_lr or lr, (0.5, 0.999)),
              disc_opt=OptimizerSpec("adam", disc_lr or lr, (0.5, 0.999)), name=name, ema_decay=ema)
    return System(gan, (), "mixture", 2000, f"{name}: {means.shape[0]} Gaussians, {scheme}, {loss}",
                  mixture=(means, std))


def ring8(scheme: str = "alternating", loss: str = "nonsaturating", lr: float = 1e-3, r1: float = 0.0,
          r2: float = 0.0, gp: float = 0.0, penalty_every: int = 1, n_disc: int = 1, unroll: int = 5,
          unroll_stop_opt_grad: bool = False, consensus: float = 1.0, batch_size: int = 256,
          latent_dim: int = 16, hidden: int = 128, ema: float | None = None,
          gen_lr: float | None = None, disc_lr: float | None = None) -> System:
    """8 Gaussians on a circle of radius 2, std 0.02 (the unrolled-GAN paper's ring)."""
    from funcgan.metrics import ring_means

    return _mixture("ring8", ring_means(8, 2.0), 0.02, scheme, loss, lr, r1, r2, gp, penalty_every, n_disc, unroll,
                    unroll_stop_opt_grad, consensus, batch_size, latent_dim, hidden, ema, gen_lr, disc_lr)


def grid25(scheme: str = "alternating", loss: str = "nonsaturating", lr: float = 1e-3, r1: float = 0.0,
           r2: float = 0.0, gp: float = 0.0, penalty_every: int = 1, n_disc: int = 1, unroll: int = 5,
           unroll_stop_opt_grad: bool = False, consensus: float = 1.0, batch_size: int = 256,
           latent_dim: int = 16, hidden: int = 128, ema: float | None = None,
           gen_lr: float | None = None, disc_lr: float | None = None) -> System:
    """A 5x5 grid of Gaussians at spacing 2 (-4..4), std 0.05 (the VEEGAN/PacGAN grid)."""
    from funcgan.metrics import grid_means

    return _mixture("grid25", grid_means(5, 2.0), 0.05, scheme, loss, lr, r1, r2, gp, penalty_every, n_disc, unroll,
                    unroll_stop_opt_grad, consensus, batch_size, latent_dim, hidden, ema, gen_lr, disc_lr)


PROBLEMS: dict[str, Callable[..., System]] = {
    "gaussian1d": gaussian1d,
    "digits": digits,
    "pix2pix": pix2pix,
    "mnist": mnist,
    "dirac": dirac,
    "ring8": ring8,
    "grid25": grid25,
}


def make_system(problem: str, **kwargs: Any) -> System:
    """Build a seed system by name (``gaussian1d``, ``digits``, ``pix2pix``, ``mnist``)
    and check it: data finite and floating, G's output fitting D's input."""
    if problem not in PROBLEMS:
        raise ValueError(f"unknown problem '{problem}'; choose one of {', '.join(PROBLEMS)}")
    system = PROBLEMS[problem](**kwargs)
    validate(system)
    return system


def validate(system: System) -> None:
    """Check a system before training: data, and G's output shape against D's input.

    Runs the skeletons on ``meta`` tensors (no computation) to get G's output
    shape and check that D accepts real and generated batches.
    """
    gan = system.gan
    for i, x in enumerate(system.data):
        D.check_data(f"{gan.name} data[{i}]", x)
    real = gan.sample_real(fr.key(0), system.data, (2,), torch.float32)
    for i, r in enumerate(real):
        if not r.is_floating_point():
            raise TypeError(f"{gan.name}: real batch {i} has dtype {r.dtype}; must be floating point")
    g_in = real[0] if gan.conditional else torch.zeros(2, gan.latent_dim)
    g_skel, d_skel = gan.gen_apply.skeleton, gan.disc_apply.skeleton
    try:
        g_out = g_skel(g_in.to("meta"))
    except Exception as e:
        raise ValueError(f"{gan.name}: the generator does not accept inputs of shape {tuple(g_in.shape)}: {e}") from e
    target = real[-1]
    if tuple(g_out.shape[1:]) != tuple(target.shape[1:]):
        raise ValueError(
            f"{gan.name}: generator output has shape {tuple(g_out.shape[1:])} per example, but real data "
            f"(the discriminator's input) has {tuple(target.shape[1:])}"
        )
    d_args = (real[0].to("meta"), g_out) if gan.conditional else (g_out,)
    try:
        d_out = d_skel(*d_args)
    except Exception as e:
        raise ValueError(f"{gan.name}: the discriminator does not accept the generator's output "
                         f"of shape {tuple(g_out.shape)}: {e}") from e
    if d_out.shape[0] != 2:
        raise ValueError(f"{gan.name}: discriminator output must keep the batch axis, got shape {tuple(d_out.shape)}")
