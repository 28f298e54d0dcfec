"""Networks as pure functions over explicit parameter dicts.

Any ``nn.Module`` serves as a *skeleton*: funcgan keeps a copy of it on the
``meta`` device (no storage), holds its weights in ``dict[str, Tensor]`` keyed
like ``named_parameters()`` and its buffers (BatchNorm statistics) in a second
dict, and applies it with ``torch.func.functional_call``::

    params, buffers = init_params(module, key)          # PyTorch's default init, from a key
    apply = make_apply(module)
    out, buffers = apply(params, buffers, x)            # pure: new buffers returned

The seed systems' networks are defined at the bottom.
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call

from funcgan import random as fr

__all__ = [
    "Params",
    "Buffers",
    "init_params",
    "params_from_module",
    "load_into_module",
    "make_apply",
    "check_params",
    "count_params",
    "mlp",
    "Seed000Generator",
    "Seed000Discriminator",
    "ConditionalDiscriminator",
]

Params = dict[str, torch.Tensor]
Buffers = dict[str, torch.Tensor]
Apply = Callable[..., tuple[torch.Tensor, Buffers]]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORM = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def _fan_in(weight_shape: tuple[int, ...]) -> int:
    # torch.nn.init._calculate_fan_in_and_fan_out: fan_in = size(1) * receptive field
    receptive = math.prod(weight_shape[2:]) if len(weight_shape) > 2 else 1
    return weight_shape[1] * receptive


def init_params(
    module: nn.Module,
    key: torch.Tensor,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> tuple[Params, Buffers]:
    """Initialise a module's parameters from a key, with PyTorch's default distributions.

    Linear and Conv (also transposed) layers get ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``
    for weight and bias, which is what ``reset_parameters`` draws
    (``kaiming_uniform_(a=sqrt(5))``); norm layers get ones and zeros; Embedding
    gets ``N(0, 1)``. Parameter ``i`` (in ``named_parameters()`` order) draws from
    ``split(key, n)[i]``. Buffers are the module's own defaults (zeros/ones for
    BatchNorm running statistics).

    Args:
        module: the skeleton (any device, ``meta`` included).
        key: a funcgan key.
        dtype: floating dtype of the parameters.
        device: where they live.

    Returns:
        ``(params, buffers)``.

    A module type funcgan does not know can define
    ``funcgan_init(self, key, dtype) -> dict[str, Tensor]`` returning its own
    (non-recursive) parameters; it is called with that parameter group's key.

    Raises:
        TypeError: a module type holds parameters but has no known default
            initialisation; build its parameters yourself or use
            :func:`params_from_module`.
    """
    if not dtype.is_floating_point:
        raise TypeError(f"init_params: dtype must be floating point, got {dtype}")
    names = [n for n, _ in module.named_parameters()]
    keys = fr.split(key.to(device), max(1, len(names)))
    index = {n: i for i, n in enumerate(names)}
    params: Params = {}
    for mod_name, mod in module.named_modules():
        own = dict(mod.named_parameters(recurse=False))
        if own and hasattr(mod, "funcgan_init"):
            first = f"{mod_name}.{next(iter(own))}" if mod_name else next(iter(own))
            custom = mod.funcgan_init(keys[index[first]], dtype)
            for p_name in own:
                full = f"{mod_name}.{p_name}" if mod_name else p_name
                params[full] = custom[p_name].to(device=device, dtype=dtype)
            continue
        for p_name, p in mod.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            k = keys[index[full]]
            shape = tuple(p.shape)
            if isinstance(mod, (nn.Linear, nn.Bilinear) + _CONV):
                w_shape = tuple(mod.weight.shape)
                fan_in = _fan_in(w_shape) if not isinstance(mod, nn.Bilinear) else w_shape[1]
                bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                params[full] = fr.uniform(k, shape, dtype, -bound, bound).to(device)
            elif isinstance(mod, _NORM):
                fill = 1.0 if p_name == "weight" else 0.0
                params[full] = torch.full(shape, fill, dtype=dtype, device=device)
            elif isinstance(mod, nn.Embedding):
                params[full] = fr.normal(k, shape, dtype).to(device)
            elif isinstance(mod, nn.PReLU):
                params[full] = torch.full(shape, 0.25, dtype=dtype, device=device)
            else:
                raise TypeError(
                    f"init_params: no default initialisation known for parameter '{full}' of "
                    f"{type(mod).__name__}; initialise it yourself or use params_from_module()"
                )
    buffers = _default_buffers(module, dtype, device)
    return params, buffers


def _default_buffers(module: nn.Module, dtype: torch.dtype, device: torch.device | str) -> Buffers:
    out: Buffers = {}
    for mod_name, mod in module.named_modules():
        for b_name, b in mod.named_buffers(recurse=False):
            full = f"{mod_name}.{b_name}" if mod_name else b_name
            if b.device.type != "meta":
                t = b.detach().clone()
            elif isinstance(mod, nn.modules.batchnorm._NormBase):
                t = torch.ones(b.shape) if b_name == "running_var" else torch.zeros(b.shape, dtype=b.dtype)
            else:
                raise TypeError(f"init_params: no default for buffer '{full}' of a meta {type(mod).__name__}")
            out[full] = t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)
    return out


def params_from_module(module: nn.Module) -> tuple[Params, Buffers]:
    """Copy a live module's parameters and buffers into fresh dicts (detached clones)."""
    params = {n: p.detach().clone() for n, p in module.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in module.named_buffers()}
    return params, buffers


