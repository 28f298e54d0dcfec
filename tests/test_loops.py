"""Proofs that every functional loop trains exactly like its imperative ``.detach()`` form.

Every loop x every objective it accepts x penalties x network family (MLP, conv +
BatchNorm, spectral norm, dropout, class-conditional, pix2pix pairs) is drawn by
``funcgan.testing.strategies`` and run functionally and imperatively on the same keys.

Tolerances (max absolute difference of parameters, buffers, Adam moments, G's EMA and
per-step losses, over all steps):
- float64, 1e-10: both sides evaluate the same formulas; what differs is float64
  round-off in reduction order (measured ~1e-16 after 12 steps over 800 draws).
- float32, 1e-3: per-step round-off ~1e-7 relative; Adam's first steps move a
  coordinate by ~lr * sign(g), so a coordinate whose gradient is within round-off of
  zero can take an lr-sized step the other way (learning rates go up to 0.1 in these
  draws); measured worst 6e-5 over 300 draws. Objectives invariant to a shift of D's
  output are excluded in float32 (their output bias has an identically zero gradient
  whose round-off Adam turns into lr-sized steps; see the strategies' docstring).

A draw whose *imperative* run blows up (a loss above 1e6; e.g. consensus with gamma 1 and SGD at
0.09 reaches 4e17 in three steps) is discarded (``assume``): the blow-up amplifies round-off by as
much as the losses grow, so both sides legitimately part at any round-off tolerance. Only the
reference's losses decide, so a functional bug that makes a healthy run diverge is still caught.
"""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import funcgan
from funcgan import loops, losses, systems, testing
from funcgan import penalties as P
from funcgan import random as fr
from funcgan.step import init_state, make_train_step, step_key, update_player
from funcgan.testing import reference as ref
from funcgan.testing.strategies import FAMILIES, LOOPS, gans, step_counts

F64 = testing.DEFAULT_TOLERANCES[torch.float64]
F32 = testing.DEFAULT_TOLERANCES[torch.float32]


@pytest.mark.parametrize("loop", LOOPS)
@given(data=st.data(), steps=step_counts, seed=st.integers(0, 2**20))
def test_every_loop_equals_its_imperative_reference_float64(loop, data, steps, seed):
    system = data.draw(gans(loop), label="system")
    report = testing.compare(system, seed=seed, steps=steps, dtype=torch.float64)
    assume(report.reference_peak_loss < 1e6)
    assert not report.exceeds(F64), report


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "pix2pix"])
@settings(max_examples=6)
@given(data=st.data(), steps=step_counts, seed=st.integers(0, 2**20))
def test_every_network_family_equals_its_reference_float64(family, data, steps, seed):
    loop = data.draw(st.sampled_from([n for n in LOOPS if n != "pix2pix"]), label="loop")
    system = data.draw(gans(loop, family), label="system")
    report = testing.compare(system, seed=seed, steps=steps, dtype=torch.float64)
    assume(report.reference_peak_loss < 1e6)
    assert not report.exceeds(F64), report


@pytest.mark.parametrize("loop", LOOPS)
@settings(max_examples=4)
@given(data=st.data(), steps=st.integers(1, 8), seed=st.integers(0, 2**20))
def test_every_loop_equals_its_imperative_reference_float32(loop, data, steps, seed):
    system = data.draw(gans(loop, float32=True), label="system")
    report = testing.compare(system, seed=seed, steps=steps, dtype=torch.float32)
    assume(report.reference_peak_loss < 1e6)
    assert not report.exceeds(F32), report


@pytest.mark.parametrize("problem", list(systems.PROBLEMS))
def test_built_in_systems_equal_their_references(problem):
    small = {"dcgan": {"width": 4, "batch_size": 8}, "sngan": {"width": 4, "batch_size": 8, "n_disc": 2},
             "cgan": {"width": 4, "batch_size": 8}}.get(problem, {})
    system = systems.make_system(problem, **small)
    testing.assert_equivalent(system, seed=1, steps=8, dtype=torch.float64)
    testing.assert_equivalent(system, seed=1, steps=8, dtype=torch.float32)


