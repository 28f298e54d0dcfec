"""Seed 003's loop: D on real and on generated data as separate steps, and an adaptive G schedule."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from funcgan import losses
from funcgan import random as fr
from funcgan._checks import check_positive
from funcgan.loops.base import Context, Loop, batch_at, draw_disc_inputs, draw_gen_inputs
from funcgan.losses import Objective
from funcgan.tree import tree_where

__all__ = ["Adaptive"]


@dataclass(frozen=True)
class Adaptive(Loop):
    """Seed 003's loop, with its adaptive G schedule written as masks.

    1. D step on the real batch: ``objective.disc_real(D(x))`` (seed 003: clamped logs); step.
    2. D step on detached samples: ``objective.disc_fake(D(G(z)))`` + penalties; step.
    3. G phase. With ``d = loss_real + loss_fake`` and the countdown ``rest_k`` (carried
       in ``state.extra``): if ``d < d_threshold`` and ``rest_k <= 0``, G steps on fresh
       noise (``objective.gen``) while ``|l| < g_threshold`` (``l`` starts at 0, so at
       least one step), at most ``max_gen_steps`` times, and then
       ``rest_k = int(1 + |l| * countdown_scale)``; otherwise ``rest_k`` decreases by one.

    The seed's inner ``while`` has no bound; ``max_gen_steps`` is the bound the
    functional step and its reference share. The seed does not show where ``rest_K``
    decreases nor what ``tmp_loss`` is: here the countdown counts D-only steps
    (decremented on each step without a G update) and ``tmp_loss`` is this step's D
    loss. Under ``vmap`` every seed runs ``max_gen_steps`` masked G updates. Gradient
    clipping belongs to the optimizers (``OptimizerSpec(clip_norm=1.0)``).

    As the seed does, G makes D's samples in eval mode (``G.eval()``) and D judges G's
    samples in eval mode during the G phase (``D.eval()``); this matters only for
    BatchNorm and dropout (``seed_modes=False`` keeps both in train mode).
    """

    objective: Objective = field(default_factory=losses.clamped_log)
    max_gen_steps: int = 5
    d_threshold: float = 1.75
    g_threshold: float = 0.1
    countdown_scale: float = 6.0
    seed_modes: bool = True
    name: ClassVar[str] = "adaptive"

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.max_gen_steps, bool) or not isinstance(self.max_gen_steps, int) or self.max_gen_steps < 1:
            raise ValueError(f"Adaptive: max_gen_steps must be an int >= 1, got {self.max_gen_steps!r}")
        check_positive("Adaptive", "g_threshold", self.g_threshold)
        check_positive("Adaptive", "countdown_scale", self.countdown_scale, allow_zero=True)

    def check(self, gan) -> None:
        self._require_separable(gan)

    def init_extra(self, gen, disc):
        device = next(iter(gen.params.values())).device
        return {"rest_k": torch.zeros((), dtype=torch.int64, device=device)}

    def draw(self, gan, key, data, dtype):
        k_disc, k_gen, k_warm, k_net = fr.split(key, 4)
        return {
            "disc": draw_disc_inputs(self, gan, k_disc, data, dtype, 1),
            "gen": draw_gen_inputs(self, gan, k_gen, data, dtype, self.max_gen_steps),
            "net_key": k_net,
            **self.draw_warmup(gan, k_warm, data, dtype),
        }

    def update(self, gan, state, inputs, lazy=None):
        ctx = Context(gan, self, state, inputs, lazy)
        gen, disc, _ = self.warmup(ctx, state.gen, state.disc, inputs)
        d, g = inputs["disc"], inputs["gen"]
        real, noise = batch_at(d["real"], 0), d["noise"][0]
        disc, loss_real, _ = ctx.update_disc(disc, real, real.x, noise, part="real", with_penalties=False)
        fake, gbuf = ctx.G(
            gen.params, gen.buffers, None if d["z"] is None else d["z"][0], real.cond, train=not self.seed_modes
        )
        gen = gen._replace(buffers=gbuf)
        disc, loss_fake, metrics = ctx.update_disc(disc, real, fake, noise, part="fake")
        d_loss = loss_real + loss_fake
        rest_k = state.extra["rest_k"]
        # thresholds compared in float64, as the imperative loop compares Python floats
        train_g = (d_loss.to(torch.float64) < self.d_threshold) & (rest_k <= 0)
        g_loss = torch.zeros((), dtype=d_loss.dtype, device=d_loss.device)
        n_steps = torch.zeros((), dtype=torch.int64, device=d_loss.device)
        for i in range(self.max_gen_steps):
            active = train_g & (g_loss.to(torch.float64).abs() < self.g_threshold)
            real_g = batch_at(g["real"], i) if "real" in g else None
            new_gen, new_disc, l_i, m = ctx.update_gen(
                gen, disc, None if g["z"] is None else g["z"][i], real_g, disc_train=not self.seed_modes
            )
            gen, disc = tree_where(active, (new_gen, new_disc), (gen, disc))
            g_loss = torch.where(active, l_i, g_loss)
            n_steps = n_steps + active.to(torch.int64)
            metrics.update(m)
        countdown = torch.floor(1.0 + g_loss.abs().to(torch.float64) * self.countdown_scale).to(torch.int64)
        rest_k = torch.where(n_steps > 0, countdown, rest_k - 1)
        new = state._replace(gen=gen, disc=disc, extra={**state.extra, "rest_k": rest_k})
        metrics.update(
            {
                "disc/loss": d_loss,
                "disc/loss_real": loss_real,
                "disc/loss_fake": loss_fake,
                "gen/loss": g_loss,
                "gen/steps": n_steps,
                "disc/rest_k": rest_k,
            }
        )
        return new, metrics
