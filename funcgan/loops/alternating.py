"""Alternating updates: k D steps, then n G steps against the updated D (seed 000's loop, WGAN's n_critic)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from funcgan import random as fr
from funcgan.loops.base import Context, Loop, batch_at, draw_disc_inputs, draw_gen_inputs

__all__ = ["Alternating"]


@dataclass(frozen=True)
class Alternating(Loop):
    """Goodfellow et al. (2014), Algorithm 1, with ``n_disc`` D steps and ``n_gen`` G steps per step.

    Each D step: a fresh real batch and fresh noise; ``fake = G(z)`` is a constant (the
    functional ``fake.detach()``); ``loss = objective.disc(D(real), D(fake)) + penalties``;
    one optimizer step; constraints. Then each G step: fresh noise (and a fresh real
    batch when the objective or a condition needs one); ``objective.gen`` through D
    with D's updated parameters fixed. Seed 000 is ``Alternating(objective=bce_probs())``;
    WGAN-GP is ``Alternating(wasserstein(), (gradient_penalty(10),), n_disc=5)``; the
    two time-scale update rule (TTUR, Heusel et al. 2017) is this loop with different
    learning rates for the two optimizers.

    Attributes:
        n_disc: D steps per step (k).
        n_gen: G steps per step.
    """

    n_gen: int = 1
    name: ClassVar[str] = "alternating"

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.n_gen, bool) or not isinstance(self.n_gen, int) or self.n_gen < 1:
            raise ValueError(f"Alternating: n_gen must be an int >= 1, got {self.n_gen!r}")

    def draw(self, gan, key, data, dtype):
        k_disc, k_gen, k_net = fr.split(key, 3)
        return {
            "disc": draw_disc_inputs(self, gan, k_disc, data, dtype, self.n_disc),
            "gen": draw_gen_inputs(self, gan, k_gen, data, dtype, self.n_gen),
            "net_key": k_net,
        }

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
        g_losses = []
        for j in range(self.n_gen):
            real = batch_at(g["real"], j) if "real" in g else None
            gen, disc, loss, m = ctx.update_gen(gen, disc, None if g["z"] is None else g["z"][j], real)
            g_losses.append(loss)
            metrics.update(m)
        metrics.update({"disc/loss": torch.stack(d_losses).mean(), "gen/loss": torch.stack(g_losses).mean()})
        return state._replace(gen=gen, disc=disc), metrics
