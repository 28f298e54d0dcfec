"""Game dynamics: scheme identities, the Dirac-GAN's known outcomes (Mescheder et al. 2018),
generator EMA, mixture metrics, the optimal discriminator, vmap and compile of every scheme."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import vmap

from funcgan import loops, losses, metrics, nets, optim, systems
from funcgan import penalties as P
from funcgan import random as fr
from funcgan.cli.report import dirac_system
from funcgan.step import PlayerState, init_state, make_train_step, update_player
from funcgan.tree import tree_leaves, tree_stack


def test_unrolled_with_zero_steps_equals_alternating_bitwise():
    alt = systems.make_system("ring8", batch_size=16, hidden=8)
    unr = systems.make_system("ring8", batch_size=16, hidden=8, loop=loops.Unrolled(unroll=0))
    a = init_state(alt.gan, fr.key(4), dtype=torch.float64)
    b = init_state(unr.gan, fr.key(4), dtype=torch.float64)
    sa, sb = make_train_step(alt.gan), make_train_step(unr.gan)
    for _ in range(5):
        a, _ = sa(a, ())
        b, _ = sb(b, ())
    for x, y in zip(tree_leaves((a.gen, a.disc)), tree_leaves((b.gen, b.disc))):
        assert torch.equal(x, y)


def test_simultaneous_and_alternating_match_their_definitions_on_dirac():
    """One SGD step of the minimax Dirac-GAN from (theta, psi) = (1, 1), lr h:
    dL_D/dpsi = theta * sigmoid(psi * theta), dL_G/dtheta = -psi * sigmoid(psi * theta).
    Simultaneous uses psi_0 in G's gradient; alternating uses psi_1."""
    h, th, ps = 0.1, 1.0, 1.0
    sig = lambda t: 1 / (1 + math.exp(-t))  # noqa: E731
    psi1 = ps - h * th * sig(ps * th)
    expected = {"simultaneous": (th + h * ps * sig(ps * th), psi1),
                "alternating": (th + h * psi1 * sig(psi1 * th), psi1)}
    for scheme, (theta_exp, psi_exp) in expected.items():
        s = dirac_system(scheme, lr=h)
        out, _ = make_train_step(s.gan)(init_state(s.gan, fr.key(0), dtype=torch.float64), ())
        assert abs(float(out.gen.params["theta"]) - theta_exp) < 1e-14
        assert abs(float(out.disc.params["psi"]) - psi_exp) < 1e-14


def test_consensus_matches_its_closed_form_on_dirac():
    """Consensus on the Dirac-GAN: v = (-psi s, theta s) with s = sigmoid(psi theta) (minimax, G's gradient
    -psi s, D's theta s); the update adds gamma * grad(0.5 |v|^2), computed here by hand."""
    h, gamma = 0.1, 1.0
    th, ps = 1.0, 1.0
    sig = lambda t: 1 / (1 + math.exp(-t))  # noqa: E731
    s, ds = sig(ps * th), sig(ps * th) * (1 - sig(ps * th))
    v_t, v_p = -ps * s, th * s
    # 0.5 |v|^2 = 0.5 s^2 (psi^2 + theta^2): derivatives by the chain rule
    d_t = s * ds * ps * (ps ** 2 + th ** 2) + s ** 2 * th
    d_p = s * ds * th * (ps ** 2 + th ** 2) + s ** 2 * ps
    s_ = dirac_system("consensus", lr=h)
    out, _ = make_train_step(s_.gan)(init_state(s_.gan, fr.key(0), dtype=torch.float64), ())
    assert abs(float(out.gen.params["theta"]) - (th - h * (v_t + gamma * d_t))) < 1e-14
    assert abs(float(out.disc.params["psi"]) - (ps - h * (v_p + gamma * d_p))) < 1e-14


R0 = math.sqrt(2.0)


def _dirac_radius(scheme, loss="minimax", pens=(), opts=None, steps=600):
    s = dirac_system(scheme, loss, pens, opts)
    state = init_state(s.gan, fr.key(0), dtype=torch.float64)
    step = make_train_step(s.gan)
    for _ in range(steps):
        state, _ = step(state, ())
    return math.hypot(float(state.gen.params["theta"]), float(state.disc.params["psi"]))


