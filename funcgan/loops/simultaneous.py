r"""Simultaneous updates and the schemes built on them: extragradient, optimistic, consensus.

All four start from the *joint gradient field* at a point: D's gradient of its loss
and G's gradient of its loss, both with the other player's parameters where they
are (G's gradient against D *before* D's update). :func:`joint_field` computes it
with one G forward (kept under ``torch.func.vjp``): D's loss on the samples as
constants, and G's loss through D at the same samples.

=================  ===================================================================
``Simultaneous``   both players step on the field at the current point.
``Extragradient``  step both players to an extrapolated point (optimizer states of the
                   extrapolation discarded), then update the original point with the
                   field there (Korpelevich 1976; Gidel et al. 2019). Both evaluations use
                   the same batch.
``Optimistic``     simultaneous, with each player's update :math:`u_t` replaced by
                   :math:`2u_t - u_{t-1}` (optimistic GD, or optimistic Adam with ``adam``;
                   Daskalakis et al. 2018).
``Consensus``      simultaneous on :math:`v + \gamma\nabla\tfrac12\lVert v\rVert^2`, :math:`v` the
                   field (Mescheder et al. 2017); :math:`\gamma` is ``hparams["consensus"]``.
=================  ===================================================================

With ``n_disc > 1`` the scheme's update is preceded by ``n_disc - 1`` plain D updates.
Buffers are threaded through the evaluations in order (extragradient's second
evaluation sees the buffers its first left); consensus' regulariser re-evaluates the
field at the same point, with the same masks, and keeps the first evaluation's buffers
(the imperative code's single forward).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch.func import grad, grad_and_value, vjp

from funcgan import random as fr
from funcgan._checks import check_positive
from funcgan.loops.base import Context, Loop, batch_at, draw_disc_inputs
from funcgan.loops.unrolled import _with_buffers_aux
from funcgan.optim.base import apply_updates
from funcgan.tree import tree_map

__all__ = ["Simultaneous", "Extragradient", "Optimistic", "Consensus", "joint_field"]


def joint_field(ctx: Context, real, z, noise):
    """``field(gen_params, disc_params, gen_buffers, disc_buffers, key) -> (g_grads, d_grads, aux)``.

    ``aux = (d_loss, g_loss, gen_buffers, disc_buffers, metrics)``. The forwards of one
    evaluation draw their dropout keys from ``key``.
    """

    def field(gp, dp, gbuf, dbuf, key):
        sub = ctx.with_key(key)
        k_gen = sub.key()
        fake, gen_vjp, gbuf = vjp(lambda p: sub.G(p, gbuf, z, real.cond, k_gen), gp, has_aux=True)
        d_loss_fn = sub.disc_loss(real, fake, noise)
        d_grads, (d_loss, (dbuf, metrics)) = grad_and_value(_with_buffers_aux(d_loss_fn, dbuf), has_aux=True)(dp)
        disc_now = _Player(dp, dbuf)
        d_fake, (g_loss, (dbuf, m)) = grad_and_value(sub.gen_loss_of_fake(disc_now, real, real.cond), has_aux=True)(
            fake
        )
        (g_grads,) = gen_vjp(d_fake)
        return g_grads, d_grads, (d_loss, g_loss, gbuf, dbuf, {**metrics, **m})

    return field


class _Player:
    """The two fields of a player that ``gen_loss_of_fake`` reads."""

    def __init__(self, params, buffers):
        self.params, self.buffers = params, buffers


def _main_inputs(inputs):
    main = inputs["main"]
    return batch_at(main["real"], 0), (None if main["z"] is None else main["z"][0]), main["noise"][0]


@dataclass(frozen=True)
class Simultaneous(Loop):
    """Both players step on their gradients at the same point (simultaneous gradient descent)."""

    name: ClassVar[str] = "simultaneous"

    def draw(self, gan, key, data, dtype):
        k_main, k_warm, k_net = fr.split(key, 3)
        return {
            "main": draw_disc_inputs(self, gan, k_main, data, dtype, 1),
            "net_key": k_net,
            **self.draw_warmup(gan, k_warm, data, dtype),
        }

    def _updates(self, ctx: Context, gen, disc, state, g_grads, d_grads):
        u_g, gs = ctx.gan.gen_tx.update(g_grads, gen.opt_state, gen.params)
        u_d, ds = ctx.gan.disc_tx.update(d_grads, disc.opt_state, disc.params)
        return u_g, gs, u_d, ds, state.extra

    def _field_grads(self, ctx: Context, gen, disc, state, field):
        return field(gen.params, disc.params, gen.buffers, disc.buffers, ctx.key())

    def update(self, gan, state, inputs, lazy=None):
        ctx = Context(gan, self, state, inputs, lazy)
        gen, disc, _ = self.warmup(ctx, state.gen, state.disc, inputs)
        real, z, noise = _main_inputs(inputs)
        field = joint_field(ctx, real, z, noise)
        g_grads, d_grads, (d_loss, g_loss, gbuf, dbuf, metrics) = self._field_grads(ctx, gen, disc, state, field)
        gen, disc = gen._replace(buffers=gbuf), disc._replace(buffers=dbuf)
        u_g, gs, u_d, ds, extra = self._updates(ctx, gen, disc, state, g_grads, d_grads)
        gen = gen._replace(params=apply_updates(gen.params, u_g), opt_state=gs)
        disc = ctx.constrain(disc._replace(params=apply_updates(disc.params, u_d), opt_state=ds))
        new = state._replace(gen=gen, disc=disc, extra=extra)
        return new, {**metrics, "disc/loss": d_loss, "gen/loss": g_loss}


@dataclass(frozen=True)
class Extragradient(Simultaneous):
    """Extrapolate both players one step, then update the original point with the field there."""

    name: ClassVar[str] = "extragradient"

    def _field_grads(self, ctx, gen, disc, state, field):
        g_grads, d_grads, (d_loss, g_loss, gbuf, dbuf, metrics) = field(
            gen.params, disc.params, gen.buffers, disc.buffers, ctx.key()
        )
        u_g, _ = ctx.gan.gen_tx.update(g_grads, gen.opt_state, gen.params)
        u_d, _ = ctx.gan.disc_tx.update(d_grads, disc.opt_state, disc.params)
        gp_half, dp_half = apply_updates(gen.params, u_g), apply_updates(disc.params, u_d)
        dp_half = ctx.constrain(disc._replace(params=dp_half)).params
        g_grads, d_grads, (_, _, gbuf, dbuf, _) = field(gp_half, dp_half, gbuf, dbuf, ctx.key())
        return g_grads, d_grads, (d_loss, g_loss, gbuf, dbuf, metrics)


@dataclass(frozen=True)
class Optimistic(Simultaneous):
    """Simultaneous, each player's update ``u_t`` applied as ``2 u_t - u_{t-1}`` (``u_0 = 0``)."""

    name: ClassVar[str] = "optimistic"

    def init_extra(self, gen, disc) -> dict[str, Any]:
        return {
            "gen_prev_update": {k: torch.zeros_like(v) for k, v in gen.params.items()},
            "disc_prev_update": {k: torch.zeros_like(v) for k, v in disc.params.items()},
        }

    def _updates(self, ctx, gen, disc, state, g_grads, d_grads):
        u_g, gs, u_d, ds, extra = super()._updates(ctx, gen, disc, state, g_grads, d_grads)
        extra = {**extra, "gen_prev_update": u_g, "disc_prev_update": u_d}
        u_g = tree_map(lambda u, p: 2 * u - p, u_g, state.extra["gen_prev_update"])
        u_d = tree_map(lambda u, p: 2 * u - p, u_d, state.extra["disc_prev_update"])
        return u_g, gs, u_d, ds, extra


