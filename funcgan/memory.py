"""How many runs one call can hold: the chunk size chosen from free device memory (CUDA) or from
the bytes a run's step writes (the CPU).

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

On the CPU the limit is not memory but memory traffic: a chunk whose step writes gigabytes (a
vmapped conv GAN's activations, 57 MiB per run-step for DCGAN at width 16) runs slower per
seed-step than a narrow one, while a small net's chunk gains from width up to 256 runs.
:func:`written_bytes` counts what one run's eager step writes (the bytes of every tensor its ops
return), and :func:`cpu_chunk` picks the widest power of two of at most :data:`CPU_CHUNK` runs
whose step writes at most :data:`CPU_STEP_BYTES` (1 GiB). Measured at S=256 on a 2-core CPU with
torch 2.13 (``funcgan bench``, ``benchmarks/results/cpu_systems.json`` and its notes): DCGAN runs
37 seed-steps/s at 16 runs a call and 20 at 256, CGAN (81 MiB a run-step) 31 at 8 and 18 at 256,
MNIST's MLP GAN (61 MiB) 829 at 16 and 549 at 256, the 2-D ring (13.5 MiB) 790 / 720 at 64 and
560 / 610 at 256 (two runs each); the 1-D GAN (1.4 MiB) 37,800 at 256 and 26,900 at 16
(``cpu_gaussian1d.json``). The rule is a bound on traffic, not a measurement of speed: a system it
sizes badly is run with ``chunk_size=``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["CPU_CHUNK", "CPU_STEP_BYTES", "Plan", "cpu_chunk", "fit_chunk", "free_bytes", "measure", "written_bytes"]

#: the widest CPU chunk (runs per compiled call)
CPU_CHUNK = 256
#: the bytes a CPU chunk's step may write (:func:`cpu_chunk`)
CPU_STEP_BYTES = 2**30

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


class _Written(TorchDispatchMode):
    """Sums the bytes of every tensor the ops under it return."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.bytes += sum(t.numel() * t.element_size() for t in tree_leaves(out) if isinstance(t, torch.Tensor))
        return out


def written_bytes(fn: Callable[..., Any], *args: Any) -> int:
    """Bytes of every tensor the ops of ``fn(*args)`` return, summed: the traffic of ``fn`` as its ops
    run one by one (views counted at their size; a compiled call fuses and writes less). Under the
    counting mode funcgan's eager-only shortcuts are off (``funcgan._mode.plain_eager``), so a step
    is counted as it is traced, which is what a compiled chunk runs. ``fn``'s result is dropped."""
    with _Written() as counter:
        fn(*args)
    return counter.bytes


def cpu_chunk(per_run_bytes: int, n_runs: int, budget: int = CPU_STEP_BYTES) -> Plan:
    """The CPU chunk for runs whose step writes ``per_run_bytes`` each (:func:`written_bytes`): every
    run when they all fit both :data:`CPU_CHUNK` and ``budget``, else the widest power of two that
    does (one run at least)."""
    if n_runs < 1:
        raise ValueError(f"cpu_chunk: n_runs must be >= 1, got {n_runs!r}")
    fits = max(1, min(CPU_CHUNK, int(budget // max(per_run_bytes, 1))))
    chunk = n_runs if fits >= n_runs else 1 << (fits.bit_length() - 1)
    why = (
        f"{chunk} run(s) per call: a run's step writes {per_run_bytes / _MiB:.1f} MiB, a call at most "
        f"{budget / _MiB:,.0f} MiB and {CPU_CHUNK} runs (the CPU rule)"
    )
    return Plan(chunk, why)
