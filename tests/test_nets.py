"""Networks as pure functions: default initialisation, apply, buffers, round trips."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from funcgan import nets
from funcgan import random as fr


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


def test_unknown_module_type_is_rejected():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(3))

    with pytest.raises(TypeError, match="no default initialisation known for parameter 'w' of Odd"):
        nets.init_params(Odd(), fr.key(0))
