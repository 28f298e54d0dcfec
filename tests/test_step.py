"""The one gradient primitive, ``update_player``, takes its gradient by plain autograd where that is the
same computation as ``torch.func.grad_and_value``, and by ``torch.func`` everywhere else.

Tolerance (float64, 1e-12 absolute over every parameter, buffer, optimizer moment and metric after 3
steps): both paths run the same backward graph except where functorch decomposes an op before
differentiating it (measured: a 1-ulp difference, 2.8e-17, in one weight after one step); Adam's
update is a ratio of moments of the same gradient, so a 1-ulp gradient difference stays at round-off
level. 1e-12 is four orders above what was measured and six below what any planted gradient bug
moves a parameter by.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import funcgan
from funcgan import random as fr
from funcgan import step as S
from funcgan.step import PlayerState, init_state, make_train_step, update_player
from funcgan.testing.strategies import FAMILIES, LOOPS, gans
from funcgan.tree import tree_leaves


def _run(system, steps: int, plain_autograd: bool):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(S, "PLAIN_AUTOGRAD", plain_autograd)  # False: every call goes to torch.func
        return _steps(system, steps)


def _steps(system, steps: int):
    gan = system.gan
    state = init_state(gan, fr.key(7), dtype=torch.float64)
    data = tuple(x.to(torch.float64) if x.is_floating_point() else x for x in system.data)
    fn = make_train_step(gan)
    metrics = []
    for _ in range(steps):
        state, m = fn(state, data)
        metrics.append(m)
    return state, metrics


def _max_diff(a, b) -> float:
    worst = 0.0
    for x, y in zip(tree_leaves(a), tree_leaves(b), strict=True):
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            worst = max(worst, float((x - y).abs().max()) if x.numel() else 0.0)
    return worst


@pytest.mark.parametrize("loop", LOOPS)
@settings(max_examples=3)
@given(data=st.data())
def test_plain_autograd_equals_torch_func_in_every_loop_and_family(loop, data):
    family = data.draw(st.sampled_from([f for f in FAMILIES if f != "pix2pix"]), label="family")
    system = data.draw(gans(loop, family), label="system")
    fast, m_fast = _run(system, 3, plain_autograd=True)
    func, m_func = _run(system, 3, plain_autograd=False)
    assert _max_diff(fast, func) <= 1e-12
    assert _max_diff(m_fast, m_func) <= 1e-12


def _unrolled_gen_update(outer_grad_ok: bool):
    """G's step against D after one look-ahead D step taken *inside* G's loss with ``update_player``:
    G's gradient flows through D's update (the inner call must stay differentiable)."""
    torch.manual_seed(0)
    w_g = {"w": torch.randn(3, 2, dtype=torch.float64)}
    w_d = {"v": torch.randn(3, dtype=torch.float64)}
    z = torch.randn(5, 2, dtype=torch.float64)
    sgd = funcgan.optim.sgd(0.5)
    gen = PlayerState(w_g, {}, sgd.init(w_g))
    disc = PlayerState(w_d, {}, sgd.init(w_d))

    def gen_loss(params, buffers):
        fake = torch.tanh(z @ params["w"].T)  # (5, 3)
        d_loss = lambda p, b: (((fake @ p["v"]) - 1.0) ** 2).mean() if outer_grad_ok else (  # noqa: E731
            ((fake.detach() @ p["v"]) - 1.0) ** 2
        ).mean()
        ahead, _, _ = update_player(lambda p, b: (d_loss(p, b), b, None), disc, sgd)
        return -(fake @ ahead.params["v"]).mean(), buffers, None

    new, loss, _ = update_player(gen_loss, gen, sgd)
    return new.params["w"]


def test_an_update_inside_a_differentiated_loss_stays_differentiable():
    """Nested inside an outer plain-autograd call, the inner update's graph reaches G's parameters, so
    it takes torch.func's path and G's gradient through D's look-ahead is kept: it equals the all-torch.func computation, and differs from
    the one where the look-ahead is cut from G (the bug the nesting rule exists to prevent)."""
    through = _unrolled_gen_update(True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(S, "PLAIN_AUTOGRAD", False)
        reference = _unrolled_gen_update(True)
    cut = _unrolled_gen_update(False)
    torch.testing.assert_close(through, reference, rtol=0, atol=1e-14)
    assert (through - cut).abs().max() > 1e-6


def test_plain_autograd_is_taken_only_when_eager_and_outermost(monkeypatch):
    calls = []
    real = S.grad_and_value

    def spy(f, has_aux=False):
        calls.append("func")
        return real(f, has_aux=has_aux)

    monkeypatch.setattr(S, "grad_and_value", spy)
    p = {"w": torch.tensor([2.0], dtype=torch.float64)}
    tx = funcgan.optim.sgd(0.1)
    player = PlayerState(p, {}, tx.init(p))
    loss = lambda q, b: ((q["w"] ** 2).sum(), b, None)  # noqa: E731
    update_player(loss, player, tx)
    assert calls == []  # eager, outermost: plain autograd
    torch.func.vmap(lambda w: update_player(loss, PlayerState({"w": w}, {}, tx.init({"w": w})), tx)[0].params["w"])(
        torch.ones(3, 1, dtype=torch.float64)
    )
    assert calls == ["func"]  # under vmap: torch.func


def test_a_users_own_autograd_around_an_update_still_flows_through_it():
    """A user differentiating an update with plain ``torch.autograd`` (here: the updated weight with
    respect to a data scale captured by the loss) gets torch.func's answer, not a cut graph."""
    scale = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    x = torch.linspace(-1, 1, 7, dtype=torch.float64)
    p = {"w": torch.tensor([0.3], dtype=torch.float64)}
    tx = funcgan.optim.sgd(0.1)
    player = PlayerState(p, {}, tx.init(p))
    loss = lambda q, b: (((q["w"] * x - scale * x) ** 2).mean(), b, None)  # noqa: E731
    new, _, _ = update_player(loss, player, tx)
    (d_scale,) = torch.autograd.grad(new.params["w"].sum(), scale)
    expected = 0.1 * 2 * (x * x).mean()  # w' = w - lr * 2 mean(x (w x - s x)): dw'/ds = lr * 2 mean(x^2)
    torch.testing.assert_close(d_scale, expected, rtol=1e-12, atol=0)


