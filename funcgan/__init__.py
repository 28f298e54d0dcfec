"""funcgan: functional GAN training on torch.func.

Networks are pure functions over parameter dicts, the D and G updates are
separate ``torch.func`` grad transforms (the functional ``.detach()``), optimizers
are pure ``(init, update)`` pairs that match ``torch.optim``, randomness comes from
explicit keys, and one training step is one pure function that vmaps over
thousands of seeds and compiles once.

Modules:
    random     explicit keys (key, split, fold_in, normal, uniform)
    optim      functional optimizers (sgd, adam, adamw, rmsprop, chain, clipping)
    nets       init_params, make_apply, the seed networks
    losses     GAN objectives
    train      TrainState, GAN, the loops, make_train_step
    systems    the four seed systems
    reference  the imperative loops
    testing    functional-vs-imperative equivalence checks
    sweep      multi-seed sweeps (vmap + compile + chunking)
    dynamics   objectives, gradient penalties and update schemes (Game)
    metrics    mixture metrics
    checkpoint safetensors checkpoints
"""

from funcgan import checkpoint, dynamics, losses, metrics, nets, optim, random, reference, sweep, systems, testing, train, tree
from funcgan.nets import init_params, make_apply
from funcgan.systems import make_system
from funcgan.train import (
    GAN,
    Adaptive,
    Alternating,
    OptimizerSpec,
    Pix2Pix,
    ReuseFake,
    TrainState,
    init_state,
    make_train_step,
)

__version__ = "0.1.0"

__all__ = [
    "random", "optim", "nets", "losses", "train", "systems", "reference", "testing", "sweep", "tree", "dynamics",
    "metrics", "checkpoint",
    "GAN", "TrainState", "OptimizerSpec", "Alternating", "ReuseFake", "Pix2Pix", "Adaptive",
    "init_state", "make_train_step", "init_params", "make_apply", "make_system", "__version__",
]
