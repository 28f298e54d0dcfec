"""An optimizer described once, built both functionally and as ``torch.optim``.

:class:`OptimizerSpec` names one of the aliases (``adam``, ``adamw``, ``sgd``,
``rmsprop``) with ``torch.optim``'s argument names. :meth:`OptimizerSpec.make`
builds the functional optimizer from the alias itself (one recipe: the chain
that ``funcgan.optim.adam`` builds, with ``clip_by_global_norm`` in front when
``clip_norm`` is set), wrapped in :func:`~funcgan.optim.base.inject_hyperparams`
so every enabled numeric hyper-parameter is a tensor in the state: a sweep gives
each seed its own value in one compiled program. :meth:`OptimizerSpec.make_torch`
builds the matching ``torch.optim`` optimizer for imperative references.

A hyper-parameter that is off in the spec (``weight_decay=0``, ``momentum=0``,
``clip_norm=None``) stays a static Python value, its transform is left out of the
chain, and it cannot be swept (:meth:`OptimizerSpec.sweepable` lists what can).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from funcgan.optim import alias
from funcgan.optim.base import GradientTransformation, chain, inject_hyperparams
from funcgan.optim.transforms import clip_by_global_norm

__all__ = ["OptimizerSpec", "OPTIMIZERS"]

#: name -> (alias, the alias's arguments taken from the spec)
OPTIMIZERS: dict[str, tuple[Callable[..., GradientTransformation], tuple[str, ...]]] = {
    "adam": (alias.adam, ("lr", "betas", "eps", "weight_decay", "amsgrad")),
    "adamw": (alias.adamw, ("lr", "betas", "eps", "weight_decay", "amsgrad")),
    "sgd": (alias.sgd, ("lr", "momentum", "dampening", "weight_decay", "nesterov")),
    "rmsprop": (alias.rmsprop, ("lr", "alpha", "eps", "weight_decay", "momentum", "centered")),
}
_OFF_WHEN_ZERO = ("weight_decay", "momentum", "dampening")
_FLAGS = ("amsgrad", "nesterov", "centered")


def _clipped(factory: Callable[..., GradientTransformation]) -> Callable[..., GradientTransformation]:
    """``factory`` with ``clip_by_global_norm(clip_norm)`` chained in front."""

    def clipped(clip_norm: Any, **kwargs: Any) -> GradientTransformation:
        return chain(clip_by_global_norm(clip_norm), factory(**kwargs))

    params = [inspect.Parameter("clip_norm", inspect.Parameter.KEYWORD_ONLY)]
    params += [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in inspect.signature(factory).parameters.values()]
    clipped.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    clipped.__name__ = f"clipped_{factory.__name__}"
    return clipped


@dataclass(frozen=True)
class OptimizerSpec:
    """One player's optimizer, with ``torch.optim``'s argument names and defaults.

    Attributes:
        name: ``"adam"``, ``"adamw"``, ``"sgd"`` or ``"rmsprop"``.
        lr: learning rate (> 0), or a schedule ``count -> lr`` (see
            :mod:`funcgan.optim.schedules`; a schedule is not sweepable).
        betas: Adam's betas.
        eps: denominator epsilon (Adam, RMSprop).
        weight_decay: L2 (decoupled for AdamW); 0 leaves it out.
        momentum: SGD/RMSprop momentum; 0 leaves it out.
        dampening: SGD's dampening.
        nesterov: SGD's Nesterov momentum.
        alpha: RMSprop smoothing.
        centered: centered RMSprop.
        amsgrad: Adam's AMSGrad variant.
        clip_norm: clip gradients to this global 2-norm first
            (``torch.nn.utils.clip_grad_norm_`` semantics), or None.
    """

    name: str = "adam"
    lr: Any = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    alpha: float = 0.99
    centered: bool = False
    amsgrad: bool = False
    clip_norm: float | None = None

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"OptimizerSpec: unknown optimizer '{self.name}'; choose one of {', '.join(OPTIMIZERS)}")
        object.__setattr__(self, "betas", tuple(self.betas))
        if self.clip_norm is not None and (isinstance(self.clip_norm, bool) or not self.clip_norm > 0):
            raise ValueError(f"OptimizerSpec: clip_norm must be > 0 or None, got {self.clip_norm!r}")
        self.make()  # validates every value now, before training starts

    # -- what the functional optimizer is built from -----------------------------------
    def _arguments(self) -> tuple[dict[str, Any], tuple[str, ...]]:
        """The alias's arguments and the names among them that stay static."""
        _, names = OPTIMIZERS[self.name]
        args = {n: getattr(self, n) for n in names}
        static = tuple(n for n in names if n in _FLAGS or (n in _OFF_WHEN_ZERO and args[n] == 0))
        if self.clip_norm is not None:
            args["clip_norm"] = self.clip_norm
        return args, static

    def sweepable(self) -> tuple[str, ...]:
        """Hyper-parameters held as per-seed tensors in the state (``lr``, ``betas``, ...)."""
        args, static = self._arguments()
        return tuple(n for n, v in args.items() if n not in static and not callable(v))

    def make(self) -> GradientTransformation:
        """The functional optimizer (its enabled hyper-parameters in the state)."""
        factory, _ = OPTIMIZERS[self.name]
        if self.clip_norm is not None:
            factory = _clipped(factory)
        args, static = self._arguments()
        return inject_hyperparams(factory, static_args=static)(**args)

    def with_values(self, **values: Any) -> OptimizerSpec:
        """A copy with some hyper-parameters replaced (checked like the original)."""
        known = {f.name for f in fields(self)}
        for k in values:
            if k not in known:
                raise ValueError(f"OptimizerSpec: unknown hyper-parameter '{k}'")
        return replace(self, **values)

    # -- the imperative twin ------------------------------------------------------------
    def lr_at(self, count: int) -> float:
        """The learning rate of the update after ``count`` previous updates."""
        if callable(self.lr):
            return float(self.lr(torch.tensor(count, dtype=torch.int64)))
        return float(self.lr)

    def make_torch(self, params) -> torch.optim.Optimizer:
        """The matching ``torch.optim`` optimizer (single-tensor path). With a schedule, the
        caller sets ``param_groups[0]["lr"] = spec.lr_at(count)`` before each step."""
        params = list(params)
        lr = self.lr_at(0)
        if self.name == "adam":
            return torch.optim.Adam(params, lr, self.betas, self.eps, self.weight_decay, self.amsgrad, foreach=False)
        if self.name == "adamw":
            return torch.optim.AdamW(params, lr, self.betas, self.eps, self.weight_decay, self.amsgrad, foreach=False)
        if self.name == "sgd":
            return torch.optim.SGD(
                params, lr, self.momentum, self.dampening, self.weight_decay, self.nesterov, foreach=False
            )
        return torch.optim.RMSprop(
            params, lr, self.alpha, self.eps, self.weight_decay, self.momentum, self.centered, foreach=False
        )
