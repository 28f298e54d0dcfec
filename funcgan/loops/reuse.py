"""Loops that run G forward once per step and reuse its samples for both players.

``fake = G(z)`` runs once under ``torch.func.vjp``; the D update consumes the
samples as constants, and the G update pulls D's input gradient at the *same*
samples, against the *updated* D, back through that one forward: the ordering of
the pytorch DCGAN example and of seeds 001 and 002.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch.func import vjp

from funcgan import losses
from funcgan import random as fr
from funcgan.loops.base import Context, Loop, batch_at, draw_disc_inputs

__all__ = ["ReuseFake", "Pix2Pix"]


def _draw(loop: Loop, gan, key, data, dtype) -> dict:
    k_main, k_warm, k_net = fr.split(key, 3)
    return {
        "main": draw_disc_inputs(loop, gan, k_main, data, dtype, 1),
        "net_key": k_net,
        **loop.draw_warmup(gan, k_warm, data, dtype),
    }


@dataclass(frozen=True)
class ReuseFake(Loop):
    """One G forward, reused: D on the real batch and on ``fake.detach()``, then G through the same ``fake``.

    With ``split=False`` D takes one optimizer step on ``objective.disc(D(real), D(fake))``
    (the pytorch DCGAN example: ``errD_real.backward(); errD_fake.backward(); optimizerD.step()``).
    With ``split=True`` D takes one step on the real part and then one on the generated
    part of a separable objective (seed 001); the penalties join the second.

    Attributes:
        split: two D optimizer steps (real, then generated) instead of one.
    """

    split: bool = False
    name: ClassVar[str] = "reuse_fake"

    def check(self, gan) -> None:
        if self.split:
            self._require_separable(gan)

    def draw(self, gan, key, data, dtype):
        return _draw(self, gan, key, data, dtype)

    def update(self, gan, state, inputs, lazy=None):
        ctx = Context(gan, self, state, inputs, lazy)
        gen, disc, warm = self.warmup(ctx, state.gen, state.disc, inputs)
        main = inputs["main"]
        real, noise = batch_at(main["real"], 0), main["noise"][0]
        z = None if main["z"] is None else main["z"][0]
        k_gen = ctx.key()
        fake, gen_vjp, gbuf = vjp(lambda p: ctx.G(p, gen.buffers, z, real.cond, k_gen), gen.params, has_aux=True)
        gen = gen._replace(buffers=gbuf)
        metrics = {}
        if self.split:
            disc, loss_real, _ = ctx.update_disc(disc, real, fake, noise, part="real", with_penalties=False)
            disc, loss_fake, metrics = ctx.update_disc(disc, real, fake, noise, part="fake")
            d_loss = loss_real + loss_fake
            metrics = {**metrics, "disc/loss_real": loss_real, "disc/loss_fake": loss_fake}
        else:
            disc, d_loss, metrics = ctx.update_disc(disc, real, fake, noise)
        gen, disc, g_loss, m = ctx.step_gen_through(gen, gen_vjp, fake, disc, real)
        return state._replace(gen=gen, disc=disc), {**metrics, **m, "disc/loss": d_loss, "gen/loss": g_loss}


@dataclass(frozen=True)
class Pix2Pix(Loop):
    """Seed 002's conditional loop (pix2pix's ``optimize_parameters``; Isola et al. 2017).

    ``fake = G(a)`` once; D step on ``disc_scale * objective.disc(D(a, b), D(a, fake))``
    with D run on the generated pair first, as pix2pix's ``backward_D``; then the G step
    on ``objective.gen(., D(a, fake)) + l1_weight * L1(fake, b)`` through the same ``fake``
    against the updated D. ``l1_weight`` lives in ``state.hparams`` (sweepable).

    Attributes:
        disc_scale: the factor of D's objective (pix2pix halves it).
        l1_weight: the default weight of the L1 term (100 in the paper).
    """

    disc_scale: float = 0.5
    l1_weight: float = 100.0
    name: ClassVar[str] = "pix2pix"

    def hparams(self):
        return {**super().hparams(), "l1_weight": float(self.l1_weight)}

    def check(self, gan) -> None:
        if not gan.conditional:
            raise ValueError("Pix2Pix: the GAN must be conditional (G maps a condition image to an image)")

    def draw(self, gan, key, data, dtype):
        return _draw(self, gan, key, data, dtype)

    def update(self, gan, state, inputs, lazy=None):
        ctx = Context(gan, self, state, inputs, lazy)
        gen, disc, warm = self.warmup(ctx, state.gen, state.disc, inputs)
        main = inputs["main"]
        real, noise = batch_at(main["real"], 0), main["noise"][0]
        z = None if main["z"] is None else main["z"][0]
        k_gen = ctx.key()
        fake, gen_vjp, gbuf = vjp(lambda p: ctx.G(p, gen.buffers, z, real.cond, k_gen), gen.params, has_aux=True)
        gen = gen._replace(buffers=gbuf)
        disc, d_loss, metrics = ctx.update_disc(disc, real, fake, noise, fake_first=True, scale=self.disc_scale)
        weight = state.hparams["l1_weight"]

        def l1_term(f, r):
            l1 = losses.l1(f, r.x)
            return weight.to(f.dtype) * l1, {"gen/loss_l1": l1}

        gen, disc, g_loss, m = ctx.step_gen_through(gen, gen_vjp, fake, disc, real, extra=l1_term)
        return state._replace(gen=gen, disc=disc), {**metrics, **m, "disc/loss": d_loss, "gen/loss": g_loss}