@pytest.mark.parametrize("case,outcome", [
    (("simultaneous",), "diverges"),  # Mescheder et al. 2018, Sec. 3: spirals outwards
    (("alternating",), "oscillates"),  # stays on a cycle around the equilibrium
    (("alternating", "wasserstein"), "oscillates"),  # WGAN: not convergent
    (("alternating", "wasserstein", (("gp", 1.0),)), "does not converge"),  # WGAN-GP: not convergent
    (("alternating", "minimax", (("r1", 1.0),)), "converges"),  # zero-centred penalties: convergent
    (("alternating", "minimax", (("r2", 1.0),)), "converges"),
    (("simultaneous", "minimax", (("r1", 1.0),)), "converges"),
    (("consensus",), "converges"),  # consensus optimization: convergent
    (("unrolled", "minimax", (), {"unroll": 5}), "converges"),
    (("extragradient",), "converges slowly"),
    (("optimistic",), "converges slowly"),
])
def test_dirac_gan_outcomes(case, outcome):
    r = _dirac_radius(*case)
    if outcome == "diverges":
        assert r > 1.5 * R0
    elif outcome == "oscillates":
        assert 0.8 * R0 < r < 1.25 * R0
    elif outcome == "does not converge":
        assert r > 0.8 * R0
    elif outcome == "converges":
        assert r < 1e-2
    else:
        r_more = _dirac_radius(*case, steps=1200)
        assert r < 0.6 * R0 and r_more < 0.75 * r


def test_generator_ema_is_polyak_average_from_start_step():
    s = dirac_system("alternating", ema=0.9)
    gan = s.gan.with_options(ema_start=2)
    state = init_state(gan, fr.key(0), dtype=torch.float64)
    step = make_train_step(gan)
    ema = None
    for t in range(6):
        state, _ = step(state, ())
        theta = state.gen.params["theta"]
        ema = theta.clone() if t < 2 else 0.9 * ema + 0.1 * theta
        torch.testing.assert_close(state.gen_ema["theta"], ema, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("name", list(loops.LOOPS))
def test_every_loop_vmaps_like_lone_runs(name):
    """``vmap(step)`` over 3 stacked seeds equals each seed's unbatched step (float64)."""
    opts = {"unroll": 2} if name == "unrolled" else {}
    problem = "pix2pix" if name == "pix2pix" else "ring8"
    kw = {"batch_size": 6} if problem == "pix2pix" else {"batch_size": 6, "hidden": 8}
    objective = losses.lsgan() if name in ("adaptive",) else losses.nonsaturating()
    system = systems.make_system(problem, **kw, loop=loops.LOOPS[name](objective=objective,
                                                                       penalties=(P.r1(0.5),), **opts))
    step = make_train_step(system.gan)
    singles = [init_state(system.gan, fr.key(i), dtype=torch.float64) for i in range(3)]
    data = tuple(x.double() for x in system.data)
    stacked = tree_stack(singles)
    with _no_fallback():
        for _ in range(2):
            stacked, _ = vmap(step, in_dims=(0, None), randomness="error")(stacked, data)
    for i, s in enumerate(singles):
        for _ in range(2):
            s, _ = step(s, data)
        for a, b in zip(tree_leaves((s.gen, s.disc)), tree_leaves((stacked.gen, stacked.disc))):
            assert float((a - b[i]).abs().max()) <= 1e-10 if a.is_floating_point() else torch.equal(a, b[i])


class _no_fallback:
    """vmap's per-example fallback raises instead of warning (a loop is vectorised, not a Python loop)."""

    def __enter__(self):
        torch._C._functorch._set_vmap_fallback_enabled(False)

    def __exit__(self, *exc):
        torch._C._functorch._set_vmap_fallback_enabled(True)


@pytest.mark.parametrize("name", ["consensus", "unrolled", "optimistic"])
def test_schemes_compile_fullgraph_without_recompiles(name):
    import torch._dynamo

    from funcgan import sweep

    opts = {"unroll": 1} if name == "unrolled" else {}
    system = systems.make_system("ring8", batch_size=8, hidden=8,
                                 loop=loops.LOOPS[name](penalties=(P.gradient_penalty(1.0),), **opts))
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True):
        compiled = sweep.run(system, sweep.grid(range(2)), steps=3, compile=True, backend="aot_eager",
                             dtype=torch.float64)
    eager = sweep.run(system, sweep.grid(range(2)), steps=3, compile=False, dtype=torch.float64)
    for a, b in zip(tree_leaves(compiled.state.gen.params), tree_leaves(eager.state.gen.params)):
        assert float((a - b).abs().max()) <= 1e-12


def test_unrolled_stop_opt_grad_is_the_gradient_without_the_optimizer_state_path():
    """With SGD (no optimizer state) the two settings give the same G gradient exactly; with Adam they
    differ, and each matches the reference's differentiable optimizer (also proven in test_loops)."""
    from funcgan import testing

    for opt, same in (("sgd", True), ("adam", False)):
        outs = []
        for stop in (False, True):
            s = systems.make_system("dirac", optimizer=opt, lr=0.05, loop=loops.Unrolled(
                objective=losses.minimax(), unroll=3, stop_opt_grad=stop))
            st0 = init_state(s.gan, fr.key(0), dtype=torch.float64)
            st0, _ = make_train_step(s.gan)(st0, ())  # a first step fills Adam's moments
            st1, _ = make_train_step(s.gan)(st0, ())
            outs.append(float(st1.gen.params["theta"]))
            testing.assert_equivalent(s, steps=3, dtype=torch.float64)
        assert (outs[0] == outs[1]) == same


