"""Checkpoints: a training state (one run or a stacked sweep) and its history in a safetensors file.

    checkpoint.save("run.safetensors", state, meta={"problem": "gaussian1d"}, history=(history, steps))
    ckpt = checkpoint.load("run.safetensors", like=init_state(gan, key(0)))   # ckpt.state, ckpt.meta, ...

Only tensors are stored (no pickle: loading runs no code). Each leaf of the state
is keyed by its path (``state/gen/params/model.0.weight``); the history's metrics
are ``history/<name>``. :func:`load` takes a template state of the same structure
(what ``init_state`` or ``init_sweep`` builds) and refuses a file whose keys,
shapes or dtypes differ, naming them (a float32 file is not loaded into a float64
state). Because a run's randomness is ``fold_in(key, step)``, a resumed run
continues exactly as the uninterrupted one.

Writes are atomic: the bytes go to a temporary file in the same directory, are
flushed and ``fsync``-ed, then ``os.replace``-d over the target (and the directory
entry synced), so a kill at any moment leaves either the old checkpoint or the new
one, never a torn file. :func:`remove_stale_temporaries` clears what a killed
writer left. Needs ``funcgan[checkpoint]`` (safetensors).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from funcgan.tree import PyTree, tree_flatten_with_keys, tree_unflatten

__all__ = ["save", "load", "read_meta", "Checkpoint", "remove_stale_temporaries", "CheckpointError", "FORMAT"]

FORMAT = "funcgan-checkpoint/2"
_TMP = ".funcgan-tmp-"


class CheckpointError(ValueError):
    """A file that is not a readable funcgan checkpoint, or one that does not fit the run."""


def _safetensors():
    try:
        import safetensors.torch as st
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("checkpoints need safetensors: pip install 'funcgan[checkpoint]'") from e
    return st


@dataclass
class Checkpoint:
    """What :func:`load` returns: the state, the history and the metadata."""

    state: PyTree
    meta: dict[str, Any]
    history: dict[str, torch.Tensor] = field(default_factory=dict)
    logged_steps: list[int] = field(default_factory=list)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def save(
    path: str | os.PathLike,
    state: PyTree,
    meta: dict[str, Any] | None = None,
    history: tuple[dict[str, torch.Tensor], list[int]] | None = None,
) -> str:
    """Write ``state`` (and ``history``) to ``path`` atomically, with JSON-able ``meta``; returns the path."""
    st = _safetensors()
    path = Path(path)
    flat, _ = tree_flatten_with_keys(state)
    tensors = {f"state/{k}": v.detach().contiguous().cpu() for k, v in flat}
    info = {"format": FORMAT, **(meta or {})}
    if history is not None:
        hist, logged = history
        tensors.update({f"history/{k}": v.detach().contiguous().cpu() for k, v in hist.items()})
        info["logged_steps"] = list(logged)
    payload = st.save(tensors, metadata={"funcgan": json.dumps(info)})
    tmp = path.parent / f"{_TMP}{os.getpid()}-{path.name}"
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return str(path)


def remove_stale_temporaries(directory: str | os.PathLike) -> list[str]:
    """Delete the temporary files a killed writer left in ``directory`` (of processes no longer alive)."""
    removed: list[str] = []
    d = Path(directory)
    if not d.is_dir():
        return removed
    for f in d.glob(f"{_TMP}*"):
        try:
            pid = int(f.name[len(_TMP) :].split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _alive(pid):
            f.unlink(missing_ok=True)
            removed.append(str(f))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - another user's process
        return True
    return True


def _open(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    st = _safetensors()
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    try:
        raw = p.read_bytes()
        tensors = st.load(raw)
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as f:
            info = json.loads((f.metadata() or {}).get("funcgan", "{}"))
    except Exception as e:  # safetensors' own errors (truncated, garbage, empty)
        raise CheckpointError(f"{p} is not a readable funcgan checkpoint ({type(e).__name__}: {e})") from e
    if info.get("format") != FORMAT:
        raise CheckpointError(f"{p} is not a funcgan checkpoint of format {FORMAT} (found {info.get('format')!r})")
    return tensors, info


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``meta`` dict stored by :func:`save` (raises :class:`CheckpointError` for a bad file)."""
    return _open(path)[1]


def load(path: str | os.PathLike, like: PyTree, device: torch.device | str | None = None) -> Checkpoint:
    """Read a checkpoint saved by :func:`save` into the structure of ``like``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not a readable checkpoint, or its keys, shapes or dtypes differ from
            ``like`` (named).
    """
    tensors, info = _open(path)
    flat, spec = tree_flatten_with_keys(like)
    keys = [f"state/{k}" for k, _ in flat]
    have = {k for k in tensors if k.startswith("state/")}
    missing = sorted(set(keys) - have)
    unexpected = sorted(have - set(keys))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not match the run: missing {missing[:5] or 'none'}, "
            f"unexpected {unexpected[:5] or 'none'}"
        )
    leaves = []
    for k, (_, ref) in zip(keys, flat):
        t = tensors[k]
        if tuple(t.shape) != tuple(ref.shape) or t.dtype != ref.dtype:
            raise CheckpointError(
                f"checkpoint {path}: '{k[6:]}' is {t.dtype}{tuple(t.shape)}, the run expects "
                f"{ref.dtype}{tuple(ref.shape)}"
            )
        leaves.append(t.to(device if device is not None else ref.device))
    history = {k[len("history/") :]: v for k, v in tensors.items() if k.startswith("history/")}
    logged = list(info.pop("logged_steps", []))
    for k, v in history.items():
        if v.dim() < 1 or v.shape[0] != len(logged):
            raise CheckpointError(
                f"checkpoint {path}: history '{k}' has {v.shape[0] if v.dim() else 0} rows for "
                f"{len(logged)} logged steps"
            )
    return Checkpoint(tree_unflatten(leaves, spec), info, history, logged)
