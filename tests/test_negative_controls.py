"""Negative controls for every loop's equivalence proof: each fails on the bugs it exists to catch.

An equivalence proof (``testing.assert_equivalent``: the functional loop against its imperative
``nn.Module`` + ``torch.optim`` + ``.detach()`` form) is only worth something if it reports a loop
that is wrong. For every loop of the research API this file plants the classic GAN-loop bugs in
the imperative side, one at a time, by patching :mod:`funcgan.testing.reference` for the duration
of one check, and asserts that the proof reports a difference; the same system with the patch
removed must pass (so the bug, not the system, is what the proof saw).

The bugs, and the loops they apply to:

* **no detach**: D's loss on ``G(z)`` without ``.detach()`` (``backward(retain_graph=True)``, as a
  user silencing autograd's error writes it) and G's gradients zeroed once at the top of the
  step, so D's loss gradient reaches G's update. Every loop with a D update on G's samples; for
  the simultaneous family it is both losses backpropagated into shared ``.grad`` (each player's
  gradient then carries the other's loss).
* **stale D**: G's update sees D's weights from before this step's D updates. The alternating
  loops. (For the loops that reuse one batch of samples, ``ReuseFake`` and ``Pix2Pix``, "G's
  update before D's" is this same computation; the alternating loop's own swapped-order control
  is in ``tests/test_loops.py``.)
* **per-batch penalty**: the gradient penalty's interpolation coefficient drawn once per batch
  instead of once per example. Every loop.
* **EMA swapped**: G's average with ``decay`` and ``1 - decay`` exchanged. Every loop.
* **the loop's own idea dropped**: extragradient without the extrapolation, optimistic without
  the ``2 u_t - u_{t-1}`` correction, consensus without its regulariser (and with gamma's sign
  flipped), unrolled G not differentiated through the look-ahead (each is plain simultaneous /
  look-ahead-as-constant descent).
* **another run's keys** is in ``tests/test_loops.py`` for every loop.

All checks run in float64 (tolerance 1e-10, see ``tests/test_loops.py``): the planted bugs move
parameters by ~1e-4 or more after two steps, far outside round-off.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from funcgan import loops, systems, testing
from funcgan import penalties as P
from funcgan.testing import reference as ref

ALTERNATING_FAMILY = ("alternating", "reuse_fake", "pix2pix", "adaptive")
SIMULTANEOUS_FAMILY = ("simultaneous", "extragradient", "optimistic", "consensus")


def _system(name: str, **options: Any):
    if name == "unrolled":
        options.setdefault("loop_options", {"unroll": 1})
    if name == "pix2pix":
        return systems.make_system("pix2pix", batch_size=4, **options)
    return systems.make_system("ring8", hidden=8, batch_size=8, scheme=loops.LOOPS[name], **options)


def _caught(system, bug_step=None, steps: int = 2) -> None:
    """The proof reports ``bug_step`` (or the patches in force) and passes without them."""
    with pytest.raises(AssertionError, match="differ"):
        testing.assert_equivalent(system, steps=steps, dtype=torch.float64, imperative_step=bug_step)


# ----------------------------------------------------------------------------- no detach


def _no_detach_disc_update(run, real, fake, noise, **kwargs):
    run.opt_d.zero_grad()
    loss = ref.disc_loss(run, real, fake, noise, **kwargs)  # the bug: fake not detached
    loss.backward(retain_graph=True)
    run.optimizer_step("disc")
    run.constrain_d()
    return loss.detach()


def _plant_no_detach(monkeypatch) -> None:
    begin = ref.ReferenceRun.begin

    def begin_zeroing_g_once(self, inputs):
        begin(self, inputs)
        type(self.opt_g).zero_grad(self.opt_g)  # zero_grad at the top of the iteration only
        self.opt_g.zero_grad = lambda set_to_none=True: None

    monkeypatch.setattr(ref.ReferenceRun, "begin", begin_zeroing_g_once)
    monkeypatch.setattr(ref, "disc_update", _no_detach_disc_update)


def _shared_grad_field(run, real, z, noise, create_graph: bool = False):
    """The simultaneous field as ``d_loss.backward(); g_loss.backward()`` into shared ``.grad`` with no
    detach: each player's gradient is that of both losses."""
    fake = run.g(z, real.cond, run.key())
    d_loss = ref.disc_loss(run, real, fake, noise)
    g_loss = ref.gen_loss_of_fake(run, fake, real)
    both = d_loss + g_loss
    g_params, d_params = list(run.G.parameters()), list(run.D.parameters())
    grads = torch.autograd.grad(both, g_params + d_params, create_graph=create_graph, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, g_params + d_params)]
    return grads[: len(g_params)], grads[len(g_params) :], d_loss, g_loss


@pytest.mark.parametrize("name", [*ALTERNATING_FAMILY[:3], "unrolled"])
def test_no_detach_is_caught_in_every_loop_that_updates_d_on_samples(name, monkeypatch):
    system = _system(name)
    testing.assert_equivalent(system, steps=2, dtype=torch.float64)
    _plant_no_detach(monkeypatch)
    _caught(system)