def test_adaptive_schedule_exercises_both_branches():
    """Seed 003's schedule: G trains on some steps and not on others; when it trains it stops at the
    bound or when |l| >= g_threshold, and the countdown is then int(1 + |l| * 6)."""
    system = systems.make_system("mnist")
    state = init_state(system.gan, fr.key(0))
    step = make_train_step(system.gan)
    n_steps, rest = [], []
    for _ in range(30):
        state, m = step(state, system.data)
        n_steps.append(int(m["gen/steps"]))
        rest.append(int(m["disc/rest_k"]))
    assert 0 in n_steps and any(n > 0 for n in n_steps)
    assert all(0 <= n <= system.gan.loop.max_gen_steps for n in n_steps)
    assert all(r >= 1 for n, r in zip(n_steps, rest) if n > 0)


# ----------------------------------------------------------------------------- gradient level


@pytest.mark.parametrize("n_disc", [1, 3])
def test_adaptive_g_phase_draws_its_dropout_keys_after_the_d_phase(n_disc):
    """Seed 003's loop with keyed dropout in both networks, warm-up D steps and a penalty: the G phase's
    forwards take the keys that follow the D phase's (``Adaptive._keys_before_gen``), as the imperative
    loop's running key counter does. G trains at the first step and at every other after it."""
    from torch import nn

    def net(n_in, n_out):
        return nn.Sequential(nn.Linear(n_in, 6), nn.Tanh(), nn.Dropout(0.5), nn.Linear(6, n_out))

    loop = loops.Adaptive(objective=losses.lsgan(), penalties=(P.r1(0.1),), n_disc=n_disc, max_gen_steps=3,
                          d_threshold=1e3, g_threshold=1e3, countdown_scale=0.0)
    gan = funcgan.GAN(gen=net(3, 2), disc=net(2, 1), loop=loop, sample_real=systems.gaussian_sampler(0.5, 1.0, 2),
                      latent_dim=3, batch_size=4)
    system = systems.System(gan, (), "custom")
    report = testing.compare(system, seed=5, steps=4, dtype=torch.float64)
    assert not report.exceeds(F64), report
    trained = []
    state = init_state(gan, fr.key(5), dtype=torch.float64)
    step = make_train_step(gan)
    for _ in range(4):
        state, m = step(state, ())
        trained.append(int(m["gen/steps"]))
    assert trained == [3, 0, 3, 0]


def _seed000(dtype=torch.float64, seed=0):
    system = systems.make_system("gaussian1d", batch_size=16)
    gan = system.gan
    state = init_state(gan, fr.key(seed), dtype=dtype)
    inputs = gan.loop.draw(gan, step_key(state), (), dtype)
    return gan, state, inputs


def test_disc_gradient_equals_autograd_with_detach():
    gan, s, inputs = _seed000()
    real, z = inputs["disc"]["real"].x[0], inputs["disc"]["z"][0]
    fake, _ = gan.G(s.gen.params, s.gen.buffers, z, None)
    obj = gan.loop.objective

    def loss(p):
        return obj.disc(gan.D(p, {}, real, None)[0], gan.D(p, {}, fake, None)[0])

    ours = torch.func.grad(loss)(s.disc.params)
    run = ref.ReferenceRun(gan, s)
    d_loss = obj.disc(run.D(real), run.D(run.G(z).detach()))
    d_loss.backward()
    for n, p in run.D.named_parameters():
        torch.testing.assert_close(ours[n], p.grad, rtol=1e-12, atol=1e-14)
    assert all(p.grad is None for p in run.G.parameters())  # detach: nothing reached G


