"""Hypothesis strategies for random GAN systems: every loop x objective x penalty x network family.

``gans(loop=..., family=...)`` draws a small random :class:`~funcgan.systems.System`:
random widths, depths, activations, batch and latent sizes, optimizers and their
hyper-parameters, an objective the loop accepts, a set of penalties (WGAN-GP, R1,
R2, DRAGAN, weight clipping; some lazy), optional generator EMA, and a network
family:

==============  ==================================================================
``mlp``         MLPs on vectors ``(B, X)``
``conv_bn``     small conv nets with BatchNorm on ``(B, 1, 4, 4)`` images
``sn``          a spectral-norm discriminator (parametrizations.spectral_norm)
``dropout``     MLPs with dropout in both players (keyed masks)
``conditional`` a class-conditional pair (label embedding in G, projection in D)
``pix2pix``     image-to-image pairs for :class:`~funcgan.loops.Pix2Pix`
==============  ==================================================================

Objectives whose D loss ignores a constant shift of D's output (Wasserstein and the
relativistic ones) leave D's output bias with an exactly-zero gradient, computed as
round-off; Adam divides it by ``eps`` and moves the bias by ``lr * noise / eps``, a
different amount in any two implementations. So does every bias that feeds a
piecewise-linear unit (ReLU, leaky ReLU, ELU's linear half, BatchNorm's shift before one)
which all samples of a batch meet in the same linear piece: it too only shifts D's output
(random float64 searches found such runs 1e-10 to 4e-10 apart after a few steps with
``beta1 = 0``). The drawn discriminators for those objectives have no biases at all
(:func:`_without_biases`), so the proofs compare meaningful coordinates only.

Use them to check your own loop the same way funcgan checks its own::

    @given(system=testing.strategies.gans(loop="alternating"))
    def test_mine(system): testing.assert_equivalent(system, imperative_step=my_step)

Needs ``hypothesis``.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st
from torch import nn

from funcgan import loops as L
from funcgan import losses, nets
from funcgan import penalties as P
from funcgan import random as fr
from funcgan.optim import OptimizerSpec
from funcgan.step import GAN
from funcgan.systems.base import System, dataset_sampler

__all__ = [
    "LOOPS",
    "FAMILIES",
    "LOGIT_OBJECTIVES",
    "SHIFT_INVARIANT",
    "optimizer_specs",
    "objectives",
    "penalty_sets",
    "loops",
    "gans",
    "widths",
    "depths",
    "activations",
    "batch_sizes",
    "latent_sizes",
    "learning_rates",
    "betas_pairs",
    "step_counts",
]

LOOPS = tuple(L.LOOPS)
FAMILIES = ("mlp", "conv_bn", "sn", "dropout", "conditional", "pix2pix")
#: every built-in objective on logits (derived, so a new one is drawn by the proofs without a second list)
LOGIT_OBJECTIVES = tuple(name for name, make in losses.OBJECTIVES.items() if make().output == "logits")
#: objectives whose D loss ignores a constant shift of D's output: the output bias' gradient is pure round-off,
#: which Adam amplifies to an lr-sized step (exact in float64, chaotic in float32)
SHIFT_INVARIANT = ("wasserstein", "rsgan", "rasgan", "ralsgan", "rahinge")
widths = st.integers(1, 12)
depths = st.integers(0, 2)
activations = st.sampled_from(["relu", "leaky_relu", "tanh", "elu"])
batch_sizes = st.integers(2, 12)
latent_sizes = st.integers(1, 6)
data_dims = st.integers(1, 5)
#: Adam's first step is lr * g / (|g| + eps), whose derivative in g is at most lr / eps (at g = 0): with
#: lr <= 5e-3 a float64 round-off difference of 1e-16 in a near-zero gradient moves a parameter by at most
#: 5e-11, inside the float64 proofs' 1e-10 (SGD has no such amplification: its rates go to 0.1)
learning_rates = st.floats(1e-4, 5e-3)
betas_pairs = st.tuples(st.floats(0.0, 0.95), st.floats(0.5, 0.9999))
step_counts = st.integers(1, 12)


@st.composite
def optimizer_specs(
    draw, allow_clip: bool = True, names=("adam", "adam", "adam", "sgd", "rmsprop", "adamw")
) -> OptimizerSpec:
    """Adam (mostly), SGD with momentum, RMSprop or AdamW; optionally with clipping and weight decay."""
    name = draw(st.sampled_from(list(names)))
    clip = draw(st.sampled_from([None, 0.5, 1.0])) if allow_clip else None
    # RMSprop's first step g / (0.1 |g| + eps) has derivative 1 / eps at g = 0: a smaller rate (see above)
    lr = {"sgd": draw(st.floats(1e-4, 1e-1)), "rmsprop": draw(st.floats(1e-5, 5e-4))}.get(name, draw(learning_rates))
    momentum = draw(st.sampled_from([0.0, 0.5])) if name in ("sgd", "rmsprop") else 0.0
    return OptimizerSpec(
        name, lr, draw(betas_pairs), momentum=momentum, weight_decay=draw(st.sampled_from([0.0, 1e-2])), clip_norm=clip
    )


@st.composite
def objectives(draw, separable: bool = False, float32: bool = False, probs: bool | None = None) -> losses.Objective:
    """A built-in objective: on logits (any, or separable ones), or the seeds' BCE on probabilities."""
    names = [n for n in LOGIT_OBJECTIVES if not (float32 and n in SHIFT_INVARIANT)]
    if separable:
        names = [n for n in names if losses.objective(n).separable]
    if probs is True:
        return losses.bce_probs()
    if probs is None and draw(st.booleans()) and draw(st.booleans()):
        return losses.bce_probs()
    return losses.objective(draw(st.sampled_from(names)))


