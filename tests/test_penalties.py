"""Penalties against autograd's double backward, on every input rank, per example, lazily, per seed."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from funcgan import nets, systems, testing
from funcgan import penalties as P
from funcgan import random as fr
from funcgan.step import init_state, make_train_step

ranks = st.sampled_from([(3,), (2, 3), (1, 4, 4)])  # (B, d), (B, C, L), (B, C, H, W)


class _Critic(nn.Module):
    """A critic on inputs of any rank: flatten, tanh MLP (no batch coupling)."""

    def __init__(self, n_in: int, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(n_in, width), nn.Tanh(), nn.Linear(width, 1))

    def forward(self, x):
        return self.net(x)


def _setup(seed, shape, B, width=5):
    n_in = int(torch.tensor(shape).prod())
    module = _Critic(n_in, width).double()
    params, _ = nets.init_params(module, fr.key(seed), torch.float64)
    apply = nets.make_apply(module)
    real = fr.normal(fr.key(seed + 1), (B, *shape), torch.float64)
    fake = fr.normal(fr.key(seed + 2), (B, *shape), torch.float64) + 1
    return module, params, apply, real, fake


def _autograd_penalty(module, kind, real, fake, noise, options):
    """The penalty as the papers' PyTorch code writes it (torch.autograd.grad, create_graph=True)."""
    def grads_at(x):
        x = x.detach().requires_grad_(True)
        out = module(x)
        (g,) = torch.autograd.grad(out, x, grad_outputs=torch.ones_like(out), create_graph=True)
        return g.reshape(g.shape[0], -1)

    if kind == "gp":
        alpha = noise["eps"].reshape(-1, *([1] * (real.dim() - 1)))
        return ((grads_at(alpha * real + (1 - alpha) * fake).norm(2, dim=1) - 1) ** 2).mean()
    if kind == "r1":
        return 0.5 * grads_at(real).pow(2).sum(1).mean()
    if kind == "r2":
        return 0.5 * grads_at(fake).pow(2).sum(1).mean()
    alpha = noise["alpha"].reshape(-1, *([1] * (real.dim() - 1)))
    x_p = real + options["scale"] * real.std() * noise["u"]
    return ((grads_at(alpha * real + (1 - alpha) * x_p).norm(2, dim=1) - 1) ** 2).mean()


@pytest.mark.parametrize("make", [P.gradient_penalty, P.r1, P.r2, P.dragan])
@given(seed=st.integers(0, 2**20), shape=ranks, B=st.integers(1, 7))
def test_penalty_value_and_parameter_gradient_equal_autograd_double_backward(make, seed, shape, B):
    module, params, apply, real, fake = _setup(seed, shape, B)
    pen = make(1.0)
    noise = pen.draw(fr.key(seed + 3), real)

    def value(p):
        return pen.value(lambda x, b: apply(p, b, x), real, fake, noise, {})[0]

    ours, v = torch.func.grad_and_value(value)(params)
    nets.load_into_module(module, params)
    theirs = _autograd_penalty(module, pen.kind, real, fake, noise, pen.options)
    theirs.backward()
    torch.testing.assert_close(v, theirs.detach(), rtol=1e-12, atol=1e-14)
    for n, p in module.named_parameters():  # the output bias never reaches an input gradient: None == 0
        torch.testing.assert_close(ours[n], p.grad if p.grad is not None else torch.zeros_like(p),
                                   rtol=1e-10, atol=1e-12)


def test_gradient_penalty_interpolates_per_example_on_images():
    """One coefficient per example, broadcast over C, H, W; any batch size (the old bug: (n, B, 1)
    coefficients broadcast along the image's height)."""
    for B in (8, 16):
        real = torch.zeros(B, 1, 8, 8, dtype=torch.float64)
        fake = torch.ones(B, 1, 8, 8, dtype=torch.float64)
        eps = fr.uniform(fr.key(B), (B,), torch.float64)
        seen = []

        def disc(x, b):
            seen.append(x)
            return x.flatten(1).sum(1, keepdim=True), b

        P.gradient_penalty(1.0).value(disc, real, fake, {"eps": eps}, {})
        x_hat = seen[0]
        for i in range(B):  # example i is (1 - eps_i) everywhere
            assert torch.equal(x_hat[i], torch.full((1, 8, 8), float(1 - eps[i]), dtype=torch.float64))


