"""Unrolled GANs (Metz et al. 2017): G's loss against D after k differentiable look-ahead D updates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch.func import grad_and_value

from funcgan import random as fr
from funcgan.loops.base import Context, Loop, batch_at, draw_disc_inputs, draw_gen_inputs
from funcgan.optim.base import apply_updates
from funcgan.step import PlayerState, apply_gradients
from funcgan.tree import tree_map

__all__ = ["Unrolled"]


def _with_buffers_aux(loss_fn, buffers):
    """``params -> (loss, (buffers, metrics))`` from a loss ``(params, buffers) -> (loss, buffers, metrics)``."""

    def f(params):
        loss, new_buffers, metrics = loss_fn(params, buffers)
        return loss, (new_buffers, metrics)

    return f


@dataclass(frozen=True)
class Unrolled(Loop):
    """D steps as :class:`~funcgan.loops.Alternating`; G's loss is taken against D after ``unroll``
    look-ahead D updates, each a function of G's parameters through the functional optimizer,
    so G's gradient includes how D would respond (the surrogate loss of Metz et al. 2017).

    The look-ahead steps use their own real batches and noise (drawn with the step) and
    the D loss with its penalties. Everything the look-ahead changes is discarded, as the
    paper's code restores D after the G step: each look-ahead forward starts from D's
    and G's buffers as the D phase left them, and the look-ahead D's optimizer state and
    buffers never reach the state. With ``unroll=0`` this is the alternating step, bit
    for bit.

    Attributes:
        unroll: look-ahead D updates (k; 5 in the paper's mixture experiments).
        stop_opt_grad: stop gradients through D's optimizer state (Adam's moments)
            while unrolling; the gradient then flows through D's parameters only.
    """

    unroll: int = 5
    stop_opt_grad: bool = False
    name: ClassVar[str] = "unrolled"

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.unroll, bool) or not isinstance(self.unroll, int) or self.unroll < 0:
            raise ValueError(f"Unrolled: unroll must be an int >= 0, got {self.unroll!r}")

    def draw(self, gan, key, data, dtype):
        k_disc, k_gen, k_unroll, k_net = fr.split(key, 4)
        out = {
            "disc": draw_disc_inputs(self, gan, k_disc, data, dtype, self.n_disc),
            "gen": draw_gen_inputs(self, gan, k_gen, data, dtype, 1),
            "net_key": k_net,
        }
        if self.unroll:
            out["unroll"] = draw_disc_inputs(self, gan, k_unroll, data, dtype, self.unroll)
        return out

    def update(self, gan, state, inputs, lazy=None):
        ctx = Context(gan, self, state, inputs, lazy)
        gen, disc = state.gen, state.disc
        d, g = inputs["disc"], inputs["gen"]
        d_losses, metrics = [], {}
        for i in range(self.n_disc):
            real = batch_at(d["real"], i)
            fake, gbuf = ctx.G(gen.params, gen.buffers, None if d["z"] is None else d["z"][i], real.cond)
            gen = gen._replace(buffers=gbuf)
            disc, loss, m = ctx.update_disc(disc, real, fake, d["noise"][i])
            d_losses.append(loss)
            metrics.update(m)
        real_g = batch_at(g["real"], 0) if "real" in g else None
        z_g = None if g["z"] is None else g["z"][0]
        if not self.unroll:
            gen, disc, g_loss, m = ctx.update_gen(gen, disc, z_g, real_g)
        else:
            gen, disc, g_loss, m = self._unrolled_gen_step(ctx, gen, disc, inputs["unroll"], z_g, real_g)
        metrics.update(m)
        metrics.update({"disc/loss": torch.stack(d_losses).mean(), "gen/loss": g_loss})
        return state._replace(gen=gen, disc=disc), metrics

    def _unrolled_gen_step(self, ctx: Context, gen, disc, u, z_g, real_g):
        tx = ctx.gan.disc_tx
        look_keys = [ctx.key() for _ in range(self.unroll)]
        final_loss_key = ctx.key()

        def loss(gp, gbuf):
            ahead = disc
            for j in range(self.unroll):
                real = batch_at(u["real"], j)
                sub = ctx.with_key(look_keys[j])
                fake, gbuf_j = sub.G(gp, gbuf, None if u["z"] is None else u["z"][j], real.cond)  # differentiable in gp
                d_loss_fn = sub.disc_loss(real, fake, u["noise"][j])
                d_grads, _ = grad_and_value(_with_buffers_aux(d_loss_fn, ahead.buffers), has_aux=True)(ahead.params)
                opt_state = ahead.opt_state
                if self.stop_opt_grad:
                    opt_state = tree_map(lambda x: x.detach() if x.is_floating_point() else x, opt_state)
                updates, opt_state = tx.update(d_grads, opt_state, ahead.params)
                ahead = sub.constrain(PlayerState(apply_updates(ahead.params, updates), ahead.buffers, opt_state))
            value, new_gbuf, (_, metrics) = ctx.with_key(final_loss_key).gen_loss(ahead, z_g, real_g)(gp, gbuf)
            return value, new_gbuf, metrics

        def f(gp):
            value, new_gbuf, metrics = loss(gp, gen.buffers)
            return value, (new_gbuf, metrics)

        grads, (g_loss, (gbuf, metrics)) = grad_and_value(f, has_aux=True)(gen.params)
        gen = apply_gradients(gen._replace(buffers=gbuf), grads, ctx.gan.gen_tx)
        return gen, disc, g_loss, metrics