@st.composite
def penalty_sets(draw, float32: bool = False) -> tuple:
    """A few penalties with random weights (some lazy) and maybe weight clipping."""
    chosen: list = []
    if draw(st.booleans()):
        chosen.append(P.gradient_penalty(draw(st.sampled_from([0.1, 1.0, 10.0])), every=draw(st.sampled_from([1, 2]))))
    if draw(st.booleans()):
        chosen.append(P.r1(draw(st.sampled_from([0.1, 1.0])), every=draw(st.sampled_from([1, 3]))))
    if draw(st.booleans()) and draw(st.booleans()):
        chosen.append(P.r2(draw(st.sampled_from([0.1, 1.0]))))
    if draw(st.booleans()) and draw(st.booleans()):
        chosen.append(P.dragan(draw(st.sampled_from([0.1, 1.0]))))
    if not float32 and draw(st.booleans()) and draw(st.booleans()):
        chosen.append(P.weight_clipping(draw(st.sampled_from([0.05, 0.5]))))
    return tuple(chosen)


@st.composite
def loops(draw, name: str, objective: losses.Objective, penalties: tuple):
    """A loop of class ``name`` with drawn options."""
    n_disc = draw(st.integers(1, 3))
    common = {"objective": objective, "penalties": penalties, "n_disc": n_disc}
    if name == "alternating":
        return L.Alternating(**common, n_gen=draw(st.integers(1, 2)))
    if name == "reuse_fake":
        return L.ReuseFake(**common, split=objective.separable and draw(st.booleans()))
    if name == "pix2pix":
        return L.Pix2Pix(**common, l1_weight=draw(st.sampled_from([0.0, 1.0, 100.0])))
    if name == "adaptive":
        return L.Adaptive(
            **common,
            max_gen_steps=draw(st.integers(1, 4)),
            d_threshold=draw(st.sampled_from([1.0, 1.75, 10.0])),
            g_threshold=draw(st.sampled_from([0.1, 1.0, 10.0])),
            countdown_scale=draw(st.sampled_from([0.5, 6.0])),
            seed_modes=draw(st.booleans()),
        )
    if name == "consensus":
        return L.Consensus(**common, gamma=draw(st.sampled_from([0.1, 1.0])))
    if name == "unrolled":
        return L.Unrolled(**common, unroll=draw(st.integers(0, 3)), stop_opt_grad=draw(st.booleans()))
    return L.LOOPS[name](**common)


def _without_biases(module: nn.Module) -> nn.Module:
    """``module`` with every layer's ``bias`` removed (Linear, Conv, BatchNorm's shift): for a D under a
    shift-invariant objective, whose biases may only shift its output (see the module docstring)."""
    for m in module.modules():
        if isinstance(getattr(m, "bias", None), nn.Parameter):
            m.register_parameter("bias", None)
    return module


def _mlp(draw, n_in, n_out, out_act=None, dropout=0.0):
    hidden = [draw(widths) for _ in range(draw(depths))]
    if dropout and not hidden:
        hidden = [draw(widths)]
    return nets.mlp(n_in, hidden, n_out, draw(activations), out_act, dropout=dropout)


class _ConvG(nn.Module):
    """z -> (B, 1, 4, 4) through a transposed conv with BatchNorm."""

    def __init__(self, z: int, c: int):
        super().__init__()
        # no bias before BatchNorm (DCGAN's convention): BatchNorm cancels it, its gradient would be round-off
        self.net = nn.Sequential(
            nn.ConvTranspose2d(z, c, 2, 1, 0, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(),
            nn.ConvTranspose2d(c, 1, 3, 1, 0),
            nn.Tanh(),
        )

    def forward(self, z):
        return self.net(z.reshape(z.shape[0], -1, 1, 1))


class _ConvD(nn.Module):
    def __init__(self, c: int, bn: bool, probs: bool):
        super().__init__()
        layers = [
            nn.Conv2d(1, c, 3, 1, 1, bias=not bn),
            *([nn.BatchNorm2d(c)] if bn else []),
            nn.LeakyReLU(0.2),
            nn.Conv2d(c, 1, 4, 1, 0),
            nn.Flatten(),
        ]
        self.net = nn.Sequential(*layers, *([nn.Sigmoid()] if probs else []))

    def forward(self, x):
        return self.net(x)


class _CondG(nn.Module):
    def __init__(self, z: int, k: int, x: int, hidden: int):
        super().__init__()
        self.embed = nn.Embedding(k, 3)
        self.net = nets.mlp(z + 3, [hidden], x, "tanh")

    def forward(self, z, y):
        return self.net(torch.cat([z, self.embed(y)], dim=1))


class _ProjD(nn.Module):
    def __init__(self, x: int, k: int, hidden: int, probs: bool):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(x, hidden), nn.LeakyReLU(0.2))
        self.out = nn.Linear(hidden, 1)
        self.embed = nn.Embedding(k, hidden)
        self.probs = probs

    def forward(self, x, y):
        h = self.body(x)
        o = self.out(h) + (self.embed(y) * h).sum(1, keepdim=True)
        return torch.sigmoid(o) if self.probs else o


