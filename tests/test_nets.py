"""Networks as pure functions: default initialisation, apply, buffers, round trips."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from funcgan import nets
from funcgan import random as fr
from funcgan.tree import tree_leaves


def test_seed_net_parameter_counts():
    # golden counts: G 10*50+50 + 50*1+1 = 601; D 1*50+50 + 50*1+1 = 151
    g, _ = nets.init_params(nets.Seed000Generator(), fr.key(0))
    d, _ = nets.init_params(nets.Seed000Discriminator(), fr.key(0))
    assert nets.count_params(g) == 601 and nets.count_params(d) == 151
    assert list(g) == ["model.0.weight", "model.0.bias", "model.2.weight", "model.2.bias"]


@pytest.mark.parametrize(
    "module,fan_in",
    [
        (nn.Linear(300, 200), 300),
        (nn.Conv2d(8, 16, 3), 8 * 9),
        (nn.ConvTranspose2d(8, 16, 4), 16 * 16),
        (nn.Conv1d(4, 6, 5, groups=2), 2 * 5),
    ],
)
def test_init_matches_pytorch_default_distribution(module, fan_in):
    params, _ = nets.init_params(module, fr.key(1), torch.float64)
    bound = 1 / math.sqrt(fan_in)
    torch_module = type(module)(*_ctor_args(module))
    for name, p in params.items():
        ref = dict(torch_module.named_parameters())[name].detach().double()
        assert p.shape == ref.shape
        assert p.abs().max() <= bound and ref.abs().max() <= bound + 1e-7
        n = p.numel()
        if n >= 1000:  # uniform(-b, b): std b / sqrt(3); 5 standard errors
            assert abs(p.std().item() - bound / math.sqrt(3)) < 5 * bound / math.sqrt(3) / math.sqrt(n) * 1.2
            assert abs(p.mean().item()) < 5 * bound / math.sqrt(3) / math.sqrt(n)


def _ctor_args(m):
    if isinstance(m, nn.Linear):
        return (m.in_features, m.out_features)
    return (m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, *([m.output_padding] if isinstance(m, nn.ConvTranspose2d) else [m.dilation]), m.groups)


def test_apply_equals_module_forward_and_roundtrip():
    module = nets.mlp(5, [7, 3], 2, "tanh", "sigmoid").double()
    params, buffers = nets.init_params(module, fr.key(2), torch.float64)
    apply = nets.make_apply(module)
    x = fr.normal(fr.key(3), (4, 5), torch.float64)
    out, _ = apply(params, buffers, x)
    nets.load_into_module(module, params, buffers)
    torch.testing.assert_close(out, module(x), rtol=0, atol=0)
    p2, _ = nets.params_from_module(module)
    assert all(torch.equal(p2[k], params[k]) for k in params)


def test_batchnorm_buffers_are_explicit_state():
    module = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1))
    params, buffers = nets.init_params(module, fr.key(0))
    assert set(buffers) == {"1.running_mean", "1.running_var", "1.num_batches_tracked"}
    apply = nets.make_apply(module)
    x = fr.normal(fr.key(1), (8, 3))
    before = {k: v.clone() for k, v in buffers.items()}
    out, new_buffers = apply(params, buffers, x)
    for k in buffers:  # the input dict is untouched: apply is pure
        assert torch.equal(buffers[k], before[k])
    assert not torch.equal(new_buffers["1.running_mean"], buffers["1.running_mean"])
    assert int(new_buffers["1.num_batches_tracked"]) == 1
    ref = nets.load_into_module(module, params, buffers).train()
    torch.testing.assert_close(out, ref(x))
    torch.testing.assert_close(new_buffers["1.running_mean"], ref[1].running_mean)
    # under grad: buffers flow out through aux, no "mutating a captured tensor" error
    g, nb = torch.func.grad(lambda p: (apply(p, buffers, x)[0].sum(), apply(p, buffers, x)[1]), has_aux=True)(params)
    assert g.keys() == params.keys()


def test_apply_is_vmappable_over_stacked_params():
    module = nets.mlp(3, [4], 1)
    apply = nets.make_apply(module)
    from funcgan.tree import tree_stack

    ps = [nets.init_params(module, k)[0] for k in fr.split(fr.key(0), 5)]
    x = fr.normal(fr.key(1), (6, 3))
    batched = torch.func.vmap(lambda p: apply(p, {}, x)[0])(tree_stack(ps))
    for i, p in enumerate(ps):
        torch.testing.assert_close(batched[i], apply(p, {}, x)[0])


@pytest.mark.parametrize(
    "mutate,exc,match",
    [
        (lambda p: p.pop("model.0.bias"), ValueError, r"missing \['model.0.bias'\]"),
        (lambda p: p.update(extra=torch.zeros(1)), ValueError, r"unexpected \['extra'\]"),
        (lambda p: p.update({"model.0.weight": torch.zeros(3, 3)}), ValueError, r"'model.0.weight' has shape \(3, 3\), module expects \(50, 10\)"),
        (lambda p: p.update({"model.0.bias": torch.zeros(50, dtype=torch.int64)}), TypeError, "must be floating point"),
        (lambda p: p.update({"model.0.bias": torch.full((50,), float("inf"))}), ValueError, "non-finite"),
        (lambda p: p.update({"model.0.bias": torch.zeros(50, device="meta")}), ValueError, "spread over devices"),
    ],
)
def test_mismatched_param_dicts_are_rejected(mutate, exc, match):
    module = nets.Seed000Generator()
    params, _ = nets.init_params(module, fr.key(0))
    mutate(params)
    with pytest.raises(exc, match=match):
        nets.check_params(module, params)


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda b: b.pop("1.running_var"), r"missing \['1.running_var'\], unexpected none"),
        (lambda b: b.update(extra=torch.zeros(1)), r"missing none, unexpected \['extra'\]"),
        (lambda b: b.update({"1.running_mean": torch.zeros(3)}), r"'1.running_mean' has shape \(3,\)"),
    ],
)
def test_mismatched_buffer_dicts_are_rejected_each_on_its_own(mutate, match):
    module = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4))
    params, buffers = nets.init_params(module, fr.key(0))
    mutate(buffers)
    with pytest.raises(ValueError, match=match):
        nets.check_params(module, params, buffers)


def test_a_meta_modules_own_buffer_has_no_default_and_is_refused_by_name():
    # a buffer funcgan has no rule for is copied from the module: on the meta device there is no value
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.register_buffer("scale", torch.ones(2))

        def forward(self, x):
            return self.lin(x) * self.scale

    with torch.device("meta"):
        module = Scaled()
    with pytest.raises(TypeError, match="no default for buffer 'scale' of a meta Scaled"):
        nets.init_params(module, fr.key(0))


def test_spectral_norm_init_draws_from_the_key_and_matches_torch_defaults():
    sn = torch.nn.utils.parametrizations.spectral_norm
    module = nn.Sequential(sn(nn.Linear(6, 5)), nn.ReLU(), sn(nn.Conv2d(2, 3, 3)))
    a, ba = nets.init_params(module, fr.key(0), torch.float64)
    b, bb = nets.init_params(module, fr.key(0), torch.float64)
    c, bc = nets.init_params(module, fr.key(1), torch.float64)
    assert set(a) == {n for n, _ in module.named_parameters()} and set(ba) == {n for n, _ in module.named_buffers()}
    assert all(torch.equal(a[k], b[k]) for k in a) and all(torch.equal(ba[k], bb[k]) for k in ba)
    assert not torch.equal(ba["0.parametrizations.weight.0._u"], bc["0.parametrizations.weight.0._u"])
    w = a["0.parametrizations.weight.original"]
    assert w.abs().max() <= 1 / math.sqrt(6)  # torch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    # u, v: unit vectors after 15 power iterations, so u^T W v is (close to) the top singular value
    u, v = ba["0.parametrizations.weight.0._u"], ba["0.parametrizations.weight.0._v"]
    assert abs(float(u.norm()) - 1) < 1e-12 and abs(float(v.norm()) - 1) < 1e-12
    sigma = float(torch.linalg.matrix_norm(w, ord=2))
    assert abs(float(u @ w @ v) - sigma) < 1e-3 * sigma


@pytest.mark.parametrize("train", [True, False])
def test_spectral_norm_equals_torch_module_over_steps_lone_and_per_seed(train):
    """The functional spectral norm against torch's parametrization (linear, conv, and transposed conv,
    whose spectral norm runs over dim 1): weights and power-iteration vectors after several SGD steps,
    for one run and for each seed of a vmapped stack."""
    sn = torch.nn.utils.parametrizations.spectral_norm
    module = nn.Sequential(sn(nn.Linear(4, 6)), nn.LeakyReLU(0.2), nn.Unflatten(1, (1, 6)),
                           sn(nn.Conv1d(1, 2, 3)), sn(nn.ConvTranspose1d(2, 2, 1)), nn.Flatten(),
                           sn(nn.Linear(8, 1))).double().train(train)
    apply = nets.make_apply(module)
    x = fr.normal(fr.key(9), (5, 4), torch.float64)
    states = [nets.init_params(module, fr.key(s), torch.float64) for s in (0, 1, 2)]

    def loss(p, b):
        out, nb = apply(p, b, x, train=train)
        return out.pow(2).mean(), nb

    def sgd(p, b):
        g, nb = torch.func.grad(loss, has_aux=True)(p, b)
        return {k: p[k] - 0.1 * g[k] for k in p}, nb

    from funcgan.tree import tree_stack

    stacked = tree_stack([s[0] for s in states]), tree_stack([s[1] for s in states])
    for _ in range(4):
        stacked = torch.func.vmap(sgd)(*stacked)
    for i, (p, b) in enumerate(states):
        live = nets.load_into_module(copy.deepcopy(module), p, b).train(train)
        opt = torch.optim.SGD(live.parameters(), lr=0.1)
        for _ in range(4):
            opt.zero_grad()
            live(x).pow(2).mean().backward()
            opt.step()
            p, b = sgd(p, b)
        for n, t in live.named_parameters():
            torch.testing.assert_close(p[n], t.detach(), rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(stacked[0][n][i], t.detach(), rtol=1e-12, atol=1e-14)
        for n, t in live.named_buffers():
            torch.testing.assert_close(b[n], t, rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(stacked[1][n][i], t, rtol=1e-12, atol=1e-14)
        if not train:  # eval mode never moves u, v
            assert all(torch.equal(b[n], states[i][1][n]) for n in b)
        else:
            assert not all(torch.equal(b[n], states[i][1][n]) for n in b)


def test_weight_norm_is_batchable_and_equals_torch():
    wn = torch.nn.utils.parametrizations.weight_norm
    module = nn.Sequential(wn(nn.Linear(3, 4)), nn.Tanh(), nn.Linear(4, 1)).double()
    params, buffers = nets.init_params(module, fr.key(0), torch.float64)
    g, v = params["0.parametrizations.weight.original0"], params["0.parametrizations.weight.original1"]
    torch.testing.assert_close(g, torch.norm_except_dim(v, 2, 0), rtol=1e-14, atol=0)  # g = ||w||, v = w
    apply = nets.make_apply(module)
    x = fr.normal(fr.key(1), (5, 3), torch.float64)
    live = nets.load_into_module(module, params)
    torch.testing.assert_close(apply(params, buffers, x)[0], live(x), rtol=1e-14, atol=1e-15)
    from funcgan.tree import tree_stack

    with _no_fallback():
        out = torch.func.vmap(lambda p: apply(p, {}, x)[0])(tree_stack([params, params]))
    torch.testing.assert_close(out[1], live(x), rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("dim", [None, 0, 1, 2, -2, -4])
def test_weight_norm_over_every_dim_equals_torch(dim):
    # torch's norm_except_dim reads dim=-1 as "the whole tensor" (weight_norm(dim=None)) and any other
    # negative dim from the end: g's shape and value, and the forward, follow it (float64: round-off only)
    wn = torch.nn.utils.parametrizations.weight_norm
    module = wn(nn.Conv2d(2, 3, 3), dim=dim).double()
    params, buffers = nets.init_params(module, fr.key(0), torch.float64)
    g, v = params["parametrizations.weight.original0"], params["parametrizations.weight.original1"]
    torch_dim = -1 if dim is None else dim
    assert g.shape == torch.norm_except_dim(v, 2, torch_dim).shape
    torch.testing.assert_close(g, torch.norm_except_dim(v, 2, torch_dim), rtol=1e-14, atol=0)
    g2 = 2.0 * fr.uniform(fr.key(2), tuple(g.shape), torch.float64)  # a g that is not ||v||: the forward must scale each slice by its own g
    params = {**params, "parametrizations.weight.original0": g2}
    live = nets.load_into_module(module, params)
    x = fr.normal(fr.key(1), (2, 2, 5, 5), torch.float64)
    torch.testing.assert_close(nets.make_apply(module)(params, buffers, x)[0], live(x), rtol=1e-13, atol=1e-15)


class _no_fallback:
    """vmap's slow per-example fallback raises instead of warning."""

    def __enter__(self):
        torch._C._functorch._set_vmap_fallback_enabled(False)

    def __exit__(self, *exc):
        torch._C._functorch._set_vmap_fallback_enabled(True)


