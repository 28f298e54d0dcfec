"""Networks as pure functions over explicit parameter dicts.

Any ``nn.Module`` serves as a *skeleton*: funcgan keeps copies of it on the ``meta``
device (no storage), holds its weights in ``dict[str, Tensor]`` keyed like
``named_parameters()`` and its buffers (BatchNorm statistics, spectral norm's
power-iteration vectors) in a second dict, and applies it with
``torch.func.functional_call``::

    params, buffers = init_params(module, key)              # PyTorch's default init, from a key
    apply = make_apply(module)
    out, buffers = apply(params, buffers, x, key=k)         # train mode: new buffers returned
    out, _ = apply(params, buffers, x, train=False)         # eval mode: running statistics

The skeletons differ from the user's module in two ways, both invisible in the
numbers: spectral norm and weight norm run as their functional twins
(:mod:`funcgan.nets.parametrize`), and dropout draws its masks from the forward's
key (:mod:`funcgan.nets.stochastic`). The user's module is never modified.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any, Protocol, cast

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parametrize as _parametrize

from funcgan import random as fr
from funcgan.nets import stochastic
from funcgan.nets.parametrize import (
    FunctionalSpectralNorm,
    check_no_legacy_hooks,
    functional_parametrization,
    spectral_norm_buffers,
)

__all__ = [
    "Params",
    "Buffers",
    "Apply",
    "init_params",
    "params_from_module",
    "load_into_module",
    "make_apply",
    "make_skeleton",
    "check_params",
    "count_params",
    "to_state_dict",
    "normal_init",
]

Params = dict[str, torch.Tensor]
Buffers = dict[str, torch.Tensor]


class Apply(Protocol):
    """What :func:`make_apply` returns: the pure function, with its skeletons and stochastic modules."""

    skeleton: nn.Module
    eval_skeleton: nn.Module
    stochastic: list[str]

    def __call__(
        self, params: Params, buffers: Buffers, *inputs: Any, key: torch.Tensor | None = None, train: bool = True
    ) -> tuple[Any, Buffers]: ...


_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORM = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
_BUFFER_STREAM = 0xB0FF  # buffers that need random initial values draw from fold_in(key, this)


# ----------------------------------------------------------------------------- skeletons


def make_skeleton(module: nn.Module, train: bool = True, who: str = "funcgan") -> nn.Module:
    """A ``meta``-device copy of ``module`` that funcgan can run functionally, in train or eval mode.

    Parametrizations become their functional twins and dropout becomes keyed
    dropout. Raises ``TypeError`` naming a module funcgan cannot run functionally
    (hook-based spectral/weight norm, a stateful parametrization it does not know,
    training-mode randomness it cannot key).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"{who}: expected an nn.Module, got {type(module).__name__}")
    check_no_legacy_hooks(module, who)
    skel = copy.deepcopy(module)
    for name, mod in list(skel.named_modules()):
        if isinstance(mod, _parametrize.ParametrizationList):
            for i in range(len(mod)):
                mod[i] = functional_parametrization(mod[i], f"{name}.{i}")
    stochastic.keyed(skel, who)
    ties = _ties(skel)
    skel = skel.to("meta")
    for first, others in ties:  # moving to meta makes a new tensor per name: tie them again
        shared = skel.get_parameter(first)
        for name in others:
            owner, _, leaf = name.rpartition(".")
            setattr(skel.get_submodule(owner), leaf, shared)
    skel.train(train)
    return skel


def _ties(module: nn.Module, kind: str = "parameters") -> list[tuple[str, list[str]]]:
    """Tensors registered under more than one name (``kind``: ``"parameters"`` or ``"buffers"``):
    ``(first name, the other names)``."""
    names: dict[int, list[str]] = {}
    for name, t in getattr(module, f"named_{kind}")(remove_duplicate=False):
        names.setdefault(id(t), []).append(name)
    return [(ns[0], ns[1:]) for ns in names.values() if len(ns) > 1]


