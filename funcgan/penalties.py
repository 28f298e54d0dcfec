r"""Regularisers of the discriminator as values: gradient penalties and weight clipping.

A :class:`Penalty` adds ``weight * value`` to D's loss; its ``weight`` lives in
``state.hparams[name]`` (a per-seed tensor: penalty weights sweep like learning
rates, without recompiling). ``every=k`` applies it lazily on steps ``t`` with
``t % k == 0`` only, scaled by ``k`` as StyleGAN2's lazy R1 is (Karras et al. 2020);
the drivers (:mod:`funcgan.sweep`) compile a step without the penalty for the other
steps, so nothing is computed there. A :class:`Constraint` acts on D's parameters
after each D update (weight clipping).

=========================  ==================================================================
``gradient_penalty(10)``   WGAN-GP (Gulrajani et al. 2017): :math:`\lambda\,\mathbb{E}(\lVert\nabla_{\hat x}D(\hat x)\rVert_2-1)^2`,
                           :math:`\hat x = \epsilon x + (1-\epsilon)\tilde x`, one :math:`\epsilon\sim U[0,1)` per example.
``r1(10)``                 R1 (Mescheder et al. 2018): :math:`\frac{\gamma}{2}\mathbb{E}\lVert\nabla_x D(x)\rVert^2` on real data.
``r2(10)``                 R2: the same on generated data.
``dragan(10)``             DRAGAN (Kodali et al. 2017): the WGAN-GP form at :math:`\alpha x + (1-\alpha)(x + c\,\sigma_x u)`,
                           :math:`u\sim U[0,1)` per element, :math:`\alpha` per example, :math:`c = 0.5`.
``weight_clipping(0.01)``  the original WGAN's clamp of every D parameter to :math:`[-c, c]` after each update.
=========================  ==================================================================

Inputs of any rank: interpolation coefficients have shape ``(B, 1, ..., 1)`` and
gradient norms are taken over every non-batch dimension, so ``(B, d)`` vectors and
``(B, C, H, W)`` images are penalised per example. For a conditional D the gradient
is taken with respect to the image, the condition held fixed. Input gradients are
nested ``torch.func.grad`` of ``D(x).sum()`` (double backward inside the D update),
exactly ``torch.autograd.grad(D(x), x, grad_outputs=ones, create_graph=True)``.

Buffers: every penalty runs its own D forward in train mode, after the objective's
two forwards (real, then generated), so with BatchNorm in D each penalty forward
updates the running statistics once, in the order the penalties are listed, as
the imperative code ``loss = objective + penalty(D(x_hat))`` does. (A D with
BatchNorm couples the examples of a batch, so its "per-example" gradient includes
that coupling, as the imperative code's does; WGAN-GP's authors use no BatchNorm
in the critic.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.func import grad

from funcgan import random as fr
from funcgan._checks import check_positive

__all__ = [
    "Penalty",
    "Constraint",
    "gradient_penalty",
    "r1",
    "r2",
    "dragan",
    "weight_clipping",
    "input_gradients",
    "per_example_coefficients",
]

Buffers = dict[str, torch.Tensor]
#: ``disc(x, buffers) -> (out, buffers)``: D with its parameters (and condition) fixed
DiscFn = Callable[[torch.Tensor, Buffers], tuple[torch.Tensor, Buffers]]


def _no_noise(key: torch.Tensor, real_x: torch.Tensor) -> dict[str, torch.Tensor]:
    del key, real_x
    return {}


@dataclass(frozen=True)
class Penalty:
    """A term ``weight * value`` added to D's loss.

    Attributes:
        name: its key in ``state.hparams`` (where the per-seed weight lives) and in metrics.
        weight: the default weight (>= 0; a sweep can give each run its own).
        value: ``(disc, real_x, fake_x, noise, buffers) -> (value, buffers)``, the unweighted
            penalty; ``fake_x`` is a constant (G's samples, detached).
        draw: ``(key, real_x) -> dict`` of the random tensors ``value`` needs, drawn with the
            step's other randomness (so an imperative reference can use the same ones).
        every: apply on steps ``t % every == 0`` only, scaled by ``every``.
        kind: which built-in penalty this is (``"gp"``, ``"r1"``, ``"r2"``, ``"dragan"``;
            ``"custom"`` for a user's), so imperative references can write it independently.
        options: the built-in penalty's settings (``target``, ``scale``), for the same purpose.
    """

    name: str
    weight: float
    value: Callable[..., tuple[torch.Tensor, Buffers]]
    draw: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]] = _no_noise
    every: int = 1
    kind: str = "custom"
    options: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_positive(f"penalty '{self.name}'", "weight", self.weight, allow_zero=True)
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"penalty '{self.name}': every must be an int >= 1, got {self.every!r}")


@dataclass(frozen=True)
class Constraint:
    """A projection of D's parameters applied after each D update.

    Attributes:
        name: its key in ``state.hparams`` (the per-seed value of its bound).
        weight: the default bound.
        project: ``(params, bound) -> params``.
        kind: ``"clip"`` for weight clipping, ``"custom"`` for a user's.
    """

    name: str
    weight: float
    project: Callable[[dict[str, torch.Tensor], torch.Tensor], dict[str, torch.Tensor]] = field(repr=False)
    kind: str = "custom"

    def __post_init__(self) -> None:
        check_positive(f"constraint '{self.name}'", "weight", self.weight)

    every = 1


def per_example_coefficients(u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(B,)`` coefficients reshaped to ``(B, 1, ..., 1)``, broadcasting over every non-batch dim of ``x``."""
    return u.reshape(u.shape[0], *([1] * (x.dim() - 1))).to(x.dtype)


def input_gradients(disc: DiscFn, x: torch.Tensor, buffers: Buffers) -> tuple[torch.Tensor, Buffers]:
    """``(dD(x).sum()/dx, buffers)``: per-example input gradients when D does not couple examples."""

    def total(inp: torch.Tensor):
        out, new = disc(inp, buffers)
        return out.sum(), new

    return grad(total, has_aux=True)(x)


def _norms(g: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(g.reshape(g.shape[0], -1), dim=1)  # (B,): ||g_i|| over every non-batch dim


def _uniform_per_example(key: torch.Tensor, real_x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"eps": fr.uniform(key, (real_x.shape[0],), real_x.dtype)}


def gradient_penalty(weight: float = 10.0, every: int = 1, target: float = 1.0, name: str = "gp") -> Penalty:
    r"""WGAN-GP: :math:`\lambda\,\mathbb{E}(\lVert\nabla D(\hat x)\rVert_2 - t)^2` at
    :math:`\hat x = \epsilon x + (1-\epsilon)\tilde x`, :math:`\epsilon \sim U[0, 1)` per example
    (Gulrajani et al. 2017; ``target`` t = 1)."""

    def value(disc: DiscFn, real_x, fake_x, noise, buffers):
        eps = per_example_coefficients(noise["eps"], real_x)
        x_hat = eps * real_x + (1 - eps) * fake_x
        g, buffers = input_gradients(disc, x_hat, buffers)
        return ((_norms(g) - target) ** 2).mean(), buffers

    return Penalty(name, weight, value, _uniform_per_example, every, "gp", {"target": float(target)})


def _zero_centred(on: str, gamma: float, every: int, name: str) -> Penalty:
    def value(disc: DiscFn, real_x, fake_x, noise, buffers):
        del noise
        g, buffers = input_gradients(disc, real_x if on == "real" else fake_x, buffers)
        return 0.5 * g.reshape(g.shape[0], -1).pow(2).sum(1).mean(), buffers

    return Penalty(name, gamma, value, _no_noise, every, "r1" if on == "real" else "r2")


def r1(gamma: float = 10.0, every: int = 1, name: str = "r1") -> Penalty:
    r"""R1 (Mescheder et al. 2018): :math:`\frac{\gamma}{2}\mathbb{E}_{x\sim p_{data}}\lVert\nabla_x D(x)\rVert^2`;
    StyleGAN2 applies it with ``every=16``."""
    return _zero_centred("real", gamma, every, name)


def r2(gamma: float = 10.0, every: int = 1, name: str = "r2") -> Penalty:
    r"""R2: :math:`\frac{\gamma}{2}\mathbb{E}_{\tilde x\sim p_g}\lVert\nabla_{\tilde x} D(\tilde x)\rVert^2`."""
    return _zero_centred("fake", gamma, every, name)


def dragan(weight: float = 10.0, scale: float = 0.5, every: int = 1, name: str = "dragan") -> Penalty:
    r"""DRAGAN (Kodali et al. 2017): :math:`\lambda\,\mathbb{E}(\lVert\nabla D(\hat x)\rVert_2 - 1)^2` at
    :math:`\hat x = \alpha x + (1-\alpha)(x + c\,\mathrm{std}(x)\,u)`, ``std`` over the whole real batch,
    :math:`u\sim U[0,1)` per element, :math:`\alpha\sim U[0,1)` per example, :math:`c` = ``scale``."""

    def draw(key: torch.Tensor, real_x: torch.Tensor) -> dict[str, torch.Tensor]:
        ka, ku = fr.split(key)
        return {
            "alpha": fr.uniform(ka, (real_x.shape[0],), real_x.dtype),
            "u": fr.uniform(ku, tuple(real_x.shape), real_x.dtype),
        }

    def value(disc: DiscFn, real_x, fake_x, noise, buffers):
        del fake_x
        alpha = per_example_coefficients(noise["alpha"], real_x)
        perturbed = real_x + scale * real_x.std() * noise["u"]
        x_hat = alpha * real_x + (1 - alpha) * perturbed
        g, buffers = input_gradients(disc, x_hat, buffers)
        return ((_norms(g) - 1) ** 2).mean(), buffers

    return Penalty(name, weight, value, draw, every, "dragan", {"scale": float(scale)})


def weight_clipping(c: float = 0.01, name: str = "clip") -> Constraint:
    r"""The original WGAN's constraint (Arjovsky et al. 2017): after each D update every D parameter
    is clamped to :math:`[-c, c]` (``p.data.clamp_(-c, c)``)."""

    def project(params: dict[str, torch.Tensor], bound: Any) -> dict[str, torch.Tensor]:
        return {k: torch.clamp(v, -bound.to(v.dtype), bound.to(v.dtype)) for k, v in params.items()}

    return Constraint(name, c, project, "clip")
