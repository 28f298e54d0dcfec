"""Built-in systems, ready to train: a GAN with its data, checked when built.

===============  ======  ===========================================================
problem          seed    what
===============  ======  ===========================================================
``gaussian1d``   000     1-D GAN on N(0, 1), ``Alternating``, BCE, Adam 1e-3
``digits``       001     MLP GAN on 8x8 glyph digits, ``ReuseFake(split=True)``
``pix2pix``      002     conditional digit -> rotated digit, ``Pix2Pix`` (BCE + 100 L1)
``mnist``        003     MNIST MLP GAN, ``Adaptive`` (clamped logs, clipping), stand-in digits
``dirac``        toy     Dirac-GAN (Mescheder et al. 2018), SGD 0.1
``ring8``        toy     ring of 8 Gaussians, MLPs on logits
``grid25``       toy     5x5 grid of Gaussians, MLPs on logits
``dcgan``        image   pytorch/examples DCGAN at 32x32, BatchNorm, ``ReuseFake``, BCE
``sngan``        image   SN-GAN: spectral-norm D, hinge, ``n_disc=5``, Adam 2e-4 (0, 0.9)
``cgan``         image   class-conditional DCGAN with a projection D, hinge
===============  ======  ===========================================================

Every builder takes ``loop``, ``objective``, ``penalties``, ``n_disc``,
``loop_options`` and ``ema``, so any system trains with any loop, objective and
penalty (``make_system("mnist", loop=loops.Simultaneous(objective=losses.hinge()))``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from funcgan.systems.base import System, dataset_sampler, gaussian_sampler, resolve_loop, validate
from funcgan.systems.images import cgan, dcgan, sngan
from funcgan.systems.seeds import digits, gaussian1d, mnist, pix2pix
from funcgan.systems.toys import DiracDiscriminator, DiracGenerator, dirac, grid25, mixture_sampler, ring8

__all__ = [
    "System",
    "PROBLEMS",
    "make_system",
    "validate",
    "dataset_sampler",
    "gaussian_sampler",
    "resolve_loop",
    "mixture_sampler",
    "gaussian1d",
    "digits",
    "pix2pix",
    "mnist",
    "dirac",
    "ring8",
    "grid25",
    "dcgan",
    "sngan",
    "cgan",
    "DiracGenerator",
    "DiracDiscriminator",
]

PROBLEMS: dict[str, Callable[..., System]] = {
    "gaussian1d": gaussian1d,
    "digits": digits,
    "pix2pix": pix2pix,
    "mnist": mnist,
    "dirac": dirac,
    "ring8": ring8,
    "grid25": grid25,
    "dcgan": dcgan,
    "sngan": sngan,
    "cgan": cgan,
}


def make_system(problem: str, **kwargs: Any) -> System:
    """Build a built-in system by name (:data:`PROBLEMS`); it is checked when built."""
    if problem not in PROBLEMS:
        raise ValueError(f"unknown problem '{problem}'; choose one of {', '.join(PROBLEMS)}")
    return PROBLEMS[problem](**kwargs)
