"""What every loop is made of: the :class:`Loop` base, the per-step :class:`Context`, and drawing helpers.

A loop separates *drawing* (``loop.draw(gan, key, data, dtype)``: every random
tensor the step needs, from the step's key) from *updating*
(``loop.update(gan, state, inputs, lazy)``: a deterministic function), so that
:mod:`funcgan.testing` can run an imperative reference on exactly the same inputs.

:class:`Context` gives a loop's update the pieces every loop shares, built once so
that any loop accepts any objective, any penalty, networks with buffers and
keyed dropout, and a condition:

* ``ctx.disc_loss(real, fake_x, noise)``: a D loss function ``(params, buffers) ->
  (loss, buffers, aux)``: D on the real batch, then on G's samples (constants), the
  objective, then each penalty's own forward; ``ctx.update_disc`` takes one optimizer
  step on it and applies the constraints (weight clipping);
* ``ctx.gen_loss(disc, z, real)``: G's loss function through D with D's parameters
  fixed; ``ctx.gen_loss_of_fake`` the same as a function of the samples, for loops
  that reuse one G forward (``torch.func.vjp``); ``ctx.update_gen`` one G step;
* ``ctx.key()``: the key of the next network forward (dropout masks); each loss
  function takes its keys when it is built, so evaluating it twice (consensus,
  extragradient) sees the same masks.

Forward order, which fixes how BatchNorm statistics and spectral norm's vectors
evolve (the references follow it): in a D loss, D(real), D(fake), then each
penalty's forward; in a G loss, G(z), then D(real) if the objective needs it, then
D(fake).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch.func import grad_and_value

from funcgan import losses
from funcgan import random as fr
from funcgan.losses import Objective
from funcgan.penalties import Constraint, Penalty
from funcgan.step import GAN, Batch, Data, Metrics, PlayerState, TrainState, apply_gradients, update_player
from funcgan.tree import tree_where

__all__ = ["Loop", "Context", "draw_disc_inputs", "draw_gen_inputs", "batch_at"]


def batch_at(batch: Batch, i: int) -> Batch:
    """The ``i``-th of a stack of batches."""
    return Batch(batch.x[i], None if batch.cond is None else batch.cond[i])


def draw_disc_inputs(loop: Loop, gan: GAN, key: torch.Tensor, data: Data, dtype: torch.dtype, n: int) -> dict:
    """``n`` D steps' inputs: real batches ``(n, B, ...)``, noise ``(n, B, *Z)`` and each penalty's noise."""
    k_real, k_z, k_pen = fr.split(key, 3)
    real = gan.sample_real(k_real, data, (n, gan.batch_size), dtype)
    noise = [
        {p.name: p.draw(fr.fold_in(fr.fold_in(k_pen, i), j), real.x[i]) for j, p in enumerate(loop.loss_penalties)}
        for i in range(n)
    ]
    return {"real": real, "z": gan.noise(k_z, (n, gan.batch_size), dtype), "noise": noise}


def draw_gen_inputs(loop: Loop, gan: GAN, key: torch.Tensor, data: Data, dtype: torch.dtype, n: int) -> dict:
    """``n`` G steps' inputs: noise ``(n, B, *Z)`` and, when G's loss needs a real batch (a relativistic
    objective) or conditions, real batches ``(n, B, ...)``."""
    k_real, k_z = fr.split(key)
    out: dict[str, Any] = {"z": gan.noise(k_z, (n, gan.batch_size), dtype)}
    if loop.objective.gen_needs_real or gan.conditional:
        out["real"] = gan.sample_real(k_real, data, (n, gan.batch_size), dtype)
    return out


@dataclass(frozen=True)
class Loop:
    """An update order with its objective and penalties.

    Attributes:
        objective: the GAN objective (:mod:`funcgan.losses`).
        penalties: :class:`~funcgan.penalties.Penalty` terms added to D's loss and
            :class:`~funcgan.penalties.Constraint` projections after D's updates.
        n_disc: D updates per step. Loops whose own update holds one D update run
            ``n_disc - 1`` extra D updates on fresh batches before it (WGAN's
            ``n_critic``).
    """

    objective: Objective = field(default_factory=losses.nonsaturating)
    penalties: tuple[Penalty | Constraint, ...] = ()
    n_disc: int = 1
    name: ClassVar[str] = "loop"

    def __post_init__(self) -> None:
        if not isinstance(self.objective, Objective):
            raise TypeError(
                f"{type(self).__name__}: objective must be a funcgan.losses.Objective, "
                f"got {type(self.objective).__name__}"
            )
        pens = tuple(self.penalties) if isinstance(self.penalties, (list, tuple)) else (self.penalties,)
        for p in pens:
            if not isinstance(p, (Penalty, Constraint)):
                raise TypeError(
                    f"{type(self).__name__}: penalties must be Penalty or Constraint values, got {type(p).__name__}"
                )
        names = [p.name for p in pens]
        if len(set(names)) != len(names):
            raise ValueError(f"{type(self).__name__}: penalty names must be unique, got {names}")
        object.__setattr__(self, "penalties", pens)
        if isinstance(self.n_disc, bool) or not isinstance(self.n_disc, int) or self.n_disc < 1:
            raise ValueError(f"{type(self).__name__}: n_disc must be an int >= 1, got {self.n_disc!r}")

    # -- what the state carries ---------------------------------------------------------
    @property
    def loss_penalties(self) -> tuple[Penalty, ...]:
        return tuple(p for p in self.penalties if isinstance(p, Penalty))

    @property
    def constraints(self) -> tuple[Constraint, ...]:
        return tuple(p for p in self.penalties if isinstance(p, Constraint))

    def hparams(self) -> dict[str, float]:
        """The loop's per-seed hyper-parameters and their defaults (penalty weights)."""
        return {p.name: float(p.weight) for p in self.penalties}

    def lazy(self) -> dict[str, int]:
        """Lazy penalties (``every > 1``) by name."""
        return {p.name: p.every for p in self.loss_penalties if p.every > 1}

    def lazy_pattern(self, step: int) -> dict[str, bool] | None:
        """Which lazy penalties step ``step`` applies (None when the loop has none)."""
        lazy = self.lazy()
        return {n: step % k == 0 for n, k in lazy.items()} if lazy else None

    def init_extra(self, gen: PlayerState, disc: PlayerState) -> dict[str, Any]:
        """Loop-specific carried values for a fresh run (a fixed structure)."""
        return {}

    def check(self, gan: GAN) -> None:
        """Raise a clear error if this loop cannot train ``gan`` (called when the GAN is built)."""

    # -- the step -------------------------------------------------------------------------
    def draw(self, gan: GAN, key: torch.Tensor, data: Data, dtype: torch.dtype) -> dict[str, Any]:
        raise NotImplementedError

    def update(
        self, gan: GAN, state: TrainState, inputs: dict[str, Any], lazy: dict[str, bool] | None = None
    ) -> tuple[TrainState, Metrics]:
        raise NotImplementedError

    # -- shared pieces ---------------------------------------------------------------------
    def _require_separable(self, gan: GAN) -> None:
        if not self.objective.separable:
            raise ValueError(
                f"{type(self).__name__} steps D on real and generated data separately, which needs an "
                f"objective whose D loss separates; '{self.objective.name}' does not (a relativistic "
                "loss compares real and generated outputs)"
            )

    def draw_warmup(self, gan: GAN, key: torch.Tensor, data: Data, dtype: torch.dtype) -> dict[str, Any]:
        """Inputs of the ``n_disc - 1`` extra D updates (empty for ``n_disc = 1``)."""
        if self.n_disc == 1:
            return {}
        return {"warmup": draw_disc_inputs(self, gan, key, data, dtype, self.n_disc - 1)}

    def warmup(self, ctx: Context, gen: PlayerState, disc: PlayerState, inputs: dict[str, Any]):
        """The ``n_disc - 1`` extra D updates: each on a fresh real batch and fresh (constant) samples."""
        losses_: list[torch.Tensor] = []
        if "warmup" not in inputs:
            return gen, disc, losses_
        w = inputs["warmup"]
        for i in range(self.n_disc - 1):
            real = batch_at(w["real"], i)
            fake, gbuf = ctx.G(gen.params, gen.buffers, None if w["z"] is None else w["z"][i], real.cond)
            gen = gen._replace(buffers=gbuf)
            disc, loss, _ = ctx.update_disc(disc, real, fake, w["noise"][i])
            losses_.append(loss)
        return gen, disc, losses_


