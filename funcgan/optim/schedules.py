"""Learning-rate schedules: pure functions ``count -> lr``.

``count`` is the number of optimizer updates already taken (an int64 0-d
tensor; 0 for the first update), so a schedule is evaluated inside the
compiled step with no Python branching. The closed forms equal the values the
matching ``torch.optim.lr_scheduler`` sets when ``scheduler.step()`` is called
after every ``optimizer.step()``. Results are float64 0-d tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from funcgan._checks import check_interval, check_positive

__all__ = ["constant", "exponential_decay", "step_decay", "cosine_decay", "linear_warmup"]

Schedule = Callable[[torch.Tensor], torch.Tensor]


def _t(count: torch.Tensor) -> torch.Tensor:
    return count.to(torch.float64)


def constant(lr: float) -> Schedule:
    """``lr`` at every step."""
    check_positive("constant", "lr", lr)
    return lambda count: torch.full_like(_t(count), lr)


def exponential_decay(lr: float, gamma: float) -> Schedule:
    r""":math:`\eta_t = \eta_0 \gamma^t` (``torch.optim.lr_scheduler.ExponentialLR``)."""
    check_positive("exponential_decay", "lr", lr)
    check_interval("exponential_decay", "gamma", gamma, 0.0, 1.0, hi_closed=True)
    return lambda count: lr * torch.pow(torch.full_like(_t(count), gamma), _t(count))


def step_decay(lr: float, step_size: int, gamma: float = 0.1) -> Schedule:
    r""":math:`\eta_t = \eta_0 \gamma^{\lfloor t / s \rfloor}` (``torch.optim.lr_scheduler.StepLR``)."""
    check_positive("step_decay", "lr", lr)
    if not isinstance(step_size, int) or step_size < 1:
        raise ValueError(f"step_decay: step_size must be an int >= 1, got {step_size!r}")
    check_interval("step_decay", "gamma", gamma, 0.0, 1.0, hi_closed=True)
    return lambda count: (
        lr
        * torch.pow(
            torch.full_like(_t(count), gamma), torch.div(count, step_size, rounding_mode="floor").to(torch.float64)
        )
    )


def cosine_decay(lr: float, t_max: int, eta_min: float = 0.0) -> Schedule:
    r""":math:`\eta_t = \eta_{min} + (\eta_0 - \eta_{min})(1 + \cos(\pi t / T))/2`, the closed
    form of ``CosineAnnealingLR``; like it, beyond ``t_max`` the cosine rises again."""
    check_positive("cosine_decay", "lr", lr)
    if not isinstance(t_max, int) or t_max < 1:
        raise ValueError(f"cosine_decay: t_max must be an int >= 1, got {t_max!r}")
    check_positive("cosine_decay", "eta_min", eta_min, allow_zero=True)

    def schedule(count: torch.Tensor) -> torch.Tensor:
        t = _t(count)
        return eta_min + (lr - eta_min) * (1.0 + torch.cos(math.pi * t / t_max)) / 2.0

    return schedule


def linear_warmup(lr: float, warmup_steps: int, start_factor: float = 0.0) -> Schedule:
    r"""Ramp linearly from ``start_factor * lr`` to ``lr`` over ``warmup_steps``, then hold
    (``LinearLR(start_factor, total_iters=warmup_steps)``)."""
    check_positive("linear_warmup", "lr", lr)
    if not isinstance(warmup_steps, int) or warmup_steps < 1:
        raise ValueError(f"linear_warmup: warmup_steps must be an int >= 1, got {warmup_steps!r}")
    check_interval("linear_warmup", "start_factor", start_factor, 0.0, 1.0, hi_closed=True)

    def schedule(count: torch.Tensor) -> torch.Tensor:
        frac = torch.clamp(_t(count) / warmup_steps, max=1.0)
        return lr * (start_factor + (1.0 - start_factor) * frac)

    return schedule