def test_penalty_weight_is_per_seed_and_lazy_penalties_are_scaled_and_skipped():
    """R1 every 2 steps: applied with weight * 2 on even steps; on odd steps the step equals the plain
    one exactly, whether the step masks it (state.step) or is built without it (lazy pattern)."""
    pen = P.r1(0.5, every=2)
    s = systems.make_system("ring8", hidden=8, batch_size=8, penalties=(pen,))
    plain = systems.make_system("ring8", hidden=8, batch_size=8)
    st0 = init_state(s.gan, fr.key(0), dtype=torch.float64)
    masked = make_train_step(s.gan)
    off = make_train_step(s.gan, lazy={"r1": False})
    on = make_train_step(s.gan, lazy={"r1": True})
    base = make_train_step(plain.gan)
    a, _ = masked(st0, ())  # step 0: on
    b, _ = on(st0, ())
    assert all(torch.equal(a.disc.params[k], b.disc.params[k]) for k in a.disc.params)
    c, _ = base(st0._replace(hparams={}), ())
    assert not all(torch.equal(a.disc.params[k], c.disc.params[k]) for k in a.disc.params)
    a2, _ = masked(a, ())  # step 1: off
    b2, _ = off(a, ())
    c2, _ = base(a._replace(hparams={}), ())
    for k in a2.disc.params:
        assert torch.equal(a2.disc.params[k], b2.disc.params[k]) and torch.equal(a2.disc.params[k], c2.disc.params[k])
    # the weight lives in the state: doubling it there is weight * 2 in the loss
    doubled = st0._replace(hparams={"r1": st0.hparams["r1"] * 2})
    d, _ = on(doubled, ())
    s2 = systems.make_system("ring8", hidden=8, batch_size=8, penalties=(P.r1(1.0, every=2),))
    e, _ = make_train_step(s2.gan, lazy={"r1": True})(init_state(s2.gan, fr.key(0), dtype=torch.float64), ())
    assert all(torch.equal(d.disc.params[k], e.disc.params[k]) for k in d.disc.params)


def test_lazy_scaling_matches_its_definition():
    """On an on-step, a penalty with every=k contributes k * weight * value: equal to every=1 with weight k*w."""
    a = systems.make_system("ring8", hidden=8, batch_size=8, penalties=(P.gradient_penalty(0.5, every=4),))
    b = systems.make_system("ring8", hidden=8, batch_size=8, penalties=(P.gradient_penalty(2.0),))
    sa = init_state(a.gan, fr.key(1), dtype=torch.float64)
    sb = init_state(b.gan, fr.key(1), dtype=torch.float64)
    xa, _ = make_train_step(a.gan)(sa, ())
    xb, _ = make_train_step(b.gan)(sb, ())
    for k in xa.disc.params:
        torch.testing.assert_close(xa.disc.params[k], xb.disc.params[k], rtol=1e-13, atol=1e-15)


def test_weight_clipping_bounds_every_disc_parameter():
    s = systems.make_system("gaussian1d", lr=0.5, penalties=(P.weight_clipping(0.01),))
    st0 = init_state(s.gan, fr.key(0))
    step = make_train_step(s.gan)
    for _ in range(3):
        st0, _ = step(st0, ())
    assert all(float(v.abs().max()) <= 0.01 for v in st0.disc.params.values())
    assert any(float(v.abs().max()) > 0.01 for v in st0.gen.params.values())


def test_penalties_with_batchnorm_follow_the_imperative_forward_order():
    """A D with BatchNorm: each penalty's forward updates the running statistics after the objective's
    two, as `loss = objective + penalty(D(x_hat))` does imperatively (the reference checks buffers too)."""
    from funcgan import losses

    s = systems.make_system("dcgan", width=4, batch_size=6, objective=losses.wasserstein(), disc_norm="batch",
                            penalties=(P.gradient_penalty(10.0), P.r1(1.0)))
    assert any(isinstance(m, nn.BatchNorm2d) for m in s.gan.disc.modules())
    report = testing.assert_equivalent(s, steps=3, dtype=torch.float64)
    assert report.buffers < 1e-12


@pytest.mark.parametrize("kw,match", [
    ({"weight": -1.0}, "weight must be finite and >= 0"),
    ({"every": 0}, "every must be an int >= 1"),
])
def test_bad_penalties_are_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        P.gradient_penalty(**kw)
    with pytest.raises(ValueError, match="weight must be finite and > 0"):
        P.weight_clipping(0.0)
