"""Evaluation metrics as pure tensor functions (vmappable over seeds).

Mixture metrics follow the unrolled-GAN (Metz et al. 2017), VEEGAN (Srivastava et
al. 2017) and PacGAN (Lin et al. 2018) evaluations on 2-D Gaussian mixtures:

* a sample is **high quality** if it lies within 3 standard deviations of its
  nearest mode;
* a mode is **covered** if at least ``min_count`` high-quality samples are nearest
  to it (default 20 of 2,500 samples, i.e. a fifth of a uniform share on 25 modes);
* **reverse KL**: ``KL(q || uniform)`` of the histogram ``q`` of high-quality samples
  over the modes (0 when every mode gets the same share; ``log K`` when one mode
  gets all).
"""

from __future__ import annotations

import math

import torch

__all__ = ["mixture_metrics", "ring_means", "grid_means"]


def ring_means(n: int = 8, radius: float = 2.0) -> torch.Tensor:
    """``n`` modes evenly spaced on a circle, shape ``(n, 2)``."""
    angles = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    return (radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)).float()


def grid_means(side: int = 5, spacing: float = 2.0) -> torch.Tensor:
    """A ``side x side`` grid of modes centred at 0, shape ``(side**2, 2)``."""
    c = (torch.arange(side, dtype=torch.float32) - (side - 1) / 2) * spacing
    return torch.cartesian_prod(c, c)


def mixture_metrics(
    samples: torch.Tensor, means: torch.Tensor, std: float, min_count: int = 20
) -> dict[str, torch.Tensor]:
    """Modes covered, fraction of high-quality samples and reverse KL of the mode histogram.

    Args:
        samples: ``(N, 2)`` generated samples.
        means: ``(K, 2)`` the mixture's modes.
        std: the modes' standard deviation.
        min_count: high-quality samples a mode needs to count as covered.

    Returns:
        ``{"modes": int64 0-d, "hq_fraction": 0-d, "reverse_kl": 0-d}``.
    """
    d = torch.cdist(samples.to(means.dtype), means)  # (N, K)
    dmin, nearest = d.min(dim=1)
    hq = dmin < 3 * std  # (N,)
    K = means.shape[0]
    counts = (torch.nn.functional.one_hot(nearest, K) * hq[:, None]).sum(0)  # (K,)
    modes = (counts >= min_count).sum()
    total = counts.sum()
    q = counts.to(torch.float64) / torch.clamp(total, min=1).to(torch.float64)
    rkl = torch.where(q > 0, q * torch.log(q * K), torch.zeros_like(q)).sum()
    rkl = torch.where(total > 0, rkl, torch.full_like(rkl, math.log(K)))
    return {"modes": modes, "hq_fraction": hq.to(torch.float64).mean(), "reverse_kl": rkl}