def test_keyed_dropout_is_reproducible_per_key_and_matches_the_keyed_module():
    module = nets.mlp(3, [16, 16], 1, "relu", dropout=0.5)
    params, buffers = nets.init_params(module, fr.key(0))
    apply = nets.make_apply(module)
    assert apply.stochastic == ["2", "5"]
    x = fr.normal(fr.key(1), (8, 3))
    a, _ = apply(params, buffers, x, key=fr.key(5))
    b, _ = apply(params, buffers, x, key=fr.key(5))
    c, _ = apply(params, buffers, x, key=fr.key(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    live = nets.keyed(copy.deepcopy(module))
    nets.load_into_module(live, params)
    nets.set_forward_key(live, fr.key(5))
    assert torch.equal(live(x), a)
    ev, _ = apply(params, buffers, x, train=False)
    assert torch.equal(ev, nets.load_into_module(module, params).eval()(x))  # eval: no dropout
    with pytest.raises(ValueError, match=r"in-module randomness \(2, 5\) needs a key"):
        apply(params, buffers, x)
    # per seed under vmap: each seed's key gives that seed's mask
    keys = fr.key(torch.tensor([5, 6]))
    outs = torch.func.vmap(lambda k: apply(params, buffers, x, key=k)[0], randomness="error")(keys)
    assert torch.equal(outs[0], a) and torch.equal(outs[1], c)


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_keyed_dropout_keeps_a_1_minus_p_share_scaled_as_torch_does(p):
    # torch's Dropout: each element zeroed with probability p, the rest scaled by 1 / (1 - p)
    out, _ = nets.make_apply(nn.Sequential(nn.Dropout(p)))({}, {}, torch.full((100_000,), 3.0), key=fr.key(2))
    kept = out != 0
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 3.0 / (1 - p)), rtol=1e-6, atol=0)
    assert abs(float(kept.double().mean()) - (1 - p)) < 0.01  # sd of the share is ~0.0016: 6 sigma


