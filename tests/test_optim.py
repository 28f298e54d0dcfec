"""funcgan.optim against torch.optim, run in lockstep on the same gradients.

Tolerances:
- float64: every parameter within 1e-12 relative (to the parameter scale) of
  torch.optim after 1 to 50 steps: both compute the same formula, differing only
  in the order of a few float64 roundings.
- float32: funcgan's distance to torch.optim(float32) must stay within twice
  torch.optim(float32)'s own distance to the exact (float64) trajectory, plus
  1e-6 of the parameter scale. Rounding differences are of the order of float32's
  own error, but not bitwise: torch fuses some ops (add with alpha, addcdiv)
  that funcgan writes as separate tensor ops, and Adam divides by sqrt(v), which
  amplifies differences in coordinates whose gradients are tiny.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from funcgan import optim
from funcgan.tree import tree_leaves
from tests import strategies as S


def _run_funcgan(tx, params, grads):
    state = tx.init(params)
    traj = []
    for g in grads:
        updates, state = tx.update(g, state, params)
        params = optim.apply_updates(params, updates)
        traj.append(params)
    return traj, state


def _run_torch(make_opt, params, grads):
    tp = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    opt = make_opt(list(tp.values()))
    traj = []
    for g in grads:
        for k in tp:
            tp[k].grad = g[k].clone()
        opt.step()
        traj.append({k: v.detach().clone() for k, v in tp.items()})
    return traj, opt


def _maxdiff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _scale(p):
    return max(1.0, max(v.abs().max().item() if v.numel() else 0.0 for v in p.values()))


def _check_lockstep(make_tx, make_opt, shapes, steps, seed):
    p64 = S.make_params(shapes, torch.float64, seed)
    g64 = S.make_grads(p64, steps, seed)
    ours64, _ = _run_funcgan(make_tx(), p64, g64)
    ref64, _ = _run_torch(make_opt, p64, g64)
    for a, b in zip(ours64, ref64):
        assert _maxdiff(a, b) <= 1e-12 * _scale(b)

    p32 = {k: v.float() for k, v in p64.items()}
    g32 = [{k: v.float() for k, v in g.items()} for g in g64]
    ours32, _ = _run_funcgan(make_tx(), p32, g32)
    ref32, _ = _run_torch(make_opt, p32, g32)
    for a, b, exact in zip(ours32, ref32, ref64):
        torch_err = _maxdiff(b, {k: v.float() for k, v in exact.items()})
        assert _maxdiff(a, b) <= 2 * torch_err + 1e-6 * _scale(b)


@given(shapes=S.param_shapes, steps=S.step_counts, seed=S.seeds, lr=S.learning_rates, b1=S.betas1,
       b2=S.betas2, eps=S.eps_values, wd=S.weight_decays, amsgrad=st.booleans())
def test_adam_matches_torch_optim(shapes, steps, seed, lr, b1, b2, eps, wd, amsgrad):
    _check_lockstep(lambda: optim.adam(lr, (b1, b2), eps, wd, amsgrad),
                    lambda ps: torch.optim.Adam(ps, lr, (b1, b2), eps, wd, amsgrad, foreach=False),
                    shapes, steps, seed)


@given(shapes=S.param_shapes, steps=S.step_counts, seed=S.seeds, lr=S.learning_rates, b1=S.betas1,
       b2=S.betas2, wd=S.weight_decays, amsgrad=st.booleans())
def test_adamw_matches_torch_optim(shapes, steps, seed, lr, b1, b2, wd, amsgrad):
    _check_lockstep(lambda: optim.adamw(lr, (b1, b2), 1e-8, wd, amsgrad),
                    lambda ps: torch.optim.AdamW(ps, lr, (b1, b2), 1e-8, wd, amsgrad, foreach=False),
                    shapes, steps, seed)


@given(shapes=S.param_shapes, steps=S.step_counts, seed=S.seeds, lr=S.learning_rates, momentum=S.momenta,
       dampening=st.sampled_from([0.0, 0.1]), wd=S.weight_decays, nesterov=st.booleans())
def test_sgd_matches_torch_optim(shapes, steps, seed, lr, momentum, dampening, wd, nesterov):
    if nesterov and (momentum == 0 or dampening != 0):
        nesterov = False
    _check_lockstep(lambda: optim.sgd(lr, momentum, dampening, wd, nesterov),
                    lambda ps: torch.optim.SGD(ps, lr, momentum, dampening, wd, nesterov, foreach=False),
                    shapes, steps, seed)


@given(shapes=S.param_shapes, steps=S.step_counts, seed=S.seeds, lr=S.learning_rates,
       alpha=st.sampled_from([0.9, 0.99]), wd=S.weight_decays, momentum=S.momenta, centered=st.booleans())
def test_rmsprop_matches_torch_optim(shapes, steps, seed, lr, alpha, wd, momentum, centered):
    _check_lockstep(lambda: optim.rmsprop(lr, alpha, 1e-8, wd, momentum, centered),
                    lambda ps: torch.optim.RMSprop(ps, lr, alpha, 1e-8, wd, momentum, centered, foreach=False),
                    shapes, steps, seed)


@given(shapes=S.param_shapes, seed=S.seeds, max_norm=st.floats(0.01, 10.0))
def test_clip_by_global_norm_matches_clip_grad_norm(shapes, seed, max_norm):
    p = S.make_params(shapes, torch.float64, seed)
    g = S.make_grads(p, 1, seed)[0]
    ours, _ = optim.clip_by_global_norm(max_norm).update(g, optim.EmptyState())
    tp = [v.clone().requires_grad_(True) for v in p.values()]
    for t, k in zip(tp, g):
        t.grad = g[k].clone()
    torch.nn.utils.clip_grad_norm_(tp, max_norm)
    for t, k in zip(tp, g):
        torch.testing.assert_close(ours[k], t.grad, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize(
    "schedule,make_sched",
    [
        (lambda: optim.schedules.exponential_decay(0.1, 0.9), lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.9)),
        (lambda: optim.schedules.step_decay(0.1, 3, 0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5)),
        (lambda: optim.schedules.cosine_decay(0.1, 7, 0.01), lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 7, 0.01)),
        (lambda: optim.schedules.linear_warmup(0.1, 5, 0.2), lambda o: torch.optim.lr_scheduler.LinearLR(o, 0.2, 1.0, 5)),
    ],
)
def test_schedule_matches_torch_lr_scheduler(schedule, make_sched):
    # The torch schedulers update lr recursively; the closed forms agree to 1e-12.
    p = {"w": torch.randn(4, dtype=torch.float64)}
    grads = S.make_grads(p, 10, 0)
    tx = optim.sgd(schedule())
    tp = p["w"].clone().requires_grad_(True)
    opt = torch.optim.SGD([tp], lr=0.1)
    sched = make_sched(opt)
    state = tx.init(p)
    params = p
    for g in grads:
        u, state = tx.update(g, state, params)
        params = optim.apply_updates(params, u)
        tp.grad = g["w"].clone()
        opt.step()
        sched.step()
        torch.testing.assert_close(params["w"], tp.detach(), rtol=1e-12, atol=1e-12)


def test_chain_composes_left_to_right():
    p = {"w": torch.tensor([3.0, 4.0], dtype=torch.float64)}
    g = {"w": torch.tensor([3.0, 4.0], dtype=torch.float64)}  # norm 5
    tx = optim.chain(optim.clip_by_global_norm(1.0), optim.sgd(0.5))
    u, _ = tx.update(g, tx.init(p), p)
    torch.testing.assert_close(u["w"], -0.5 * g["w"] / (5 + 1e-6), rtol=1e-14, atol=0)


@given(shapes=S.param_shapes, seed=S.seeds)
def test_optimizers_preserve_structure_and_dtype(shapes, seed):
    for dtype in (torch.float32, torch.float64):
        p = S.make_params(shapes, dtype, seed)
        g = S.make_grads(p, 1, seed)[0]
        for tx in (optim.adam(), optim.adamw(), optim.sgd(momentum=0.9), optim.rmsprop(centered=True)):
            u, _ = tx.update(g, tx.init(p), p)
            assert u.keys() == p.keys()
            for k in p:
                assert u[k].shape == p[k].shape and u[k].dtype == dtype


def test_init_allocates_fresh_slots():
    p = {"w": torch.zeros(3)}
    st = optim.adam(amsgrad=True).init(p)[0]
    ptrs = {st.mu["w"].data_ptr(), st.nu["w"].data_ptr(), st.nu_max["w"].data_ptr(), p["w"].data_ptr()}
    assert len(ptrs) == 4


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: optim.adam(lr=0.0), "lr must be finite and > 0"),
        (lambda: optim.adam(lr=-1e-3), "lr must be finite and > 0"),
        (lambda: optim.adam(betas=(1.0, 0.999)), r"betas\[0\] must be in \[0.0, 1.0\)"),
        (lambda: optim.adam(betas=(0.9, -0.1)), r"betas\[1\] must be in"),
        (lambda: optim.adam(betas=(0.9,)), "betas must be a pair"),
        (lambda: optim.sgd(lr=float("nan")), "lr must be finite"),
        (lambda: optim.sgd(momentum=-0.5), "momentum must be finite and >= 0"),
        (lambda: optim.sgd(nesterov=True), "Nesterov momentum requires"),
        (lambda: optim.rmsprop(alpha=1.5), "alpha must be in"),
        (lambda: optim.clip_by_global_norm(0.0), "max_norm must be finite and > 0"),
        (lambda: optim.adam(lr=torch.tensor(-1.0)), "lr must be finite and > 0"),
        (lambda: optim.inject_hyperparams(optim.adam)(lr=-1.0), "lr must be finite and > 0"),
    ],
)
def test_bad_hyperparameters_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_tensor_lr_under_vmap_equals_loop():
    """A per-seed learning rate held in the state (inject_hyperparams) under vmap."""
    from funcgan.tree import tree_stack

    lrs = [1e-3, 1e-2, 1e-1]
    make = optim.inject_hyperparams(optim.adam)
    p = {"w": torch.randn(5, dtype=torch.float64)}
    g = {"w": torch.randn(5, dtype=torch.float64)}
    states = [make(lr=lr, betas=(0.5, 0.9)).init(p) for lr in lrs]
    tx = make(lr=1e-3, betas=(0.5, 0.9))  # the structure; values come from the state

    def step(state, params):
        u, state = tx.update(g, state, params)
        return optim.apply_updates(params, u), state

    batched_p, batched_s = torch.func.vmap(step)(tree_stack(states), tree_stack([p] * 3))
    for i, lr in enumerate(lrs):
        ref_tx = optim.adam(lr, betas=(0.5, 0.9))
        u, _ = ref_tx.update(g, ref_tx.init(p), p)
        torch.testing.assert_close(batched_p["w"][i], optim.apply_updates(p, u)["w"], rtol=1e-14, atol=1e-15)


def test_compiled_update_does_not_recompile_across_steps_and_lrs():
    import torch._dynamo

    make = optim.inject_hyperparams(optim.adam)
    p = {"w": torch.randn(4), "b": torch.randn(2)}
    tx = make(lr=1e-3)

    def step(params, state, grads):
        u, state = tx.update(grads, state, params)
        return optim.apply_updates(params, u), state

    torch._dynamo.reset()
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    eager_p, eager_s = p, make(lr=1e-3).init(p)
    comp_p, comp_s = p, make(lr=1e-3).init(p)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for i in range(3):
            g = {k: torch.randn_like(v) for k, v in p.items()}
            comp_p, comp_s = compiled(comp_p, comp_s, g)
            eager_p, eager_s = step(eager_p, eager_s, g)
        # a different learning rate is a different tensor value, not a recompile
        s2 = make(lr=5e-2).init(p)
        compiled(p, s2, g)
    for k in p:
        torch.testing.assert_close(comp_p[k], eager_p[k], rtol=1e-6, atol=1e-7)


def _trajectories_agree(make_tx, shapes, steps, seed, dtype):
    """Whether the eager ``torch._foreach_*`` route (plain dicts of one dtype) gives, bit for bit, the
    per-leaf route that traced code takes (forced here by an active torch function mode)."""
    p = {k: v.to(dtype) for k, v in S.make_params(shapes, torch.float64, seed).items()}
    g = [{k: v.to(dtype) for k, v in x.items()} for x in S.make_grads(p, steps, seed)]
    fast, fast_state = _run_funcgan(make_tx(), p, g)
    with S.TracedForm():
        slow, slow_state = _run_funcgan(make_tx(), p, g)
    same = all(torch.equal(a[k], b[k]) for a, b in zip(fast, slow) for k in a)
    fs, ss = tree_leaves(fast_state), tree_leaves(slow_state)
    return same and len(fs) == len(ss) and all(torch.equal(a, b) for a, b in zip(fs, ss))


@given(shapes=S.param_shapes, steps=st.integers(1, 6), seed=S.seeds, lr=S.learning_rates, wd=S.weight_decays,
       amsgrad=st.booleans(), dtype=st.sampled_from([torch.float32, torch.float64]),
       kind=st.sampled_from(["adam", "adamw", "injected adam", "injected adamw"]))
def test_eager_foreach_adam_is_bitwise_the_per_leaf_adam(shapes, steps, seed, lr, wd, amsgrad, dtype, kind):
    """Exact: on the CPU a foreach op is a loop over the same single-tensor kernel. The injected forms
    hold their hyper-parameters as 0-d tensors (the foreach ops' tensor-scalar overloads)."""
    base = optim.adamw if kind.endswith("adamw") else optim.adam
    make = optim.inject_hyperparams(base) if kind.startswith("injected") else base
    assert _trajectories_agree(lambda: make(lr, (0.5, 0.99), 1e-8, wd, amsgrad), shapes, steps, seed, dtype)


def test_foreach_route_is_taken_eagerly_and_a_wrong_one_is_caught(monkeypatch):
    from funcgan.optim import transforms as T

    calls = []
    real = T._adam_foreach
    monkeypatch.setattr(T, "_adam_foreach", lambda *a: calls.append(1) or real(*a))
    make = lambda: optim.adam(1e-2, (0.5, 0.99))  # noqa: E731
    assert _trajectories_agree(make, [(3, 2), (4,)], 3, 0, torch.float32)
    assert len(calls) == 3  # the plain run took the foreach route at every step, the traced form never
    # negative control: a foreach route that forgets the second moment's bias correction is caught
    monkeypatch.setattr(T, "_adam_foreach", lambda names, grads, state, params, c, *a: real(
        names, grads, state, params, T._PerDtype(**{**c.values, "bc2_sqrt": 1.0}), *a))
    assert not _trajectories_agree(make, [(3, 2), (4,)], 3, 0, torch.float32)


def test_an_update_differentiated_through_keeps_its_gradient():
    """Params that require grad (a user's own autograd around an eager update, a hyper-gradient) take
    the per-leaf route: the foreach route's in-place ops would break the backward pass."""
    p = {"w": torch.randn(3, dtype=torch.float64, requires_grad=True), "b": torch.randn(2, dtype=torch.float64,
                                                                                       requires_grad=True)}
    outs = []
    for mode in (contextlib.nullcontext(), S.TracedForm()):
        tx = optim.chain(optim.adam(0.1), optim.adam(0.1, amsgrad=True))
        with mode:
            grads = {k: v**2 for k, v in p.items()}
            u, _ = tx.update(grads, tx.init(p), p)
            new = optim.apply_updates(p, u)
            outs.append(torch.autograd.grad(sum(v.sum() for v in new.values()), list(p.values())))
    for a, b in zip(*outs):
        assert torch.equal(a, b) and a.abs().sum() > 0


def test_hyperparameters_that_carry_grad_or_a_tangent_keep_it():
    """A learning rate or beta that requires grad (a hyper-gradient), or a dual eps (forward-mode AD):
    the eager route must give the per-leaf route's gradient and tangent (the foreach ops take them
    as constants, so they are refused there; two leaves, as one leaf hid the failure)."""
    import torch.autograd.forward_ad as fwAD

    p = {"a": torch.randn(2, dtype=torch.float64), "b": torch.randn(3, dtype=torch.float64)}
    g = {k: torch.randn_like(v) for k, v in p.items()}

    def hypergrad():
        lr, b1 = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (0.1, 0.8))
        tx = optim.adam(lr, (b1, 0.99))
        u, s = tx.update(g, tx.init(p), p)
        u, _ = tx.update(g, s, optim.apply_updates(p, u))
        return torch.autograd.grad(sum(x.sum() for x in u.values()), [lr, b1])

    def tangent():
        with fwAD.dual_level():
            eps = fwAD.make_dual(torch.tensor(1e-3, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
            tx = optim.adam(0.1, (0.8, 0.99), eps)
            u, s = tx.update(g, tx.init(p), p)
            u, _ = tx.update(g, s, optim.apply_updates(p, u))
            return [fwAD.unpack_dual(x).tangent for x in u.values()]

    fast = hypergrad() + tuple(tangent())
    with S.TracedForm():
        slow = hypergrad() + tuple(tangent())
    for a, b in zip(fast, slow):
        assert a is not None and torch.equal(a, b) and a.abs().sum() > 0


def _injected_run(make, steps, tweak=None):
    """``steps`` updates of an injected Adam on a fixed quadratic, float64; ``tweak(state, t)`` may edit
    the state's hyper-parameters between updates."""
    params = {"w": torch.linspace(-1, 1, 5, dtype=torch.float64)}
    tx = make(lr=1e-2, betas=(0.5, 0.99))
    state = tx.init(params)
    for t in range(steps):
        if tweak is not None:
            state = tweak(state, t)
        grads = {"w": 2 * params["w"] - 0.3}
        updates, state = tx.update(grads, state, params)
        params = optim.apply_updates(params, updates)
    return params["w"]


def test_an_eager_injected_update_reuses_its_build_only_while_the_hyperparameters_are_the_same_tensors():
    """Plainly eager, ``inject_hyperparams`` keeps the transformation it built while the state holds
    the same, unmodified hyper-parameter tensors. Every run must equal the run that rebuilds on every
    update (under a torch function mode, which counts as traced): fixed values, new tensors each
    step, and values changed in place."""
    make = optim.inject_hyperparams(optim.adam)

    def new_tensor(state, t):  # a schedule by hand: a fresh lr tensor every other step
        hp = dict(state.hyperparams, lr=torch.tensor(1e-2 / (1 + t // 2), dtype=torch.float64))
        return state._replace(hyperparams=hp)

    def in_place(state, t):  # read live by the built update either way; the refusal test below needs _version
        if t == 3:
            state.hyperparams["lr"].mul_(10.0)
            state.hyperparams["betas"][0].fill_(0.9)
        return state

    for tweak in (None, new_tensor, in_place):
        fast = _injected_run(make, 8, tweak)
        with S.TracedForm():
            slow = _injected_run(make, 8, tweak)
        assert torch.equal(fast, slow), tweak


def test_a_hyperparameter_made_invalid_in_place_is_refused_and_a_reuse_that_misses_it_is_caught(monkeypatch):
    """A value changed in place is a new build: an invalid one is refused as at build time. Negative
    control: a reuse that ignores in-place versions goes on training with it."""
    from funcgan.optim import base

    make = optim.inject_hyperparams(optim.adam)

    def negative_lr(state, t):
        if t == 3:
            state.hyperparams["lr"].fill_(-1.0)
        return state

    with pytest.raises(ValueError, match="lr must be finite and > 0"):
        _injected_run(make, 8, negative_lr)
    real = base._held
    monkeypatch.setattr(base, "_held", lambda hp: real(hp)[:2] + ((),))
    _injected_run(make, 8, negative_lr)  # not refused: the check would catch this route


def test_hyperparameters_that_need_grad_keep_adams_moments_out_of_the_graph():
    """Only the update depends on a learning rate that needs grad (a hypergradient): the moments must
    not (casting the hyper-parameters together would tie every cast to it), nor may a reused build
    be taken from an update made without grad."""
    lr = torch.tensor(1e-2, dtype=torch.float64, requires_grad=True)
    params = {"w": torch.linspace(-1, 1, 5, dtype=torch.float64)}
    for make in (lambda: optim.adam(lr=lr), lambda: optim.inject_hyperparams(optim.adam)(lr=lr)):
        tx = make()
        state = tx.init(params)
        with torch.no_grad():
            tx.update({"w": params["w"] * 2}, state, params)
        updates, state = tx.update({"w": params["w"] * 2}, state, params)
        moments = [x for x in tree_leaves(state) if isinstance(x, torch.Tensor) and x.dim() == 1]
        assert moments and not any(x.requires_grad for x in moments)
        assert updates["w"].requires_grad