def make_apply(module: nn.Module, who: str = "funcgan") -> Apply:
    """Turn a module into a pure function ``apply(params, buffers, *inputs, key=None, train=True)``.

    Returns ``(out, buffers)``. In train mode buffers are cloned before the call, so
    in-place updates (BatchNorm running statistics, spectral norm's ``u``/``v``) land
    in the returned dict and never in a tensor the caller holds; in eval mode
    BatchNorm uses its running statistics, spectral norm its stored vectors, and
    dropout is off. ``key`` feeds in-module randomness (dropout) in train mode: the
    ``i``-th stochastic module draws from ``fold_in(key, i)``; a network with such
    modules needs it (``ValueError`` naming them otherwise). The function works
    under ``grad``, ``vmap`` and ``torch.compile``.

    Attributes of the returned function: ``skeleton`` (train mode), ``eval_skeleton``,
    ``stochastic`` (names of the keyed modules).
    """
    train_skel = make_skeleton(module, True, who)
    eval_skel = make_skeleton(module, False, who)
    names = stochastic.stochastic_modules(train_skel)
    label = type(module).__name__
    # functional_call's untying walks the module on every call: only for a module with ties
    tied = bool(_ties(train_skel) or _ties(train_skel, "buffers"))
    slots = None if tied else {True: _Slots(train_skel), False: _Slots(eval_skel)}

    def apply(
        params: Params, buffers: Buffers, *inputs: Any, key: torch.Tensor | None = None, train: bool = True
    ) -> tuple[Any, Buffers]:
        tensors = dict(params)
        if buffers:
            if train:
                buffers = {k: v.clone() for k, v in buffers.items()}
            tensors.update(buffers)
        if train and names:
            if key is None:
                raise ValueError(
                    f"{label}: in-module randomness ({', '.join(names)}) needs a key in train mode (apply(..., key=k))"
                )
            tensors.update(stochastic.forward_keys(key, names))
        skel = train_skel if train else eval_skel
        mode = bool(train)
        if slots is not None and tensors.keys() == slots[mode].names and not _traced():
            return slots[mode].call(skel, tensors, inputs), buffers
        return functional_call(skel, tensors, inputs, tie_weights=tied), buffers

    apply.skeleton = train_skel  # type: ignore[attr-defined]
    apply.eval_skeleton = eval_skel  # type: ignore[attr-defined]
    apply.stochastic = names  # type: ignore[attr-defined]
    return cast(Apply, apply)


