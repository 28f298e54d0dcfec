"""How many runs one call can hold: the chunk size chosen from free device memory.

A sweep's chunk (runs per compiled call) trades speed for memory: on a GPU a wider chunk
fills the device, and a chunk too wide runs out of memory. :func:`funcgan.sweep.plan_chunk` measures
what runs cost and picks the widest chunk that fits:

1. :func:`measure` runs a step on two small probe chunks and records the device's peak
   allocation above what was allocated before, state included (:func:`funcgan.sweep.plan_chunk`
   measures the eager guarded vmapped step: it saves every intermediate the backward pass
   needs, more than the compiled step keeps, so the estimate errs on the safe side);
2. :func:`fit_chunk` fits ``bytes(n) = fixed + per_run * n`` through the probes and returns
   the widest power of two whose cost fits in ``fraction`` of the free memory (free on the
   device plus what torch's allocator holds unused, :func:`free_bytes`), or every run when
   they all fit.

On the CPU there is no device memory to measure: the chunk is ``min(S, CPU_CHUNK)`` (256),
the width at which a chunk's working set still sits in cache on the CPUs measured
(``benchmarks/``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch

__all__ = ["CPU_CHUNK", "Plan", "fit_chunk", "free_bytes", "measure"]

CPU_CHUNK = 256

_MiB = 2**20


class Plan(NamedTuple):
    """The runs per call, and a sentence saying how they were chosen."""

    chunk_size: int
    why: str


def fit_chunk(costs: Mapping[int, int], free: int, n_runs: int, fraction: float = 0.8) -> Plan:
    """The widest chunk whose estimated cost fits in ``fraction * free`` bytes.

    Args:
        costs: probe chunk size -> peak bytes it needed (at least two sizes).
        free: bytes available.
        n_runs: runs in the sweep (the chunk never exceeds it).
        fraction: the share of ``free`` a chunk may use (the rest: fragmentation, the
            compiler's workspace, CUDA-graph pools).

    Raises:
        ValueError: fewer than two probes, or not even one run fits.
    """
    if len(costs) < 2:
        raise ValueError(f"fit_chunk: needs peak bytes at two chunk sizes at least, got {dict(costs)}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fit_chunk: fraction must be in (0, 1], got {fraction!r}")
    if n_runs < 1:
        raise ValueError(f"fit_chunk: n_runs must be >= 1, got {n_runs!r}")
    (n1, c1), (n2, c2) = sorted(costs.items())[0], sorted(costs.items())[-1]
    per_run = (c2 - c1) / (n2 - n1)
    per_run = max(per_run, c2 / n2 / 4, 1.0)  # probes too small to see the slope: assume a share
    fixed = max(0.0, c1 - per_run * n1)
    budget = fraction * free
    fits = int((budget - fixed) // per_run)
    if fits < 1:
        raise ValueError(
            f"one run needs about {(fixed + per_run) / _MiB:.1f} MiB; only {budget / _MiB:.1f} MiB "
            f"({fraction:.0%} of {free / _MiB:.1f} MiB free) is available"
        )
    if fits >= n_runs:
        chunk = n_runs
    else:
        chunk = 1 << (fits.bit_length() - 1)  # a power of two: few distinct compiled shapes
    why = (
        f"{chunk} run(s) per call: {per_run / _MiB:.2f} MiB per run + {fixed / _MiB:.1f} MiB measured, "
        f"{free / _MiB:.0f} MiB free"
    )
    return Plan(chunk, why)


def free_bytes(device: torch.device | str) -> int:
    """Bytes a new allocation can use on a CUDA device: free on the device, plus what torch's
    caching allocator holds unused."""
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"free_bytes: measures CUDA memory only, got device {device}")
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(free + cached)


def measure(
    step: Callable[[Any, tuple], Any],
    make_states: Callable[[int], Any],
    data: tuple,
    sizes: tuple[int, ...] = (2, 8),
    device: torch.device | str = "cuda",
) -> dict[int, int]:
    """Peak CUDA bytes of ``step(make_states(n), data)`` for each ``n`` in ``sizes``, above what was
    allocated before: the chunk's state, its step's temporaries and its output state. ``data``
    (shared by every chunk, so not a per-run cost) must already be on ``device``."""
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"memory.measure: measures CUDA memory only, got device {device}")
    out: dict[int, int] = {}
    for n in sizes:
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        res = step(make_states(n), data)
        torch.cuda.synchronize(device)
        out[n] = int(torch.cuda.max_memory_allocated(device) - base)
        del res
    return out
