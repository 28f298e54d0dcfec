"""funcgan: functional GAN training on torch.func.

Networks are pure functions over parameter dicts, the D and G updates are
separate ``torch.func`` grad transforms (the functional ``.detach()``), objectives,
penalties and update orders are values that compose, optimizers are pure
``(init, update)`` pairs that match ``torch.optim``, randomness comes from explicit
keys, and one training step is one pure function that vmaps over thousands of
seeds and compiles once.
"""

import gc as _gc

# The first import of funcgan is mostly torch's: ~10^6 new objects, none of them garbage yet, which
# the cyclic collector would scan over and over as they arrive (~0.08 s of a 1 s import on 2 cores).
# It is paused for the import and restored as it was (it runs again on the next allocation count).
_gc_was_enabled = _gc.isenabled()
_gc.disable()
try:
    from funcgan import (
        guard,
        loops,
        losses,
        metrics,
        nets,
        optim,
        penalties,
        random,
        step,
        sweep,
        systems,
        testing,
        tree,
    )
    from funcgan.loops import (
        Adaptive,
        Alternating,
        Consensus,
        Extragradient,
        Optimistic,
        Pix2Pix,
        ReuseFake,
        Simultaneous,
        Unrolled,
    )
    from funcgan.losses import Objective
    from funcgan.nets import init_params, make_apply
    from funcgan.optim import OptimizerSpec
    from funcgan.step import GAN, Batch, PlayerState, TrainState, generate, init_state, make_train_step
    from funcgan.systems import System, make_system
finally:
    if _gc_was_enabled:
        _gc.enable()
    del _gc_was_enabled
del _gc

__version__ = "0.2.0"

__all__ = [
    "random",
    "optim",
    "nets",
    "losses",
    "penalties",
    "loops",
    "step",
    "tree",
    "sweep",
    "systems",
    "testing",
    "metrics",
    "guard",
    "GAN",
    "System",
    "Batch",
    "PlayerState",
    "TrainState",
    "OptimizerSpec",
    "Objective",
    "Alternating",
    "ReuseFake",
    "Pix2Pix",
    "Adaptive",
    "Simultaneous",
    "Extragradient",
    "Optimistic",
    "Consensus",
    "Unrolled",
    "init_state",
    "make_train_step",
    "generate",
    "init_params",
    "make_apply",
    "make_system",
    "__version__",
]
