"""Seed 003's loop: D on real and on generated data as separate steps, and an adaptive G schedule."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from funcgan import losses
from funcgan import random as fr
from funcgan._checks import check_positive
from funcgan.loops.base import Context, Loop, batch_at, draw_disc_inputs, draw_gen_inputs
from funcgan.losses import Objective
from funcgan.step import Batch
from funcgan.tree import tree_where

__all__ = ["Adaptive", "gen_inputs", "pack"]


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

    # The step in three phases, so that a driver can skip the G updates no run makes: ``update`` is
    # begin, then every G step masked, then finish; funcgan.sweep drives the phases itself and stops
    # the G loop on the host once no run is active (one sync per G step).
    def update(self, gan, state, inputs, lazy=None):
        carry = self.begin(gan, state, inputs, lazy)
        for i in range(self.max_gen_steps):
            carry = self.gen_phase(gan, state, gen_inputs(inputs, i), carry, torch.tensor(i), lazy)
        return self.finish(gan, state, carry)

    def _keys_before_gen(self) -> int:
        """Forward keys the D phase takes (the G steps' keys follow, 3 per G step)."""
        per_d = 2 + len(self.loss_penalties)
        return (self.n_disc - 1) * (1 + per_d) + 2 + 1 + per_d

    def begin(self, gan, state, inputs, lazy=None) -> dict[str, Any]:
        """The D phase: warm-up D updates, D on real data, D on G's samples; whether G trains."""
        ctx = Context(gan, self, state, inputs, lazy)
        gen, disc, _ = self.warmup(ctx, state.gen, state.disc, inputs)
        d = inputs["disc"]
        real, noise = batch_at(d["real"], 0), d["noise"][0]
        disc, loss_real, _ = ctx.update_disc(disc, real, real.x, noise, part="real", with_penalties=False)
        fake, gbuf = ctx.G(
            gen.params, gen.buffers, None if d["z"] is None else d["z"][0], real.cond, train=not self.seed_modes
        )
        gen = gen._replace(buffers=gbuf)
        disc, loss_fake, metrics = ctx.update_disc(disc, real, fake, noise, part="fake")
        d_loss = loss_real + loss_fake
        # thresholds compared in float64, as the imperative loop compares Python floats
        train_g = (d_loss.to(torch.float64) < self.d_threshold) & (state.extra["rest_k"] <= 0)
        zero = torch.zeros_like(d_loss)  # per run under vmap (a broadcast constant would change strides later)
        return {
            "gen": gen,
            "disc": disc,
            "train_g": train_g,
            "g_loss": zero,
            "n_steps": torch.zeros_like(state.step),
            "metrics": {
                **metrics,
                "disc/loss": d_loss,
                "disc/loss_real": loss_real,
                "disc/loss_fake": loss_fake,
                "gen/out_max": fake.detach().abs().amax(),
            },
        }

    def active(self, carry: dict[str, Any]) -> torch.Tensor:
        """Whether a run makes the next G step: G trains and ``|l| < g_threshold`` so far."""
        return carry["train_g"] & (carry["g_loss"].to(torch.float64).abs() < self.g_threshold)

    def gen_phase(self, gan, state, inputs_i, carry, i, lazy=None) -> dict[str, Any]:
        """G step ``i`` (a 0-d tensor), applied where :meth:`active`."""
        ctx = Context(
            gan, self, state, {"net_key": inputs_i["net_key"]}, lazy, first_key=self._keys_before_gen() + 3 * i
        )
        active = self.active(carry)
        gen, disc = carry["gen"], carry["disc"]
        new_gen, new_disc, g_loss, _ = ctx.update_gen(
            gen, disc, inputs_i["z"], inputs_i.get("real"), disc_train=not self.seed_modes
        )
        gen, disc = tree_where(active, (new_gen, new_disc), (gen, disc))
        return {
            **carry,
            "gen": gen,
            "disc": disc,
            "g_loss": torch.where(active, g_loss, carry["g_loss"]),
            "n_steps": carry["n_steps"] + active.to(torch.int64),
        }

    def finish(self, gan, state, carry) -> tuple[Any, dict[str, torch.Tensor]]:
        """The countdown and the step's metrics."""
        g_loss, n_steps, rest_k = carry["g_loss"], carry["n_steps"], state.extra["rest_k"]
        countdown = torch.floor(1.0 + g_loss.abs().to(torch.float64) * self.countdown_scale).to(torch.int64)
        rest_k = torch.where(n_steps > 0, countdown, rest_k - 1)
        new = state._replace(gen=carry["gen"], disc=carry["disc"], extra={**state.extra, "rest_k": rest_k})
        return new, {**carry["metrics"], "gen/loss": g_loss, "gen/steps": n_steps, "disc/rest_k": rest_k}


def _take(x: torch.Tensor, i: Any) -> torch.Tensor:
    """``x[i]``; for a tensor ``i`` by ``index_select`` (no data-dependent indexing under compile)."""
    return x.index_select(0, i.reshape(1).to(torch.int64))[0] if isinstance(i, torch.Tensor) else x[i]


def gen_inputs(inputs: dict[str, Any], i: Any) -> dict[str, Any]:
    """The inputs of G step ``i``: its noise, its real batch (when drawn) and the step's forward key.

    ``inputs`` is the step's drawn inputs, or their :func:`pack` (no ``None`` leaves, for ``vmap``)."""
    if "gen" not in inputs:  # packed
        out: dict[str, Any] = {"z": _take(inputs["z"], i) if "z" in inputs else None, "net_key": inputs["net_key"]}
        if "real_x" in inputs:
            cond = _take(inputs["real_cond"], i) if "real_cond" in inputs else None
            out["real"] = Batch(_take(inputs["real_x"], i), cond)
        return out
    g = inputs["gen"]
    out = {"z": None if g["z"] is None else _take(g["z"], i), "net_key": inputs["net_key"]}
    if "real" in g:
        out["real"] = Batch(_take(g["real"].x, i), None if g["real"].cond is None else _take(g["real"].cond, i))
    return out


def pack(inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """What the G steps need of the drawn inputs, without ``None`` leaves (``vmap`` returns tensors only)."""
    g = inputs["gen"]
    out = {"net_key": inputs["net_key"]}
    if g["z"] is not None:
        out["z"] = g["z"]
    if "real" in g:
        out["real_x"] = g["real"].x
        if g["real"].cond is not None:
            out["real_cond"] = g["real"].cond
    return out
