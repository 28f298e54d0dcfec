r"""Game dynamics: objectives, gradient penalties and update schemes as pure transforms.

The :class:`Game` loop trains an unconditional GAN whose discriminator outputs
*logits*, with

* an **objective** (:data:`OBJECTIVES`): ``"minimax"`` (saturating), ``"nonsaturating"``,
  ``"lsgan"``, ``"hinge"``, ``"wasserstein"``;
* **penalties** through nested ``torch.func.grad`` (never ``torch.autograd.grad``):
  R1 and R2 (:math:`\frac{\gamma}{2}\mathbb{E}\lVert\nabla_x D(x)\rVert^2` on real and on
  generated data; Mescheder et al. 2018) and the WGAN-GP penalty
  (:math:`\lambda\,\mathbb{E}(\lVert\nabla_x D(\hat x)\rVert - 1)^2` at random interpolates;
  Gulrajani et al. 2017), each optionally applied only every ``n`` steps;
* an **update scheme** (:data:`SCHEMES`), each a pure function of both players' states:

  ============== ===============================================================
  alternating    k D steps, then G against the updated D (the seeds' scheme).
  simultaneous   both gradients at the same point, both players updated.
  extragradient  extrapolate both players one step, then update the original
                 point with the gradients at the extrapolated one (Korpelevich
                 1976; Gidel et al. 2019). The extrapolation's optimizer states
                 are discarded.
  optimistic     simultaneous, with each player's update replaced by
                 :math:`2u_t - u_{t-1}` (optimistic gradient descent, or optimistic
                 Adam with ``adam``; Daskalakis et al. 2018).
  consensus      simultaneous on :math:`v + \gamma\nabla\tfrac12\lVert v\rVert^2`, where
                 :math:`v` is the joint gradient field (Mescheder et al. 2017).
  unrolled       D steps as alternating; G's loss is taken against D after ``unroll``
                 differentiable D updates through the functional optimizer (Metz et
                 al. 2017), optionally stopping gradients through D's optimizer state.
  ============== ===============================================================

Unrolled with ``unroll=0`` is the alternating step (a test proves it), and
alternating vs simultaneous differ exactly as their definitions say on the
Dirac-GAN (another test).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.func import grad, grad_and_value

from funcgan import losses as L
from funcgan import random as fr
from funcgan._checks import check_positive
from funcgan.optim.base import apply_updates
from funcgan.train import GAN, Loop, Metrics, TrainState, update_player
from funcgan.tree import tree_map

__all__ = ["OBJECTIVES", "SCHEMES", "Penalties", "Game", "input_grad_sq_norms", "r1_penalty",
           "gradient_penalty", "make_objective"]

#: name -> (disc_loss(real_logits, fake_logits), gen_loss(fake_logits))
OBJECTIVES: dict[str, tuple[Callable, Callable]] = {
    "minimax": (L.disc_logistic, L.gen_saturating_logits),
    "nonsaturating": (L.disc_logistic, L.gen_nonsaturating_logits),
    "lsgan": (L.disc_least_squares, L.gen_least_squares),
    "hinge": (L.disc_hinge, L.gen_hinge),
    "wasserstein": (L.disc_wasserstein, L.gen_wasserstein),
}
SCHEMES = ("alternating", "simultaneous", "extragradient", "optimistic", "consensus", "unrolled")


def make_objective(name: str) -> tuple[Callable, Callable]:
    """The ``(disc_loss, gen_loss)`` pair of an objective, with a clear error for unknown names."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective '{name}'; choose one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


def input_grad_sq_norms(disc: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    r"""Per-example :math:`\lVert\nabla_x D(x_i)\rVert^2`, shape ``(B,)``.

    ``disc`` maps a batch ``(B, ...)`` to outputs ``(B, 1)`` with no coupling
    between examples (no batch norm), so the gradient of the summed output is each
    example's own input gradient. A ``torch.func.grad``, so it nests inside the
    outer grad of the D update (double backward).
    """
    g = grad(lambda inp: disc(inp).sum())(x)
    return g.flatten(1).pow(2).sum(1)


def r1_penalty(disc: Callable, x: torch.Tensor, gamma: float | torch.Tensor) -> torch.Tensor:
    r"""R1 (on real data) or R2 (on generated data): :math:`\frac{\gamma}{2}\mathbb{E}\lVert\nabla_x D(x)\rVert^2`."""
    return 0.5 * gamma * input_grad_sq_norms(disc, x).mean()


def gradient_penalty(disc: Callable, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor,
                     weight: float | torch.Tensor) -> torch.Tensor:
    r"""WGAN-GP: :math:`\lambda\,\mathbb{E}(\lVert\nabla_x D(\hat x)\rVert_2 - 1)^2`,
    :math:`\hat x = \epsilon x + (1-\epsilon)\tilde x`, ``eps`` of shape ``(B, 1, ...)`` in [0, 1)."""
    x_hat = eps * real + (1 - eps) * fake
    norms = torch.sqrt(input_grad_sq_norms(disc, x_hat) + 1e-12)  # eps keeps the sqrt's gradient finite at 0
    return weight * ((norms - 1) ** 2).mean()


@dataclass(frozen=True)
class Penalties:
    """Gradient penalties on D's loss (0 disables one).

    Attributes:
        r1: gamma of R1 (real data).
        r2: gamma of R2 (generated data).
        gp: lambda of the WGAN-GP penalty.
        every: apply the penalties on steps ``t`` with ``t % every == 0`` only.
    """

    r1: float = 0.0
    r2: float = 0.0
    gp: float = 0.0
    every: int = 1

    def __post_init__(self):
        for name in ("r1", "r2", "gp"):
            check_positive("Penalties", name, getattr(self, name), allow_zero=True)
        if not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"Penalties: every must be an int >= 1, got {self.every!r}")

    @property
    def any(self) -> bool:
        return self.r1 > 0 or self.r2 > 0 or self.gp > 0