def test_params_that_carry_an_outer_graph_keep_it():
    """Params computed from a tensor that requires grad (a hyper-gradient): the update stays differentiable
    with respect to it, as under torch.func (plain autograd on detached copies would cut it)."""
    w0 = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    x = torch.linspace(-1, 1, 5, dtype=torch.float64)
    tx = funcgan.optim.sgd(0.1)
    loss = lambda q, b: (((q["w"] * x - x) ** 2).mean(), b, None)  # noqa: E731

    def d_new_d_w0():
        p = {"w": w0 * 2}
        new, _, _ = update_player(loss, PlayerState(p, {}, tx.init(p)), tx)
        return torch.autograd.grad(new.params["w"].sum(), w0)[0]

    got = d_new_d_w0()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(S, "PLAIN_AUTOGRAD", False)
        want = d_new_d_w0()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    # w' = 2 w0 - 0.1 * 2 mean(x^2) (2 w0 - 1): dw'/dw0 = 2 - 0.4 mean(x^2)
    torch.testing.assert_close(got, 2 - 0.4 * (x * x).mean().reshape(1), rtol=1e-12, atol=0)


def test_aux_outputs_keep_an_outer_graph_and_a_non_scalar_loss_is_refused():
    s = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    p = {"w": torch.tensor([0.5], dtype=torch.float64)}
    tx = funcgan.optim.sgd(0.1)
    player = PlayerState(p, {}, tx.init(p))
    _, _, aux = update_player(lambda q, b: ((q["w"] ** 2).sum(), b, {"m": s * 3}), player, tx)
    assert aux["m"].requires_grad  # as torch.func leaves it
    with pytest.raises(RuntimeError, match="scalar"):
        update_player(lambda q, b: (q["w"] ** 2, b, None), player, tx)  # shape (1,): refused on every path
