r"""GAN objectives on discriminator outputs, written as pure tensor functions.

Two families:

* **on probabilities** (the discriminator ends in a sigmoid), exactly as the
  seed tutorials write them: ``nn.BCELoss`` (seeds 000, 001, 002) and seed 003's
  clamped logs;
* **on logits** (numerically stable, via softplus): the forms new code should use.

Naming: *minimax*/*saturating* is the generator loss :math:`\mathbb{E}\log(1 - D(G(z)))`
of Goodfellow et al. (2014), which G minimises and whose gradient vanishes when D
is confident; *non-saturating* is :math:`-\mathbb{E}\log D(G(z))` (BCE against the
"real" label), the heuristic the same paper recommends.

All losses average over the batch (``reduction="mean"``) and return 0-d tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "bce",
    "disc_bce",
    "gen_bce_nonsaturating",
    "disc_clamped_log_real",
    "disc_clamped_log_fake",
    "gen_clamped_log_saturating",
    "disc_logistic",
    "gen_nonsaturating_logits",
    "gen_saturating_logits",
    "disc_least_squares",
    "gen_least_squares",
    "disc_hinge",
    "gen_hinge",
    "disc_wasserstein",
    "gen_wasserstein",
    "l1",
]


def bce(probs: torch.Tensor, target: float) -> torch.Tensor:
    r"""``nn.BCELoss()(probs, full_like(probs, target))``: :math:`-[y\log p + (1-y)\log(1-p)]`,
    logs clamped at -100 as torch does."""
    return F.binary_cross_entropy(probs, torch.full_like(probs, target))


def disc_bce(real_probs: torch.Tensor, fake_probs: torch.Tensor) -> torch.Tensor:
    r"""Seed 000's D loss: ``BCE(D(x), 1) + BCE(D(G(z)), 0)``."""
    return bce(real_probs, 1.0) + bce(fake_probs, 0.0)


def gen_bce_nonsaturating(fake_probs: torch.Tensor) -> torch.Tensor:
    r"""Non-saturating G loss on probabilities: ``BCE(D(G(z)), 1)`` = :math:`-\mathbb{E}\log D(G(z))`."""
    return bce(fake_probs, 1.0)


def disc_clamped_log_real(real_probs: torch.Tensor, low: float = 1e-3) -> torch.Tensor:
    r"""Seed 003's D loss on real data: :math:`-\mathbb{E}\log\,\mathrm{clamp}(D(x), 10^{-3}, 1)`."""
    return -torch.log(torch.clamp(real_probs, low, 1.0)).mean()


def disc_clamped_log_fake(fake_probs: torch.Tensor, high: float = 1 - 1e-3) -> torch.Tensor:
    r"""Seed 003's D loss on generated data: :math:`-\mathbb{E}\log(1 - \mathrm{clamp}(D(G(z)), 0, 1 - 10^{-3}))`."""
    return -torch.log(1 - torch.clamp(fake_probs, 0.0, high)).mean()


def gen_clamped_log_saturating(fake_probs: torch.Tensor, high: float = 1 - 1e-3) -> torch.Tensor:
    r"""Seed 003's saturating (minimax) G loss: :math:`\mathbb{E}\log(1 - \mathrm{clamp}(D(G(z)), 0, 1 - 10^{-3}))`."""
    return torch.log(1 - torch.clamp(fake_probs, 0.0, high)).mean()


def disc_logistic(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    r"""The standard D loss on logits: :math:`\mathbb{E}\,\mathrm{softplus}(-D(x)) + \mathbb{E}\,\mathrm{softplus}(D(G(z)))`."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def gen_nonsaturating_logits(fake_logits: torch.Tensor) -> torch.Tensor:
    r"""Non-saturating G loss on logits: :math:`\mathbb{E}\,\mathrm{softplus}(-D(G(z)))`."""
    return F.softplus(-fake_logits).mean()


def gen_saturating_logits(fake_logits: torch.Tensor) -> torch.Tensor:
    r"""Minimax (saturating) G loss on logits: :math:`\mathbb{E}\log(1 - \sigma(D(G(z)))) = -\mathbb{E}\,\mathrm{softplus}(D(G(z)))`."""
    return -F.softplus(fake_logits).mean()


def disc_least_squares(real_out: torch.Tensor, fake_out: torch.Tensor) -> torch.Tensor:
    r"""LSGAN D loss (Mao et al. 2017, a=0, b=1): :math:`\tfrac12\mathbb{E}(D(x)-1)^2 + \tfrac12\mathbb{E}D(G(z))^2`."""
    return 0.5 * ((real_out - 1) ** 2).mean() + 0.5 * (fake_out**2).mean()


def gen_least_squares(fake_out: torch.Tensor) -> torch.Tensor:
    r"""LSGAN G loss (c=1): :math:`\tfrac12\mathbb{E}(D(G(z))-1)^2`."""
    return 0.5 * ((fake_out - 1) ** 2).mean()


def disc_hinge(real_out: torch.Tensor, fake_out: torch.Tensor) -> torch.Tensor:
    r"""Hinge D loss (Lim & Ye 2017): :math:`\mathbb{E}\,\mathrm{relu}(1 - D(x)) + \mathbb{E}\,\mathrm{relu}(1 + D(G(z)))`."""
    return F.relu(1 - real_out).mean() + F.relu(1 + fake_out).mean()


def gen_hinge(fake_out: torch.Tensor) -> torch.Tensor:
    r"""Hinge G loss: :math:`-\mathbb{E}D(G(z))`."""
    return -fake_out.mean()


def disc_wasserstein(real_out: torch.Tensor, fake_out: torch.Tensor) -> torch.Tensor:
    r"""Wasserstein critic loss (Arjovsky et al. 2017): :math:`\mathbb{E}D(G(z)) - \mathbb{E}D(x)`."""
    return fake_out.mean() - real_out.mean()


def gen_wasserstein(fake_out: torch.Tensor) -> torch.Tensor:
    r"""Wasserstein G loss: :math:`-\mathbb{E}D(G(z))`."""
    return -fake_out.mean()


def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    r"""``nn.L1Loss()``: :math:`\mathbb{E}|\hat y - y|` (seed 002's reconstruction term)."""
    return (pred - target).abs().mean()