def test_dropout_of_p_1_zeros_everything_and_p_0_is_the_identity():
    x = fr.normal(fr.key(1), (4, 5))
    for p, want in ((1.0, torch.zeros_like(x)), (0.0, x)):
        out, _ = nets.make_apply(nn.Sequential(nn.Dropout(p)))({}, {}, x, key=fr.key(2))
        assert torch.equal(out, want), p
        assert torch.equal(out, nn.Dropout(p)(x)), p  # torch agrees (no randomness at p = 0 or 1)


def test_set_forward_key_reaches_nested_dropout():
    # dropout below the top level ("body.1", "head.drop" in a Sequential of named layers): the live
    # module's key goes to that layer, not its parent
    from collections import OrderedDict

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(3, 16), nn.Dropout(0.5), nn.Linear(16, 16))
            self.head = nn.Sequential(OrderedDict(lin=nn.Linear(16, 16), drop=nn.Dropout(0.5)))
            self.drop = nn.Dropout(0.5)

        def forward(self, x):
            return self.drop(self.head(self.body(x)))

    module = Net()
    params, buffers = nets.init_params(module, fr.key(0))
    apply = nets.make_apply(module)
    assert apply.stochastic == ["body.1", "head.drop", "drop"]
    x = fr.normal(fr.key(1), (8, 3))
    want, _ = apply(params, buffers, x, key=fr.key(5))
    live = nets.load_into_module(nets.keyed(copy.deepcopy(module)), params)
    nets.set_forward_key(live, fr.key(5))
    assert torch.equal(live(x), want)


