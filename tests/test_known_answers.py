"""Known answers: the key functions against an independent pure-Python implementation of their
algorithm, the properties that distinct keys, counts and fold data give distinct streams, optimizers
with schedules and weight decay in lockstep with torch.optim, checkpoints that refuse a mismatched
file, and the per-seed table against each run's own history."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from funcgan import checkpoint, losses, optim, sweep, systems
from funcgan import random as fr
from funcgan.cli import results

M = 0xFFFFFFFF


def _mix(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M
    x ^= x >> 15
    x = (x * 0x5BD1E995) & M
    return x ^ (x >> 16)


def _block(k0: int, k1: int, c: int) -> tuple[int, int]:
    w0 = _mix(_mix(_mix(c ^ k0) ^ k1) ^ 0x3C6EF372)
    w1 = _mix(_mix(_mix(c ^ k1 ^ 0xB7E15162) ^ k0) ^ 0x3C6EF372)
    return w0, w1


def py_key(seed: int) -> tuple[int, int]:
    lo, hi = seed & M, (seed >> 32) & M
    k0 = _mix(_mix(lo ^ 0x6A09E667) ^ hi)
    k1 = _mix(_mix(hi ^ 0xBB67AE85) ^ k0 ^ 0x243F6A88)
    return k0, k1


def py_split(k: tuple[int, int], n: int) -> list[tuple[int, int]]:
    return [_block(k[0] ^ 0xBB67AE85, k[1], c) for c in range(n)]


def py_fold_in(k: tuple[int, int], d: int) -> tuple[int, int]:
    return _block(k[0] ^ 0x243F6A88, k[1], d & M)


def py_bits(k: tuple[int, int], n: int) -> list[int]:
    half = [_block(k[0], k[1], c) for c in range((n + 1) // 2)]
    return ([w0 for w0, _ in half] + [w1 for _, w1 in half])[:n]


seeds = st.integers(0, 2**63 - 1)


@given(seed=seeds, n=st.integers(1, 5), d=st.integers(0, M), m=st.integers(1, 9))
def test_key_functions_equal_an_independent_implementation(seed, n, d, m):
    k = fr.key(seed)
    assert tuple(k.tolist()) == py_key(seed)
    assert [tuple(x) for x in fr.split(k, n).tolist()] == py_split(py_key(seed), n)
    assert tuple(fr.fold_in(k, d).tolist()) == py_fold_in(py_key(seed), d)
    assert tuple(fr.fold_in(k, torch.tensor(d)).tolist()) == py_fold_in(py_key(seed), d)
    assert fr.bits(k, m).tolist() == py_bits(py_key(seed), m)
    u = fr.uniform(k, m).tolist()  # float32: the top 24 bits of each word
    assert u == [(w >> 8) * 2.0**-24 for w in py_bits(py_key(seed), m)]


def test_known_vectors():
    """Fixed values (a regression pin: any change to the generator changes every run's numbers)."""
    assert fr.key(0).tolist() == [3163687055, 1350540980]
    assert fr.split(fr.key(0), 3).tolist() == [[2405723718, 56633103], [67361806, 2265270675], [787735373, 367901952]]
    assert fr.fold_in(fr.key(0), 5).tolist() == [2626513846, 2754762131]
    assert fr.bits(fr.key(7), 4).tolist() == [2519698934, 378346818, 3534965484, 2835002367]
    assert fr.randint(fr.key(7), 5, 0, 10).tolist() == [4, 8, 1, 4, 7]


@given(a=st.integers(0, M), b=st.integers(0, M), c=st.integers(0, M), d=st.integers(0, M))
def test_distinct_keys_give_distinct_streams(a, b, c, d):
    """Keys that differ in one word only, fold data that differ, and counts that differ all give
    different keys and streams (a fold that read one word twice would map some of them together)."""
    base = torch.tensor([a, b])
    for other in (torch.tensor([a, c]), torch.tensor([c, b])):
        if not torch.equal(base, other):
            assert not torch.equal(fr.fold_in(base, d), fr.fold_in(other, d))
            assert not torch.equal(fr.split(base, 2), fr.split(other, 2))
            assert not torch.equal(fr.bits(base, 4), fr.bits(other, 4))
    if c != d:
        assert not torch.equal(fr.fold_in(base, c), fr.fold_in(base, d))
    parts = fr.split(base, 8)
    assert len({tuple(x) for x in parts.tolist()}) == 8
    w = fr.bits(base, 64)
    assert len(set(w.tolist())) == 64


def test_step_keys_differ_per_step_and_seed():
    keys = {tuple(fr.fold_in(fr.split(fr.key(s), 3)[2], t).tolist()) for s in range(20) for t in range(50)}
    assert len(keys) == 1000


def test_step_keys_repeat_past_max_steps_so_sweep_run_refuses_longer_runs():
    from funcgan.step import MAX_STEPS

    k = fr.key(7)
    step = torch.tensor([0, 1, MAX_STEPS - 1, MAX_STEPS, MAX_STEPS + 1])
    ks = fr.fold_in(k.expand(5, 2), step)
    assert torch.equal(ks[3], ks[0]) and torch.equal(ks[4], ks[1])  # the bound is real: step 2**32 is step 0
    assert not torch.equal(ks[2], ks[0])
    system = systems.make_system("gaussian1d")
    with pytest.raises(ValueError, match=r"steps must be an int in \[1, 2\*\*32\]"):
        sweep.run(system, sweep.grid([0]), steps=MAX_STEPS + 1)


# ----------------------------------------------------------------------------- optimizers x schedules x decay

SCHEDULES = [
    (lambda: optim.schedules.exponential_decay(0.05, 0.9), lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.9)),
    (lambda: optim.schedules.step_decay(0.05, 3, 0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5)),
    (lambda: optim.schedules.cosine_decay(0.05, 7, 0.001),
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 7, 0.001)),
    (lambda: optim.schedules.linear_warmup(0.05, 5, 0.2), lambda o: torch.optim.lr_scheduler.LinearLR(o, 0.2, 1.0, 5)),
]
OPTS = {
    "adam": (lambda lr, wd: optim.adam(lr, (0.8, 0.99), weight_decay=wd),
             lambda p, wd: torch.optim.Adam(p, 0.05, (0.8, 0.99), weight_decay=wd, foreach=False)),
    "adamw": (lambda lr, wd: optim.adamw(lr, (0.8, 0.99), weight_decay=wd),
              lambda p, wd: torch.optim.AdamW(p, 0.05, (0.8, 0.99), weight_decay=wd, foreach=False)),
    "sgd": (lambda lr, wd: optim.sgd(lr, momentum=0.9, weight_decay=wd),
            lambda p, wd: torch.optim.SGD(p, 0.05, momentum=0.9, weight_decay=wd, foreach=False)),
    "rmsprop": (lambda lr, wd: optim.rmsprop(lr, weight_decay=wd, momentum=0.5),
                lambda p, wd: torch.optim.RMSprop(p, 0.05, weight_decay=wd, momentum=0.5, foreach=False)),
}


