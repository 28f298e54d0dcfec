"""Shared hypothesis strategies for optimizer and key tests (noun-named, as in array-api-tests), and
the small helpers they share.

Strategies for random GAN systems are public: :mod:`funcgan.testing.strategies`."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

shapes = st.lists(st.integers(1, 6), min_size=0, max_size=3).map(tuple)
param_shapes = st.lists(shapes, min_size=1, max_size=3)
learning_rates = st.floats(1e-4, 1e-1)
betas1 = st.floats(0.0, 0.99)
betas2 = st.floats(0.5, 0.9999)
eps_values = st.sampled_from([1e-8, 1e-6, 1e-3])
weight_decays = st.sampled_from([0.0, 1e-3, 0.1])
momenta = st.sampled_from([0.0, 0.5, 0.9])
step_counts = st.integers(1, 50)
seeds = st.integers(0, 2**31 - 1)


def make_params(shape_list, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return {f"p{i}": torch.randn(s, generator=g, dtype=dtype) for i, s in enumerate(shape_list)}


def make_grads(params, steps, seed):
    g = torch.Generator().manual_seed(seed + 1)
    return [{k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in params.items()} for _ in range(steps)]


class TracedForm(torch.overrides.TorchFunctionMode):
    """A torch function mode that changes nothing: while one is active ``funcgan._mode.plain_eager()``
    is False, so eager code takes the route traced code takes (what the eager shortcuts are compared
    against)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))
