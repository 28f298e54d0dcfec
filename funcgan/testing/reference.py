"""The imperative loops, written the way a PyTorch user writes them.

``nn.Module`` + ``torch.optim`` + ``.backward()`` + ``.detach()`` + ``zero_grad()``;
penalties by ``torch.autograd.grad(..., create_graph=True)`` (double backward);
consensus and unrolled GANs with ``torch.autograd.grad(create_graph=True)`` as their
papers' reference code does. They exist to prove that funcgan's functional steps
train exactly like them, and to let users check their own imperative loops against
a funcgan step (:mod:`funcgan.testing`).

Every reference step takes the *same inputs* as the functional step (the dict that
``gan.loop.draw`` returns: real batches, noise and penalty noise drawn from keys),
and its modules use keyed dropout (:func:`funcgan.nets.keyed`) fed the same keys
in the same order as :class:`funcgan.loops.Context` allocates them, so both runs
see identical randomness. Nothing here is part of a training step.

An imperative step has the signature::

    step(run: ReferenceRun, inputs: dict) -> dict[str, float]   # the step's losses
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch

from funcgan import nets
from funcgan import random as fr
from funcgan.loops import (
    Adaptive,
    Alternating,
    Consensus,
    Extragradient,
    Optimistic,
    Pix2Pix,
    ReuseFake,
    Simultaneous,
    Unrolled,
)
from funcgan.loops.base import batch_at
from funcgan.optim import OptimizerSpec
from funcgan.step import GAN, Batch, TrainState

__all__ = [
    "ReferenceRun",
    "ImperativeStep",
    "reference_step_for",
    "alternating_step",
    "reuse_fake_step",
    "pix2pix_step",
    "adaptive_step",
    "simultaneous_step",
    "extragradient_step",
    "optimistic_step",
    "consensus_step",
    "unrolled_step",
    "REFERENCES",
]

ImperativeStep = Callable[["ReferenceRun", dict[str, Any]], dict[str, float]]


def _f(x) -> float:
    """A loss as a Python float (the imperative loop's ``float(loss)``)."""
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


class ReferenceRun:
    """Two live modules and two ``torch.optim`` optimizers, started from a funcgan state.

    Attributes:
        gan: the GAN (loop, optimizer specs).
        G, D: deep copies of ``gan.gen`` / ``gan.disc`` with the state's weights and
            buffers, in train mode, dropout keyed.
        opt_g, opt_d: ``torch.optim`` optimizers matching ``gan.gen_opt`` / ``gan.disc_opt``
            (``None`` when a player's optimizer is a custom transformation).
        hparams: the state's hyper-parameters as Python floats.
        step: the step count; ``extra``: loop-carried values (seed 003's ``rest_k``).
        ema: G's parameter average (when the GAN has ``ema``).
    """

    def __init__(self, gan: GAN, state: TrainState):
        self.gan = gan
        device = next(iter(state.gen.params.values())).device
        dtype = next(iter(state.gen.params.values())).dtype
        self.G = self._module(gan.gen, state.gen, device, dtype)
        self.D = self._module(gan.disc, state.disc, device, dtype)
        self.opt_g: Any = (
            gan.gen_opt.make_torch(self.G.parameters()) if isinstance(gan.gen_opt, OptimizerSpec) else None
        )
        self.opt_d: Any = (
            gan.disc_opt.make_torch(self.D.parameters()) if isinstance(gan.disc_opt, OptimizerSpec) else None
        )
        self.counts = {"gen": 0, "disc": 0}
        self.hparams = {k: float(v) for k, v in state.hparams.items()}
        self.step = int(state.step)
        self.extra = {k: int(v) for k, v in state.extra.items() if isinstance(v, torch.Tensor) and v.dim() == 0}
        self.ema = {k: v.clone() for k, v in state.gen_ema.items()}
        self.prev_updates = {
            who: [v.clone() for v in state.extra[f"{who}_prev_update"].values()]
            for who in ("gen", "disc")
            if f"{who}_prev_update" in state.extra
        }
        self.d_override: dict[str, torch.Tensor] | None = None  # look-ahead weights (unrolled)
        self._keys: Any = None
        self._count = 0
        self._keyed = bool(gan.gen_apply.stochastic or gan.disc_apply.stochastic)

    @staticmethod
    def _module(module, player, device, dtype):
        m = nets.keyed(copy.deepcopy(module)).to(device=device, dtype=dtype)
        nets.load_into_module(m, player.params, player.buffers)
        return m.train()

    # -- keys and forwards, in the order funcgan.loops.Context allocates them -------------
    def begin(self, inputs: dict[str, Any]) -> None:
        """Start a step: forward keys come from ``inputs["net_key"]``."""
        self._keys, self._count = inputs["net_key"], 0

    def key(self) -> torch.Tensor | None:
        k = fr.fold_in(self._keys, self._count) if self._keyed else None
        self._count += 1
        return k

    def g(self, z, cond, key, train: bool = True):
        """``G(z)`` / ``G(z, cond)`` / ``G(cond)`` in train (or eval) mode with a forward key."""
        self.G.train(train)
        if key is not None:
            nets.set_forward_key(self.G, key)
        gan = self.gan
        args = tuple(
            a for a in ((z if gan.latent_shape else None), (cond if gan.conditional else None)) if a is not None
        )
        out = self.G(*args)
        self.G.train()
        return out

    def d(self, x, cond, key, train: bool = True):
        """``D(x)`` / ``D(x, cond)`` in train (or eval) mode with a forward key."""
        self.D.train(train)
        if key is not None:
            nets.set_forward_key(self.D, key)
        args = (x, cond) if self.gan.conditional else (x,)
        if self.d_override is not None:  # D with graph-connected look-ahead weights
            out = torch.func.functional_call(self.D, self.d_override, args, strict=False)
        else:
            out = self.D(*args)
        self.D.train()
        return out

    # -- optimizer steps -----------------------------------------------------------------
    def _spec(self, player: str) -> OptimizerSpec:
        spec = self.gan.gen_opt if player == "gen" else self.gan.disc_opt
        if not isinstance(spec, OptimizerSpec):
            raise ValueError(f"the {player} optimizer is a custom transformation: pass your own imperative step")
        return spec

    def optimizer_step(self, player: str) -> None:
        """Clip (``clip_grad_norm_``), set a scheduled learning rate, ``opt.step()``."""
        spec = self._spec(player)
        module, opt = (self.G, self.opt_g) if player == "gen" else (self.D, self.opt_d)
        if spec.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(module.parameters(), spec.clip_norm)
        if callable(spec.lr):
            opt.param_groups[0]["lr"] = spec.lr_at(self.counts[player])
        opt.step()
        self.counts[player] += 1

    def constrain_d(self) -> None:
        """The loop's constraints on D, as the original WGAN writes weight clipping."""
        for c in self.gan.loop.constraints:
            if c.kind != "clip":
                raise ValueError(f"no imperative reference for constraint '{c.name}'; pass your own step")
            bound = self.hparams[c.name]
            for p in self.D.parameters():
                p.data.clamp_(-bound, bound)

    def end(self) -> None:
        """Finish a step: G's EMA and the step count."""
        gan = self.gan
        if gan.ema is not None:
            decay = self.hparams["ema_decay"]
            with torch.no_grad():
                for n, p in self.G.named_parameters():
                    self.ema[n] = (
                        (decay * self.ema[n] + (1 - decay) * p) if self.step >= gan.ema_start else p.detach().clone()
                    )
        self.step += 1

    # -- read out ------------------------------------------------------------------------
    def gen_params(self) -> nets.Params:
        return {n: p.detach().clone() for n, p in self.G.named_parameters()}

    def disc_params(self) -> nets.Params:
        return {n: p.detach().clone() for n, p in self.D.named_parameters()}

    def buffers(self, module: torch.nn.Module) -> nets.Buffers:
        return {n: b.detach().clone() for n, b in module.named_buffers() if not n.endswith("_funcgan_key")}


# ----------------------------------------------------------------------------- shared pieces


def _input_grad(run: ReferenceRun, x: torch.Tensor, cond, key) -> torch.Tensor:
    """``torch.autograd.grad(D(x), x, grad_outputs=ones, create_graph=True)``; ``x`` stays attached to
    whatever it was computed from (G's samples, in consensus optimization)."""
    if not x.requires_grad:
        x = x.detach().requires_grad_(True)
    out = run.d(x, cond, key)
    (g,) = torch.autograd.grad(out, x, grad_outputs=torch.ones_like(out), create_graph=True)
    return g


def _penalty(run: ReferenceRun, p, real: Batch, fake: torch.Tensor, noise: dict, key) -> torch.Tensor:
    """The penalty as its paper's PyTorch code writes it (``fake`` as the caller passes it: detached
    in a D update)."""
    if p.kind == "gp":  # Gulrajani et al.: alpha * real + (1 - alpha) * fake
        alpha = noise["eps"].reshape(-1, *([1] * (real.x.dim() - 1)))
        interpolates = alpha * real.x + (1 - alpha) * fake
        g = _input_grad(run, interpolates, real.cond, key)
        return ((g.reshape(g.shape[0], -1).norm(2, dim=1) - p.options["target"]) ** 2).mean()
    if p.kind in ("r1", "r2"):  # Mescheder et al.: 0.5 * ||grad||^2, batch mean
        g = _input_grad(run, real.x if p.kind == "r1" else fake, real.cond, key)
        return 0.5 * g.pow(2).reshape(g.shape[0], -1).sum(1).mean()
    if p.kind == "dragan":  # Kodali et al.: x_p = x + c * x.std() * U[0, 1)
        alpha = noise["alpha"].reshape(-1, *([1] * (real.x.dim() - 1)))
        x_p = real.x + p.options["scale"] * real.x.std() * noise["u"]
        g = _input_grad(run, alpha * real.x + (1 - alpha) * x_p, real.cond, key)
        return ((g.reshape(g.shape[0], -1).norm(2, dim=1) - 1) ** 2).mean()
    raise ValueError(f"no imperative reference for penalty '{p.name}' (kind {p.kind}); pass your own step")


def _penalty_on(run: ReferenceRun, p) -> bool:
    return run.step % p.every == 0


def disc_loss(
    run: ReferenceRun,
    real: Batch,
    fake: torch.Tensor,
    noise: dict,
    part: str = "both",
    fake_first: bool = False,
    scale: float = 1.0,
    with_penalties: bool = True,
) -> torch.Tensor:
    """D's loss on the real batch and ``fake`` (pass it detached), plus the penalties.

    The forward order and key use are those of :meth:`funcgan.loops.Context.disc_loss`.
    """
    obj = run.gan.loop.objective
    k_first, k_second = run.key(), run.key()
    pens = run.gan.loop.loss_penalties if with_penalties else ()
    pen_keys = [run.key() for _ in pens]
    outs = {}
    order = (
        [("fake", fake, k_first), ("real", real.x, k_second)]
        if fake_first
        else [("real", real.x, k_first), ("fake", fake, k_second)]
    )
    for which, x, k in order:
        if part in ("both", which):
            outs[which] = run.d(x, real.cond, k)
    if part == "both":
        loss = obj.disc(outs["real"], outs["fake"])
    elif part == "real":
        loss = obj.disc_real(outs["real"])
    else:
        loss = obj.disc_fake(outs["fake"])
    loss = loss * scale if scale != 1.0 else loss
    for p, k in zip(pens, pen_keys):
        if _penalty_on(run, p):
            loss = loss + run.hparams[p.name] * p.every * _penalty(run, p, real, fake, noise[p.name], k)
    return loss


def gen_loss_of_fake(run: ReferenceRun, fake: torch.Tensor, real: Batch | None, disc_train: bool = True):
    """G's objective on ``fake`` (through D); the order of :meth:`funcgan.loops.Context.gen_loss_of_fake`."""
    obj = run.gan.loop.objective
    k_real, k_fake = run.key(), run.key()
    cond = real.cond if real is not None else None
    real_out = run.d(real.x, cond, k_real, disc_train) if obj.gen_needs_real and real is not None else None
    return obj.gen(real_out, run.d(fake, cond, k_fake, disc_train))


def disc_update(run: ReferenceRun, real: Batch, fake: torch.Tensor, noise: dict, **kwargs) -> torch.Tensor:
    """``zero_grad``, D's loss on ``fake.detach()``, ``backward``, ``step``, constraints."""
    run.opt_d.zero_grad()
    loss = disc_loss(run, real, fake.detach(), noise, **kwargs)
    loss.backward()
    run.optimizer_step("disc")
    run.constrain_d()
    return loss.detach()


def gen_update(run: ReferenceRun, z, real: Batch | None, disc_train: bool = True) -> torch.Tensor:
    """``zero_grad``, ``G(z)``, G's loss through D, ``backward``, ``step`` (D's gradients are computed
    by ``backward`` and thrown away by the next ``zero_grad``, as in every imperative loop)."""
    run.opt_g.zero_grad()
    k_gen = run.key()
    fake = run.g(z, real.cond if real is not None else None, k_gen)
    loss = gen_loss_of_fake(run, fake, real, disc_train)
    loss.backward()
    run.optimizer_step("gen")
    return loss.detach()


def _warmup(run: ReferenceRun, inputs: dict) -> None:
    if "warmup" not in inputs:
        return
    w = inputs["warmup"]
    for i in range(run.gan.loop.n_disc - 1):
        real = batch_at(w["real"], i)
        fake = run.g(None if w["z"] is None else w["z"][i], real.cond, run.key())
        disc_update(run, real, fake, w["noise"][i])


def _main(inputs):
    main = inputs["main"]
    return batch_at(main["real"], 0), (None if main["z"] is None else main["z"][0]), main["noise"][0]


# ----------------------------------------------------------------------------- the loops


def alternating_step(run: ReferenceRun, inputs: dict[str, Any]) -> dict[str, float]:
    """k D steps on ``G(z).detach()``, then n G steps (seed 000's loop, generalised)."""
    loop: Alternating = run.gan.loop
    run.begin(inputs)
    d, g = inputs["disc"], inputs["gen"]
    d_losses, g_losses = [], []
    for i in range(loop.n_disc):
        real = batch_at(d["real"], i)
        fake = run.g(None if d["z"] is None else d["z"][i], real.cond, run.key())  # detached in disc_update
        d_losses.append(disc_update(run, real, fake, d["noise"][i]))
    for j in range(loop.n_gen):
        real_g = batch_at(g["real"], j) if "real" in g else None
        g_losses.append(gen_update(run, None if g["z"] is None else g["z"][j], real_g))
    run.end()
    return {"disc/loss": _f(torch.stack(d_losses).mean()), "gen/loss": _f(torch.stack(g_losses).mean())}


def reuse_fake_step(run: ReferenceRun, inputs: dict[str, Any]) -> dict[str, float]:
    """The pytorch DCGAN example (``split=False``) or seed 001 (``split=True``): one ``fake = G(z)``."""
    loop: ReuseFake = run.gan.loop
    run.begin(inputs)
    _warmup(run, inputs)
    real, z, noise = _main(inputs)
    fake = run.g(z, real.cond, run.key())
    if loop.split:
        l_real = disc_update(run, real, fake, noise, part="real", with_penalties=False)
        l_fake = disc_update(run, real, fake, noise, part="fake")
        d_loss = l_real + l_fake
    else:
        d_loss = disc_update(run, real, fake, noise)
    run.opt_g.zero_grad()
    g_loss = gen_loss_of_fake(run, fake, real)  # no detach: G learns through D
    g_loss.backward()
    run.optimizer_step("gen")
    run.end()
    return {"disc/loss": _f(d_loss), "gen/loss": _f(g_loss)}


def pix2pix_step(run: ReferenceRun, inputs: dict[str, Any]) -> dict[str, float]:
    """pix2pix's ``forward``, ``backward_D`` (fake pair first, halved), ``backward_G`` (GAN + lambda L1)."""
    loop: Pix2Pix = run.gan.loop
    run.begin(inputs)
    _warmup(run, inputs)
    real, z, noise = _main(inputs)
    fake_B = run.g(z, real.cond, run.key())
    loss_D = disc_update(run, real, fake_B, noise, fake_first=True, scale=loop.disc_scale)
    run.opt_g.zero_grad()
    loss_G_GAN = gen_loss_of_fake(run, fake_B, real)
    loss_G_L1 = torch.nn.functional.l1_loss(fake_B, real.x) * run.hparams["l1_weight"]
    loss_G = loss_G_GAN + loss_G_L1
    loss_G.backward()
    run.optimizer_step("gen")
    run.end()
    return {"disc/loss": _f(loss_D), "gen/loss": _f(loss_G)}


def adaptive_step(run: ReferenceRun, inputs: dict[str, Any]) -> dict[str, float]:
    """Seed 003's ``train_epoch`` body for one batch (its ``eval()``/``train()`` calls), with the shared
    bound on G steps."""
    loop: Adaptive = run.gan.loop
    run.begin(inputs)
    _warmup(run, inputs)
    d, g = inputs["disc"], inputs["gen"]
    real, noise = batch_at(d["real"], 0), d["noise"][0]
    # update the discriminator using the dataset
    l_real = disc_update(run, real, real.x, noise, part="real", with_penalties=False)
    # update the discriminator using the generated data (G in eval mode, as the seed)
    with torch.no_grad():
        fake = run.g(None if d["z"] is None else d["z"][0], real.cond, run.key(), train=not loop.seed_modes)
    l_fake = disc_update(run, real, fake, noise, part="fake")
    # update the generator (D in eval mode, as the seed)
    tmp_loss = _f(l_real + l_fake)
    g_loss, n, trained = torch.zeros(()), 0, False
    while (
        (tmp_loss < loop.d_threshold and run.extra["rest_k"] <= 0)
        and abs(_f(g_loss)) < loop.g_threshold
        and n < loop.max_gen_steps
    ):
        trained = True
        real_g = batch_at(g["real"], n) if "real" in g else None
        g_loss = gen_update(run, None if g["z"] is None else g["z"][n], real_g, disc_train=not loop.seed_modes)
        n += 1
    run.extra["rest_k"] = int(1 + abs(_f(g_loss)) * loop.countdown_scale) if trained else run.extra["rest_k"] - 1
    run.end()
    return {
        "disc/loss": tmp_loss,
        "disc/loss_real": _f(l_real),
        "disc/loss_fake": _f(l_fake),
        "gen/loss": _f(g_loss),
        "gen/steps": float(n),
        "disc/rest_k": float(run.extra["rest_k"]),
    }


def _simultaneous_grads(run: ReferenceRun, real: Batch, z, noise, create_graph: bool = False):
    """Both players' gradients at the current point, as ``torch.autograd.grad`` computes them:
    ``fake = G(z)``; D's loss on ``fake.detach()``; G's loss through the same ``fake`` against D before
    any update. With ``create_graph`` (consensus) the D loss keeps ``fake`` attached, so the field can be
    differentiated with respect to both players."""
    k_gen = run.key()
    fake = run.g(z, real.cond, k_gen)
    d_loss = disc_loss(run, real, fake if create_graph else fake.detach(), noise)
    d_grads = torch.autograd.grad(d_loss, list(run.D.parameters()), create_graph=create_graph, allow_unused=True)
    g_loss = gen_loss_of_fake(run, fake, real)
    g_grads = torch.autograd.grad(g_loss, list(run.G.parameters()), create_graph=create_graph, allow_unused=True)
    zero = lambda gs, ps: [torch.zeros_like(p) if g is None else g for g, p in zip(gs, ps)]  # noqa: E731
    return zero(g_grads, run.G.parameters()), zero(d_grads, run.D.parameters()), d_loss, g_loss


def _set_grads_and_step(run: ReferenceRun, g_grads, d_grads, constrain: bool = True) -> None:
    for p, gr in zip(run.G.parameters(), g_grads):
        p.grad = gr.detach()
    for p, gr in zip(run.D.parameters(), d_grads):
        p.grad = gr.detach()
    run.optimizer_step("disc")
    run.optimizer_step("gen")
    if constrain:
        run.constrain_d()


def simultaneous_step(run: ReferenceRun, inputs: dict[str, Any]) -> dict[str, float]:
    """Simultaneous gradient descent: both gradients at the same point, then both ``opt.step()``."""
    run.begin(inputs)
    _warmup(run, inputs)
    real, z, noise = _main(inputs)
    _sub_keys(run, (run._keys, run._count))
    g_grads, d_grads, d_loss, g_loss = _simultaneous_grads(run, real, z, noise)
    _set_grads_and_step(run, g_grads, d_grads)
    run.end()
    return {"disc/loss": _f(d_loss), "gen/loss": _f(g_loss)}


def _sub_keys(run: ReferenceRun, parent: tuple[Any, int]) -> None:
    """Switch to the keys of one field evaluation: ``fold_in(net_key, i)`` of the parent's next key."""
    keys, count = parent
    run._keys, run._count = (fr.fold_in(keys, count) if run._keyed else keys), 0


def extragradient_step(run: ReferenceRun, inputs: dict[str, Any]) -> dict[str, float]:
    """Extragradient as Gidel et al.'s code: extrapolate with ``opt.step()``, take the gradients there,
    restore parameters and optimizer states, step with the extrapolated gradients."""
    run.begin(inputs)
    _warmup(run, inputs)
    real, z, noise = _main(inputs)
    parent = (run._keys, run._count)
    saved = (
        {k: v.detach().clone() for k, v in run.G.state_dict().items()},
        {k: v.detach().clone() for k, v in run.D.state_dict().items()},
        copy.deepcopy(run.opt_g.state_dict()),
        copy.deepcopy(run.opt_d.state_dict()),
        dict(run.counts),
    )
    _sub_keys(run, parent)
    g_grads, d_grads, d_loss, g_loss = _simultaneous_grads(run, real, z, noise)
    for p, gr in zip(run.G.parameters(), g_grads):
        p.grad = gr.detach()
    for p, gr in zip(run.D.parameters(), d_grads):
        p.grad = gr.detach()
    run.optimizer_step("gen")
    run.optimizer_step("disc")
    run.constrain_d()
    _sub_keys(run, (parent[0], parent[1] + 1))
    g_grads, d_grads, _, _ = _simultaneous_grads(run, real, z, noise)
    buffers_g, buffers_d = run.buffers(run.G), run.buffers(run.D)
    run.G.load_state_dict(saved[0])
    run.D.load_state_dict(saved[1])
    run.opt_g.load_state_dict(saved[2])
    run.opt_d.load_state_dict(saved[3])
    run.counts = saved[4]
    with torch.no_grad():  # the buffers keep both evaluations' updates
        for n, b in run.G.named_buffers():
            if n in buffers_g:
                b.copy_(buffers_g[n])
        for n, b in run.D.named_buffers():
            if n in buffers_d:
                b.copy_(buffers_d[n])
    _set_grads_and_step(run, g_grads, d_grads)
    run.end()
    return {"disc/loss": _f(d_loss), "gen/loss": _f(g_loss)}


def optimistic_step(run: ReferenceRun, inputs: dict[str, Any]) -> dict[str, float]:
    """Optimistic updates: ``opt.step()`` gives ``u_t``; the parameters move by ``2 u_t - u_{t-1}``."""
    run.begin(inputs)
    _warmup(run, inputs)
    real, z, noise = _main(inputs)
    _sub_keys(run, (run._keys, run._count))
    g_grads, d_grads, d_loss, g_loss = _simultaneous_grads(run, real, z, noise)
    before = {
        "gen": [p.detach().clone() for p in run.G.parameters()],
        "disc": [p.detach().clone() for p in run.D.parameters()],
    }
    _set_grads_and_step(run, g_grads, d_grads, constrain=False)
    prev = run.prev_updates
    with torch.no_grad():
        for who, module in (("gen", run.G), ("disc", run.D)):
            updates = [p.detach() - b for p, b in zip(module.parameters(), before[who])]
            for p, b, u, u_prev in zip(module.parameters(), before[who], updates, prev[who]):
                p.copy_(b + (2 * u - u_prev))
            prev[who] = updates
    run.constrain_d()
    run.end()
    return {"disc/loss": _f(d_loss), "gen/loss": _f(g_loss)}


def consensus_step(run: ReferenceRun, inputs: dict[str, Any]) -> dict[str, float]:
    """Consensus optimization as Mescheder et al.'s code: the field with ``create_graph=True``, then
    ``grad(0.5 * ||v||^2)`` added with weight gamma."""
    run.begin(inputs)
    _warmup(run, inputs)
    real, z, noise = _main(inputs)
    _sub_keys(run, (run._keys, run._count))
    g_grads, d_grads, d_loss, g_loss = _simultaneous_grads(run, real, z, noise, create_graph=True)
    reg = 0.5 * (sum((g**2).sum() for g in g_grads) + sum((g**2).sum() for g in d_grads))
    params = list(run.G.parameters()) + list(run.D.parameters())
    raw = torch.autograd.grad(reg, params, allow_unused=True)
    r = [torch.zeros_like(p) if x is None else x for x, p in zip(raw, params)]
    gamma = run.hparams["consensus"]
    n_g = len(g_grads)
    g_total = [g.detach() + gamma * rr for g, rr in zip(g_grads, r[:n_g])]
    d_total = [g.detach() + gamma * rr for g, rr in zip(d_grads, r[n_g:])]
    _set_grads_and_step(run, g_total, d_total)
    run.end()
    return {"disc/loss": _f(d_loss), "gen/loss": _f(g_loss)}


def _differentiable_update(
    spec: OptimizerSpec, params: list[torch.Tensor], grads: list[torch.Tensor], state: dict, stop_opt_grad: bool
) -> tuple[list[torch.Tensor], dict]:
    """One step of ``spec``'s optimizer written out in differentiable tensor ops, as unrolled-GAN code
    writes its inner optimizer (Metz et al. 2017): ``clip_grad_norm_``'s rule, then Adam/AdamW, SGD
    (momentum, dampening, Nesterov, L2) or RMSprop (centered, momentum), ``torch.optim``'s formulas.
    ``stop_opt_grad`` detaches the optimizer's running state before each step."""
    if callable(spec.lr):
        raise ValueError("unrolled reference: learning-rate schedules are not written out")
    count = state.get("count", 0) + 1
    prev = {k: ([v.detach() for v in vs] if stop_opt_grad else vs) for k, vs in state.items() if k != "count"}
    if spec.clip_norm is not None:
        total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        coef = torch.clamp(spec.clip_norm / (total + 1e-6), max=1.0)
        grads = [g * coef for g in grads]
    lr, wd = spec.lr, spec.weight_decay
    if spec.name != "adamw" and wd:
        grads = [g + wd * p for g, p in zip(grads, params)]
    new: dict = {"count": count}
    if spec.name in ("adam", "adamw"):
        b1, b2 = spec.betas
        mu = [b1 * m + (1 - b1) * g for m, g in zip(prev.get("mu", [torch.zeros_like(p) for p in params]), grads)]
        nu = [b2 * v + (1 - b2) * g * g for v, g in zip(prev.get("nu", [torch.zeros_like(p) for p in params]), grads)]
        new.update(mu=mu, nu=nu)
        denom_src = nu
        if spec.amsgrad:
            denom_src = [
                torch.maximum(a, b) for a, b in zip(prev.get("nu_max", [torch.zeros_like(p) for p in params]), nu)
            ]
            new["nu_max"] = denom_src
        bc1, bc2 = 1 - b1**count, 1 - b2**count
        out = [
            p - (lr / bc1) * m / (torch.sqrt(v + torch.finfo(v.dtype).tiny) / bc2**0.5 + spec.eps)
            for p, m, v in zip(params, mu, denom_src)
        ]
        if spec.name == "adamw" and wd:
            out = [o - lr * wd * p for o, p in zip(out, params)]
        return out, new
    if spec.name == "rmsprop":
        a = spec.alpha
        sq = [a * v + (1 - a) * g * g for v, g in zip(prev.get("sq", [torch.zeros_like(p) for p in params]), grads)]
        new["sq"] = sq
        if spec.centered:
            ga = [a * m + (1 - a) * g for m, g in zip(prev.get("ga", [torch.zeros_like(p) for p in params]), grads)]
            new["ga"] = ga
            avg = [torch.sqrt(v - m * m + torch.finfo(v.dtype).tiny) + spec.eps for v, m in zip(sq, ga)]
        else:
            avg = [torch.sqrt(v + torch.finfo(v.dtype).tiny) + spec.eps for v in sq]
        grads = [g / d for g, d in zip(grads, avg)]
    if spec.momentum:
        if "buf" not in prev:
            buf = list(grads)
        else:
            buf = [spec.momentum * b + (1 - spec.dampening) * g for b, g in zip(prev["buf"], grads)]
        new["buf"] = buf
        grads = [g + spec.momentum * b for g, b in zip(grads, buf)] if spec.nesterov else buf
    return [p - lr * g for p, g in zip(params, grads)], new


def _torch_state(opt: torch.optim.Optimizer, params: list[torch.Tensor], name: str) -> dict:
    """``torch.optim``'s running state of ``params`` under the names :func:`_differentiable_update` uses."""
    st = [opt.state.get(p, {}) for p in params]
    if not st or "step" not in st[0] and "momentum_buffer" not in st[0] and "square_avg" not in st[0]:
        return {}
    out: dict[str, Any] = {"count": int(st[0].get("step", 0))}
    for ours, theirs in (
        ("mu", "exp_avg"),
        ("nu", "exp_avg_sq"),
        ("nu_max", "max_exp_avg_sq"),
        ("sq", "square_avg"),
        ("ga", "grad_avg"),
        ("buf", "momentum_buffer"),
    ):
        if st[0].get(theirs) is not None:
            out[ours] = [s[theirs].detach().clone() for s in st]
    return out


def unrolled_step(run: ReferenceRun, inputs: dict[str, Any]) -> dict[str, float]:
    """Unrolled GAN: D steps as alternating; G's loss against a copy of D unrolled ``k`` steps with
    ``torch.autograd.grad(create_graph=True)`` and a differentiable optimizer, then D restored."""
    loop: Unrolled = run.gan.loop
    run.begin(inputs)
    d, g = inputs["disc"], inputs["gen"]
    d_losses = []
    for i in range(loop.n_disc):
        real = batch_at(d["real"], i)
        fake = run.g(None if d["z"] is None else d["z"][i], real.cond, run.key())
        d_losses.append(disc_update(run, real, fake, d["noise"][i]))
    real_g = batch_at(g["real"], 0) if "real" in g else None
    z_g = None if g["z"] is None else g["z"][0]
    if not loop.unroll:
        g_loss = gen_update(run, z_g, real_g)
        run.end()
        return {"disc/loss": _f(torch.stack(d_losses).mean()), "gen/loss": _f(g_loss)}
    u = inputs["unroll"]
    look_keys = [run.key() for _ in range(loop.unroll)]
    final_key = run.key()
    backup_d = {k: v.detach().clone() for k, v in run.D.state_dict().items()}
    backup_g_buffers = run.buffers(run.G)
    spec = run._spec("disc")
    d_params = list(run.D.parameters())
    names = [n for n, _ in run.D.named_parameters()]
    ahead = [p.detach().clone().requires_grad_(True) for p in d_params]
    state = _torch_state(run.opt_d, d_params, spec.name)
    run.opt_g.zero_grad()
    for j in range(loop.unroll):
        real = batch_at(u["real"], j)
        run._keys, run._count = look_keys[j], 0
        # each look-ahead step starts from the buffers the D phase left
        _restore_buffers(run.D, backup_d)
        _restore_buffers(run.G, backup_g_buffers)
        fake = run.g(None if u["z"] is None else u["z"][j], real.cond, run.key())  # not detached: depends on G
        run.d_override = dict(zip(names, ahead))
        loss = disc_loss(run, real, fake, u["noise"][j])
        grads = torch.autograd.grad(loss, ahead, create_graph=True)
        ahead, state = _differentiable_update(spec, ahead, list(grads), state, loop.stop_opt_grad)
        for c in loop.constraints:
            ahead = [torch.clamp(a, -run.hparams[c.name], run.hparams[c.name]) for a in ahead]
        run.d_override = None
    _restore_buffers(run.D, backup_d)
    _restore_buffers(run.G, backup_g_buffers)
    run._keys, run._count = final_key, 0
    fake = run.g(z_g, real_g.cond if real_g is not None else None, run.key())
    run.d_override = dict(zip(names, ahead))
    g_loss = gen_loss_of_fake(run, fake, real_g)
    run.d_override = None
    g_loss.backward()
    run.optimizer_step("gen")
    _restore_buffers(run.D, backup_d)  # D restored after the G step
    run.end()
    return {"disc/loss": _f(torch.stack(d_losses).mean()), "gen/loss": _f(g_loss)}


def _restore_buffers(module: torch.nn.Module, buffers: dict) -> None:
    """Put saved buffers back as fresh tensors (not in place: a look-ahead's graph may still hold the
    tensors BatchNorm wrote, and autograd checks their versions)."""
    for mod_name, mod in module.named_modules():
        for b_name in list(mod._buffers):
            full = f"{mod_name}.{b_name}" if mod_name else b_name
            if full in buffers and mod._buffers[b_name] is not None:
                mod._buffers[b_name] = buffers[full].detach().clone()


REFERENCES: dict[type, ImperativeStep] = {
    Alternating: alternating_step,
    ReuseFake: reuse_fake_step,
    Pix2Pix: pix2pix_step,
    Adaptive: adaptive_step,
    Extragradient: extragradient_step,
    Optimistic: optimistic_step,
    Consensus: consensus_step,
    Simultaneous: simultaneous_step,
    Unrolled: unrolled_step,
}


def reference_step_for(gan: GAN) -> ImperativeStep:
    """The imperative step that matches ``gan.loop`` (by its exact class)."""
    fn = REFERENCES.get(type(gan.loop))
    if fn is None:
        raise ValueError(
            f"no imperative reference for loop {type(gan.loop).__name__}; pass your own step "
            "(testing.compare(..., imperative_step=...))"
        )
    return fn