@pytest.mark.parametrize("layer,spatial", [(nn.Dropout1d, (5,)), (nn.Dropout2d, (3, 3)), (nn.Dropout3d, (2, 2, 2))])
def test_channel_dropout_drops_whole_channels_one_draw_per_example_and_channel(layer, spatial):
    x = torch.ones(8, 16, *spatial)
    out, _ = nets.make_apply(nn.Sequential(layer(0.5)))({}, {}, x, key=fr.key(1))
    dropped = (out == 0).flatten(2)
    assert (dropped.all(-1) | (~dropped).all(-1)).all()  # a channel is dropped whole or kept whole
    per_example = dropped[..., 0]  # (8, 16): one draw per (example, channel), not per example
    assert per_example.any(1).all() and (~per_example).any(1).all()  # fixed key; for a random one P(some example all kept or all dropped) ~ 2.4e-4


def test_batchnorm_eval_mode_uses_running_statistics():
    module = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4))
    params, buffers = nets.init_params(module, fr.key(0))
    apply = nets.make_apply(module)
    x = fr.normal(fr.key(1), (64, 2))
    _, buffers = apply(params, buffers, x)  # one train-mode forward moves the statistics
    big, _ = apply(params, buffers, x[:64], train=False)
    small, _ = apply(params, buffers, x[:2], train=False)
    # eval: the same z gives the same output at any batch size. Not bitwise: the Linear's GEMM may
    # block 64 rows and 2 rows differently (seen once under load in CI); 1e-6 is float32 round-off
    # on outputs of size ~1, while batch statistics in place of running ones move them by ~0.1-1.
    torch.testing.assert_close(big[:2], small, rtol=1e-6, atol=1e-6)
    tb, _ = apply(params, buffers, x[:64])
    ts, _ = apply(params, buffers, x[:2])
    assert (tb[:2] - ts).abs().max() > 1e-2  # train mode: batch statistics, so the batch size matters


