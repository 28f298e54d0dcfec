"""Game dynamics: penalties vs autograd double-backward, scheme identities, the Dirac-GAN's
known outcomes (Mescheder et al. 2018), mixture metrics, the optimal discriminator."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from funcgan import dynamics, losses, metrics, nets, optim, sweep, systems
from funcgan import random as fr
from funcgan.train import init_state, make_train_step, update_player
from funcgan.tree import tree_leaves


def _mlp_disc(seed, n_in, width, depth, act):
    module = nets.mlp(n_in, [width] * depth, 1, act).double()
    params, _ = nets.init_params(module, fr.key(seed), torch.float64)
    return module, params


# ----------------------------------------------------------------------------- penalties


@given(seed=st.integers(0, 2**20), n_in=st.integers(1, 4), width=st.integers(1, 8), depth=st.integers(1, 2),
       act=st.sampled_from(["tanh", "elu", "leaky_relu"]), B=st.integers(1, 6), gamma=st.floats(0.1, 10.0))
def test_r1_penalty_grad_equals_autograd_double_backward(seed, n_in, width, depth, act, B, gamma):
    module, params = _mlp_disc(seed, n_in, width, depth, act)
    apply = nets.make_apply(module)
    x = fr.normal(fr.key(seed + 1), (B, n_in), torch.float64)
    ours = torch.func.grad(lambda p: dynamics.r1_penalty(lambda v: apply(p, {}, v)[0], x, gamma))(params)
    nets.load_into_module(module, params)
    xr = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(module(xr).sum(), xr, create_graph=True)
    pen = 0.5 * gamma * gx.pow(2).sum(1).mean()
    pen.backward()
    for n, p in module.named_parameters():  # the output bias does not reach the input gradient: None == 0
        torch.testing.assert_close(ours[n], p.grad if p.grad is not None else torch.zeros_like(p), rtol=1e-10, atol=1e-12)


@given(seed=st.integers(0, 2**20), n_in=st.integers(1, 4), width=st.integers(1, 8),
       act=st.sampled_from(["tanh", "elu"]), B=st.integers(1, 6), lam=st.floats(0.1, 10.0))
def test_gradient_penalty_grad_equals_autograd_double_backward(seed, n_in, width, act, B, lam):
    module, params = _mlp_disc(seed, n_in, width, 1, act)
    apply = nets.make_apply(module)
    real = fr.normal(fr.key(seed + 1), (B, n_in), torch.float64)
    fake = fr.normal(fr.key(seed + 2), (B, n_in), torch.float64) + 1
    eps = fr.uniform(fr.key(seed + 3), (B, 1), torch.float64)
    ours = torch.func.grad(lambda p: dynamics.gradient_penalty(lambda v: apply(p, {}, v)[0], real, fake, eps, lam))(params)
    nets.load_into_module(module, params)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (gx,) = torch.autograd.grad(module(x_hat).sum(), x_hat, create_graph=True)
    pen = lam * ((torch.sqrt(gx.pow(2).sum(1) + 1e-12) - 1) ** 2).mean()
    pen.backward()
    for n, p in module.named_parameters():  # the output bias does not reach the input gradient: None == 0
        torch.testing.assert_close(ours[n], p.grad if p.grad is not None else torch.zeros_like(p), rtol=1e-10, atol=1e-12)


def test_penalty_every_n_steps_is_masked():
    s = systems.make_system("dirac", scheme="alternating", loss="minimax", r1=1.0, penalty_every=3)
    plain = systems.make_system("dirac", scheme="alternating", loss="minimax")
    a = init_state(s.gan, fr.key(0), dtype=torch.float64)
    step_a, step_b = make_train_step(s.gan), make_train_step(plain.gan)
    # step 0 is penalised (0 % 3 == 0), so they differ; from the same state at step 1 they agree
    a1, _ = step_a(a, ())
    b1, _ = step_b(a, ())
    assert not torch.equal(a1.disc_params["psi"], b1.disc_params["psi"])
    a2, _ = step_a(a1, ())
    b2, _ = step_b(a1, ())
    assert torch.equal(a2.disc_params["psi"], b2.disc_params["psi"])


# ----------------------------------------------------------------------------- scheme identities


def test_unrolled_with_zero_steps_equals_alternating():
    alt = systems.make_system("ring8", scheme="alternating", batch_size=16, hidden=8)
    unr = systems.make_system("ring8", scheme="unrolled", unroll=0, batch_size=16, hidden=8)
    a = init_state(alt.gan, fr.key(4), dtype=torch.float64)
    b = init_state(unr.gan, fr.key(4), dtype=torch.float64)
    sa, sb = make_train_step(alt.gan), make_train_step(unr.gan)
    for _ in range(5):
        a, _ = sa(a, ())
        b, _ = sb(b, ())
    for x, y in zip(tree_leaves((a.gen_params, a.disc_params)), tree_leaves((b.gen_params, b.disc_params))):
        assert torch.equal(x, y)


def test_unrolled_differs_from_alternating_and_stop_grad_option_matters():
    outs = []
    for kw in ({"scheme": "alternating"}, {"scheme": "unrolled", "unroll": 2},
               {"scheme": "unrolled", "unroll": 2, "unroll_stop_opt_grad": True}):
        s = systems.make_system("ring8", batch_size=16, hidden=8, **kw)
        st_ = init_state(s.gan, fr.key(4), dtype=torch.float64)
        st_, _ = make_train_step(s.gan)(st_, ())
        outs.append(st_.gen_params["0.weight"])
    assert not torch.allclose(outs[0], outs[1])
    assert not torch.equal(outs[1], outs[2])


def test_simultaneous_and_alternating_match_their_definitions_on_dirac():
    """One SGD step of the minimax Dirac-GAN from (theta, psi) = (1, 1), lr h:
    dL_D/dpsi = theta * sigmoid(psi * theta), dL_G/dtheta = -psi * sigmoid(psi * theta).
    Simultaneous uses psi_0 in G's gradient; alternating uses psi_1."""
    h, th, ps = 0.1, 1.0, 1.0
    sig = lambda t: 1 / (1 + math.exp(-t))
    psi1 = ps - h * th * sig(ps * th)
    expected = {"simultaneous": (th + h * ps * sig(ps * th), psi1),
                "alternating": (th + h * psi1 * sig(psi1 * th), psi1)}
    for scheme, (theta_exp, psi_exp) in expected.items():
        s = systems.make_system("dirac", scheme=scheme, loss="minimax", lr=h)
        out, _ = make_train_step(s.gan)(init_state(s.gan, fr.key(0), dtype=torch.float64), ())
        assert abs(float(out.gen_params["theta"]) - theta_exp) < 1e-14
        assert abs(float(out.disc_params["psi"]) - psi_exp) < 1e-14


