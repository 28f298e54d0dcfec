"""Argument checks shared by the factories: clear errors before training starts.

A hyper-parameter may be a Python number or a 0-d tensor. Concrete values are
checked; values seen while tracing (inside ``vmap``, ``grad`` or
``torch.compile``) cannot be inspected without a sync and were checked when the
state holding them was built (see ``inject_hyperparams``).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch


def is_concrete(x: Any) -> bool:
    """True for Python numbers and plain tensors whose value can be read now."""
    if isinstance(x, numbers.Real):
        return True
    if not isinstance(x, torch.Tensor):
        return False
    if torch.compiler.is_compiling():
        return False
    if torch._C._functorch.is_functorch_wrapped_tensor(x):
        return False
    return x.device.type != "meta"


def _value(x: Any) -> float:
    return float(x.detach().cpu().item()) if isinstance(x, torch.Tensor) else float(x)


def check_scalar(fn: str, name: str, x: Any) -> None:
    if isinstance(x, bool) or not (isinstance(x, numbers.Real) or (isinstance(x, torch.Tensor) and x.dim() == 0)):
        raise TypeError(
            f"{fn}: {name} must be a number or a 0-d tensor, got {type(x).__name__}"
            + (f" of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else "")
        )


def check_positive(fn: str, name: str, x: Any, allow_zero: bool = False) -> None:
    """Raise ValueError unless ``x > 0`` (or ``>= 0``) and finite."""
    check_scalar(fn, name, x)
    if not is_concrete(x):
        return
    v = _value(x)
    ok = (v >= 0.0 if allow_zero else v > 0.0) and math.isfinite(v)
    if not ok:
        rel = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{fn}: {name} must be finite and {rel}, got {v}")


def check_interval(fn: str, name: str, x: Any, lo: float, hi: float, hi_closed: bool = False) -> None:
    """Raise ValueError unless ``lo <= x < hi`` (``<= hi`` if ``hi_closed``)."""
    check_scalar(fn, name, x)
    if not is_concrete(x):
        return
    v = _value(x)
    ok = lo <= v <= hi if hi_closed else lo <= v < hi
    if not ok or math.isnan(v):
        bracket = "]" if hi_closed else ")"
        raise ValueError(f"{fn}: {name} must be in [{lo}, {hi}{bracket}, got {v}")