def _traced() -> bool:
    """Whether dynamo or the jit tracer records this call: then ``functional_call`` (which dynamo knows, and
    which refuses the jit tracer with its own error, as before)."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


class _Slots:
    """Where each parameter and buffer of an untied skeleton lives: ``functional_call`` for a call
    that passes every one of them, with the lookups done once.

    ``torch.func.functional_call`` finds each tensor's owner by name, checks it and swaps it in and
    out through accessors on every call (~40 us of a 1-D GAN's ~95 us forward, five forwards a
    step). This does the same swaps on dicts found when the skeleton was made: the module sees the
    same tensors and an exception still restores the skeleton (``tests/test_nets.py``: the same bits
    as ``functional_call`` for MLPs, BatchNorm, spectral norm, dropout; ``functional_call``'s write-back
    of a tensor the forward reassigns lands in a dict :func:`make_apply` drops, so it is left out). Transforms
    (``vmap``, ``grad``) see the same calls; under ``torch.compile`` and ``torch.jit.trace``,
    ``functional_call`` runs (and refuses the jit tracer, as it always did).
    """

    def __init__(self, skeleton: nn.Module):
        self.where: list[tuple[str, dict[str, Any], str]] = []
        for kind in ("_parameters", "_buffers"):
            for name, _ in getattr(skeleton, f"named{kind}")(remove_duplicate=False):
                owner, _, leaf = name.rpartition(".")
                self.where.append((name, getattr(skeleton.get_submodule(owner), kind), leaf))
        self.names = frozenset(name for name, _, _ in self.where)

    def call(self, skeleton: nn.Module, tensors: dict[str, torch.Tensor], inputs: tuple) -> Any:
        old = [table[leaf] for _, table, leaf in self.where]
        try:
            for name, table, leaf in self.where:
                table[leaf] = tensors[name]
            return skeleton(*inputs)
        finally:
            for (_, table, leaf), was in zip(self.where, old):
                table[leaf] = was


# ----------------------------------------------------------------------------- initialisation


def _fan_in(weight_shape: tuple[int, ...]) -> int:
    # torch.nn.init._calculate_fan_in_and_fan_out: fan_in = size(1) * receptive field
    receptive = math.prod(weight_shape[2:]) if len(weight_shape) > 2 else 1
    return weight_shape[1] * receptive


def _default_value(
    layer: nn.Module, tname: str, shape: tuple[int, ...], key: torch.Tensor, dtype: torch.dtype, where: str
) -> torch.Tensor:
    """What ``layer.reset_parameters()`` draws for its tensor ``tname``, from ``key``."""
    if isinstance(layer, (nn.Linear, nn.Bilinear) + _CONV):
        w_shape = tuple(layer.weight.shape)
        fan_in = w_shape[1] if isinstance(layer, nn.Bilinear) else _fan_in(w_shape)
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        return fr.uniform(key, shape, dtype, -bound, bound)
    if isinstance(layer, _NORM):
        return torch.full(shape, 1.0 if tname == "weight" else 0.0, dtype=dtype)
    if isinstance(layer, nn.Embedding):
        w = fr.normal(key, shape, dtype)
        if layer.padding_idx is not None:
            w = w.index_fill(0, torch.tensor([layer.padding_idx]), 0.0)
        return w
    if isinstance(layer, nn.PReLU):
        return torch.full(shape, 0.25, dtype=dtype)
    raise TypeError(
        f"init_params: no default initialisation known for parameter '{where}' of "
        f"{type(layer).__name__}; define funcgan_init(key, dtype) on the module, pass your own "
        "initial weights (params_from_module), or an initializer such as nets.normal_init"
    )


def _prefixer(mod_name: str) -> Callable[[str], str]:
    """``name -> "mod_name.name"`` (just ``name`` at the top level)."""
    return lambda name: f"{mod_name}.{name}" if mod_name else name


def _split_name(full: str) -> tuple[str, str]:
    mod, _, attr = full.rpartition(".")
    return mod, attr


def init_params(
    module: nn.Module,
    key: torch.Tensor,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> tuple[Params, Buffers]:
    """Initialise a module's parameters and buffers from a key, with PyTorch's default distributions.

    Linear and Conv (also transposed) layers get ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``
    for weight and bias, which is what ``reset_parameters`` draws
    (``kaiming_uniform_(a=sqrt(5))``); norm layers get ones and zeros; Embedding
    gets ``N(0, 1)`` (the padding row zero). Parameter ``i`` (in
    ``named_parameters()`` order) draws from ``split(key, n)[i]``. A parametrized
    tensor (``torch.nn.utils.parametrizations``) is drawn as the layer's plain tensor
    and mapped to its originals by the parametrization's ``right_inverse``
    (weight norm: ``g = ||w||``, ``v = w``). Spectral norm's ``u``/``v`` are drawn from
    ``fold_in(key, 0xB0FF)`` (normal, normalised, 15 power iterations as torch's
    constructor does); BatchNorm statistics start at zeros/ones; other buffers are
    copied from the module.

    A module type funcgan does not know can define
    ``funcgan_init(self, key, dtype) -> dict[str, Tensor]`` returning its own
    (non-recursive) parameters; it is called with its first parameter's key.

    Args:
        module: the network (any device, ``meta`` included; it is not modified).
        key: a funcgan key.
        dtype: floating dtype of the parameters.
        device: where they live.

    Returns:
        ``(params, buffers)``.

    Raises:
        TypeError: a parameter with no known default initialisation (named).
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"init_params: dtype must be floating point, got {dtype}")
    skel = make_skeleton(module, True, "init_params")
    names = [n for n, _ in skel.named_parameters()]
    keys = fr.split(key.to("cpu"), max(1, len(names)))
    index = {n: i for i, n in enumerate(names)}
    params: Params = {}
    for mod_name, mod in skel.named_modules():
        full = _prefixer(mod_name)
        # a tied parameter is drawn once, under its first name
        own = {k: p for k, p in mod.named_parameters(recurse=False) if full(k) in index}
        if not own:
            continue
        original: Any = module.get_submodule(mod_name)
        if hasattr(original, "funcgan_init"):
            custom = original.funcgan_init(keys[index[full(next(iter(own)))]], dtype)
            for p_name in own:
                params[full(p_name)] = custom[p_name].to(dtype=dtype)
            continue
        if isinstance(mod, _parametrize.ParametrizationList):
            layer_name, tname = _split_name(mod_name)
            layer_name, _ = _split_name(layer_name)  # strip ".parametrizations"
            layer = skel.get_submodule(layer_name)
            first = full(next(iter(own)))
            value = _default_value(layer, tname, tuple(getattr(layer, tname).shape), keys[index[first]], dtype, first)
            for p in reversed(list(mod)):
                inverse: Any = getattr(p, "right_inverse", None)
                if inverse is not None:
                    value = inverse(value)
            if isinstance(value, tuple):  # original0, original1, ...
                for j, v in enumerate(value):
                    params[full(f"original{j}")] = v.to(dtype)
            else:
                params[full("original")] = value.to(dtype)
            continue
        for p_name, p in own.items():
            params[full(p_name)] = _default_value(
                mod, p_name, tuple(p.shape), keys[index[full(p_name)]], dtype, full(p_name)
            )
    params = {n: params[n].to(device) for n in names}  # named_parameters() order
    return params, _init_buffers(module, skel, params, key, dtype, device)