@pytest.mark.parametrize("make,match", [
    (lambda: nn.Sequential(nn.Linear(2, 2), nn.RReLU()), "'1' \\(RReLU\\) draws from torch's global RNG"),
    (lambda: torch.nn.utils.spectral_norm(nn.Linear(2, 2)), "module 'Linear' uses the hook-based torch.nn.utils.spectral_norm"),
    (lambda: nn.Sequential(nn.Tanh(), torch.nn.utils.weight_norm(nn.Linear(2, 2))),
     "module '1' uses the hook-based torch.nn.utils.weight_norm"),
])
def test_modules_funcgan_cannot_make_functional_are_refused_by_name(make, match):
    with pytest.raises(TypeError, match=match):
        nets.make_apply(make())


def test_global_rng_inside_forward_is_refused_naming_the_module():
    from funcgan import loops, losses, systems

    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(1, 1)

        def forward(self, x):
            return self.lin(x + 0.1 * torch.randn_like(x))

    g = systems.make_system("gaussian1d").gan
    with pytest.raises(ValueError, match="discriminator's module 'Noisy' draws from torch's global RNG"):
        systems.System(g.with_options(disc=Noisy(), loop=loops.Alternating(objective=losses.nonsaturating())), (),
                       "1d")


def test_unknown_module_type_is_rejected():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(3))

    with pytest.raises(TypeError, match="no default initialisation known for parameter 'w' of Odd"):
        nets.init_params(Odd(), fr.key(0))


def test_normal_init_is_dcgans():
    module = nets.DCGANDiscriminator(width=8)
    params, _ = nets.normal_init()(module, fr.key(0))
    w = params["features.0.weight"]
    assert abs(float(w.std()) - 0.02) < 0.003 and abs(float(w.mean())) < 0.003
    bn = params["features.3.weight"]
    assert abs(float(bn.mean()) - 1) < 0.02 and torch.equal(params["features.3.bias"], torch.zeros_like(bn))


