"""Functional optimizers: optax-style gradient transformations that match ``torch.optim``.

Example::

    tx = funcgan.optim.adam(1e-3, betas=(0.5, 0.999))
    opt_state = tx.init(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = funcgan.optim.apply_updates(params, updates)
"""

from funcgan.optim import schedules
from funcgan.optim.alias import adam, adamw, rmsprop, sgd
from funcgan.optim.base import (
    EmptyState,
    GradientTransformation,
    InjectHyperparamsState,
    apply_updates,
    chain,
    identity,
    inject_hyperparams,
)
from funcgan.optim.spec import OPTIMIZERS, OptimizerSpec
from funcgan.optim.transforms import (
    ScaleByAdamState,
    ScaleByRmsState,
    ScaleByScheduleState,
    TraceState,
    add_decayed_weights,
    clip_by_global_norm,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_rms,
    trace,
)

__all__ = [
    "GradientTransformation",
    "EmptyState",
    "InjectHyperparamsState",
    "identity",
    "chain",
    "apply_updates",
    "inject_hyperparams",
    "sgd",
    "adam",
    "adamw",
    "rmsprop",
    "scale_by_adam",
    "trace",
    "scale_by_rms",
    "add_decayed_weights",
    "scale_by_learning_rate",
    "clip_by_global_norm",
    "ScaleByAdamState",
    "TraceState",
    "ScaleByRmsState",
    "ScaleByScheduleState",
    "schedules",
    "OptimizerSpec",
    "OPTIMIZERS",
]