# ----------------------------------------------------------------------------- Dirac-GAN outcomes

R0 = math.sqrt(2.0)


def _dirac_radius(steps=600, **kw):
    s = systems.make_system("dirac", **{"loss": "minimax", **kw})
    state = init_state(s.gan, fr.key(0), dtype=torch.float64)
    step = make_train_step(s.gan)
    for _ in range(steps):
        state, _ = step(state, ())
    return math.hypot(float(state.gen_params["theta"]), float(state.disc_params["psi"]))


@pytest.mark.parametrize(
    "kw,outcome",
    [
        ({"scheme": "simultaneous"}, "diverges"),  # Mescheder et al. 2018, Sec. 3: spirals outwards
        ({"scheme": "alternating"}, "oscillates"),  # stays on a cycle around the equilibrium
        ({"scheme": "alternating", "loss": "wasserstein"}, "oscillates"),  # WGAN: not convergent
        ({"scheme": "alternating", "loss": "wasserstein", "gp": 1.0}, "does not converge"),  # WGAN-GP: not convergent
        ({"scheme": "alternating", "r1": 1.0}, "converges"),  # zero-centred penalties: convergent
        ({"scheme": "alternating", "r2": 1.0}, "converges"),
        ({"scheme": "simultaneous", "r1": 1.0}, "converges"),
        ({"scheme": "consensus"}, "converges"),  # consensus optimization: convergent
        ({"scheme": "unrolled", "unroll": 5}, "converges"),
        ({"scheme": "extragradient"}, "converges slowly"),
        ({"scheme": "optimistic"}, "converges slowly"),
    ],
)
def test_dirac_gan_outcomes(kw, outcome):
    r = _dirac_radius(**kw)
    if outcome == "diverges":
        assert r > 1.5 * R0
    elif outcome == "oscillates":
        assert 0.8 * R0 < r < 1.25 * R0
    elif outcome == "does not converge":
        assert r > 0.8 * R0
    elif outcome == "converges":
        assert r < 1e-2
    else:
        r_more = _dirac_radius(steps=1200, **kw)
        assert r < 0.6 * R0 and r_more < 0.75 * r


