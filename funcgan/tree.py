"""Pytree helpers: the one module that imports ``torch.utils._pytree``.

funcgan's state is nested NamedTuples and ``dict[str, Tensor]``; these helpers
map over it, stack S seeds' states along a new leading axis and take them
apart again. PyTorch 2.13 has no public pytree module, so the private one is
confined here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.utils._pytree as _pytree

try:  # torch's C++ flattening (DDP's buckets); private, so a torch without it takes the op-by-op form
    from torch._utils import _flatten_dense_tensors
except ImportError:  # pragma: no cover
    _flatten_dense_tensors = None  # type: ignore[assignment]

from funcgan._mode import plain_eager as _plain_eager

PyTree = Any

__all__ = [
    "tree_map",
    "tree_leaves",
    "tree_flatten",
    "tree_unflatten",
    "tree_stack",
    "tree_unstack",
    "tree_index",
    "tree_where",
    "tree_all_finite",
    "tree_reduce",
    "tree_flatten_with_keys",
]

tree_flatten = _pytree.tree_flatten
tree_unflatten = _pytree.tree_unflatten


def tree_flatten_with_keys(tree: PyTree) -> tuple[list[tuple[str, Any]], Any]:
    """Leaves with '/'-joined path strings (``gen_params/model.0.weight``), and the spec."""
    flat, spec = _pytree.tree_flatten_with_path(tree)
    out = []
    for path, leaf in flat:
        parts = []
        for k in path:
            if isinstance(k, _pytree.MappingKey):
                parts.append(str(k.key))
            elif isinstance(k, _pytree.SequenceKey):
                parts.append(str(k.idx))
            elif isinstance(k, _pytree.GetAttrKey):
                parts.append(k.name)
            else:
                parts.append(str(k))
        out.append(("/".join(parts), leaf))
    return out, spec


class _Other(Exception):
    """A node the hand-written walk does not know (a registered pytree class, or mismatched trees)."""


_LEAVES = (torch.Tensor, type(None), bool, int, float, complex, str)


def _is_sequence(kind: type) -> bool:
    """A list, a tuple or a NamedTuple (not another tuple subclass such as torch's structseqs)."""
    return kind is list or kind is tuple or (issubclass(kind, tuple) and hasattr(kind, "_fields"))


def _map(fn: Callable[..., Any], tree: Any, rest: tuple[Any, ...]) -> Any:
    kind = type(tree)
    if isinstance(tree, _LEAVES):
        return fn(tree, *rest)
    if any(type(r) is not kind for r in rest):
        raise _Other
    if kind is dict:
        if any(r.keys() != tree.keys() for r in rest):
            raise _Other
        return {k: _map(fn, v, tuple(r[k] for r in rest)) for k, v in tree.items()}
    if _is_sequence(kind):
        if any(len(r) != len(tree) for r in rest):
            raise _Other
        out = [_map(fn, v, tuple(r[i] for r in rest)) for i, v in enumerate(tree)]
        return out if kind is list else kind(out) if kind is tuple else kind(*out)
    raise _Other


def _leaves(tree: Any, out: list[Any]) -> None:
    if isinstance(tree, _LEAVES):
        out.append(tree)
    elif type(tree) is dict:
        for v in tree.values():
            _leaves(v, out)
    elif _is_sequence(type(tree)):
        for v in tree:
            _leaves(v, out)
    else:
        raise _Other


def tree_map(fn: Callable[..., Any], tree: PyTree, *rest: PyTree) -> PyTree:
    """Apply ``fn`` leaf-wise over one or more trees of the same structure.

    funcgan's own trees (dicts, lists, tuples, NamedTuples of tensors) are walked by hand, an
    order of magnitude faster per node than ``torch.utils._pytree`` in an eager step; any other
    node (a registered pytree class) or a structure mismatch goes to torch's pytree, which maps
    it or raises its error. ``None`` is a leaf, as in torch's pytree.
    """
    try:
        return _map(fn, tree, rest)
    except _Other:
        return _pytree.tree_map(fn, tree, *rest)


def tree_leaves(tree: PyTree) -> list[Any]:
    """The leaves of ``tree`` in flattening order (torch's pytree order: dicts in insertion order)."""
    out: list[Any] = []
    try:
        _leaves(tree, out)
    except _Other:
        return _pytree.tree_leaves(tree)
    return out


def tree_stack(trees: Sequence[PyTree]) -> PyTree:
    """Stack trees of identical structure leaf-wise along a new axis 0.

    Used to turn S single-seed states into one sweep state (leaves ``(S, ...)``).
    """
    if len(trees) == 0:
        raise ValueError("tree_stack needs at least one tree")
    flat = [_pytree.tree_flatten(t) for t in trees]
    spec = flat[0][1]
    for _, s in flat[1:]:
        if s != spec:
            raise ValueError("tree_stack: trees differ in structure")
    stacked = [torch.stack(list(xs)) for xs in zip(*(leaves for leaves, _ in flat))]
    return _pytree.tree_unflatten(stacked, spec)


def tree_unstack(tree: PyTree) -> list[PyTree]:
    """Inverse of :func:`tree_stack`: split every leaf along axis 0."""
    leaves, spec = _pytree.tree_flatten(tree)
    if not leaves:
        raise ValueError("tree_unstack: tree has no leaves")
    n = leaves[0].shape[0]
    return [_pytree.tree_unflatten([x[i] for x in leaves], spec) for i in range(n)]


def tree_index(tree: PyTree, index: Any) -> PyTree:
    """Index every leaf along axis 0 (an int, a slice or an index tensor)."""
    return tree_map(lambda x: x[index], tree)


def tree_where(cond: torch.Tensor, new: PyTree, old: PyTree) -> PyTree:
    """Leaf-wise ``torch.where(cond, new, old)``; ``cond`` is a 0-d bool tensor.

    Branch-free selection, so it works under ``vmap`` (per-seed masks) and
    inside a compiled graph.
    """
    return tree_map(lambda a, b: torch.where(cond, a, b), new, old)


def tree_all_finite(tree: PyTree) -> torch.Tensor:
    """A 0-d bool tensor: every floating-point leaf of ``tree`` is finite."""
    floats = [x for x in tree_leaves(tree) if isinstance(x, torch.Tensor) and x.is_floating_point()]
    if not floats:
        return torch.tensor(True)
    return tree_reduce(floats, lambda x: torch.isfinite(x).all(), lambda flags: flags.all())


def _flatten(xs: list[torch.Tensor]) -> torch.Tensor:
    """The tensors' elements in one vector (those of ``_flatten_dense_tensors``, the 0-d ones last), op
    by op: the 0-d tensors stacked in one call, not reshaped one by one."""
    vectors = [x if x.dim() == 1 else x.reshape(-1) for x in xs if x.dim()]
    scalars = [x for x in xs if not x.dim()]
    return torch.cat(vectors + [torch.stack(scalars)] if scalars else vectors)


def tree_reduce(
    leaves: Sequence[torch.Tensor],
    leaf: Callable[[torch.Tensor], torch.Tensor],
    combine: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """One 0-d reduction over all ``leaves``: ``combine(stack([leaf(x) for x in leaves]))``, for a
    ``leaf`` reduction that ``combine`` finishes (all of alls, max of maxes). ``leaf`` must not modify
    its argument: it may be given a leaf itself, or a view of one.

    Eager, it is ``leaf`` of the leaves flattened into one vector per dtype (per run under ``vmap``),
    then ``combine`` of those (promoted to one dtype, which the finiteness and magnitude checks do
    not notice): an eager step pays per kernel call, and a few calls beat two per leaf. Each vector
    is made by torch's ``_flatten_dense_tensors`` (the views and the concatenation in one C++ call,
    as DDP packs its buckets; ~2.5x a Python loop of ``reshape`` calls for a step's ~30 leaves)
    where it runs plainly eager; under ``vmap`` (it has no batching rule) op by op.
    Compiled, the per-leaf form is kept: inductor fuses it and would otherwise materialise the
    concatenation.
    """
    if torch.compiler.is_compiling():
        return combine(torch.stack([leaf(x) for x in leaves]))
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for x in leaves:  # one vector per dtype: a mixed concatenation would convert every leaf first
        if x.numel():  # an empty leaf has nothing to check (a group of empties would reduce nothing)
            groups.setdefault(x.dtype, []).append(x)
    if not groups:
        return leaf(torch.cat([x.reshape(-1) for x in leaves]))
    plain = _flatten_dense_tensors is not None and _plain_eager()  # the C++ one has no vmap rule
    flat = _flatten_dense_tensors if plain else _flatten
    parts = [leaf(flat(group)) for group in groups.values()]
    return parts[0] if len(parts) == 1 else combine(torch.stack(parts))