@pytest.mark.parametrize("nested", [True, False], ids=["in-a-Sequential", "top-level"])
def test_normal_init_draws_a_spectral_normed_convs_original_as_dcgans(nested):
    # the original under a parametrization is named "<layer>.parametrizations.weight.original" (or
    # "parametrizations.weight.original" when the module itself is the conv): both belong to the conv
    sn = torch.nn.utils.parametrizations.spectral_norm
    conv = sn(nn.Conv2d(16, 32, 4))  # 8,192 weights: the std is within 0.003 of 0.02 by ~40 sigma
    module = nn.Sequential(conv, nn.LeakyReLU(0.2)) if nested else conv
    name = ("0." if nested else "") + "parametrizations.weight.original"
    params, buffers = nets.normal_init()(module, fr.key(0))
    w = params[name]
    assert abs(float(w.std()) - 0.02) < 0.003 and abs(float(w.mean())) < 0.003
    # and the power iteration's vectors were drawn for these weights, not the default ones
    u = buffers[name.replace("weight.original", "weight.0._u")]
    sigma = torch.dot(u, w.flatten(1) @ buffers[name.replace("weight.original", "weight.0._v")])
    assert 0.5 * float(torch.linalg.matrix_norm(w.flatten(1), 2)) < float(sigma) <= 1.0001 * float(
        torch.linalg.matrix_norm(w.flatten(1), 2)
    )


def test_initial_state_is_plain_data_without_autograd_history():
    # a module whose buffer requires grad (a user's learnable-looking buffer): its initial value is
    # copied out as data; a state leaf with a grad_fn would tie every run to the module's graph
    class WithBuffer(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)
            self.register_buffer("scale", torch.full((2,), 2.0, requires_grad=True))

        def forward(self, x):
            return self.lin(x) * self.scale

    for init in (nets.init_params, nets.normal_init()):
        params, buffers = init(WithBuffer(), fr.key(0))
        assert torch.equal(buffers["scale"], torch.full((2,), 2.0))
        for name, t in {**params, **buffers}.items():
            assert not t.requires_grad and t.grad_fn is None, name


def test_state_dict_export_loads_into_the_module():
    sn = torch.nn.utils.parametrizations.spectral_norm
    module = nn.Sequential(sn(nn.Linear(3, 4)), nn.BatchNorm1d(4))
    params, buffers = nets.init_params(module, fr.key(0))
    fresh = nn.Sequential(sn(nn.Linear(3, 4)), nn.BatchNorm1d(4))
    fresh.load_state_dict(nets.to_state_dict(module, params, buffers))
    for n, p in fresh.named_parameters():
        assert torch.equal(p, params[n])


class _Tied(nn.Module):
    """An autoencoder-style module whose decoder reuses the encoder's weight (one tensor, two names)."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(4, 3, bias=False)
        self.dec = nn.Linear(3, 4, bias=False)
        self.dec.weight = self.enc.weight  # tied: dec computes x @ W (W is (3, 4))

    def forward(self, x):
        return nn.functional.linear(self.enc(x), self.dec.weight.t())


@pytest.mark.parametrize("tied", [True, False])
def test_tied_weights_run_as_one_tensor_and_its_gradient_sums_both_uses(tied):
    """``functional_call`` unties only modules that have ties (untying walks the module on every call);
    a tied module still gets the one given tensor at both names, and the gradient with respect to it is
    the sum over both uses, as autograd on the module computes it."""
    torch.manual_seed(0)
    module = _Tied().double()
    if not tied:
        module.dec.weight = nn.Parameter(module.enc.weight.detach().clone())
    params, buffers = nets.init_params(module, fr.key(3), torch.float64)
    assert sorted(params) == (["enc.weight"] if tied else ["dec.weight", "enc.weight"])
    apply = nets.make_apply(module)
    x = torch.randn(5, 4, dtype=torch.float64)
    live = copy.deepcopy(module)
    nets.load_into_module(live, params, buffers)
    out, _ = apply(params, buffers, x)
    torch.testing.assert_close(out, live(x), rtol=0, atol=0)
    grads = torch.func.grad(lambda p: apply(p, buffers, x)[0].square().sum())(params)
    live(x).square().sum().backward()
    for name, p in live.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-12, atol=1e-12)
    fresh = _Tied().double()
    if not tied:
        fresh.dec.weight = nn.Parameter(fresh.dec.weight.detach().clone())
    fresh.load_state_dict(nets.to_state_dict(fresh, params, buffers))  # the export loads back, ties kept
    assert (fresh.dec.weight is fresh.enc.weight) == tied
    torch.testing.assert_close(fresh(x), out, rtol=0, atol=0)



class _Reassigns(nn.Module):
    """A forward that reassigns its buffer (not in place)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.register_buffer("seen", torch.zeros(()))

    def forward(self, x):
        self.seen = self.seen + 1
        return self.lin(x) * self.seen