# ----------------------------------------------------------------------------- EMA, vmap, compile


def test_generator_ema_is_polyak_average_from_start_step():
    s = systems.make_system("dirac", scheme="alternating", loss="minimax", ema=0.9)
    gan = s.gan.with_options(ema_start=2)
    state = init_state(gan, fr.key(0), dtype=torch.float64)
    step = make_train_step(gan)
    ema = None
    for t in range(6):
        state, _ = step(state, ())
        theta = state.gen_params["theta"]
        ema = theta.clone() if t < 2 else 0.9 * ema + 0.1 * theta
        torch.testing.assert_close(state.gen_ema["theta"], ema, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("scheme", dynamics.SCHEMES)
def test_every_scheme_vmaps_like_lone_runs(scheme):
    system = systems.make_system("ring8", scheme=scheme, unroll=2, batch_size=8, hidden=8, r1=0.5)
    result = sweep.run(system, sweep.grid(range(3)), steps=3, dtype=torch.float64, compile=False)
    lone = init_state(system.gan, fr.key(2), dtype=torch.float64)
    step = make_train_step(system.gan)
    for _ in range(3):
        lone, _ = step(lone, ())
    got = sweep.seed_state(result.state, 2)
    for a, b in zip(tree_leaves(got.gen_params), tree_leaves(lone.gen_params)):
        assert float((a - b).abs().max()) <= 1e-10


@pytest.mark.parametrize("scheme", ["consensus", "unrolled", "optimistic"])
def test_schemes_compile_fullgraph_without_recompiles(scheme):
    import torch._dynamo

    system = systems.make_system("ring8", scheme=scheme, unroll=2, batch_size=8, hidden=8, gp=1.0)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True):
        compiled = sweep.run(system, sweep.grid(range(2)), steps=3, compile=True, backend="aot_eager")
    eager = sweep.run(system, sweep.grid(range(2)), steps=3, compile=False)
    for a, b in zip(tree_leaves(compiled.state.gen_params), tree_leaves(eager.state.gen_params)):
        assert float((a - b).abs().max()) <= 1e-5


# ----------------------------------------------------------------------------- metrics and checks


def test_mixture_metrics_known_answers():
    means = metrics.grid_means()
    perfect = means.repeat_interleave(100, 0)  # 100 samples exactly on each of 25 modes
    m = metrics.mixture_metrics(perfect, means, 0.05)
    assert int(m["modes"]) == 25 and float(m["hq_fraction"]) == 1.0 and abs(float(m["reverse_kl"])) < 1e-12
    collapsed = means[3].expand(2500, 2)
    m = metrics.mixture_metrics(collapsed, means, 0.05)
    assert int(m["modes"]) == 1 and abs(float(m["reverse_kl"]) - math.log(25)) < 1e-12
    far = torch.full((100, 2), 100.0)
    m = metrics.mixture_metrics(far, means, 0.05)
    assert int(m["modes"]) == 0 and float(m["hq_fraction"]) == 0.0
    # samples 4 std away are not high quality; 2 std away are
    near = means + torch.tensor([0.1, 0.0])
    off = means + torch.tensor([0.2, 0.0])
    assert float(metrics.mixture_metrics(near, means, 0.05)["hq_fraction"]) == 1.0
    assert float(metrics.mixture_metrics(off, means, 0.05)["hq_fraction"]) == 0.0


def test_real_data_scores_perfectly_on_its_own_metrics():
    for name in ("ring8", "grid25"):
        s = systems.make_system(name)
        means, std = s.mixture
        x = s.gan.sample_real(fr.key(0), (), (2500,))[0]
        m = metrics.mixture_metrics(x, means, std)
        assert int(m["modes"]) == len(means)
        # a 2-D Gaussian puts 1 - exp(-9/2) = 98.9% of its mass within 3 std; 2500 samples: s.e. 0.002
        assert abs(float(m["hq_fraction"]) - (1 - math.exp(-4.5))) < 0.01
        assert float(m["reverse_kl"]) < 0.02