@dataclass(frozen=True)
class Consensus(Simultaneous):
    r"""Consensus optimization: both players step on :math:`v + \gamma\nabla\tfrac12\lVert v\rVert^2`.

    Attributes:
        gamma: the default :math:`\gamma` (a per-seed ``hparams["consensus"]``).
    """

    gamma: float = 1.0
    name: ClassVar[str] = "consensus"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("Consensus", "gamma", self.gamma, allow_zero=True)

    def hparams(self):
        return {**super().hparams(), "consensus": float(self.gamma)}

    def _field_grads(self, ctx, gen, disc, state, field):
        key = ctx.key()
        g_grads, d_grads, aux = field(gen.params, disc.params, gen.buffers, disc.buffers, key)

        def half_sq_norm(gp, dp):
            g, d, _ = field(gp, dp, gen.buffers, disc.buffers, key)
            return 0.5 * (sum((v**2).sum() for v in g.values()) + sum((v**2).sum() for v in d.values()))

        r_g, r_d = grad(half_sq_norm, argnums=(0, 1))(gen.params, disc.params)
        gamma = state.hparams["consensus"]
        g_grads = tree_map(lambda a, b: a + gamma.to(a.dtype) * b, g_grads, r_g)
        d_grads = tree_map(lambda a, b: a + gamma.to(a.dtype) * b, d_grads, r_d)
        return g_grads, d_grads, aux
