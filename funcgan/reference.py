"""The imperative loops, written the way the seed tutorials write them.

``nn.Module`` + ``torch.optim`` + ``.backward()`` + ``.detach()`` + ``zero_grad()``
(+ ``requires_grad_(False)`` where the seed uses it). They exist to prove that
funcgan's functional steps train exactly like them, and to let users check their
own imperative loops against a funcgan step (:mod:`funcgan.testing`).

Every reference step takes the *same inputs* as the functional step (the dict
that ``gan.loop.draw`` returns: real batches and noise drawn from keys), so the
two runs see identical randomness.

An imperative step has the signature::

    step(run: ReferenceRun, inputs: dict) -> dict[str, float]   # the step's losses
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
import torch.nn.functional as F

from funcgan import nets
from funcgan.train import GAN, Adaptive, Alternating, Pix2Pix, ReuseFake, TrainState

__all__ = [
    "ReferenceRun",
    "alternating_step",
    "reuse_fake_step",
    "pix2pix_step",
    "adaptive_step",
    "game_step",
    "reference_step_for",
]

ImperativeStep = Callable[["ReferenceRun", dict[str, Any]], dict[str, float]]


class ReferenceRun:
    """Two live modules and two ``torch.optim`` optimizers, started from a funcgan state.

    Attributes:
        gan: the GAN description (loop options, optimizer specs, hyper-parameters).
        G, D: deep copies of ``gan.gen`` / ``gan.disc`` holding the state's weights.
        opt_g, opt_d: ``torch.optim`` optimizers matching ``gan.gen_opt`` / ``gan.disc_opt``.
        rest_k: seed 003's countdown (a Python int, as in the seed).
        hparams: loss hyper-parameters as Python floats.
    """

    def __init__(self, gan: GAN, state: TrainState):
        self.gan = gan
        self.G = nets.load_into_module(copy.deepcopy(gan.gen).to(_device(state)).to(_dtype(state)),
                                       state.gen_params, state.gen_buffers)
        self.D = nets.load_into_module(copy.deepcopy(gan.disc).to(_device(state)).to(_dtype(state)),
                                       state.disc_params, state.disc_buffers)
        self.G.train()
        self.D.train()
        self.opt_g = gan.gen_opt.make_torch(self.G.parameters())
        self.opt_d = gan.disc_opt.make_torch(self.D.parameters())
        self.rest_k = int(state.extra["rest_k"]) if "rest_k" in state.extra else 0
        self.step = int(state.step)
        self.hparams = {k: _f(v) for k, v in state.hparams.items()}

    def clip_g(self) -> None:
        """Gradient-norm clipping of G, if its optimizer spec asks for it."""
        if self.gan.gen_opt.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.G.parameters(), self.gan.gen_opt.clip_norm)

    def clip_d(self) -> None:
        """Gradient-norm clipping of D, if its optimizer spec asks for it."""
        if self.gan.disc_opt.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.D.parameters(), self.gan.disc_opt.clip_norm)

    def gen_params(self) -> nets.Params:
        return {n: p.detach().clone() for n, p in self.G.named_parameters()}

    def disc_params(self) -> nets.Params:
        return {n: p.detach().clone() for n, p in self.D.named_parameters()}


def _f(x) -> float:
    """A loss as a Python float (the imperative loop's ``float(loss)``)."""
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


def _device(state: TrainState) -> torch.device:
    return next(iter(state.gen_params.values())).device


def _dtype(state: TrainState) -> torch.dtype:
    return next(iter(state.gen_params.values())).dtype


def alternating_step(run: ReferenceRun, inputs: dict[str, Any]) -> dict[str, float]:
    """Seed 000 (and k D steps per G step), as the seed writes it."""
    G, D, opt_g, opt_d = run.G, run.D, run.opt_g, run.opt_d
    loop: Alternating = run.gan.loop
    d_losses = []
    for i in range(loop.n_disc):
        D.zero_grad()
        real_data = inputs["real"][0][i]
        fake_data = G(inputs["z_disc"][i]).detach()  # no G update from the D loss
        d_loss = loop.disc_loss(D(real_data), D(fake_data))
        d_loss.backward()
        run.clip_d()
        opt_d.step()
        d_losses.append(d_loss.detach())

    G.zero_grad()
    fake_data = G(inputs["z_gen"])  # no detach: G learns through D
    g_loss = loop.gen_loss(D(fake_data))
    g_loss.backward()
    run.clip_g()
    opt_g.step()
    return {"disc/loss": float(torch.stack(d_losses).mean()), "gen/loss": _f(g_loss)}


def reuse_fake_step(run: ReferenceRun, inputs: dict[str, Any]) -> dict[str, float]:
    """Seed 001: D on real (own step), D on ``fake.detach()`` (own step), G through the same fake."""
    G, D, opt_g, opt_d = run.G, run.D, run.opt_g, run.opt_d
    (real_images,) = inputs["real"]
    real_outputs = D(real_images)
    dis_loss_real = F.binary_cross_entropy(real_outputs, torch.ones_like(real_outputs))
    opt_d.zero_grad()
    dis_loss_real.backward()
    run.clip_d()
    opt_d.step()

    fake_images = G(inputs["z"])
    fake_outputs = D(fake_images.detach())
    dis_loss_fake = F.binary_cross_entropy(fake_outputs, torch.zeros_like(fake_outputs))
    opt_d.zero_grad()
    dis_loss_fake.backward()
    run.clip_d()
    opt_d.step()

    gen_outputs = D(fake_images)
    gen_loss = F.binary_cross_entropy(gen_outputs, torch.ones_like(gen_outputs))
    opt_g.zero_grad()
    gen_loss.backward()
    run.clip_g()
    opt_g.step()
    return {"disc/loss": float(dis_loss_real.detach() + dis_loss_fake.detach()),
            "disc/loss_real": _f(dis_loss_real), "disc/loss_fake": _f(dis_loss_fake),
            "gen/loss": _f(gen_loss)}


def pix2pix_step(run: ReferenceRun, inputs: dict[str, Any]) -> dict[str, float]:
    """Seed 002: pix2pix's ``forward``, ``backward_D``, ``backward_G``."""
    netG, netD, opt_g, opt_d = run.G, run.D, run.opt_g, run.opt_d
    real_A, real_B = inputs["real"]
    fake_B = netG(real_A)

    opt_d.zero_grad()
    pred_fake = netD(real_A, fake_B.detach())  # stop backprop to the generator
    loss_D_fake = F.binary_cross_entropy(pred_fake, torch.zeros_like(pred_fake))
    pred_real = netD(real_A, real_B)
    loss_D_real = F.binary_cross_entropy(pred_real, torch.ones_like(pred_real))
    loss_D = (loss_D_fake + loss_D_real) * 0.5
    loss_D.backward()
    run.clip_d()
    opt_d.step()

    opt_g.zero_grad()
    pred_fake = netD(real_A, fake_B)
    loss_G_GAN = F.binary_cross_entropy(pred_fake, torch.ones_like(pred_fake))
    loss_G_L1 = F.l1_loss(fake_B, real_B) * run.hparams["l1_weight"]
    loss_G = loss_G_GAN + loss_G_L1
    loss_G.backward()
    run.clip_g()
    opt_g.step()
    return {"disc/loss": _f(loss_D), "gen/loss": _f(loss_G), "gen/loss_gan": _f(loss_G_GAN),
            "gen/loss_l1": float(F.l1_loss(fake_B.detach(), real_B))}


def adaptive_step(run: ReferenceRun, inputs: dict[str, Any]) -> dict[str, float]:
    """Seed 003's ``train_epoch`` body for one batch, with the shared bound on G steps."""
    G, D, optimizer_G, optimizer_D = run.G, run.D, run.opt_g, run.opt_d
    loop: Adaptive = run.gan.loop
    (X,) = inputs["real"]

    # update the discriminator using the dataset
    D.train()
    D.requires_grad_(True)
    optimizer_G.zero_grad()
    optimizer_D.zero_grad()
    y = D(X)
    y = torch.clamp(y, 1e-3, 1)
    l_real = -torch.log(y).mean()
    l_real.backward()
    run.clip_d()
    optimizer_D.step()

    # update the discriminator using the generated data
    G.eval()
    optimizer_G.zero_grad()
    optimizer_D.zero_grad()
    G.requires_grad_(False)
    y = D(G(inputs["z_disc"]))
    y = torch.clamp(y, 0, 1 - 1e-3)
    l_fake = -torch.log(1 - y).mean()
    l_fake.backward()
    run.clip_d()
    optimizer_D.step()

    # update the generator
    D.eval()
    G.train()
    tmp_loss = float(l_real.detach() + l_fake.detach())
    l = torch.zeros(())
    n = 0
    train_G_flg = False
    while (tmp_loss < loop.d_threshold and run.rest_k <= 0) and abs(_f(l)) < loop.g_threshold \
            and n < loop.max_gen_steps:
        train_G_flg = True
        G.requires_grad_(True)
        optimizer_G.zero_grad()
        optimizer_D.zero_grad()
        D.requires_grad_(False)
        y = D(G(inputs["z_gen"][n]))
        y = torch.clamp(y, 0, 1 - 1e-3)
        l = torch.log(1 - y).mean()
        l.backward()
        run.clip_g()
        optimizer_G.step()
        n += 1
    if train_G_flg:
        run.rest_k = int(1 + abs(_f(l)) * loop.countdown_scale)
    else:
        run.rest_k -= 1
    D.requires_grad_(True)
    G.requires_grad_(True)
    return {"disc/loss": tmp_loss, "disc/loss_real": _f(l_real), "disc/loss_fake": _f(l_fake),
            "gen/loss": _f(l), "gen/steps": _f(n), "disc/rest_k": _f(run.rest_k)}


def game_step(run: ReferenceRun, inputs: dict[str, Any]) -> dict[str, float]:
    """:class:`~funcgan.dynamics.Game` with the alternating or simultaneous scheme, imperatively:
    penalties by ``torch.autograd.grad(..., create_graph=True)`` (double backward), G's
    samples ``.detach()``-ed for D, ``zero_grad()`` before every backward."""
    from funcgan.dynamics import make_objective

    G, D, opt_g, opt_d = run.G, run.D, run.opt_g, run.opt_d
    game = run.gan.loop
    if game.scheme not in ("alternating", "simultaneous"):
        raise ValueError(f"no imperative reference for scheme '{game.scheme}'")
    d_obj, g_obj = make_objective(game.objective)
    pen = game.penalties
    on = run.step % pen.every == 0

    def input_grad_sq(x):
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
        return g.flatten(1).pow(2).sum(1)

    def disc_loss(real, fake, eps):
        loss = d_obj(D(real), D(fake))
        if pen.any and on:
            if pen.r1 > 0:
                loss = loss + 0.5 * pen.r1 * input_grad_sq(real).mean()
            if pen.r2 > 0:
                loss = loss + 0.5 * pen.r2 * input_grad_sq(fake).mean()
            if pen.gp > 0:
                x_hat = eps * real + (1 - eps) * fake
                loss = loss + pen.gp * ((torch.sqrt(input_grad_sq(x_hat) + 1e-12) - 1) ** 2).mean()
        return loss

    d_losses = []
    if game.scheme == "simultaneous":
        fake = G(inputs["z_disc"][0]).detach()
        opt_d.zero_grad()
        d_loss = disc_loss(inputs["real"][0][0], fake, inputs["eps"][0])
        d_loss.backward()
        opt_g.zero_grad()
        g_loss = g_obj(D(G(inputs["z_disc"][0])))  # the same point: D not yet stepped
        g_grads = torch.autograd.grad(g_loss, list(G.parameters()))
        opt_d.step()
        for p, g in zip(G.parameters(), g_grads):
            p.grad = g
        opt_g.step()
        run.step += 1
        return {"disc/loss": _f(d_loss), "gen/loss": _f(g_loss)}
    for i in range(game.n_disc):
        opt_d.zero_grad()
        fake = G(inputs["z_disc"][i]).detach()
        d_loss = disc_loss(inputs["real"][0][i], fake, inputs["eps"][i])
        d_loss.backward()
        opt_d.step()
        d_losses.append(d_loss.detach())
    opt_g.zero_grad()
    g_loss = g_obj(D(G(inputs["z_gen"])))
    g_loss.backward()
    opt_g.step()
    run.step += 1
    return {"disc/loss": _f(torch.stack(d_losses).mean()), "gen/loss": _f(g_loss)}


_STEPS: dict[type, ImperativeStep] = {
    Alternating: alternating_step,
    ReuseFake: reuse_fake_step,
    Pix2Pix: pix2pix_step,
    Adaptive: adaptive_step,
}


def reference_step_for(gan: GAN) -> ImperativeStep:
    """The imperative step that matches ``gan.loop``."""
    from funcgan.dynamics import Game

    if isinstance(gan.loop, Game):
        return game_step
    for cls, fn in _STEPS.items():
        if isinstance(gan.loop, cls):
            return fn
    raise ValueError(f"no imperative reference for loop {type(gan.loop).__name__}; pass your own step")