@dataclass(frozen=True)
class Game(Loop):
    """A GAN game on logits: objective, penalties and update scheme (see the module docstring).

    Attributes:
        scheme: one of :data:`SCHEMES`.
        objective: one of :data:`OBJECTIVES`.
        penalties: gradient penalties on D's loss.
        n_disc: D steps per G step (alternating and unrolled).
        unroll: D updates G looks ahead through (unrolled).
        unroll_stop_opt_grad: stop gradients through D's optimizer state while unrolling.
        consensus: gamma of consensus optimization.
    """

    scheme: str = "alternating"
    objective: str = "nonsaturating"
    penalties: Penalties = Penalties()
    n_disc: int = 1
    unroll: int = 5
    unroll_stop_opt_grad: bool = False
    consensus: float = 1.0
    name = "game"

    def __post_init__(self):
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown scheme '{self.scheme}'; choose one of {', '.join(SCHEMES)}")
        make_objective(self.objective)
        if not isinstance(self.n_disc, int) or self.n_disc < 1:
            raise ValueError(f"Game: n_disc must be an int >= 1, got {self.n_disc!r}")
        if self.n_disc != 1 and self.scheme not in ("alternating", "unrolled"):
            raise ValueError(f"Game: n_disc > 1 applies to alternating and unrolled schemes, not {self.scheme}")
        if not isinstance(self.unroll, int) or self.unroll < 0:
            raise ValueError(f"Game: unroll must be an int >= 0, got {self.unroll!r}")
        check_positive("Game", "consensus", self.consensus, allow_zero=True)

    # -- state and randomness ---------------------------------------------------------
    def init_extra(self, device, gen_params, disc_params):
        if self.scheme == "optimistic":  # the previous update of each player, zero before the first
            return {"gen_prev_update": {k: torch.zeros_like(v) for k, v in gen_params.items()},
                    "disc_prev_update": {k: torch.zeros_like(v) for k, v in disc_params.items()}}
        return {}

    def draw(self, gan: GAN, key, data, dtype):
        k = fr.split(key, 6)
        B, Z, n = gan.batch_size, gan.latent_dim, self.n_disc
        u = self.unroll if self.scheme == "unrolled" else 0
        out = {"real": gan.sample_real(k[0], data, (n, B), dtype), "z_disc": fr.normal(k[1], (n, B, Z), dtype),
               "z_gen": fr.normal(k[2], (B, Z), dtype), "eps": fr.uniform(k[3], (n, B, 1), dtype)}
        if u:
            out["unroll_real"] = gan.sample_real(k[4], data, (u, B), dtype)
            out["unroll_z"] = fr.normal(k[5], (u, B, Z), dtype)
        return out

    # -- the two losses -----------------------------------------------------------------
    def _disc_loss(self, gan: GAN, dp, fake, real, eps, on):
        """D's objective plus penalties; ``fake`` enters as given (a constant or a function of G)."""
        d_obj, _ = make_objective(self.objective)

        def disc(x):
            return gan.disc_apply(dp, {}, x)[0]

        loss = d_obj(disc(real), disc(fake))
        p = self.penalties
        if p.any:
            pen = torch.zeros((), dtype=loss.dtype, device=loss.device)
            if p.r1 > 0:
                pen = pen + r1_penalty(disc, real, p.r1)
            if p.r2 > 0:
                pen = pen + r1_penalty(disc, fake, p.r2)
            if p.gp > 0:
                pen = pen + gradient_penalty(disc, real, fake, eps, p.gp)
            loss = loss + torch.where(on, pen, torch.zeros_like(pen))
        return loss

    def _gen_loss(self, gan: GAN, gp, dp, z):
        _, g_obj = make_objective(self.objective)
        fake = gan.gen_apply(gp, {}, z)[0]
        return g_obj(gan.disc_apply(dp, {}, fake)[0])

    # -- schemes --------------------------------------------------------------------------
    def update(self, gan: GAN, s: TrainState, inputs: dict[str, Any]) -> tuple[TrainState, Metrics]:
        if s.gen_buffers or s.disc_buffers:
            raise ValueError("Game: networks with buffers (batch norm) are not supported; penalties need "
                             "per-example independence")
        on = (s.step % self.penalties.every) == 0
        real0, z0, eps0 = inputs["real"][0][0], inputs["z_disc"][0], inputs["eps"][0]
        scheme = self.scheme
        if scheme in ("alternating", "unrolled"):
            return self._alternating(gan, s, inputs, on)
        gp, dp = s.gen_params, s.disc_params

        def grads_at(gp, dp):
            fake = gan.gen_apply(gp, {}, z0)[0]
            g_d, l_d = grad_and_value(lambda p: self._disc_loss(gan, p, fake, real0, eps0, on))(dp)
            g_g, l_g = grad_and_value(lambda p: self._gen_loss(gan, p, dp, z0))(gp)
            return g_g, g_d, l_g, l_d

        if scheme == "simultaneous":
            g_g, g_d, l_g, l_d = grads_at(gp, dp)
        elif scheme == "extragradient":
            g_g, g_d, l_g, l_d = grads_at(gp, dp)
            u_g, _ = gan.gen_tx.update(g_g, s.gen_opt_state, gp)
            u_d, _ = gan.disc_tx.update(g_d, s.disc_opt_state, dp)
            g_g, g_d, _, _ = grads_at(apply_updates(gp, u_g), apply_updates(dp, u_d))
        elif scheme == "consensus":
            def field(gp, dp):
                fake = gan.gen_apply(gp, {}, z0)[0]
                g_d = grad(lambda p: self._disc_loss(gan, p, fake, real0, eps0, on))(dp)
                g_g = grad(lambda p: self._gen_loss(gan, p, dp, z0))(gp)
                return g_g, g_d

            def half_sq_norm(gp, dp):
                g_g, g_d = field(gp, dp)
                return 0.5 * (sum((v**2).sum() for v in g_g.values()) + sum((v**2).sum() for v in g_d.values()))

            g_g, g_d, l_g, l_d = grads_at(gp, dp)
            r_g, r_d = grad(half_sq_norm, argnums=(0, 1))(gp, dp)
            gamma = self.consensus
            g_g = tree_map(lambda a, b: a + gamma * b, g_g, r_g)
            g_d = tree_map(lambda a, b: a + gamma * b, g_d, r_d)
        elif scheme == "optimistic":
            g_g, g_d, l_g, l_d = grads_at(gp, dp)
        else:  # pragma: no cover - checked in __post_init__
            raise ValueError(scheme)

        u_g, gs = gan.gen_tx.update(g_g, s.gen_opt_state, gp)
        u_d, ds = gan.disc_tx.update(g_d, s.disc_opt_state, dp)
        extra = s.extra
        if scheme == "optimistic":
            prev_g, prev_d = extra["gen_prev_update"], extra["disc_prev_update"]
            extra = {**extra, "gen_prev_update": u_g, "disc_prev_update": u_d}
            u_g = tree_map(lambda u, p: 2 * u - p, u_g, prev_g)
            u_d = tree_map(lambda u, p: 2 * u - p, u_d, prev_d)
        new = s._replace(gen_params=apply_updates(gp, u_g), gen_opt_state=gs, disc_params=apply_updates(dp, u_d),
                         disc_opt_state=ds, extra=extra)
        return new, {"disc/loss": l_d, "gen/loss": l_g}

    def _alternating(self, gan: GAN, s: TrainState, inputs, on):
        dp, ds = s.disc_params, s.disc_opt_state
        d_losses = []
        for i in range(self.n_disc):
            real, eps = inputs["real"][0][i], inputs["eps"][i]
            fake = gan.gen_apply(s.gen_params, {}, inputs["z_disc"][i])[0]  # a constant: detached
            dp, ds, l_d, _ = update_player(lambda p: (self._disc_loss(gan, p, fake, real, eps, on), {}), dp, ds,
                                           gan.disc_tx)
            d_losses.append(l_d)

        if self.scheme == "unrolled" and self.unroll > 0:
            def g_loss(gp):
                d, d_state = dp, ds
                for j in range(self.unroll):
                    fake = gan.gen_apply(gp, {}, inputs["unroll_z"][j])[0]  # differentiable in gp
                    real = inputs["unroll_real"][0][j]
                    g_d = grad(lambda p: self._disc_loss(gan, p, fake, real, inputs["eps"][0], on))(d)
                    if self.unroll_stop_opt_grad:
                        d_state = tree_map(lambda x: x.detach() if x.is_floating_point() else x, d_state)
                    u, d_state = gan.disc_tx.update(g_d, d_state, d)
                    d = apply_updates(d, u)
                return self._gen_loss(gan, gp, d, inputs["z_gen"]), {}
        else:
            def g_loss(gp):
                return self._gen_loss(gan, gp, dp, inputs["z_gen"]), {}

        gp, gs, l_g, _ = update_player(g_loss, s.gen_params, s.gen_opt_state, gan.gen_tx)
        new = s._replace(gen_params=gp, gen_opt_state=gs, disc_params=dp, disc_opt_state=ds)
        return new, {"disc/loss": torch.stack(d_losses).mean(), "gen/loss": l_g}
