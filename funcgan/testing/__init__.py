"""The public verification kit: imperative references, comparisons, hypothesis strategies.

    from funcgan import testing
    testing.assert_equivalent(system, seed=0, steps=20, dtype=torch.float64)          # funcgan's reference
    testing.assert_equivalent(system, imperative_step=my_step)                         # your imperative loop

* :mod:`funcgan.testing.reference`: the imperative loops, one per funcgan loop, written as
  PyTorch users write them (``ReferenceRun``, ``reference_step_for``);
* :mod:`funcgan.testing.compare`: ``compare``, ``assert_equivalent``, ``Report``,
  ``DEFAULT_TOLERANCES``;
* :mod:`funcgan.testing.strategies`: hypothesis strategies over every loop, objective,
  penalty and network family (needs ``hypothesis``; imported on first use);
* :class:`MatmulFlops`: count the matrix-product FLOPs a step computes.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from funcgan.testing import reference
from funcgan.testing.compare import DEFAULT_TOLERANCES, Report, adam_moments, assert_equivalent, compare
from funcgan.testing.reference import ReferenceRun, reference_step_for

aten = torch.ops.aten

__all__ = [
    "reference",
    "compare",
    "assert_equivalent",
    "Report",
    "adam_moments",
    "DEFAULT_TOLERANCES",
    "ReferenceRun",
    "reference_step_for",
    "MatmulFlops",
    "strategies",
]


class MatmulFlops(TorchDispatchMode):
    """Count the FLOPs of matrix products (``mm``, ``addmm``, ``bmm``, ``baddbmm``) run inside.

    A dispatch mode sees the operations below ``torch.func``'s transforms, so it
    counts exactly what a functional step computes. ``flops`` is ``2 * m * k * n``
    summed over products (times the batch for ``bmm``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = getattr(func, "overloadpacket", None)
        if packet in (aten.mm, aten.addmm):
            a, b = (args[0], args[1]) if packet is aten.mm else (args[1], args[2])
            self.flops += 2 * a.shape[0] * a.shape[1] * b.shape[1]
        elif packet in (aten.bmm, aten.baddbmm):
            a, b = (args[0], args[1]) if packet is aten.bmm else (args[1], args[2])
            self.flops += 2 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
        return func(*args, **kwargs)


def __getattr__(name: str):
    if name == "strategies":
        import importlib

        return importlib.import_module("funcgan.testing.strategies")
    raise AttributeError(name)
