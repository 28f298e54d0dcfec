"""The engine: every run is the run its seed gives alone; compiled once; guarded; checkpointed.

Tolerances: an eager run is the plain step whatever the sweep (bitwise, float32 too).
aot_eager-compiled sweeps vmap the step, so batched kernels reorder float reductions:
float32 1e-5 after a few steps (Adam turns a round-off-sized gradient into an lr-sized
step only for near-zero coordinates, which these runs do not have; measured ~1e-7).
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import vmap

from funcgan import guard as G
from funcgan import loops, losses, nets, sweep, systems
from funcgan import penalties as P
from funcgan import random as fr
from funcgan.optim import OptimizerSpec
from funcgan.step import GAN, init_state, make_train_step
from funcgan.tree import tree_index, tree_leaves, tree_map
from tests import strategies as S


def _lone(system, seed, steps, dtype=torch.float32, **hp):
    gan = system.gan
    kw = {}
    if "gen_lr" in hp:
        kw["gen_opt"] = gan.gen_opt.with_values(lr=hp.pop("gen_lr"))
    if "disc_lr" in hp:
        kw["disc_opt"] = gan.disc_opt.with_values(lr=hp.pop("disc_lr"))
    state = init_state(gan, fr.key(seed), dtype=dtype, hparams=hp or None, **kw)
    step = make_train_step(gan)
    data = tuple(x.to(dtype) if x.is_floating_point() else x for x in system.data)
    history = []
    for _ in range(steps):
        state, metrics = step(state, data)
        history.append(metrics)
    return state, history


def _equal(a, b):
    la, lb = tree_leaves(a), tree_leaves(b)
    return len(la) == len(lb) and all(torch.equal(x, y) for x, y in zip(la, lb))


def _maxdiff(a, b):
    return max(float((x - y).abs().max()) for x, y in zip(tree_leaves(a), tree_leaves(b)) if x.is_floating_point())


@pytest.fixture(scope="module")
def gauss():
    return systems.make_system("gaussian1d", batch_size=32)


@settings(max_examples=6)
@given(seed=st.integers(0, 10_000), width=st.sampled_from([1, 3, 9]), pos=st.integers(0, 8))
def test_eager_run_is_bitwise_its_lone_run_in_float32_at_any_width_and_position(gauss, seed, width, pos):
    pos %= width
    seeds = [(seed + 1 + i) % 20_000 for i in range(width)]
    seeds[pos] = seed
    if len(set(seeds)) != width:
        return
    result = sweep.run(gauss, sweep.grid(seeds), steps=6, compile=False, log_every=1)
    lone, history = _lone(gauss, seed, 6)
    got = sweep.seed_state(result.state, pos)
    assert _equal((got.gen, got.disc), (lone.gen, lone.disc))
    for t, m in enumerate(history):
        for k, v in m.items():
            assert float(result.history[k][t, pos]) == float(v)


@pytest.mark.parametrize("problem", ["mnist", "pix2pix", "cgan"])
def test_eager_sweep_rows_are_lone_runs_bitwise_for_other_systems(problem):
    kw = {"width": 4, "batch_size": 8} if problem == "cgan" else {}
    system = systems.make_system(problem, **kw)
    result = sweep.run(system, sweep.grid([4, 7]), steps=3, compile=False)
    lone, _ = _lone(system, 7, 3)
    assert _equal(sweep.seed_state(result.state, 1).gen, lone.gen)


@pytest.mark.parametrize("problem", ["gaussian1d", "mnist", "dcgan"])
def test_compiled_sweep_equals_eager_and_does_not_recompile(problem):
    """float64: the vmapped compiled step and the plain eager one evaluate the same formulas with
    batched vs unbatched kernels (reduction order): 1e-12 after 3 steps (measured ~1e-16)."""
    kw = {"width": 4, "batch_size": 8} if problem == "dcgan" else {}
    system = systems.make_system(problem, **kw)
    points = sweep.grid(range(3), gen_lr=[1e-3, 2e-4])
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True):
        # chunk 4 over 6 runs: the second chunk is padded, so the same compiled graph serves both
        compiled = sweep.run(system, points, steps=3, chunk_size=4, compile=True, backend="aot_eager", log_every=1,
                             dtype=torch.float64)
    eager = sweep.run(system, points, steps=3, compile=False, log_every=1, dtype=torch.float64)
    assert _maxdiff((compiled.state.gen, compiled.state.disc), (eager.state.gen, eager.state.disc)) <= 1e-12
    for k in eager.history:
        torch.testing.assert_close(compiled.history[k], eager.history[k], rtol=1e-12, atol=1e-12, equal_nan=True)


def test_lazy_penalty_steps_compile_once_each():
    """A lazy penalty gives two step functions (penalty on, penalty off), each compiled once."""
    from torch._dynamo.utils import counters

    system = systems.make_system("ring8", hidden=8, batch_size=8, penalties=(P.r1(1.0, every=2),))
    torch._dynamo.reset()
    counters.clear()
    compiled = sweep.run(system, sweep.grid(range(2)), steps=5, compile=True, backend="aot_eager",
                         dtype=torch.float64)
    assert int(counters["stats"]["unique_graphs"]) == 2
    eager = sweep.run(system, sweep.grid(range(2)), steps=5, compile=False, dtype=torch.float64)
    assert _maxdiff(compiled.state.disc.params, eager.state.disc.params) <= 1e-12


def test_every_hyperparameter_is_per_run(gauss):
    """Learning rates, penalty weights and EMA decay vary per run in one program; each run equals its lone run."""
    system = systems.make_system("gaussian1d", batch_size=16, objective=losses.wasserstein(),
                                 penalties=(P.gradient_penalty(1.0),), ema=0.9)
    points = sweep.grid([7], gen_lr=[1e-3, 1e-2], gp=[1.0, 10.0], ema_decay=[0.9, 0.5])
    result = sweep.run(system, points, steps=4, compile=False, dtype=torch.float64)
    for i, p in enumerate(points):
        lone, _ = _lone(system, 7, 4, dtype=torch.float64, gen_lr=p["gen_lr"], gp=p["gp"], ema_decay=p["ema_decay"])
        assert _equal(sweep.seed_state(result.state, i).gen_ema, lone.gen_ema)
    finals = [sweep.seed_state(result.state, i) for i in range(len(points))]
    assert len({tuple(float(v.sum()) for v in f.disc.params.values()) for f in finals}) == 4  # gen_lr x gp
    assert len({tuple(float(v.sum()) for v in f.gen_ema.values()) for f in finals}) == 8  # x ema_decay


def test_sliced_run_continues_alone(gauss):
    result = sweep.run(gauss, sweep.grid(range(5)), steps=4, compile=False)
    sliced = sweep.seed_state(result.state, 3)
    step = make_train_step(gauss.gan)
    for _ in range(3):
        sliced, _ = step(sliced, ())
    lone, _ = _lone(gauss, 3, 7)
    assert _equal(sliced.gen, lone.gen)


def test_padded_copies_never_reach_the_result(gauss):
    result = sweep.run(gauss, sweep.grid(range(5)), steps=2, chunk_size=4, compile=True, backend="aot_eager")
    assert result.state.step.shape == (5,) and all(v.shape[1] == 5 for v in result.history.values())
    assert [int(k) for k in result.state.key[:, 0]] != [int(result.state.key[0, 0])] * 5  # 5 distinct runs
    for i in range(5):
        lone = init_state(gauss.gan, fr.key(i))
        assert torch.equal(result.state.key[i], lone.key)


# ----------------------------------------------------------------------------- the guard


def _wgan_sgd():
    """An unbounded objective with SGD: large learning rates blow up in a few steps."""
    gan = GAN(gen=nets.mlp(2, [4], 1), disc=nets.mlp(1, [4], 1), loop=loops.Alternating(objective=losses.wasserstein()),
              sample_real=systems.gaussian_sampler(0.0, 1.0, 1), latent_dim=2, batch_size=8,
              gen_opt=OptimizerSpec("sgd", 1e-3), disc_opt=OptimizerSpec("sgd", 1e-3), name="wgan-sgd")
    return systems.System(gan, (), "1d", 10, real_stats={"mean": 0.0, "std": 1.0})


@pytest.mark.parametrize("compile", [False, True])
def test_divergent_run_is_frozen_reported_and_isolated(compile):
    system = _wgan_sgd()
    points = sweep.grid(range(4), disc_lr=[1e-3], gen_lr=[1e-3]) + [{"seed": 9, "disc_lr": 1e30, "gen_lr": 1e30}]
    guard = G.Guard(max_param=None, max_output=None)  # only non-finite values: the overflow itself
    result = sweep.run(system, points, steps=8, compile=compile, backend="aot_eager", log_every=1, guard=guard)
    d = int(result.diverged_at[4])
    assert 0 <= d < 8 and int(result.reasons[4]) == 1
    assert (result.diverged_at[:4] == -1).all()
    frozen = sweep.seed_state(result.state, 4)
    assert all(torch.isfinite(x).all() for x in tree_leaves((frozen.gen.params, frozen.disc.params)))
    assert int(frozen.step) == d  # frozen at its last finite state, never revived
    assert torch.isnan(result.history["disc/loss"][d:, 4]).all()
    alone = sweep.run(system, points[:4], steps=8, compile=compile, backend="aot_eager", log_every=1, guard=guard)
    assert _maxdiff(tree_index(result.state.gen.params, slice(0, 4)), alone.state.gen.params) == 0.0


def test_finite_explosions_are_flagged_with_their_reason():
    """gen_lr = 1e6 keeps everything finite but the samples reach ~1e15 (the old guard flagged nothing)."""
    system = systems.make_system("gaussian1d")
    points = [{"seed": 0, "gen_lr": 1e-3}, {"seed": 1, "gen_lr": 1e6}, {"seed": 2, "gen_lr": 1e-3}]
    result = sweep.run(system, points, steps=30, compile=False)
    assert int(result.diverged_at[1]) >= 0 and G.reason_name(int(result.reasons[1])) in (
        "parameter magnitude", "generated-output magnitude")
    assert int(result.diverged_at[0]) == int(result.diverged_at[2]) == -1


def test_each_criterion_flags_at_its_threshold():
    system = systems.make_system("gaussian1d")
    for guard, reason in ((G.Guard(max_param=0.5), 2), (G.Guard(max_param=None, max_output=0.05), 3)):
        result = sweep.run(system, sweep.grid([0]), steps=3, compile=False, guard=guard)
        assert int(result.reasons[0]) == reason and int(result.diverged_at[0]) == 0
    # a loss pinned at its clamp: BCE's 100, for `window` consecutive steps (not before)
    pinned = systems.make_system("gaussian1d", disc_lr=5.0)
    for window, flagged in ((1000, False), (2, True)):
        result = sweep.run(pinned, sweep.grid([0]), steps=60, compile=False, guard=G.Guard(
            max_param=None, max_output=None, pinned_window=window))
        assert (int(result.diverged_at[0]) >= 0) == flagged
        if flagged:
            assert int(result.reasons[0]) == 4


def test_guard_threshold_boundaries():
    """A parameter exactly at max_param is healthy; just above is flagged."""
    system = systems.make_system("dirac")
    state = init_state(system.gan, fr.key(0), dtype=torch.float64)
    theta = float(state.gen.params["theta"])  # 1.0 at the start, the largest parameter after one step
    step = G.guarded(make_train_step(system.gan), G.Guard(max_param=2.0))
    new, _ = step(state, ())
    top = max(float(v.abs().max()) for v in tree_leaves((new.gen.params, new.disc.params)))
    at = G.guarded(make_train_step(system.gan), G.Guard(max_param=top))(state, ())[0]
    below = G.guarded(make_train_step(system.gan), G.Guard(max_param=top * (1 - 1e-12)))(state, ())[0]
    assert int(at.health["diverged_at"]) == -1 and int(below.health["diverged_at"]) == 0
    assert theta == 1.0


def _guarded_run(step, state, steps, traced_form):
    out = []
    for _ in range(steps):
        if traced_form:
            with S.TracedForm():  # any active mode: the guard selects by tree_where, as a traced step does
                state, metrics = step(state, ())
        else:
            state, metrics = step(state, ())
        out.append(metrics)
    return state, out


@pytest.mark.parametrize("disc_lr,window", [(1e-3, None), (5.0, 2)])
def test_eager_guard_shortcut_gives_the_traced_guards_states_and_metrics(disc_lr, window, monkeypatch):
    """Exact: a healthy eager step returns ``new`` itself, what ``tree_where(True, new, old)`` selects;
    the pinned case (flagged after a few steps, then frozen with NaN metrics) runs both branches."""
    selections = []
    real = G.tree_where
    monkeypatch.setattr(G, "tree_where", lambda *a: selections.append(1) or real(*a))
    system = systems.make_system("gaussian1d", disc_lr=disc_lr)
    guard = G.Guard(max_param=None, max_output=None, pinned_window=window or 100)
    step = G.guarded(make_train_step(system.gan), guard, system.gan.loop.objective.saturation)
    state = init_state(system.gan, fr.key(3))
    fast, fast_m = _guarded_run(step, state, 40, traced_form=False)
    shortcut_selections = len(selections)
    slow, slow_m = _guarded_run(step, state, 40, traced_form=True)
    # the comparison is not vacuous: eager took the shortcut (selected only once a run was flagged)
    assert len(selections) - shortcut_selections == 40 and shortcut_selections < 40
    assert (shortcut_selections == 0) == (window is None)
    assert _equal(fast, slow)
    for a, b in zip(fast_m, slow_m):
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, equal_nan=True)
    assert (int(fast.health["diverged_at"]) >= 0) == (window is not None)


def test_eager_guard_comparison_catches_a_shortcut_that_forgets_the_pinned_count(monkeypatch):
    """Negative control: an eager shortcut that keeps the old pinned count differs from the traced guard."""
    real = G.check

    def forgetful(state, new, metrics, guard, saturation=(None, None)):
        kept, m = real(state, new, metrics, guard, saturation)
        if G.plain_cpu_tensors(kept.step):
            kept = kept._replace(health={**kept.health, "pinned": state.health["pinned"]})
        return kept, m

    monkeypatch.setattr(G, "check", forgetful)
    system = systems.make_system("gaussian1d", disc_lr=5.0)
    step = G.guarded(make_train_step(system.gan), G.Guard(max_param=None, max_output=None, pinned_window=2),
                     system.gan.loop.objective.saturation)
    state = init_state(system.gan, fr.key(3))
    assert not _equal(_guarded_run(step, state, 40, traced_form=False)[0],
                      _guarded_run(step, state, 40, traced_form=True)[0])


_SPECIAL = st.sampled_from([0.0, -2.5, 3e38, float("nan"), float("inf"), float("-inf")])


@st.composite
def _leaf_lists(draw, allow_empty):
    """Lists of float32/float64 leaves of 0 to 3 dims, some entries NaN or infinite."""
    leaves = []
    for _ in range(draw(st.integers(1, 6))):
        shape = tuple(draw(st.lists(st.integers(0 if allow_empty else 1, 3), max_size=3)))
        x = torch.randn(shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))))
        x = x.to(draw(st.sampled_from([torch.float32, torch.float64])))
        if x.numel() and draw(st.booleans()):
            x.view(-1)[draw(st.integers(0, x.numel() - 1))] = draw(_SPECIAL)
        leaves.append(x)
    return leaves


def _reductions_agree(leaves) -> bool:
    """Whether the eager reductions give the per-leaf verdicts: all finite, and the largest magnitude
    (NaN if any leaf has one)."""
    from funcgan import tree

    if bool(tree.tree_all_finite(leaves)) != all(bool(torch.isfinite(x).all()) for x in leaves):
        return False
    full = [x for x in leaves if x.numel()]
    if not full:
        return True
    got = tree.tree_reduce(leaves, lambda x: x.abs().amax(), torch.amax).double()  # empty leaves among them
    want = torch.stack([x.abs().amax().double() for x in full]).amax()
    return bool(torch.equal(got, want) or (got.isnan() and want.isnan()))


@given(leaves=_leaf_lists(allow_empty=True))
def test_eager_tree_reductions_give_the_per_leaf_verdicts(leaves):
    """Leaves concatenated per dtype, 0-d leaves stacked: the verdicts of one reduction per leaf."""
    assert _reductions_agree(leaves)


@given(leaves=_leaf_lists(allow_empty=False))
def test_vmapped_tree_reductions_give_each_runs_verdict(leaves):
    """Under ``vmap`` (the op-by-op flattening: torch's C++ one has no batching rule) each run's
    reductions are those of its own leaves."""
    from funcgan import tree

    runs = [leaves, [x.flip(tuple(range(x.dim()))) * 2 for x in leaves]]  # two runs, different values
    stacked = [torch.stack([run[i] for run in runs]) for i in range(len(leaves))]
    big = vmap(lambda *xs: tree.tree_reduce(list(xs), lambda x: x.abs().amax(), torch.amax).double())(*stacked)
    fin = vmap(lambda *xs: tree.tree_all_finite(list(xs)))(*stacked)
    for r, run in enumerate(runs):
        want = torch.stack([x.abs().amax().double() for x in run]).amax()
        assert torch.equal(big[r], want) or (big[r].isnan() and want.isnan())
        assert bool(fin[r]) == all(bool(torch.isfinite(x).all()) for x in run)


def test_an_eager_reduction_that_drops_the_0d_leaves_is_caught(monkeypatch):
    """Negative control: a reduction that forgets the 0-d leaves misses a NaN in one."""
    from funcgan import tree

    real = tree.tree_reduce
    monkeypatch.setattr(tree, "tree_reduce", lambda xs, leaf, combine: real([x for x in xs if x.dim()], leaf, combine))
    assert not _reductions_agree([torch.ones(3, 2), torch.tensor(float("nan"))])


# ----------------------------------------------------------------------------- checkpoints and resume


def test_checkpoints_capture_every_run_and_resume_exactly(gauss):
    points = sweep.grid(range(5))
    seen = []
    full = sweep.run(gauss, points, steps=9, chunk_size=2, compile=False, log_every=2,
                     checkpoint=lambda r: seen.append(r), checkpoint_every=4)
    assert len(seen) >= 5  # in-chunk and chunk-end checkpoints
    mid = next(r for r in seen if 0 < int(r.state.step.sum()) < 45)
    resumed = sweep.run(gauss, points, steps=9, chunk_size=3, compile=False, log_every=2, states=mid.state,
                        history=(mid.history, mid.logged_steps))
    assert _equal(resumed.state, full.state)
    for k in full.history:
        torch.testing.assert_close(resumed.history[k], full.history[k], rtol=0, atol=0, equal_nan=True)
    assert resumed.logged_steps == full.logged_steps == [2, 4, 6, 8, 9]


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("points,match", [
    ([], "no seeds given"),
    ([{"seed": 1}, {"seed": 1}], "duplicate run"),
    ([{"seed": -1}], "ints in \\[0, 2\\*\\*63\\)"),
    ([{"seed": 2**64}], "ints in \\[0, 2\\*\\*63\\)"),
    ([{"seed": 0, "gen_lr": 0.0}], "lr must be finite and > 0"),
    ([{"seed": 0, "gen_betas": (1.2, 0.9)}], r"betas\[0\] must be in"),
    ([{"seed": 0, "gen_clip_norm": 1.0}], "unknown hyper-parameter 'gen_clip_norm'"),
    ([{"seed": 0, "warp": 1.0}], "unknown hyper-parameter 'warp'"),
    ([{"seed": 0, "gen_lr": 1e-3}, {"seed": 1}], "set for some points only"),
])
def test_bad_sweeps_are_rejected_before_training(gauss, points, match):
    with pytest.raises(ValueError, match=match):
        sweep.init_sweep(gauss.gan, points)


def test_penalty_weight_must_be_non_negative():
    system = systems.make_system("ring8", penalties=(P.r1(1.0),))
    with pytest.raises(ValueError, match="r1 is a penalty weight and must be >= 0"):
        sweep.check_points(system.gan, [{"seed": 0, "r1": -1.0}])


def test_nan_data_and_wrong_states_are_refused(gauss):
    digits = systems.make_system("digits")
    bad = systems.System(digits.gan, digits.data, "image", check=False)
    bad.data[0][3, 5] = float("nan")
    with pytest.raises(ValueError, match="non-finite values in 1 example"):
        sweep.run(bad, sweep.grid([0]), steps=1, compile=False)
    lone = init_state(gauss.gan, fr.key(0))
    with pytest.raises(ValueError, match="expected a stacked sweep state"):
        sweep.run(gauss, sweep.grid([0]), steps=1, compile=False, states=lone)
    with pytest.raises(ValueError, match="hold 2 runs, the points 1"):
        sweep.run(gauss, sweep.grid([0]), steps=1, compile=False, states=sweep.init_sweep(gauss.gan, sweep.grid([0, 1])))
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1"):
        sweep.run(gauss, sweep.grid([0]), steps=1, chunk_size=0)


def test_grid_crosses_seeds_and_values():
    pts = sweep.grid(range(3), gen_lr=[1e-3, 1e-4], disc_lr=[1e-3])
    assert len(pts) == 6
    assert pts[0] == {"seed": 0, "gen_lr": 1e-3, "disc_lr": 1e-3} and pts[3]["gen_lr"] == 1e-4


@pytest.mark.slow
def test_inductor_runs_alone_equal_their_sweep_rows_bitwise_in_float32(gauss):
    """Inductor's kernels give a run the same arithmetic at chunk 1 as at chunk 8 in a one-thread
    process (the README's promise for compiled runs, and its condition: at 2 threads the CPU's batched
    GEMM splits a chunk of 8 otherwise than one run, measured round-off apart on 2026-12-06)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        wide = sweep.run(gauss, sweep.grid(range(8)), steps=10, compile=True)
        for i in (0, 5):
            alone = sweep.run(gauss, sweep.grid([i]), steps=10, compile=True)
            assert _equal(sweep.seed_state(wide.state, i).gen, sweep.seed_state(alone.state, 0).gen)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("problem", list(systems.PROBLEMS))
def test_healthy_runs_are_never_flagged_at_default_settings(problem):
    """256 seeds of every built-in system at its default settings: no run is flagged."""
    system = systems.make_system(problem)
    steps = {"dcgan": 30, "sngan": 10, "cgan": 30}.get(problem, 300)
    result = sweep.run(system, sweep.grid(range(256)), steps=steps, compile=True, chunk_size=64)
    assert int((result.diverged_at >= 0).sum()) == 0, result.reasons[result.diverged_at >= 0]


def test_healthy_runs_are_never_flagged_fast_sibling():
    """The fast sibling of the slow test: 32 seeds of the small systems for 200 steps, eager."""
    for problem in ("gaussian1d", "ring8", "dirac"):
        system = systems.make_system(problem, **({"hidden": 16, "batch_size": 32} if problem == "ring8" else {}))
        result = sweep.run(system, sweep.grid(range(32)), steps=200, compile=True, backend="aot_eager", chunk_size=32)
        assert int((result.diverged_at >= 0).sum()) == 0, problem


# ----------------------------------------------------------------------------- many steps per call


def test_steps_per_call_equals_single_steps():
    """K steps in one call: eager bitwise (the same kernels in the same order); compiled (aot_eager,
    one graph of K steps) in float64 to 1e-12; metrics (K, S); lazy penalties keep their pattern."""
    system = systems.make_system("gaussian1d", hidden=8, batch_size=8, penalties=(P.r1(1.0, every=2),))
    points = sweep.grid(range(3))
    one = sweep.run(system, points, steps=8, compile=False, log_every=1, dtype=torch.float64)
    four = sweep.run(system, points, steps=7, compile=False, log_every=1, dtype=torch.float64, steps_per_call=4)
    one7 = sweep.run(system, points, steps=7, compile=False, log_every=1, dtype=torch.float64)
    assert _equal(one7.state, four.state)  # 7 = 4 + 3: a shorter last call
    for k in one7.history:
        torch.testing.assert_close(four.history[k], one7.history[k], rtol=0, atol=0, equal_nan=True)
    torch._dynamo.reset()
    comp = sweep.run(system, points, steps=8, compile=True, backend="aot_eager", log_every=1, dtype=torch.float64,
                     steps_per_call=4)  # one graph: every 4-step call has the pattern (on, off, on, off)
    assert _maxdiff((comp.state.gen, comp.state.disc), (one.state.gen, one.state.disc)) <= 1e-12
    for k in one.history:
        torch.testing.assert_close(comp.history[k], one.history[k], rtol=1e-12, atol=1e-12, equal_nan=True)
    step = sweep.make_sweep_step(system.gan, compile=False, steps_per_call=3)
    _, metrics = step(sweep.init_sweep(system.gan, points), ())
    assert metrics["disc/loss"].shape == (3, 3)
    with pytest.raises(ValueError, match="steps_per_call must be an int >= 1"):
        sweep.make_sweep_step(system.gan, steps_per_call=0)


def test_adaptive_schedule_computes_only_the_g_updates_that_happen():
    """Seed 003's loop driven in phases: a G step runs only while some run is active, and every run
    equals the masked one-graph step (eager: bitwise, dropout keys included)."""
    system = systems.make_system("mnist", hidden=16, batch_size=8)
    step = sweep.make_sweep_step(system.gan, compile=False, vectorize=False)
    assert isinstance(step, sweep.PhasedStep)
    state = init_state(system.gan, fr.key(0))
    masked = make_train_step(system.gan)
    ref = state
    steps, made = 30, 0
    for _ in range(steps):
        state, m = step(state, system.data)
        ref, mr = masked(ref, system.data)
        made += int(m["gen/steps"])
        assert float(m["gen/loss"]) == float(mr["gen/loss"])
    assert _equal((state.gen, state.disc, state.extra), (ref.gen, ref.disc, ref.extra))
    assert step.gen_calls == made < steps * system.gan.loop.max_gen_steps  # masks would run all 5 every step
    # with dropout in G: the phases take the forward keys the masked step takes
    drop = systems.System(system.gan.with_options(gen=nets.mlp(64, [16], 64, "relu", dropout=0.5)), system.data,
                          "image")
    pstep = sweep.make_sweep_step(drop.gan, compile=False, vectorize=False)
    a = b = init_state(drop.gan, fr.key(1))
    for _ in range(10):
        a, _ = pstep(a, drop.data)
        b, _ = make_train_step(drop.gan)(b, drop.data)
    assert _equal((a.gen, a.disc), (b.gen, b.disc))


def test_compiled_phased_sweep_equals_the_eager_sweep():
    """The phased step compiled (each phase its own graph, guards always evaluated) over steps that make
    different numbers of G updates: float64 within 1e-12 of the eager sweep (aot_eager traces the same
    ops; only the vmapped kernels' reduction order differs)."""
    system = systems.make_system("mnist", hidden=16, batch_size=8)
    points = sweep.grid(range(3))
    eager = sweep.run(system, points, steps=24, compile=False, log_every=1, dtype=torch.float64)
    torch._dynamo.reset()
    comp = sweep.run(system, points, steps=24, compile=True, backend="aot_eager", log_every=1, dtype=torch.float64)
    made = eager.history["gen/steps"]
    assert len(set(made.flatten().tolist())) > 1  # the schedule varies: the phases see varied inputs
    assert _maxdiff((comp.state.gen, comp.state.disc), (eager.state.gen, eager.state.disc)) <= 1e-12
    torch.testing.assert_close(comp.history["gen/steps"], made, rtol=0, atol=0)


# ----------------------------------------------------------------------------- CUDA graphs, chunk planning


@pytest.mark.slow  # two cold inductor compiles (minutes on a 2-core machine); tests/test_cuda.py runs it on a GPU
def test_cuda_graph_mode_takes_the_graph_replay_path_and_equals_plain_compile():
    """mode="reduce-overhead" (CUDA graphs on a GPU; on the CPU inductor runs the same kernels without a
    graph) goes through the engine's replay path (a step-begin mark before each call, the state copied
    out of the graph's pool) and equals plain compiled calls bitwise, K steps per call included."""
    system = systems.make_system("gaussian1d", hidden=8, batch_size=16)
    points = sweep.grid(range(4))
    torch._dynamo.reset()
    plain = sweep.run(system, points, steps=6, compile=True, log_every=1, steps_per_call=3)
    torch._dynamo.reset()
    graph = sweep.run(system, points, steps=6, compile=True, log_every=1, steps_per_call=3, mode="reduce-overhead")
    assert _equal((graph.state.gen, graph.state.disc), (plain.state.gen, plain.state.disc))
    for k in plain.history:
        torch.testing.assert_close(graph.history[k], plain.history[k], rtol=0, atol=0, equal_nan=True)


def test_fit_chunk_is_the_widest_power_of_two_that_fits():
    from funcgan.memory import fit_chunk

    MiB = 2**20
    costs = {2: 10 * MiB + 2 * 3 * MiB, 8: 10 * MiB + 8 * 3 * MiB}  # 10 MiB fixed + 3 MiB per run
    plan = fit_chunk(costs, free=1000 * MiB, n_runs=10_000, fraction=0.8)
    assert plan.chunk_size == 256  # (800 - 10) / 3 = 263 runs fit; 256 is the widest power of two
    assert "3.00 MiB per run" in plan.why
    assert fit_chunk(costs, free=1000 * MiB, n_runs=200).chunk_size == 200  # all fit: no padding
    assert fit_chunk(costs, free=1000 * MiB, n_runs=300).chunk_size == 256
    assert fit_chunk(costs, free=1000 * MiB, n_runs=300, fraction=0.5).chunk_size == 128  # 163 fit
    assert fit_chunk(costs, free=400 * MiB, n_runs=300).chunk_size == 64  # (320 - 10) / 3 = 103 fit
    with pytest.raises(ValueError, match="one run needs about 13.0 MiB"):
        fit_chunk(costs, free=15 * MiB, n_runs=4)
    with pytest.raises(ValueError, match="two chunk sizes"):
        fit_chunk({2: MiB}, free=100 * MiB, n_runs=4)
    with pytest.raises(ValueError, match="fraction"):
        fit_chunk(costs, free=100 * MiB, n_runs=4, fraction=1.5)


def test_auto_chunk_on_the_cpu_is_the_default_and_is_reported(gauss):
    plan = sweep.plan_chunk(gauss, 1000, "cpu")
    assert plan.chunk_size == 256 and "the CPU rule" in plan.why
    assert sweep.plan_chunk(gauss, 5, "cpu").chunk_size == 5
    assert sweep.plan_chunk(gauss, 1, "cpu") == (1, "1 run per call (a lone run)")
    for chunk_size in ("auto", None):  # the CPU's default is the rule
        result = sweep.run(gauss, sweep.grid(range(3)), steps=2, chunk_size=chunk_size, compile=True,
                           backend="aot_eager")
        assert result.chunk_size == 3 and "the CPU rule" in result.extras["chunk_plan"]
    assert sweep.run(gauss, sweep.grid(range(3)), steps=2, chunk_size=2, compile=True,
                     backend="aot_eager").chunk_size == 2  # a chunk asked for is the chunk
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1 or 'auto'"):
        sweep.run(gauss, sweep.grid(range(3)), steps=2, chunk_size="wide")
    with pytest.raises(ValueError, match="CUDA memory only"):
        from funcgan.memory import free_bytes

        free_bytes("cpu")


def test_the_cpu_chunk_is_the_widest_whose_step_writes_at_most_the_budget():
    from funcgan.memory import CPU_CHUNK, CPU_STEP_BYTES, cpu_chunk, written_bytes

    MiB = 2**20
    assert cpu_chunk(MiB, 1000).chunk_size == CPU_CHUNK  # 1024 would fit the bytes: capped at 256 runs
    assert cpu_chunk(MiB, 100).chunk_size == 100  # every run fits: no padding
    assert cpu_chunk(57 * MiB, 1000).chunk_size == 16  # 1024 / 57 = 17.9 -> a power of two
    assert cpu_chunk(64 * MiB, 1000).chunk_size == 16 and cpu_chunk(64 * MiB + 1, 1000).chunk_size == 8
    assert cpu_chunk(CPU_STEP_BYTES * 3, 1000).chunk_size == 1  # one run writes more: one run a call
    assert cpu_chunk(0, 7).chunk_size == 7
    with pytest.raises(ValueError, match="n_runs"):
        cpu_chunk(MiB, 0)
    x = torch.zeros(1000)
    assert written_bytes(lambda t: t * 2, x) == 4000  # one float32 output of 1000 elements
    assert written_bytes(lambda t: (t + 1, (t * 2).double()), x) == 4000 * 2 + 8000  # every op's output counted


def test_the_cpu_chunk_of_a_conv_gan_is_narrower_than_a_small_nets(gauss):
    """The rule reads a real step: DCGAN's step (57 MiB a run at width 16) gets 16 runs a call, the
    1-D GAN's (1.4 MiB) 256."""
    dcgan = systems.make_system("dcgan", width=16)
    assert sweep.plan_chunk(dcgan, 1000, "cpu").chunk_size == 16
    assert sweep.plan_chunk(gauss, 1000, "cpu").chunk_size == 256


def _recording_backend(graphs: list):
    """A ``torch.compile`` backend that keeps every graph it is given in ``graphs`` and runs it as traced."""

    def recording(gm, inputs):
        graphs.append(gm)
        return gm.forward

    return recording


def _sweep_leaves(res):
    return [*tree_leaves(res.state), *res.history.values()]


def test_a_sweep_with_its_keys_hashed_on_the_host_is_bitwise_the_inlined_one(monkeypatch):
    """``host_hash`` moves the key hash of a compiled CPU step into one opaque op (a shorter cold
    compile); the words are the same integers, so a sweep's every state leaf and metric are the same
    bits. The traced graphs are recorded: the op is in the host-hash step's and in no other, and an
    op whose counters are off by one bit changes the run (negative control)."""
    system = systems.seeds.gaussian1d()
    points = sweep.grid(range(3))
    graphs: list = []
    recording = _recording_backend(graphs)
    runs = {}
    for on in (False, True):
        graphs.clear()
        runs[on] = sweep.run(system, points, 4, backend=recording, host_hash=on, log_every=1)
        assert graphs and any("hash_block" in g.print_readable(print_output=False) for g in graphs) == on
    assert all(torch.equal(a, b) for a, b in zip(_sweep_leaves(runs[False]), _sweep_leaves(runs[True])))
    real = fr._block_numpy
    monkeypatch.setattr(fr, "_block_numpy", lambda k0, k1, c: real(k0, k1, c ^ 1))
    torch._dynamo.reset()
    off = sweep.run(system, points, 4, backend=recording, host_hash=True, log_every=1)
    assert not all(torch.equal(a, b) for a, b in zip(_sweep_leaves(runs[False]), _sweep_leaves(off)))


def test_host_hash_is_chosen_for_short_compiled_cpu_sweeps_only():
    n = sweep.HOST_HASH_RUN_STEPS
    assert sweep.host_hash_pays(n) and not sweep.host_hash_pays(n + 1)
    assert not sweep.host_hash_pays(10, "cuda") and not sweep.host_hash_pays(10, "cpu", "aot_eager")


class _Started(Exception):
    pass


@pytest.mark.parametrize(
    "compile, backend, starts",
    [(True, "inductor", True), (True, "aot_eager", False), (False, "inductor", False)],
)
def test_inductors_isa_check_is_started_before_a_cpu_inductor_compile_only(
    monkeypatch, compile, backend, starts
):
    """A compiled CPU sweep under inductor starts inductor's vector-ISA check in the background before
    its first trace (``funcgan.compile.prefetch_cpu_isa``); eager and other backends do not."""

    def started():
        raise _Started

    monkeypatch.setattr(sweep, "prefetch_cpu_isa", started)
    system = systems.seeds.gaussian1d()
    if starts:
        with pytest.raises(_Started):
            sweep.run(system, sweep.grid([0]), 2, compile=compile, backend=backend)
    else:
        sweep.run(system, sweep.grid([0]), 2, compile=compile, backend=backend)


def test_prefetch_of_the_isa_check_runs_it_once_in_a_background_thread(monkeypatch):
    import threading

    from torch._inductor import cpu_vec_isa

    from funcgan import compile as fc

    ran = []
    monkeypatch.setattr(cpu_vec_isa, "valid_vec_isa_list", lambda: ran.append(threading.current_thread().name))
    fc.prefetch_cpu_isa.cache_clear()
    try:
        first = fc.prefetch_cpu_isa()
        assert fc.prefetch_cpu_isa() is first  # once a process
        first.join(timeout=10)
        assert ran == ["funcgan-isa-check"] and first.daemon
    finally:
        fc.prefetch_cpu_isa.cache_clear()


@pytest.mark.parametrize("runs", [1, 3])
def test_a_compiled_sweep_traces_once_its_fresh_state_has_the_steps_strides(runs):
    """``init_sweep`` gives every leaf the contiguous strides a step returns, size-1 axes included (vmap
    expands them with stride 0), so dynamo's stride guards hold from the second step on: one graph for
    the whole run. A one-run sweep used to recompile at its second step (hyper-parameters of shape (1,))."""
    system = systems.seeds.gaussian1d()
    states = sweep.init_sweep(system.gan, sweep.grid(range(runs)))
    assert all(x.stride() == torch.empty(x.shape).stride() for x in tree_leaves(states))
    graphs: list = []
    recording = _recording_backend(graphs)
    sweep.run(system, sweep.grid(range(runs)), 3, backend=recording)
    assert len(graphs) == 1


def test_a_fresh_state_with_a_stride_0_leaf_recompiles_at_the_second_step(monkeypatch):
    """Negative control: fresh states as ``.contiguous().clone()`` left them (a (1,) hyper-parameter
    expanded with stride 0) fail the stride check and make a one-run sweep trace a second graph."""
    system = systems.seeds.gaussian1d()
    real = sweep.init_sweep

    def stride_0(gan, points, *args, **kwargs):
        states = real(gan, points, *args, **kwargs)
        return tree_map(lambda x: x.reshape(()).expand(1) if x.shape == (1,) else x, states)

    monkeypatch.setattr(sweep, "init_sweep", stride_0)
    states = sweep.init_sweep(system.gan, sweep.grid([0]))
    assert not all(x.stride() == torch.empty(x.shape).stride() for x in tree_leaves(states))
    graphs: list = []
    recording = _recording_backend(graphs)
    sweep.run(system, sweep.grid([0]), 3, backend=recording)
    assert len(graphs) == 2


def test_only_a_lone_run_compiles_single_threaded_kernels(gauss, monkeypatch):
    """One kernel thread is for a lone run's tiny kernels (S = 1); a chunk of one run in a wider sweep
    (what the CPU rule gives a large net) keeps torch's threads."""
    seen, real = [], sweep.make_sweep_step

    def recording(*args, **kw):
        seen.append(kw.get("kernel_threads"))
        return real(*args, **kw)

    monkeypatch.setattr(sweep, "make_sweep_step", recording)
    sweep.run(gauss, sweep.grid(range(1)), steps=1, compile=True, backend="aot_eager")
    sweep.run(gauss, sweep.grid(range(2)), steps=1, chunk_size=1, compile=True, backend="aot_eager")
    assert seen == [1, None]
