"""Image GANs at 32x32 on the digits (8x8 digits upscaled): DCGAN, SN-GAN and a class-conditional GAN.

The data are scikit-learn's bundled 8x8 digits (or the built-in glyph digits when
scikit-learn is not installed) upscaled to ``(1, 32, 32)`` in [-1, 1]: nothing is
downloaded. Widths default to 32 (half the papers' 64) so that a CPU trains them in
minutes; pass ``width=64`` for the papers' networks.
"""

from __future__ import annotations

from typing import Any

from funcgan import data as D
from funcgan import losses, nets
from funcgan.loops import Alternating, ReuseFake
from funcgan.optim import OptimizerSpec
from funcgan.step import GAN
from funcgan.systems.base import System, dataset_sampler, resolve_loop

__all__ = ["dcgan", "sngan", "cgan"]


def dcgan(
    batch_size: int = 64,
    latent_dim: int = 100,
    width: int = 32,
    lr: float = 2e-4,
    betas: tuple[float, float] = (0.5, 0.999),
    gen_lr: float | None = None,
    disc_lr: float | None = None,
    disc_norm: str | None = None,
    loop: Any = None,
    objective: Any = None,
    penalties: Any = None,
    n_disc: int | None = None,
    loop_options: dict | None = None,
    scheme: Any = None,
    ema: float | None = None,
) -> System:
    """The pytorch/examples DCGAN (Radford et al. 2016) at 32x32: BatchNorm in both nets, weights
    ``N(0, 0.02)``, ``nn.BCELoss`` on a sigmoid D, Adam 2e-4 (0.5, 0.999), and the example's loop:
    one G forward reused, D on real + ``fake.detach()`` in one optimizer step, G through the same
    ``fake`` (``ReuseFake``). With an input-gradient penalty (WGAN-GP, DRAGAN, R1, R2) D's BatchNorm
    becomes a per-example LayerNorm, as Gulrajani et al. (2017) prescribe for a penalised critic;
    ``disc_norm`` ("batch", "layer", "none") chooses explicitly."""
    x, _, source = D.digits32()
    lp = resolve_loop(ReuseFake(objective=losses.bce_probs()), loop, objective, penalties, n_disc, loop_options, scheme)
    probs = lp.objective.output == "probs"
    if disc_norm is None:
        disc_norm = (
            "layer" if any(getattr(p, "kind", "") in ("gp", "dragan", "r1", "r2") for p in lp.penalties) else "batch"
        )
    gan = GAN(
        gen=nets.DCGANGenerator(latent_dim, width, 1),
        disc=nets.DCGANDiscriminator(width, 1, probs, disc_norm),
        loop=lp,
        sample_real=dataset_sampler(0),
        latent_dim=(latent_dim, 1, 1),
        batch_size=batch_size,
        gen_opt=OptimizerSpec("adam", gen_lr or lr, betas),
        disc_opt=OptimizerSpec("adam", disc_lr or lr, betas),
        name="dcgan",
        ema=ema,
        gen_init=nets.normal_init(),
        disc_init=nets.normal_init(),
    )
    return System(
        gan,
        (x,),
        "image",
        1000,
        f"DCGAN 32x32 (width {width}) on digits, {lp.name}, {lp.objective.name}",
        data_source=source,
        image_shape=(1, 32, 32),
    )


def sngan(
    batch_size: int = 64,
    latent_dim: int = 128,
    width: int = 32,
    lr: float = 2e-4,
    betas: tuple[float, float] = (0.0, 0.9),
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
    """SN-GAN (Miyato et al. 2018): the standard CNN with spectral norm on every D layer
    (``torch.nn.utils.parametrizations.spectral_norm``, one power iteration per forward), hinge loss,
    ``n_disc=5``, Adam 2e-4 (0, 0.9)."""
    x, _, source = D.digits32()
    lp = resolve_loop(
        Alternating(objective=losses.hinge(), n_disc=5), loop, objective, penalties, n_disc, loop_options, scheme
    )
    if lp.objective.output == "probs":
        raise ValueError("sngan: the SN-GAN discriminator outputs logits; choose an objective on logits")
    gan = GAN(
        gen=nets.SNGANGenerator(latent_dim, width, 1),
        disc=nets.SNGANDiscriminator(width, 1),
        loop=lp,
        sample_real=dataset_sampler(0),
        latent_dim=latent_dim,
        batch_size=batch_size,
        gen_opt=OptimizerSpec("adam", gen_lr or lr, betas),
        disc_opt=OptimizerSpec("adam", disc_lr or lr, betas),
        name="sngan",
        ema=ema,
    )
    return System(
        gan,
        (x,),
        "image",
        1000,
        f"SN-GAN 32x32 (width {width}) on digits, {lp.name}, {lp.objective.name}",
        data_source=source,
        image_shape=(1, 32, 32),
    )


def cgan(
    batch_size: int = 64,
    latent_dim: int = 100,
    width: int = 32,
    lr: float = 2e-4,
    betas: tuple[float, float] = (0.5, 0.999),
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
    """A class-conditional DCGAN on the digits and their labels: G gets ``z`` concatenated with the
    label's embedding (Mirza & Osindero 2014), D is a projection discriminator (Miyato & Koyama 2018),
    hinge loss, ``Alternating``, Adam 2e-4 (0.5, 0.999); fakes are made for the labels of the real batch."""
    x, y, source = D.digits32()
    lp = resolve_loop(Alternating(objective=losses.hinge()), loop, objective, penalties, n_disc, loop_options, scheme)
    if lp.objective.output == "probs":
        raise ValueError("cgan: the projection discriminator outputs logits; choose an objective on logits")
    gan = GAN(
        gen=nets.DCGANGenerator(latent_dim, width, 1, n_classes=10),
        disc=nets.DCGANDiscriminator(width, 1, probs=False, n_classes=10),
        loop=lp,
        sample_real=dataset_sampler(0, cond_index=1),
        latent_dim=latent_dim,
        batch_size=batch_size,
        gen_opt=OptimizerSpec("adam", gen_lr or lr, betas),
        disc_opt=OptimizerSpec("adam", disc_lr or lr, betas),
        conditional=True,
        name="cgan",
        ema=ema,
        gen_init=nets.normal_init(),
        disc_init=nets.normal_init(embedding_std=0.02),
    )
    return System(
        gan,
        (x, y),
        "image",
        1000,
        f"class-conditional DCGAN 32x32 (width {width}) on digits, {lp.name}, {lp.objective.name}",
        data_source=source,
        image_shape=(1, 32, 32),
        n_classes=10,
    )
