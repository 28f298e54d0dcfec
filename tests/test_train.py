"""Proofs that the functional steps train exactly like the imperative .detach() loops.

Tolerances (max absolute difference over all steps):
- float64, 1e-10 on parameters, Adam moments and per-step losses: both sides
  evaluate the same formulas; what differs is float64 round-off in reduction
  order (clip norms, the optimizer's fused ops), measured at ~1e-16 after 20 steps.
- float32: the same run in float32 is checked against float64 ground truth
  rather than bitwise: each side's float32 trajectory must stay within 1e-3 of
  the other. Per-step round-off is ~1e-7 relative; Adam's first steps move a
  parameter by ~lr * sign(g), so a coordinate whose gradient is within round-off
  of zero can move by up to lr = 0.1 in the other direction; such coordinates
  are rare in these draws, and the tolerance is the measured worst case (~1e-7
  for the seed systems) widened to cover learning rates up to 0.1 for 20 steps.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from funcgan import losses as L
from funcgan import nets, systems, testing
from funcgan import random as fr
from funcgan._strategies import LOOPS, gans, step_counts
from funcgan.optim.base import GradientTransformation
from funcgan.reference import ReferenceRun, alternating_step
from funcgan.train import Alternating, init_state, make_train_step, step_key, update_player
from funcgan.tree import tree_map

F64_TOL = testing.DEFAULT_TOLERANCES[torch.float64]
F32_TOL = testing.DEFAULT_TOLERANCES[torch.float32]


@pytest.mark.parametrize("loop", LOOPS)
@given(data=st.data(), steps=step_counts, seed=st.integers(0, 2**20))
def test_functional_equals_imperative_float64(loop, data, steps, seed):
    system = data.draw(gans(loop), label="system")
    report = testing.compare(system, seed=seed, steps=steps, dtype=torch.float64)
    assert not report.exceeds(F64_TOL), report


@pytest.mark.parametrize("loop", LOOPS)
@settings(max_examples=6)
@given(data=st.data(), steps=st.integers(1, 10), seed=st.integers(0, 2**20))
def test_functional_equals_imperative_float32(loop, data, steps, seed):
    system = data.draw(gans(loop), label="system")
    report = testing.compare(system, seed=seed, steps=steps, dtype=torch.float32)
    assert not report.exceeds(F32_TOL), report


@pytest.mark.parametrize("problem", list(systems.PROBLEMS))
def test_seed_systems_equal_their_references(problem):
    system = systems.make_system(problem)
    testing.assert_equivalent(system, seed=1, steps=20, dtype=torch.float64, tolerances=F64_TOL)
    r32 = testing.assert_equivalent(system, seed=1, steps=20, dtype=torch.float32, tolerances=F32_TOL)
    assert r32.params < 1e-5  # measured ~5e-8: the seed systems are far inside the bound


def test_adaptive_schedule_exercises_both_branches():
    """Seed 003's schedule: over a run, G trains on some steps and not on others,
    and when it trains it stops at the bound or when |l| >= g_threshold."""
    system = systems.make_system("mnist")
    gan = system.gan
    state = init_state(gan, fr.key(0))
    step = make_train_step(gan)
    n_steps, rest = [], []
    for _ in range(30):
        state, m = step(state, system.data)
        n_steps.append(int(m["gen/steps"]))
        rest.append(int(m["disc/rest_k"]))
    assert 0 in n_steps and any(n > 0 for n in n_steps)
    assert all(0 <= n <= gan.loop.max_gen_steps for n in n_steps)
    for n, r in zip(n_steps, rest):
        if n > 0:
            assert r >= 1  # countdown set to int(1 + |l| * 6)


# ----------------------------------------------------------------------------- gradient level


def _seed000_setup(dtype=torch.float64, seed=0):
    system = systems.make_system("gaussian1d", batch_size=16)
    gan = system.gan
    state = init_state(gan, fr.key(seed), dtype=dtype)
    inputs = gan.loop.draw(gan, step_key(state), (), dtype)
    return gan, state, inputs


def test_disc_gradient_equals_autograd_with_detach():
    gan, s, inputs = _seed000_setup()
    real, z = inputs["real"][0][0], inputs["z_disc"][0]
    fake, _ = gan.G(s.gen_params, s.gen_buffers, z)

    def loss(p):
        return L.disc_bce(gan.D(p, {}, (real,))[0], gan.D(p, {}, (fake,))[0])

    ours = torch.func.grad(loss)(s.disc_params)
    run = ReferenceRun(gan, s)
    d_loss = L.disc_bce(run.D(real), run.D(run.G(z).detach()))
    d_loss.backward()
    for n, p in run.D.named_parameters():
        torch.testing.assert_close(ours[n], p.grad, rtol=1e-12, atol=1e-14)
    assert all(p.grad is None for p in run.G.parameters())  # detach: nothing reached G


def test_gen_gradient_equals_autograd():
    gan, s, inputs = _seed000_setup()
    z = inputs["z_gen"]

    def loss(p):
        return L.gen_bce_nonsaturating(gan.D(s.disc_params, {}, (gan.G(p, {}, z)[0],))[0])

    ours = torch.func.grad(loss)(s.gen_params)
    run = ReferenceRun(gan, s)
    L.gen_bce_nonsaturating(run.D(run.G(z))).backward()
    for n, p in run.G.named_parameters():
        torch.testing.assert_close(ours[n], p.grad, rtol=1e-12, atol=1e-14)


def _zero_updates() -> GradientTransformation:
    """An optimizer that never moves its player (to isolate one player's update)."""
    return GradientTransformation(lambda p: (), lambda g, s, p=None: (tree_map(torch.zeros_like, g), s))


def _with_frozen(gan, player):
    frozen = replace(gan)
    object.__setattr__(frozen, f"{player}_tx", _zero_updates())
    return frozen


@pytest.mark.parametrize("problem", list(systems.PROBLEMS))
def test_disc_update_leaves_gen_bitwise_unchanged_and_gen_update_leaves_disc(problem):
    system = systems.make_system(problem)
    gan = system.gan
    state = init_state(gan, fr.key(3))
    # G frozen: whatever the D phase does, G's parameters come out bitwise equal
    g_frozen = _with_frozen(gan, "gen")
    s0 = state._replace(gen_opt_state=())
    after, _ = make_train_step(g_frozen)(s0, system.data)
    for k in state.gen_params:
        assert torch.equal(after.gen_params[k], state.gen_params[k])
    # the G phase does not move D: D after the full step == D after the D phase alone
    full, _ = make_train_step(gan)(state, system.data)
    for k in state.disc_params:
        assert torch.equal(full.disc_params[k], after.disc_params[k])
        assert not torch.equal(full.disc_params[k], state.disc_params[k]) or state.disc_params[k].abs().sum() == 0


def test_gen_update_computes_no_disc_parameter_gradients():
    """FLOPs of the functional G step vs the imperative one: the difference is
    exactly D's weight-gradient matmuls (2 * B * in * out per Linear layer), which
    the imperative loss.backward() computes and the functional step never does."""
    system = systems.make_system("pix2pix", batch_size=8)
    gan = system.gan
    state = init_state(gan, fr.key(0))
    inputs = gan.loop.draw(gan, step_key(state), system.data, torch.float32)
    cond, target = inputs["real"]
    fake, gen_vjp, _ = torch.func.vjp(lambda p: gan.G(p, {}, cond), state.gen_params, has_aux=True)

    def g_of_fake(f):
        return L.bce(gan.D(state.disc_params, {}, (cond, f))[0], 1.0)

    with testing.MatmulFlops() as fc_func:
        d_fake, _ = torch.func.grad_and_value(g_of_fake)(fake)
        gen_vjp(d_fake)
    run = ReferenceRun(gan, state)
    fake_i = run.G(cond)
    with testing.MatmulFlops() as fc_imp:
        L.bce(run.D(cond, fake_i), 1.0).backward()
    d_weight_grad_flops = sum(2 * cond.shape[0] * m.in_features * m.out_features
                              for m in gan.disc.modules() if isinstance(m, torch.nn.Linear))
    # imperative: D forward + D input-grad + D weight-grad + G backward; functional the same minus D weight-grad
    # (the functional count also contains D's forward, done inside grad_and_value)
    assert fc_imp.flops - fc_func.flops == d_weight_grad_flops
    assert all(p.grad is not None for p in run.D.parameters())  # the imperative one did compute them


# ----------------------------------------------------------------------------- negative controls


def _no_detach_step(run, inputs):
    """The classic bug: no .detach() and no G.zero_grad(), so the D loss moves G."""
    G, D = run.G, run.D
    run.opt_d.zero_grad()
    run.opt_g.zero_grad()
    fake = G(inputs["z_disc"][0])  # missing .detach()
    d_loss = L.disc_bce(D(inputs["real"][0][0]), D(fake))
    d_loss.backward()
    run.opt_d.step()
    g_loss = L.gen_bce_nonsaturating(D(G(inputs["z_gen"])))  # G.grad still holds the D loss's gradient
    run.opt_d.zero_grad()
    g_loss.backward()
    run.opt_g.step()
    return {"disc/loss": float(d_loss.detach()), "gen/loss": float(g_loss.detach())}


def _detached_gen_step(run, inputs):
    """The other bug: the G step on a detached fake gives G no gradient."""
    G, D = run.G, run.D
    D.zero_grad()
    d_loss = L.disc_bce(D(inputs["real"][0][0]), D(G(inputs["z_disc"][0]).detach()))
    d_loss.backward()
    run.opt_d.step()
    G.zero_grad()
    g_loss = L.gen_bce_nonsaturating(D(G(inputs["z_gen"]).detach()))
    g_loss.backward()
    run.opt_g.step()
    return {"disc/loss": float(d_loss.detach()), "gen/loss": float(g_loss.detach())}


@pytest.mark.parametrize("bug", [_no_detach_step, _detached_gen_step])
def test_equivalence_check_catches_classic_bugs(bug):
    system = systems.make_system("gaussian1d")
    with pytest.raises(AssertionError, match="params"):
        testing.assert_equivalent(system, steps=5, dtype=torch.float64, imperative_step=bug)
    # the correct loop passes the same check
    testing.assert_equivalent(system, steps=5, dtype=torch.float64, imperative_step=alternating_step)


# ----------------------------------------------------------------------------- bad input


def test_generator_output_not_matching_disc_input_is_rejected():
    with pytest.raises(ValueError, match=r"generator output has shape \(2,\) per example, but real data .* \(1,\)"):
        s = systems.gaussian1d()
        gan = s.gan.with_options(gen=nets.Seed000Generator(10, 50, out_features=2))
        systems.validate(systems.System(gan, (), "1d", 10, ""))


def test_non_finite_data_is_rejected():
    s = systems.digits()
    x = s.data[0].clone()
    x[3, 5] = float("nan")
    with pytest.raises(ValueError, match="non-finite values in 1 example"):
        systems.validate(systems.System(s.gan, (x,), "image", 10, ""))


def test_integer_data_is_rejected():
    s = systems.digits()
    with pytest.raises(TypeError, match="must be floating point"):
        systems.validate(systems.System(s.gan, ((s.data[0] * 255).to(torch.uint8),), "image", 10, ""))


def test_unknown_problem_and_missing_mnist_dir():
    with pytest.raises(ValueError, match="unknown problem 'cifar'; choose one of gaussian1d"):
        systems.make_system("cifar")
    with pytest.raises(FileNotFoundError, match="data directory '/nonexistent/mnist' does not exist"):
        systems.make_system("mnist", data_dir="/nonexistent/mnist")


def test_bad_loop_options_and_state_overrides():
    with pytest.raises(ValueError, match="n_disc must be an int >= 1"):
        Alternating(n_disc=0)
    gan = systems.gaussian1d().gan
    with pytest.raises(ValueError, match="unknown hyper-parameter 'l1_weight'"):
        init_state(gan, fr.key(0), hparams={"l1_weight": 1.0})
    with pytest.raises(TypeError, match="dtype must be a floating"):
        init_state(gan, fr.key(0), dtype=torch.int32)
    with pytest.raises(ValueError, match="lr must be finite and > 0"):
        systems.gaussian1d(lr=0.0)


def test_step_is_pure():
    """The step neither mutates its input state nor depends on hidden state."""
    system = systems.make_system("digits")
    step = make_train_step(system.gan)
    s0 = init_state(system.gan, fr.key(5))
    snapshot = copy.deepcopy(s0)
    a, ma = step(s0, system.data)
    b, mb = step(s0, system.data)
    for x, y in zip(torch.utils._pytree.tree_leaves(s0), torch.utils._pytree.tree_leaves(snapshot)):
        assert torch.equal(x, y)
    for x, y in zip(torch.utils._pytree.tree_leaves(a), torch.utils._pytree.tree_leaves(b)):
        assert torch.equal(x, y)


def test_update_player_reports_loss_at_old_params():
    p = {"w": torch.tensor([2.0], dtype=torch.float64)}
    from funcgan import optim

    tx = optim.sgd(0.1)
    new, _, loss, aux = update_player(lambda q: ((q["w"] ** 2).sum(), {}), p, tx.init(p), tx)
    assert float(loss) == 4.0 and torch.equal(new["w"], torch.tensor([2.0 - 0.1 * 4.0], dtype=torch.float64))