@pytest.mark.parametrize("name", list(OPTS))
@pytest.mark.parametrize("sched", range(len(SCHEDULES)))
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_every_optimizer_with_every_schedule_and_decay_matches_torch(name, sched, wd):
    """Lockstep over 12 steps in float64: the schedule is evaluated at the count of previous updates,
    exactly where torch's scheduler (stepped after each optimizer step) sets the rate."""
    make_tx, make_opt = OPTS[name]
    schedule, make_sched = SCHEDULES[sched]
    g = torch.Generator().manual_seed(sched * 7 + int(wd * 10))
    p = {"w": torch.randn(5, dtype=torch.float64, generator=g)}
    tx = make_tx(schedule(), wd)
    state, params = tx.init(p), p
    tp = p["w"].clone().requires_grad_(True)
    opt = make_opt([tp], wd)
    torch_sched = make_sched(opt)
    for _ in range(12):
        grad = torch.randn(5, dtype=torch.float64, generator=g)
        u, state = tx.update({"w": grad}, state, params)
        params = optim.apply_updates(params, u)
        tp.grad = grad.clone()
        opt.step()
        torch_sched.step()
        torch.testing.assert_close(params["w"], tp.detach(), rtol=1e-12, atol=1e-13)


def test_spec_with_a_schedule_builds_both_twins():
    spec = optim.OptimizerSpec("adam", optim.schedules.exponential_decay(1e-3, 0.5))
    assert spec.lr_at(0) == 1e-3 and spec.lr_at(2) == pytest.approx(2.5e-4) and "lr" not in spec.sweepable()
    assert spec.make_torch([torch.zeros(1, requires_grad=True)]).param_groups[0]["lr"] == 1e-3


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_refuses_another_dtype_and_extra_tensors(tmp_path):
    from funcgan.step import init_state

    gan = systems.make_system("gaussian1d").gan
    f32 = init_state(gan, fr.key(0))
    checkpoint.save(tmp_path / "a.safetensors", f32)
    with pytest.raises(checkpoint.CheckpointError, match="is torch.float32.*expects torch.float64"):
        checkpoint.load(tmp_path / "a.safetensors", init_state(gan, fr.key(0), dtype=torch.float64))
    ema = systems.make_system("gaussian1d", ema=0.9).gan
    checkpoint.save(tmp_path / "b.safetensors", init_state(ema, fr.key(0)))
    with pytest.raises(checkpoint.CheckpointError, match="unexpected \\['state/gen_ema"):
        checkpoint.load(tmp_path / "b.safetensors", f32)
    loaded = checkpoint.load(tmp_path / "a.safetensors", init_state(gan, fr.key(5)))
    assert all(torch.equal(loaded.state.gen.params[k], f32.gen.params[k]) for k in f32.gen.params)