def load_into_module(module: nn.Module, params: Params, buffers: Buffers | None = None) -> nn.Module:
    """Copy parameter (and buffer) dicts into a plain module, in place; returns it.

    The module then runs imperatively with the trained weights. Shapes and names
    are checked first.
    """
    check_params(module, params, buffers, who="load_into_module")
    with torch.no_grad():
        for n, p in module.named_parameters():
            p.copy_(params[n])
        for n, b in module.named_buffers():
            if buffers is not None and n in buffers:
                b.copy_(buffers[n])
    return module


def check_params(module: nn.Module, params: Params, buffers: Buffers | None = None, who: str = "params") -> None:
    """Raise a clear error unless ``params`` (and ``buffers``) fit ``module``.

    Checks names (missing and unexpected keys), shapes, floating dtype, a single
    device, and finiteness of concrete values.
    """
    if not isinstance(params, dict):
        raise TypeError(f"{who}: parameters must be a dict[str, Tensor], got {type(params).__name__}")
    expected = dict(module.named_parameters())
    missing = sorted(set(expected) - set(params))
    unexpected = sorted(set(params) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{who}: parameter dict does not match {type(module).__name__}: "
            f"missing {missing or 'none'}, unexpected {unexpected or 'none'}"
        )
    devices = set()
    for n, p in expected.items():
        v = params[n]
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"{who}: parameter '{n}' is a {type(v).__name__}, not a Tensor")
        if tuple(v.shape) != tuple(p.shape):
            raise ValueError(f"{who}: parameter '{n}' has shape {tuple(v.shape)}, module expects {tuple(p.shape)}")
        if not v.is_floating_point():
            raise TypeError(f"{who}: parameter '{n}' has dtype {v.dtype}; parameters must be floating point")
        devices.add(v.device)
        if v.device.type != "meta" and not bool(torch.isfinite(v).all()):
            raise ValueError(f"{who}: parameter '{n}' holds non-finite values")
    if len(devices) > 1:
        raise ValueError(f"{who}: parameters are spread over devices {sorted(map(str, devices))}; put them on one")
    if buffers is not None:
        exp_b = dict(module.named_buffers())
        missing = sorted(set(exp_b) - set(buffers))
        unexpected = sorted(set(buffers) - set(exp_b))
        if missing or unexpected:
            raise ValueError(f"{who}: buffer dict does not match {type(module).__name__}: "
                             f"missing {missing or 'none'}, unexpected {unexpected or 'none'}")
        for n, b in exp_b.items():
            if tuple(buffers[n].shape) != tuple(b.shape):
                raise ValueError(f"{who}: buffer '{n}' has shape {tuple(buffers[n].shape)}, module expects {tuple(b.shape)}")


def count_params(params: Params) -> int:
    """Number of scalar parameters."""
    return sum(p.numel() for p in params.values())


def make_apply(module: nn.Module) -> Apply:
    """Turn a module into a pure function ``apply(params, buffers, *inputs) -> (out, buffers)``.

    The module is copied to the ``meta`` device as a skeleton (the caller's module
    is not touched, and no weights are kept). Buffers are cloned before the call,
    so in-place updates (BatchNorm running statistics in train mode) land in the
    returned dict and never in a tensor the caller still holds: the function is
    pure, and works under ``grad``, ``vmap`` and ``torch.compile``.
    """
    skeleton = copy.deepcopy(module).to("meta")

    def apply(params: Params, buffers: Buffers, *inputs: torch.Tensor) -> tuple[torch.Tensor, Buffers]:
        if buffers:
            buffers = {k: v.clone() for k, v in buffers.items()}
            out = functional_call(skeleton, {**params, **buffers}, inputs)
            return out, buffers
        return functional_call(skeleton, params, inputs), buffers

    apply.skeleton = skeleton  # type: ignore[attr-defined]
    return apply


# ----------------------------------------------------------------------------- seed networks

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
}


def mlp(
    in_features: int,
    hidden: list[int] | tuple[int, ...],
    out_features: int,
    activation: str = "relu",
    out_activation: str | None = None,
) -> nn.Sequential:
    """A multilayer perceptron ``Linear, act, ..., Linear[, out_act]`` as ``nn.Sequential``."""
    if activation not in _ACTIVATIONS or (out_activation is not None and out_activation not in _ACTIVATIONS):
        raise ValueError(f"mlp: unknown activation; choose from {sorted(_ACTIVATIONS)}")
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), _ACTIVATIONS[activation]()]
        width = h
    layers.append(nn.Linear(width, out_features))
    if out_activation is not None:
        layers.append(_ACTIVATIONS[out_activation]())
    return nn.Sequential(*layers)


class Seed000Generator(nn.Module):
    """Seed 000's 1-D generator: ``Linear(10, 50), ReLU, Linear(50, 1)`` (names as in the seed)."""

    def __init__(self, latent_dim: int = 10, hidden: int = 50, out_features: int = 1):
        super().__init__()
        self.model = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_features))

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, Z) -> (B, 1)
        return self.model(z)


class Seed000Discriminator(nn.Module):
    """Seed 000's 1-D discriminator: ``Linear(1, 50), ReLU, Linear(50, 1), Sigmoid``."""

    def __init__(self, in_features: int = 1, hidden: int = 50):
        super().__init__()
        self.model = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1) -> (B, 1) probabilities
        return self.model(x)


class ConditionalDiscriminator(nn.Module):
    """A pix2pix-style discriminator on ``(condition, image)`` pairs.

    The two inputs are concatenated along the feature axis (pix2pix concatenates
    channels) and scored by ``body``, which must output probabilities ``(B, 1)``.
    """

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, condition: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([condition, image], dim=-1))