def test_optimal_discriminator_approaches_goodfellow_optimum():
    """G frozen at N(1, 0.5^2), data N(0, 1): D trained to convergence approaches
    D*(x) = p_data / (p_data + p_g) and its loss log 4 - 2 JSD (Goodfellow et al. 2014, Prop. 1, Thm. 1)."""
    def logpdf(x, mu, sd):
        return -0.5 * ((x - mu) / sd) ** 2 - math.log(sd * math.sqrt(2 * math.pi))

    xs = torch.linspace(-8, 8, 20001, dtype=torch.float64)
    pd, pg = logpdf(xs, 0, 1).exp(), logpdf(xs, 1, 0.5).exp()
    m = 0.5 * (pd + pg)
    kl = lambda p: torch.trapezoid(torch.where(p > 0, p * torch.log(p / m), torch.zeros_like(p)), xs)
    jsd = 0.5 * kl(pd) + 0.5 * kl(pg)
    optimum = math.log(4) - 2 * float(jsd)

    module = nets.mlp(1, [64, 64], 1, "tanh").double()
    apply = nets.make_apply(module)
    params, _ = nets.init_params(module, fr.key(0), torch.float64)
    tx = optim.adam(3e-3)
    opt_state = tx.init(params)
    key = fr.key(1)
    for t in range(1500):
        kr, kf = fr.split(fr.fold_in(key, t))
        real = fr.normal(kr, (512, 1), torch.float64)
        fake = 1 + 0.5 * fr.normal(kf, (512, 1), torch.float64)
        params, opt_state, _, _ = update_player(
            lambda p: (losses.disc_logistic(apply(p, {}, real)[0], apply(p, {}, fake)[0]), {}), params, opt_state, tx)
    kr, kf = fr.split(fr.key(99))
    real = fr.normal(kr, (200_000, 1), torch.float64)
    fake = 1 + 0.5 * fr.normal(kf, (200_000, 1), torch.float64)
    loss = float(losses.disc_logistic(apply(params, {}, real)[0], apply(params, {}, fake)[0]))
    assert abs(loss - optimum) < 0.02  # sampling error of the 200k-sample estimate is ~0.003
    grid = torch.linspace(-1.5, 2.0, 36, dtype=torch.float64)[:, None]
    d_star = (logpdf(grid, 0, 1).exp() / (logpdf(grid, 0, 1).exp() + logpdf(grid, 1, 0.5).exp()))
    d = torch.sigmoid(apply(params, {}, grid)[0])
    assert float((d - d_star).abs().max()) < 0.05


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"scheme": "leapfrog"}, "unknown scheme 'leapfrog'"),
        ({"loss": "kl"}, "unknown objective 'kl'"),
        ({"scheme": "simultaneous", "n_disc": 2}, "n_disc > 1 applies to alternating"),
        ({"r1": -1.0}, "r1 must be finite and >= 0"),
        ({"unroll": -1}, "unroll must be an int >= 0"),
    ],
)
def test_bad_game_options_are_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        systems.make_system("ring8", **kw)


@pytest.mark.parametrize(
    "kw",
    [{}, {"r1": 1.0}, {"r2": 0.5, "penalty_every": 2}, {"gp": 1.0, "loss": "wasserstein"}, {"loss": "hinge", "n_disc": 2},
     {"loss": "lsgan"}, {"loss": "minimax", "scheme": "simultaneous", "r1": 1.0}],
)
def test_game_equals_imperative_double_backward_reference(kw):
    """Alternating/simultaneous Game with penalties vs funcgan.reference.game_step, whose penalties
    use torch.autograd.grad(create_graph=True). float64 tolerance 1e-10 as for the seed loops."""
    from funcgan import testing

    system = systems.make_system("ring8", batch_size=16, hidden=8, **kw)
    testing.assert_equivalent(system, seed=3, steps=6, dtype=torch.float64)
    testing.assert_equivalent(system, seed=3, steps=6, dtype=torch.float32)