class Context:
    """The shared pieces of one step's update (see the module docstring).

    Built inside ``loop.update`` from the GAN, the state and the drawn inputs; a plain
    Python helper during tracing, holding no tensors beyond this step.
    """

    def __init__(
        self,
        gan: GAN,
        loop: Loop,
        state: TrainState,
        inputs: dict[str, Any],
        lazy: dict[str, bool] | None,
        first_key: Any = 0,
    ):
        self.gan, self.loop, self.hp, self.step, self.lazy = gan, loop, state.hparams, state.step, lazy
        self._net_key = inputs["net_key"]
        self._count = first_key  # the index of the next forward's key (a tensor in a phase of a step)
        # keys feed dropout only: networks without in-module randomness need none (and compute none)
        self._keyed = bool(gan.gen_apply.stochastic or gan.disc_apply.stochastic)

    # -- keys and networks -----------------------------------------------------------------
    def with_key(self, net_key: torch.Tensor) -> Context:
        """A context whose forwards draw their keys from ``net_key`` (counter at 0): evaluating the
        same computation twice under ``ctx.with_key(k)`` gives the same dropout masks."""
        sub = object.__new__(Context)
        sub.gan, sub.loop, sub.hp, sub.step, sub.lazy = self.gan, self.loop, self.hp, self.step, self.lazy
        sub._net_key, sub._count, sub._keyed = net_key, 0, self._keyed
        return sub

    def key(self) -> torch.Tensor | None:
        """The key of the next network forward: ``fold_in(net_key, i)`` for the ``i``-th (``None``, and
        nothing computed, when neither network has in-module randomness)."""
        k = fr.fold_in(self._net_key, self._count) if self._keyed else None
        self._count = self._count + 1  # not +=: the counter may be a tensor, never mutated in place
        return k

    def G(self, params, buffers, z, cond, key: torch.Tensor | None = None, train: bool = True):
        """G's forward with the next key (or ``key``); eval mode with ``train=False``."""
        return self.gan.G(params, buffers, z, cond, key=self.key() if key is None else key, train=train)

    def D(self, params, buffers, x, cond, key: torch.Tensor | None = None, train: bool = True):
        """D's forward with the next key (or ``key``); eval mode with ``train=False``."""
        return self.gan.D(params, buffers, x, cond, key=self.key() if key is None else key, train=train)

    # -- penalties -----------------------------------------------------------------------
    def penalty_scale(self, p: Penalty) -> torch.Tensor | None:
        """``weight * every`` on steps the penalty applies, 0 (masked) or ``None`` (statically off) otherwise."""
        weight = self.hp[p.name]
        if p.every == 1:
            return weight
        if self.lazy is not None:
            return weight * p.every if self.lazy.get(p.name, True) else None
        return torch.where(self.step % p.every == 0, weight * p.every, torch.zeros_like(weight))

    def constrain(self, disc: PlayerState) -> PlayerState:
        """D after its constraints (weight clipping)."""
        params = disc.params
        for c in self.loop.constraints:
            params = c.project(params, self.hp[c.name])
        return disc._replace(params=params)

    # -- D -------------------------------------------------------------------------------
    def disc_loss(
        self,
        real: Batch,
        fake_x: torch.Tensor,
        noise: dict[str, Any],
        part: str = "both",
        fake_first: bool = False,
        scale: float = 1.0,
        with_penalties: bool = True,
    ):
        """D's loss ``(params, buffers) -> (loss, buffers, metrics)`` on a real batch and constant samples.

        Args:
            real: the real batch (its condition is given to D for both forwards).
            fake_x: G's samples (constants: the functional detach).
            noise: the penalties' drawn noise, by name.
            part: ``"both"`` (the objective's D loss), ``"real"`` or ``"fake"`` (its
                separate parts, for loops that step on each).
            fake_first: run D on the samples before the real batch (pix2pix's order).
            scale: multiplies the objective's value (pix2pix's 0.5).
            with_penalties: add the penalties (the loop decides which D update gets them).
        """
        obj = self.loop.objective
        k_first, k_second = self.key(), self.key()
        pens = [(p, self.penalty_scale(p)) for p in self.loop.loss_penalties] if with_penalties else []
        pen_keys = [self.key() for _ in pens]
        cond = real.cond

        def loss(params, buffers):
            outs: dict[str, torch.Tensor] = {}
            order = (
                [("fake", fake_x, k_first), ("real", real.x, k_second)]
                if fake_first
                else [("real", real.x, k_first), ("fake", fake_x, k_second)]
            )
            for which, x, k in order:
                if part in ("both", which):
                    outs[which], buffers = self.D(params, buffers, x, cond, k)
            if part == "both":
                value = obj.disc(outs["real"], outs["fake"])
            elif part == "real":
                value = obj.disc_real(outs["real"])
            else:
                value = obj.disc_fake(outs["fake"])
            total = value * scale if scale != 1.0 else value
            metrics: dict[str, torch.Tensor] = {}
            for (p, s), k in zip(pens, pen_keys):
                if s is None:  # a lazy penalty statically off on this step: nothing computed
                    metrics[f"disc/{p.name}"] = torch.zeros_like(total)
                    continue
                disc_fn = lambda x, b, k=k: self.D(params, b, x, cond, k)  # noqa: E731
                pen, new_buffers = p.value(disc_fn, real.x, fake_x, noise[p.name], buffers)
                if p.every > 1 and self.lazy is None:  # masked: an off step's forward leaves no trace
                    buffers = tree_where(self.step % p.every == 0, new_buffers, buffers)
                else:
                    buffers = new_buffers
                total = total + s.to(total.dtype) * pen
                metrics[f"disc/{p.name}"] = pen
            return total, buffers, metrics

        return loss

    def update_disc(
        self, disc: PlayerState, real: Batch, fake_x: torch.Tensor, noise: dict[str, Any], **kwargs: Any
    ) -> tuple[PlayerState, torch.Tensor, Metrics]:
        """One D optimizer step on :meth:`disc_loss`, then the constraints."""
        disc, loss, metrics = update_player(self.disc_loss(real, fake_x, noise, **kwargs), disc, self.gan.disc_tx)
        return self.constrain(disc), loss, metrics

    # -- G -------------------------------------------------------------------------------
    def gen_loss_of_fake(
        self,
        disc: PlayerState,
        real: Batch | None,
        cond: torch.Tensor | None,
        extra: Callable[..., tuple[torch.Tensor, Metrics]] | None = None,
        disc_train: bool = True,
    ):
        """G's objective as a function of its samples: ``fake -> (loss, (disc_buffers, metrics))``,
        with D's parameters fixed (only D's input gradient is ever taken); D in eval mode with
        ``disc_train=False``."""
        obj = self.loop.objective
        k_real, k_fake = self.key(), self.key()
        if obj.gen_needs_real and real is None:
            raise ValueError(f"objective '{obj.name}' needs a real batch in G's loss")

        def loss(fake: torch.Tensor):
            buffers = disc.buffers
            real_out = None
            if obj.gen_needs_real and real is not None:  # checked above: a real batch is given
                real_out, buffers = self.D(disc.params, buffers, real.x, cond, k_real, disc_train)
            fake_out, buffers = self.D(disc.params, buffers, fake, cond, k_fake, disc_train)
            value = obj.gen(real_out, fake_out)
            metrics: dict[str, torch.Tensor] = {"gen/out_max": fake.detach().abs().amax()}
            if extra is not None:
                term, more = extra(fake, real)
                value = value + term
                metrics.update(more)
            return value, (buffers, metrics)

        return loss

    def gen_loss(
        self,
        disc: PlayerState,
        z: torch.Tensor | None,
        real: Batch | None,
        extra: Callable[..., tuple[torch.Tensor, Metrics]] | None = None,
        disc_train: bool = True,
    ):
        """G's loss ``(params, buffers) -> (loss, buffers, (disc_buffers, metrics))``: G(z), then D."""
        cond = real.cond if real is not None else None
        k_gen = self.key()
        of_fake = self.gen_loss_of_fake(disc, real, cond, extra, disc_train)

        def loss(params, buffers):
            fake, buffers = self.G(params, buffers, z, cond, k_gen)
            value, (disc_buffers, metrics) = of_fake(fake)
            return value, buffers, (disc_buffers, metrics)

        return loss

    def update_gen(
        self,
        gen: PlayerState,
        disc: PlayerState,
        z: torch.Tensor | None,
        real: Batch | None,
        extra: Callable[..., tuple[torch.Tensor, Metrics]] | None = None,
        disc_train: bool = True,
    ):
        """One G optimizer step through D (D's parameters constant); returns ``(gen, disc, loss, metrics)``
        with D's buffers as its forwards left them."""
        gen, loss, (disc_buffers, metrics) = update_player(
            self.gen_loss(disc, z, real, extra, disc_train), gen, self.gan.gen_tx
        )
        return gen, disc._replace(buffers=disc_buffers), loss, metrics

    def step_gen_through(
        self,
        gen: PlayerState,
        gen_vjp: Callable,
        fake: torch.Tensor,
        disc: PlayerState,
        real: Batch | None,
        extra: Callable[..., tuple[torch.Tensor, Metrics]] | None = None,
    ):
        """G's step through an earlier forward ``fake`` (kept under ``torch.func.vjp``): D's input
        gradient at ``fake`` pulled back through G. Returns ``(gen, disc, loss, metrics)``."""
        cond = real.cond if real is not None else None
        d_fake, (loss, (disc_buffers, metrics)) = grad_and_value(
            self.gen_loss_of_fake(disc, real, cond, extra), has_aux=True
        )(fake)
        (grads,) = gen_vjp(d_fake)
        gen = apply_gradients(gen, grads, self.gan.gen_tx)
        return gen, disc._replace(buffers=disc_buffers), loss, metrics