def _families():
    sn = torch.nn.utils.parametrizations.spectral_norm
    return {
        "mlp": (nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2)), (5, 3)),
        "batchnorm": (nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2)), (5, 3)),
        "spectral-norm conv": (nn.Sequential(sn(nn.Conv2d(2, 4, 3)), nn.LeakyReLU(0.2), nn.Flatten()), (2, 2, 5, 5)),
        "dropout": (nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Linear(8, 2)), (5, 3)),
        "reassigned buffer": (_Reassigns(), (5, 3)),
    }


def _skeleton_tensors(apply):
    return [t for skel in (apply.skeleton, apply.eval_skeleton) for t in [*skel.parameters(), *skel.buffers()]]


def _runs(family, apply):
    """Train and eval calls, a gradient and a vmap over stacked parameters and buffers, then a forward
    that raises; the skeletons must be left as they were."""
    module, shape = _families()[family]
    x = fr.normal(fr.key(3), shape)
    params, buffers = nets.init_params(module, fr.key(1))
    before = _skeleton_tensors(apply)
    out = [apply(params, buffers, x, key=fr.key(4)), apply(params, buffers, x, train=False, key=fr.key(4))]
    out.append(torch.func.grad(lambda p: apply(p, buffers, x, key=fr.key(4))[0].square().sum())(params))
    stacked = [{k: torch.stack([v, 2 * v]) for k, v in tree.items()} for tree in (params, buffers)]
    out.append(torch.func.vmap(lambda p, b: apply(p, b, x, key=fr.key(4)))(*stacked))
    with pytest.raises(RuntimeError):
        apply(params, buffers, torch.zeros(5, 7, 5, 5), key=fr.key(4))  # the wrong width: the forward raises
    after = _skeleton_tensors(apply)
    assert len(before) == len(after) and all(a is b for a, b in zip(before, after)), "skeleton changed"
    return [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]


@pytest.mark.parametrize("family", list(_families()))
def test_the_direct_swap_route_is_functional_calls(family, monkeypatch):
    """``make_apply`` swaps tensors into its skeleton through slots found once; the outputs, new buffers
    and gradients must be ``functional_call``'s bit for bit, eagerly, under ``grad`` and ``vmap``, and the
    skeletons must be left as they were (also by a forward that raises)."""
    from funcgan.nets import functional as F

    taken = []
    real_call = F._Slots.call
    monkeypatch.setattr(F._Slots, "call", lambda *a: taken.append(1) or real_call(*a))
    fast = _runs(family, nets.make_apply(_families()[family][0]))
    assert len(taken) >= 4  # the direct route ran
    monkeypatch.setattr(F, "_traced", lambda: True)  # every call through functional_call
    n = len(taken)
    slow = _runs(family, nets.make_apply(_families()[family][0]))
    assert len(taken) == n
    assert len(fast) == len(slow) and all(torch.equal(a, b) for a, b in zip(fast, slow))


def test_a_direct_swap_that_does_not_restore_the_skeleton_is_caught(monkeypatch):
    """Negative control: a route that leaves the last call's tensors in the skeleton fails the check."""
    from funcgan.nets import functional as F

    def no_restore(self, skeleton, tensors, inputs):
        for name, table, leaf in self.where:
            table[leaf] = tensors[name]
        return skeleton(*inputs)

    monkeypatch.setattr(F._Slots, "call", no_restore)
    with pytest.raises(AssertionError, match="skeleton changed"):
        _runs("mlp", nets.make_apply(_families()["mlp"][0]))
