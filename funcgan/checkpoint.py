"""Checkpoints: a training state (one run or a stacked sweep) in a safetensors file.

    checkpoint.save(state, "run.safetensors", meta={"problem": "gaussian1d"})
    state = checkpoint.load("run.safetensors", like=init_state(gan, key(0)))

Only tensors are stored (no pickle: loading runs no code). Each leaf is keyed by
its path in the state (``gen_params/model.0.weight``, ``disc_opt_state/0/1/mu/...``);
``load`` takes a template state of the same structure (what ``init_state`` or
``init_sweep`` builds) and checks that every key and shape matches. Because a
run's randomness is ``fold_in(key, step)``, a resumed run continues exactly as
the uninterrupted one. Needs ``funcgan[checkpoint]`` (safetensors).
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from funcgan.tree import PyTree, tree_flatten_with_keys, tree_unflatten

__all__ = ["save", "load", "read_meta"]


def _safetensors():
    try:
        import safetensors.torch as st
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("checkpoints need safetensors: pip install 'funcgan[checkpoint]'") from e
    return st


def save(state: PyTree, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> None:
    """Write every tensor of ``state`` to ``path`` (safetensors), with JSON-able ``meta``."""
    st = _safetensors()
    flat, _ = tree_flatten_with_keys(state)
    tensors = {k: v.detach().contiguous().cpu() for k, v in flat}
    st.save_file(tensors, str(path), metadata={"funcgan": json.dumps(meta or {})})


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``meta`` dict stored by :func:`save`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {}).get("funcgan", "{}"))


def load(path: str | os.PathLike, like: PyTree, device: torch.device | str | None = None) -> PyTree:
    """Read a state saved by :func:`save` into the structure of ``like``.

    Raises:
        ValueError: the file's keys or shapes do not match ``like`` (names them).
    """
    st = _safetensors()
    tensors = st.load_file(str(path))
    flat, spec = tree_flatten_with_keys(like)
    keys = [k for k, _ in flat]
    missing = sorted(set(keys) - set(tensors))
    unexpected = sorted(set(tensors) - set(keys))
    if missing or unexpected:
        raise ValueError(f"checkpoint {path} does not match the state: missing {missing[:5] or 'none'}, "
                         f"unexpected {unexpected[:5] or 'none'}")
    leaves = []
    for k, ref in flat:
        t = tensors[k]
        if tuple(t.shape) != tuple(ref.shape) or t.dtype != ref.dtype:
            raise ValueError(f"checkpoint {path}: '{k}' is {t.dtype}{tuple(t.shape)}, the state expects "
                             f"{ref.dtype}{tuple(ref.shape)}")
        leaves.append(t.to(device if device is not None else ref.device))
    return tree_unflatten(leaves, spec)
