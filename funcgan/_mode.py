"""Whether code runs plainly eager: the test behind funcgan's eager-only shortcuts.

An eager step pays for every kernel call, so a few places take a cheaper route that gives the
same values when nothing traces or transforms the call: the key hash on the host (a single key's
``split``/``fold_in`` in Python integers, its draws in uint32 numpy and its normal draws' exactly
rounded steps in numpy, stacked keys in int64 numpy; :mod:`funcgan.random`), a guard that selects
the new state by one host-side test instead of one ``torch.where`` per leaf
(:func:`funcgan.guard.check`) and its reductions over leaves flattened in one C++ call
(:func:`funcgan.tree.tree_reduce`), Adam and ``apply_updates`` as ``torch._foreach_*`` ops over all
leaves (:func:`flat_keys`), and ``inject_hyperparams`` reusing its last build while the state's
hyper-parameter tensors are unchanged. Each shortcut must be
invisible: the same numbers, bit for bit, as the traced form. (The plain-autograd gradient of
:func:`funcgan.step.update_player` has its own test: it equals ``torch.func``'s to round-off,
not bitwise, and it stays on under a dispatch or function mode.)
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["plain_eager", "plain_cpu_tensors", "flat_keys", "needs_no_grad"]


def plain_eager() -> bool:
    """True when no ``torch.compile`` trace, ``torch.jit.trace``, ``torch.func`` transform (``vmap``,
    ``grad``), forward-mode AD level (``torch.autograd.forward_ad.dual_level``), Python dispatch mode
    (``make_fx``, ``FakeTensorMode``, a user's ``TorchDispatchMode``) or torch function mode is
    active: tensors here hold concrete values that may be read or moved off torch without a tracer
    or a tangent missing it."""
    return (
        not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
        and torch.autograd.forward_ad._current_level < 0
        and torch._C._functorch.maybe_current_level() is None
        and torch._C._len_torch_dispatch_stack() == 0
        and not torch._C._is_torch_function_mode_enabled()
    )


def _plain_cpu(x: Any) -> bool:
    """A plain (not subclassed) CPU tensor that needs no grad."""
    return type(x) is torch.Tensor and x.is_cpu and not x.requires_grad


def plain_cpu_tensors(*xs: torch.Tensor) -> bool:
    """Whether every ``x`` is a plain (not subclassed) CPU tensor that needs no grad, in a
    :func:`plain_eager` context: one whose values numpy can share."""
    return plain_eager() and all(_plain_cpu(x) for x in xs)


def flat_keys(*trees: Any) -> list[str] | None:
    """The keys of ``trees`` when each is a non-empty flat dict of plain CPU tensors of one dtype that
    need no grad, all with the same keys, in a :func:`plain_eager` call; else None.

    Then an update may run as ``torch._foreach_*`` ops over the leaf lists: on the CPU each is a
    C++ loop over the same single-tensor kernel, so the same bits as one call per leaf, with one
    Python dispatch for all the leaves (what an eager step pays for). CUDA's fused multi-tensor
    kernels are not proven bitwise equal, and Adam's foreach ops run in place (an update that is
    differentiated through needs its inputs kept), so both stay per leaf.
    """
    first = trees[0]
    if not (type(first) is dict and first and plain_eager()):
        return None
    names = list(first)
    dtype = first[names[0]].dtype
    for tree in trees:
        if type(tree) is not dict or list(tree) != names:
            return None
        for x in tree.values():
            if not _plain_cpu(x) or x.dtype != dtype:
                return None
    return names


def needs_no_grad(*xs: Any) -> bool:
    """Whether no tensor among ``xs`` requires grad (numbers pass): hyper-parameters an eager shortcut
    may treat as constants."""
    return not any(isinstance(x, torch.Tensor) and x.requires_grad for x in xs)
