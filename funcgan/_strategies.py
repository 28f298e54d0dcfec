"""Hypothesis strategies for random GAN configurations (``funcgan.testing.strategies``).

``gans(loop)`` draws a small random :class:`~funcgan.systems.System` for one of
the loops (random widths, depths, activations, batch and latent sizes, learning
rates, betas, k and loop options), so that equivalence properties are checked
over many configurations, not only the seeds' own. Needs ``hypothesis``.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from funcgan import nets
from funcgan import random as fr
from funcgan.systems import System, dataset_sampler
from funcgan.train import GAN, Adaptive, Alternating, OptimizerSpec, Pix2Pix, ReuseFake

__all__ = ["LOOPS", "optimizer_specs", "gans", "widths", "depths", "activations", "batch_sizes",
           "latent_sizes", "learning_rates", "betas_pairs", "step_counts"]

LOOPS = ("alternating", "reuse_fake", "pix2pix", "adaptive")
widths = st.integers(1, 16)
depths = st.integers(0, 2)
activations = st.sampled_from(["relu", "leaky_relu", "tanh", "elu"])
batch_sizes = st.integers(1, 16)
latent_sizes = st.integers(1, 8)
data_dims = st.integers(1, 6)
learning_rates = st.floats(1e-4, 1e-1)
betas_pairs = st.tuples(st.floats(0.0, 0.95), st.floats(0.5, 0.9999))
step_counts = st.integers(1, 20)


@st.composite
def optimizer_specs(draw, allow_clip: bool = True) -> OptimizerSpec:
    """Adam (mostly), SGD with momentum, or RMSprop; optionally with clipping."""
    name = draw(st.sampled_from(["adam", "adam", "adam", "sgd", "rmsprop", "adamw"]))
    clip = draw(st.sampled_from([None, 0.5, 1.0])) if allow_clip else None
    lr = draw(learning_rates) if name != "rmsprop" else draw(st.floats(1e-4, 1e-2))
    return OptimizerSpec(name, lr, draw(betas_pairs), momentum=draw(st.sampled_from([0.0, 0.5])) if name != "adam" else 0.0,
                         weight_decay=draw(st.sampled_from([0.0, 1e-2])), clip_norm=clip)


def _mlp(draw, n_in, n_out, out_act):
    hidden = [draw(widths) for _ in range(draw(depths))]
    return nets.mlp(n_in, hidden, n_out, draw(activations), out_act)


@st.composite
def gans(draw, loop: str | None = None) -> System:
    """A random small GAN system for ``loop`` (any of :data:`LOOPS` if None)."""
    loop = loop or draw(st.sampled_from(LOOPS))
    B, Z, X = draw(batch_sizes), draw(latent_sizes), draw(data_dims)
    n_data = draw(st.integers(1, 32))
    data_seed = draw(st.integers(0, 2**31 - 1))
    data = fr.normal(fr.key(data_seed), (n_data, X)) * draw(st.floats(0.1, 3.0)) + draw(st.floats(-2, 2))
    gen_opt, disc_opt = draw(optimizer_specs()), draw(optimizer_specs())
    if loop == "pix2pix":
        target = torch.tanh(data.flip(-1))  # a fixed translation to learn
        gan = GAN(gen=_mlp(draw, X, X, None),
                  disc=nets.ConditionalDiscriminator(_mlp(draw, 2 * X, 1, "sigmoid")),
                  loop=Pix2Pix(), latent_dim=0, batch_size=B, sample_real=dataset_sampler(2),
                  gen_opt=gen_opt, disc_opt=disc_opt,
                  hparams={"l1_weight": draw(st.sampled_from([0.0, 1.0, 100.0]))}, conditional=True, name=loop)
        return System(gan, (data, target), "image", 10, "random pix2pix")
    if loop == "alternating":
        lp = Alternating(n_disc=draw(st.integers(1, 3)))
    elif loop == "reuse_fake":
        lp = ReuseFake()
    elif loop == "adaptive":
        lp = Adaptive(max_gen_steps=draw(st.integers(1, 4)), d_threshold=draw(st.sampled_from([1.0, 1.75, 10.0])),
                      g_threshold=draw(st.sampled_from([0.1, 1.0, 10.0])), countdown_scale=draw(st.sampled_from([0.5, 6.0])))
    else:
        raise ValueError(f"unknown loop {loop}")
    gan = GAN(gen=_mlp(draw, Z, X, None), disc=_mlp(draw, X, 1, "sigmoid"), loop=lp, latent_dim=Z, batch_size=B,
              sample_real=dataset_sampler(1), gen_opt=gen_opt, disc_opt=disc_opt, name=loop)
    return System(gan, (data,), "1d", 10, f"random {loop}")