def test_gen_gradient_equals_autograd():
    gan, s, inputs = _seed000()
    z = inputs["gen"]["z"][0]
    obj = gan.loop.objective

    def loss(p):
        return obj.gen(None, gan.D(s.disc.params, {}, gan.G(p, {}, z, None)[0], None)[0])

    ours = torch.func.grad(loss)(s.gen.params)
    run = ref.ReferenceRun(gan, s)
    obj.gen(None, run.D(run.G(z))).backward()
    for n, p in run.G.named_parameters():
        torch.testing.assert_close(ours[n], p.grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("problem", ["gaussian1d", "digits", "pix2pix", "mnist", "ring8"])
def test_disc_update_leaves_gen_unchanged_and_gen_update_leaves_disc(problem):
    """Freeze G (an optimizer that returns zero updates): the D phase leaves G bitwise as it was, and a
    full step leaves D exactly as the D phase alone does (the G update moves no D parameter)."""
    system = systems.make_system(problem)
    gan = system.gan
    zero = funcgan.optim.GradientTransformation(lambda p: (), lambda g, s, p=None: (
        {k: torch.zeros_like(v) for k, v in g.items()}, s))
    frozen = gan.with_options(gen_opt=zero)
    state = init_state(gan, fr.key(3))
    after, _ = make_train_step(frozen)(state._replace(gen=state.gen._replace(opt_state=())), system.data)
    for k in state.gen.params:
        assert torch.equal(after.gen.params[k], state.gen.params[k])
    full, _ = make_train_step(gan)(state, system.data)
    for k in state.disc.params:
        assert torch.equal(full.disc.params[k], after.disc.params[k])
    assert any(not torch.equal(full.disc.params[k], state.disc.params[k]) for k in state.disc.params)


def test_gen_update_computes_no_disc_parameter_gradients():
    """Matmul FLOPs of the functional G step vs the imperative one: the difference is exactly D's
    weight-gradient products (2 * B * in * out per Linear layer), which loss.backward() computes."""
    system = systems.make_system("pix2pix", batch_size=8)
    gan = system.gan
    state = init_state(gan, fr.key(0))
    real = gan.sample_real(fr.key(1), system.data, (8,), torch.float32)
    cond = real.cond
    fake, gen_vjp, _ = torch.func.vjp(lambda p: gan.G(p, {}, None, cond), state.gen.params, has_aux=True)
    obj = gan.loop.objective

    def g_of_fake(f):
        return obj.gen(None, gan.D(state.disc.params, {}, f, cond)[0])

    with testing.MatmulFlops() as fc_func:
        d_fake, _ = torch.func.grad_and_value(g_of_fake)(fake)
        gen_vjp(d_fake)
    run = ref.ReferenceRun(gan, state)
    fake_i = run.G(cond)
    with testing.MatmulFlops() as fc_imp:
        obj.gen(None, run.D(fake_i, cond)).backward()
    d_weight_grad_flops = sum(2 * 8 * m.in_features * m.out_features
                              for m in gan.disc.modules() if isinstance(m, torch.nn.Linear))
    assert fc_imp.flops - fc_func.flops == d_weight_grad_flops
    assert all(p.grad is not None for p in run.D.parameters())


def test_step_is_pure():
    system = systems.make_system("digits")
    step = make_train_step(system.gan)
    s0 = init_state(system.gan, fr.key(5))
    snapshot = copy.deepcopy(s0)
    a, _ = step(s0, system.data)
    b, _ = step(s0, system.data)
    for x, y in zip(funcgan.tree.tree_leaves(s0), funcgan.tree.tree_leaves(snapshot)):
        assert torch.equal(x, y)
    for x, y in zip(funcgan.tree.tree_leaves(a), funcgan.tree.tree_leaves(b)):
        assert torch.equal(x, y)


def test_update_player_reports_loss_at_old_params():
    p = {"w": torch.tensor([2.0], dtype=torch.float64)}
    tx = funcgan.optim.sgd(0.1)
    player = funcgan.PlayerState(p, {}, tx.init(p))
    new, loss, aux = update_player(lambda q, b: ((q["w"] ** 2).sum(), b, {}), player, tx)
    assert float(loss) == 4.0 and torch.equal(new.params["w"], torch.tensor([2.0 - 0.1 * 4.0], dtype=torch.float64))


# ----------------------------------------------------------------------------- negative controls
# Each equivalence proof fails on the bug it exists to catch: a buggy imperative loop (or a buggy
# functional loop) is run against the correct other side and must be reported as different.


def _no_detach(run, inputs):
    """Alternating without .detach() and without G.zero_grad(): D's loss gradient reaches G."""
    run.begin(inputs)
    d, g = inputs["disc"], inputs["gen"]
    real = loops.batch_at(d["real"], 0)
    run.opt_d.zero_grad()
    run.opt_g.zero_grad()
    fake = run.g(d["z"][0], None, run.key())  # missing .detach()
    loss = ref.disc_loss(run, real, fake, d["noise"][0])
    loss.backward()
    run.optimizer_step("disc")
    k = run.key()
    g_loss = ref.gen_loss_of_fake(run, run.g(g["z"][0], None, k), None)
    g_loss.backward()  # G.grad still holds D's loss gradient
    run.optimizer_step("gen")
    run.end()
    return {"disc/loss": float(loss.detach()), "gen/loss": float(g_loss.detach())}


def _stale_disc(run, inputs):
    """G steps against D as it was before D's update."""
    run.begin(inputs)
    d, g = inputs["disc"], inputs["gen"]
    stale = copy.deepcopy(run.D)
    real = loops.batch_at(d["real"], 0)
    loss = ref.disc_update(run, real, run.g(d["z"][0], None, run.key()), d["noise"][0])
    current, run.D = run.D, stale
    g_loss = ref.gen_update(run, g["z"][0], None)
    run.D = current
    run.end()
    return {"disc/loss": float(loss.detach()), "gen/loss": float(g_loss.detach())}


def _swapped_order(run, inputs):
    """G's update before D's."""
    run.begin(inputs)
    d, g = inputs["disc"], inputs["gen"]
    real = loops.batch_at(d["real"], 0)
    k_fake = run.key()
    k1, k2 = run.key(), run.key()
    g_loss = ref.gen_update(run, g["z"][0], None)
    run._count = 0
    fake = run.g(d["z"][0], None, k_fake)
    loss = ref.disc_update(run, real, fake, d["noise"][0])
    del k1, k2
    run.end()
    return {"disc/loss": float(loss.detach()), "gen/loss": float(g_loss.detach())}


def _per_batch_gp(run, inputs):
    """WGAN-GP with one interpolation coefficient for the whole batch."""
    noise = [{**n, "gp": {"eps": n["gp"]["eps"][:1].expand_as(n["gp"]["eps"])}} for n in inputs["disc"]["noise"]]
    return ref.alternating_step(run, {**inputs, "disc": {**inputs["disc"], "noise": noise}})


def _swapped_ema(run, inputs):
    """EMA with decay and 1 - decay swapped."""
    decay = run.hparams["ema_decay"]
    run.hparams["ema_decay"] = 1 - decay
    try:
        return ref.alternating_step(run, inputs)
    finally:
        run.hparams["ema_decay"] = decay


@pytest.mark.parametrize("bug", [_no_detach, _stale_disc, _swapped_order])
def test_equivalence_check_catches_classic_loop_bugs(bug):
    system = systems.make_system("gaussian1d")
    with pytest.raises(AssertionError, match="differ"):
        testing.assert_equivalent(system, steps=4, dtype=torch.float64, imperative_step=bug)
    testing.assert_equivalent(system, steps=4, dtype=torch.float64)  # the correct loop passes


def test_equivalence_check_catches_a_per_batch_gradient_penalty():
    system = systems.make_system("gaussian1d", objective=losses.wasserstein(), penalties=(P.gradient_penalty(10.0),))
    with pytest.raises(AssertionError, match="differ"):
        testing.assert_equivalent(system, steps=3, dtype=torch.float64, imperative_step=_per_batch_gp)
    testing.assert_equivalent(system, steps=3, dtype=torch.float64)


def test_equivalence_check_catches_swapped_ema_weights():
    system = systems.make_system("gaussian1d", ema=0.9)
    with pytest.raises(AssertionError, match="differ"):
        testing.assert_equivalent(system, steps=3, dtype=torch.float64, imperative_step=_swapped_ema)
    testing.assert_equivalent(system, steps=3, dtype=torch.float64)


class _StaleSimultaneous(loops.Simultaneous):
    """A functional bug: 'simultaneous' that lets G see the updated D (alternating in disguise)."""

    def update(self, gan, state, inputs, lazy=None):
        ctx = loops.Context(gan, self, state, inputs, lazy)
        main = inputs["main"]
        real, z, noise = loops.batch_at(main["real"], 0), main["z"][0], main["noise"][0]
        fake, _ = ctx.G(state.gen.params, state.gen.buffers, z, None)
        disc, d_loss, _ = ctx.update_disc(state.disc, real, fake, noise)
        gen, disc, g_loss, _ = ctx.update_gen(state.gen, disc, z, None)
        return state._replace(gen=gen, disc=disc), {"disc/loss": d_loss, "gen/loss": g_loss}


def test_equivalence_check_catches_a_functional_loop_bug():
    system = systems.make_system("ring8", hidden=8, batch_size=8, loop=_StaleSimultaneous())
    with pytest.raises(AssertionError, match="differ"):
        testing.assert_equivalent(system, steps=3, dtype=torch.float64, imperative_step=ref.simultaneous_step)


# ----------------------------------------------------------------------------- composition and bad input


def test_objectives_and_penalties_compose_in_every_loop():
    """One GAN, every loop class, a relativistic objective (where the loop can take it) and all penalties."""
    pens = (P.gradient_penalty(1.0), P.r1(0.5, every=2), P.r2(0.1), P.dragan(0.1), P.weight_clipping(0.5))
    for name, cls in loops.LOOPS.items():
        objective = losses.rasgan() if name not in ("adaptive",) else losses.lsgan()
        kw = {"unroll": 1} if name == "unrolled" else {}
        if name == "pix2pix":
            system = systems.make_system("pix2pix", loop=cls(objective=objective, penalties=pens), batch_size=4)
        else:
            system = systems.make_system("ring8", hidden=6, batch_size=6, loop=cls(objective=objective,
                                                                                    penalties=pens, **kw))
        testing.assert_equivalent(system, steps=3, dtype=torch.float64)


@pytest.mark.parametrize("make,match", [
    (lambda: loops.ReuseFake(objective=losses.rasgan(), split=True), None),
    (lambda: loops.Adaptive(objective=losses.rsgan()), None),
])
def test_loops_that_split_d_refuse_a_relativistic_objective(make, match):
    with pytest.raises(ValueError, match="separates"):
        systems.make_system("gaussian1d", loop=make())


@pytest.mark.parametrize("kw,exc,match", [
    ({"n_disc": 0}, ValueError, "n_disc must be an int >= 1"),
    ({"objective": "hinge"}, TypeError, "objective must be a funcgan.losses.Objective"),
    ({"penalties": (P.r1(1.0), P.r1(2.0))}, ValueError, "penalty names must be unique"),
    ({"penalties": ("gp",)}, TypeError, "penalties must be Penalty or Constraint"),
])
def test_bad_loop_options_are_rejected(kw, exc, match):
    with pytest.raises(exc, match=match):
        loops.Alternating(**kw)


def test_probability_objective_on_logits_and_logit_objective_on_sigmoid_are_rejected():
    with pytest.raises(ValueError, match="ends in a Sigmoid"):
        g = systems.make_system("gaussian1d").gan
        systems.System(g.with_options(loop=loops.Alternating(objective=losses.hinge())), (), "1d")
    with pytest.raises(ValueError, match="works on probabilities"):
        g = systems.make_system("ring8").gan
        systems.System(g.with_options(loop=loops.Alternating(objective=losses.bce_probs())), (), "mixture")


@pytest.mark.parametrize("name", LOOPS)
def test_every_loops_proof_catches_another_seeds_randomness(name):
    """The bug 'wrong key per seed': an imperative loop that draws its batches and noise from another
    run's key. Every loop's equivalence proof must report it (and pass with the right key)."""
    system = (systems.make_system("pix2pix", batch_size=4) if name == "pix2pix"
              else systems.make_system("ring8", hidden=8, batch_size=8, scheme=loops.LOOPS[name]))
    gan = system.gan
    data = tuple(x.to(torch.float64) if x.is_floating_point() else x for x in system.data)
    right = ref.reference_step_for(gan)
    other = fr.key(987_654_321)

    def another_seeds_inputs(run, inputs):
        return right(run, gan.loop.draw(gan, other, data, torch.float64))

    with pytest.raises(AssertionError, match="differ"):
        testing.assert_equivalent(system, steps=2, dtype=torch.float64, imperative_step=another_seeds_inputs)
    testing.assert_equivalent(system, steps=2, dtype=torch.float64)


@given(system=gans())
def test_drawn_discriminators_have_no_biases_under_a_shift_invariant_objective(system):
    """Under an objective that ignores a constant shift of D's output, a D bias may only shift it (its
    gradient is then round-off, which Adam amplifies by up to lr / eps): the drawn Ds have none;
    under the other objectives they keep theirs (every drawn D has some: a Linear or Conv bias, or
    BatchNorm's shift)."""
    biases = [n for n, _ in system.gan.disc.named_parameters() if n.endswith("bias")]
    if system.gan.loop.objective.name in testing.strategies.SHIFT_INVARIANT:
        assert biases == []
    else:
        assert biases
