"""Sweeps: every run is the run its seed gives alone; compiled once; divergence isolated.

Tolerances: vmapped and lone runs differ only by the order of float reductions
inside batched matmuls, so float64 runs agree to 1e-10 after 10 steps
(measured ~1e-16); float32 compiled runs (inductor/aot_eager may fuse and
reorder) agree to 1e-4, since Adam can turn a round-off-sized gradient into an
lr-sized (1e-3) step only for coordinates with near-zero gradient, which these
small runs do not have over 10 steps (measured ~1e-7).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch._dynamo
from hypothesis import given, settings
from hypothesis import strategies as st

from funcgan import random as fr
from funcgan import sweep, systems
from funcgan.train import init_state, make_train_step
from funcgan.tree import tree_index, tree_leaves


def _lone(system, seed, steps, dtype=torch.float64, **over):
    from dataclasses import replace

    gan = system.gan
    kw = {}
    if "gen_lr" in over:
        kw["gen_opt"] = replace(gan.gen_opt, lr=over["gen_lr"])
    if "disc_lr" in over:
        kw["disc_opt"] = replace(gan.disc_opt, lr=over["disc_lr"])
    state = init_state(gan, fr.key(seed), dtype=dtype, **kw)
    step = make_train_step(gan)
    data = tuple(x.to(dtype) for x in system.data)
    for _ in range(steps):
        state, metrics = step(state, data)
    return state, metrics


def _maxdiff(a, b):
    return max(float((x - y).abs().max()) for x, y in zip(tree_leaves(a), tree_leaves(b)) if x.is_floating_point())


@pytest.fixture(scope="module")
def gauss():
    return systems.make_system("gaussian1d", batch_size=32)


@settings(max_examples=8)
@given(seed=st.integers(0, 10_000), width=st.sampled_from([1, 3, 8, 33]), pos=st.integers(0, 32),
       chunk=st.sampled_from([None, 1, 2, 5]))
def test_run_equals_lone_run_at_any_width_position_and_chunk(gauss, seed, width, pos, chunk):
    pos %= width
    seeds = [(seed + 1 + i) % 20_000 for i in range(width)]
    seeds[pos] = seed
    if len(set(seeds)) != width:
        return
    result = sweep.run(gauss, sweep.grid(seeds), steps=6, chunk_size=chunk, dtype=torch.float64, compile=False,
                       log_every=3)
    lone, metrics = _lone(gauss, seed, 6)
    got = sweep.seed_state(result.state, pos)
    assert _maxdiff(got.gen_params, lone.gen_params) <= 1e-10
    assert _maxdiff(got.disc_opt_state, lone.disc_opt_state) <= 1e-10
    assert abs(float(result.history["gen/loss"][-1, pos]) - float(metrics["gen/loss"])) <= 1e-10


def test_run_in_a_sweep_of_4096_equals_lone_run(gauss):
    S = 4096
    result = sweep.run(gauss, sweep.grid(range(S)), steps=2, dtype=torch.float64, compile=False, log_every=1,
                       chunk_size=1024)
    for pos in (0, 1234, S - 1):
        lone, _ = _lone(gauss, pos, 2)
        assert _maxdiff(sweep.seed_state(result.state, pos).gen_params, lone.gen_params) <= 1e-10


@pytest.mark.parametrize("problem", list(systems.PROBLEMS))
def test_compiled_sweep_equals_eager_and_does_not_recompile(problem):
    system = systems.make_system(problem)
    points = sweep.grid(range(3), **({"gen_lr": [1e-3, 2e-4]} if problem != "pix2pix" else {"l1_weight": [1.0, 50.0]}))
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True):
        # chunk 4 over 6 runs: the second chunk is padded, so the same compiled graph serves both
        compiled = sweep.run(system, points, steps=3, chunk_size=4, compile=True, backend="aot_eager", log_every=1)
    eager = sweep.run(system, points, steps=3, chunk_size=4, compile=False, log_every=1)
    assert _maxdiff(compiled.state.gen_params, eager.state.gen_params) <= 1e-5
    for k in eager.history:
        torch.testing.assert_close(compiled.history[k], eager.history[k], rtol=1e-4, atol=1e-5, equal_nan=True)


def test_hyperparameters_are_per_run(gauss):
    points = sweep.grid([7], gen_lr=[1e-3, 1e-2], disc_lr=[1e-4])
    result = sweep.run(gauss, points, steps=4, dtype=torch.float64, compile=False)
    for i, p in enumerate(points):
        lone, _ = _lone(gauss, 7, 4, gen_lr=p["gen_lr"], disc_lr=p["disc_lr"])
        assert _maxdiff(sweep.seed_state(result.state, i).gen_params, lone.gen_params) <= 1e-10
    assert _maxdiff(sweep.seed_state(result.state, 0).gen_params, sweep.seed_state(result.state, 1).gen_params) > 1e-6


def test_sliced_run_continues_alone(gauss):
    result = sweep.run(gauss, sweep.grid(range(5)), steps=4, dtype=torch.float64, compile=False)
    sliced = sweep.seed_state(result.state, 3)
    step = make_train_step(gauss.gan)
    for _ in range(3):
        sliced, _ = step(sliced, ())
    lone, _ = _lone(gauss, 3, 7)
    assert _maxdiff(sliced.gen_params, lone.gen_params) <= 1e-10


def _wasserstein_system():
    """An unbounded objective with SGD: a large learning rate overflows float32 in a few steps."""
    from funcgan import losses as L
    from funcgan import nets
    from funcgan.train import GAN, Alternating, OptimizerSpec

    gan = GAN(gen=nets.mlp(2, [4], 1), disc=nets.mlp(1, [4], 1), latent_dim=2, batch_size=8,
              loop=Alternating(disc_loss=L.disc_wasserstein, gen_loss=L.gen_wasserstein),
              sample_real=systems._gaussian_sampler(0.0, 1.0, 1),
              gen_opt=OptimizerSpec("sgd", 1e-3), disc_opt=OptimizerSpec("sgd", 1e-3), name="wgan-sgd")
    return systems.System(gan, (), "1d", 10, "", real_stats={"mean": 0.0, "std": 1.0})


def test_divergent_run_is_frozen_reported_and_isolated():
    system = _wasserstein_system()
    points = sweep.grid(range(4), disc_lr=[1e-3], gen_lr=[1e-3]) + [{"seed": 9, "disc_lr": 1e30, "gen_lr": 1e30}]
    result = sweep.run(system, points, steps=8, compile=False, log_every=1)
    d = int(result.diverged_at[4])
    assert 0 <= d < 8
    assert (result.diverged_at[:4] == -1).all()
    frozen = sweep.seed_state(result.state, 4)
    assert all(torch.isfinite(x).all() for x in tree_leaves((frozen.gen_params, frozen.disc_params)))
    assert int(frozen.step) == d  # frozen at its last finite state
    assert torch.isnan(result.history["disc/loss"][d:, 4]).all()
    assert torch.isfinite(result.history["disc/loss"][:, :4]).all()
    alone = sweep.run(system, points[:4], steps=8, compile=False, log_every=1)
    assert _maxdiff(tree_index(result.state.gen_params, slice(0, 4)), alone.state.gen_params) == 0.0


@pytest.mark.parametrize(
    "points,match",
    [
        ([], "no seeds given"),
        ([{"seed": 1}, {"seed": 1}], "duplicate run"),
        ([{"seed": -1}], "non-negative ints"),
        ([{"seed": 0, "gen_lr": 0.0}], "lr must be finite and > 0"),
        ([{"seed": 0, "gen_betas": (1.2, 0.9)}], r"betas\[0\] must be in"),
        ([{"seed": 0, "gen_clip_norm": 1.0}], "needs the GAN's gen optimizer to clip"),
        ([{"seed": 0, "warp": 1.0}], "unknown hyper-parameter 'warp'"),
    ],
)
def test_bad_sweeps_are_rejected_before_training(gauss, points, match):
    with pytest.raises(ValueError, match=match):
        sweep.init_sweep(gauss.gan, points)


def test_grid_crosses_seeds_and_values():
    pts = sweep.grid(range(3), gen_lr=[1e-3, 1e-4], disc_lr=[1e-3])
    assert len(pts) == 6
    assert pts[0] == {"seed": 0, "gen_lr": 1e-3, "disc_lr": 1e-3} and pts[3]["gen_lr"] == 1e-4


def test_per_seed_table_and_summary(gauss, tmp_path):
    from funcgan import sweep_cli

    result = sweep.run(gauss, sweep.grid(range(6)), steps=5, compile=False)
    rows = sweep_cli.per_seed_rows(gauss, result, n_samples=500)
    assert [r["seed"] for r in rows] == list(range(6))
    assert all(math.isfinite(r["gen_mean"]) and r["gen_std"] > 0 and r["diverged_at"] == "" for r in rows)
    summary = sweep_cli.summarize_rows(rows)
    assert summary["runs"] == 6 and summary["diverged"] == 0
    assert summary["gen_mean"]["q05"] <= summary["gen_mean"]["median"] <= summary["gen_mean"]["q95"]
    paths = sweep_cli.write_table(tmp_path, rows, summary, {"problem": "gaussian1d"})
    assert (tmp_path / "per_seed.csv").read_text().splitlines()[0].startswith("seed,")
    assert len(paths) == 3
