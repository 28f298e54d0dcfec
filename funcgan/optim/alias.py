"""The optimizers users call, with ``torch.optim``'s argument names and defaults.

Each returns a :class:`~funcgan.optim.base.GradientTransformation` chained from
:mod:`funcgan.optim.transforms`. ``lr`` may be a number, a 0-d tensor or a
schedule ``count -> lr``; wrap the factory in
:func:`~funcgan.optim.base.inject_hyperparams` to sweep its hyper-parameters
under ``vmap``.
"""

from __future__ import annotations

from funcgan._checks import check_positive
from funcgan.optim import transforms as T
from funcgan.optim.base import GradientTransformation, Scalar, chain
from funcgan.optim.transforms import LearningRate

__all__ = ["sgd", "adam", "adamw", "rmsprop"]


def _is_zero(x: Scalar) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == 0


def sgd(
    lr: LearningRate = 1e-3,
    momentum: Scalar = 0.0,
    dampening: Scalar = 0.0,
    weight_decay: Scalar = 0.0,
    nesterov: bool = False,
) -> GradientTransformation:
    r"""Stochastic gradient descent, as ``torch.optim.SGD``.

    .. math:: g \leftarrow g + \lambda\theta;\; b_t = \mu b_{t-1} + (1-\tau) g;\;
              \theta \leftarrow \theta - \eta\,(g + \mu b_t \text{ or } b_t)

    Args:
        lr: learning rate :math:`\eta` (> 0), a 0-d tensor or a schedule.
        momentum: :math:`\mu \ge 0`.
        dampening: :math:`\tau \ge 0`.
        weight_decay: L2 penalty :math:`\lambda \ge 0`.
        nesterov: Nesterov momentum (needs momentum > 0 and dampening = 0).
    """
    check_positive("sgd", "momentum", momentum, allow_zero=True)
    if nesterov and (_is_zero(momentum) or not _is_zero(dampening)):
        raise ValueError("sgd: Nesterov momentum requires a momentum > 0 and zero dampening")
    parts = []
    if not _is_zero(weight_decay):
        parts.append(T.add_decayed_weights(weight_decay))
    if not _is_zero(momentum):
        parts.append(T.trace(momentum, dampening, nesterov))
    parts.append(T.scale_by_learning_rate(lr))
    return chain(*parts)


def adam(
    lr: LearningRate = 1e-3,
    betas: tuple[Scalar, Scalar] = (0.9, 0.999),
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 0.0,
    amsgrad: bool = False,
) -> GradientTransformation:
    r"""Adam (Kingma & Ba 2015), as ``torch.optim.Adam``: L2 ``weight_decay`` is
    added to the gradient before the moments (see :func:`adamw` for decoupled decay).

    Args:
        lr: learning rate (> 0), a 0-d tensor or a schedule.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
        eps: added to the denominator (>= 0).
        weight_decay: L2 penalty (>= 0).
        amsgrad: use the AMSGrad variant.

    Returns:
        A GradientTransformation; its state holds ``count``, ``mu``, ``nu``.
    """
    _check_betas("adam", betas)
    parts = []
    if not _is_zero(weight_decay):
        parts.append(T.add_decayed_weights(weight_decay))
    parts.append(T.scale_by_adam(betas[0], betas[1], eps, amsgrad, learning_rate=lr))
    return chain(*parts)


def adamw(
    lr: LearningRate = 1e-3,
    betas: tuple[Scalar, Scalar] = (0.9, 0.999),
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 1e-2,
    amsgrad: bool = False,
) -> GradientTransformation:
    r"""AdamW (Loshchilov & Hutter 2019), as ``torch.optim.AdamW``: the decay
    :math:`\theta \leftarrow \theta - \eta\lambda\theta` is decoupled from the moments."""
    _check_betas("adamw", betas)
    return chain(
        T.scale_by_adam(betas[0], betas[1], eps, amsgrad, learning_rate=lr, decoupled_weight_decay=weight_decay)
    )


def rmsprop(
    lr: LearningRate = 1e-2,
    alpha: Scalar = 0.99,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 0.0,
    momentum: Scalar = 0.0,
    centered: bool = False,
) -> GradientTransformation:
    r"""RMSprop, as ``torch.optim.RMSprop`` (``eps`` outside the square root; the
    momentum buffer accumulates ``g / (sqrt(s) + eps)``)."""
    check_positive("rmsprop", "momentum", momentum, allow_zero=True)
    parts = []
    if not _is_zero(weight_decay):
        parts.append(T.add_decayed_weights(weight_decay))
    parts.append(T.scale_by_rms(alpha, eps, centered))
    if not _is_zero(momentum):
        parts.append(T.trace(momentum))
    parts.append(T.scale_by_learning_rate(lr))
    return chain(*parts)


def _check_betas(fn: str, betas: tuple) -> None:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{fn}: betas must be a pair (beta1, beta2), got {betas!r}")