def _init_buffers(
    module: nn.Module,
    skel: nn.Module,
    params: Params,
    key: torch.Tensor,
    dtype: torch.dtype,
    device: torch.device | str,
) -> Buffers:
    out: Buffers = {}
    sn_keys = fr.split(fr.fold_in(key.to("cpu"), _BUFFER_STREAM), max(1, len(list(skel.named_modules()))))
    for i, (mod_name, mod) in enumerate(skel.named_modules()):
        full = _prefixer(mod_name)
        if isinstance(mod, FunctionalSpectralNorm) and hasattr(mod, "_u"):
            plist_name = mod_name.rpartition(".")[0]
            weight = params[f"{plist_name}.original"].to("cpu")
            u, v = spectral_norm_buffers(weight, mod, sn_keys[i])
            out[full("_u")], out[full("_v")] = u.to(device), v.to(device)
            continue
        for b_name, b in mod.named_buffers(recurse=False):
            if b_name == stochastic.KEY_BUFFER:
                continue
            if isinstance(mod, nn.modules.batchnorm._NormBase):
                t = torch.ones(b.shape) if b_name == "running_var" else torch.zeros(b.shape, dtype=b.dtype)
            else:
                src = dict(module.named_buffers()).get(full(b_name))
                if src is None or src.device.type == "meta":
                    raise TypeError(
                        f"init_params: no default for buffer '{full(b_name)}' of a meta "
                        f"{type(mod).__name__}; build the module on a real device"
                    )
                t = src.detach().clone()
            out[full(b_name)] = t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)
    order = [n for n, _ in module.named_buffers() if not n.endswith(stochastic.KEY_BUFFER)]
    return {n: out[n] for n in order}


def _owner(name: str) -> tuple[str, str]:
    """``(layer, tensor)`` a parameter belongs to: ``"0.parametrizations.weight.original"`` ->
    ``("0", "weight")``; ``"0.bias"`` -> ``("0", "bias")``."""
    if name.startswith("parametrizations.") or ".parametrizations." in name:
        layer, _, rest = ("." + name).rpartition(".parametrizations.")
        return layer[1:], rest.split(".")[0]
    return _split_name(name)