# ----------------------------------------------------------------------------- the per-seed table


def test_per_seed_table_columns_are_each_runs_own_history():
    system = systems.make_system("gaussian1d", batch_size=16)
    result = sweep.run(system, sweep.grid(range(4), gen_lr=[1e-3, 5e-3]), steps=40, compile=False, log_every=2)
    rows = results.per_seed_rows(system, result, n_samples=300)
    T = len(result.logged_steps)
    tail = max(1, T // 10)
    for i, row in enumerate(rows):
        assert row["seed"] == result.points[i]["seed"] and row["gen_lr"] == result.points[i]["gen_lr"]
        for col, key in (("disc_loss", "disc/loss"), ("gen_loss", "gen/loss")):
            assert row[col] == float(result.history[key][-tail:, i].mean())
        assert row["steps"] == 40 and row["diverged_at"] == ""
    summary = results.summarize(rows, ["gen_lr"])
    g = summary["groups"][0]
    assert g["gen_lr"] == 1e-3 and g["seeds"] == 4
    assert math.isclose(g["metrics"]["disc_loss"]["mean"], sum(r["disc_loss"] for r in rows[:4]) / 4, rel_tol=1e-12)


# ----------------------------------------------------------------------------- defaults and boundaries
# (survivors of benchmarks/mutation.py: each pins a default or a boundary no other test reaches)


def test_penalty_defaults_are_the_papers():
    from funcgan import penalties as P

    for pen, weight in ((P.r1(), 10.0), (P.r2(), 10.0), (P.gradient_penalty(), 10.0), (P.dragan(), 10.0)):
        assert (pen.weight, pen.every) == (weight, 1), pen.name


def test_uniform_scales_into_any_interval():
    """The [0, 1) fast path must not swallow an interval that shares one end with it."""
    k = fr.key(3)
    u = fr.uniform(k, (64,), torch.float64)
    for lo, hi in ((0.0, 5.0), (-1.0, 1.0), (2.0, 3.0), (0.5, 1.0)):
        torch.testing.assert_close(fr.uniform(k, (64,), torch.float64, lo, hi), u * (hi - lo) + lo, rtol=0, atol=1e-15)


def test_rms_scaling_default_eps_is_torchs():
    """One RMSprop step on a gradient small enough for eps to matter: u = g / (sqrt(0.01 g^2) + 1e-8)."""
    g = {"w": torch.tensor([1e-8, 1e-6], dtype=torch.float64)}
    tx = optim.scale_by_rms()
    u, _ = tx.update(g, tx.init(g), None)
    expect = g["w"] / (torch.sqrt(0.01 * g["w"] ** 2) + 1e-8)
    torch.testing.assert_close(u["w"], expect, rtol=1e-12, atol=0)


def test_schedule_defaults_and_boundaries():
    t = torch.tensor(10, dtype=torch.int64)
    assert float(optim.schedules.cosine_decay(0.1, 10)(t)) == pytest.approx(0.0, abs=1e-15)  # eta_min = 0
    assert float(optim.schedules.linear_warmup(0.1, 4)(torch.tensor(0))) == 0.0  # start_factor = 0
    # closed upper ends: gamma = 1 (no decay) and start_factor = 1 (no warm-up) are allowed
    assert float(optim.schedules.exponential_decay(0.1, 1.0)(t)) == pytest.approx(0.1)
    assert float(optim.schedules.step_decay(0.1, 3, 1.0)(t)) == pytest.approx(0.1)
    assert float(optim.schedules.step_decay(0.1, 1, 0.5)(torch.tensor(3))) == pytest.approx(0.1 * 0.5**3)  # step 1
    assert float(optim.schedules.linear_warmup(0.1, 4, 1.0)(torch.tensor(0))) == pytest.approx(0.1)
    for bad in (lambda: optim.schedules.linear_warmup(0.1, 4, 1.2), lambda: optim.schedules.exponential_decay(0.1, 1.2),
                lambda: optim.schedules.step_decay(0.1, 3, 1.5)):
        with pytest.raises(ValueError):
            bad()


def test_default_alternating_loop_makes_one_update_of_each_player_per_step():
    """Seed 000's loop (Goodfellow et al.'s Algorithm 1 with k = 1): after 3 steps each optimizer
    has counted 3 updates."""
    import funcgan
    from funcgan import loops
    from funcgan.tree import tree_leaves

    assert (loops.Alternating().n_disc, loops.Alternating().n_gen) == (1, 1)
    system = systems.make_system("gaussian1d")
    step = funcgan.make_train_step(system)
    state = funcgan.init_state(system.gan, fr.key(0))
    for _ in range(3):
        state, _ = step(state, system.data)
    for player in (state.gen, state.disc):
        counts = [int(x) for x in tree_leaves(player.opt_state) if x.dtype == torch.int64]
        assert counts and set(counts) == {3}


def test_mixture_means_are_the_published_layouts():
    """The ring (unrolled-GAN paper: 8 modes on a radius-2 circle, the first at (2, 0)) and the grid
    (25 modes at {-4, -2, 0, 2, 4}^2, centred at 0)."""
    from funcgan.metrics import grid_means, ring_means

    ring = ring_means(8, 2.0)
    assert ring.shape == (8, 2)
    torch.testing.assert_close(ring[0], torch.tensor([2.0, 0.0]), rtol=0, atol=1e-6)
    torch.testing.assert_close(ring[2], torch.tensor([0.0, 2.0]), rtol=0, atol=1e-6)
    torch.testing.assert_close(ring.norm(dim=1), torch.full((8,), 2.0), rtol=0, atol=1e-6)
    grid = grid_means(5, 2.0)
    axis = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
    assert torch.equal(grid, torch.cartesian_prod(axis, axis))
    assert torch.equal(grid_means(2, 1.0), torch.tensor([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]]))