# ----------------------------------------------------------------------------- metrics


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
    near = means + torch.tensor([0.1, 0.0])  # 2 std away: high quality; 4 std: not
    off = means + torch.tensor([0.2, 0.0])
    assert float(metrics.mixture_metrics(near, means, 0.05)["hq_fraction"]) == 1.0
    assert float(metrics.mixture_metrics(off, means, 0.05)["hq_fraction"]) == 0.0


def test_mode_coverage_boundary_is_inclusive():
    """A mode with exactly min_count high-quality samples is covered; with one fewer it is not."""
    means = metrics.ring_means()
    for n, covered in ((20, 1), (19, 0)):
        x = means[2].expand(n, 2)
        assert int(metrics.mixture_metrics(x, means, 0.02, min_count=20)["modes"]) == covered
    at = means[0] + torch.tensor([3 * 0.02 * 0.999, 0.0])  # just inside 3 std
    assert float(metrics.mixture_metrics(at[None], means, 0.02)["hq_fraction"]) == 1.0


def test_real_data_scores_perfectly_on_its_own_metrics():
    for name in ("ring8", "grid25"):
        s = systems.make_system(name)
        means, std = s.mixture
        x = s.gan.sample_real(fr.key(0), (), (2500,)).x
        m = metrics.mixture_metrics(x, means, std)
        assert int(m["modes"]) == len(means)
        # a 2-D Gaussian puts 1 - exp(-9/2) = 98.9% of its mass within 3 std; 2500 samples: s.e. 0.002
        assert abs(float(m["hq_fraction"]) - (1 - math.exp(-4.5))) < 0.01
        assert float(m["reverse_kl"]) < 0.02


def test_optimal_discriminator_approaches_goodfellow_optimum():
    """G frozen at N(1, 0.5^2), data N(0, 1): D trained to convergence approaches
    D*(x) = p_data / (p_data + p_g) and its loss log 4 - 2 JSD (Goodfellow et al. 2014)."""
    def logpdf(x, mu, sd):
        return -0.5 * ((x - mu) / sd) ** 2 - math.log(sd * math.sqrt(2 * math.pi))

    xs = torch.linspace(-8, 8, 20001, dtype=torch.float64)
    pd, pg = logpdf(xs, 0, 1).exp(), logpdf(xs, 1, 0.5).exp()
    m = 0.5 * (pd + pg)
    kl = lambda p: torch.trapezoid(torch.where(p > 0, p * torch.log(p / m), torch.zeros_like(p)), xs)  # noqa: E731
    optimum = math.log(4) - 2 * float(0.5 * kl(pd) + 0.5 * kl(pg))
    module = nets.mlp(1, [64, 64], 1, "tanh").double()
    apply = nets.make_apply(module)
    params, _ = nets.init_params(module, fr.key(0), torch.float64)
    tx = optim.adam(3e-3)
    player = PlayerState(params, {}, tx.init(params))
    obj = losses.nonsaturating()
    key = fr.key(1)
    for t in range(1500):
        kr, kf = fr.split(fr.fold_in(key, t))
        real = fr.normal(kr, (512, 1), torch.float64)
        fake = 1 + 0.5 * fr.normal(kf, (512, 1), torch.float64)
        player, _, _ = update_player(lambda p, b: (obj.disc(apply(p, b, real)[0], apply(p, b, fake)[0]), b, None),
                                     player, tx)
    kr, kf = fr.split(fr.key(99))
    real = fr.normal(kr, (200_000, 1), torch.float64)
    fake = 1 + 0.5 * fr.normal(kf, (200_000, 1), torch.float64)
    loss = float(obj.disc(apply(player.params, {}, real)[0], apply(player.params, {}, fake)[0]))
    assert abs(loss - optimum) < 0.02  # sampling error of the 200k-sample estimate is ~0.003
    grid = torch.linspace(-1.5, 2.0, 36, dtype=torch.float64)[:, None]
    d_star = logpdf(grid, 0, 1).exp() / (logpdf(grid, 0, 1).exp() + logpdf(grid, 1, 0.5).exp())
    assert float((torch.sigmoid(apply(player.params, {}, grid)[0]) - d_star).abs().max()) < 0.05


@pytest.mark.parametrize("make,match", [
    (lambda: loops.Unrolled(unroll=-1), "unroll must be an int >= 0"),
    (lambda: loops.Consensus(gamma=-1.0), "gamma must be finite and >= 0"),
    (lambda: loops.Alternating(n_gen=0), "n_gen must be an int >= 1"),
    (lambda: loops.Adaptive(max_gen_steps=0), "max_gen_steps must be an int >= 1"),
])
def test_bad_scheme_options_are_rejected(make, match):
    with pytest.raises(ValueError, match=match):
        make()