def test_no_detach_is_not_a_bug_where_the_samples_are_drawn_without_a_graph(monkeypatch):
    """Seed 003's loop (``Adaptive``) draws D's samples under ``torch.no_grad()``: with no graph to
    G, a missing ``.detach()`` changes nothing, and the proof rightly still passes."""
    system = _system("adaptive")
    _plant_no_detach(monkeypatch)
    testing.assert_equivalent(system, steps=2, dtype=torch.float64)


@pytest.mark.parametrize("name", SIMULTANEOUS_FAMILY)
def test_shared_grad_without_detach_is_caught_in_every_simultaneous_loop(name, monkeypatch):
    system = _system(name)
    testing.assert_equivalent(system, steps=2, dtype=torch.float64)
    monkeypatch.setattr(ref, "_simultaneous_grads", _shared_grad_field)
    _caught(system)


# ----------------------------------------------------------------------------- stale D


def _plant_stale_disc(monkeypatch) -> None:
    """G's forwards through D use the weights D had before this step's first D update."""
    update, end = ref.disc_update, ref.ReferenceRun.end

    def stale_update(run, real, fake, noise, **kwargs):
        before = run.d_override or {n: p.detach().clone() for n, p in run.D.named_parameters()}
        run.d_override = None  # D's own loss at its live weights
        loss = update(run, real, fake, noise, **kwargs)
        run.d_override = before
        return loss

    def end_fresh(self):
        self.d_override = None
        end(self)

    monkeypatch.setattr(ref, "disc_update", stale_update)
    monkeypatch.setattr(ref.ReferenceRun, "end", end_fresh)


@pytest.mark.parametrize("name", ALTERNATING_FAMILY)
def test_stale_disc_is_caught_in_every_alternating_loop(name, monkeypatch):
    system = _system(name)
    testing.assert_equivalent(system, steps=3, dtype=torch.float64)
    _plant_stale_disc(monkeypatch)
    _caught(system, steps=3)


# ----------------------------------------------------------------------------- penalties and EMA


def _per_batch_eps(tree):
    """Every gradient-penalty noise in the step's inputs made one coefficient per batch."""
    if isinstance(tree, dict):
        out = {k: _per_batch_eps(v) for k, v in tree.items()}
        gp = out.get("gp")
        if isinstance(gp, dict) and isinstance(gp.get("eps"), torch.Tensor):
            out["gp"] = {**gp, "eps": gp["eps"][:1].expand_as(gp["eps"]).clone()}
        return out
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # a Batch
        return type(tree)(*(_per_batch_eps(v) for v in tree))
    if isinstance(tree, (list, tuple)):
        return type(tree)(_per_batch_eps(v) for v in tree)
    return tree


@pytest.mark.parametrize("name", list(loops.LOOPS))
def test_per_batch_gradient_penalty_is_caught_in_every_loop(name):
    system = _system(name, penalties=(P.gradient_penalty(10.0),))
    right = ref.reference_step_for(system.gan)
    testing.assert_equivalent(system, steps=2, dtype=torch.float64)
    _caught(system, lambda run, inputs: right(run, _per_batch_eps(inputs)))


@pytest.mark.parametrize("name", list(loops.LOOPS))
def test_swapped_ema_is_caught_in_every_loop(name):
    system = _system(name, ema=0.9)
    right = ref.reference_step_for(system.gan)

    def swapped(run, inputs):
        decay = run.hparams["ema_decay"]
        run.hparams["ema_decay"] = 1 - decay
        try:
            return right(run, inputs)
        finally:
            run.hparams["ema_decay"] = decay

    testing.assert_equivalent(system, steps=2, dtype=torch.float64)
    _caught(system, swapped)


# ----------------------------------------------------------------------------- each loop's own idea


@pytest.mark.parametrize("name", ["extragradient", "optimistic", "consensus"])
def test_a_loop_that_drops_its_own_correction_is_caught(name):
    """Extragradient without extrapolation, optimistic without ``2 u_t - u_{t-1}``, consensus without
    its regulariser: each is plain simultaneous descent, and the proof must tell them apart."""
    system = _system(name)
    testing.assert_equivalent(system, steps=2, dtype=torch.float64)
    _caught(system, ref.simultaneous_step)


def test_consensus_with_gamma_negated_is_caught():
    system = _system("consensus")

    def negated(run, inputs):
        run.hparams["consensus"] = -abs(run.hparams["consensus"])
        return ref.consensus_step(run, inputs)

    _caught(system, negated)


def test_unrolled_g_not_differentiated_through_the_look_ahead_is_caught(monkeypatch):
    """The unrolled loop's point: G's gradient flows through D's look-ahead updates. A look-ahead
    taken as a constant (each step's result detached) is caught."""
    system = _system("unrolled", loop_options={"unroll": 2})
    update = ref._differentiable_update

    def constant_look_ahead(*args, **kwargs):
        out, state = update(*args, **kwargs)
        return [o.detach().requires_grad_(True) for o in out], state

    monkeypatch.setattr(ref, "_differentiable_update", constant_look_ahead)
    _caught(system)