class _SND(nn.Module):
    def __init__(self, x: int, hidden: int, probs: bool):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        self.net = nn.Sequential(
            sn(nn.Linear(x, hidden)),
            nn.LeakyReLU(0.2),
            sn(nn.Linear(hidden, 1)),
            *([nn.Sigmoid()] if probs else []),
        )

    def forward(self, x):
        return self.net(x)


@st.composite
def gans(draw, loop: str | None = None, family: str | None = None, float32: bool = False) -> System:
    """A random small GAN system for ``loop`` (any of :data:`LOOPS`) and ``family`` (any of :data:`FAMILIES`)."""
    loop = loop or draw(st.sampled_from(LOOPS))
    family = (
        "pix2pix" if loop == "pix2pix" else (family or draw(st.sampled_from([f for f in FAMILIES if f != "pix2pix"])))
    )
    needs_separable = loop == "adaptive"
    objective = draw(objectives(separable=needs_separable, float32=float32), label="objective")
    probs = objective.output == "probs"
    pens = draw(penalty_sets(float32=float32), label="penalties")
    lp = draw(loops(loop, objective, pens), label="loop")
    B, Z, X = draw(batch_sizes), draw(latent_sizes), draw(data_dims)
    n_data = draw(st.integers(2, 24))
    data_key = fr.key(draw(st.integers(0, 2**31 - 1)))
    gen_opt, disc_opt = draw(optimizer_specs(), label="gen_opt"), draw(optimizer_specs(), label="disc_opt")
    ema = draw(st.sampled_from([None, None, 0.9]))
    common = dict(
        loop=lp,
        batch_size=B,
        gen_opt=gen_opt,
        disc_opt=disc_opt,
        ema=ema,
        ema_start=draw(st.integers(0, 3)),
        name=f"{loop}/{family}",
    )
    scale, shift = draw(st.floats(0.1, 3.0)), draw(st.floats(-2, 2))
    out = "sigmoid" if probs else None
    # D has no biases under a shift-invariant objective (see the module docstring)
    strip = _without_biases if objective.name in SHIFT_INVARIANT else (lambda d: d)
    if family == "pix2pix":
        a = fr.normal(data_key, (n_data, X)) * scale + shift
        b = torch.tanh(a.flip(-1))
        gan = GAN(
            gen=_mlp(draw, X, X),
            disc=strip(nets.ConditionalDiscriminator(_mlp(draw, 2 * X, 1, out))),
            sample_real=dataset_sampler(1, cond_index=0),
            latent_dim=0,
            conditional=True,
            **common,
        )
        return System(gan, (a, b), "custom", 10, "random pix2pix")
    if family == "conv_bn":
        x = torch.tanh(fr.normal(data_key, (n_data, 1, 4, 4)) * scale + shift)
        c = draw(st.integers(1, 4))
        gan = GAN(
            gen=_ConvG(Z, c),
            disc=strip(_ConvD(c, draw(st.booleans()), probs)),
            sample_real=dataset_sampler(0),
            latent_dim=Z,
            **common,
        )
        return System(gan, (x,), "custom", 10, "random conv+BatchNorm")
    x = fr.normal(data_key, (n_data, X)) * scale + shift
    if family == "conditional":
        k = draw(st.integers(2, 4))
        y = fr.randint(fr.fold_in(data_key, 1), (n_data,), 0, k)
        gan = GAN(
            gen=_CondG(Z, k, X, draw(widths)),
            disc=strip(_ProjD(X, k, draw(widths), probs)),
            sample_real=dataset_sampler(0, cond_index=1),
            latent_dim=Z,
            conditional=True,
            **common,
        )
        return System(gan, (x, y), "custom", 10, "random class-conditional")
    if family == "sn":  # a spectral-normed 1x1 weight is +-1 whatever it is: its gradient is round-off
        gan = GAN(
            gen=_mlp(draw, Z, X),
            disc=strip(_SND(X, max(2, draw(widths)), probs)),
            sample_real=dataset_sampler(0),
            latent_dim=Z,
            **common,
        )
        return System(gan, (x,), "custom", 10, "random spectral-norm D")
    p_drop = draw(st.sampled_from([0.25, 0.5])) if family == "dropout" else 0.0
    gan = GAN(
        gen=_mlp(draw, Z, X, dropout=p_drop),
        disc=strip(_mlp(draw, X, 1, out, dropout=p_drop)),
        sample_real=dataset_sampler(0),
        latent_dim=Z,
        **common,
    )
    return System(gan, (x,), "custom", 10, f"random {family}")