def normal_init(
    std: float = 0.02, norm_mean: float = 1.0, embedding_std: float | None = None
) -> Callable[..., tuple[Params, Buffers]]:
    """An initializer ``(module, key, dtype, device) -> (params, buffers)`` as DCGAN draws it
    (Radford et al. 2016; pytorch/examples' ``weights_init``): convolution weights (also
    transposed) ``N(0, std)``, BatchNorm weights ``N(norm_mean, std)`` and biases 0; with
    ``embedding_std``, embedding weights ``N(0, embedding_std)``; every other tensor as
    :func:`init_params`. A spectral-normed weight's original is drawn the same way."""

    def init(
        module: nn.Module, key: torch.Tensor, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
    ) -> tuple[Params, Buffers]:
        params, _ = init_params(module, key, dtype, device)
        keys = fr.split(fr.fold_in(key.to("cpu"), 0xDC6A), max(1, len(params)))
        for i, (name, p) in enumerate(params.items()):
            layer_name, tname = _owner(name)
            layer = module.get_submodule(layer_name) if layer_name else module
            single = not name.endswith(("original0", "original1"))
            noise = fr.normal(keys[i], tuple(p.shape), dtype).to(device)
            if isinstance(layer, _CONV) and tname == "weight" and single:
                params[name] = noise * std
            elif isinstance(layer, nn.modules.batchnorm._BatchNorm) and tname == "weight":
                params[name] = noise * std + norm_mean
            elif isinstance(layer, nn.modules.batchnorm._BatchNorm) and tname == "bias":
                params[name] = torch.zeros_like(p)
            elif isinstance(layer, nn.Embedding) and embedding_std is not None:
                params[name] = noise * embedding_std
        # buffers that depend on the weights (spectral norm's u, v) follow the new weights
        skel = make_skeleton(module, True, "normal_init")
        return params, _init_buffers(module, skel, params, key, dtype, device)

    return init


# ----------------------------------------------------------------------------- dicts and modules


def params_from_module(module: nn.Module) -> tuple[Params, Buffers]:
    """A live module's current parameters and buffers as fresh dicts (detached clones): start
    training from your own initial weights."""
    params = {n: p.detach().clone() for n, p in module.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in module.named_buffers() if not n.endswith(stochastic.KEY_BUFFER)}
    return params, buffers


def load_into_module(module: nn.Module, params: Params, buffers: Buffers | None = None) -> nn.Module:
    """Copy parameter (and buffer) dicts into a plain module, in place; returns it.

    The module then runs imperatively with the trained weights. Names and shapes
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


def to_state_dict(module: nn.Module, params: Params, buffers: Buffers) -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers keyed as ``module.state_dict()`` (what
    ``module.load_state_dict`` takes)."""
    keys = list(module.state_dict().keys())
    merged = {**params, **buffers}
    for first, others in _ties(module):  # a tied tensor is kept once; the state dict names it at each use
        if first in merged:
            merged.update(dict.fromkeys(others, merged[first]))
    missing = [k for k in keys if k not in merged]
    if missing:
        raise ValueError(f"to_state_dict: no tensor for {missing[:5]}")
    return {k: merged[k].detach().contiguous() for k in keys}


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
        exp_b = {n: b for n, b in module.named_buffers() if not n.endswith(stochastic.KEY_BUFFER)}
        missing = sorted(set(exp_b) - set(buffers))
        unexpected = sorted(set(buffers) - set(exp_b))
        if missing or unexpected:
            raise ValueError(
                f"{who}: buffer dict does not match {type(module).__name__}: "
                f"missing {missing or 'none'}, unexpected {unexpected or 'none'}"
            )
        for n, b in exp_b.items():
            if tuple(buffers[n].shape) != tuple(b.shape):
                raise ValueError(
                    f"{who}: buffer '{n}' has shape {tuple(buffers[n].shape)}, module expects {tuple(b.shape)}"
                )


def count_params(params: Params) -> int:
    """Number of scalar parameters."""
    return sum(p.numel() for p in params.values())
