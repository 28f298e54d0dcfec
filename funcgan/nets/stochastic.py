"""In-module randomness drawn from explicit keys: dropout that is the same run alone or in a sweep.

``nn.Dropout`` draws its mask from torch's global RNG: the same state stepped twice
gives different losses, and under ``vmap(randomness="error")`` (every sweep) it
raises. :class:`KeyedDropout` computes the same operation from a key: in train mode
``x * (keep / (1 - p))`` with ``keep = uniform(key) >= p`` (elementwise for
``nn.Dropout``, one draw per channel for ``Dropout1d/2d/3d``), the identity in eval
mode. The key is a non-persistent buffer ``_funcgan_key`` that
:func:`funcgan.nets.make_apply` fills for every forward (``fold_in(key, i)`` for
the ``i``-th stochastic module), so each seed and each forward draws its own mask.

:func:`keyed` swaps the modules of a live ``nn.Module`` for imperative code (the
references in :mod:`funcgan.testing` use it, with :func:`set_forward_key`), so an
imperative loop draws exactly the masks of the functional one.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from funcgan import random as fr

__all__ = ["KeyedDropout", "KEY_BUFFER", "keyed", "stochastic_modules", "set_forward_key", "RANDOM_MODULES"]

KEY_BUFFER = "_funcgan_key"
_CHANNELWISE = {nn.Dropout1d: 1, nn.Dropout2d: 2, nn.Dropout3d: 3}
#: module types that draw randomness in train mode and that funcgan cannot key (refused by name)
RANDOM_MODULES = (nn.RReLU, nn.AlphaDropout, nn.FeatureAlphaDropout)


class KeyedDropout(nn.Module):
    """Dropout with its mask drawn from the key in the ``_funcgan_key`` buffer.

    Attributes:
        p: drop probability in [0, 1].
        channel_dims: 0 for elementwise dropout; 1, 2, 3 for ``Dropout1d/2d/3d``
            (one draw per (example, channel), broadcast over the trailing dims).
    """

    def __init__(self, p: float, channel_dims: int = 0):
        super().__init__()
        self.p, self.channel_dims = float(p), channel_dims
        self.register_buffer(KEY_BUFFER, torch.zeros(2, dtype=torch.int64), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return x * 0.0
        if self.channel_dims:
            shape = tuple(x.shape[: x.dim() - self.channel_dims]) + (1,) * self.channel_dims
        else:
            shape = tuple(x.shape)
        keep = fr.uniform(getattr(self, KEY_BUFFER), shape, x.dtype) >= self.p
        return x * (keep.to(x.dtype) / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}, channel_dims={self.channel_dims}"


def _replacement(m: nn.Module) -> nn.Module | None:
    if type(m) is nn.Dropout:
        return KeyedDropout(m.p)
    for cls, dims in _CHANNELWISE.items():
        if type(m) is cls:
            return KeyedDropout(m.p, dims)
    return None


def keyed(module: nn.Module, who: str = "funcgan") -> nn.Module:
    """``module`` with every ``nn.Dropout`` (and ``Dropout1d/2d/3d``) replaced by
    :class:`KeyedDropout`, in place; returns it. Raises ``TypeError`` naming a module
    whose training-mode randomness funcgan cannot key (``RReLU``, alpha dropout)."""
    for name, child in list(module.named_modules()):
        if isinstance(child, RANDOM_MODULES):
            raise TypeError(
                f"{who}: module '{name}' ({type(child).__name__}) draws from torch's global RNG in train "
                "mode, which funcgan cannot key per seed; use nn.Dropout, or a deterministic layer"
            )
    for name, child in list(module.named_modules()):
        new = _replacement(child)
        if new is None:
            continue
        new.train(child.training)
        if name == "":
            raise TypeError(f"{who}: the network itself is a dropout layer; wrap it in a module")
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        if isinstance(parent, (nn.Sequential, nn.ModuleList)) and attr.isdigit():
            parent[int(attr)] = new
        else:
            setattr(parent, attr, new)
    return module


def stochastic_modules(module: nn.Module) -> list[str]:
    """Names of the :class:`KeyedDropout` modules, in ``named_modules()`` order."""
    return [n for n, m in module.named_modules() if isinstance(m, KeyedDropout)]


def forward_keys(key: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """The key buffers of one forward: ``fold_in(key, i)`` for the ``i``-th stochastic module."""
    return {f"{n}.{KEY_BUFFER}": fr.fold_in(key, i) for i, n in enumerate(names)}


def set_forward_key(module: nn.Module, key: torch.Tensor) -> None:
    """Give a live keyed module (see :func:`keyed`) the key of its next forward, as
    :func:`funcgan.nets.make_apply` does functionally."""
    names = stochastic_modules(module)
    for name, k in forward_keys(key, names).items():
        mod_name = name.rsplit(".", 1)[0]
        mod = module.get_submodule(mod_name)
        setattr(mod, KEY_BUFFER, k.to(getattr(mod, KEY_BUFFER).device))


def keyed_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` with keyed dropout (the caller's module is not touched)."""
    return keyed(copy.deepcopy(module))