def test_guard_defaults_and_reason_codes_are_the_documented_ones():
    """README and ``funcgan train --help``: --max-param 1e6, --max-output 1e6, --pinned-window 100; the
    reason codes the per-seed tables carry."""
    from funcgan.guard import REASONS, Guard, reason_name

    g = Guard()
    assert (g.max_param, g.max_output, g.pinned_window, g.pinned_fraction) == (1e6, 1e6, 100, 0.99)
    assert REASONS == {
        0: "",
        1: "non-finite values",
        2: "parameter magnitude",
        3: "generated-output magnitude",
        4: "loss pinned at its clamp",
    }
    assert [reason_name(c) for c in range(5)] == [REASONS[c] for c in range(5)]
    assert reason_name(torch.tensor(3)) == "generated-output magnitude"
    assert reason_name(9) == "reason 9"


def test_chunk_shape_boundaries():
    # compiled: the chunk asked for, capped at the run count; None: min(S, CPU_CHUNK) (sweep.run plans it on
    # the CPU); eager: one run a call
    assert sweep.chunk_shape(10, 1, True) == 1  # the smallest chunk is allowed
    assert sweep.chunk_shape(10, 4, True) == 4 and sweep.chunk_shape(3, 4, True) == 3
    assert sweep.chunk_shape(10, None, True) == 10
    assert sweep.chunk_shape(sweep.CPU_CHUNK + 1, None, True) == sweep.CPU_CHUNK
    assert sweep.chunk_shape(10, "auto", True) == 10 and sweep.chunk_shape(10, "auto", False) == 1
    assert sweep.chunk_shape(10, 4, False) == 1
    for bad in (0, -1, True, 2.0, "4"):
        with pytest.raises(ValueError, match="chunk_size must be an int >= 1 or 'auto'"):
            sweep.chunk_shape(10, bad, True)


