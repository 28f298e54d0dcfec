r"""The training step: a GAN's D and G updates as separate ``torch.func`` grad transforms.

One step is one pure function::

    state, metrics = step(state, data)

``state`` is a :class:`TrainState` (both players' parameters, buffers and
optimizer states, the run's key and the step count); ``data`` is the shared,
read-only data set (a tuple of tensors, empty for generated data). The step draws
its randomness from ``fold_in(state.key, state.step)``, so step ``t`` of a run
depends only on the run's key and ``t``: the same run alone, in a sweep, or
resumed from a checkpoint.

**The functional detach.** The D update is ``grad`` with respect to D's
parameters only; G's samples enter it as plain tensors, which is what
``fake.detach()`` means in the imperative loop. The G update is ``grad`` with
respect to G's parameters only: it differentiates *through* D (its input
gradient) but D's parameters are closed-over constants, so no gradient is ever
computed for them (Lua Torch's ``updateGradInput`` without ``accGradParameters``).
Where the imperative loop reuses one ``fake`` batch for both updates (seeds 001
and 002), G runs forward once under ``torch.func.vjp``; the D update consumes the
output, and the G update pulls the input gradient of the updated D back through
that same forward.

**Loops.** Each seed tutorial's loop is a named :class:`Loop`:

======================  ======================================================
``alternating``         seed 000 (and k D steps per G step): D on real + fresh
                        detached fake in one optimizer step; G on fresh noise.
``reuse_fake``          seed 001: one G forward; D step on real alone, D step on
                        the detached fake, then G through the same fake.
``pix2pix``             seed 002: conditional; D loss 0.5 (BCE fake + BCE real);
                        G loss BCE + lambda L1, through the same fake.
``adaptive``            seed 003: D real step, D fake step (each its own
                        optimizer step), clamped logs, clipping, and G trained
                        only when D is doing well, as masks.
======================  ======================================================

Each loop separates *drawing* (``loop.draw(gan, key, data)``: every random tensor
the step needs) from *updating* (``loop.update(gan, state, inputs)``: a
deterministic function), so :mod:`funcgan.reference` can run the imperative loop
on exactly the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, NamedTuple

import torch
from torch import nn
from torch.func import grad_and_value, vjp

from funcgan import losses as L
from funcgan import nets
from funcgan import random as fr
from funcgan._checks import check_positive
from funcgan.optim import transforms as T
from funcgan.optim.base import GradientTransformation, apply_updates, chain, inject_hyperparams
from funcgan.tree import tree_where

__all__ = [
    "TrainState",
    "OptimizerSpec",
    "GAN",
    "Loop",
    "Alternating",
    "ReuseFake",
    "Pix2Pix",
    "Adaptive",
    "init_state",
    "make_train_step",
    "update_player",
    "generate",
    "update_ema",
    "step_key",
    "Metrics",
]

Metrics = dict[str, torch.Tensor]
Data = tuple[torch.Tensor, ...]


class TrainState(NamedTuple):
    """Everything that changes during training, as tensors (stackable over seeds).

    Attributes:
        gen_params, disc_params: parameter dicts keyed like ``named_parameters()``.
        gen_buffers, disc_buffers: buffer dicts (BatchNorm statistics); often empty.
        gen_opt_state, disc_opt_state: the functional optimizers' states (with
            their hyper-parameters inside, see :class:`OptimizerSpec`).
        key: this run's key ``(2,)``; step ``t`` draws from ``fold_in(key, t)``.
        step: int64 0-d, the number of steps taken.
        extra: loop-specific carried values (seed 003's countdown), 0-d tensors.
        hparams: loss hyper-parameters (e.g. ``l1_weight``), float64 0-d tensors.
        gen_ema: an exponential moving average of G's parameters (Polyak
            averaging) when ``gan.ema_decay`` is set, else ``{}``; evaluate with it.
    """

    gen_params: nets.Params
    gen_buffers: nets.Buffers
    gen_opt_state: Any
    disc_params: nets.Params
    disc_buffers: nets.Buffers
    disc_opt_state: Any
    key: torch.Tensor
    step: torch.Tensor
    extra: dict[str, torch.Tensor]
    hparams: dict[str, torch.Tensor]
    gen_ema: dict[str, torch.Tensor] = {}


# ----------------------------------------------------------------------------- optimizers


@dataclass(frozen=True)
class OptimizerSpec:
    """One player's optimizer, buildable both functionally and as ``torch.optim``.

    The functional form holds ``lr``, ``betas``/``alpha``/``momentum``, ``eps``,
    ``weight_decay`` and ``clip_norm`` in its state (``inject_hyperparams``), so a
    sweep can give every seed its own values in one compiled program. A
    hyper-parameter that is off in the spec (``clip_norm=None``,
    ``weight_decay=0``) is left out of the chain and cannot be swept.

    Attributes:
        name: ``"adam"``, ``"adamw"``, ``"sgd"`` or ``"rmsprop"``.
        lr: learning rate (> 0).
        betas: Adam's betas.
        eps: denominator epsilon (Adam, RMSprop).
        weight_decay: L2 (decoupled for AdamW).
        momentum: SGD/RMSprop momentum.
        alpha: RMSprop smoothing.
        clip_norm: clip gradients to this global 2-norm first
            (``torch.nn.utils.clip_grad_norm_`` semantics), or None.
    """

    name: str = "adam"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.0
    alpha: float = 0.99
    clip_norm: float | None = None

    def __post_init__(self) -> None:
        if self.name not in ("adam", "adamw", "sgd", "rmsprop"):
            raise ValueError(f"OptimizerSpec: unknown optimizer '{self.name}'; choose adam, adamw, sgd or rmsprop")
        self.make()  # validates every value now, before training starts

    def _factory(self) -> Callable[..., GradientTransformation]:
        name, clip, wd, mom = self.name, self.clip_norm is not None, self.weight_decay != 0, self.momentum != 0

        def factory(lr, betas, eps, weight_decay, momentum, alpha, clip_norm):
            parts = [T.clip_by_global_norm(clip_norm)] if clip else []
            if name in ("adam", "adamw"):
                if name == "adam" and wd:
                    parts.append(T.add_decayed_weights(weight_decay))
                parts.append(T.scale_by_adam(betas[0], betas[1], eps, learning_rate=lr,
                                             decoupled_weight_decay=weight_decay if name == "adamw" else 0.0))
            else:
                if wd:
                    parts.append(T.add_decayed_weights(weight_decay))
                if name == "rmsprop":
                    parts.append(T.scale_by_rms(alpha, eps))
                if mom:
                    parts.append(T.trace(momentum))
                parts.append(T.scale_by_learning_rate(lr))
            return chain(*parts)

        factory.__name__ = name
        return factory

    def make(self) -> GradientTransformation:
        """The functional optimizer (hyper-parameters in the state)."""
        return inject_hyperparams(self._factory())(
            lr=self.lr, betas=tuple(self.betas), eps=self.eps, weight_decay=self.weight_decay,
            momentum=self.momentum, alpha=self.alpha, clip_norm=self.clip_norm if self.clip_norm is not None else 1.0,
        )

    def make_torch(self, params) -> torch.optim.Optimizer:
        """The matching ``torch.optim`` optimizer (single-tensor path)."""
        params = list(params)
        if self.name == "adam":
            return torch.optim.Adam(params, self.lr, tuple(self.betas), self.eps, self.weight_decay, foreach=False)
        if self.name == "adamw":
            return torch.optim.AdamW(params, self.lr, tuple(self.betas), self.eps, self.weight_decay, foreach=False)
        if self.name == "sgd":
            return torch.optim.SGD(params, self.lr, self.momentum, 0.0, self.weight_decay, foreach=False)
        return torch.optim.RMSprop(params, self.lr, self.alpha, self.eps, self.weight_decay, self.momentum, foreach=False)


# ----------------------------------------------------------------------------- the GAN


@dataclass(frozen=True, eq=False)
class GAN:
    """A GAN problem: the two networks, their optimizers, the loop and the data sampler.

    Attributes:
        gen, disc: skeleton modules (never trained in place).
        loop: which update scheme (a :class:`Loop`).
        latent_dim: size of G's noise input (0 for a purely conditional G).
        batch_size: examples per D and G batch.
        sample_real: ``sample_real(key, data, batch_shape, dtype) -> tuple`` of
            real tensors of ``dtype`` with leading ``batch_shape`` (for a
            conditional problem, ``(condition, target)``).
        gen_opt, disc_opt: the players' optimizers.
        hparams: loss hyper-parameters, carried in the state (sweepable).
        conditional: G maps a condition to an image and D scores (condition, image).
        name: a label.
        ema_decay: if set, keep ``state.gen_ema``, an exponential moving average
            of G's parameters with this decay (Polyak averaging, as in Karras et al.
            2018 and Yazici et al. 2019), starting at step ``ema_start`` (before
            it, the average equals G's parameters).
        ema_start: the first step that averages.
    """

    gen: nn.Module
    disc: nn.Module
    loop: "Loop"
    latent_dim: int
    batch_size: int
    sample_real: Callable[[torch.Tensor, Data, tuple[int, ...], torch.dtype], tuple[torch.Tensor, ...]]
    gen_opt: OptimizerSpec = field(default_factory=OptimizerSpec)
    disc_opt: OptimizerSpec = field(default_factory=OptimizerSpec)
    hparams: dict[str, float] = field(default_factory=dict)
    conditional: bool = False
    name: str = "gan"
    ema_decay: float | None = None
    ema_start: int = 0

    def __post_init__(self) -> None:
        if self.ema_decay is not None:
            check_positive("GAN", "ema_decay", self.ema_decay)
            if self.ema_decay >= 1:
                raise ValueError(f"GAN: ema_decay must be in (0, 1), got {self.ema_decay}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"GAN: batch_size must be an int >= 1, got {self.batch_size!r}")
        if not isinstance(self.latent_dim, int) or self.latent_dim < 0:
            raise ValueError(f"GAN: latent_dim must be an int >= 0, got {self.latent_dim!r}")
        object.__setattr__(self, "gen_apply", nets.make_apply(self.gen))
        object.__setattr__(self, "disc_apply", nets.make_apply(self.disc))
        object.__setattr__(self, "gen_tx", self.gen_opt.make())
        object.__setattr__(self, "disc_tx", self.disc_opt.make())

    def with_options(self, **changes: Any) -> "GAN":
        """A copy with some fields replaced (e.g. ``loop=Alternating(n_disc=5)``)."""
        return replace(self, **changes)

    # -- the network calls every loop uses ------------------------------------------------
    def G(self, gp, gb, inp):
        return self.gen_apply(gp, gb, inp)

    def D(self, dp, db, real_or_pair):
        return self.disc_apply(dp, db, *real_or_pair)


def update_player(
    loss_fn: Callable[[nets.Params], tuple[torch.Tensor, Any]],
    params: nets.Params,
    opt_state: Any,
    tx: GradientTransformation,
) -> tuple[nets.Params, Any, torch.Tensor, Any]:
    """One optimizer step of one player: ``grad`` w.r.t. ``params`` only.

    Args:
        loss_fn: ``params -> (loss, aux)``; everything else it uses is a constant.
        params, opt_state, tx: the player's parameters, optimizer state and optimizer.

    Returns:
        ``(new_params, new_opt_state, loss, aux)`` where ``loss`` is the value at
        the *old* parameters (as ``loss.backward(); opt.step()`` reports it).
    """
    grads, (loss, aux) = grad_and_value(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return apply_updates(params, updates), opt_state, loss, aux


def _step_from_gradients(grads, params, opt_state, tx):
    updates, opt_state = tx.update(grads, opt_state, params)
    return apply_updates(params, updates), opt_state


# ----------------------------------------------------------------------------- loops


class Loop:
    """An update scheme: ``draw`` the step's random inputs, then ``update`` deterministically."""

    name = "loop"

    def init_extra(self, device: torch.device, gen_params: nets.Params, disc_params: nets.Params) -> dict[str, Any]:
        """Loop-specific carried values (tensors) for a fresh run; the structure must not
        change during training (vmap and compile need a fixed state layout)."""
        return {}

    def draw(self, gan: GAN, key: torch.Tensor, data: Data, dtype: torch.dtype) -> dict[str, Any]:
        raise NotImplementedError

    def update(self, gan: GAN, state: TrainState, inputs: dict[str, Any]) -> tuple[TrainState, Metrics]:
        raise NotImplementedError


def _noise(key, shape, dtype):
    return fr.normal(key, shape, dtype)


@dataclass(frozen=True)
class Alternating(Loop):
    """Seed 000's loop, generalised to ``n_disc`` D steps per G step.

    Each D step: a fresh real batch and a fresh noise batch; ``fake = G(z)`` is a
    constant (detached); ``loss = disc_loss(D(real), D(fake))``; one optimizer step.
    Then one G step on fresh noise: ``gen_loss(D(G(z')))`` with D's updated parameters.

    Attributes:
        n_disc: D steps per G step (k in Goodfellow et al. 2014, Algorithm 1).
        disc_loss: ``(real_out, fake_out) -> loss`` (default ``BCE(real,1) + BCE(fake,0)``).
        gen_loss: ``fake_out -> loss`` (default non-saturating BCE against label 1).
    """

    n_disc: int = 1
    disc_loss: Callable = L.disc_bce
    gen_loss: Callable = L.gen_bce_nonsaturating
    name = "alternating"

    def __post_init__(self):
        if not isinstance(self.n_disc, int) or self.n_disc < 1:
            raise ValueError(f"Alternating: n_disc must be an int >= 1, got {self.n_disc!r}")

    def draw(self, gan, key, data, dtype):
        k_real, k_zd, k_zg = fr.split(key, 3)
        B, Z, k = gan.batch_size, gan.latent_dim, self.n_disc
        return {
            "real": gan.sample_real(k_real, data, (k, B), dtype),  # tuple of (k, B, ...)
            "z_disc": _noise(k_zd, (k, B, Z), dtype),  # (k, B, Z)
            "z_gen": _noise(k_zg, (B, Z), dtype),  # (B, Z)
        }

    def update(self, gan, s, inputs):
        gp, gb, dp, db, ds = s.gen_params, s.gen_buffers, s.disc_params, s.disc_buffers, s.disc_opt_state
        d_losses = []
        for i in range(self.n_disc):
            real = tuple(r[i] for r in inputs["real"])
            fake, gb = gan.G(gp, gb, inputs["z_disc"][i])  # a constant for the D update

            def disc_loss(p, real=real, fake=fake, db=db):
                r_out, b = gan.D(p, db, real)
                f_out, b = gan.D(p, b, (fake,))
                return self.disc_loss(r_out, f_out), b

            dp, ds, d_loss, db = update_player(disc_loss, dp, ds, gan.disc_tx)
            d_losses.append(d_loss)

        def gen_loss(p):
            fake, new_gb = gan.G(p, gb, inputs["z_gen"])
            out, new_db = gan.D(dp, db, (fake,))  # dp: a constant, no D gradient
            return self.gen_loss(out), (new_gb, new_db)

        gp, gs, g_loss, (gb, db) = update_player(gen_loss, gp, s.gen_opt_state, gan.gen_tx)
        new = s._replace(gen_params=gp, gen_buffers=gb, gen_opt_state=gs, disc_params=dp, disc_buffers=db,
                         disc_opt_state=ds)
        return new, {"disc/loss": torch.stack(d_losses).mean(), "gen/loss": g_loss}


@dataclass(frozen=True)
class ReuseFake(Loop):
    """Seed 001's loop: one G forward per step, reused by both players.

    1. D step on the real batch alone (``BCE(D(x), 1)``), its own optimizer step.
    2. ``fake = G(z)`` (one forward, kept under ``vjp``); D step on the detached
       fake (``BCE(D(fake), 0)``), its own optimizer step.
    3. G step through the same ``fake`` against the updated D (``BCE(D(fake), 1)``).
    """

    name = "reuse_fake"

    def draw(self, gan, key, data, dtype):
        k_real, k_z = fr.split(key, 2)
        return {"real": gan.sample_real(k_real, data, (gan.batch_size,), dtype),
                "z": _noise(k_z, (gan.batch_size, gan.latent_dim), dtype)}

    def update(self, gan, s, inputs):
        gb0 = s.gen_buffers

        def d_real(p):
            out, b = gan.D(p, s.disc_buffers, inputs["real"])
            return L.bce(out, 1.0), b

        dp, ds, loss_real, db = update_player(d_real, s.disc_params, s.disc_opt_state, gan.disc_tx)
        fake, gen_vjp, gb = vjp(lambda p: gan.G(p, gb0, inputs["z"]), s.gen_params, has_aux=True)

        def d_fake(p):
            out, b = gan.D(p, db, (fake,))
            return L.bce(out, 0.0), b

        dp, ds, loss_fake, db = update_player(d_fake, dp, ds, gan.disc_tx)

        def g_of_fake(f):  # D's input gradient only (updateGradInput)
            out, b = gan.D(dp, db, (f,))
            return L.bce(out, 1.0), b

        d_fake_grad, (g_loss, db) = grad_and_value(g_of_fake, has_aux=True)(fake)
        (gen_grads,) = gen_vjp(d_fake_grad)  # G's backward through the same forward
        gp, gs = _step_from_gradients(gen_grads, s.gen_params, s.gen_opt_state, gan.gen_tx)
        new = s._replace(gen_params=gp, gen_buffers=gb, gen_opt_state=gs, disc_params=dp, disc_buffers=db,
                         disc_opt_state=ds)
        return new, {"disc/loss": loss_real + loss_fake, "disc/loss_real": loss_real,
                     "disc/loss_fake": loss_fake, "gen/loss": g_loss}


@dataclass(frozen=True)
class Pix2Pix(Loop):
    """Seed 002's conditional loop (pix2pix's ``optimize_parameters``).

    ``fake = G(a)`` once; D step on ``0.5 * (BCE(D(a, fake.detach()), 0) + BCE(D(a, b), 1))``;
    then G step on ``BCE(D(a, fake), 1) + l1_weight * L1(fake, b)`` through the same
    ``fake`` against the updated D. ``l1_weight`` lives in ``state.hparams``.
    """

    name = "pix2pix"

    def draw(self, gan, key, data, dtype):
        return {"real": gan.sample_real(key, data, (gan.batch_size,), dtype)}  # (condition, target)

    def update(self, gan, s, inputs):
        cond, target = inputs["real"]
        fake, gen_vjp, gb = vjp(lambda p: gan.G(p, s.gen_buffers, cond), s.gen_params, has_aux=True)

        def d_loss(p):
            f_out, b = gan.D(p, s.disc_buffers, (cond, fake))
            r_out, b = gan.D(p, b, (cond, target))
            return (L.bce(f_out, 0.0) + L.bce(r_out, 1.0)) * 0.5, b

        dp, ds, loss_d, db = update_player(d_loss, s.disc_params, s.disc_opt_state, gan.disc_tx)
        l1_weight = s.hparams["l1_weight"]

        def g_of_fake(f):
            out, b = gan.D(dp, db, (cond, f))
            gan_loss = L.bce(out, 1.0)
            l1 = L.l1(f, target)
            return gan_loss + l1_weight.to(f.dtype) * l1, (b, gan_loss, l1)

        d_fake_grad, (g_loss, (db, gan_loss, l1)) = grad_and_value(g_of_fake, has_aux=True)(fake)
        (gen_grads,) = gen_vjp(d_fake_grad)
        gp, gs = _step_from_gradients(gen_grads, s.gen_params, s.gen_opt_state, gan.gen_tx)
        new = s._replace(gen_params=gp, gen_buffers=gb, gen_opt_state=gs, disc_params=dp, disc_buffers=db,
                         disc_opt_state=ds)
        return new, {"disc/loss": loss_d, "gen/loss": g_loss, "gen/loss_gan": gan_loss, "gen/loss_l1": l1}


@dataclass(frozen=True)
class Adaptive(Loop):
    """Seed 003's loop, with its adaptive G schedule written as masks.

    1. D step on real data: ``-mean(log(clamp(D(x), 1e-3, 1)))``; clip; step.
    2. D step on detached fakes: ``-mean(log(1 - clamp(D(G(z)), 0, 1 - 1e-3)))``; clip; step.
    3. G phase. With ``d = loss_real + loss_fake`` and the countdown ``rest_k``
       (carried in ``state.extra``): if ``d < d_threshold`` and ``rest_k <= 0``,
       G steps on fresh noise with the saturating loss ``l = mean(log(1 - clamp(D(G(z)), 0, 1 - 1e-3)))``
       (clip; step) while ``|l| < g_threshold`` (``l`` starts at 0, so at least one
       step), at most ``max_gen_steps`` times, and then ``rest_k = int(1 + |l| * countdown_scale)``;
       otherwise ``rest_k`` decreases by one.

    The seed's inner ``while`` has no bound; ``max_gen_steps`` is the bound that the
    functional step and :mod:`funcgan.reference` share. The seed does not show where
    ``rest_K`` is decremented nor what ``tmp_loss`` is: here the countdown counts
    D-only iterations (decremented on each step without a G update) and
    ``tmp_loss`` is this step's D loss (its expected value at equilibrium is log 4).
    Under ``vmap`` the G phase runs ``max_gen_steps`` masked G updates for every seed.

    The gradient clipping belongs to the optimizers (``OptimizerSpec(clip_norm=1.0)``).
    """

    max_gen_steps: int = 5
    d_threshold: float = 1.75
    g_threshold: float = 0.1
    countdown_scale: float = 6.0
    name = "adaptive"

    def __post_init__(self):
        if not isinstance(self.max_gen_steps, int) or self.max_gen_steps < 1:
            raise ValueError(f"Adaptive: max_gen_steps must be an int >= 1, got {self.max_gen_steps!r}")
        check_positive("Adaptive", "g_threshold", self.g_threshold)

    def init_extra(self, device, gen_params, disc_params):
        return {"rest_k": torch.zeros((), dtype=torch.int64, device=device)}

    def draw(self, gan, key, data, dtype):
        k_real, k_zd, k_zg = fr.split(key, 3)
        B, Z = gan.batch_size, gan.latent_dim
        return {"real": gan.sample_real(k_real, data, (B,), dtype),
                "z_disc": _noise(k_zd, (B, Z), dtype),
                "z_gen": _noise(k_zg, (self.max_gen_steps, B, Z), dtype)}  # (max_gen_steps, B, Z)

    def update(self, gan, s, inputs):
        def d_real(p):
            out, b = gan.D(p, s.disc_buffers, inputs["real"])
            return L.disc_clamped_log_real(out), b

        dp, ds, loss_real, db = update_player(d_real, s.disc_params, s.disc_opt_state, gan.disc_tx)
        fake, gb = gan.G(s.gen_params, s.gen_buffers, inputs["z_disc"])  # detached: a constant

        def d_fake(p):
            out, b = gan.D(p, db, (fake,))
            return L.disc_clamped_log_fake(out), b

        dp, ds, loss_fake, db = update_player(d_fake, dp, ds, gan.disc_tx)
        d_loss = loss_real + loss_fake
        rest_k = s.extra["rest_k"]
        # thresholds compared in float64, as the imperative loop compares Python floats
        train_g = (d_loss.to(torch.float64) < self.d_threshold) & (rest_k <= 0)

        gp, gs = s.gen_params, s.gen_opt_state
        l = torch.zeros((), dtype=d_loss.dtype, device=d_loss.device)
        n_steps = torch.zeros((), dtype=torch.int64, device=d_loss.device)
        for i in range(self.max_gen_steps):
            active = train_g & (l.to(torch.float64).abs() < self.g_threshold)

            def g_loss(p, z=inputs["z_gen"][i], gb=gb, db=db):
                f, new_gb = gan.G(p, gb, z)
                out, new_db = gan.D(dp, db, (f,))
                return L.gen_clamped_log_saturating(out), (new_gb, new_db)

            new_gp, new_gs, l_i, (new_gb, new_db) = update_player(g_loss, gp, gs, gan.gen_tx)
            gp, gs, gb, db = tree_where(active, (new_gp, new_gs, new_gb, new_db), (gp, gs, gb, db))
            l = torch.where(active, l_i, l)
            n_steps = n_steps + active.to(torch.int64)

        countdown = torch.floor(1.0 + l.abs().to(torch.float64) * self.countdown_scale).to(torch.int64)
        rest_k = torch.where(n_steps > 0, countdown, rest_k - 1)
        new = s._replace(gen_params=gp, gen_buffers=gb, gen_opt_state=gs, disc_params=dp, disc_buffers=db,
                         disc_opt_state=ds, extra={**s.extra, "rest_k": rest_k})
        metrics = {"disc/loss": d_loss, "disc/loss_real": loss_real, "disc/loss_fake": loss_fake,
                   "gen/loss": l, "gen/steps": n_steps, "disc/rest_k": rest_k}
        return new, metrics


# ----------------------------------------------------------------------------- state and step


def init_state(
    gan: GAN,
    key: torch.Tensor,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    gen_opt: OptimizerSpec | None = None,
    disc_opt: OptimizerSpec | None = None,
    hparams: dict[str, float] | None = None,
) -> TrainState:
    """A fresh run's state from its key.

    G's parameters draw from ``split(key, 3)[0]``, D's from ``[1]``, and the run's
    step key is ``[2]``. ``gen_opt``/``disc_opt``/``hparams`` override the GAN's own
    values for this run only (a sweep point); their structure must match the GAN's
    (same optimizer, same enabled options).
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"init_state: dtype must be a floating torch.dtype, got {dtype}")
    if not (isinstance(key, torch.Tensor) and fr.is_key(key) and key.shape == (2,)):
        raise TypeError("init_state: key must be a single funcgan key (int64 tensor of shape (2,))")
    for label, spec, base in (("gen_opt", gen_opt, gan.gen_opt), ("disc_opt", disc_opt, gan.disc_opt)):
        if spec is not None and (spec.name != base.name or (spec.clip_norm is None) != (base.clip_norm is None)
                                 or (spec.weight_decay != 0) != (base.weight_decay != 0)
                                 or (spec.momentum != 0) != (base.momentum != 0)):
            raise ValueError(f"init_state: {label} must have the GAN's optimizer structure "
                             f"(name, clip_norm on/off, weight_decay on/off, momentum on/off)")
    kg, kd, krun = fr.split(key.to(device), 3)
    gp, gb = nets.init_params(gan.gen, kg, dtype, device)
    dp, db = nets.init_params(gan.disc, kd, dtype, device)
    hp = dict(gan.hparams)
    for k, v in (hparams or {}).items():
        if k not in hp:
            raise ValueError(f"init_state: unknown hyper-parameter '{k}'; this GAN has {sorted(hp) or 'none'}")
        hp[k] = v
    return TrainState(
        gen_params=gp,
        gen_buffers=gb,
        gen_opt_state=(gen_opt or gan.gen_opt).make().init(gp),
        disc_params=dp,
        disc_buffers=db,
        disc_opt_state=(disc_opt or gan.disc_opt).make().init(dp),
        key=krun,
        step=torch.zeros((), dtype=torch.int64, device=device),
        extra=gan.loop.init_extra(torch.device(device), gp, dp),
        hparams={k: torch.tensor(float(v), dtype=torch.float64, device=device) for k, v in hp.items()},
        gen_ema={k: v.clone() for k, v in gp.items()} if gan.ema_decay is not None else {},
    )


def step_key(state: TrainState) -> torch.Tensor:
    """The key of the step about to be taken: ``fold_in(state.key, state.step)``."""
    return fr.fold_in(state.key, state.step)


def make_train_step(gan: GAN) -> Callable[[TrainState, Data], tuple[TrainState, Metrics]]:
    """Build the pure training step ``step(state, data) -> (state, metrics)``.

    The step draws its random inputs from ``fold_in(state.key, state.step)``,
    applies ``gan.loop``'s update and increments ``state.step``. It has no Python
    branching on tensor values, no ``.item()`` and no I/O, so
    ``torch.compile(vmap(step, in_dims=(0, None)), fullgraph=True)`` runs S seeds
    at once (see :mod:`funcgan.sweep`). Metrics are 0-d tensors keyed
    ``"disc/loss"``, ``"gen/loss"``, ...
    """

    def step(state: TrainState, data: Data = ()) -> tuple[TrainState, Metrics]:
        dtype = next(iter(state.gen_params.values())).dtype
        inputs = gan.loop.draw(gan, step_key(state), data, dtype)
        new, metrics = gan.loop.update(gan, state, inputs)
        if gan.ema_decay is not None:
            new = new._replace(gen_ema=update_ema(state.gen_ema, new.gen_params, state.step, gan.ema_decay,
                                                  gan.ema_start))
        return new._replace(step=state.step + 1), metrics

    return step


def update_ema(ema: nets.Params, params: nets.Params, step: torch.Tensor, decay: float, start: int) -> nets.Params:
    r"""Polyak averaging: :math:`\bar\theta \leftarrow \beta\bar\theta + (1-\beta)\theta` from step ``start``
    on; before it the average tracks the parameters."""
    on = step >= start
    return {k: torch.where(on, torch.lerp(params[k], ema[k], decay), params[k]) for k in params}


def generate(gan: GAN, state: TrainState, key: torch.Tensor, n: int, condition: torch.Tensor | None = None,
             use_ema: bool = False) -> torch.Tensor:
    """``n`` samples from G (from noise drawn with ``key``, or from ``condition``);
    ``use_ema`` samples from the averaged parameters ``state.gen_ema``."""
    if gan.conditional:
        if condition is None:
            raise ValueError("generate: a conditional GAN needs a condition batch")
        inp = condition
    else:
        dtype = next(iter(state.gen_params.values())).dtype
        inp = fr.normal(key, (n, gan.latent_dim), dtype)
    if use_ema and not state.gen_ema:
        raise ValueError("generate: use_ema needs a GAN with ema_decay set")
    out, _ = gan.G(state.gen_ema if use_ema else state.gen_params, state.gen_buffers, inp)
    return out
