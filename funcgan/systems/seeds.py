"""The four seed systems (``../shared/seeds``), each with the seed's own loop, objective and optimizers.

Every builder also takes ``loop`` (any :mod:`funcgan.loops` value), ``objective``,
``penalties``, ``n_disc``, ``loop_options`` (other fields of the loop) and ``ema``:
the seed's defaults are kept for what is not given. With an objective on logits the
discriminator is built without its final sigmoid.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from funcgan import data as D
from funcgan import losses, nets
from funcgan import random as fr
from funcgan.loops import Adaptive, Alternating, Pix2Pix, ReuseFake
from funcgan.optim import OptimizerSpec
from funcgan.step import GAN
from funcgan.systems.base import System, dataset_sampler, gaussian_sampler, resolve_loop

__all__ = ["gaussian1d", "digits", "pix2pix", "mnist"]


def _probs(loop) -> bool:
    return loop.objective.output == "probs"


def gaussian1d(
    batch_size: int = 100,
    latent_dim: int = 10,
    hidden: int = 50,
    lr: float = 1e-3,
    gen_lr: float | None = None,
    disc_lr: float | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
    mean: float = 0.0,
    std: float = 1.0,
    loop: Any = None,
    objective: Any = None,
    penalties: Any = None,
    n_disc: int | None = None,
    loop_options: dict | None = None,
    scheme: Any = None,
    ema: float | None = None,
) -> System:
    """Seed 000: the 1-D GAN on N(mean, std^2) (seed: N(0, 1), batch 100, Adam 1e-3, BCE, ``Alternating``)."""
    lp = resolve_loop(
        Alternating(objective=losses.bce_probs()), loop, objective, penalties, n_disc, loop_options, scheme
    )
    gan = GAN(
        gen=nets.Seed000Generator(latent_dim, hidden),
        disc=nets.Seed000Discriminator(1, hidden, _probs(lp)),
        loop=lp,
        sample_real=gaussian_sampler(mean, std, 1),
        latent_dim=latent_dim,
        batch_size=batch_size,
        gen_opt=OptimizerSpec("adam", gen_lr or lr, betas),
        disc_opt=OptimizerSpec("adam", disc_lr or lr, betas),
        name="gaussian1d",
        ema=ema,
    )
    return System(
        gan,
        (),
        "1d",
        1000,
        f"seed 000: 1-D GAN on N({mean}, {std}^2), {lp.name}, {lp.objective.name}",
        data_source="generated",
        real_stats={"mean": mean, "std": std},
    )


def digits(
    batch_size: int = 64,
    latent_dim: int = 16,
    hidden: int = 128,
    lr: float = 1e-3,
    gen_lr: float | None = None,
    disc_lr: float | None = None,
    n_examples: int = 4096,
    loop: Any = None,
    objective: Any = None,
    penalties: Any = None,
    n_disc: int | None = None,
    loop_options: dict | None = None,
    scheme: Any = None,
    ema: float | None = None,
) -> System:
    """Seed 001: MLP GAN on 8x8 glyph digits; one G forward reused; D on real and on generated data as two
    optimizer steps (``ReuseFake(split=True)``), BCE, Adam 1e-3."""
    x, _ = D.glyph_digits(fr.key(2024), n_examples)
    lp = resolve_loop(
        ReuseFake(objective=losses.bce_probs(), split=True), loop, objective, penalties, n_disc, loop_options, scheme
    )
    gan = GAN(
        gen=nets.mlp(latent_dim, [hidden], 64, "relu", "sigmoid"),
        disc=nets.mlp(64, [hidden], 1, "leaky_relu", "sigmoid" if _probs(lp) else None),
        loop=lp,
        sample_real=dataset_sampler(0),
        latent_dim=latent_dim,
        batch_size=batch_size,
        gen_opt=OptimizerSpec("adam", gen_lr or lr),
        disc_opt=OptimizerSpec("adam", disc_lr or lr),
        name="digits",
        ema=ema,
    )
    return System(
        gan,
        (x,),
        "image",
        2000,
        f"seed 001: MLP GAN on 8x8 glyph digits, {lp.name}, {lp.objective.name}",
        data_source="built-in glyph digits",
        image_shape=(1, 8, 8),
    )


def pix2pix(
    batch_size: int = 32,
    hidden: int = 128,
    lr: float = 2e-4,
    l1_weight: float = 100.0,
    gen_lr: float | None = None,
    disc_lr: float | None = None,
    n_examples: int = 2048,
    loop: Any = None,
    objective: Any = None,
    penalties: Any = None,
    n_disc: int | None = None,
    loop_options: dict | None = None,
    scheme: Any = None,
    ema: float | None = None,
) -> System:
    """Seed 002: conditional GAN translating a glyph digit into the digit rotated by 90 degrees
    (``Pix2Pix``: D on (condition, image), 0.5 * BCE, G BCE + 100 * L1; Adam 2e-4 (0.5, 0.999))."""
    a, b = D.paired_digits(fr.key(2002), n_examples)
    lp = resolve_loop(
        Pix2Pix(objective=losses.bce_probs(), l1_weight=l1_weight),
        loop,
        objective,
        penalties,
        n_disc,
        loop_options,
        scheme,
    )
    gan = GAN(
        gen=nets.mlp(64, [hidden, hidden], 64, "relu", "sigmoid"),
        disc=nets.ConditionalDiscriminator(nets.mlp(128, [hidden], 1, "leaky_relu", "sigmoid" if _probs(lp) else None)),
        loop=lp,
        sample_real=dataset_sampler(1, cond_index=0),
        latent_dim=0,
        batch_size=batch_size,
        gen_opt=OptimizerSpec("adam", gen_lr or lr, (0.5, 0.999)),
        disc_opt=OptimizerSpec("adam", disc_lr or lr, (0.5, 0.999)),
        conditional=True,
        name="pix2pix",
        ema=ema,
    )
    return System(
        gan,
        (a, b),
        "image",
        1500,
        f"seed 002: pix2pix-style digit -> rotated digit, {lp.name}, {lp.objective.name}",
        data_source="built-in paired glyph digits",
        image_shape=(1, 8, 8),
    )


def mnist(
    data_dir: str | None = None,
    batch_size: int = 64,
    latent_dim: int = 64,
    hidden: int = 256,
    lr: float = 1e-4,
    max_gen_steps: int = 5,
    clip_norm: float = 1.0,
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
    """Seed 003: the MNIST MLP GAN with clamped logs, clipping at 1 and the adaptive G schedule (``Adaptive``).

    With ``data_dir`` the MNIST IDX files are read (a clear error if missing);
    without, scikit-learn's bundled 8x8 digits stand in, or the built-in glyph
    digits when scikit-learn is not installed.
    """
    if data_dir is not None:
        x = D.load_mnist(data_dir)
        source, shape = f"MNIST IDX files in {data_dir}", (1, 28, 28)
    else:
        try:
            x = D.load_digits()
            source = "scikit-learn 8x8 digits (MNIST stand-in; pass --data-dir for MNIST)"
        except ImportError:
            x, _ = D.glyph_digits(fr.key(3003), 4096)
            source = "built-in glyph digits (MNIST stand-in; pass --data-dir for MNIST)"
        shape = (1, 8, 8)
    lp = resolve_loop(
        Adaptive(objective=losses.clamped_log(), max_gen_steps=max_gen_steps),
        loop,
        objective,
        penalties,
        n_disc,
        loop_options,
        scheme,
    )
    n_pix = x.shape[1]
    disc_layers = [nn.Linear(n_pix, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1)]
    gan = GAN(
        gen=nets.mlp(latent_dim, [hidden, hidden], n_pix, "relu", None),
        disc=nn.Sequential(*disc_layers, *([nn.Sigmoid()] if _probs(lp) else [])),
        loop=lp,
        sample_real=dataset_sampler(0),
        latent_dim=latent_dim,
        batch_size=batch_size,
        gen_opt=OptimizerSpec("adam", gen_lr or lr, clip_norm=clip_norm),
        disc_opt=OptimizerSpec("adam", disc_lr or lr, clip_norm=clip_norm),
        name="mnist",
        ema=ema,
    )
    return System(
        gan,
        (x,),
        "image",
        3000,
        f"seed 003: MNIST MLP GAN, {lp.name}, {lp.objective.name}",
        data_source=source,
        image_shape=shape,
    )