def test_batched_keys_give_each_key_its_own_stream_in_the_leading_axes():
    keys = fr.key(torch.arange(6).reshape(2, 3))  # (2, 3, 2)
    for draw in (lambda k: fr.bits(k, (4,)), lambda k: fr.uniform(k, (2, 2)), lambda k: fr.normal(k, (3,))):
        out = draw(keys)
        assert out.shape[:2] == (2, 3)
        for i in range(2):
            for j in range(3):
                assert torch.equal(out[i, j], draw(keys[i, j]))
    one = fr.key(torch.tensor([9]))  # a batch of one key keeps its batch axis
    assert fr.bits(one, 4).shape == (1, 4) and torch.equal(fr.bits(one, 4)[0], fr.bits(fr.key(9), 4))


def test_seed_range_ends():
    assert fr.key(2**63 - 1).shape == (2,)
    for bad in (2**63, 2**64, -1):
        with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*63\)"):
            fr.key(bad)


def test_objectives_are_frozen_hashable_values():
    obj = losses.bce_probs()
    with pytest.raises(dataclasses.FrozenInstanceError):
        obj.name = "other"  # type: ignore[misc]
    assert isinstance(hash(obj), int)  # an unfrozen dataclass with eq has __hash__ = None: TypeError here


def test_dragan_perturbs_by_half_the_batch_std_by_default():
    # D(x) = |x|^2 / 2 has input gradient x, so the penalty is mean((|x_hat| - 1)^2) at the
    # perturbed point x_hat = x + (1 - alpha) * c * std(x) * u, computed here by hand (float64)
    from funcgan import penalties as P

    x = fr.normal(fr.key(3), (6, 2), torch.float64) * 3.0

    def disc(inp, buffers):
        return (inp**2).sum(1) / 2, buffers

    pen = P.dragan()
    noise = pen.draw(fr.key(4), x)
    value, _ = pen.value(disc, x, None, noise, {})
    x_hat = x + (1 - noise["alpha"][:, None]) * 0.5 * x.std() * noise["u"]
    want = ((torch.linalg.vector_norm(x_hat, dim=1) - 1) ** 2).mean()
    torch.testing.assert_close(value, want, rtol=1e-12, atol=0)  # float64: round-off only


def test_checkpoint_saves_tensors_that_carry_autograd_history(tmp_path):
    # a user's loop may log a metric (or hold a leaf) that still requires grad: saved as its values
    from funcgan.step import init_state

    gan = systems.make_system("gaussian1d").gan
    state = init_state(gan, fr.key(0))
    w = state.gen.params["model.0.weight"].clone().requires_grad_()
    state = state._replace(gen=state.gen._replace(params={**state.gen.params, "model.0.weight": w * 1.0}))
    loss = (w**2).sum().reshape(1)
    checkpoint.save(tmp_path / "g.safetensors", state, history=({"gen_loss": loss}, [0]))
    back = checkpoint.load(tmp_path / "g.safetensors", init_state(gan, fr.key(1)))
    assert torch.equal(back.state.gen.params["model.0.weight"], w.detach())
    assert torch.equal(back.history["gen_loss"], loss.detach())
